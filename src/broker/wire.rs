//! How envelopes look on Redis: the JSON a backend may publish directly.
//!
//! A message is `{"event":"new_msg","data":<any JSON>}` with optional `id`
//! and `ts` (the receiving node fills in what is missing); a node-to-node
//! command is an object with a `cmd` field. Anything else is refused with a
//! [`DecodeError`] and dropped by the caller, as is a body nesting deeper
//! than `--max-json-depth` + 1 (`data` sits one level inside it). A message that went through
//! history (`fanout_publish`) also carries its `offset` and `epoch`, which
//! the history function writes at the front of the object.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Command, Envelope};
use crate::{
    metrics::BrokerDrop,
    protocol::{
        Epoch, Position, Publication, is_valid_event, is_valid_name, json_depth, null_value,
    },
};

/// Largest body accepted from the broker: bigger ones could not be written
/// to a WebSocket client (see `max_write_buffer` in the transport).
pub const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("larger than 16 MiB")]
    TooLarge,
    #[error("not a JSON object")]
    NotJson,
    #[error("a field has the wrong type or value")]
    BadField,
    #[error("unknown command")]
    UnknownCommand,
    #[error("nested deeper than --max-json-depth allows")]
    TooDeep,
}

impl DecodeError {
    /// How the drop is counted.
    pub fn metric(self) -> BrokerDrop {
        match self {
            Self::TooLarge => BrokerDrop::TooLarge,
            Self::NotJson => BrokerDrop::InvalidJson,
            Self::BadField => BrokerDrop::InvalidField,
            Self::UnknownCommand => BrokerDrop::UnknownCommand,
            Self::TooDeep => BrokerDrop::TooDeep,
        }
    }
}

/// The fields a published body may have.
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    cmd: Option<Box<RawValue>>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
}

/// Serialises an envelope for PUBLISH.
pub fn encode(envelope: &Envelope) -> String {
    // Plain structs of strings, numbers and already-valid raw JSON: cannot fail.
    match envelope {
        Envelope::Publication(p) => serde_json::to_string(&**p).unwrap_or_default(),
        Envelope::Command(c) => serde_json::to_string(c).unwrap_or_default(),
    }
}

/// Parses a published body, and the history position it carries (a
/// message published live-only, with a plain `PUBLISH`, has none). `fill`
/// supplies an id and timestamp for messages that came without them
/// (backends publishing straight to Redis). `max_depth` is
/// `--max-json-depth`, how deeply `data` may nest.
pub fn decode(
    payload: &[u8],
    max_depth: usize,
    fill: impl FnOnce() -> (String, u64),
) -> Result<(Envelope, Option<Position>), DecodeError> {
    if payload.len() > MAX_BODY {
        return Err(DecodeError::TooLarge);
    }
    // Before any parse: commands are parsed through serde's buffered
    // `Content`, which recurses.
    if json_depth::exceeds(payload, max_depth.saturating_add(1)) {
        return Err(DecodeError::TooDeep);
    }
    if payload.trim_ascii_start().first() != Some(&b'{') {
        // Valid JSON of another shape is a bad field; anything else is not JSON.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
                Ok(_) => DecodeError::BadField,
                Err(_) => DecodeError::NotJson,
            },
        );
    }
    let body: Body = serde_json::from_slice(payload).map_err(|e| {
        if e.is_data() {
            DecodeError::BadField
        } else {
            DecodeError::NotJson
        }
    })?;
    if body.cmd.is_some() {
        let cmd: Command =
            serde_json::from_slice(payload).map_err(|_| DecodeError::UnknownCommand)?;
        let names_ok = match &cmd {
            Command::Disconnect => true,
            Command::Join { group } | Command::Leave { group } => is_valid_name(group),
            Command::Presence { reply_to, .. } | Command::Stats { reply_to, .. } => {
                is_valid_name(reply_to)
            }
            Command::Reply { node, .. } => is_valid_name(node),
        };
        return if names_ok {
            Ok((Envelope::Command(cmd), None))
        } else {
            Err(DecodeError::BadField)
        };
    }
    let position = match (body.offset, body.epoch.as_deref()) {
        (None, None) => None,
        (Some(offset), Some(epoch)) if offset > 0 => Some(Position::new(
            offset,
            Epoch::parse(epoch).ok_or(DecodeError::BadField)?,
        )),
        _ => return Err(DecodeError::BadField),
    };
    if body.event.as_deref().is_some_and(|e| !is_valid_event(e))
        || body
            .id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 128)
        || body.from.as_deref().is_some_and(|f| !is_valid_name(f))
    {
        return Err(DecodeError::BadField);
    }
    let (id, ts) = match (body.id, body.ts) {
        (Some(id), Some(ts)) => (id, ts),
        (id, ts) => {
            let (fid, fts) = fill();
            (id.unwrap_or(fid), ts.unwrap_or(fts))
        }
    };
    let publication = Publication {
        id,
        ts,
        event: body.event,
        data: body.data.unwrap_or_else(null_value),
        from: body.from,
    };
    Ok((Envelope::Publication(Arc::new(publication)), position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill() -> (String, u64) {
        ("filled".into(), 9)
    }

    #[test]
    fn direct_publishes_get_an_id_and_timestamp() {
        let Ok((Envelope::Publication(p), None)) =
            decode(br#"{"event":"x","data":{"a":1}}"#, 32, fill)
        else {
            panic!("not a publication")
        };
        assert_eq!(
            (p.id.as_str(), p.ts, p.event.as_deref()),
            ("filled", 9, Some("x"))
        );
        assert_eq!(p.data.get(), r#"{"a":1}"#);
        let Ok((Envelope::Publication(p), None)) = decode(br#"{"id":"mine","ts":5}"#, 32, fill)
        else {
            panic!("not a publication")
        };
        assert_eq!((p.id.as_str(), p.ts, p.data.get()), ("mine", 5, "null"));
        let Ok((_, Some(pos))) = decode(br#"{"offset":7,"epoch":"e1","id":"m","ts":5}"#, 32, fill)
        else {
            panic!("no position")
        };
        assert_eq!((pos.offset, pos.epoch.as_str()), (7, "e1"));
        // `data` as deep as the limit allows: the body is one level more.
        let body = format!(r#"{{"data":{}1{}}}"#, "[".repeat(32), "]".repeat(32));
        assert!(decode(body.as_bytes(), 32, fill).is_ok());
    }

    #[test]
    fn commands_round_trip() {
        for cmd in [
            Command::Disconnect,
            Command::Join { group: "g".into() },
            Command::Presence {
                req: 3,
                reply_to: "n".into(),
            },
            Command::Reply {
                req: 3,
                node: "n".into(),
                counts: super::super::Counts::default(),
            },
        ] {
            let text = encode(&Envelope::Command(cmd.clone()));
            let Ok((Envelope::Command(back), None)) = decode(text.as_bytes(), 32, fill) else {
                panic!("{text}")
            };
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn bad_bodies_are_refused() {
        for (body, err) in [
            (&b"hello"[..], DecodeError::NotJson),
            (b"[1]", DecodeError::BadField),
            (b"42", DecodeError::BadField),
            (br#"{"event":5}"#, DecodeError::BadField),
            (br#"{"event":""}"#, DecodeError::BadField),
            (br#"{"cmd":"explode"}"#, DecodeError::UnknownCommand),
            (br#"{"data":1,"from":"bad uid"}"#, DecodeError::BadField),
            (br#"{"offset":1}"#, DecodeError::BadField),
            (br#"{"offset":0,"epoch":"e"}"#, DecodeError::BadField),
            (
                br#"{"offset":1,"epoch":"not an epoch"}"#,
                DecodeError::BadField,
            ),
            (
                br#"{"cmd":"join","group":"bad name"}"#,
                DecodeError::BadField,
            ),
            (
                br#"{"data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
                DecodeError::TooDeep,
            ),
            (
                br#"{"cmd":"join","group":"g","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
                DecodeError::TooDeep,
            ),
        ] {
            assert_eq!(
                decode(body, 32, fill).map(|_| ()),
                Err(err),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
