//! Frames a client sends: parsed and validated here, given meaning in
//! [`crate::client`].

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    channel::{Channel, ChannelKind},
    error::{ErrorCode, FrameError},
    json_depth,
    message::null_value,
    names::{NAME_RULE, is_valid_event, is_valid_name, truncate},
    position::{Position, Positions},
};

/// Most channels one `since` may name (a connection's user channel, `all`
/// and its groups fit well within it).
pub const MAX_SINCE: usize = 1024;

/// A frame the client sends, after validation.
#[derive(Debug)]
pub enum ClientFrame {
    Auth {
        token: String,
        /// Where the client was on each channel, to resume from.
        since: Positions,
    },
    Join {
        id: Option<i64>,
        group: String,
        /// Where the client was on the group, to resume from.
        since: Option<Position>,
    },
    Leave {
        id: Option<i64>,
        group: String,
    },
    Publish {
        id: Option<i64>,
        group: String,
        event: Option<String>,
        data: Box<RawValue>,
    },
    Refresh {
        id: Option<i64>,
        token: String,
    },
    Ping {
        id: Option<i64>,
    },
}

/// Every field any frame may carry; unknown fields are ignored so newer
/// clients keep working against older servers.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    id: Option<i64>,
    group: Option<String>,
    token: Option<String>,
    event: Option<String>,
    data: Option<Box<RawValue>>,
    since: Option<Box<RawValue>>,
}

/// Parses and validates one text frame from a client. `max_depth` is
/// `--max-json-depth`: how deeply `data` may nest; the frame as a whole
/// may nest one level more (it holds `data`), and no deeper anywhere.
pub fn parse_client_frame(text: &str, max_depth: usize) -> Result<ClientFrame, FrameError> {
    let raw: RawFrame<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(FrameError::new(
                None,
                ErrorCode::InvalidJson,
                format!("frame is not valid JSON: {e}"),
            ));
        }
        Err(e) => {
            return Err(FrameError::new(
                None,
                ErrorCode::InvalidFrame,
                format!("frame has the wrong shape: {e}"),
            ));
        }
    };
    let id = raw.id;
    // Parsed first, for the `id` (skipping a value never recurses, so a
    // deep frame costs no stack), then refused before anything acts on it.
    if json_depth::exceeds(text.as_bytes(), max_depth.saturating_add(1)) {
        return Err(FrameError::new(
            id,
            ErrorCode::TooDeep,
            format!(
                "`data` may nest at most {max_depth} levels deep (the frame as a whole, one more)"
            ),
        ));
    }
    let missing = |field: &str| {
        FrameError::new(
            id,
            ErrorCode::InvalidFrame,
            format!("missing field `{field}`"),
        )
    };
    let group = |g: Option<String>| {
        let g = g.ok_or_else(|| missing("group"))?;
        if is_valid_name(&g) {
            Ok(g)
        } else {
            Err(FrameError::new(
                id,
                ErrorCode::InvalidGroup,
                format!("group names are {NAME_RULE}"),
            ))
        }
    };
    let Some(kind) = raw.kind else {
        return Err(missing("type"));
    };
    match &*kind {
        "auth" => Ok(ClientFrame::Auth {
            token: raw.token.ok_or_else(|| missing("token"))?,
            since: match &raw.since {
                None => Positions::new(),
                Some(since) => parse_since_map(since.get()).map_err(|m| bad_position(id, m))?,
            },
        }),
        "join" => Ok(ClientFrame::Join {
            id,
            group: group(raw.group)?,
            since: match &raw.since {
                None => None,
                Some(since) => {
                    Some(serde_json::from_str::<Position>(since.get()).map_err(|e| {
                        bad_position(
                            id,
                            format!("`since` is not {{\"offset\":N,\"epoch\":\"E\"}}: {e}"),
                        )
                    })?)
                }
            },
        }),
        "leave" => Ok(ClientFrame::Leave {
            id,
            group: group(raw.group)?,
        }),
        "publish" => {
            let group = group(raw.group)?;
            if let Some(event) = &raw.event
                && !is_valid_event(event)
            {
                return Err(FrameError::new(
                    id,
                    ErrorCode::InvalidEvent,
                    "event names are 1-128 bytes",
                ));
            }
            Ok(ClientFrame::Publish {
                id,
                group,
                event: raw.event,
                data: raw.data.unwrap_or_else(null_value),
            })
        }
        "refresh" => Ok(ClientFrame::Refresh {
            id,
            token: raw.token.ok_or_else(|| missing("token"))?,
        }),
        "ping" => Ok(ClientFrame::Ping { id }),
        other => Err(FrameError::new(
            id,
            ErrorCode::UnknownType,
            format!("unknown frame type `{}`", truncate(other, 64)),
        )),
    }
}

fn bad_position(id: Option<i64>, message: impl Into<std::borrow::Cow<'static, str>>) -> FrameError {
    FrameError::new(id, ErrorCode::InvalidPosition, message)
}

/// `{"<channel>": {"offset": N, "epoch": "E"}, …}`: positions of `user:`,
/// `group:` and `all` channels, at most [`MAX_SINCE`].
pub fn parse_since_map(json: &str) -> Result<Positions, String> {
    let raw: std::collections::BTreeMap<String, Position> =
        serde_json::from_str(json).map_err(|e| {
            format!("`since` is not {{\"<channel>\":{{\"offset\":N,\"epoch\":\"E\"}}}}: {e}")
        })?;
    if raw.len() > MAX_SINCE {
        return Err(format!("`since` names more than {MAX_SINCE} channels"));
    }
    raw.into_iter()
        .map(|(name, position)| Ok((resumable(&name)?, position)))
        .collect()
}

/// The compact form of positions, for URLs and SSE event ids:
/// `<channel>~<offset>~<epoch>` entries separated by `,`
/// (`user:42~17~k3x9a,all~4~q1w2e`).
pub fn parse_since_compact(text: &str) -> Result<Positions, String> {
    let mut out = Positions::new();
    for entry in text.split(',').filter(|e| !e.is_empty()) {
        if out.len() >= MAX_SINCE {
            return Err(format!("`since` names more than {MAX_SINCE} channels"));
        }
        let mut parts = entry.split('~');
        let (Some(name), Some(offset), Some(epoch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "`{}` is not <channel>~<offset>~<epoch>",
                truncate(entry, 64)
            ));
        };
        let offset = offset
            .parse::<u64>()
            .map_err(|_| format!("`{}`: the offset is not a number", truncate(entry, 64)))?;
        let epoch = super::position::Epoch::parse(epoch)
            .ok_or_else(|| format!("`{}`: not an epoch", truncate(entry, 64)))?;
        out.insert(resumable(name)?, Position::new(offset, epoch));
    }
    Ok(out)
}

/// Writes positions in the compact form [`parse_since_compact`] reads.
pub fn format_since_compact(positions: &Positions) -> String {
    let mut out = String::new();
    for (channel, p) in positions {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(channel.as_str());
        out.push('~');
        out.push_str(&p.offset.to_string());
        out.push('~');
        out.push_str(p.epoch.as_str());
    }
    out
}

/// A channel a client may resume: `user:`, `group:` or `all`.
fn resumable(name: &str) -> Result<Channel, String> {
    match Channel::parse(name) {
        Some(c) if !matches!(c.kind(), ChannelKind::Node(_)) => Ok(c),
        _ => Err(format!(
            "`{}` is not a channel (user:<uid>, group:<name> or all)",
            truncate(name, 64)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_get_precise_codes() {
        let code = |s: &str| {
            parse_client_frame(s, 32)
                .map(|_| ())
                .map_err(|e| (e.id, e.code))
        };
        assert_eq!(code("{"), Err((None, ErrorCode::InvalidJson)));
        assert_eq!(code("[1]"), Err((None, ErrorCode::InvalidFrame)));
        assert_eq!(code(r#"{"id":1}"#), Err((Some(1), ErrorCode::InvalidFrame)));
        assert_eq!(
            code(r#"{"type":"nope","id":2}"#),
            Err((Some(2), ErrorCode::UnknownType))
        );
        assert_eq!(
            code(r#"{"type":"join","id":3}"#),
            Err((Some(3), ErrorCode::InvalidFrame))
        );
        assert_eq!(
            code(r#"{"type":"join","id":4,"group":"a b"}"#),
            Err((Some(4), ErrorCode::InvalidGroup))
        );
        assert_eq!(code(r#"{"type":"ping","id":5}"#), Ok(()));
        assert_eq!(
            code(r#"{"type":"join","id":6,"group":"g","since":{"offset":"x"}}"#),
            Err((Some(6), ErrorCode::InvalidPosition))
        );
        assert_eq!(
            code(r#"{"type":"auth","token":"t","since":{"node:n":{"offset":1,"epoch":"e"}}}"#),
            Err((None, ErrorCode::InvalidPosition))
        );
        assert_eq!(
            code(r#"{"type":"auth","token":"t","since":{"all":{"offset":1,"epoch":"e"}}}"#),
            Ok(())
        );
    }

    #[test]
    fn frames_nesting_too_deep_are_refused_with_their_id() {
        let frame = |depth: usize| {
            format!(
                r#"{{"type":"publish","id":7,"group":"g","data":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(parse_client_frame(&frame(4), 4).is_ok());
        let e = parse_client_frame(&frame(5), 4).unwrap_err();
        assert_eq!((e.id, e.code), (Some(7), ErrorCode::TooDeep));
        // Anywhere in the frame, not only in `data`; brackets in strings
        // do not count.
        let e = parse_client_frame(r#"{"type":"ping","x":[[[[[1]]]]]}"#, 4).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooDeep);
        assert!(parse_client_frame(r#"{"type":"ping","x":"[[[[[[[["}"#, 4).is_ok());
        // 32,000 levels in a 64 KiB frame: refused, no stack overflow.
        let e = parse_client_frame(&frame(32_000), 32).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooDeep);
    }

    #[test]
    fn compact_positions_round_trip() {
        let p = parse_since_compact("user:42~17~k3x9a,all~4~q1w2e").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[&Channel::user("42")].offset, 17);
        assert_eq!(format_since_compact(&p), "all~4~q1w2e,user:42~17~k3x9a");
        assert_eq!(parse_since_compact("").unwrap().len(), 0);
        for bad in [
            "all~x~e",
            "all~1",
            "all~1~e~f",
            "nope~1~e",
            "all~1~bad epoch",
            "node:n~1~e",
        ] {
            assert!(parse_since_compact(bad).is_err(), "{bad}");
        }
    }
}
