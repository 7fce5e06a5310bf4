//! Is Redis usable right now? Connection state sampled for readiness (with
//! a debounce, so a reset that reconnects at once does not fail a fleet),
//! the pub/sub probe through every subscriber connection (a connection that
//! is up but delivers nothing is restarted), and on a cluster the slot-map
//! check that resubscribes after resharding.

use std::{
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    error::Error as FredError,
    interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface},
};
use tokio::sync::broadcast::error::RecvError;

use super::RedisBroker;
use crate::{
    broker::{BrokerError, Health},
    metrics,
};

/// Consecutive missed probes before a connection is restarted (and
/// readiness fails).
const PROBE_MISSES: u32 = 2;
/// How long a disconnect must last before readiness reports it.
pub const READY_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often connection state is sampled for the debounce and the gauge.
const WATCH_EVERY: Duration = Duration::from_millis(250);

// === impl RedisBroker ===

impl RedisBroker {
    /// Whether a command should be sent at all: refused at once while the
    /// publisher is disconnected, or while its last probe did not get
    /// through in time (a frozen Redis), rather than after the command
    /// timeout. Nothing was sent, so the caller may safely retry.
    pub(super) fn usable(&self) -> Result<(), BrokerError> {
        if !self.inner.publisher.is_connected() || self.inner.publisher_down.load(Ordering::Relaxed)
        {
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        }
        if !self.inner.publisher_ok.load(Ordering::Relaxed) {
            return Err(BrokerError::Unavailable(
                "Redis did not answer the last probe in time".into(),
            ));
        }
        Ok(())
    }

    /// Runs a command on the publisher if it is [`usable`](Self::usable),
    /// and gives up on it as soon as the publisher's connection is lost:
    /// fred would hold a command sent just before (or just after) the
    /// loss until it has reconnected, so the caller would wait up to
    /// `--redis-timeout`. Given up on, the command may still be sent once
    /// fred reconnects: for a publish (`publishes`) the outcome is
    /// unknown; a read is simply unavailable.
    pub(super) async fn unless_lost<T>(
        &self,
        publishes: bool,
        call: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        // Created before the check: a loss after it still wakes this one.
        let lost = self.inner.publisher_lost.notified();
        self.usable()?;
        tokio::select! {
            biased;
            r = call => r,
            () = lost => {
                let why = "the connection to Redis was lost".to_owned();
                Err(if publishes {
                    BrokerError::OutcomeUnknown(why)
                } else {
                    BrokerError::Unavailable(why)
                })
            }
        }
    }

    /// Marks the publisher down on its first connection error and wakes
    /// every command in flight; marks it up again when fred reconnects.
    pub(super) async fn watch_publisher(self) {
        let publisher = &self.inner.publisher;
        let (mut errors, mut reconnects) = (publisher.error_rx(), publisher.reconnect_rx());
        loop {
            // Errors first: when both are pending, the reconnect came last.
            let up = tokio::select! {
                biased;
                () = self.inner.stop.cancelled() => return,
                e = errors.recv() => match e {
                    Err(RecvError::Closed) => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => false,
                },
                r = reconnects.recv() => match r {
                    Err(RecvError::Closed) => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => true,
                },
            };
            let was_up = !self.inner.publisher_down.swap(!up, Ordering::Relaxed);
            if !up {
                self.inner.publisher_lost.notify_waiters();
                if was_up {
                    tracing::warn!(
                        "lost the connection to Redis; refusing publishes until it is back"
                    );
                }
            }
        }
    }

    fn connected(&self) -> bool {
        self.inner.publisher.is_connected()
            && self.inner.shards.iter().all(|s| s.client.is_connected())
    }

    /// Notes when a connection went down (checked every [`WATCH_EVERY`]),
    /// so readiness can tell a blip from an outage.
    fn observe_connection(&self) -> bool {
        let up = self.connected();
        let mut down_since = self.inner.down_since.lock();
        if up {
            *down_since = None;
        } else {
            down_since.get_or_insert_with(Instant::now);
        }
        metrics::broker_connected(up);
        up
    }

    pub(super) async fn watch_connection(self) {
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            self.observe_connection();
        }
    }

    /// Current health, for readiness. A disconnect counts only once it has
    /// lasted [`READY_DEBOUNCE`] (measured from when it was first seen, at
    /// most [`WATCH_EVERY`] after it happened): a connection reset that
    /// reconnects at once must not take a whole fleet out of rotation.
    pub(super) fn current_health(&self) -> Health {
        let up = self.observe_connection();
        let connected = up
            || self
                .inner
                .down_since
                .lock()
                .is_some_and(|since| since.elapsed() < READY_DEBOUNCE);
        Health {
            connected,
            probe_ok: self.inner.probe_ok.load(Ordering::Relaxed),
        }
    }

    /// Sends a probe through every subscriber connection each interval and
    /// restarts a connection that misses [`PROBE_MISSES`] in a row.
    pub(super) async fn prober(self, interval: Duration) {
        let mut misses = vec![0u32; self.inner.shards.len()];
        let mut seq = 0u64;
        // The map subscriptions were made against: read before any.
        let mut slot_map = self.inner.slot_map_at_start;
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if self.inner.clustered {
                self.check_slot_map(&mut slot_map).await;
            }
            // Check the previous round, then send the next.
            let mut all_ok = true;
            for (shard, missed) in self.inner.shards.iter().zip(misses.iter_mut()) {
                let sent = shard.probe_sent.load(Ordering::Relaxed);
                if sent == 0 || shard.probe_seen.load(Ordering::Relaxed) >= sent {
                    *missed = 0;
                    continue;
                }
                *missed += 1;
                // One late probe is a slow reply, not an outage: readiness
                // fails only after PROBE_MISSES in a row.
                all_ok &= *missed < PROBE_MISSES;
                metrics::broker_probe_failed();
                tracing::warn!(
                    connection = shard.index,
                    missed = *missed,
                    "pub/sub probe not received"
                );
                // Restart every PROBE_MISSES misses; the count (and failed
                // readiness) lasts until a probe comes through again.
                if *missed % PROBE_MISSES == 0 && shard.client.is_connected() {
                    tracing::warn!(
                        connection = shard.index,
                        "restarting a pub/sub connection that delivers nothing"
                    );
                    // The reconnect event makes the resubscriber restore
                    // everything. Bounded: a frozen Redis must not stop
                    // the prober.
                    match tokio::time::timeout(interval, shard.client.force_reconnection()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "restart failed"),
                        Err(_) => {
                            tracing::warn!("restart did not finish within the probe interval")
                        }
                    }
                }
            }
            self.inner.probe_ok.store(all_ok, Ordering::Relaxed);
            seq += 1;
            if !self.inner.publisher.is_connected() {
                continue;
            }
            // Every connection's probe at once, each bounded by the
            // interval, none awaited by this loop: a frozen Redis must not
            // stretch a round (it used to await each PUBLISH in turn, for
            // up to --redis-timeout each, so no round ever ended and no
            // miss was ever counted).
            for shard in &self.inner.shards {
                shard.probe_sent.store(seq, Ordering::Relaxed);
                let broker = self.clone();
                let channel = shard.probe_channel.clone();
                tokio::spawn(async move {
                    let publisher = &broker.inner.publisher;
                    let publish = async {
                        let r: Result<i64, FredError> = if broker.inner.clustered {
                            publisher.spublish(&channel, seq).await
                        } else {
                            publisher.publish(&channel, seq).await
                        };
                        r
                    };
                    let through = match tokio::time::timeout(interval, publish).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "probe publish failed");
                            false
                        }
                        Err(_) => false,
                    };
                    let was = broker.inner.publisher_ok.swap(through, Ordering::Relaxed);
                    if was && !through {
                        tracing::warn!(
                            "Redis did not answer a probe within the probe interval; refusing publishes until it does"
                        );
                    } else if !was && through {
                        tracing::info!("Redis answers probes again");
                    }
                });
            }
        }
    }

    /// Redis moves sharded subscriptions with their slot only by telling
    /// the client `sunsubscribe`, which fred drops. So the slot map is
    /// compared every probe interval; when it changed, every connection
    /// refreshes its routing and resubscribes on the new owners.
    async fn check_slot_map(&self, last: &mut Option<u64>) {
        let Some(hash) = slot_map_hash(&self.inner.publisher, &self.inner.hasher).await else {
            return;
        };
        let changed = last.is_some_and(|h| h != hash);
        *last = Some(hash);
        if !changed {
            return;
        }
        tracing::info!("Redis Cluster slots moved; resubscribing on the new owners");
        metrics::broker_reconnected();
        if let Err(e) = self.inner.publisher.sync_cluster().await {
            tracing::warn!(error = %e, "cannot refresh the publisher's cluster routing");
        }
        for shard in &self.inner.shards {
            if let Err(e) = shard.client.sync_cluster().await {
                tracing::warn!(error = %e, "cannot refresh the cluster routing");
            }
            self.resubscribe_all(shard).await;
        }
    }
}

/// A fingerprint of the cluster's slot map (`CLUSTER SLOTS`).
pub(super) async fn slot_map_hash(publisher: &Client, hasher: &RandomState) -> Option<u64> {
    let slots: Result<fred::types::Value, FredError> = publisher.cluster_slots().await;
    match slots {
        Ok(slots) => Some(hasher.hash_one(format!("{slots:?}"))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster slot map");
            None
        }
    }
}
