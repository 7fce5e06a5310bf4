//! Keeping the broker's subscriptions in step with the hub: the
//! per-channel subscription locks, subscribe on the first local
//! subscriber, and unsubscribe on the last one, after a linger.
//!
//! A channel's lock is one of [`SUB_LOCKS`] async mutexes picked by hashing
//! the channel (Centrifugo's `subLocks`). Each guards the set of channels
//! (of its shard) the broker is subscribed to for this node. They are async
//! mutexes because they are held across the broker round trip.

use std::{collections::HashSet, collections::VecDeque, hash::BuildHasher};

use tokio::{
    sync::{MutexGuard, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::{
    broker::{Broker, BrokerError},
    metrics,
    protocol::{Channel, ChannelKind},
};

/// Subscription locks; many, so unrelated channels rarely share one.
pub const SUB_LOCKS: usize = 4096;

/// Channels waiting out their linger before UNSUBSCRIBE.
pub(super) const DISSOLVE_QUEUE: usize = 65_536;

/// The channel set one subscription lock guards.
pub(super) type Subscribed = HashSet<Channel>;

// === impl Node ===

impl Node {
    /// Takes `channel`'s subscription lock.
    pub(super) async fn lock(&self, channel: &Channel) -> MutexGuard<'_, Subscribed> {
        let i = (self.inner.lock_hasher.hash_one(channel) as usize) % SUB_LOCKS;
        self.inner.sub_locks[i].lock().await
    }

    /// Subscribes the broker to `channel` unless it already is (possibly
    /// still lingering after its last subscriber left). Call under the lock.
    pub(super) async fn ensure_subscribed(
        &self,
        subs: &mut Subscribed,
        channel: &Channel,
    ) -> Result<(), BrokerError> {
        if !subs.contains(channel) {
            self.inner
                .broker
                .subscribe(std::slice::from_ref(channel))
                .await?;
            subs.insert(channel.clone());
            metrics::broker_subscriptions(1.0);
            // Nothing connects what the node delivered before it was last
            // subscribed with what comes now: start the channel afresh.
            self.forget_channel(channel);
        }
        Ok(())
    }

    /// The last local subscriber of `channel` left: unsubscribe now, or
    /// after the linger if one is configured. Call under the lock.
    pub(super) async fn release(&self, subs: &mut Subscribed, channel: Channel) {
        let linger = self.inner.opts.unsubscribe_linger;
        if !linger.is_zero() {
            match self
                .inner
                .dissolve_tx
                .try_send((channel, Instant::now() + linger))
            {
                Ok(()) => return,
                // Too many channels lingering: give this one up at once.
                Err(
                    mpsc::error::TrySendError::Full((c, _))
                    | mpsc::error::TrySendError::Closed((c, _)),
                ) => {
                    self.unsubscribe_now(subs, c).await;
                    return;
                }
            }
        }
        self.unsubscribe_now(subs, channel).await;
    }

    async fn unsubscribe_now(&self, subs: &mut Subscribed, channel: Channel) {
        if subs.remove(&channel) {
            metrics::broker_subscriptions(-1.0);
            self.forget_channel(&channel);
            if let Err(e) = self
                .inner
                .broker
                .unsubscribe(std::slice::from_ref(&channel))
                .await
            {
                // The broker forgets a lost connection's subscriptions
                // anyway; a stale one costs deliveries nobody receives.
                match e {
                    BrokerError::Closed => {
                        tracing::debug!(%channel, "unsubscribe after broker close");
                    }
                    BrokerError::Unavailable(_) | BrokerError::OutcomeUnknown(_) => {
                        tracing::warn!(%channel, error = %e, "unsubscribe failed");
                    }
                }
            }
        }
    }

    /// After the linger: unsubscribe unless a local subscriber came back.
    async fn unsubscribe_if_unused(&self, channel: &Channel) {
        let mut subs = self.lock(channel).await;
        let in_use = match channel.kind() {
            ChannelKind::User(uid) => self.inner.hub.user_connections(uid) > 0,
            ChannelKind::Group(group) => self.inner.hub.has_group(group),
            ChannelKind::All | ChannelKind::Node(_) => true,
        };
        if !in_use {
            self.unsubscribe_now(&mut subs, channel.clone()).await;
        }
    }

    /// Unsubscribes channels whose linger ran out with no local subscriber
    /// back, many at once so the broker can batch them. Runs until `stop`.
    pub async fn dissolve(self, stop: CancellationToken) {
        let Some(mut rx) = self.inner.dissolve_rx.lock().take() else {
            return;
        };
        let mut waiting: VecDeque<(Channel, Instant)> = VecDeque::new();
        loop {
            let next = waiting.front().map(|(_, at)| *at);
            tokio::select! {
                () = stop.cancelled() => return,
                item = rx.recv() => match item {
                    Some(item) => waiting.push_back(item),
                    None => return,
                },
                () = sleep_until_opt(next) => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    while waiting.front().is_some_and(|(_, at)| *at <= now) {
                        if let Some((channel, _)) = waiting.pop_front() {
                            due.push(channel);
                        }
                    }
                    futures_util::future::join_all(due.iter().map(|c| self.unsubscribe_if_unused(c))).await;
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
