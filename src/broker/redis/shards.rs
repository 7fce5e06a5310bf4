//! The pool of subscriber connections ("shards"). A channel belongs to one
//! shard, by hash of its name, so one killed or backlogged connection does
//! not cut the whole node off.
//!
//! Each shard's wanted channels are tracked here, not by fred (whose
//! resubscribe sends an empty SUBSCRIBE when only shard channels are
//! tracked, and which drops server-pushed `sunsubscribe`s during
//! resharding). After every reconnect or cluster change the shard
//! resubscribes everything it should have, in chunks. Received messages go
//! into the node's bounded event channel; a lag in fred's own receive
//! buffer is counted, never ignored.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    util::redis_keyslot,
};
use tokio::sync::broadcast::error::RecvError;

use super::{RedisBroker, unavailable};
use crate::{
    broker::{BrokerError, BrokerEvent, Inbound, wire},
    log_limit::LogLimiter,
    metrics::{self, BrokerDrop, BrokerOp},
    protocol::Channel,
};

/// Most channels in one resubscribe command.
const RESUBSCRIBE_CHUNK: usize = 5_000;

/// One subscriber connection and what it should be subscribed to.
pub(super) struct Shard {
    pub(super) index: usize,
    pub(super) client: SubscriberClient,
    /// Full Redis channel names this connection must hold. Changed by the
    /// batcher; read by the resubscriber after a reconnect.
    pub(super) wanted: parking_lot::Mutex<HashSet<String>>,
    pub(super) probe_channel: String,
    /// Sequence of the last probe sent (by the prober) / seen (by the
    /// receive task) on this connection.
    pub(super) probe_sent: AtomicU64,
    pub(super) probe_seen: AtomicU64,
}

// === impl RedisBroker ===

impl RedisBroker {
    /// Turns messages of one subscriber connection into node events.
    pub(super) async fn receive(self, index: usize) {
        let shard = &self.inner.shards[index];
        let mut rx = shard.client.message_rx();
        let prefix = format!("{}:", self.inner.prefix);
        loop {
            let msg = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                msg = rx.recv() => msg,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(RecvError::Lagged(n)) => {
                    metrics::broker_dropped(BrokerDrop::Lagged, n);
                    tracing::warn!(lost = n, "Redis receive buffer overflowed; messages lost");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let received = Instant::now();
            if *msg.channel == *shard.probe_channel {
                if let Some(seq) = msg.value.as_u64() {
                    shard.probe_seen.fetch_max(seq, Ordering::Relaxed);
                }
                continue;
            }
            let Some(channel) = msg.channel.strip_prefix(&prefix).and_then(Channel::parse) else {
                continue;
            };
            let payload = msg.value.as_bytes().unwrap_or_default();
            let decoded = wire::decode(payload, self.inner.max_json_depth, crate::ids::message_id);
            let (envelope, position) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    metrics::broker_dropped(e.metric(), 1);
                    warn_invalid(&channel, e);
                    continue;
                }
            };
            let event = BrokerEvent {
                channel,
                envelope,
                position,
                received,
            };
            if self.inner.events.send(Inbound::Event(event)).await.is_err() {
                return;
            }
        }
    }

    /// Resubscribes a connection's wanted channels after each reconnect
    /// and (on a cluster) each topology change.
    pub(super) async fn resubscriber(self, index: usize) {
        let shard = &self.inner.shards[index];
        let mut reconnects = shard.client.reconnect_rx();
        let mut changes = shard.client.cluster_change_rx();
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                r = reconnects.recv() => if matches!(r, Err(RecvError::Closed)) { return },
                c = changes.recv() => if matches!(c, Err(RecvError::Closed)) { return },
            }
            metrics::broker_reconnected();
            self.resubscribe_all(shard).await;
        }
    }

    pub(super) async fn resubscribe_all(&self, shard: &Shard) {
        let started = Instant::now();
        let mut wanted: Vec<String> = shard.wanted.lock().iter().cloned().collect();
        // What was published while the connection was down never arrived:
        // the node holds these channels' messages from now on, and catches
        // them up from history once they are subscribed again.
        let prefix = format!("{}:", self.inner.prefix);
        let channels: Vec<Channel> = wanted
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix).and_then(Channel::parse))
            .collect();
        if !channels.is_empty() {
            let _ = self
                .inner
                .events
                .send(Inbound::Resubscribing(channels.clone()))
                .await;
        }
        wanted.push(shard.probe_channel.clone());
        let mut failed = 0;
        for chunk in wanted.chunks(RESUBSCRIBE_CHUNK) {
            if let Err(e) = self.redis_subscribe(shard, chunk.to_vec()).await {
                failed += chunk.len();
                tracing::warn!(error = %e, "resubscribe failed; will retry on the next reconnect or probe");
            }
        }
        metrics::broker_resubscribed(started.elapsed());
        tracing::info!(
            connection = shard.index,
            channels = wanted.len(),
            failed,
            took_ms = started.elapsed().as_millis() as u64,
            "resubscribed after reconnect"
        );
        if !channels.is_empty() {
            let _ = self
                .inner
                .events
                .send(Inbound::Resubscribed(channels))
                .await;
        }
    }

    /// Adds `names` to the connection's wanted set and subscribes them.
    pub(super) async fn send_subscribe(
        &self,
        shard: &Shard,
        names: Vec<String>,
    ) -> Result<(), BrokerError> {
        shard.wanted.lock().extend(names.iter().cloned());
        if !shard.client.is_connected() {
            shard.wanted.lock().retain(|n| !names.contains(n));
            metrics::broker_command(BrokerOp::Subscribe, false);
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        }
        let r = self.redis_subscribe(shard, names.clone()).await;
        metrics::broker_command(BrokerOp::Subscribe, r.is_ok());
        if r.is_err() {
            // The SUBSCRIBE may still be carried out (it was written, and
            // only its confirmation timed out): undo it behind it on the
            // same connection, or Redis would keep sending the node a
            // channel it gave up on and count its user as online.
            self.send_unsubscribe(shard, names).await;
        }
        r
    }

    /// Removes `names` from the wanted set and unsubscribes them. Errors
    /// are logged only: after a reconnect they are not resubscribed anyway.
    pub(super) async fn send_unsubscribe(&self, shard: &Shard, names: Vec<String>) {
        {
            let mut wanted = shard.wanted.lock();
            for n in &names {
                wanted.remove(n);
            }
        }
        // fred clears every subscription on an empty UNSUBSCRIBE: never send one.
        if names.is_empty() || !shard.client.is_connected() {
            return;
        }
        let r = if self.inner.clustered {
            let mut result = Ok(());
            for group in by_slot(names) {
                if let Err(e) = shard.client.sunsubscribe(group).await {
                    result = Err(e);
                }
            }
            result
        } else {
            shard.client.unsubscribe(names).await
        };
        metrics::broker_command(BrokerOp::Unsubscribe, r.is_ok());
        if let Err(e) = r {
            tracing::warn!(error = %e, "unsubscribe failed");
        }
    }

    /// SUBSCRIBE (or SSUBSCRIBE grouped by hash slot) without touching the
    /// wanted set.
    async fn redis_subscribe(&self, shard: &Shard, names: Vec<String>) -> Result<(), BrokerError> {
        if names.is_empty() {
            return Ok(());
        }
        if self.inner.clustered {
            for group in by_slot(names) {
                shard
                    .client
                    .ssubscribe(group)
                    .await
                    .map_err(|e| unavailable(&e))?;
            }
            Ok(())
        } else {
            shard
                .client
                .subscribe(names)
                .await
                .map_err(|e| unavailable(&e))?;
            // fred resolves a SUBSCRIBE once it is written, not once Redis
            // has taken it (its confirmations are dropped as out of band).
            // Redis answers one connection's commands in order, so the
            // PONG says the SUBSCRIBE before it is in force. Without it a
            // history read on another connection could overtake the
            // SUBSCRIBE, and a message published between the two was in
            // neither. (An SSUBSCRIBE is answered and awaited as it is.)
            shard
                .client
                .ping::<fred::types::Value>(None)
                .await
                .map(drop)
                .map_err(|e| unavailable(&e))
        }
    }
}

/// Groups channel names by cluster hash slot (one SSUBSCRIBE per slot).
pub(super) fn by_slot(names: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: HashMap<u16, Vec<String>> = HashMap::new();
    for n in names {
        groups
            .entry(redis_keyslot(n.as_bytes()))
            .or_default()
            .push(n);
    }
    groups.into_values().collect()
}
/// Invalid bodies are logged at most once every 10 s, with how many were
/// dropped meanwhile.
static INVALID_BODY_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(10));

fn warn_invalid(channel: &Channel, error: wire::DecodeError) {
    if let Some(suppressed) = INVALID_BODY_LOG.allow() {
        tracing::warn!(
            %channel,
            %error,
            suppressed,
            "dropped an invalid message published to Redis"
        );
    }
}
