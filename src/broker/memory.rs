//! The in-process broker: the default when no Redis is configured.
//!
//! A [`MemoryBus`] is the shared "server"; each node gets its own
//! [`MemoryBroker`] on it, so tests can run several nodes in one process
//! over one bus exactly as they would over Redis. The bus keeps every
//! channel's history ([`Logs`]) with the same semantics as Redis.
//!
//! Publishing holds the bus's publish lock from the append to the last
//! delivery, so every node receives a channel's messages in offset order,
//! and waits for room in each subscribed node's bounded event channel
//! (back-pressure on the publisher, never an unbounded queue).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use parking_lot::RwLock;
use tokio::sync::{Mutex, mpsc};

use super::{
    Broker, BrokerError, BrokerEvent, Envelope, History, HistoryOptions, IdempotencyKey, Inbound,
    Published,
    history::{Appended, Logs},
};
use crate::protocol::{Channel, Epoch, Position};

type Subscribers = Vec<(u64, mpsc::Sender<Inbound>)>;

/// The shared bus several [`MemoryBroker`]s publish and subscribe on.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    /// channel → subscribed brokers. Written on (un)subscribe, read on
    /// publish; the lock is released before any send.
    subs: Arc<RwLock<HashMap<Channel, Subscribers>>>,
    /// Every channel's history. An async mutex: a publish holds it across
    /// its deliveries (which may wait for room), so that deliveries follow
    /// offset order.
    logs: Arc<Mutex<Logs>>,
    next_id: Arc<AtomicU64>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(HistoryOptions::default())
    }
}

impl MemoryBus {
    pub fn new(history: HistoryOptions) -> Self {
        Self {
            subs: Arc::default(),
            logs: Arc::new(Mutex::new(Logs::new(history))),
            next_id: Arc::default(),
        }
    }

    /// A broker for one node that delivers into `events`.
    pub fn broker(&self, events: mpsc::Sender<Inbound>) -> MemoryBroker {
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
    events: mpsc::Sender<Inbound>,
}

impl MemoryBroker {
    /// Delivers to every node subscribed to `channel`; returns how many.
    async fn deliver(
        &self,
        channel: &Channel,
        envelope: &Envelope,
        position: Option<&Position>,
    ) -> usize {
        let targets: Vec<mpsc::Sender<Inbound>> = self
            .bus
            .subs
            .read()
            .get(channel)
            .map(|subs| subs.iter().map(|(_, tx)| tx.clone()).collect())
            .unwrap_or_default();
        let mut delivered = 0;
        for tx in targets {
            let event = Inbound::Event(BrokerEvent {
                channel: channel.clone(),
                envelope: envelope.clone(),
                position: position.cloned(),
                received: Instant::now(),
            });
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
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<Published>, BrokerError> {
        let mut logs = self.bus.logs.lock().await;
        let mut outcomes = Vec::with_capacity(channels.len());
        for channel in channels {
            let appended = match envelope {
                Envelope::Publication(p) => logs.append(channel, p, key),
                Envelope::Command(_) => Appended::Live,
            };
            let outcome = match appended {
                Appended::Repeat {
                    position,
                    receivers,
                } => Published {
                    receivers,
                    position: Some(position),
                },
                Appended::New(position) => {
                    let receivers = self.deliver(channel, envelope, Some(&position)).await;
                    if let Some(key) = key {
                        logs.record_receivers(channel, key, receivers);
                    }
                    Published {
                        receivers,
                        position: Some(position),
                    }
                }
                Appended::Live => Published {
                    receivers: self.deliver(channel, envelope, None).await,
                    position: None,
                },
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn position(&self, channel: &Channel) -> Result<Position, BrokerError> {
        Ok(self.bus.logs.lock().await.position(channel))
    }

    async fn history(
        &self,
        channel: &Channel,
        since: &Position,
        limit: usize,
    ) -> Result<History, BrokerError> {
        Ok(self.bus.logs.lock().await.read(channel, since, limit))
    }

    async fn reset_epoch(
        &self,
        channel: &Channel,
        expected: &Epoch,
    ) -> Result<Position, BrokerError> {
        Ok(self.bus.logs.lock().await.reset(channel, expected))
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

    fn event(inbound: Inbound) -> BrokerEvent {
        match inbound {
            Inbound::Event(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn publishes_reach_subscribed_brokers_only() {
        let bus = MemoryBus::default();
        let (tx1, mut rx1) = mpsc::channel(8);
        let (tx2, mut rx2) = mpsc::channel(8);
        let (b1, b2) = (bus.broker(tx1), bus.broker(tx2));
        let ch = Channel::user("1");
        b1.subscribe(std::slice::from_ref(&ch)).await.unwrap();
        let env = Envelope::Command(Command::Disconnect);
        let other = Channel::user("2");
        let receivers: Vec<usize> = b2
            .publish(&[ch.clone(), other], &env, None)
            .await
            .unwrap()
            .iter()
            .map(|p| p.receivers)
            .collect();
        assert_eq!(receivers, vec![1, 0]);
        let got = event(rx1.recv().await.unwrap());
        assert_eq!((got.channel, got.position), (ch.clone(), None));
        assert!(rx2.try_recv().is_err());
        b1.unsubscribe(std::slice::from_ref(&ch)).await.unwrap();
        let again = b2
            .publish(std::slice::from_ref(&ch), &env, None)
            .await
            .unwrap();
        assert_eq!(again[0].receivers, 0);
        assert_eq!(bus.channel_count(), 0);
    }

    #[tokio::test]
    async fn publications_carry_their_history_position() {
        let bus = MemoryBus::default();
        let (tx, mut rx) = mpsc::channel(8);
        let b = bus.broker(tx);
        let ch = Channel::group("g");
        b.subscribe(std::slice::from_ref(&ch)).await.unwrap();
        let start = b.position(&ch).await.unwrap();
        let p = Arc::new(crate::protocol::Publication {
            id: "m".into(),
            ts: 1,
            event: None,
            data: crate::protocol::null_value(),
            from: None,
        });
        let out = b
            .publish(std::slice::from_ref(&ch), &Envelope::Publication(p), None)
            .await
            .unwrap();
        let pos = out[0].position.clone().unwrap();
        assert_eq!((pos.offset, &pos.epoch), (1, &start.epoch));
        assert_eq!(event(rx.recv().await.unwrap()).position, Some(pos));
        let History::Complete { messages, .. } = b.history(&ch, &start, 10).await.unwrap() else {
            panic!("complete")
        };
        assert_eq!(messages.len(), 1);
    }
}
