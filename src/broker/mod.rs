//! The broker carries messages between nodes: a node subscribes to the
//! channels its local sessions need and receives what anyone publishes to
//! them. Implementations: [`memory::MemoryBroker`] (the default, one process)
//! and [`redis::RedisBroker`] (Redis pub/sub, Cluster sharded pub/sub,
//! Sentinel).
//!
//! A broker never touches sessions: it pushes what it receives into the
//! node through one bounded channel of [`Inbound`] events, and the node fans
//! out from there (Centrifugo's `BrokerEventHandler`).
//!
//! Every `user:`, `group:` and `all` channel keeps a history of its recent
//! messages ([`history`]): a publication is appended and published in one
//! step, so anything delivered live can also be found by a client that
//! resumes, and its [`Position`] (offset and epoch) comes from the history,
//! not from a node.

pub mod history;
pub mod memory;
pub mod redis;
pub mod wire;

use std::{future::Future, sync::Arc, time::Instant};

use serde::{Deserialize, Serialize};

pub use self::history::{History, HistoryLimits, HistoryOptions, IdempotencyKey};
use crate::hub::Counts;
use crate::protocol::{Channel, Position, Publication};

/// Capacity of the broker → node event channel.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// What travels on a channel.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// A message for the channel's subscribers.
    Publication(Arc<Publication>),
    /// An instruction for the sessions of the uid whose `user:` channel carries it.
    Command(Command),
}

/// Instructions between nodes. User commands travel on `user:<uid>`, so
/// exactly the nodes holding that user act on them; queries carry the
/// asking node's id and are answered on its `node:<id>` channel.
///
/// On Redis they are JSON objects with a `cmd` field (see [`wire`]); any
/// object without `cmd` is a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Close every session of the user with `kicked`.
    Disconnect,
    /// Join every session of the user to the group.
    Join { group: String },
    /// Remove every session of the user from the group.
    Leave { group: String },
    /// How many connections does the user have on your node?
    Presence { req: u64, reply_to: String },
    /// What are your node's counts? (sent on `all`)
    Stats { req: u64, reply_to: String },
    /// The answer to a query, on the asker's `node:` channel.
    Reply {
        req: u64,
        node: String,
        counts: Counts,
    },
}

/// One delivery from the broker to the node.
#[derive(Debug, Clone)]
pub struct BrokerEvent {
    pub channel: Channel,
    pub envelope: Envelope,
    /// The message's place in the channel's history. `None` for commands,
    /// and for messages published live-only (a plain `PUBLISH` straight to
    /// Redis).
    pub position: Option<Position>,
    /// When the broker handed it over (read off the connection, or sent on
    /// the in-process bus), for `fanout_broadcast_stage_seconds`.
    pub received: Instant,
}

/// What the broker tells the node.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// Something published on a channel the node is subscribed to.
    Event(BrokerEvent),
    /// These channels are about to be subscribed again after a reconnect,
    /// a failover or a cluster change: what arrives on them from now on
    /// waits until they are caught up.
    Resubscribing(Vec<Channel>),
    /// These channels were subscribed again: whatever was published on
    /// them while they were not is to be caught up from history.
    Resubscribed(Vec<Channel>),
    /// This node was fenced while it could not refresh its heartbeat (the
    /// other nodes took it for hung and closed its Redis connections):
    /// meanwhile its users read offline, so its clients are to be sent to
    /// reconnect and resume, paced over `drain`.
    Fenced { drain: std::time::Duration },
}

/// The outcome of publishing on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// How many nodes were subscribed (0: no node holds a subscriber).
    pub receivers: usize,
    /// Where the message went in the channel's history; `None` for commands.
    pub position: Option<Position>,
}

/// Is the broker able to send and receive right now? (`/readyz`)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Every connection (publisher and subscribers) is connected.
    pub connected: bool,
    /// The last probe went through every subscriber connection.
    pub probe_ok: bool,
}

impl Health {
    pub const OK: Self = Self {
        connected: true,
        probe_ok: true,
    };
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Nothing was done: the command was not sent (or was refused).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A publish was handed to the broker but no answer came in time: it
    /// may have been published, or may still be. Retry only with the same
    /// idempotency key.
    #[error("no answer from the broker in time; the message may have been published: {0}")]
    OutcomeUnknown(String),
    #[error("broker is closed")]
    Closed,
}

/// What every broker guarantees.
pub trait Broker: Send + Sync + 'static {
    /// Publishes `envelope` on every channel of `channels`, at most once
    /// each. A publication is appended to each channel's history and
    /// published in one atomic step, which gives it the channel's next
    /// offset; commands are published live only. The envelope is encoded
    /// once for all channels, and the channels are published concurrently
    /// (on Redis, pipelined), not one round trip after another. Resolves
    /// once every channel is published, so publishes made one after the
    /// other keep their order on each channel. With `key`, a channel that
    /// already took a publish with the same key (within the idempotency
    /// window) takes nothing and answers that publish's outcome again.
    /// On an error some channels may have been published: the outcome of
    /// the others is unknown.
    fn publish(
        &self,
        channels: &[Channel],
        envelope: &Envelope,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<Vec<Published>, BrokerError>> + Send;

    /// The channel's current top: the offset of its latest message (0 if
    /// none) and its epoch, created if the channel has none yet.
    fn position(
        &self,
        channel: &Channel,
    ) -> impl Future<Output = Result<Position, BrokerError>> + Send;

    /// The messages after `since`, in offset order, read atomically with
    /// the channel's top, if history still holds all of them, `since` is
    /// of the current epoch, and there are at most `limit`.
    fn history(
        &self,
        channel: &Channel,
        since: &Position,
        limit: usize,
    ) -> impl Future<Output = Result<History, BrokerError>> + Send;

    /// Starts a new epoch for `channel` if it is still at `expected`: its
    /// history is known to be lost (offsets went backwards after a
    /// failover). Returns the channel's position afterwards.
    fn reset_epoch(
        &self,
        channel: &Channel,
        expected: &crate::protocol::Epoch,
    ) -> impl Future<Output = Result<Position, BrokerError>> + Send;

    /// Starts delivering `channels` to this node; resolves once deliveries
    /// are guaranteed: from then on every message published to them
    /// reaches this node, so nothing falls between a history read made
    /// afterwards and the live stream. (A SUBSCRIBE that is written but not
    /// yet carried out by Redis does not count.) Subscribing twice is
    /// harmless.
    fn subscribe(
        &self,
        channels: &[Channel],
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Stops delivering `channels` to this node. Unsubscribing a channel not
    /// subscribed is harmless.
    fn unsubscribe(
        &self,
        channels: &[Channel],
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Drops every subscription and stops delivering. Idempotent.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether the broker can send and receive right now; cheap, never
    /// waits. A broker with nothing that can fail (in-process) is always
    /// healthy.
    fn health(&self) -> Health {
        Health::OK
    }
}

/// The broker a node runs with, chosen once at startup. An enum rather
/// than a type parameter keeps handlers and state non-generic (one
/// monomorphisation, faster builds); dispatch stays static.
#[derive(Debug, Clone)]
pub enum AnyBroker {
    Memory(memory::MemoryBroker),
    Redis(redis::RedisBroker),
}

impl Broker for AnyBroker {
    async fn publish(
        &self,
        channels: &[Channel],
        envelope: &Envelope,
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<Published>, BrokerError> {
        match self {
            Self::Memory(b) => b.publish(channels, envelope, key).await,
            Self::Redis(b) => b.publish(channels, envelope, key).await,
        }
    }

    async fn position(&self, channel: &Channel) -> Result<Position, BrokerError> {
        match self {
            Self::Memory(b) => b.position(channel).await,
            Self::Redis(b) => b.position(channel).await,
        }
    }

    async fn history(
        &self,
        channel: &Channel,
        since: &Position,
        limit: usize,
    ) -> Result<History, BrokerError> {
        match self {
            Self::Memory(b) => b.history(channel, since, limit).await,
            Self::Redis(b) => b.history(channel, since, limit).await,
        }
    }

    async fn reset_epoch(
        &self,
        channel: &Channel,
        expected: &crate::protocol::Epoch,
    ) -> Result<Position, BrokerError> {
        match self {
            Self::Memory(b) => b.reset_epoch(channel, expected).await,
            Self::Redis(b) => b.reset_epoch(channel, expected).await,
        }
    }

    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        match self {
            Self::Memory(b) => b.subscribe(channels).await,
            Self::Redis(b) => b.subscribe(channels).await,
        }
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        match self {
            Self::Memory(b) => b.unsubscribe(channels).await,
            Self::Redis(b) => b.unsubscribe(channels).await,
        }
    }

    async fn close(&self) {
        match self {
            Self::Memory(b) => b.close().await,
            Self::Redis(b) => b.close().await,
        }
    }

    fn health(&self) -> Health {
        match self {
            Self::Memory(b) => b.health(),
            Self::Redis(b) => b.health(),
        }
    }
}
