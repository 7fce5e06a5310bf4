//! A published message ([`Publication`]) and the `message` frame every
//! recipient gets for it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{channel::Channel, position::Position, server_frame::encode};

/// A published message as every recipient sees it, minus the channel.
///
/// One `Publication` is created per publish and shared (behind an `Arc`)
/// by every channel it targets; the node encodes it into its final frame
/// once per channel with [`message_frame`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// Unique message id (the node's, or the publisher's own).
    pub id: String,
    /// Unix milliseconds when the message was published.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub data: Box<RawValue>,
    /// The publishing client's uid; absent for backend publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// JSON `null` as a raw value (the `data` of a message that has none).
pub fn null_value() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

/// The `message` frame for `publication` delivered through `channel`, at
/// `position` in that channel's history (none for a live-only message).
pub fn message_frame(channel: &Channel, p: &Publication, position: Option<&Position>) -> String {
    #[derive(Serialize)]
    struct Message<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<&'a str>,
        data: &'a RawValue,
        id: &'a str,
        ts: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    }
    encode(&Message {
        kind: "message",
        channel: channel.as_str(),
        event: p.event.as_deref(),
        data: &p.data,
        id: &p.id,
        ts: p.ts,
        from: p.from.as_deref(),
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_frame_embeds_data_verbatim() {
        let p = Publication {
            id: "m1".into(),
            ts: 7,
            event: Some("e".into()),
            data: RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap(),
            from: None,
        };
        assert_eq!(
            message_frame(&Channel::group("g"), &p, None),
            r#"{"type":"message","channel":"group:g","event":"e","data":{"a":[1,2]},"id":"m1","ts":7}"#
        );
        let at = Position::new(3, super::super::Epoch::parse("k1").unwrap());
        assert_eq!(
            message_frame(&Channel::all(), &p, Some(&at)),
            r#"{"type":"message","channel":"all","event":"e","data":{"a":[1,2]},"id":"m1","ts":7,"offset":3,"epoch":"k1"}"#
        );
    }
}
