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
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    broker::{AnyBroker, Broker, BrokerError, BrokerEvent, Command, Envelope},
    hub::{Added, Counts, Hub, Removed},
    protocol::{self, Channel, ChannelKind, CloseReason, Publication},
    session::Session,
};

/// Subscription locks; many, so unrelated channels rarely share one.
pub const SUB_LOCKS: usize = 4096;

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

#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: NodeOptions,
    hub: Hub,
    broker: AnyBroker,
    /// Serialise first-subscribe/last-unsubscribe per channel. Async
    /// mutexes because they are held across the broker round trip.
    sub_locks: Box<[Mutex<()>]>,
    lock_hasher: RandomState,
    next_conn: AtomicU64,
    /// Message ids are `<random per-process prefix>-<sequence>`.
    msg_prefix: String,
    next_msg: AtomicU64,
}

impl Node {
    pub fn new(opts: NodeOptions, broker: AnyBroker) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                hub: Hub::new(),
                broker,
                sub_locks: (0..SUB_LOCKS).map(|_| Mutex::new(())).collect(),
                lock_hasher: RandomState::new(),
                next_conn: AtomicU64::new(1),
                msg_prefix: random_id(10),
                next_msg: AtomicU64::new(1),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.opts.id
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Subscribes the channels every node always needs (`all`).
    pub async fn start(&self) -> Result<(), BrokerError> {
        self.inner.broker.subscribe(&[Channel::all()]).await
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

    fn handle_event(&self, event: BrokerEvent) {
        let hub = &self.inner.hub;
        match event.envelope {
            Envelope::Publication(p) => {
                let frame = Utf8Bytes::from(protocol::message_frame(&event.channel, &p));
                let delivery = match event.channel.kind() {
                    ChannelKind::User(uid) => hub.broadcast_user(uid, &frame),
                    ChannelKind::Group(group) => hub.broadcast_group(group, &frame),
                    ChannelKind::All => hub.broadcast_all(&frame),
                };
                if delivery.slow > 0 {
                    tracing::info!(
                        channel = %event.channel,
                        slow = delivery.slow,
                        "closing slow consumers"
                    );
                }
            }
            Envelope::Command(cmd) => {
                let ChannelKind::User(uid) = event.channel.kind() else {
                    tracing::warn!(channel = %event.channel, "command on a non-user channel ignored");
                    return;
                };
                let sessions = hub.user_sessions(uid);
                match cmd {
                    Command::Disconnect => {
                        for s in &sessions {
                            s.close(CloseReason::Kicked);
                        }
                    }
                    Command::Join(group) => {
                        let node = self.clone();
                        tokio::spawn(async move {
                            for s in sessions {
                                node.server_join(&s, &group).await;
                            }
                        });
                    }
                    Command::Leave(group) => {
                        let node = self.clone();
                        tokio::spawn(async move {
                            for s in sessions {
                                node.leave(&s, &group).await;
                                push_text(&s, protocol::left_frame(None, &group));
                            }
                        });
                    }
                }
            }
        }
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

    async fn lock(&self, channel: &Channel) -> MutexGuard<'_, ()> {
        let i = (self.inner.lock_hasher.hash_one(channel) as usize) % SUB_LOCKS;
        self.inner.sub_locks[i].lock().await
    }

    /// Registers a new authenticated connection for `uid`, subscribing its
    /// user channel if it is the uid's first here.
    pub async fn connect(&self, uid: Arc<str>) -> Result<Session, NodeError> {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, uid, self.inner.opts.max_queue_bytes);
        let channel = Channel::user(session.uid());
        let _guard = self.lock(&channel).await;
        if self.inner.hub.add_session(&session) == Added::First {
            if let Err(e) = self.inner.broker.subscribe(&[channel]).await {
                self.inner.hub.remove_session(&session);
                return Err(e.into());
            }
        }
        Ok(session)
    }

    /// Unregisters a connection: leaves its groups, then its user channel,
    /// unsubscribing whatever it was the last local subscriber of.
    pub async fn disconnect(&self, session: &Session) {
        for group in session.detach() {
            self.leave(session, &group).await;
        }
        let channel = Channel::user(session.uid());
        let _guard = self.lock(&channel).await;
        if self.inner.hub.remove_session(session) == Removed::Last {
            self.unsubscribe(channel).await;
        }
    }

    /// Adds the session to `group` (idempotent).
    pub async fn join(&self, session: &Session, group: &str) -> Result<(), NodeError> {
        let channel = Channel::group(group);
        let _guard = self.lock(&channel).await;
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
            if let Err(e) = self.inner.broker.subscribe(&[channel]).await {
                self.inner.hub.remove_sub(group, session.id());
                session.remove_group(group);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Removes the session from `group` (idempotent).
    pub async fn leave(&self, session: &Session, group: &str) {
        let channel = Channel::group(group);
        let _guard = self.lock(&channel).await;
        session.remove_group(group);
        if self.inner.hub.remove_sub(group, session.id()) == Removed::Last {
            self.unsubscribe(channel).await;
        }
    }

    async fn unsubscribe(&self, channel: Channel) {
        if let Err(e) = self
            .inner
            .broker
            .unsubscribe(std::slice::from_ref(&channel))
            .await
        {
            // The broker drops subscriptions of a lost connection anyway;
            // a stale one costs deliveries nobody receives, not correctness.
            tracing::warn!(%channel, error = %e, "unsubscribe failed");
        }
    }

    /// A new publication stamped with a fresh id and the current time.
    pub fn publication(
        &self,
        event: Option<String>,
        data: Box<RawValue>,
        from: Option<String>,
    ) -> Publication {
        let seq = self.inner.next_msg.fetch_add(1, Ordering::Relaxed);
        Publication {
            id: format!("{}-{seq:x}", self.inner.msg_prefix),
            ts: unix_ms(),
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

    /// Live connections of `uid`.
    pub fn user_connections(&self, uid: &str) -> usize {
        self.inner.hub.user_connections(uid)
    }

    pub fn counts(&self) -> Counts {
        self.inner.hub.counts()
    }

    /// Asks every session to close with `shutdown` and a reconnect hint
    /// spread over `spread_ms`, then closes the broker.
    pub async fn shutdown(&self, spread_ms: u64) {
        for s in self.inner.hub.all_sessions() {
            s.close(CloseReason::Shutdown {
                retry_after_ms: jitter_ms(0, spread_ms),
            });
        }
        self.inner.broker.close().await;
    }
}

fn push_text(session: &Session, text: String) {
    // A closing session needs no more replies.
    let _ = session.push(&Utf8Bytes::from(text));
}

/// A uniformly random delay in `[lo, hi)` milliseconds (`lo` when empty).
pub fn jitter_ms(lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        rand::random_range(lo..hi)
    }
}

/// `len` random lowercase letters and digits.
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
        assert_eq!(node.counts(), Counts::default());
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
        assert_eq!(node.counts(), Counts::default());
    }
}
