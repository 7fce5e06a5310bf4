//! Where a message sits in its channel's history: an `offset` that counts
//! the channel's messages (each one the previous + 1, so a gap is visible)
//! and an `epoch` that changes whenever the channel's history was lost.
//! Clients send positions back to resume (`since`); those are checked here.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use super::channel::Channel;

/// Longest epoch, in bytes. Epochs are made by fanout (a few characters of
/// `[0-9a-z]`); anything longer from a client cannot be one.
pub const MAX_EPOCH_LEN: usize = 64;

/// A channel's history generation. Cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// An epoch as fanout writes it, or `None` if `s` cannot be one.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty()
            && s.len() <= MAX_EPOCH_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("not an epoch"))
    }
}

/// A position in a channel's history. `offset` 0 means "before the first
/// message of this epoch".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: Epoch,
}

impl Position {
    pub fn new(offset: u64, epoch: Epoch) -> Self {
        Self { offset, epoch }
    }
}

/// A message's place on the channel it is delivered through: created once
/// per message and channel, shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPosition {
    pub channel: Channel,
    pub position: Position,
}

/// Positions by channel, as `welcome` carries them and `auth` takes them.
pub type Positions = BTreeMap<Channel, Position>;

/// Serialises a channel as its string form (map keys of [`Positions`]).
impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_short_plain_strings() {
        assert!(Epoch::parse("k3x9a-1").is_some());
        assert!(Epoch::parse("").is_none());
        assert!(Epoch::parse("a b").is_none());
        assert!(Epoch::parse(&"a".repeat(65)).is_none());
        let p: Position = serde_json::from_str(r#"{"offset":3,"epoch":"e1"}"#).unwrap();
        assert_eq!(p.offset, 3);
        assert!(serde_json::from_str::<Position>(r#"{"offset":-1,"epoch":"e1"}"#).is_err());
        assert!(serde_json::from_str::<Position>(r#"{"offset":1,"epoch":"x y"}"#).is_err());
    }
}
