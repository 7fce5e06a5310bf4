//! The coordinator: owns the [`Hub`] and the broker, and keeps them in step.
//!
//! Invariants:
//! - The broker is subscribed to a channel exactly while the hub has a local
//!   subscriber for it (`all` always). The first local subscriber subscribes,
//!   the last one unsubscribes, both under the channel's lock
//!   (`subscriptions`). A failed subscribe rolls the hub entry back.
//! - A session's group set and the hub's group index change together under
//!   that lock, and a detached (disconnecting) session can join nothing, so
//!   nothing is left behind when the last session of a uid or group goes.
//! - Messages from the broker are encoded into their final frame once per
//!   channel, and that one buffer is shared by every recipient
//!   (`dispatch`).
//!
//! # Layout
//! - this file: connect, disconnect, join, leave, publish, and the
//!   commands a backend sends to a user's connections on every node.
//! - `subscriptions`: subscription locks, first/last subscriber, linger.
//! - `dispatch`: broker events into the hub, each channel's offsets kept
//!   whole (duplicates dropped, gaps filled from history).
//! - `resume`: where a session starts on a channel, and what it missed.
//! - `query`: presence and stats across nodes.
//! - `drain`: the paced close of every session on shutdown.

mod dispatch;
mod drain;
mod query;
mod resume;
mod subscriptions;

use std::{
    collections::HashMap,
    hash::RandomState,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::value::RawValue;
use tokio::{
    sync::{Mutex, mpsc},
    time::Instant,
};

use self::{
    dispatch::TrackedMap,
    query::PendingQuery,
    subscriptions::{DISSOLVE_QUEUE, Subscribed},
};
pub use self::{
    drain::DRAIN_MIN_RATE,
    query::{ClusterCounts, Presence},
    resume::Resumed,
    subscriptions::SUB_LOCKS,
};
use crate::{
    broker::{AnyBroker, Broker, BrokerError, Command, Envelope, Health, IdempotencyKey},
    hub::{Added, Counts, Hub, Removed},
    ids::message_id,
    limits::Limits,
    metrics,
    protocol::{Channel, Position, Publication},
    session::Session,
};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("a connection may be in at most {0} groups")]
    TooManyGroups(usize),
    #[error("this user already has {0} connections on this node, the most allowed")]
    TooManyConnections(usize),
    #[error("the connection is closing")]
    Closed,
}

/// Node settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub id: String,
    pub max_queue_bytes: usize,
    pub max_groups: usize,
    /// How long a channel stays subscribed after its last local subscriber
    /// left, so reconnect flapping costs no SUBSCRIBE/UNSUBSCRIBE pairs.
    pub unsubscribe_linger: Duration,
    /// How long presence and stats queries wait for other nodes' replies.
    pub query_timeout: Duration,
    /// Most messages one resume replays; a client that missed more must
    /// reload (`recovered: false`).
    pub max_recovery: usize,
    /// How deeply a client's `data` may nest (`--max-json-depth`).
    pub max_json_depth: usize,
    /// Rate limits of client frames and the per-user connection cap.
    pub limits: Limits,
}

/// Where an API publish goes. Names are validated by the caller.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub all: bool,
}

/// The answer to a publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    /// Targeted uids with no live connection anywhere.
    pub offline_users: Vec<String>,
    /// Where the message went in each target channel's history.
    pub positions: Vec<(Channel, Position)>,
}

#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: NodeOptions,
    hub: Hub,
    broker: AnyBroker,
    /// Per-channel subscription locks (see [`subscriptions`]).
    sub_locks: Box<[Mutex<Subscribed>]>,
    lock_hasher: RandomState,
    /// Channels whose last local subscriber left, with the time to check
    /// again; sent by `release`, received by the dissolver task.
    dissolve_tx: mpsc::Sender<(Channel, Instant)>,
    dissolve_rx: parking_lot::Mutex<Option<mpsc::Receiver<(Channel, Instant)>>>,
    /// Open cluster queries by request id; the dispatcher fills in replies,
    /// the asking task removes its entry when done or timed out.
    queries: parking_lot::Mutex<HashMap<u64, PendingQuery>>,
    /// Each channel's last delivered offset: written by the dispatcher
    /// (and by resumes, where sessions start), pruned of channels with no
    /// local subscriber. Never held across an `.await`.
    tracked: parking_lot::Mutex<TrackedMap>,
    next_query: AtomicU64,
    next_conn: AtomicU64,
}

impl Node {
    pub fn new(opts: NodeOptions, broker: AnyBroker) -> Self {
        let (dissolve_tx, dissolve_rx) = mpsc::channel(DISSOLVE_QUEUE);
        Self {
            inner: Arc::new(Inner {
                opts,
                hub: Hub::new(),
                broker,
                sub_locks: (0..SUB_LOCKS)
                    .map(|_| Mutex::new(Subscribed::new()))
                    .collect(),
                lock_hasher: RandomState::new(),
                dissolve_tx,
                dissolve_rx: parking_lot::Mutex::new(Some(dissolve_rx)),
                queries: parking_lot::Mutex::new(HashMap::new()),
                tracked: parking_lot::Mutex::new(HashMap::new()),
                next_query: AtomicU64::new(1),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.opts.id
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Most groups one connection may be in.
    pub fn max_groups(&self) -> usize {
        self.inner.opts.max_groups
    }

    /// How deeply a client's `data` may nest.
    pub fn max_json_depth(&self) -> usize {
        self.inner.opts.max_json_depth
    }

    /// Rate limits of client frames and the per-user connection cap.
    pub fn limits(&self) -> &Limits {
        &self.inner.opts.limits
    }

    /// Subscribes the channels every node always needs: `all` and its own
    /// `node:<id>`.
    pub async fn start(&self) -> Result<(), BrokerError> {
        for channel in [Channel::all(), Channel::node(self.id())] {
            let mut subs = self.lock(&channel).await;
            self.ensure_subscribed(&mut subs, &channel).await?;
        }
        Ok(())
    }

    /// Registers a new authenticated connection for `uid`, subscribing its
    /// user channel if it is the uid's first here. The session starts with
    /// `recovering` held back (see [`Node::resume`]).
    pub async fn connect(
        &self,
        uid: Arc<str>,
        recovering: &[Channel],
    ) -> Result<Session, NodeError> {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, uid, self.inner.opts.max_queue_bytes);
        for channel in recovering {
            session.begin_recovery(channel);
        }
        let channel = Channel::user(session.uid());
        // Connections of one uid register one at a time under this lock,
        // so the count cannot be overtaken between the check and the add.
        let mut subs = self.lock(&channel).await;
        let cap = self.inner.opts.limits.max_user_connections;
        if cap > 0 && self.inner.hub.user_connections(session.uid()) >= cap {
            return Err(NodeError::TooManyConnections(cap));
        }
        let first = self.inner.hub.add_session(&session) == Added::First;
        if let Err(e) = self.ensure_subscribed(&mut subs, &channel).await {
            self.inner.hub.remove_session(&session);
            return Err(e.into());
        }
        if first {
            metrics::users_online(1.0);
        }
        Ok(session)
    }

    /// Unregisters a connection: leaves its groups, then its user channel,
    /// releasing whatever it was the last local subscriber of.
    pub async fn disconnect(&self, session: &Session) {
        for group in session.detach() {
            self.leave(session, &group).await;
        }
        let channel = Channel::user(session.uid());
        let mut subs = self.lock(&channel).await;
        if self.inner.hub.remove_session(session) == Removed::Last {
            metrics::users_online(-1.0);
            self.release(&mut subs, channel).await;
        }
    }

    /// Adds the session to `group` (idempotent) and says where it starts
    /// on it; from `since`, what it missed. The caller queues `joined`,
    /// then [`Resumed::finish`]es.
    pub async fn join(
        &self,
        session: &Session,
        group: &str,
        since: Option<&Position>,
    ) -> Result<Resumed, NodeError> {
        let channel = Channel::group(group);
        {
            let mut subs = self.lock(&channel).await;
            if session.in_group(group) {
                drop(subs);
                return self.rejoin(session, &channel, since).await;
            }
            if session.group_count() >= self.inner.opts.max_groups {
                return Err(NodeError::TooManyGroups(self.inner.opts.max_groups));
            }
            let name: Arc<str> = group.into();
            session.begin_recovery(&channel);
            if !session.add_group(name.clone()) {
                session.abandon_recovery(&channel);
                return Err(NodeError::Closed);
            }
            if self.inner.hub.add_sub(&name, session) == Added::First {
                if let Err(e) = self.ensure_subscribed(&mut subs, &channel).await {
                    self.inner.hub.remove_sub(group, session.id());
                    session.remove_group(group);
                    session.abandon_recovery(&channel);
                    return Err(e.into());
                }
                metrics::groups_active(1.0);
            }
        }
        match self.resume(&channel, since).await {
            Ok(resumed) => Ok(resumed),
            Err(e) => {
                self.leave(session, group).await;
                session.abandon_recovery(&channel);
                Err(e)
            }
        }
    }

    /// A join of a group the session is already in: it has been receiving
    /// it live, so without `since` it starts where the node's deliveries
    /// are; with `since`, it resumes like any other.
    async fn rejoin(
        &self,
        session: &Session,
        channel: &Channel,
        since: Option<&Position>,
    ) -> Result<Resumed, NodeError> {
        if since.is_some() {
            session.begin_recovery(channel);
            return self.resume(channel, since).await.inspect_err(|_| {
                session.abandon_recovery(channel);
            });
        }
        match self.delivered(channel) {
            Some(top) => Ok(Resumed::live(top)),
            None => self.resume(channel, None).await,
        }
    }

    /// Removes the session from `group` (idempotent); returns whether it
    /// was a member.
    pub async fn leave(&self, session: &Session, group: &str) -> bool {
        let channel = Channel::group(group);
        let mut subs = self.lock(&channel).await;
        session.remove_group(group);
        match self.inner.hub.remove_sub(group, session.id()) {
            Removed::Last => {
                metrics::groups_active(-1.0);
                self.release(&mut subs, channel).await;
                true
            }
            Removed::More => true,
            Removed::NotThere => false,
        }
    }

    /// A new publication stamped with a fresh id and the current time.
    pub fn publication(
        &self,
        event: Option<String>,
        data: Box<RawValue>,
        from: Option<String>,
    ) -> Publication {
        let (id, ts) = message_id();
        Publication {
            id,
            ts,
            event,
            data,
            from,
        }
    }

    /// Publishes one message to every target, appending it to each
    /// target channel's history. `all` makes the other targets redundant
    /// and publishes only to `all`. With `key`, a channel that already took
    /// a publish with that key takes nothing and answers it again.
    pub async fn publish(
        &self,
        targets: &Targets,
        publication: Publication,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, NodeError> {
        let id = publication.id.clone();
        let envelope = Envelope::Publication(Arc::new(publication));
        let channels: Vec<Channel> = if targets.all {
            vec![Channel::all()]
        } else {
            (targets.users.iter().map(|u| Channel::user(u)))
                .chain(targets.groups.iter().map(|g| Channel::group(g)))
                .collect()
        };
        let outcomes = self.inner.broker.publish(&channels, &envelope, key).await?;
        // The first outcomes are the users', in the users' order.
        let offline_users = if targets.all {
            Vec::new()
        } else {
            targets
                .users
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.receivers == 0)
                .map(|(uid, _)| uid.clone())
                .collect()
        };
        let positions = channels
            .into_iter()
            .zip(outcomes)
            .filter_map(|(c, o)| Some((c, o.position?)))
            .collect();
        Ok(Published {
            id,
            offline_users,
            positions,
        })
    }

    /// Closes every connection of `uid`, on every node, with `kicked`.
    /// Returns whether any node holds a connection of that user.
    pub async fn kick(&self, uid: &str) -> Result<bool, NodeError> {
        self.command(uid, Command::Disconnect).await
    }

    /// Joins every connection of `uid`, on every node, to `group`. Returns
    /// whether any node holds a connection of that user.
    pub async fn join_user(&self, uid: &str, group: &str) -> Result<bool, NodeError> {
        self.command(
            uid,
            Command::Join {
                group: group.to_owned(),
            },
        )
        .await
    }

    /// Removes every connection of `uid`, on every node, from `group`.
    /// Returns whether any node holds a connection of that user.
    pub async fn leave_user(&self, uid: &str, group: &str) -> Result<bool, NodeError> {
        self.command(
            uid,
            Command::Leave {
                group: group.to_owned(),
            },
        )
        .await
    }

    /// Commands travel on the user's channel, so exactly the nodes holding
    /// that user act on them, and the broker's receiver count says whether
    /// any does.
    async fn command(&self, uid: &str, command: Command) -> Result<bool, NodeError> {
        let receivers = self
            .inner
            .broker
            .publish(&[Channel::user(uid)], &Envelope::Command(command), None)
            .await?;
        Ok(receivers.iter().any(|o| o.receivers > 0))
    }

    /// This node's registry counts.
    pub fn counts(&self) -> Counts {
        self.inner.hub.counts()
    }

    /// Whether the broker can send and receive right now (`/readyz`).
    pub fn health(&self) -> Health {
        self.inner.broker.health()
    }

    /// Closes the broker (after the drain). Idempotent.
    pub async fn close(&self) {
        self.inner.broker.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Inbound, memory::MemoryBus};

    fn node() -> (Node, MemoryBus, mpsc::Receiver<Inbound>) {
        let bus = MemoryBus::default();
        let (tx, rx) = mpsc::channel(16);
        let opts = NodeOptions {
            id: "n".into(),
            max_queue_bytes: 1 << 20,
            max_groups: 2,
            unsubscribe_linger: Duration::ZERO,
            query_timeout: Duration::from_secs(5),
            max_recovery: 100,
            max_json_depth: 32,
            limits: Limits::default(),
        };
        (Node::new(opts, AnyBroker::Memory(bus.broker(tx))), bus, rx)
    }

    #[tokio::test]
    async fn subscriptions_follow_first_and_last_local_subscriber() {
        let (node, bus, _rx) = node();
        let a = node.connect("u".into(), &[]).await.unwrap();
        let b = node.connect("u".into(), &[]).await.unwrap();
        node.join(&a, "g", None).await.unwrap();
        node.join(&b, "g", None).await.unwrap();
        assert_eq!(bus.channel_count(), 2);
        node.disconnect(&a).await;
        assert_eq!(bus.channel_count(), 2);
        node.disconnect(&b).await;
        assert_eq!(bus.channel_count(), 0);
        assert_eq!(node.counts(), Counts::default());
    }

    #[tokio::test]
    async fn group_limit_is_enforced_and_joins_are_idempotent() {
        let (node, _bus, _rx) = node();
        let a = node.connect("u".into(), &[]).await.unwrap();
        node.join(&a, "g1", None).await.unwrap();
        node.join(&a, "g1", None).await.unwrap();
        node.join(&a, "g2", None).await.unwrap();
        assert!(matches!(
            node.join(&a, "g3", None).await,
            Err(NodeError::TooManyGroups(2))
        ));
    }

    #[tokio::test]
    async fn a_detached_session_cannot_join() {
        let (node, _bus, _rx) = node();
        let a = node.connect("u".into(), &[]).await.unwrap();
        node.disconnect(&a).await;
        assert!(matches!(
            node.join(&a, "g", None).await,
            Err(NodeError::Closed)
        ));
        assert_eq!(node.counts(), Counts::default());
    }
}
