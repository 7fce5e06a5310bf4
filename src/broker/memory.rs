//! The in-process broker: the default when no Redis is configured.
//!
//! A [`MemoryBus`] is the shared "server"; each node gets its own
//! [`MemoryBroker`] on it, so tests can run several nodes in one process
//! over one bus exactly as they would over Redis. Publishing waits for room
//! in each subscribed node's bounded event channel (back-pressure on the
//! publisher, never an unbounded queue).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::{Broker, BrokerError, BrokerEvent, Envelope};
use crate::protocol::Channel;

type Subscribers = Vec<(u64, mpsc::Sender<BrokerEvent>)>;

/// The shared bus several [`MemoryBroker`]s publish and subscribe on.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    /// channel → subscribed brokers. Written on (un)subscribe, read on
    /// publish; the lock is released before any send.
    subs: Arc<RwLock<HashMap<Channel, Subscribers>>>,
    next_id: Arc<AtomicU64>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker for one node that delivers into `events`.
    pub fn broker(&self, events: mpsc::Sender<BrokerEvent>) -> MemoryBroker {
        MemoryBroker {
            bus: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            events,
        }
    }

    /// Channels with at least one subscriber (for tests and stats).
    pub fn channel_count(&self) -> usize {
        self.subs.read().len()
    }
}

#[derive(Debug, Clone)]
pub struct MemoryBroker {
    bus: MemoryBus,
    id: u64,
    /// This node's inbound event channel; the node's dispatcher receives.
    events: mpsc::Sender<BrokerEvent>,
}

impl MemoryBroker {
    /// Delivers to every node subscribed to `channel`; returns how many.
    async fn publish_one(&self, channel: &Channel, envelope: &Envelope) -> usize {
        let targets: Vec<mpsc::Sender<BrokerEvent>> = self
            .bus
            .subs
            .read()
            .get(channel)
            .map(|subs| subs.iter().map(|(_, tx)| tx.clone()).collect())
            .unwrap_or_default();
        let mut delivered = 0;
        for tx in targets {
            let event = BrokerEvent {
                channel: channel.clone(),
                envelope: envelope.clone(),
            };
            // A closed receiver is a node that has shut down: not a receiver.
            if tx.send(event).await.is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

impl Broker for MemoryBroker {
    async fn publish(
        &self,
        channels: &[Channel],
        envelope: &Envelope,
    ) -> Result<Vec<usize>, BrokerError> {
        // Nothing to encode or wait for on the wire: the envelope (an
        // `Arc`) is handed to each subscribed node in turn.
        let mut counts = Vec::with_capacity(channels.len());
        for channel in channels {
            counts.push(self.publish_one(channel, envelope).await);
        }
        Ok(counts)
    }

    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        if self.events.is_closed() {
            return Err(BrokerError::Closed);
        }
        let mut subs = self.bus.subs.write();
        for ch in channels {
            let list = subs.entry(ch.clone()).or_default();
            if !list.iter().any(|(id, _)| *id == self.id) {
                list.push((self.id, self.events.clone()));
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        let mut subs = self.bus.subs.write();
        for ch in channels {
            if let Some(list) = subs.get_mut(ch) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    subs.remove(ch);
                }
            }
        }
        Ok(())
    }

    async fn close(&self) {
        let mut subs = self.bus.subs.write();
        subs.retain(|_, list| {
            list.retain(|(id, _)| *id != self.id);
            !list.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Command;

    #[tokio::test]
    async fn publishes_reach_subscribed_brokers_only() {
        let bus = MemoryBus::new();
        let (tx1, mut rx1) = mpsc::channel(8);
        let (tx2, mut rx2) = mpsc::channel(8);
        let (b1, b2) = (bus.broker(tx1), bus.broker(tx2));
        let ch = Channel::user("1");
        b1.subscribe(std::slice::from_ref(&ch)).await.unwrap();
        let env = Envelope::Command(Command::Disconnect);
        let other = Channel::user("2");
        assert_eq!(
            b2.publish(&[ch.clone(), other], &env).await.unwrap(),
            vec![1, 0]
        );
        assert_eq!(rx1.recv().await.unwrap().channel, ch);
        assert!(rx2.try_recv().is_err());
        b1.unsubscribe(std::slice::from_ref(&ch)).await.unwrap();
        assert_eq!(
            b2.publish(std::slice::from_ref(&ch), &env).await.unwrap(),
            vec![0]
        );
        assert_eq!(bus.channel_count(), 0);
    }
}
