//! Channel history: how much each kind of channel keeps, what a resume
//! reads back, and the in-process log the memory broker keeps it in (the
//! Redis broker keeps the same in Redis, see `redis/fanout.lua`).
//!
//! Every `user:`, `group:` and `all` channel counts its messages: each gets
//! the next `offset` of the channel's current `epoch`. The most recent ones
//! are kept, bounded by count and by age; the epoch changes whenever the
//! channel's history was lost, so an old position can never be mistaken
//! for a current one.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    config::Config,
    ids::random_id,
    protocol::{Channel, ChannelKind, Epoch, Position, Publication, is_valid_name},
};

/// How much history one kind of channel keeps. `size` 0 keeps none: offsets
/// are still counted, and only a client that missed nothing recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub size: usize,
    pub ttl: Duration,
}

/// History settings, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    pub user: HistoryLimits,
    pub group: HistoryLimits,
    pub all: HistoryLimits,
    /// How long a channel's epoch and top offset outlive its last message
    /// (at least the longest `ttl`): a client away for less than this
    /// resumes with `recovered: true` if it missed nothing.
    pub meta_ttl: Duration,
    /// How long an idempotency key is remembered, per channel.
    pub idempotency_ttl: Duration,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        let limits = HistoryLimits {
            size: 100,
            ttl: Duration::from_secs(300),
        };
        Self {
            user: limits,
            group: limits,
            all: limits,
            meta_ttl: Duration::from_secs(3600),
            idempotency_ttl: Duration::from_secs(300),
        }
    }
}

impl HistoryOptions {
    /// The history settings of `cfg` (`--history false`: sizes 0).
    pub fn from_config(cfg: &Config) -> Self {
        let size = |n: usize| if cfg.history { n } else { 0 };
        Self {
            user: HistoryLimits {
                size: size(cfg.history_user_size),
                ttl: cfg.history_user_ttl,
            },
            group: HistoryLimits {
                size: size(cfg.history_group_size),
                ttl: cfg.history_group_ttl,
            },
            all: HistoryLimits {
                size: size(cfg.history_all_size),
                ttl: cfg.history_all_ttl,
            },
            meta_ttl: cfg.history_meta_ttl,
            idempotency_ttl: cfg.idempotency_ttl,
        }
    }

    /// The limits of `channel`'s kind; `None` for node channels, which
    /// carry only commands and keep no history.
    pub fn limits(&self, channel: &Channel) -> Option<HistoryLimits> {
        match channel.kind() {
            ChannelKind::User(_) => Some(self.user),
            ChannelKind::Group(_) => Some(self.group),
            ChannelKind::All => Some(self.all),
            ChannelKind::Node(_) => None,
        }
    }
}

/// A stored message and its offset (the epoch is the read's).
#[derive(Debug, Clone)]
pub struct Stored {
    pub offset: u64,
    pub publication: Arc<Publication>,
}

/// What a resume finds after a position.
#[derive(Debug, Clone)]
pub enum History {
    /// Every message after the position, in offset order (none if the
    /// client missed nothing); `top` is the channel's position as read.
    Complete {
        top: Position,
        messages: Vec<Stored>,
    },
    /// Some of what followed the position is gone (trimmed, expired, the
    /// epoch changed, the position is ahead of the channel) or there are
    /// more than the limit: the client must reload its state from `top`.
    Incomplete { top: Position },
}

impl History {
    pub fn top(&self) -> &Position {
        match self {
            Self::Complete { top, .. } | Self::Incomplete { top } => top,
        }
    }
}

/// A publisher's idempotency key: the same name rule as uids and groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(key: &str) -> Option<Self> {
        is_valid_name(key).then(|| Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The message id every publish with this key gets, so that a retry
    /// that reaches a channel the first attempt did not reach still
    /// carries the same id (clients deduplicate by id).
    pub fn message_id(&self) -> String {
        format!("key:{}", self.0)
    }
}

/// A fresh epoch: 8 random lowercase letters and digits (always a valid
/// epoch), never equal to `previous`.
pub fn new_epoch(previous: Option<&Epoch>) -> Epoch {
    loop {
        if let Some(e) = Epoch::parse(&random_id(8))
            && Some(&e) != previous
        {
            return e;
        }
    }
}

// === the in-process log ===

/// Most idempotency keys one channel remembers at once (the oldest go
/// first beyond it, whatever their age).
const MAX_KEYS_PER_CHANNEL: usize = 100_000;
/// Idle channels are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The in-process history of every channel: the memory broker's. Callers
/// serialise access (the memory bus holds it under one lock across append
/// and delivery, so delivery follows offset order).
#[derive(Debug)]
pub struct Logs {
    options: HistoryOptions,
    channels: HashMap<Channel, Log>,
    next_sweep: Instant,
}

#[derive(Debug)]
struct Log {
    epoch: Epoch,
    top: u64,
    entries: VecDeque<Entry>,
    /// When the epoch and top are forgotten (renewed by every publish and read).
    expires: Instant,
    /// Idempotency keys seen; boxed, as most channels never see one and
    /// every connected user has a channel.
    keys: Option<Box<Keys>>,
}

/// A channel's idempotency keys, with what they published, oldest first.
#[derive(Debug, Default)]
struct Keys {
    seen: HashMap<IdempotencyKey, (u64, usize)>,
    order: VecDeque<(IdempotencyKey, Instant)>,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    publication: Arc<Publication>,
}

impl Logs {
    pub fn new(options: HistoryOptions) -> Self {
        Self {
            options,
            channels: HashMap::new(),
            next_sweep: Instant::now() + SWEEP_EVERY,
        }
    }

    /// The channel's log, created (with a fresh epoch) if it had none or
    /// its meta expired.
    fn log(&mut self, channel: &Channel, now: Instant) -> &mut Log {
        if now >= self.next_sweep {
            self.channels.retain(|_, log| log.expires > now);
            self.next_sweep = now + SWEEP_EVERY;
        }
        let meta_ttl = self.options.meta_ttl;
        let log = self.channels.entry(channel.clone()).or_insert_with(|| Log {
            epoch: new_epoch(None),
            top: 0,
            entries: VecDeque::new(),
            expires: now + meta_ttl,
            keys: None,
        });
        if log.expires <= now {
            *log = Log {
                epoch: new_epoch(Some(&log.epoch)),
                top: 0,
                entries: VecDeque::new(),
                expires: now,
                keys: None,
            };
        }
        log.expires = now + meta_ttl;
        log
    }

    /// Appends `publication` to `channel` (kept within the channel kind's
    /// limits) and returns its position. With `key`, a key this channel
    /// saw within the idempotency window appends nothing and returns the
    /// first publish's position and receivers.
    pub fn append(
        &mut self,
        channel: &Channel,
        publication: &Arc<Publication>,
        key: Option<&IdempotencyKey>,
    ) -> Appended {
        let now = Instant::now();
        let Some(limits) = self.options.limits(channel) else {
            return Appended::Live;
        };
        let idempotency_ttl = self.options.idempotency_ttl;
        let log = self.log(channel, now);
        log.expire_keys(now);
        let seen = key.and_then(|k| log.keys.as_ref()?.seen.get(k));
        if let Some((offset, receivers)) = seen {
            return Appended::Repeat {
                position: Position::new(*offset, log.epoch.clone()),
                receivers: *receivers,
            };
        }
        log.top += 1;
        let offset = log.top;
        if limits.size > 0 {
            log.entries.push_back(Entry {
                offset,
                at: now,
                publication: publication.clone(),
            });
            while log.entries.len() > limits.size {
                log.entries.pop_front();
            }
        }
        log.trim(now, limits.ttl);
        if let Some(key) = key {
            // Receivers are filled in once known (`record_receivers`).
            let keys = log.keys.get_or_insert_with(Box::default);
            keys.seen.insert(key.clone(), (offset, 0));
            keys.order.push_back((key.clone(), now + idempotency_ttl));
            while keys.order.len() > MAX_KEYS_PER_CHANNEL {
                if let Some((k, _)) = keys.order.pop_front() {
                    keys.seen.remove(&k);
                }
            }
        }
        Appended::New(Position::new(offset, log.epoch.clone()))
    }

    /// Remembers how many nodes a keyed publish reached, for its repeats.
    pub fn record_receivers(&mut self, channel: &Channel, key: &IdempotencyKey, n: usize) {
        if let Some(entry) = self
            .channels
            .get_mut(channel)
            .and_then(|log| log.keys.as_mut()?.seen.get_mut(key))
        {
            entry.1 = n;
        }
    }

    /// The channel's top.
    pub fn position(&mut self, channel: &Channel) -> Position {
        let log = self.log(channel, Instant::now());
        Position::new(log.top, log.epoch.clone())
    }

    /// What followed `since`, if all of it is still here and at most `limit`.
    pub fn read(&mut self, channel: &Channel, since: &Position, limit: usize) -> History {
        let now = Instant::now();
        let ttl = self
            .options
            .limits(channel)
            .map_or(Duration::ZERO, |l| l.ttl);
        let log = self.log(channel, now);
        log.trim(now, ttl);
        let top = Position::new(log.top, log.epoch.clone());
        if since.epoch != log.epoch || since.offset > log.top {
            return History::Incomplete { top };
        }
        let missed = log.top - since.offset;
        if missed == 0 {
            return History::Complete {
                top,
                messages: Vec::new(),
            };
        }
        let first_kept = log.entries.front().map_or(log.top + 1, |e| e.offset);
        if missed > limit as u64 || first_kept > since.offset + 1 {
            return History::Incomplete { top };
        }
        let messages = log
            .entries
            .iter()
            .filter(|e| e.offset > since.offset)
            .map(|e| Stored {
                offset: e.offset,
                publication: e.publication.clone(),
            })
            .collect();
        History::Complete { top, messages }
    }

    /// A new epoch for `channel` if it is still at `expected`.
    pub fn reset(&mut self, channel: &Channel, expected: &Epoch) -> Position {
        let log = self.log(channel, Instant::now());
        if log.epoch == *expected {
            log.epoch = new_epoch(Some(expected));
            log.top = 0;
            log.entries.clear();
        }
        Position::new(log.top, log.epoch.clone())
    }
}

/// What [`Logs::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// A new message at this position.
    New(Position),
    /// The key was seen: the first publish's position and receivers.
    Repeat {
        position: Position,
        receivers: usize,
    },
    /// The channel keeps no history (node channels): deliver live only.
    Live,
}

impl Log {
    /// Drops entries older than `ttl` (0: no age bound).
    fn trim(&mut self, now: Instant, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > ttl)
        {
            self.entries.pop_front();
        }
    }

    fn expire_keys(&mut self, now: Instant) {
        let Some(keys) = &mut self.keys else {
            return;
        };
        while keys.order.front().is_some_and(|(_, at)| *at <= now) {
            if let Some((k, _)) = keys.order.pop_front() {
                keys.seen.remove(&k);
            }
        }
        if keys.order.is_empty() {
            self.keys = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::null_value;

    fn publication(id: &str) -> Arc<Publication> {
        Arc::new(Publication {
            id: id.into(),
            ts: 1,
            event: None,
            data: null_value(),
            from: None,
        })
    }

    fn logs(size: usize) -> Logs {
        let limits = HistoryLimits {
            size,
            ttl: Duration::from_secs(60),
        };
        Logs::new(HistoryOptions {
            user: limits,
            group: limits,
            all: limits,
            ..HistoryOptions::default()
        })
    }

    fn offset_of(a: Appended) -> u64 {
        match a {
            Appended::New(p) => p.offset,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn offsets_count_up_and_resumes_read_what_followed() {
        let mut l = logs(3);
        let ch = Channel::group("g");
        let start = l.position(&ch);
        assert_eq!(start.offset, 0);
        for i in 1..=5 {
            assert_eq!(
                offset_of(l.append(&ch, &publication(&i.to_string()), None)),
                i
            );
        }
        let at3 = Position::new(3, start.epoch.clone());
        let History::Complete { top, messages } = l.read(&ch, &at3, 10) else {
            panic!("complete")
        };
        assert_eq!(top.offset, 5);
        let got: Vec<u64> = messages.iter().map(|m| m.offset).collect();
        assert_eq!(got, [4, 5]);
        // Offset 2 was trimmed (size 3 keeps 3..=5): 3 onwards is missing.
        let at1 = Position::new(1, start.epoch.clone());
        assert!(matches!(l.read(&ch, &at1, 10), History::Incomplete { .. }));
        // More than the limit, another epoch, or ahead of the channel.
        assert!(matches!(l.read(&ch, &at3, 1), History::Incomplete { .. }));
        let other = Position::new(3, Epoch::parse("other").unwrap());
        assert!(matches!(
            l.read(&ch, &other, 10),
            History::Incomplete { .. }
        ));
        let ahead = Position::new(9, start.epoch.clone());
        assert!(matches!(
            l.read(&ch, &ahead, 10),
            History::Incomplete { .. }
        ));
        let at5 = Position::new(5, start.epoch);
        assert!(matches!(
            l.read(&ch, &at5, 10),
            History::Complete { messages, .. } if messages.is_empty()
        ));
    }

    #[test]
    fn a_repeated_key_appends_nothing() {
        let mut l = logs(10);
        let ch = Channel::user("u");
        let key = IdempotencyKey::parse("order-1").unwrap();
        let first = l.append(&ch, &publication("a"), Some(&key));
        l.record_receivers(&ch, &key, 2);
        let again = l.append(&ch, &publication("b"), Some(&key));
        let Appended::New(p) = first else { panic!() };
        assert_eq!(
            again,
            Appended::Repeat {
                position: p,
                receivers: 2
            }
        );
        assert_eq!(l.position(&ch).offset, 1);
    }

    #[test]
    fn a_reset_starts_a_new_epoch_once() {
        let mut l = logs(10);
        let ch = Channel::all();
        l.append(&ch, &publication("a"), None);
        let old = l.position(&ch).epoch;
        let new = l.reset(&ch, &old);
        assert_ne!(new.epoch, old);
        assert_eq!(new.offset, 0);
        assert_eq!(
            l.reset(&ch, &old),
            new,
            "a second reset of the old epoch does nothing"
        );
        assert_eq!(
            l.append(&ch, &publication("b"), None),
            Appended::New(Position::new(1, new.epoch))
        );
    }

    #[test]
    fn history_off_still_counts_offsets() {
        let mut l = logs(0);
        let ch = Channel::user("u");
        let start = l.position(&ch);
        l.append(&ch, &publication("a"), None);
        assert!(matches!(
            l.read(&ch, &start, 10),
            History::Incomplete { .. }
        ));
        let now = l.position(&ch);
        assert!(matches!(l.read(&ch, &now, 10), History::Complete { .. }));
        assert_eq!(
            l.append(&Channel::node("n"), &publication("c"), None),
            Appended::Live
        );
    }
}
