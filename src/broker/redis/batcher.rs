//! The SUBSCRIBE/UNSUBSCRIBE batcher: one task sends a lone request at
//! once when it is quiet, and otherwise gathers (un)subscribe requests
//! while they keep arriving, in a window that grows under load (up to
//! [`BATCH_MAX_WAIT`]), and sends one command per connection (per hash
//! slot on a cluster), so a reconnect storm of thousands of users costs a
//! few commands per second while a single connect waits one round trip.

use std::{collections::HashMap, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::RedisBroker;
use crate::broker::BrokerError;

/// The batching window: how long a (un)subscribe request may wait to be
/// sent with others. It starts at the minimum, doubles after each busy
/// batch (a connection storm) up to the maximum, and halves after each quiet
/// one, so a storm of thousands costs a few commands per second. At the
/// minimum, a request that finds nothing else waiting is not held at all.
const BATCH_MIN_WAIT: Duration = Duration::from_millis(5);
pub const BATCH_MAX_WAIT: Duration = Duration::from_millis(250);
/// A batch of at least this many requests counts as busy.
const BATCH_BUSY: usize = 8;
/// A batch closes once no request has come for [`GAP_FACTOR`] times the
/// mean gap between its requests so far, at least [`BATCH_GAP_MIN`] and at
/// most a quarter of the window. A storm (thousands connecting at once)
/// keeps requests coming, so it still fills the window; clients that open
/// a few hundred connections at a time and wait for `welcome` before the
/// next ones stop coming once all of them wait in the batch, and waiting
/// on then only adds latency: a fixed quarter of the window (up to 62 ms)
/// held connect rates at ~2,600/s with 256 handshakes in flight.
const BATCH_GAP_MIN: Duration = Duration::from_millis(5);
const GAP_FACTOR: u32 = 8;
/// Most channels in one batch.
const BATCH_MAX_CHANNELS: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Subscribe,
    Unsubscribe,
}

/// One (un)subscribe request of the node.
pub(super) struct Op {
    pub(super) kind: OpKind,
    /// Full Redis channel names.
    pub(super) channels: Vec<String>,
    /// Receives the outcome; the caller waits on it.
    pub(super) done: oneshot::Sender<Result<(), BrokerError>>,
}

/// How long a batch that has gathered `len` requests in `gathering` waits
/// for the next one before it is sent: "requests stopped coming".
fn stop_after(gathering: Duration, len: usize, window: Duration) -> Duration {
    let mean = gathering / u32::try_from(len.max(1)).unwrap_or(u32::MAX);
    mean.saturating_mul(GAP_FACTOR)
        .clamp(BATCH_GAP_MIN, (window / 4).max(BATCH_GAP_MIN))
}

// === impl RedisBroker ===

impl RedisBroker {
    /// Gathers (un)subscribe requests into batches and sends them.
    pub(super) async fn batcher(self, mut ops: mpsc::Receiver<Op>) {
        let mut window = BATCH_MIN_WAIT;
        loop {
            let first = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                op = ops.recv() => match op { Some(op) => op, None => return },
            };
            // Quiet (the last batch was small and nothing else waits): a
            // lone connect or join goes out at once instead of waiting for
            // company that is not coming. What arrives while it is in
            // flight queues up, so a storm still finds requests waiting
            // and is batched in a growing window as before.
            if window == BATCH_MIN_WAIT && ops.is_empty() {
                self.run_batch(vec![first]).await;
                continue;
            }
            let started = tokio::time::Instant::now();
            let deadline = started + window;
            let mut count = first.channels.len();
            let mut batch = vec![first];
            while count < BATCH_MAX_CHANNELS {
                let now = tokio::time::Instant::now();
                let left = deadline.saturating_duration_since(now);
                let gap = stop_after(now - started, batch.len(), window);
                match tokio::time::timeout(gap.min(left), ops.recv()).await {
                    Ok(Some(op)) => {
                        count += op.channels.len();
                        batch.push(op);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            window = if batch.len() >= BATCH_BUSY {
                (window * 2).min(BATCH_MAX_WAIT)
            } else {
                (window / 2).max(BATCH_MIN_WAIT)
            };
            self.run_batch(batch).await;
        }
    }

    async fn run_batch(&self, batch: Vec<Op>) {
        // The node serialises operations on one channel, so a channel
        // appears at most once per batch and the order of ops is free.
        let (unsubscribes, subscribes): (Vec<Op>, Vec<Op>) = batch
            .into_iter()
            .partition(|op| op.kind == OpKind::Unsubscribe);
        self.run_ops(OpKind::Unsubscribe, unsubscribes).await;
        self.run_ops(OpKind::Subscribe, subscribes).await;
    }

    /// One command per connection for all `ops` (all of one kind); each op
    /// gets the first error of the connections its channels went to.
    async fn run_ops(&self, kind: OpKind, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let mut per_shard: HashMap<usize, Vec<String>> = HashMap::new();
        for op in &ops {
            for name in &op.channels {
                per_shard
                    .entry(self.shard_of(name).index)
                    .or_default()
                    .push(name.clone());
            }
        }
        let results: HashMap<usize, Result<(), BrokerError>> =
            futures_util::future::join_all(per_shard.into_iter().map(|(i, names)| async move {
                let shard = &self.inner.shards[i];
                let r = match kind {
                    OpKind::Subscribe => self.send_subscribe(shard, names).await,
                    OpKind::Unsubscribe => {
                        self.send_unsubscribe(shard, names).await;
                        Ok(())
                    }
                };
                (i, r)
            }))
            .await
            .into_iter()
            .collect();
        for op in ops {
            let r = op
                .channels
                .iter()
                .find_map(|n| results.get(&self.shard_of(n).index)?.clone().err())
                .map_or(Ok(()), Err);
            let _ = op.done.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Fast arrivals close a batch soon after they stop; slow ones are
    /// waited for longer, never past a quarter of the window.
    #[test]
    fn the_wait_for_more_follows_the_pace_of_arrivals() {
        let window = BATCH_MAX_WAIT;
        assert_eq!(
            stop_after(MS * 20, 200, window),
            BATCH_GAP_MIN,
            "0.1 ms apart"
        );
        assert_eq!(stop_after(MS * 20, 10, window), MS * 16, "2 ms apart");
        assert_eq!(stop_after(MS * 200, 2, window), window / 4, "100 ms apart");
        assert_eq!(stop_after(Duration::ZERO, 1, window), BATCH_GAP_MIN);
        assert_eq!(stop_after(MS * 50, 1, BATCH_MIN_WAIT), BATCH_GAP_MIN);
    }
}
