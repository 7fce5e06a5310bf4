//! The node's registry of live sessions: by connection id, by uid (which is
//! also the `user:<uid>` channel's subscriber list) and by group. Pure data:
//! no I/O, no broker. A broadcast hands every recipient a clone of one
//! [`Outbound`], whose encoded text is shared with the socket without a copy.
//!
//! Each index is split into [`SHARDS`] `parking_lot::RwLock<HashMap>`s so
//! joins, leaves and broadcasts on different keys do not contend
//! (Centrifugo's hub does the same). No lock is held across `.await`;
//! broadcast holds one shard's read lock while it enqueues (never writes to
//! a socket), and enqueueing never blocks. Empty entries are removed at
//! once, so a uid or group with no session leaves nothing behind.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    sync::Arc,
};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::session::{ConnId, Outbound, PushError, Session};

/// Shards per index; a power of two well above the core count.
pub const SHARDS: usize = 64;

/// Did adding make this the first local session for the key?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    First,
    More,
    AlreadyThere,
}

/// Did removing empty the key?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Last,
    More,
    NotThere,
}

/// Outcome of one broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Sessions the frame was queued for.
    pub queued: usize,
    /// Sessions whose queue was full: they are now closing as slow consumers.
    pub slow: usize,
}

/// Registry counts: this node's (`Hub::counts`), one node's answer to a
/// cluster query (it travels as JSON between nodes), or their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub connections: u64,
    #[serde(default)]
    pub users: u64,
    #[serde(default)]
    pub groups: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.connections = self.connections.saturating_add(other.connections);
        self.users = self.users.saturating_add(other.users);
        self.groups = self.groups.saturating_add(other.groups);
    }
}

type Shards<K, V> = Box<[RwLock<HashMap<K, V>>]>;

fn shards<K, V>() -> Shards<K, V> {
    (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect()
}

#[derive(Debug)]
pub struct Hub {
    hasher: RandomState,
    conns: Shards<ConnId, Session>,
    users: Shards<Arc<str>, Vec<Session>>,
    groups: Shards<Arc<str>, HashMap<ConnId, Session>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            conns: shards(),
            users: shards(),
            groups: shards(),
        }
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Registers a session under its id and uid.
    pub fn add_session(&self, session: &Session) -> Added {
        self.conns[(session.id() as usize) % SHARDS]
            .write()
            .insert(session.id(), session.clone());
        let uid = session.uid();
        let mut users = self.users[self.shard(&**uid)].write();
        match users.get_mut(uid) {
            Some(list) => {
                list.push(session.clone());
                Added::More
            }
            None => {
                users.insert(uid.clone(), vec![session.clone()]);
                Added::First
            }
        }
    }

    /// Unregisters a session from the id and uid indexes (not from groups).
    pub fn remove_session(&self, session: &Session) -> Removed {
        self.conns[(session.id() as usize) % SHARDS]
            .write()
            .remove(&session.id());
        let uid = session.uid();
        let mut users = self.users[self.shard(&**uid)].write();
        let Some(list) = users.get_mut(uid) else {
            return Removed::NotThere;
        };
        let before = list.len();
        list.retain(|s| s.id() != session.id());
        if list.is_empty() {
            users.remove(uid);
            Removed::Last
        } else if list.len() == before {
            Removed::NotThere
        } else {
            Removed::More
        }
    }

    /// Adds a session to a group's subscribers.
    pub fn add_sub(&self, group: &Arc<str>, session: &Session) -> Added {
        let mut groups = self.groups[self.shard(&**group)].write();
        match groups.get_mut(group) {
            Some(members) => match members.insert(session.id(), session.clone()) {
                Some(_) => Added::AlreadyThere,
                None => Added::More,
            },
            None => {
                groups.insert(
                    group.clone(),
                    HashMap::from([(session.id(), session.clone())]),
                );
                Added::First
            }
        }
    }

    /// Removes a session from a group's subscribers.
    pub fn remove_sub(&self, group: &str, id: ConnId) -> Removed {
        let mut groups = self.groups[self.shard(group)].write();
        let Some(members) = groups.get_mut(group) else {
            return Removed::NotThere;
        };
        if members.remove(&id).is_none() {
            return Removed::NotThere;
        }
        if members.is_empty() {
            groups.remove(group);
            Removed::Last
        } else {
            Removed::More
        }
    }

    /// Local sessions of a uid.
    pub fn user_sessions(&self, uid: &str) -> Vec<Session> {
        self.users[self.shard(uid)]
            .read()
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    pub fn user_connections(&self, uid: &str) -> usize {
        self.users[self.shard(uid)]
            .read()
            .get(uid)
            .map_or(0, Vec::len)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups[self.shard(group)].read().contains_key(group)
    }

    /// Queues `message` (its frame shared, not copied) for every local
    /// session of `uid`.
    pub fn broadcast_user(&self, uid: &str, message: &Outbound) -> Delivery {
        let users = self.users[self.shard(uid)].read();
        push_all(users.get(uid).into_iter().flatten(), message)
    }

    /// Queues `message` for every local member of `group`.
    pub fn broadcast_group(&self, group: &str, message: &Outbound) -> Delivery {
        let groups = self.groups[self.shard(group)].read();
        let members = groups.get(group).into_iter().flat_map(HashMap::values);
        push_all(members, message)
    }

    /// Queues `message` for every local session, one shard at a time.
    pub fn broadcast_all(&self, message: &Outbound) -> Delivery {
        let mut total = Delivery::default();
        for shard in &*self.conns {
            let d = push_all(shard.read().values(), message);
            total.queued += d.queued;
            total.slow += d.slow;
        }
        total
    }

    /// Every local session (for shutdown).
    pub fn all_sessions(&self) -> Vec<Session> {
        let mut all = Vec::new();
        for shard in &*self.conns {
            all.extend(shard.read().values().cloned());
        }
        all
    }

    pub fn counts(&self) -> Counts {
        let sum = |lens: &mut dyn Iterator<Item = usize>| lens.sum::<usize>() as u64;
        Counts {
            connections: sum(&mut self.conns.iter().map(|s| s.read().len())),
            users: sum(&mut self.users.iter().map(|s| s.read().len())),
            groups: sum(&mut self.groups.iter().map(|s| s.read().len())),
        }
    }
}

fn push_all<'a>(sessions: impl Iterator<Item = &'a Session>, message: &Outbound) -> Delivery {
    let mut d = Delivery::default();
    for s in sessions {
        match s.push_message(message) {
            Ok(()) => d.queued += 1,
            Err(PushError::Full) => d.slow += 1,
            Err(PushError::Closed) => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: ConnId, uid: &str) -> Session {
        Session::new(id, uid.into(), 1 << 20)
    }

    #[test]
    fn first_and_last_are_reported_per_user_and_group() {
        let hub = Hub::new();
        let (a, b) = (session(1, "u"), session(2, "u"));
        assert_eq!(hub.add_session(&a), Added::First);
        assert_eq!(hub.add_session(&b), Added::More);
        let g: Arc<str> = "g".into();
        assert_eq!(hub.add_sub(&g, &a), Added::First);
        assert_eq!(hub.add_sub(&g, &a), Added::AlreadyThere);
        assert_eq!(hub.add_sub(&g, &b), Added::More);
        assert_eq!(hub.remove_sub("g", 1), Removed::More);
        assert_eq!(hub.remove_sub("g", 1), Removed::NotThere);
        assert_eq!(hub.remove_sub("g", 2), Removed::Last);
        assert_eq!(hub.remove_session(&a), Removed::More);
        assert_eq!(hub.remove_session(&b), Removed::Last);
        assert_eq!(hub.counts(), Counts::default());
    }

    #[test]
    fn broadcasts_reach_only_their_recipients() {
        let hub = Hub::new();
        let (a, b, c) = (session(1, "u1"), session(2, "u1"), session(3, "u2"));
        for s in [&a, &b, &c] {
            hub.add_session(s);
        }
        hub.add_sub(&"g".into(), &c);
        let m = Outbound::reply("m".into());
        assert_eq!(hub.broadcast_user("u1", &m).queued, 2);
        assert_eq!(hub.broadcast_group("g", &m).queued, 1);
        assert_eq!(hub.broadcast_all(&m).queued, 3);
        assert_eq!(hub.broadcast_user("nobody", &m), Delivery::default());
        assert_eq!(a.take().frames.len(), 2);
        assert_eq!(c.take().frames.len(), 2);
    }

    #[test]
    fn a_full_queue_is_counted_as_slow() {
        let hub = Hub::new();
        let s = Session::new(1, "u".into(), 4);
        hub.add_session(&s);
        let m = Outbound::reply("abc".into());
        assert_eq!(hub.broadcast_user("u", &m).queued, 1);
        assert_eq!(hub.broadcast_user("u", &m).slow, 1);
        assert!(s.is_closing());
    }
}
