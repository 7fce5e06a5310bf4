//! Delivery addresses: `user:<uid>`, `group:<name>`, `all`, and each
//! node's own `node:<id>`.

use std::{fmt, sync::Arc};

use super::names::is_valid_name;

/// A delivery address: `user:<uid>`, `group:<name>` or `all`, plus
/// `node:<id>`, each node's own channel for replies to cluster queries
/// (never seen by clients).
///
/// The string form is what clients see in `message.channel` and what the
/// broker appends to its prefix. Cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

/// What a channel addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind<'a> {
    User(&'a str),
    Group(&'a str),
    All,
    Node(&'a str),
}

impl Channel {
    pub const USER_PREFIX: &'static str = "user:";
    pub const GROUP_PREFIX: &'static str = "group:";
    pub const ALL: &'static str = "all";
    pub const NODE_PREFIX: &'static str = "node:";

    pub fn user(uid: &str) -> Self {
        Self(format!("{}{uid}", Self::USER_PREFIX).into())
    }

    pub fn group(name: &str) -> Self {
        Self(format!("{}{name}", Self::GROUP_PREFIX).into())
    }

    pub fn all() -> Self {
        Self(Self::ALL.into())
    }

    pub fn node(id: &str) -> Self {
        Self(format!("{}{id}", Self::NODE_PREFIX).into())
    }

    /// Parses `user:<uid>`, `group:<name>`, `node:<id>` or `all`,
    /// validating the name.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = match s {
            Self::ALL => true,
            _ => s
                .strip_prefix(Self::USER_PREFIX)
                .or_else(|| s.strip_prefix(Self::GROUP_PREFIX))
                .or_else(|| s.strip_prefix(Self::NODE_PREFIX))
                .is_some_and(is_valid_name),
        };
        ok.then(|| Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> ChannelKind<'_> {
        if let Some(uid) = self.0.strip_prefix(Self::USER_PREFIX) {
            ChannelKind::User(uid)
        } else if let Some(group) = self.0.strip_prefix(Self::GROUP_PREFIX) {
            ChannelKind::Group(group)
        } else if let Some(node) = self.0.strip_prefix(Self::NODE_PREFIX) {
            ChannelKind::Node(node)
        } else {
            ChannelKind::All
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip() {
        assert_eq!(Channel::user("42").kind(), ChannelKind::User("42"));
        assert_eq!(Channel::group("r").kind(), ChannelKind::Group("r"));
        assert_eq!(Channel::all().kind(), ChannelKind::All);
        assert_eq!(Channel::parse("group:r"), Some(Channel::group("r")));
        assert_eq!(Channel::parse("group:"), None);
        assert_eq!(
            Channel::parse("node:n1").unwrap().kind(),
            ChannelKind::Node("n1")
        );
        assert_eq!(Channel::parse("other:x"), None);
    }
}
