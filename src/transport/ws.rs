//! The WebSocket transport: `GET /ws`.
//!
//! The handler checks the Origin and a `?token=` before upgrading. Each
//! connection then runs as one task that owns the socket and `select!`s
//! over: frames from the client, the session's outbound queue, and one
//! timer (next heartbeat, idle deadline or token expiry, whichever is
//! first). One task and one timer per connection keep the footprint small;
//! the writer takes everything queued, feeds it into the socket and
//! flushes once.

use std::time::Duration;

use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        rejection::QueryRejection,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, stream::FusedStream};
use serde::Deserialize;
use tokio::time::{Instant, sleep_until, timeout};

use crate::{
    api::error::ApiError,
    auth::{AuthError, Credentials},
    ids::{jitter_ms, unix_ms},
    metrics,
    node::{NodeError, Targets},
    protocol::{
        self, ClientFrame, CloseReason, ErrorCode, FrameError, Welcome, parse_client_frame,
    },
    session::Session,
    state::AppState,
};

/// Consecutive bad frames tolerated before the connection is closed 3501.
pub const MAX_BAD_FRAMES: u32 = 16;

/// Longest wait for the client's close reply after our close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// tungstenite's own limit is this many times `max_frame`: frames between
/// the two are read whole and refused by us with a clean 1009 close;
/// tungstenite aborts beyond it, which leaves unread input (see `finish`).
const HARD_FRAME_FACTOR: usize = 4;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// `GET /ws`: checks Origin and `?token=`, then upgrades.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if state.shutdown.is_triggered() {
        metrics::connection_rejected("shutting_down");
        return ApiError::shutting_down().into_response();
    }
    if !origin_allowed(&state, &headers) {
        metrics::connection_rejected("origin");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this Origin may not open WebSocket connections (see --allowed-origins)",
        )
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            metrics::connection_rejected("not_websocket");
            return ApiError::new(
                rejection.status(),
                "websocket_required",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    let token = match query {
        Ok(Query(q)) => q.token,
        Err(rejection) => {
            metrics::connection_rejected("bad_request");
            return ApiError::bad_request("invalid_query", rejection.body_text()).into_response();
        }
    };
    let creds = match token.map(|t| state.auth.verify(&t)) {
        None => None,
        Some(Ok(creds)) => Some(creds),
        Some(Err(e)) => {
            metrics::connection_rejected("unauthorized");
            let code = match e {
                AuthError::Expired => "token_expired",
                _ => "invalid_token",
            };
            return ApiError::unauthorized(code, e.to_string()).into_response();
        }
    };
    let cfg = &state.cfg;
    let tracker = state.shutdown.tracker().clone();
    upgrade
        .read_buffer_size(cfg.ws_read_buffer as usize)
        .write_buffer_size(cfg.ws_write_buffer as usize)
        .max_write_buffer_size(max_write_buffer(cfg))
        .max_message_size((cfg.max_frame as usize).saturating_mul(HARD_FRAME_FACTOR))
        .max_frame_size((cfg.max_frame as usize).saturating_mul(HARD_FRAME_FACTOR))
        .on_upgrade(move |socket| tracker.track_future(run(socket, state, creds)))
}

/// tungstenite's hard cap on buffered outgoing bytes. Our own queue is the
/// real bound; this only has to exceed the write buffer (tungstenite
/// requires it) plus what one flush may hold: a queue's worth and one
/// large message published straight to Redis.
fn max_write_buffer(cfg: &crate::config::Config) -> usize {
    const LARGEST_MESSAGE: usize = 16 << 20;
    (cfg.ws_write_buffer as usize)
        .saturating_add((cfg.outbound_queue as usize).saturating_mul(2))
        .saturating_add(LARGEST_MESSAGE)
}

/// Browsers always send Origin; other clients may not and are let through.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let cfg = &state.cfg;
    if cfg.dev || cfg.any_origin() {
        return true;
    }
    let listed = cfg
        .allowed_origins
        .iter()
        .any(|o| o.trim().trim_end_matches('/').eq_ignore_ascii_case(origin));
    let same = match (
        origin.split_once("://"),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) {
        (Some((scheme, origin_host)), Some(host)) => without_default_port(scheme, origin_host)
            .eq_ignore_ascii_case(without_default_port(scheme, host)),
        _ => false,
    };
    listed || same
}

/// `host:80` is `host` for http(s)/ws(s) origins (and `host:443` for the
/// secure ones): some proxies and clients spell the default port out.
fn without_default_port<'a>(scheme: &str, host: &'a str) -> &'a str {
    let default = if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        ":443"
    } else {
        ":80"
    };
    host.strip_suffix(default).unwrap_or(host)
}

/// One connection, from upgrade to close.
async fn run(mut socket: WebSocket, state: AppState, creds: Option<Credentials>) {
    let creds = match creds {
        Some(c) => c,
        None => match authenticate(&mut socket, &state).await {
            Ok(c) => c,
            Err(reason) => {
                metrics::connection_rejected(match reason {
                    CloseReason::Shutdown { .. } => "shutting_down",
                    CloseReason::MessageTooBig | CloseReason::ProtocolViolation => "bad_frame",
                    _ => "auth_failed",
                });
                finish(&mut socket, reason, state.cfg.write_timeout).await;
                return;
            }
        },
    };
    let session = match state.node.connect(creds.uid.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(uid = %creds.uid, error = %e, "cannot register connection");
            metrics::connection_rejected("broker_unavailable");
            let _ = socket
                .send(text(protocol::error_frame(
                    None,
                    ErrorCode::BrokerUnavailable,
                    "the message broker is unavailable; reconnect later",
                )))
                .await;
            finish(
                &mut socket,
                CloseReason::unavailable(),
                state.cfg.write_timeout,
            )
            .await;
            return;
        }
    };
    metrics::connection_opened();
    let mut conn = Conn::new(socket, state, creds, session);
    let write_timeout = conn.state.cfg.write_timeout;
    let ended = match conn.serve().await {
        Some(reason) => {
            finish(&mut conn.socket, reason, write_timeout).await;
            (reason.as_str(), reason.code_str())
        }
        // The client closed: send the close reply tungstenite has queued.
        None => {
            let _ = timeout(write_timeout, conn.socket.flush()).await;
            if conn.peer_closed {
                ("client_closed", "none")
            } else {
                ("connection_lost", "none")
            }
        }
    };
    conn.state.node.disconnect(&conn.session).await;
    metrics::connection_closed(ended.0, ended.1);
}

/// Waits for the `auth` frame of a client that had no `?token=`.
async fn authenticate(
    socket: &mut WebSocket,
    state: &AppState,
) -> Result<Credentials, CloseReason> {
    let deadline = Instant::now() + state.cfg.auth_timeout;
    let fail = |code: ErrorCode, message: String| {
        (
            FrameError::new(None, code, message),
            CloseReason::Unauthorized,
        )
    };
    let (error, reason) = loop {
        let msg = tokio::select! {
            () = state.shutdown.token().cancelled() => {
                return Err(CloseReason::shutdown());
            }
            () = sleep_until(deadline) => break fail(
                ErrorCode::AuthTimeout,
                format!("no auth frame within {}", humantime::format_duration(state.cfg.auth_timeout)),
            ),
            msg = socket.recv() => msg,
        };
        match msg {
            None => return Err(CloseReason::Unauthorized),
            Some(Err(e)) => match read_error_reason(&e) {
                Some(CloseReason::MessageTooBig) => {
                    break (too_big_error(), CloseReason::MessageTooBig);
                }
                Some(reason) => break (protocol_error(), reason),
                None => return Err(CloseReason::Unauthorized),
            },
            Some(Ok(Message::Text(t))) if t.len() > state.cfg.max_frame as usize => {
                break (too_big_error(), CloseReason::MessageTooBig);
            }
            Some(Ok(Message::Text(t))) => match parse_client_frame(&t) {
                Ok(ClientFrame::Auth { token }) => match state.auth.verify(&token) {
                    Ok(creds) => return Ok(creds),
                    Err(e) => break fail(auth_error_code(&e), e.to_string()),
                },
                Ok(_) => {
                    break fail(
                        ErrorCode::AuthRequired,
                        "the first frame must be {\"type\":\"auth\",\"token\":\"...\"}".into(),
                    );
                }
                Err(e) => break (e, CloseReason::Unauthorized),
            },
            Some(Ok(Message::Binary(_))) => {
                break fail(
                    ErrorCode::BinaryNotSupported,
                    "frames are JSON text; binary frames are not supported".into(),
                );
            }
            Some(Ok(Message::Close(_))) => return Err(CloseReason::Unauthorized),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        }
    };
    let _ = timeout(state.cfg.write_timeout, socket.send(text(error.frame()))).await;
    Err(reason)
}

fn auth_error_code(e: &AuthError) -> ErrorCode {
    match e {
        AuthError::Expired => ErrorCode::TokenExpired,
        _ => ErrorCode::InvalidToken,
    }
}

fn protocol_error() -> FrameError {
    FrameError::new(
        None,
        ErrorCode::InvalidFrame,
        "WebSocket protocol error (invalid UTF-8 or a malformed frame)",
    )
}

fn too_big_error() -> FrameError {
    FrameError::new(
        None,
        ErrorCode::MessageTooBig,
        "frame is over the size limit",
    )
}

/// Maps a read error to a close we can still send, or `None` when the
/// connection is simply gone.
fn read_error_reason(e: &axum::Error) -> Option<CloseReason> {
    use tungstenite::Error as WsError;
    let inner = e.source_ws()?;
    match inner {
        WsError::Capacity(_) => Some(CloseReason::MessageTooBig),
        // The peer closed TCP without a close frame: it is gone, not rude.
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) | WsError::Utf8(_) => Some(CloseReason::ProtocolViolation),
        _ => None,
    }
}

trait SourceWs {
    fn source_ws(&self) -> Option<&tungstenite::Error>;
}

impl SourceWs for axum::Error {
    fn source_ws(&self) -> Option<&tungstenite::Error> {
        std::error::Error::source(self).and_then(|s| s.downcast_ref::<tungstenite::Error>())
    }
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Sends `bye` and the close frame, then waits briefly for the client's
/// close reply so the closing handshake completes. When tungstenite has
/// already given up reading (an over-limit frame), input is left unread and
/// dropping the socket would send a TCP reset that can destroy our close
/// frame before the client reads it, so the linger then simply waits.
async fn finish(socket: &mut WebSocket, reason: CloseReason, write_timeout: Duration) {
    let reading_stopped = socket.is_terminated();
    let close = async {
        if reason != CloseReason::WriteError {
            socket.feed(text(reason.bye_frame())).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code: reason.code(),
                reason: Utf8Bytes::from(reason.as_str()),
            })))
            .await
    };
    if let Ok(Ok(())) = timeout(write_timeout, close).await {
        let _ = timeout(CLOSE_LINGER, async {
            if reading_stopped {
                std::future::pending::<()>().await;
            }
            // Until the client's close reply (or the stream) ends.
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

/// Rounds a ping time up to the next slot of a process-wide grid, the slot
/// being a 25th of the heartbeat (1 s for the default 25 s, at least 1 ms).
/// Pings of many connections then fire in the same timer tick and are
/// written in one busy stretch, instead of waking the runtime's threads
/// (epoll, futex, context switches) for one or two pings each
/// millisecond: that halved the CPU an idle connection costs (see
/// docs/benchmarks.md). The jitter of the first ping still spreads the
/// connections over the slots.
fn ping_slot(at: Instant, heartbeat: Duration) -> Instant {
    static GRID: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let grid = *GRID.get_or_init(Instant::now);
    let slot = (heartbeat / 25).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let since = at.saturating_duration_since(grid).as_nanos();
    let slot_ns = slot.as_nanos().max(1);
    let slots = since.div_ceil(slot_ns);
    grid + Duration::from_nanos(u64::try_from(slots * slot_ns).unwrap_or(u64::MAX))
}

/// A registered, authenticated connection.
struct Conn {
    socket: WebSocket,
    state: AppState,
    creds: Credentials,
    session: Session,
    last_recv: Instant,
    next_ping: Instant,
    /// Bad frames in a row; reset by a good one.
    bad_frames: u32,
    /// The client sent a close frame (rather than vanishing).
    peer_closed: bool,
}

impl Conn {
    fn new(socket: WebSocket, state: AppState, creds: Credentials, session: Session) -> Self {
        let now = Instant::now();
        let hb = state.cfg.heartbeat.as_millis() as u64;
        // The first ping lands anywhere in [hb/2, hb) so a reconnect storm
        // does not ping in lockstep ever after.
        let next_ping = ping_slot(
            now + Duration::from_millis(jitter_ms(hb / 2, hb)),
            state.cfg.heartbeat,
        );
        Self {
            socket,
            state,
            creds,
            session,
            last_recv: now,
            next_ping,
            bad_frames: 0,
            peer_closed: false,
        }
    }

    fn expiry(&self) -> Instant {
        let left_ms = (self.creds.exp * 1000).saturating_sub(unix_ms());
        Instant::now() + Duration::from_millis(left_ms)
    }

    /// Runs until the connection must end: `Some(reason)` to send a close,
    /// `None` when the client is gone or already closed.
    async fn serve(&mut self) -> Option<CloseReason> {
        let welcome = protocol::welcome_frame(&Welcome {
            conn: &format!("{}-{}", self.state.node.id(), self.session.id()),
            uid: &self.creds.uid,
            node: self.state.node.id(),
            exp: self.creds.exp,
            heartbeat: self.state.cfg.heartbeat.as_secs(),
        });
        if self
            .write_with_timeout([text(welcome)], true)
            .await
            .is_err()
        {
            return None;
        }
        if self.state.shutdown.is_triggered() {
            return Some(CloseReason::shutdown());
        }
        let mut expiry = self.expiry();
        // One timer for the connection's life. Frames from the client only
        // move the idle deadline later, so the timer is not reset for them:
        // at worst it fires early and `on_timer` finds nothing due.
        let timer = sleep_until(self.next_wake(expiry));
        tokio::pin!(timer);
        loop {
            let outcome = tokio::select! {
                // The handlers are boxed: an idle connection's future then
                // holds only the three waits, not the largest handler's state
                // (a write with its timeout, a join through the broker).
                () = self.session.woken() => Box::pin(self.flush_queue(true)).await,
                msg = self.socket.recv() => Box::pin(self.on_message(msg)).await,
                () = &mut timer => {
                    let step = Box::pin(self.on_timer(expiry)).await;
                    timer.as_mut().reset(self.next_wake(expiry));
                    step
                }
            };
            match outcome {
                Step::Continue => {}
                Step::Refreshed => {
                    expiry = self.expiry();
                    timer.as_mut().reset(self.next_wake(expiry));
                }
                Step::Close(reason) => return Some(self.before_close(reason).await),
                Step::Gone => return None,
            }
        }
    }

    /// Sends what is still queued (replies such as the error that caused
    /// the close) unless the client cannot take it. Returns the reason to
    /// close with, which the queue may have replaced (a slow consumer).
    async fn before_close(&mut self, reason: CloseReason) -> CloseReason {
        if matches!(
            reason,
            CloseReason::SlowConsumer { .. } | CloseReason::WriteError
        ) {
            return reason;
        }
        self.session.close(reason);
        match self.flush_queue(false).await {
            Step::Close(r) => r,
            _ => reason,
        }
    }

    /// Writes what is queued as one batch and flushes once. With
    /// `abort_on_close` (normal operation) a close requested meanwhile (a
    /// slow consumer) stops the write, and only one batch is written per
    /// wake-up so a busy stream cannot starve reading the socket; without
    /// it (the session is closing, nothing new arrives) everything left is
    /// written.
    async fn flush_queue(&mut self, abort_on_close: bool) -> Step {
        loop {
            let batch = self.session.take();
            if batch.frames.is_empty() {
                return batch.close.map_or(Step::Continue, Step::Close);
            }
            let count = batch.frames.len();
            let oldest_ts = batch
                .frames
                .iter()
                .find(|f| f.ts_ms > 0)
                .map_or(0, |f| f.ts_ms);
            // Fed straight from the queue: no list of messages per write.
            let frames = batch.frames.into_iter().map(|f| Message::Text(f.text));
            if let Err(step) = self.write_with_timeout(frames, abort_on_close).await {
                return step;
            }
            metrics::frames_written(count, oldest_ts);
            if let Some(reason) = batch.close {
                return Step::Close(reason);
            }
            if abort_on_close {
                // Frames pushed meanwhile have left their wake-up for the
                // next turn of the main loop.
                return Step::Continue;
            }
        }
    }

    /// Feeds `frames` and flushes once. Gives up when the write makes no
    /// progress within the write timeout, or when the session is closed
    /// meanwhile (a slow consumer is not waited for).
    async fn write_with_timeout(
        &mut self,
        frames: impl IntoIterator<Item = Message>,
        abort_on_close: bool,
    ) -> Result<(), Step> {
        let write_timeout = self.state.cfg.write_timeout;
        // Borrowed, not cloned: this runs once per socket write.
        let session = &self.session;
        let socket = &mut self.socket;
        let write = async {
            for f in frames {
                socket.feed(f).await?;
            }
            socket.flush().await
        };
        let closed = async {
            if !abort_on_close {
                std::future::pending::<()>().await;
            }
            // Not `woken()`: that would take the wake-up of frames pushed
            // during the write, and they would stay queued.
            loop {
                session.close_requested().await;
                if session.is_closing() {
                    break;
                }
            }
        };
        tokio::select! {
            r = timeout(write_timeout, write) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    tracing::debug!(conn = session.id(), error = %e, "write failed");
                    Err(Step::Gone)
                }
                Err(_) => {
                    tracing::debug!(conn = session.id(), "write timed out");
                    Err(Step::Close(CloseReason::WriteError))
                }
            },
            () = closed => Err(match session.take().close {
                Some(reason) => Step::Close(reason),
                None => Step::Continue,
            }),
        }
    }

    /// The earliest of: next heartbeat, idle deadline, token expiry.
    fn next_wake(&self, expiry: Instant) -> Instant {
        self.next_ping
            .min(self.last_recv + self.state.cfg.idle_timeout)
            .min(expiry)
    }

    async fn on_timer(&mut self, expiry: Instant) -> Step {
        let now = Instant::now();
        let idle_at = self.last_recv + self.state.cfg.idle_timeout;
        if now >= expiry {
            return Step::Close(CloseReason::TokenExpired);
        }
        if now >= idle_at {
            return Step::Close(CloseReason::IdleTimeout);
        }
        if now >= self.next_ping {
            self.next_ping = ping_slot(now + self.state.cfg.heartbeat, self.state.cfg.heartbeat);
            if let Err(step) = self
                .write_with_timeout([Message::Ping(Default::default())], true)
                .await
            {
                return step;
            }
        }
        Step::Continue
    }

    async fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Step {
        self.last_recv = Instant::now();
        let text = match msg {
            None => return Step::Gone,
            Some(Ok(Message::Close(_))) => {
                self.peer_closed = true;
                return Step::Gone;
            }
            Some(Err(e)) => {
                return match read_error_reason(&e) {
                    Some(reason) => {
                        self.reply(if reason == CloseReason::MessageTooBig {
                            too_big_error().frame()
                        } else {
                            protocol_error().frame()
                        });
                        Step::Close(reason)
                    }
                    None => {
                        tracing::debug!(conn = self.session.id(), error = %e, "read failed");
                        Step::Gone
                    }
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Step::Continue,
            Some(Ok(Message::Binary(b))) if b.len() > self.state.cfg.max_frame as usize => {
                self.reply(too_big_error().frame());
                return Step::Close(CloseReason::MessageTooBig);
            }
            Some(Ok(Message::Binary(_))) => {
                return self.bad_frame(&FrameError::new(
                    None,
                    ErrorCode::BinaryNotSupported,
                    "frames are JSON text; binary frames are not supported",
                ));
            }
            Some(Ok(Message::Text(t))) if t.len() > self.state.cfg.max_frame as usize => {
                self.reply(too_big_error().frame());
                return Step::Close(CloseReason::MessageTooBig);
            }
            Some(Ok(Message::Text(t))) => t,
        };
        match parse_client_frame(&text) {
            Ok(frame) => match self.on_frame(frame).await {
                Ok(step) => {
                    self.bad_frames = 0;
                    step
                }
                Err(e) => self.bad_frame(&e),
            },
            Err(e) => self.bad_frame(&e),
        }
    }

    fn bad_frame(&mut self, e: &FrameError) -> Step {
        self.bad_frames += 1;
        if self.bad_frames > MAX_BAD_FRAMES {
            self.reply(protocol::error_frame(
                e.id,
                ErrorCode::TooManyErrors,
                "too many bad frames in a row",
            ));
            return Step::Close(CloseReason::ProtocolViolation);
        }
        self.reply(e.frame());
        Step::Continue
    }

    fn reply(&self, frame: String) {
        // Replies share the queue (and its order) with messages; a full
        // queue means the session is already closing as a slow consumer.
        let _ = self.session.push(&Utf8Bytes::from(frame), 0);
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<Step, FrameError> {
        let node = &self.state.node;
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
                node.join(&self.session, &group)
                    .await
                    .map_err(|e| node_error(id, &e))?;
                self.reply(protocol::joined_frame(id, &group));
            }
            ClientFrame::Leave { id, group } => {
                node.leave(&self.session, &group).await;
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
                let publication = node.publication(event, data, Some(self.creds.uid.to_string()));
                let targets = Targets {
                    groups: vec![group],
                    ..Targets::default()
                };
                node.publish(&targets, publication)
                    .await
                    .map_err(|e| node_error(id, &e))?;
                self.reply(protocol::ack_frame(id));
            }
            ClientFrame::Refresh { id, token } => {
                let creds = self
                    .state
                    .auth
                    .verify(&token)
                    .map_err(|e| FrameError::new(id, auth_error_code(&e), e.to_string()))?;
                if creds.uid != self.creds.uid {
                    return Err(FrameError::new(
                        id,
                        ErrorCode::SubMismatch,
                        "a refresh token must have the same `sub` as the connection",
                    ));
                }
                self.reply(protocol::refreshed_frame(id, creds.exp));
                self.creds = creds;
                return Ok(Step::Refreshed);
            }
        }
        Ok(Step::Continue)
    }
}

fn node_error(id: Option<i64>, e: &NodeError) -> FrameError {
    let code = match e {
        NodeError::TooManyGroups(_) => ErrorCode::TooManyGroups,
        NodeError::Broker(_) | NodeError::Closed => ErrorCode::BrokerUnavailable,
    };
    FrameError::new(id, code, e.to_string())
}

/// What the connection loop does next.
enum Step {
    Continue,
    /// The token was replaced: recompute the expiry deadline.
    Refreshed,
    Close(CloseReason),
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_rounded_up_to_shared_slots() {
        let hb = Duration::from_secs(25);
        let slot = Duration::from_secs(1);
        let t = Instant::now() + Duration::from_secs(3);
        let a = ping_slot(t, hb);
        assert!(a >= t && a < t + slot, "{a:?} not in [{t:?}, +1s)");
        // Times within one slot share it; the next slot is one slot later.
        assert_eq!(ping_slot(a - Duration::from_millis(1), hb), a);
        assert_eq!(ping_slot(a + Duration::from_millis(1), hb), a + slot);
        // Short heartbeats (tests) get short slots, never zero.
        let short = Duration::from_millis(2);
        let b = ping_slot(t, short);
        assert!(b >= t && b <= t + Duration::from_millis(1));
    }
}
