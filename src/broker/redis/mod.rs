//! The Redis broker: plain pub/sub (or sharded pub/sub on Redis Cluster)
//! on channels `<prefix>:user:<uid>`, `<prefix>:group:<name>`,
//! `<prefix>:all` and `<prefix>:node:<id>`, plus one probe channel per
//! pub/sub connection, `<prefix>:probe:<node>:<n>`.
//!
//! # Layout
//! - this file: connecting, and the [`Broker`] implementation (publish,
//!   subscribe and unsubscribe requests, close, health).
//! - [`options`]: the Redis settings built from the configuration.
//! - `history`: channel history through the `fanout` function library.
//! - `shards`: the pool of subscriber connections: what each must hold,
//!   receiving into the node's event channel, resubscribing after every
//!   reconnect or cluster change.
//! - `batcher`: SUBSCRIBE/UNSUBSCRIBE requests gathered into few commands.
//! - `health`: connection state for readiness, the pub/sub probe, the
//!   cluster slot-map check.
//! - `fence`: the node's heartbeat, and fencing nodes whose heartbeat
//!   expired (their Redis connections closed with `CLIENT KILL`).

mod batcher;
mod fence;
mod health;
pub mod history;
pub mod options;
mod shards;

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64},
    },
    time::Instant,
};

use fred::{
    bytes::Bytes,
    clients::Client,
    error::Error as FredError,
    interfaces::{ClientLike, PubsubInterface},
    types::{Builder, config::ReconnectPolicy},
};
use futures_util::{StreamExt, stream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use self::{batcher::BATCH_MAX_WAIT, health::READY_DEBOUNCE, options::RedisOptions};
use self::{
    batcher::{Op, OpKind},
    fence::Fence,
    shards::Shard,
};
use super::{
    Broker, BrokerError, Envelope, Health, History, HistoryOptions, IdempotencyKey, Inbound,
    Published, wire,
};
use crate::{
    metrics::{self, BrokerOp},
    protocol::{Channel, Epoch, Position},
};

/// fred's per-client receive buffer (its default, 32, loses messages).
const RECEIVE_BUFFER: usize = 16_384;
/// fred's default broadcast capacity, for clients that receive only their
/// own connection events (the publisher, the fence client).
const EVENT_BUFFER: usize = 32;
/// Pending (un)subscribe requests before callers wait for the batcher.
const OPS_QUEUE: usize = 65_536;
/// Most PUBLISH commands of one publish in flight at once.
const PUBLISH_IN_FLIGHT: usize = 1024;

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
    /// (Un)subscribe requests: sent by `subscribe`/`unsubscribe`, received
    /// by the batcher task; closed when the broker is dropped.
    ops: mpsc::Sender<Op>,
    /// Whether the last probe round went through every connection; written
    /// by the prober, read by readiness.
    probe_ok: AtomicBool,
    /// False while the publisher's last probe PUBLISH did not complete
    /// within the probe interval (Redis frozen, stuck in a long command, a
    /// path dropping packets): publishes and history reads are refused at
    /// once instead of each waiting `--redis-timeout`. Set back by the next
    /// probe that gets through.
    publisher_ok: AtomicBool,
    /// True from the moment the publisher's connection reports an error
    /// (Redis died, the connection closed) until fred reconnects: written
    /// by `watch_publisher`, read by `usable`. fred itself still says
    /// "connected" until its first reconnect attempt, 100–200 ms later,
    /// and queues what is sent meanwhile until it has reconnected.
    publisher_down: AtomicBool,
    /// Notified (all waiters) when `publisher_down` is set: a command in
    /// flight then returns at once instead of waiting for a reconnect.
    publisher_lost: tokio::sync::Notify,
    /// When readiness first saw a connection down (cleared once all are up).
    down_since: parking_lot::Mutex<Option<Instant>>,
    /// Fingerprint of the cluster slot map when the broker connected.
    slot_map_at_start: Option<u64>,
    /// Stops every background task on `close`.
    stop: CancellationToken,
    /// Into the node: messages received (by the receive tasks) and
    /// resubscribes done (by the resubscribers).
    events: mpsc::Sender<Inbound>,
    history: HistoryOptions,
    /// `--max-json-depth`, for received bodies and `fanout_publish`.
    max_json_depth: usize,
    /// The heartbeat and fencing of hung nodes; `None` when
    /// `--node-fence-after` is 0.
    fence: Option<Fence>,
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

fn unavailable(e: &FredError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// A publish's error. No answer in time, a connection lost or a command
/// cancelled after it was handed to fred: the command may have reached
/// Redis (or may still, from fred's queue), so the outcome is unknown. An
/// error reply (Redis refused it) or a client-side refusal: nothing was
/// published.
fn publish_error(e: &FredError) -> BrokerError {
    use fred::error::ErrorKind;
    match e.kind() {
        ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled => {
            BrokerError::OutcomeUnknown(e.to_string())
        }
        _ => unavailable(e),
    }
}

impl RedisBroker {
    /// Connects the publisher and the subscriber pool and starts the
    /// background tasks (on `tracker`). Fails if Redis cannot be reached.
    pub async fn connect(
        opts: RedisOptions,
        events: mpsc::Sender<Inbound>,
        tracker: &TaskTracker,
    ) -> Result<Self, BrokerError> {
        let clustered = opts.config.server.is_clustered();
        let mut builder = Builder::from_config(opts.config.clone());
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = opts.command_timeout;
                p.broadcast_channel_capacity = EVENT_BUFFER;
            })
            .with_connection_config(|c| {
                c.connection_timeout = opts.command_timeout;
                c.internal_command_timeout = opts.command_timeout;
                // Never resend a PUBLISH that may have gone out: a 503 the
                // caller can retry beats a duplicate every client sees.
                c.max_command_attempts = 1;
                // CLIENT SETNAME on every connection and reconnection (with
                // the client's id): how a fencer finds a hung node's
                // connections in CLIENT LIST.
                c.auto_client_setname = !opts.fence_after.is_zero();
            })
            // Without a policy fred never reconnects.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let publisher = builder.build().map_err(|e| unavailable(&e))?;
        publisher.init().await.map_err(|e| unavailable(&e))?;
        // Only subscriber clients receive messages: their broadcast
        // channels get the large buffer. fred preallocates every slot of
        // every broadcast channel of a client (about 12 MiB at 16,384), so
        // the publisher and the fence client keep the small default.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = RECEIVE_BUFFER);
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
        builder.with_performance_config(|p| p.broadcast_channel_capacity = EVENT_BUFFER);
        let fence = if opts.fence_after.is_zero() {
            None
        } else {
            // A connection of its own: heartbeats must not wait behind a
            // backlog of publishes.
            let client = builder.build().map_err(|e| unavailable(&e))?;
            client.init().await.map_err(|e| unavailable(&e))?;
            let names: Vec<String> = [publisher.id(), client.id()]
                .into_iter()
                .chain(shards.iter().map(|s| s.client.id()))
                .map(str::to_owned)
                .collect();
            Some(Fence::new(
                &opts.prefix,
                &opts.node_id,
                opts.fence_after,
                opts.fenced_drain,
                client,
                &names,
            ))
        };
        let hasher = RandomState::new();
        let slot_map_at_start = if clustered {
            health::slot_map_hash(&publisher, &hasher).await
        } else {
            None
        };
        let (ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
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
                publisher_ok: AtomicBool::new(true),
                publisher_down: AtomicBool::new(false),
                publisher_lost: tokio::sync::Notify::new(),
                down_since: parking_lot::Mutex::new(None),
                stop: CancellationToken::new(),
                events,
                history: opts.history,
                max_json_depth: opts.max_json_depth,
                fence,
            }),
        };
        broker.load_library().await?;
        for index in 0..broker.inner.shards.len() {
            let shard = &broker.inner.shards[index];
            broker
                .send_subscribe(shard, vec![shard.probe_channel.clone()])
                .await?;
            tracker.spawn(broker.clone().receive(index));
            tracker.spawn(broker.clone().resubscriber(index));
        }
        metrics::broker_connected(true);
        tracker.spawn(broker.clone().batcher(ops_rx));
        tracker.spawn(broker.clone().prober(opts.probe_interval));
        tracker.spawn(broker.clone().watch_connection());
        tracker.spawn(broker.clone().watch_publisher());
        tracker.spawn(broker.clone().library_keeper());
        tracker.spawn(broker.clone().heartbeat());
        tracker.spawn(broker.clone().fencer());
        Ok(broker)
    }

    fn full_name(&self, channel: &Channel) -> String {
        format!("{}:{}", self.inner.prefix, channel.as_str())
    }

    fn shard_of(&self, name: &str) -> &Shard {
        let i = (self.inner.hasher.hash_one(name) as usize) % self.inner.shards.len();
        &self.inner.shards[i]
    }

    async fn publish_one(
        &self,
        channel: &Channel,
        payload: Bytes,
        kept: bool,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let r = if kept && self.inner.history.limits(channel).is_some() {
            // Appended to history and published in one step.
            self.publish_kept(channel, &payload, key).await
        } else {
            self.publish_live(channel, payload).await
        };
        metrics::broker_command(BrokerOp::Publish, r.is_ok());
        r
    }

    /// A plain PUBLISH (SPUBLISH on a cluster): commands between nodes,
    /// which keep no history.
    async fn publish_live(
        &self,
        channel: &Channel,
        payload: Bytes,
    ) -> Result<Published, BrokerError> {
        let publisher = &self.inner.publisher;
        let name = self.full_name(channel);
        let receivers = self
            .unless_lost(true, async {
                let r: Result<i64, FredError> = if self.inner.clustered {
                    publisher.spublish(name, payload).await
                } else {
                    publisher.publish(name, payload).await
                };
                r.map_err(|e| publish_error(&e))
            })
            .await?;
        Ok(Published {
            receivers: usize::try_from(receivers.max(0)).unwrap_or(0),
            position: None,
        })
    }

    /// Hands an (un)subscribe request to the batcher and waits for its outcome.
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

impl Broker for RedisBroker {
    async fn publish(
        &self,
        channels: &[Channel],
        envelope: &Envelope,
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<Published>, BrokerError> {
        if let Err(e) = self.usable() {
            for _ in channels {
                metrics::broker_command(BrokerOp::Publish, false);
            }
            return Err(e);
        }
        // Encoded once; every command shares the bytes.
        let payload = Bytes::from(wire::encode(envelope));
        let kept = matches!(envelope, Envelope::Publication(_));
        // fred writes commands issued together back to back on its
        // connection (up to 200 per flush) and matches the replies in
        // order: one round trip for the lot. `buffered` keeps the results
        // in channel order and bounds what is in flight.
        stream::iter(channels.iter().cloned())
            .map(|channel| {
                let payload = payload.clone();
                async move { self.publish_one(&channel, payload, kept, key).await }
            })
            .buffered(PUBLISH_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    async fn position(&self, channel: &Channel) -> Result<Position, BrokerError> {
        self.read_position(channel).await
    }

    async fn history(
        &self,
        channel: &Channel,
        since: &Position,
        limit: usize,
    ) -> Result<History, BrokerError> {
        self.read_history(channel, since, limit).await
    }

    async fn reset_epoch(
        &self,
        channel: &Channel,
        expected: &Epoch,
    ) -> Result<Position, BrokerError> {
        self.reset(channel, expected).await
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
        if let Some(fence) = &self.inner.fence {
            fence.leave().await;
        }
        // At once, not in turn: against a frozen Redis each QUIT waits out
        // `--redis-timeout`, and one such wait is enough for the exit.
        let shards = futures_util::future::join_all(
            self.inner.shards.iter().map(|shard| shard.client.quit()),
        );
        let _ = tokio::join!(shards, self.inner.publisher.quit());
    }

    fn health(&self) -> Health {
        self.current_health()
    }
}
