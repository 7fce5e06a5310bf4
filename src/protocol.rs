//! The client wire protocol: frames, error codes, close codes and the names
//! (uids, groups, channels) they carry. No I/O.
//!
//! Everything a client can see is defined here so docs/protocol.md has one
//! source to follow. Close codes use Centrifugo's ranges: 3000–3499 means
//! "reconnect allowed", 3500–3999 "do not reconnect as is".

use std::{borrow::Cow, fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest uid, group or event name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Every uid and group name is 1–128 characters of this set.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@=+/-".contains(&b))
}

/// An event name is free text, 1–128 bytes.
pub fn is_valid_event(event: &str) -> bool {
    !event.is_empty() && event.len() <= MAX_NAME_LEN
}

// === Channel ===

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

// === Close reasons ===

pub const CLOSE_SHUTDOWN: u16 = 3001;
/// The broker could not take the connection's subscriptions; try again later.
pub const CLOSE_UNAVAILABLE: u16 = 3004;
pub const CLOSE_TOKEN_EXPIRED: u16 = 3005;
pub const CLOSE_SLOW: u16 = 3008;
pub const CLOSE_WRITE_ERROR: u16 = 3009;
pub const CLOSE_IDLE: u16 = 3012;
pub const CLOSE_UNAUTHORIZED: u16 = 3500;
pub const CLOSE_PROTOCOL_VIOLATION: u16 = 3501;
pub const CLOSE_KICKED: u16 = 3503;
/// RFC 6455 "message too big".
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Why the server ends a connection. Each maps to a close code, the `bye`
/// frame's `reason` and whether the client should reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Shutdown { retry_after_ms: u64 },
    Unavailable { retry_after_ms: u64 },
    TokenExpired,
    SlowConsumer { retry_after_ms: u64 },
    WriteError,
    IdleTimeout,
    Unauthorized,
    ProtocolViolation,
    Kicked,
    MessageTooBig,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            Self::Shutdown { .. } => CLOSE_SHUTDOWN,
            Self::Unavailable { .. } => CLOSE_UNAVAILABLE,
            Self::TokenExpired => CLOSE_TOKEN_EXPIRED,
            Self::SlowConsumer { .. } => CLOSE_SLOW,
            Self::WriteError => CLOSE_WRITE_ERROR,
            Self::IdleTimeout => CLOSE_IDLE,
            Self::Unauthorized => CLOSE_UNAUTHORIZED,
            Self::ProtocolViolation => CLOSE_PROTOCOL_VIOLATION,
            Self::Kicked => CLOSE_KICKED,
            Self::MessageTooBig => CLOSE_TOO_BIG,
        }
    }

    /// The `bye.reason` string, also used as the close frame's reason text
    /// (always well under the 123-byte limit).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown { .. } => "shutdown",
            Self::Unavailable { .. } => "unavailable",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer { .. } => "slow_consumer",
            Self::WriteError => "write_error",
            Self::IdleTimeout => "idle_timeout",
            Self::Unauthorized => "unauthorized",
            Self::ProtocolViolation => "protocol_violation",
            Self::Kicked => "kicked",
            Self::MessageTooBig => "message_too_big",
        }
    }

    /// Codes below 3500 (and 1009, after fixing the frame) allow a reconnect.
    pub fn reconnect(self) -> bool {
        !matches!(
            self,
            Self::Unauthorized | Self::ProtocolViolation | Self::Kicked
        )
    }

    pub fn retry_after_ms(self) -> u64 {
        match self {
            Self::Shutdown { retry_after_ms }
            | Self::Unavailable { retry_after_ms }
            | Self::SlowConsumer { retry_after_ms } => retry_after_ms,
            _ => 0,
        }
    }

    /// The `bye` frame sent before the close frame.
    pub fn bye_frame(self) -> String {
        #[derive(Serialize)]
        struct Bye {
            #[serde(rename = "type")]
            kind: &'static str,
            reason: &'static str,
            reconnect: bool,
            retry_after_ms: u64,
        }
        encode(&Bye {
            kind: "bye",
            reason: self.as_str(),
            reconnect: self.reconnect(),
            retry_after_ms: self.retry_after_ms(),
        })
    }
}

// === Error codes ===

/// The `code` of an `error` frame (and of API errors that share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidFrame,
    UnknownType,
    BinaryNotSupported,
    InvalidGroup,
    InvalidEvent,
    Forbidden,
    TooManyGroups,
    InvalidToken,
    TokenExpired,
    SubMismatch,
    AuthRequired,
    AuthTimeout,
    AlreadyAuthenticated,
    BrokerUnavailable,
    MessageTooBig,
    TooManyErrors,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidFrame => "invalid_frame",
            Self::UnknownType => "unknown_type",
            Self::BinaryNotSupported => "binary_not_supported",
            Self::InvalidGroup => "invalid_group",
            Self::InvalidEvent => "invalid_event",
            Self::Forbidden => "forbidden",
            Self::TooManyGroups => "too_many_groups",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::SubMismatch => "sub_mismatch",
            Self::AuthRequired => "auth_required",
            Self::AuthTimeout => "auth_timeout",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::MessageTooBig => "message_too_big",
            Self::TooManyErrors => "too_many_errors",
        }
    }
}

/// A bad client frame: the reply is an `error` frame echoing `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub id: Option<i64>,
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl FrameError {
    pub fn new(id: Option<i64>, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }

    pub fn frame(&self) -> String {
        error_frame(self.id, self.code, &self.message)
    }
}

// === Client frames ===

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
                "group names are 1-128 characters of A-Za-z0-9_.:@=+/-",
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

/// JSON `null` as a raw value (the `data` of a message that has none).
pub fn null_value() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// === Server frames ===

fn encode<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs of strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

fn reply(kind: &str, id: Option<i64>, group: Option<&str>, exp: Option<u64>) -> String {
    encode(&Reply {
        kind,
        id,
        group,
        exp,
    })
}

pub fn joined_frame(id: Option<i64>, group: &str) -> String {
    reply("joined", id, Some(group), None)
}

pub fn left_frame(id: Option<i64>, group: &str) -> String {
    reply("left", id, Some(group), None)
}

pub fn ack_frame(id: Option<i64>) -> String {
    reply("ack", id, None, None)
}

pub fn pong_frame(id: Option<i64>) -> String {
    reply("pong", id, None, None)
}

pub fn refreshed_frame(id: Option<i64>, exp: u64) -> String {
    reply("refreshed", id, None, Some(exp))
}

pub fn error_frame(id: Option<i64>, code: ErrorCode, message: &str) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        code: &'static str,
        message: &'a str,
    }
    encode(&Error {
        kind: "error",
        id,
        code: code.as_str(),
        message,
    })
}

/// The first frame after authentication.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    pub conn: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub exp: u64,
    pub heartbeat: u64,
}

pub fn welcome_frame(w: &Welcome<'_>) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        w: &'a Welcome<'a>,
    }
    encode(&Frame { kind: "welcome", w })
}

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

/// The `message` frame for `publication` delivered through `channel`.
pub fn message_frame(channel: &Channel, p: &Publication) -> String {
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
    }
    encode(&Message {
        kind: "message",
        channel: channel.as_str(),
        event: p.event.as_deref(),
        data: &p.data,
        id: &p.id,
        ts: p.ts,
        from: p.from.as_deref(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_alphabet() {
        assert!(is_valid_name("42"));
        assert!(is_valid_name("room-1/a:b@c=d+e_f.g"));
        assert!(is_valid_name(&"a".repeat(128)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(129)));
        assert!(!is_valid_name("room 1"));
        assert!(!is_valid_name("room*"));
        assert!(!is_valid_name("é"));
    }

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
            message_frame(&Channel::group("g"), &p),
            r#"{"type":"message","channel":"group:g","event":"e","data":{"a":[1,2]},"id":"m1","ts":7}"#
        );
    }

    #[test]
    fn bye_frames_carry_reconnect_hints() {
        assert_eq!(
            CloseReason::Kicked.bye_frame(),
            r#"{"type":"bye","reason":"kicked","reconnect":false,"retry_after_ms":0}"#
        );
        assert_eq!(CloseReason::Shutdown { retry_after_ms: 5 }.code(), 3001);
    }
}
