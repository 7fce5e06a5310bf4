//! What a client's frames mean, whatever transport carried them, and the
//! one mapping of domain errors to the codes clients and backends see.
//!
//! A transport moves bytes: it authenticates the connection (a token from
//! the request, or the first frame through [`authenticate`]), registers it
//! with [`Client::connect`], hands every text frame to [`Client::on_text`],
//! writes what the session queues, and closes with the reason it is given.
//! Everything a frame means (join, leave, publish, refresh, ping), the
//! replies, and the count of bad frames in a row lives here, so a second
//! transport is a small file and not a copy.
//!
//! The error → code mapping ([`NodeError::code`], [`AuthError::code`], and
//! [`HttpError`] from a [`NodeError`]) is written once, here.

use std::{sync::Arc, time::Duration};

use axum::{extract::ws::Utf8Bytes, http::StatusCode};
use tokio::time::Instant;

use crate::{
    auth::{AuthError, Authenticator, Credentials},
    http_error::HttpError,
    ids::unix_ms,
    node::{Node, NodeError, Targets},
    protocol::{
        self, ClientFrame, CloseReason, ErrorCode, FrameError, Welcome, parse_client_frame,
    },
    session::Session,
};

/// Bad frames in a row tolerated before the connection is closed 3501.
pub const MAX_BAD_FRAMES: u32 = 16;

/// Expiry times further away than this are treated as this far: a
/// deadline computed from a client's `exp` must never overflow.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

// === the one error → code mapping ===

impl NodeError {
    /// The `error` frame code (and API error code) for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooManyGroups(_) => ErrorCode::TooManyGroups,
            // A closing connection gets no more replies; a session
            // operation that raced with its close reads as "unavailable".
            Self::Broker(_) | Self::Closed => ErrorCode::BrokerUnavailable,
        }
    }
}

impl AuthError {
    /// The `error` frame code (and HTTP 401 code) for a refused token.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::InvalidToken,
        }
    }
}

impl From<NodeError> for HttpError {
    fn from(e: NodeError) -> Self {
        let code = e.code();
        match (code, &e) {
            (ErrorCode::TooManyGroups, _) => {
                Self::new(StatusCode::BAD_REQUEST, code.as_str(), e.to_string())
            }
            (_, NodeError::Broker(inner)) => {
                tracing::warn!(error = %inner, "API request failed on the broker");
                Self::unavailable(
                    code.as_str(),
                    "the message broker is unavailable; retry later",
                )
            }
            _ => Self::unavailable(code.as_str(), e.to_string()),
        }
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        Self::unauthorized(e.code().as_str(), e.to_string())
    }
}

/// A frame larger than the configured limit (closes with 1009).
pub fn too_big() -> FrameError {
    FrameError::new(
        None,
        ErrorCode::MessageTooBig,
        "frame is over the size limit",
    )
}

/// A frame the transport could not decode (closes with 3501).
pub fn malformed() -> FrameError {
    FrameError::new(
        None,
        ErrorCode::InvalidFrame,
        "WebSocket protocol error (invalid UTF-8 or a malformed frame)",
    )
}

/// A binary frame: frames are JSON text.
pub fn binary() -> FrameError {
    FrameError::new(
        None,
        ErrorCode::BinaryNotSupported,
        "frames are JSON text; binary frames are not supported",
    )
}

// === authentication by first frame ===

/// The first frame of a connection that came without a token: it must be
/// `auth` with a valid token. Any refusal closes the connection with
/// `unauthorized` after the `error` frame returned here.
pub fn authenticate(auth: &Authenticator, text: &str) -> Result<Credentials, FrameError> {
    match parse_client_frame(text)? {
        ClientFrame::Auth { token } => auth
            .verify(&token)
            .map_err(|e| FrameError::new(None, e.code(), e.to_string())),
        _ => Err(FrameError::new(
            None,
            ErrorCode::AuthRequired,
            "the first frame must be {\"type\":\"auth\",\"token\":\"...\"}",
        )),
    }
}

/// The error frame of a connection that sent no `auth` frame in time.
pub fn auth_timeout(timeout: Duration) -> FrameError {
    FrameError::new(
        None,
        ErrorCode::AuthTimeout,
        format!(
            "no auth frame within {}",
            humantime::format_duration(timeout)
        ),
    )
}

// === Client ===

/// What the connection does next, as far as the client's frames decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The token was replaced: the expiry deadline moved.
    Refreshed,
    /// End the connection with this reason (after writing what is queued).
    Close(CloseReason),
}

/// One authenticated, registered connection as its frames see it.
#[derive(Debug)]
pub struct Client {
    node: Node,
    auth: Arc<Authenticator>,
    creds: Credentials,
    session: Session,
    /// Bad frames in a row; reset by a good one.
    bad_frames: u32,
}

impl Client {
    /// Registers the connection with the node (subscribing its user
    /// channel if it is the user's first here).
    pub async fn connect(
        node: &Node,
        auth: Arc<Authenticator>,
        creds: Credentials,
    ) -> Result<Self, NodeError> {
        let session = node.connect(creds.uid.clone()).await?;
        Ok(Self {
            node: node.clone(),
            auth,
            creds,
            session,
            bad_frames: 0,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn uid(&self) -> &str {
        &self.creds.uid
    }

    /// The `welcome` frame.
    pub fn welcome(&self, heartbeat: Duration) -> String {
        protocol::welcome_frame(&Welcome {
            conn: &format!("{}-{}", self.node.id(), self.session.id()),
            uid: &self.creds.uid,
            node: self.node.id(),
            exp: self.creds.exp,
            heartbeat: heartbeat.as_secs(),
        })
    }

    /// When the token expires, on the runtime's clock. Checked: a token
    /// whose `exp` is absurdly far away expires in `FAR_FUTURE`.
    pub fn expires_at(&self) -> Instant {
        let left_ms = self
            .creds
            .exp
            .saturating_mul(1000)
            .saturating_sub(unix_ms());
        let left = Duration::from_millis(left_ms).min(FAR_FUTURE);
        let now = Instant::now();
        now.checked_add(left).unwrap_or(now + FAR_FUTURE / 100)
    }

    /// Queues a reply. Replies share the queue (and its order) with
    /// messages; a full queue means the session is already closing as a
    /// slow consumer, so a refused reply needs no handling.
    pub fn reply(&self, frame: String) {
        let _ = self.session.push(&Utf8Bytes::from(frame), 0);
    }

    /// Handles one text frame: parses it, acts on it, queues the reply.
    pub async fn on_text(&mut self, text: &str) -> Outcome {
        let result = match parse_client_frame(text) {
            Ok(frame) => self.on_frame(frame).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(outcome) => {
                self.bad_frames = 0;
                outcome
            }
            Err(e) => self.refuse(&e),
        }
    }

    /// Answers a bad frame with its `error`; the 17th in a row closes the
    /// connection as a protocol violation.
    pub fn refuse(&mut self, e: &FrameError) -> Outcome {
        self.bad_frames = self.bad_frames.saturating_add(1);
        if self.bad_frames > MAX_BAD_FRAMES {
            self.reply(protocol::error_frame(
                e.id,
                ErrorCode::TooManyErrors,
                "too many bad frames in a row",
            ));
            return Outcome::Close(CloseReason::ProtocolViolation);
        }
        self.reply(e.frame());
        Outcome::Continue
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<Outcome, FrameError> {
        let node_error = |id, e: &NodeError| FrameError::new(id, e.code(), e.to_string());
        match frame {
            ClientFrame::Ping { id } => self.reply(protocol::pong_frame(id)),
            ClientFrame::Auth { .. } => {
                return Err(FrameError::new(
                    None,
                    ErrorCode::AlreadyAuthenticated,
                    "already authenticated; use `refresh` to extend the session",
                ));
            }
            ClientFrame::Join { id, group } => {
                if !self.creds.groups.allows(&group) {
                    return Err(FrameError::new(
                        id,
                        ErrorCode::Forbidden,
                        format!("the token does not allow joining `{group}`"),
                    ));
                }
                self.node
                    .join(&self.session, &group)
                    .await
                    .map_err(|e| node_error(id, &e))?;
                self.reply(protocol::joined_frame(id, &group));
            }
            ClientFrame::Leave { id, group } => {
                self.node.leave(&self.session, &group).await;
                self.reply(protocol::left_frame(id, &group));
            }
            ClientFrame::Publish {
                id,
                group,
                event,
                data,
            } => {
                if !self.creds.publish.allows(&group) {
                    return Err(FrameError::new(
                        id,
                        ErrorCode::Forbidden,
                        format!("the token does not allow publishing to `{group}`"),
                    ));
                }
                let publication =
                    self.node
                        .publication(event, data, Some(self.creds.uid.to_string()));
                let targets = Targets {
                    groups: vec![group],
                    ..Targets::default()
                };
                self.node
                    .publish(&targets, publication)
                    .await
                    .map_err(|e| node_error(id, &e))?;
                self.reply(protocol::ack_frame(id));
            }
            ClientFrame::Refresh { id, token } => {
                let creds = self
                    .auth
                    .verify(&token)
                    .map_err(|e| FrameError::new(id, e.code(), e.to_string()))?;
                if creds.uid != self.creds.uid {
                    return Err(FrameError::new(
                        id,
                        ErrorCode::SubMismatch,
                        "a refresh token must have the same `sub` as the connection",
                    ));
                }
                self.reply(protocol::refreshed_frame(id, creds.exp));
                self.creds = creds;
                return Ok(Outcome::Refreshed);
            }
        }
        Ok(Outcome::Continue)
    }

    /// Unregisters the connection (leaving its groups and user channel).
    pub async fn disconnect(&self) {
        self.node.disconnect(&self.session).await;
    }
}
