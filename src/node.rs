//! The coordinator: owns the [`Hub`] and the broker, and keeps them in step.
//!
//! Invariants:
//! - The broker is subscribed to a channel exactly while the hub has a local
//!   subscriber for it (`all` always). The first local subscriber subscribes,
//!   the last one unsubscribes, both under the channel's lock, one of
//!   [`SUB_LOCKS`] async mutexes picked by hashing the channel (Centrifugo's
//!   `subLocks`). A failed subscribe rolls the hub entry back.
//! - A session's group set and the hub's group index change together under
//!   that lock, and a detached (disconnecting) session can join nothing, so
//!   nothing is left behind when the last session of a uid or group goes.
//! - Messages from the broker are encoded into their final frame once per
//!   channel, and that one buffer is shared by every recipient.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio::{
    sync::{Mutex, MutexGuard, mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    broker::{AnyBroker, Broker, BrokerError, BrokerEvent, Command, Counts, Envelope, Health},
    hub::{Added, Hub, Removed},
    ids::message_id,
    metrics,
    protocol::{self, Channel, ChannelKind, CloseReason, Publication},
    session::Session,
};

/// Subscription locks; many, so unrelated channels rarely share one.
pub const SUB_LOCKS: usize = 4096;

/// A drain closes at least this many connections per second.
pub const DRAIN_MIN_RATE: f64 = 100.0;
/// How often a drain closes the next batch.
const DRAIN_TICK: Duration = Duration::from_millis(20);

/// Channels waiting out their linger before UNSUBSCRIBE.
const DISSOLVE_QUEUE: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("a connection may be in at most {0} groups")]
    TooManyGroups(usize),
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
}

/// Summed answers to a cluster query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    /// Nodes that answered.
    pub nodes: u64,
    pub counts: Counts,
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
    /// Per-channel subscription locks. Each guards the set of channels (of
    /// its shard) the broker is subscribed to for this node. Async mutexes,
    /// because they are held across the broker round trip.
    sub_locks: Box<[Mutex<HashSet<Channel>>]>,
    lock_hasher: RandomState,
    /// Channels whose last local subscriber left, with the time to check
    /// again; sent by `release`, received by the dissolver task.
    dissolve_tx: mpsc::Sender<(Channel, Instant)>,
    dissolve_rx: parking_lot::Mutex<Option<mpsc::Receiver<(Channel, Instant)>>>,
    /// Open cluster queries by request id; replies fill them in.
    queries: parking_lot::Mutex<HashMap<u64, PendingQuery>>,
    next_query: AtomicU64,
    next_conn: AtomicU64,
}

#[derive(Debug)]
struct PendingQuery {
    /// Nodes that received the query (known once PUBLISH returns).
    expected: Option<usize>,
    replies: usize,
    sum: Counts,
    /// Fires once `replies` reaches `expected`.
    done: Option<oneshot::Sender<()>>,
}

impl PendingQuery {
    fn check_done(&mut self) {
        if self.expected.is_some_and(|n| self.replies >= n) {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}

impl Node {
    pub fn new(opts: NodeOptions, broker: AnyBroker) -> Self {
        let (dissolve_tx, dissolve_rx) = mpsc::channel(DISSOLVE_QUEUE);
        Self {
            inner: Arc::new(Inner {
                opts,
                hub: Hub::new(),
                broker,
                sub_locks: (0..SUB_LOCKS).map(|_| Mutex::new(HashSet::new())).collect(),
                lock_hasher: RandomState::new(),
                dissolve_tx,
                dissolve_rx: parking_lot::Mutex::new(Some(dissolve_rx)),
                queries: parking_lot::Mutex::new(HashMap::new()),
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

    pub fn broker(&self) -> &AnyBroker {
        &self.inner.broker
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

    /// Receives broker events until the broker goes away or `stop` fires.
    pub async fn dispatch(self, mut events: mpsc::Receiver<BrokerEvent>, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
            };
            self.handle_event(event);
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

    fn handle_event(&self, event: BrokerEvent) {
        metrics::broker_received();
        let hub = &self.inner.hub;
        match event.envelope {
            Envelope::Publication(p) => {
                let started = std::time::Instant::now();
                let frame = Utf8Bytes::from(protocol::message_frame(&event.channel, &p));
                let delivery = match event.channel.kind() {
                    ChannelKind::User(uid) => hub.broadcast_user(uid, &frame, p.ts),
                    ChannelKind::Group(group) => hub.broadcast_group(group, &frame, p.ts),
                    ChannelKind::All => hub.broadcast_all(&frame, p.ts),
                    ChannelKind::Node(_) => {
                        // Node channels carry replies only.
                        metrics::broker_dropped("misdirected", 1);
                        return;
                    }
                };
                metrics::broadcast(delivery.queued, delivery.slow, started.elapsed());
                if delivery.slow > 0 {
                    tracing::info!(
                        channel = %event.channel,
                        slow = delivery.slow,
                        "closing slow consumers"
                    );
                }
            }
            Envelope::Command(cmd) => self.handle_command(&event.channel, cmd),
        }
    }

    fn handle_command(&self, channel: &Channel, cmd: Command) {
        let hub = &self.inner.hub;
        match (channel.kind(), cmd) {
            (ChannelKind::User(uid), Command::Disconnect) => {
                for s in hub.user_sessions(uid) {
                    s.close(CloseReason::Kicked);
                }
            }
            (ChannelKind::User(uid), Command::Join { group }) => {
                let (node, sessions) = (self.clone(), hub.user_sessions(uid));
                tokio::spawn(async move {
                    for s in sessions {
                        node.server_join(&s, &group).await;
                    }
                });
            }
            (ChannelKind::User(uid), Command::Leave { group }) => {
                let (node, sessions) = (self.clone(), hub.user_sessions(uid));
                tokio::spawn(async move {
                    for s in sessions {
                        if node.leave(&s, &group).await {
                            push_text(&s, protocol::left_frame(None, &group));
                        }
                    }
                });
            }
            (ChannelKind::User(uid), Command::Presence { req, reply_to }) => {
                let counts = Counts {
                    connections: hub.user_connections(uid) as u64,
                    ..Counts::default()
                };
                self.reply(req, &reply_to, counts);
            }
            (ChannelKind::All, Command::Stats { req, reply_to }) => {
                let c = hub.counts();
                let counts = Counts {
                    connections: c.connections as u64,
                    users: c.users as u64,
                    groups: c.groups as u64,
                };
                self.reply(req, &reply_to, counts);
            }
            (ChannelKind::Node(_), Command::Reply { req, counts, .. }) => {
                if let Some(q) = self.inner.queries.lock().get_mut(&req) {
                    q.replies += 1;
                    q.sum.connections += counts.connections;
                    q.sum.users += counts.users;
                    q.sum.groups += counts.groups;
                    q.check_done();
                }
            }
            (_, cmd) => {
                // Only a misbehaving publisher sends these: count, don't log each.
                metrics::broker_dropped("misdirected", 1);
                tracing::debug!(%channel, ?cmd, "command not valid on this channel; ignored");
            }
        }
    }

    fn reply(&self, req: u64, reply_to: &str, counts: Counts) {
        if !protocol::is_valid_name(reply_to) {
            return;
        }
        let node = self.clone();
        let channel = Channel::node(reply_to);
        tokio::spawn(async move {
            let reply = Envelope::Command(Command::Reply {
                req,
                node: node.id().to_owned(),
                counts,
            });
            if let Err(e) = node.inner.broker.publish(&channel, &reply).await {
                tracing::debug!(error = %e, "cannot answer a cluster query");
            }
        });
    }

    /// Publishes a query on `channel` and sums the replies of every node
    /// that received it, waiting at most the query timeout.
    async fn query(
        &self,
        channel: &Channel,
        make: impl FnOnce(u64, String) -> Command,
    ) -> Result<ClusterCounts, NodeError> {
        let req = self.inner.next_query.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        self.inner.queries.lock().insert(
            req,
            PendingQuery {
                expected: None,
                replies: 0,
                sum: Counts::default(),
                done: Some(done_tx),
            },
        );
        let query = Envelope::Command(make(req, self.id().to_owned()));
        match self.inner.broker.publish(channel, &query).await {
            Ok(n) => {
                if let Some(q) = self.inner.queries.lock().get_mut(&req) {
                    q.expected = Some(n);
                    q.check_done();
                }
            }
            Err(e) => {
                self.inner.queries.lock().remove(&req);
                return Err(e.into());
            }
        }
        // A node that does not answer in time (wedged, partitioned) is
        // left out rather than holding the answer up.
        let _ = tokio::time::timeout(self.inner.opts.query_timeout, done_rx).await;
        let q = self.inner.queries.lock().remove(&req);
        Ok(q.map_or_else(ClusterCounts::default, |q| ClusterCounts {
            nodes: q.replies as u64,
            counts: q.sum,
        }))
    }

    /// Live connections of `uid` on every node.
    pub async fn user_connections(&self, uid: &str) -> Result<u64, NodeError> {
        let answer = self
            .query(&Channel::user(uid), |req, reply_to| Command::Presence {
                req,
                reply_to,
            })
            .await?;
        Ok(answer.counts.connections)
    }

    /// Every node's counts, summed.
    pub async fn cluster_counts(&self) -> Result<ClusterCounts, NodeError> {
        self.query(&Channel::all(), |req, reply_to| Command::Stats {
            req,
            reply_to,
        })
        .await
    }

    async fn server_join(&self, session: &Session, group: &str) {
        match self.join(session, group).await {
            Ok(()) => push_text(session, protocol::joined_frame(None, group)),
            Err(NodeError::Closed) => {}
            Err(e) => {
                tracing::warn!(conn = session.id(), group, error = %e, "server-side join failed");
                let code = match e {
                    NodeError::TooManyGroups(_) => protocol::ErrorCode::TooManyGroups,
                    _ => protocol::ErrorCode::BrokerUnavailable,
                };
                push_text(session, protocol::error_frame(None, code, &e.to_string()));
            }
        }
    }

    async fn lock(&self, channel: &Channel) -> MutexGuard<'_, HashSet<Channel>> {
        let i = (self.inner.lock_hasher.hash_one(channel) as usize) % SUB_LOCKS;
        self.inner.sub_locks[i].lock().await
    }

    /// Subscribes the broker to `channel` unless it already is (possibly
    /// still lingering after its last subscriber left). Call under the lock.
    async fn ensure_subscribed(
        &self,
        subs: &mut HashSet<Channel>,
        channel: &Channel,
    ) -> Result<(), BrokerError> {
        if !subs.contains(channel) {
            self.inner
                .broker
                .subscribe(std::slice::from_ref(channel))
                .await?;
            subs.insert(channel.clone());
            metrics::broker_subscriptions(1.0);
        }
        Ok(())
    }

    /// The last local subscriber of `channel` left: unsubscribe now, or
    /// after the linger if one is configured. Call under the lock.
    async fn release(&self, subs: &mut HashSet<Channel>, channel: Channel) {
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

    async fn unsubscribe_now(&self, subs: &mut HashSet<Channel>, channel: Channel) {
        if subs.remove(&channel) {
            metrics::broker_subscriptions(-1.0);
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
                        tracing::debug!(%channel, "unsubscribe after broker close")
                    }
                    BrokerError::Unavailable(_) => {
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

    /// Registers a new authenticated connection for `uid`, subscribing its
    /// user channel if it is the uid's first here.
    pub async fn connect(&self, uid: Arc<str>) -> Result<Session, NodeError> {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, uid, self.inner.opts.max_queue_bytes);
        let channel = Channel::user(session.uid());
        let mut subs = self.lock(&channel).await;
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

    /// Adds the session to `group` (idempotent).
    pub async fn join(&self, session: &Session, group: &str) -> Result<(), NodeError> {
        let channel = Channel::group(group);
        let mut subs = self.lock(&channel).await;
        if session.in_group(group) {
            return Ok(());
        }
        if session.group_count() >= self.inner.opts.max_groups {
            return Err(NodeError::TooManyGroups(self.inner.opts.max_groups));
        }
        let name: Arc<str> = group.into();
        if !session.add_group(name.clone()) {
            return Err(NodeError::Closed);
        }
        if self.inner.hub.add_sub(&name, session) == Added::First {
            if let Err(e) = self.ensure_subscribed(&mut subs, &channel).await {
                self.inner.hub.remove_sub(group, session.id());
                session.remove_group(group);
                return Err(e.into());
            }
            metrics::groups_active(1.0);
        }
        Ok(())
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

    /// Publishes one message to every target. `all` makes the other targets
    /// redundant and publishes only to `all`.
    pub async fn publish(
        &self,
        targets: &Targets,
        publication: Publication,
    ) -> Result<Published, NodeError> {
        let id = publication.id.clone();
        let envelope = Envelope::Publication(Arc::new(publication));
        let broker = &self.inner.broker;
        let mut offline_users = Vec::new();
        if targets.all {
            broker.publish(&Channel::all(), &envelope).await?;
        } else {
            for uid in &targets.users {
                if broker.publish(&Channel::user(uid), &envelope).await? == 0 {
                    offline_users.push(uid.clone());
                }
            }
            for group in &targets.groups {
                broker.publish(&Channel::group(group), &envelope).await?;
            }
        }
        Ok(Published { id, offline_users })
    }

    /// Sends a command to every session of `uid`, on every node. Returns
    /// whether any node holds a session of that user.
    pub async fn command(&self, uid: &str, command: Command) -> Result<bool, NodeError> {
        let n = self
            .inner
            .broker
            .publish(&Channel::user(uid), &Envelope::Command(command))
            .await?;
        Ok(n > 0)
    }

    /// This node's registry counts.
    pub fn counts(&self) -> crate::hub::Counts {
        self.inner.hub.counts()
    }

    /// Closes every session with `shutdown`, paced: in random order, evenly
    /// over `window` (at least [`DRAIN_MIN_RATE`] per second), at most
    /// `max_rate` per second if not 0; whatever is left when the window
    /// ends is closed then. Each gets a reconnect hint spread over the
    /// window. Messages keep flowing to sessions not yet closed.
    pub async fn drain(&self, window: Duration, max_rate: u32) {
        use rand::seq::SliceRandom;
        let mut sessions = self.inner.hub.all_sessions();
        sessions.shuffle(&mut rand::rng());
        let n = sessions.len();
        if n == 0 {
            return;
        }
        let mut rate = (n as f64 / window.as_secs_f64().max(0.001)).max(DRAIN_MIN_RATE);
        if max_rate > 0 {
            rate = rate.min(f64::from(max_rate));
        }
        tracing::info!(
            connections = n,
            per_second = rate as u64,
            "draining connections"
        );
        let started = Instant::now();
        let deadline = started + window;
        let mut closed = 0;
        while closed < n {
            let now = Instant::now();
            let due = if now >= deadline {
                n
            } else {
                (((now - started).as_secs_f64() * rate) as usize + 1).min(n)
            };
            for s in &sessions[closed..due] {
                s.close(CloseReason::drained(window));
            }
            closed = due;
            if closed < n {
                tokio::time::sleep(DRAIN_TICK).await;
            }
        }
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn push_text(session: &Session, text: String) {
    // A closing session needs no more replies.
    let _ = session.push(&Utf8Bytes::from(text), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBus;

    fn node() -> (Node, MemoryBus, mpsc::Receiver<BrokerEvent>) {
        let bus = MemoryBus::new();
        let (tx, rx) = mpsc::channel(16);
        let opts = NodeOptions {
            id: "n".into(),
            max_queue_bytes: 1 << 20,
            max_groups: 2,
            unsubscribe_linger: Duration::ZERO,
            query_timeout: Duration::from_secs(5),
        };
        (Node::new(opts, AnyBroker::Memory(bus.broker(tx))), bus, rx)
    }

    #[tokio::test]
    async fn subscriptions_follow_first_and_last_local_subscriber() {
        let (node, bus, _rx) = node();
        let a = node.connect("u".into()).await.unwrap();
        let b = node.connect("u".into()).await.unwrap();
        node.join(&a, "g").await.unwrap();
        node.join(&b, "g").await.unwrap();
        assert_eq!(bus.channel_count(), 2);
        node.disconnect(&a).await;
        assert_eq!(bus.channel_count(), 2);
        node.disconnect(&b).await;
        assert_eq!(bus.channel_count(), 0);
        assert_eq!(node.counts(), crate::hub::Counts::default());
    }

    #[tokio::test]
    async fn group_limit_is_enforced_and_joins_are_idempotent() {
        let (node, _bus, _rx) = node();
        let a = node.connect("u".into()).await.unwrap();
        node.join(&a, "g1").await.unwrap();
        node.join(&a, "g1").await.unwrap();
        node.join(&a, "g2").await.unwrap();
        assert!(matches!(
            node.join(&a, "g3").await,
            Err(NodeError::TooManyGroups(2))
        ));
    }

    #[tokio::test]
    async fn a_detached_session_cannot_join() {
        let (node, _bus, _rx) = node();
        let a = node.connect("u".into()).await.unwrap();
        node.disconnect(&a).await;
        assert!(matches!(node.join(&a, "g").await, Err(NodeError::Closed)));
        assert_eq!(node.counts(), crate::hub::Counts::default());
    }
}
