//! Why the server ends a connection: close codes, the `bye` frame, and the
//! one policy for the reconnect hints (`retry_after_ms`) they carry.
//!
//! Codes use Centrifugo's ranges: 3000–3499 means "reconnect allowed",
//! 3500–3999 "do not reconnect as is". A close reason's text is its
//! `bye.reason`, always well under the 123-byte close-frame limit.

use std::time::Duration;

use serde::Serialize;

use super::server_frame::encode;
use crate::ids::jitter_ms;

pub const CLOSE_SHUTDOWN: u16 = 3001;
/// The broker could not take the connection's subscriptions; try again later.
pub const CLOSE_UNAVAILABLE: u16 = 3004;
pub const CLOSE_TOKEN_EXPIRED: u16 = 3005;
pub const CLOSE_SLOW: u16 = 3008;
pub const CLOSE_WRITE_ERROR: u16 = 3009;
pub const CLOSE_IDLE: u16 = 3012;
/// The connection sent frames faster than `--client-frame-rate` allows.
pub const CLOSE_TOO_MANY_REQUESTS: u16 = 3013;
/// The user already holds `--max-user-connections` connections on the node.
pub const CLOSE_CONNECTION_LIMIT: u16 = 3014;
pub const CLOSE_UNAUTHORIZED: u16 = 3500;
pub const CLOSE_PROTOCOL_VIOLATION: u16 = 3501;
pub const CLOSE_KICKED: u16 = 3503;
/// RFC 6455 "message too big".
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Reconnect hints are spread over this many milliseconds so that clients
/// closed together do not come back together.
pub const RETRY_SPREAD_MS: u64 = 5_000;
/// After a failure (broker down, queue overflow) a client waits at least
/// this long, so an overloaded node is not hammered at once.
pub const RETRY_AFTER_FAILURE_MS: u64 = 1_000;
/// A client refused for holding too many connections comes back no sooner
/// than this (another of its connections has to end first), within
/// [`RETRY_LIMIT_SPREAD_MS`] more.
pub const RETRY_AFTER_LIMIT_MS: u64 = 10_000;
pub const RETRY_LIMIT_SPREAD_MS: u64 = 20_000;

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
    TooManyRequests { retry_after_ms: u64 },
    ConnectionLimit { retry_after_ms: u64 },
}

// === retry hints ===

impl CloseReason {
    /// The node is shutting down and the connection was not paced by the
    /// drain (still authenticating, or it arrived meanwhile): come back
    /// within [`RETRY_SPREAD_MS`].
    pub fn shutdown() -> Self {
        Self::Shutdown {
            retry_after_ms: jitter_ms(0, RETRY_SPREAD_MS),
        }
    }

    /// Closed by the paced drain: the hint is spread over the whole drain
    /// window, so the other nodes see the clients return as evenly as they
    /// were closed.
    pub fn drained(window: Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Self::Shutdown {
            retry_after_ms: jitter_ms(0, window_ms),
        }
    }

    /// The broker could not take the connection.
    pub fn unavailable() -> Self {
        Self::Unavailable {
            retry_after_ms: jitter_ms(RETRY_AFTER_FAILURE_MS, RETRY_SPREAD_MS),
        }
    }

    /// The connection's outbound queue overflowed.
    pub fn slow_consumer() -> Self {
        Self::SlowConsumer {
            retry_after_ms: jitter_ms(RETRY_AFTER_FAILURE_MS, RETRY_SPREAD_MS),
        }
    }

    /// The connection sent frames faster than allowed: back off at least
    /// `wait_ms` (when the limiter would admit it again), spread like any
    /// other failure.
    pub fn too_many_requests(wait_ms: u64) -> Self {
        Self::TooManyRequests {
            retry_after_ms: wait_ms
                .saturating_add(jitter_ms(RETRY_AFTER_FAILURE_MS, RETRY_SPREAD_MS)),
        }
    }

    /// The user holds as many connections as a node allows.
    pub fn connection_limit() -> Self {
        Self::ConnectionLimit {
            retry_after_ms: jitter_ms(
                RETRY_AFTER_LIMIT_MS,
                RETRY_AFTER_LIMIT_MS + RETRY_LIMIT_SPREAD_MS,
            ),
        }
    }
}

// === codes and frames ===

impl CloseReason {
    /// Every reason, with zero hints (metrics register one series each).
    pub const ALL: [Self; 12] = [
        Self::Shutdown { retry_after_ms: 0 },
        Self::Unavailable { retry_after_ms: 0 },
        Self::TokenExpired,
        Self::SlowConsumer { retry_after_ms: 0 },
        Self::WriteError,
        Self::IdleTimeout,
        Self::Unauthorized,
        Self::ProtocolViolation,
        Self::Kicked,
        Self::MessageTooBig,
        Self::TooManyRequests { retry_after_ms: 0 },
        Self::ConnectionLimit { retry_after_ms: 0 },
    ];

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
            Self::TooManyRequests { .. } => CLOSE_TOO_MANY_REQUESTS,
            Self::ConnectionLimit { .. } => CLOSE_CONNECTION_LIMIT,
        }
    }

    /// The close code as a static string (a metric label).
    pub fn code_str(self) -> &'static str {
        match self {
            Self::Shutdown { .. } => "3001",
            Self::Unavailable { .. } => "3004",
            Self::TokenExpired => "3005",
            Self::SlowConsumer { .. } => "3008",
            Self::WriteError => "3009",
            Self::IdleTimeout => "3012",
            Self::Unauthorized => "3500",
            Self::ProtocolViolation => "3501",
            Self::Kicked => "3503",
            Self::MessageTooBig => "1009",
            Self::TooManyRequests { .. } => "3013",
            Self::ConnectionLimit { .. } => "3014",
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
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::ConnectionLimit { .. } => "connection_limit",
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
            | Self::SlowConsumer { retry_after_ms }
            | Self::TooManyRequests { retry_after_ms }
            | Self::ConnectionLimit { retry_after_ms } => retry_after_ms,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bye_frames_carry_reconnect_hints() {
        assert_eq!(
            CloseReason::Kicked.bye_frame(),
            r#"{"type":"bye","reason":"kicked","reconnect":false,"retry_after_ms":0}"#
        );
        assert_eq!(CloseReason::Shutdown { retry_after_ms: 5 }.code(), 3001);
    }

    #[test]
    fn code_strings_match_codes() {
        for r in CloseReason::ALL {
            assert_eq!(r.code_str(), r.code().to_string());
        }
    }

    #[test]
    fn hints_stay_in_their_documented_ranges() {
        for _ in 0..100 {
            let s = CloseReason::shutdown().retry_after_ms();
            assert!(s < RETRY_SPREAD_MS);
            let u = CloseReason::unavailable().retry_after_ms();
            assert!((RETRY_AFTER_FAILURE_MS..RETRY_SPREAD_MS).contains(&u));
            let d = CloseReason::drained(Duration::from_millis(300)).retry_after_ms();
            assert!(d < 300);
            let t = CloseReason::too_many_requests(700).retry_after_ms();
            assert!((700 + RETRY_AFTER_FAILURE_MS..700 + RETRY_SPREAD_MS).contains(&t));
            let l = CloseReason::connection_limit().retry_after_ms();
            assert!(
                (RETRY_AFTER_LIMIT_MS..RETRY_AFTER_LIMIT_MS + RETRY_LIMIT_SPREAD_MS).contains(&l)
            );
        }
        assert_eq!(CloseReason::drained(Duration::ZERO).retry_after_ms(), 0);
    }
}
