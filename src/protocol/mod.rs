//! The client wire protocol: names, channels, close reasons, error codes,
//! client frames, server frames. No I/O.
//!
//! Everything a client can see is defined here so docs/protocol.md has one
//! source to follow.
//!
//! # Layout
//! - [`names`]: the name rules for uids, groups and events.
//! - [`channel`]: delivery addresses (`user:`, `group:`, `all`, `node:`).
//! - [`close`]: close codes, `bye`, and the reconnect-hint policy.
//! - [`error`]: `error` frame codes and a refused frame.
//! - [`client_frame`]: parsing what clients send.
//! - [`json_depth`]: how deeply a JSON text nests, without parsing it.
//! - [`server_frame`]: replies (`welcome`, `joined`, `ack`, …).
//! - [`message`]: a publication and its `message` frame.
//! - [`position`]: offsets and epochs, where a message sits in its channel.

pub mod channel;
pub mod client_frame;
pub mod close;
pub mod error;
pub mod json_depth;
pub mod message;
pub mod names;
pub mod position;
pub mod server_frame;

pub use channel::{Channel, ChannelKind};
pub use client_frame::{
    ClientFrame, format_since_compact, parse_client_frame, parse_since_compact, parse_since_map,
};
pub use close::{
    CLOSE_CONNECTION_LIMIT, CLOSE_IDLE, CLOSE_KICKED, CLOSE_PROTOCOL_VIOLATION, CLOSE_SHUTDOWN,
    CLOSE_SLOW, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG, CLOSE_TOO_MANY_REQUESTS, CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE, CLOSE_WRITE_ERROR, CloseReason, RETRY_AFTER_LIMIT_MS,
};
pub use error::{ErrorCode, FrameError};
pub use message::{Publication, message_frame, null_value};
pub use names::{MAX_NAME_LEN, NAME_RULE, is_valid_event, is_valid_name};
pub use position::{ChannelPosition, Epoch, Position, Positions};
pub use server_frame::{
    Welcome, ack_frame, error_frame, joined_frame, left_frame, pong_frame, refreshed_frame,
    welcome_frame,
};
