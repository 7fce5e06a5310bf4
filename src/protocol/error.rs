//! The codes of `error` frames (and of the API errors that share them),
//! and a refused client frame.

use std::borrow::Cow;

use super::server_frame::error_frame_retry;

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
    OutcomeUnknown,
    MessageTooBig,
    TooManyErrors,
    InvalidPosition,
    /// JSON nested deeper than `--max-json-depth` allows.
    TooDeep,
    /// A frame (or API request) over its rate limit; it was not acted on.
    RateLimited,
    /// The user holds as many connections as the node allows.
    ConnectionLimit,
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
            Self::OutcomeUnknown => "outcome_unknown",
            Self::MessageTooBig => "message_too_big",
            Self::TooManyErrors => "too_many_errors",
            Self::InvalidPosition => "invalid_position",
            Self::TooDeep => "too_deep",
            Self::RateLimited => "rate_limited",
            Self::ConnectionLimit => "connection_limit",
        }
    }
}

/// A refused client frame: the reply is an `error` frame echoing `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub id: Option<i64>,
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// When the frame would be accepted again (`rate_limited`).
    pub retry_after_ms: Option<u64>,
}

impl FrameError {
    pub fn new(id: Option<i64>, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The same error, telling the client when to try again.
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    pub fn frame(&self) -> String {
        error_frame_retry(self.id, self.code, &self.message, self.retry_after_ms)
    }
}
