//! The Redis broker: plain pub/sub (or sharded pub/sub on Redis Cluster)
//! on channels `<prefix>:user:<uid>`, `<prefix>:group:<name>`,
//! `<prefix>:all` and `<prefix>:node:<id>`, plus one probe channel per
//! pub/sub connection, `<prefix>:probe:<node>:<n>`.
//!
//! - Subscriptions are spread over a small pool of subscriber connections
//!   (by hash of the channel), so one killed or backlogged connection does
//!   not cut the whole node off.
//! - SUBSCRIBE/UNSUBSCRIBE requests are batched by one task: it gathers
//!   requests while they keep arriving, in a window that grows under load
//!   (up to [`BATCH_MAX_WAIT`]), and sends one command per connection (per
//!   hash slot on a cluster).
//! - Each connection's wanted channels are tracked here, not by fred (whose
//!   resubscribe sends an empty SUBSCRIBE when only shard channels are
//!   tracked, and which drops server-pushed `sunsubscribe`s during
//!   resharding). After every reconnect or cluster change the connection
//!   resubscribes everything it should have, in batches.
//! - A probe message goes through every connection's own probe channel
//!   each `probe_interval`; a connection that is up but delivers nothing is
//!   restarted.
//! - Received messages go into the node's bounded event channel. fred's
//!   own receive buffer is raised; a lag there is counted, never ignored.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    clients::{Client, SubscriberClient},
    error::Error as FredError,
    interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface},
    types::{
        Builder,
        config::{Config as FredConfig, ReconnectPolicy},
    },
    util::redis_keyslot,
};
use tokio::sync::{broadcast::error::RecvError, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Broker, BrokerError, BrokerEvent, Envelope, wire};
use crate::{metrics, protocol::Channel};

/// The batching window: how long a (un)subscribe request may wait to be
/// sent with others. It starts at the minimum, doubles after each busy
/// batch (a connection storm) up to the maximum, and halves after each quiet
/// one, so a lone join waits a few milliseconds and a storm of thousands
/// costs a few commands per second.
const BATCH_MIN_WAIT: Duration = Duration::from_millis(5);
pub const BATCH_MAX_WAIT: Duration = Duration::from_millis(250);
/// A batch of at least this many requests counts as busy.
const BATCH_BUSY: usize = 8;
/// Most channels in one batch.
const BATCH_MAX_CHANNELS: usize = 20_000;
/// Most channels in one resubscribe command.
const RESUBSCRIBE_CHUNK: usize = 5_000;
/// fred's per-client receive buffer (its default, 32, loses messages).
const RECEIVE_BUFFER: usize = 16_384;
/// Consecutive missed probes before a connection is restarted (and
/// readiness fails).
const PROBE_MISSES: u32 = 2;
/// How long a disconnect must last before readiness reports it.
pub const READY_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often connection state is sampled for the debounce and the gauge.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// How to reach Redis and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub config: FredConfig,
    pub prefix: String,
    pub node_id: String,
    pub pubsub_connections: usize,
    pub command_timeout: Duration,
    pub probe_interval: Duration,
}

/// Is the broker able to send and receive right now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Every connection (publisher and subscribers) is connected.
    pub connected: bool,
    /// The last probe went through every subscriber connection.
    pub probe_ok: bool,
}

#[derive(Debug, Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    clustered: bool,
    publisher: Client,
    shards: Vec<Shard>,
    hasher: RandomState,
    /// (Un)subscribe requests; the batcher task receives.
    ops: mpsc::Sender<Op>,
    probe_ok: AtomicBool,
    /// When readiness first saw a connection down (cleared once all are up).
    down_since: parking_lot::Mutex<Option<Instant>>,
    /// Fingerprint of the cluster slot map when the broker connected.
    slot_map_at_start: Option<u64>,
    /// Stops every background task on `close`.
    stop: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .field("clustered", &self.clustered)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// One subscriber connection and what it should be subscribed to.
struct Shard {
    index: usize,
    client: SubscriberClient,
    /// Full Redis channel names this connection must hold. Changed by the
    /// batcher; read by the resubscriber after a reconnect.
    wanted: parking_lot::Mutex<HashSet<String>>,
    probe_channel: String,
    /// Sequence of the last probe sent / seen on this connection.
    probe_sent: AtomicU64,
    probe_seen: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Subscribe,
    Unsubscribe,
}

struct Op {
    kind: OpKind,
    channels: Vec<String>,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

fn unavailable(e: &FredError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl RedisBroker {
    /// Connects the publisher and the subscriber pool and starts the
    /// background tasks (on `tracker`). Fails if Redis cannot be reached.
    pub async fn connect(
        opts: RedisOptions,
        events: mpsc::Sender<BrokerEvent>,
        tracker: &TaskTracker,
    ) -> Result<Self, BrokerError> {
        let clustered = opts.config.server.is_clustered();
        let mut builder = Builder::from_config(opts.config.clone());
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = opts.command_timeout;
                p.broadcast_channel_capacity = RECEIVE_BUFFER;
            })
            .with_connection_config(|c| {
                c.connection_timeout = opts.command_timeout;
                c.internal_command_timeout = opts.command_timeout;
                // Never resend a PUBLISH that may have gone out: a 503 the
                // caller can retry beats a duplicate every client sees.
                c.max_command_attempts = 1;
            })
            // Without a policy fred never reconnects.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let publisher = builder.build().map_err(|e| unavailable(&e))?;
        publisher.init().await.map_err(|e| unavailable(&e))?;
        let mut shards = Vec::with_capacity(opts.pubsub_connections);
        for index in 0..opts.pubsub_connections.max(1) {
            let client = builder
                .build_subscriber_client()
                .map_err(|e| unavailable(&e))?;
            client.init().await.map_err(|e| unavailable(&e))?;
            shards.push(Shard {
                index,
                client,
                wanted: parking_lot::Mutex::new(HashSet::new()),
                probe_channel: format!("{}:probe:{}:{index}", opts.prefix, opts.node_id),
                probe_sent: AtomicU64::new(0),
                probe_seen: AtomicU64::new(0),
            });
        }
        let hasher = RandomState::new();
        let slot_map_at_start = if clustered {
            slot_map_hash(&publisher, &hasher).await
        } else {
            None
        };
        let (ops_tx, ops_rx) = mpsc::channel(65_536);
        let broker = Self {
            inner: Arc::new(Inner {
                prefix: opts.prefix.clone(),
                clustered,
                publisher,
                shards,
                hasher,
                slot_map_at_start,
                ops: ops_tx,
                probe_ok: AtomicBool::new(true),
                down_since: parking_lot::Mutex::new(None),
                stop: CancellationToken::new(),
            }),
        };
        for index in 0..broker.inner.shards.len() {
            let shard = &broker.inner.shards[index];
            broker
                .send_subscribe(shard, vec![shard.probe_channel.clone()])
                .await?;
            tracker.spawn(broker.clone().receive(index, events.clone()));
            tracker.spawn(broker.clone().resubscriber(index));
        }
        metrics::broker_connected(true);
        tracker.spawn(broker.clone().batcher(ops_rx));
        tracker.spawn(broker.clone().prober(opts.probe_interval));
        tracker.spawn(broker.clone().watch_connection());
        Ok(broker)
    }

    fn full_name(&self, channel: &Channel) -> String {
        format!("{}:{}", self.inner.prefix, channel.as_str())
    }

    fn shard_of(&self, name: &str) -> &Shard {
        let i = (self.inner.hasher.hash_one(name) as usize) % self.inner.shards.len();
        &self.inner.shards[i]
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

    async fn watch_connection(self) {
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
    pub fn health(&self) -> Health {
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

    // === background tasks ===

    /// Turns messages of one subscriber connection into node events.
    async fn receive(self, index: usize, events: mpsc::Sender<BrokerEvent>) {
        let shard = &self.inner.shards[index];
        let mut rx = shard.client.message_rx();
        let prefix = format!("{}:", self.inner.prefix);
        let mut invalid_log = RateLimitedLog::default();
        loop {
            let msg = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                msg = rx.recv() => msg,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(RecvError::Lagged(n)) => {
                    metrics::broker_dropped("lagged", n);
                    tracing::warn!(lost = n, "Redis receive buffer overflowed; messages lost");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
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
            let envelope = match wire::decode(payload, crate::ids::message_id) {
                Ok(e) => e,
                Err(e) => {
                    metrics::broker_dropped(e.as_str(), 1);
                    invalid_log.warn(&channel, e);
                    continue;
                }
            };
            if events
                .send(BrokerEvent { channel, envelope })
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Resubscribes a connection's wanted channels after each reconnect
    /// and (on a cluster) each topology change.
    async fn resubscriber(self, index: usize) {
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

    async fn resubscribe_all(&self, shard: &Shard) {
        let started = Instant::now();
        let mut wanted: Vec<String> = shard.wanted.lock().iter().cloned().collect();
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
    }

    /// Gathers (un)subscribe requests into batches and sends them.
    async fn batcher(self, mut ops: mpsc::Receiver<Op>) {
        let mut window = BATCH_MIN_WAIT;
        loop {
            let first = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                op = ops.recv() => match op { Some(op) => op, None => return },
            };
            let deadline = tokio::time::Instant::now() + window;
            // Stop early when requests stop coming.
            let gap = (window / 4).max(Duration::from_millis(3));
            let mut count = first.channels.len();
            let mut batch = vec![first];
            while count < BATCH_MAX_CHANNELS {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
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

    /// Adds `names` to the connection's wanted set and subscribes them.
    async fn send_subscribe(&self, shard: &Shard, names: Vec<String>) -> Result<(), BrokerError> {
        shard.wanted.lock().extend(names.iter().cloned());
        if !shard.client.is_connected() {
            shard.wanted.lock().retain(|n| !names.contains(n));
            metrics::broker_command("subscribe", false);
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        }
        let r = self.redis_subscribe(shard, names.clone()).await;
        if r.is_err() {
            let mut wanted = shard.wanted.lock();
            for n in &names {
                wanted.remove(n);
            }
        }
        metrics::broker_command("subscribe", r.is_ok());
        r
    }

    /// Removes `names` from the wanted set and unsubscribes them. Errors
    /// are logged only: after a reconnect they are not resubscribed anyway.
    async fn send_unsubscribe(&self, shard: &Shard, names: Vec<String>) {
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
        metrics::broker_command("unsubscribe", r.is_ok());
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
                .map_err(|e| unavailable(&e))
        }
    }

    /// Sends a probe through every subscriber connection each interval and
    /// restarts a connection that misses [`PROBE_MISSES`] in a row.
    async fn prober(self, interval: Duration) {
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
                    // The reconnect event makes the resubscriber restore everything.
                    if let Err(e) = shard.client.force_reconnection().await {
                        tracing::warn!(error = %e, "restart failed");
                    }
                }
            }
            self.inner.probe_ok.store(all_ok, Ordering::Relaxed);
            seq += 1;
            for shard in &self.inner.shards {
                if !self.inner.publisher.is_connected() {
                    break;
                }
                shard.probe_sent.store(seq, Ordering::Relaxed);
                let r: Result<i64, FredError> = if self.inner.clustered {
                    self.inner
                        .publisher
                        .spublish(&shard.probe_channel, seq)
                        .await
                } else {
                    self.inner
                        .publisher
                        .publish(&shard.probe_channel, seq)
                        .await
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "probe publish failed");
                }
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

    async fn op(&self, kind: OpKind, channels: &[Channel]) -> Result<(), BrokerError> {
        let (done, rx) = oneshot::channel();
        let op = Op {
            kind,
            channels: channels.iter().map(|c| self.full_name(c)).collect(),
            done,
        };
        self.inner
            .ops
            .send(op)
            .await
            .map_err(|_| BrokerError::Closed)?;
        rx.await.map_err(|_| BrokerError::Closed)?
    }
}

/// A fingerprint of the cluster's slot map (`CLUSTER SLOTS`).
async fn slot_map_hash(publisher: &Client, hasher: &RandomState) -> Option<u64> {
    let slots: Result<fred::types::Value, FredError> = publisher.cluster_slots().await;
    match slots {
        Ok(slots) => Some(hasher.hash_one(format!("{slots:?}"))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster slot map");
            None
        }
    }
}

/// Groups channel names by cluster hash slot (one SSUBSCRIBE per slot).
fn by_slot(names: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: HashMap<u16, Vec<String>> = HashMap::new();
    for n in names {
        groups
            .entry(redis_keyslot(n.as_bytes()))
            .or_default()
            .push(n);
    }
    groups.into_values().collect()
}

impl Broker for RedisBroker {
    async fn publish(&self, channel: &Channel, envelope: &Envelope) -> Result<usize, BrokerError> {
        let publisher = &self.inner.publisher;
        if !publisher.is_connected() {
            metrics::broker_command("publish", false);
            return Err(BrokerError::Unavailable("not connected to Redis".into()));
        }
        let name = self.full_name(channel);
        let payload = wire::encode(envelope);
        let r: Result<i64, FredError> = if self.inner.clustered {
            publisher.spublish(name, payload).await
        } else {
            publisher.publish(name, payload).await
        };
        metrics::broker_command("publish", r.is_ok());
        r.map(|n| n.max(0) as usize).map_err(|e| unavailable(&e))
    }

    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        self.op(OpKind::Subscribe, channels).await
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        self.op(OpKind::Unsubscribe, channels).await
    }

    async fn close(&self) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        self.inner.stop.cancel();
        for shard in &self.inner.shards {
            let _ = shard.client.quit().await;
        }
        let _ = self.inner.publisher.quit().await;
    }
}

/// Logs invalid bodies at most once every 10 s, with how many were dropped.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, channel: &Channel, error: wire::DecodeError) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            %channel,
            %error,
            suppressed = self.suppressed,
            "dropped an invalid message published to Redis"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}
