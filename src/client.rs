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

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{extract::ws::Utf8Bytes, http::StatusCode};
use tokio::time::Instant;

use crate::{
    auth::{AuthError, Authenticator, Credentials},
    broker::BrokerError,
    http_error::HttpError,
    ids::unix_ms,
    limits::{self, ConnLimits},
    log_limit::LogLimiter,
    metrics::Limit,
    node::{Node, NodeError, Resumed, Targets},
    protocol::{
        self, Channel, ChannelKind, ClientFrame, CloseReason, ErrorCode, FrameError, Positions,
        Welcome, parse_client_frame,
    },
    session::Session,
};

/// Bad frames in a row tolerated before the connection is closed 3501.
pub const MAX_BAD_FRAMES: u32 = 16;

/// Expiry times further away than this are treated as this far: a
/// deadline computed from a client's `exp` must never overflow.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

// === the one error → code mapping ===

/// Failed API requests during an outage are logged at most once every
/// 10 s, with how many were not (one line per request flooded the logs).
static API_BROKER_LOG: LogLimiter = LogLimiter::new(std::time::Duration::from_secs(10));

impl NodeError {
    /// The `error` frame code (and API error code) for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooManyGroups(_) => ErrorCode::TooManyGroups,
            Self::TooManyConnections(_) => ErrorCode::ConnectionLimit,
            Self::Broker(BrokerError::OutcomeUnknown(_)) => ErrorCode::OutcomeUnknown,
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
            (ErrorCode::ConnectionLimit, _) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, code.as_str(), e.to_string()).retry_after(
                    std::time::Duration::from_millis(protocol::RETRY_AFTER_LIMIT_MS),
                )
            }
            (ErrorCode::OutcomeUnknown, _) => {
                if let Some(suppressed) = API_BROKER_LOG.allow() {
                    tracing::warn!(error = %e, suppressed, "API request got no answer from the broker");
                }
                Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    code.as_str(),
                    "no answer from the message broker in time: the message may have been published; retry only with the same idempotency_key",
                )
            }
            (_, NodeError::Broker(inner)) => {
                if let Some(suppressed) = API_BROKER_LOG.allow() {
                    tracing::warn!(error = %inner, suppressed, "API request failed on the broker");
                }
                Self::unavailable(
                    code.as_str(),
                    "the message broker is unavailable: nothing was published; retry later",
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

fn forbidden_join(id: Option<i64>, group: &str) -> FrameError {
    FrameError::new(
        id,
        ErrorCode::Forbidden,
        format!("the token does not allow joining `{group}`"),
    )
}

/// The groups a connection starts in: `groups` and those its `since`
/// names, after checking that the token may read every channel named: its
/// own user channel, `all`, and groups the token allows joining (at most
/// `max_groups`). Resuming never lets a client read a channel its token
/// does not allow.
pub fn check_start(
    creds: &Credentials,
    groups: &[String],
    since: &Positions,
    max_groups: usize,
) -> Result<Vec<String>, ConnectError> {
    let mut all_groups: Vec<String> = Vec::new();
    for group in groups {
        if !creds.groups.allows(group) {
            return Err(ConnectError::Refused(forbidden_join(None, group)));
        }
        if !all_groups.contains(group) {
            all_groups.push(group.clone());
        }
    }
    let mut groups = all_groups;
    for channel in since.keys() {
        match channel.kind() {
            ChannelKind::All => {}
            ChannelKind::User(uid) if *uid == *creds.uid => {}
            ChannelKind::User(_) | ChannelKind::Node(_) => {
                return Err(ConnectError::Refused(FrameError::new(
                    None,
                    ErrorCode::Forbidden,
                    format!("`since` names `{channel}`, which this token may not read"),
                )));
            }
            ChannelKind::Group(group) => {
                if !creds.groups.allows(group) {
                    return Err(ConnectError::Refused(forbidden_join(None, group)));
                }
                if !groups.iter().any(|g| g == group) {
                    groups.push(group.to_owned());
                }
            }
        }
    }
    if groups.len() > max_groups {
        return Err(ConnectError::Refused(FrameError::new(
            None,
            ErrorCode::TooManyGroups,
            format!("a connection may be in at most {max_groups} groups"),
        )));
    }
    Ok(groups)
}

// === authentication by first frame ===

/// The first frame of a connection that came without a token: it must be
/// `auth` with a valid token. Any refusal closes the connection with
/// `unauthorized` after the `error` frame returned here. Returns the
/// credentials and where the client says it was. `max_depth` is
/// `--max-json-depth`.
pub fn authenticate(
    auth: &Authenticator,
    text: &str,
    max_depth: usize,
) -> Result<(Credentials, Positions), FrameError> {
    match parse_client_frame(text, max_depth)? {
        ClientFrame::Auth { token, since } => auth
            .verify(&token)
            .map(|creds| (creds, since))
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
    /// This connection's frame, publish and join rate limiters.
    limits: ConnLimits,
}

/// Why a connection could not start.
#[derive(Debug)]
pub enum ConnectError {
    /// The client asked for something it may not have (a `since` naming a
    /// channel its token does not allow): answered with this error frame
    /// and close 3500.
    Refused(FrameError),
    /// The broker could not take the connection (close 3004).
    Unavailable(NodeError),
    /// The user holds `--max-user-connections` on this node: answered with
    /// this error frame and close 3014 (SSE: 429).
    Limited(FrameError),
}

/// Where a connection starts: groups to join, and where the client says
/// it was on its channels (to resume from).
#[derive(Debug, Default)]
pub struct Start {
    pub groups: Vec<String>,
    pub since: Positions,
}

/// A connection that started: the client, its `welcome` frame, and the
/// positions welcome carries.
#[derive(Debug)]
pub struct Connected {
    pub client: Client,
    pub welcome: String,
    /// Where the connection is on each channel before its first queued
    /// frame: the client's own position for a recovered channel (its
    /// replay follows), else the channel's top (as in `welcome`).
    pub positions: Positions,
}

impl Client {
    /// Registers the connection with the node (subscribing its user
    /// channel if it is the user's first here), joins `groups` and the
    /// groups `since` names, and works out where it starts on each channel:
    /// from `since`, replaying what it missed. Replayed and held messages
    /// are queued on the session; the transport writes `welcome` first.
    pub async fn connect(
        node: &Node,
        auth: Arc<Authenticator>,
        creds: Credentials,
        start: Start,
        heartbeat: Duration,
    ) -> Result<Connected, ConnectError> {
        let Start { groups, since } = start;
        let groups = check_start(&creds, &groups, &since, node.max_groups())?;
        let user = Channel::user(&creds.uid);
        let mut channels = vec![user.clone(), Channel::all()];
        channels.extend(groups.iter().map(|g| Channel::group(g)));
        let session = node
            .connect(creds.uid.clone(), &channels)
            .await
            .map_err(|e| match e {
                NodeError::TooManyConnections(_) => {
                    ConnectError::Limited(FrameError::new(None, e.code(), e.to_string()))
                }
                e => ConnectError::Unavailable(e),
            })?;
        let client = Self {
            node: node.clone(),
            auth,
            creds,
            session,
            bad_frames: 0,
            limits: ConnLimits::default(),
        };
        match client.start(&channels, &groups, &since).await {
            Ok(resumed) => {
                let tops: Positions = channels
                    .iter()
                    .zip(&resumed)
                    .map(|(c, r)| (c.clone(), r.top.clone()))
                    .collect();
                let welcome = client.welcome(heartbeat, &tops, &since, &channels, &resumed);
                // Where the connection really is before the replay: a
                // recovered channel is still at the client's own position
                // until its replayed messages are written (an SSE stream's
                // first `id:` must not skip them if it breaks right after
                // `welcome`); every other channel is at its top.
                let positions: Positions = channels
                    .iter()
                    .zip(&resumed)
                    .map(|(c, r)| {
                        let at = match (r.recovered, since.get(c)) {
                            (Some(true), Some(p)) => p.clone(),
                            _ => r.top.clone(),
                        };
                        (c.clone(), at)
                    })
                    .collect();
                for (channel, r) in channels.iter().zip(resumed) {
                    r.finish(&client.session, channel);
                }
                Ok(Connected {
                    client,
                    welcome,
                    positions,
                })
            }
            Err(e) => {
                client.disconnect().await;
                Err(ConnectError::Unavailable(e))
            }
        }
    }

    /// Where the session starts on each of `channels` (its user channel,
    /// `all`, then `groups`, in that order), joining the groups.
    async fn start(
        &self,
        channels: &[Channel],
        groups: &[String],
        since: &Positions,
    ) -> Result<Vec<Resumed>, NodeError> {
        let node = &self.node;
        let (user, all) = (&channels[0], &channels[1]);
        let (user, all, groups) = tokio::join!(
            node.resume(user, since.get(user)),
            node.resume(all, since.get(all)),
            futures_util::future::join_all(
                groups
                    .iter()
                    .map(|g| { node.join(&self.session, g, since.get(&Channel::group(g))) })
            ),
        );
        let mut resumed = vec![user?, all?];
        for g in groups {
            resumed.push(g?);
        }
        Ok(resumed)
    }

    /// The `welcome` frame: positions of every channel, and for those the
    /// client gave a position for, whether it recovered.
    fn welcome(
        &self,
        heartbeat: Duration,
        positions: &Positions,
        since: &Positions,
        channels: &[Channel],
        resumed: &[Resumed],
    ) -> String {
        let recovered: BTreeMap<Channel, bool> = channels
            .iter()
            .zip(resumed)
            .filter(|(c, _)| since.contains_key(*c))
            .map(|(c, r)| (c.clone(), r.recovered.unwrap_or(false)))
            .collect();
        protocol::welcome_frame(&Welcome {
            conn: &format!("{}-{}", self.node.id(), self.session.id()),
            uid: &self.creds.uid,
            node: self.node.id(),
            exp: self.creds.exp,
            heartbeat: heartbeat.as_secs(),
            positions,
            recovered: (!since.is_empty()).then_some(&recovered),
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn uid(&self) -> &str {
        &self.creds.uid
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
        let result = match parse_client_frame(text, self.node.max_json_depth()) {
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

    /// Counts one frame the client sent (of any kind, before it is read)
    /// against `--client-frame-rate`: a connection over it is told so and
    /// closed with 3013.
    pub fn admit_frame(&mut self) -> Outcome {
        match self.limits.check(Limit::Frames, self.node.limits()) {
            Ok(()) => Outcome::Continue,
            Err(wait) => {
                let wait_ms = limits::ceil_ms(wait);
                self.reply(
                    FrameError::new(
                        None,
                        ErrorCode::RateLimited,
                        "frames sent faster than this server allows; closing",
                    )
                    .retry_after_ms(wait_ms)
                    .frame(),
                );
                Outcome::Close(CloseReason::too_many_requests(wait_ms))
            }
        }
    }

    /// Counts one `kind` frame against its rate limit.
    fn check_rate(&mut self, kind: Limit, id: Option<i64>) -> Result<(), FrameError> {
        self.limits.check(kind, self.node.limits()).map_err(|wait| {
            FrameError::new(
                id,
                ErrorCode::RateLimited,
                format!(
                    "`{}` frames sent faster than this server allows; nothing was done",
                    kind.as_str()
                ),
            )
            .retry_after_ms(limits::ceil_ms(wait))
        })
    }

    /// Answers a bad frame with its `error`; the 17th in a row closes the
    /// connection as a protocol violation. A rate-limited frame is not a
    /// bad one: the client only has to slow down.
    pub fn refuse(&mut self, e: &FrameError) -> Outcome {
        if e.code == ErrorCode::RateLimited {
            self.reply(e.frame());
            return Outcome::Continue;
        }
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
            ClientFrame::Join { id, group, since } => {
                if !self.creds.groups.allows(&group) {
                    return Err(forbidden_join(id, &group));
                }
                self.check_rate(Limit::Join, id)?;
                let resumed = self
                    .node
                    .join(&self.session, &group, since.as_ref())
                    .await
                    .map_err(|e| node_error(id, &e))?;
                self.reply(protocol::joined_frame(
                    id,
                    &group,
                    Some(&resumed.top),
                    resumed.recovered,
                ));
                resumed.finish(&self.session, &Channel::group(&group));
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
                self.check_rate(Limit::Publish, id)?;
                let publication =
                    self.node
                        .publication(event, data, Some(self.creds.uid.to_string()));
                let targets = Targets {
                    groups: vec![group],
                    ..Targets::default()
                };
                self.node
                    .publish(&targets, publication, None)
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
