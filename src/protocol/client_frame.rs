//! Frames a client sends: parsed and validated here, given meaning in
//! [`crate::client`].

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    error::{ErrorCode, FrameError},
    message::null_value,
    names::{NAME_RULE, is_valid_event, is_valid_name, truncate},
};

/// A frame the client sends, after validation.
#[derive(Debug)]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Join {
        id: Option<i64>,
        group: String,
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
}

/// Parses and validates one text frame from a client.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
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
        }),
        "join" => Ok(ClientFrame::Join {
            id,
            group: group(raw.group)?,
        }),
        "leave" => Ok(ClientFrame::Leave {
            id,
            group: group(raw.group)?,
        }),
        "publish" => {
            let group = group(raw.group)?;
            if let Some(event) = &raw.event {
                if !is_valid_event(event) {
                    return Err(FrameError::new(
                        id,
                        ErrorCode::InvalidEvent,
                        "event names are 1-128 bytes",
                    ));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_get_precise_codes() {
        let code = |s: &str| {
            parse_client_frame(s)
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
    }
}
