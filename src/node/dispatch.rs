//! Broker events into the hub: the dispatcher task receives everything the
//! broker delivers to this node, encodes each message into its final frame
//! once per channel and hands the shared buffer to the hub, and carries
//! out commands (kick, server-side join/leave, cluster queries).
//!
//! It also keeps each channel's messages whole. It remembers the last
//! offset it delivered per channel ([`Tracked`]): a message it has already
//! delivered is dropped, and a gap in the offsets (a message lost while a
//! pub/sub connection reconnected) is filled from history before anything
//! later on that channel is delivered. After every resubscribe it catches
//! each channel up from the last offset it delivered, without waiting for
//! the next message to reveal the gap.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeError};
use crate::{
    broker::{Broker, BrokerError, BrokerEvent, Command, Envelope, History, Inbound},
    hub::Counts,
    metrics::{self, BrokerDrop, GapResult},
    protocol::{self, Channel, ChannelKind, ChannelPosition, CloseReason, Position, Publication},
    session::{Outbound, Session},
    stages::{self, Trace},
};

/// Most messages one gap fill or catch-up reads from history.
const HEAL_LIMIT: usize = 10_000;
/// Most events of one channel held while its gap is filled; beyond it the
/// fill is given up and the held events are delivered as they are.
const MAX_HELD: usize = 10_000;
/// A history read for a fill that finds Redis unavailable is tried again
/// after 100 ms, then twice as long each time up to 2 s, 8 times in all
/// (about 9 s) before the fill is given up.
const HEAL_ATTEMPTS: u32 = 8;
const HEAL_RETRY_FIRST: Duration = Duration::from_millis(100);
const HEAL_RETRY_MAX: Duration = Duration::from_secs(2);
/// How often entries of channels with no local subscriber are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Fills in flight whose results wait for the dispatcher.
const HEALED_QUEUE: usize = 1024;

/// What the node knows of one channel's offsets.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// The last position delivered on the channel.
    last: Option<Position>,
    /// Before anything was delivered: a position sessions started from (a
    /// resume's top), from which a catch-up can start.
    floor: Option<Position>,
    /// Set while a gap is being filled: the events that arrived meanwhile,
    /// in order.
    /// Boxed: every channel with a local subscriber has an entry, and
    /// fills are rare (the box keeps each entry 24 bytes smaller).
    #[allow(clippy::box_collection)]
    healing: Option<Box<VecDeque<BrokerEvent>>>,
    /// Held for a resubscribe: the catch-up read starts once the channel
    /// is subscribed again.
    awaiting_resubscribe: bool,
}

impl Tracked {
    /// What the node delivered last (or, before that, where sessions started).
    pub(super) fn delivered(&self) -> Option<Position> {
        self.last.clone().or_else(|| self.floor.clone())
    }

    /// Notes a position a session started from (see `floor`).
    pub(super) fn started_at(&mut self, top: &Position) {
        if self.last.is_none() && self.floor.is_none() {
            self.floor = Some(top.clone());
        }
    }
}

/// The answer to a history read started by the dispatcher.
struct Healed {
    channel: Channel,
    since: Position,
    result: Result<History, BrokerError>,
}

// === impl Node ===

impl Node {
    /// Receives broker events until the broker goes away or `stop` fires.
    pub async fn dispatch(self, mut events: mpsc::Receiver<Inbound>, stop: CancellationToken) {
        let (healed_tx, mut healed_rx) = mpsc::channel(HEALED_QUEUE);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                inbound = events.recv() => match inbound {
                    Some(Inbound::Event(event)) => {
                        metrics::broker_received();
                        self.on_event(event, &healed_tx);
                    }
                    Some(Inbound::Resubscribing(channels)) => self.hold(&channels),
                    Some(Inbound::Resubscribed(channels)) => self.catch_up(&channels, &healed_tx),
                    Some(Inbound::Fenced { drain }) => self.send_away(drain),
                    None => break,
                },
                Some(healed) = healed_rx.recv() => self.on_healed(healed, &healed_tx),
                _ = prune.tick() => self.prune_tracked(),
            }
        }
    }

    fn on_event(&self, event: BrokerEvent, healed: &mpsc::Sender<Healed>) {
        let Some(position) = event.position.clone() else {
            // Commands, and messages published live-only.
            return self.deliver(&event.channel, event.envelope, None, Some(event.received));
        };
        let mut tracked = self.inner.tracked.lock();
        let t = tracked.entry(event.channel.clone()).or_default();
        if let Some(held) = &mut t.healing {
            if held.len() < MAX_HELD {
                held.push_back(event);
                return;
            }
            // A fill this overdue is given up: deliver what is held as it is.
            let held = t.healing.take().unwrap_or_default();
            t.last = None;
            drop(tracked);
            metrics::gap_messages(GapResult::Lost, 1);
            for e in held.into_iter().chain([event]) {
                self.on_event(e, healed);
            }
            return;
        }
        // What this message must follow: the last one delivered, the start
        // of a new epoch, or where sessions started before anything was
        // delivered.
        let after = match (&t.last, &t.floor) {
            (Some(last), _) if last.epoch == position.epoch => {
                if position.offset <= last.offset {
                    metrics::history_duplicate();
                    return;
                }
                Some(last.clone())
            }
            (Some(_), _) => Some(Position::new(0, position.epoch.clone())),
            (None, Some(floor)) if floor.epoch == position.epoch => {
                // At or before where sessions started: deliver, not a gap.
                Some(floor.clone()).filter(|f| position.offset > f.offset)
            }
            (None, _) => None,
        };
        if let Some(after) = after.filter(|a| position.offset > a.offset + 1) {
            // A gap: hold this channel's messages until it is filled.
            let limit = position.offset - after.offset;
            let channel = event.channel.clone();
            t.healing = Some(Box::new(VecDeque::from([event])));
            drop(tracked);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            return self.heal(channel, after, limit, healed);
        }
        // The next message, the first one seen, or a new epoch's first.
        t.last = Some(position.clone());
        t.floor = None;
        drop(tracked);
        self.deliver(
            &event.channel,
            event.envelope,
            Some(position),
            Some(event.received),
        );
    }

    /// This node was fenced while it hung: the cluster took its users for
    /// offline and its connections were closed. Its clients are sent to
    /// reconnect (with the drain's `bye` and hint, paced over `window`) and
    /// resume from their positions, on whichever node takes them. Until
    /// their turn they keep receiving: the resubscribe that follows the
    /// closed connections catches every channel up from history, in order.
    fn send_away(&self, window: Duration) {
        let node = self.clone();
        tokio::spawn(async move { node.drain(window, 0).await });
    }

    /// Reads what followed `since` on `channel`; the answer comes back to
    /// the dispatcher loop as a [`Healed`].
    fn heal(&self, channel: Channel, since: Position, limit: usize, healed: &mpsc::Sender<Healed>) {
        let node = self.clone();
        let healed = healed.clone();
        tokio::spawn(async move {
            // Redis may be back for the pub/sub connection before it is for
            // the one that reads history: retry a while before giving up.
            let mut wait = HEAL_RETRY_FIRST;
            let mut attempts = 1;
            let result = loop {
                let r = node
                    .inner
                    .broker
                    .history(&channel, &since, limit.min(HEAL_LIMIT))
                    .await;
                match r {
                    Err(BrokerError::Unavailable(_)) if attempts < HEAL_ATTEMPTS => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(HEAL_RETRY_MAX);
                        attempts += 1;
                    }
                    r => break r,
                }
            };
            let _ = healed
                .send(Healed {
                    channel,
                    since,
                    result,
                })
                .await;
        });
    }

    /// Before a resubscribe: holds what arrives on these channels (on the
    /// reconnected connection it could otherwise come before the catch-up
    /// and be taken for a duplicate, or reveal a gap out of order).
    fn hold(&self, channels: &[Channel]) {
        let mut tracked = self.inner.tracked.lock();
        for channel in channels {
            let Some(t) = tracked.get_mut(channel) else {
                continue;
            };
            if t.healing.is_none() && t.delivered().is_some() {
                t.healing = Some(Box::default());
                t.awaiting_resubscribe = true;
            }
        }
    }

    /// After a resubscribe: reads, for each channel it has delivered on (or
    /// sessions started from), what was published since.
    fn catch_up(&self, channels: &[Channel], healed: &mpsc::Sender<Healed>) {
        let mut starts = Vec::new();
        {
            let mut tracked = self.inner.tracked.lock();
            for channel in channels {
                let Some(t) = tracked.get_mut(channel) else {
                    continue;
                };
                if t.healing.is_some() && !t.awaiting_resubscribe {
                    continue; // a fill already under way covers it
                }
                t.awaiting_resubscribe = false;
                match t.last.clone().or_else(|| t.floor.clone()) {
                    Some(since) => {
                        t.healing.get_or_insert_with(Box::default);
                        starts.push((channel.clone(), since));
                    }
                    None => {
                        // Nothing to catch up from: let what was held go.
                        if let Some(held) = t.healing.take() {
                            drop(tracked);
                            for e in *held {
                                self.on_event(e, healed);
                            }
                            tracked = self.inner.tracked.lock();
                        }
                    }
                }
            }
        }
        for (channel, since) in starts {
            self.heal(channel, since, HEAL_LIMIT, healed);
        }
    }

    fn on_healed(&self, h: Healed, healed: &mpsc::Sender<Healed>) {
        let held = {
            let mut tracked = self.inner.tracked.lock();
            let Some(t) = tracked.get_mut(&h.channel) else {
                return;
            };
            t.healing.take().unwrap_or_default()
        };
        match h.result {
            Ok(History::Complete { top, messages }) => {
                let mut filled = 0;
                for m in messages {
                    let position = Position::new(m.offset, top.epoch.clone());
                    let fresh = {
                        let mut tracked = self.inner.tracked.lock();
                        let t = tracked.entry(h.channel.clone()).or_default();
                        let fresh = t.last.as_ref().is_none_or(|l| {
                            l.epoch != position.epoch || position.offset > l.offset
                        });
                        if fresh {
                            t.last = Some(position.clone());
                            t.floor = None;
                        }
                        fresh
                    };
                    if fresh {
                        filled += 1;
                        self.deliver(
                            &h.channel,
                            Envelope::Publication(m.publication),
                            Some(position),
                            None,
                        );
                    }
                }
                metrics::gap_messages(GapResult::Healed, filled);
            }
            Ok(History::Incomplete { top }) if top.epoch != h.since.epoch => {
                // A new epoch since: what it has is all new to this node.
                // Read it from its start (held events wait meanwhile).
                let restart = Position::new(0, top.epoch.clone());
                if let Some(t) = self.inner.tracked.lock().get_mut(&h.channel) {
                    t.healing = Some(held);
                }
                let limit = usize::try_from(top.offset.max(1)).unwrap_or(usize::MAX);
                return self.heal(h.channel, restart, limit, healed);
            }
            Ok(History::Incomplete { top }) => {
                if top.offset < h.since.offset {
                    // The channel went back to an offset already delivered:
                    // a failover lost writes. A new epoch tells every client
                    // its position is no longer valid.
                    self.reset_epoch(h.channel.clone(), h.since.epoch.clone());
                }
                tracing::warn!(channel = %h.channel, since = h.since.offset, top = top.offset,
                    "messages lost from history could not be filled in");
                metrics::gap_messages(GapResult::Lost, 1);
                self.forget_last(&h.channel);
            }
            Err(e) => {
                tracing::warn!(channel = %h.channel, error = %e, "cannot read history to fill a gap");
                metrics::gap_messages(GapResult::Lost, 1);
                self.forget_last(&h.channel);
            }
        }
        for event in *held {
            self.on_event(event, healed);
        }
    }

    /// Forgets what the node knew of a channel's offsets, once it is no
    /// longer (or newly) subscribed: deliveries before and after are not
    /// one continuous stream. A fill in progress keeps its entry.
    pub(super) fn forget_channel(&self, channel: &Channel) {
        let mut tracked = self.inner.tracked.lock();
        if tracked.get(channel).is_some_and(|t| t.healing.is_none()) {
            tracked.remove(channel);
        }
    }

    /// After a fill that failed: the next message starts afresh rather than
    /// revealing the same gap again.
    fn forget_last(&self, channel: &Channel) {
        if let Some(t) = self.inner.tracked.lock().get_mut(channel) {
            t.last = None;
            t.floor = None;
        }
    }

    fn reset_epoch(&self, channel: Channel, epoch: protocol::Epoch) {
        let node = self.clone();
        tokio::spawn(async move {
            match node.inner.broker.reset_epoch(&channel, &epoch).await {
                Ok(p) => {
                    metrics::epoch_reset();
                    tracing::warn!(%channel, epoch = %p.epoch, "history lost in a failover: started a new epoch");
                }
                Err(e) => tracing::warn!(%channel, error = %e, "cannot start a new epoch"),
            }
        });
    }

    /// Forgets channels that have no local subscriber any more.
    fn prune_tracked(&self) {
        let hub = &self.inner.hub;
        self.inner.tracked.lock().retain(|channel, t| {
            t.healing.is_some()
                || match channel.kind() {
                    ChannelKind::User(uid) => hub.user_connections(uid) > 0,
                    ChannelKind::Group(group) => hub.has_group(group),
                    ChannelKind::All | ChannelKind::Node(_) => true,
                }
        });
    }

    /// Delivers one envelope to the local sessions of its channel.
    /// Carries out what arrived on `channel`; `received` is when the broker
    /// handed it over (none for a message filled in from history).
    fn deliver(
        &self,
        channel: &Channel,
        envelope: Envelope,
        position: Option<Position>,
        received: Option<Instant>,
    ) {
        match envelope {
            Envelope::Publication(p) => self.broadcast(channel, &p, position, received),
            Envelope::Command(cmd) => self.handle_command(channel, cmd),
        }
    }

    fn broadcast(
        &self,
        channel: &Channel,
        p: &Publication,
        position: Option<Position>,
        received: Option<Instant>,
    ) {
        let hub = &self.inner.hub;
        let started = Instant::now();
        if let Some(received) = received {
            metrics::broker_transit(p.ts);
            stages::dispatched(received);
        }
        let message = Outbound {
            text: Utf8Bytes::from(protocol::message_frame(channel, p, position.as_ref())),
            ts_ms: p.ts,
            position: position.map(|position| {
                Arc::new(ChannelPosition {
                    channel: channel.clone(),
                    position,
                })
            }),
            trace: received.and_then(Trace::begin),
        };
        let delivery = match channel.kind() {
            ChannelKind::User(uid) => hub.broadcast_user(uid, &message),
            ChannelKind::Group(group) => hub.broadcast_group(group, &message),
            ChannelKind::All => hub.broadcast_all(&message),
            ChannelKind::Node(_) => {
                // Node channels carry replies only.
                metrics::broker_dropped(BrokerDrop::Misdirected, 1);
                return;
            }
        };
        if let Some(received) = received {
            stages::queued(received);
        }
        metrics::broadcast(delivery.queued, delivery.slow, started.elapsed());
        if delivery.slow > 0 {
            tracing::info!(%channel, slow = delivery.slow, "closing slow consumers");
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
                self.reply(req, &reply_to, hub.counts());
            }
            (ChannelKind::Node(_), Command::Reply { req, counts, .. }) => {
                if let Some(q) = self.inner.queries.lock().get_mut(&req) {
                    q.answer(counts);
                }
            }
            (_, cmd) => {
                // Only a misbehaving publisher sends these: count, don't log each.
                metrics::broker_dropped(BrokerDrop::Misdirected, 1);
                tracing::debug!(%channel, ?cmd, "command not valid on this channel; ignored");
            }
        }
    }

    /// A join a backend asked for: the session learns of it through a
    /// `joined` frame (with the group's position), or an `error` frame
    /// without `id`.
    async fn server_join(&self, session: &Session, group: &str) {
        match self.join(session, group, None).await {
            Ok(joined) => {
                push_text(
                    session,
                    protocol::joined_frame(None, group, Some(&joined.top), None),
                );
                joined.finish(session, &Channel::group(group));
            }
            Err(NodeError::Closed) => {}
            Err(e) => {
                tracing::warn!(conn = session.id(), group, error = %e, "server-side join failed");
                push_text(
                    session,
                    protocol::error_frame(None, e.code(), &e.to_string()),
                );
            }
        }
    }
}

fn push_text(session: &Session, text: String) {
    // A closing session needs no more replies.
    let _ = session.push(&Utf8Bytes::from(text), 0);
}

/// What the node knows of every channel's offsets: written by the
/// dispatcher, and by resumes (their start, `Tracked::started_at`).
pub(super) type TrackedMap = HashMap<Channel, Tracked>;
