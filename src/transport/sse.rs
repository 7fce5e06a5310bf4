//! The Server-Sent Events transport: `GET /sse` (`text/event-stream`).
//!
//! One-way: the client says everything in the request (the token in
//! `?token=` or `Authorization: Bearer`, its groups in `?groups=a,b`, where
//! it was in `Last-Event-ID` or `?since=`) and then only reads. Every
//! event's `data:` is the JSON frame a WebSocket client gets (`welcome`,
//! `message`, `bye`…), so one parser serves both. Every event that moves a
//! channel's position carries an `id:` holding the connection's positions
//! (the compact `since` form), so a browser's `EventSource` resumes every
//! channel by itself when it reconnects with `Last-Event-ID`.
//!
//! The connection is a task of its own (on the shutdown tracker) that
//! feeds the response body through a small channel: a client that stops
//! reading makes the task's sends time out (`--write-timeout`), and the
//! task ends and unregisters, whatever the socket still holds.

use std::{convert::Infallible, fmt::Write as _, sync::Arc, time::Duration};

use axum::{
    Extension,
    body::{Body, Bytes},
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until, timeout},
};

use crate::{
    auth::Credentials,
    client::{Client, ConnectError, Connected, Start},
    config::Config,
    http_error::HttpError,
    ids::jitter_ms,
    metrics::{self, Ended, Rejected, Transport},
    protocol::{
        CloseReason, ErrorCode, NAME_RULE, Positions, format_since_compact, is_valid_name,
        parse_since_compact,
    },
    session::Outbound,
    state::{AppState, ConnectionSlot},
    transport::heartbeat_slot,
};

/// Events waiting for the socket. Small: the session's queue is the real
/// buffer (and its bound); this only decouples the task from hyper.
const BODY_BUFFER: usize = 16;

#[derive(Debug, Deserialize)]
pub struct SseQuery {
    token: Option<String>,
    /// Groups to join, comma-separated.
    groups: Option<String>,
    /// Where the client was (compact form), when there is no
    /// `Last-Event-ID`.
    since: Option<String>,
}

/// `GET /sse`: checks everything a WebSocket upgrade checks, registers the
/// connection, and streams its frames.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, QueryRejection>,
    slot: Option<Extension<ConnectionSlot>>,
) -> Response {
    let connected = match open(&state, &headers, query).await {
        Ok(c) => c,
        Err((reason, error)) => {
            metrics::connection_rejected(reason);
            return error.into_response();
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let cfg = state.cfg.clone();
    let tracker = state.shutdown.tracker().clone();
    let shutdown = state.shutdown.clone();
    let Connected {
        client,
        welcome,
        positions,
    } = connected;
    // Built before the task and boxed: the task's future lives as long as
    // the stream and should hold only a pointer to it.
    let mut conn = Box::new(SseConn {
        client,
        cfg,
        tx,
        positions,
    });
    metrics::connection_opened(Transport::Sse);
    tracker.spawn(async move {
        let ended = conn.serve(welcome, &shutdown).await;
        Box::pin(conn.client.disconnect()).await;
        metrics::connection_closed(Transport::Sse, ended);
        // The stream kept its place under --max-connections until now.
        drop(slot);
    });
    let body = Body::from_stream(tokio_stream_of(rx));
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = headers.get(header::ORIGIN) {
        // The Origin passed the check: let the page read the stream.
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

/// The response body: the task's events, as they come.
fn tokio_stream_of(
    mut rx: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok)))
}

type Refusal = (Rejected, HttpError);

/// The checks before the stream starts, then registration.
async fn open(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<Query<SseQuery>, QueryRejection>,
) -> Result<Connected, Refusal> {
    if state.shutdown.is_triggered() {
        return Err((Rejected::ShuttingDown, HttpError::shutting_down()));
    }
    if !state.origins.admits(headers) {
        return Err((
            Rejected::Origin,
            HttpError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this Origin may not open connections (see --allowed-origins)",
            ),
        ));
    }
    let Query(q) = query.map_err(|r| {
        (
            Rejected::BadRequest,
            HttpError::bad_request("invalid_query", r.body_text()),
        )
    })?;
    let creds = credentials(state, headers, q.token.as_deref())?;
    let groups = groups(q.groups.as_deref(), state.cfg.max_groups)?;
    // EventSource sends the id of the last event it got when it reconnects.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let since = match last_event_id.or(q.since.as_deref()) {
        None => Positions::new(),
        Some(text) => parse_since_compact(text.trim()).map_err(|m| {
            (
                Rejected::BadRequest,
                HttpError::bad_request(ErrorCode::InvalidPosition.as_str(), m),
            )
        })?,
    };
    let start = Start { groups, since };
    let connected = Client::connect(
        &state.node,
        state.auth.clone(),
        creds,
        start,
        state.cfg.heartbeat,
    )
    .await;
    connected.map_err(|e| match e {
        ConnectError::Refused(e) => {
            let status = match e.code {
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            (
                Rejected::AuthFailed,
                HttpError::new(status, e.code.as_str(), e.message),
            )
        }
        ConnectError::Limited(e) => (
            Rejected::UserLimit,
            HttpError::new(StatusCode::TOO_MANY_REQUESTS, e.code.as_str(), e.message).retry_after(
                std::time::Duration::from_millis(crate::protocol::RETRY_AFTER_LIMIT_MS),
            ),
        ),
        ConnectError::Unavailable(e) => {
            tracing::warn!(error = %e, "cannot register connection");
            (Rejected::BrokerUnavailable, HttpError::from(e))
        }
    })
}

fn credentials(
    state: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Credentials, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = token.or(bearer) else {
        return Err((
            Rejected::Unauthorized,
            HttpError::unauthorized(
                ErrorCode::AuthRequired.as_str(),
                "give a token in ?token= or `Authorization: Bearer <token>`",
            ),
        ));
    };
    state
        .auth
        .verify(token)
        .map_err(|e| (Rejected::Unauthorized, HttpError::from(e)))
}

fn groups(list: Option<&str>, max_groups: usize) -> Result<Vec<String>, Refusal> {
    let mut groups: Vec<String> = Vec::new();
    for name in list.unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() || groups.iter().any(|g| g == name) {
            continue;
        }
        if !is_valid_name(name) {
            return Err((
                Rejected::BadRequest,
                HttpError::bad_request(
                    ErrorCode::InvalidGroup.as_str(),
                    format!("group names are {NAME_RULE}"),
                ),
            ));
        }
        groups.push(name.to_owned());
    }
    if groups.len() > max_groups {
        return Err((
            Rejected::BadRequest,
            HttpError::bad_request(
                ErrorCode::TooManyGroups.as_str(),
                format!("a connection may be in at most {max_groups} groups"),
            ),
        ));
    }
    Ok(groups)
}

/// One SSE connection, from its first event to its last.
struct SseConn {
    client: Client,
    cfg: Arc<Config>,
    /// Events into the response body; the body (hyper) receives. Closed
    /// when the client goes away.
    tx: mpsc::Sender<Bytes>,
    /// Where the connection is on each channel: the `id:` of its events.
    positions: Positions,
}

/// Why writing stopped.
enum Stop {
    /// Close with this reason (`bye`, then the end of the stream).
    Close(CloseReason),
    /// The client went away, or stopped reading: nothing more can be sent.
    Gone(Ended),
}

impl SseConn {
    async fn serve(&mut self, welcome: String, shutdown: &crate::shutdown::Shutdown) -> Ended {
        let first = event(Some(&format_since_compact(&self.positions)), None, &welcome);
        drop(welcome);
        // The one-off steps are boxed: only the loop's waits should count
        // in the stream's long-lived future.
        if let Err(Stop::Gone(e)) = Box::pin(self.send(first)).await {
            return e;
        }
        let reason = if shutdown.is_triggered() {
            CloseReason::shutdown()
        } else {
            match self.stream().await {
                Stop::Close(reason) => reason,
                Stop::Gone(e) => return e,
            }
        };
        Box::pin(self.close(reason)).await
    }

    /// Writes the session's frames until the connection must end.
    async fn stream(&mut self) -> Stop {
        let heartbeat = self.cfg.heartbeat;
        let hb_ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
        let mut next_ping = heartbeat_slot(
            Instant::now() + Duration::from_millis(jitter_ms(hb_ms / 2, hb_ms)),
            heartbeat,
        );
        let expiry = self.client.expires_at();
        loop {
            tokio::select! {
                () = self.client.session().woken() => {
                    let batch = self.client.session().take();
                    for frame in batch.frames {
                        if let Err(stop) = self.send_frame(frame).await {
                            return stop;
                        }
                    }
                    if let Some(reason) = batch.close {
                        return Stop::Close(reason);
                    }
                }
                () = sleep_until(next_ping.min(expiry)) => {
                    if Instant::now() >= expiry {
                        return Stop::Close(CloseReason::TokenExpired);
                    }
                    next_ping = heartbeat_slot(Instant::now() + heartbeat, heartbeat);
                    // A comment line: keeps proxies from timing the stream out.
                    if let Err(stop) = self.send(Bytes::from_static(b":\n\n")).await {
                        return stop;
                    }
                }
                () = self.tx.closed() => return Stop::Gone(Ended::ClientClosed),
            }
        }
    }

    /// Writes what is still queued (unless the client cannot take it),
    /// then `bye` with its retry hint, and ends the stream.
    async fn close(&mut self, reason: CloseReason) -> Ended {
        let mut reason = reason;
        if !matches!(reason, CloseReason::SlowConsumer { .. }) {
            self.client.session().close(reason);
            let batch = self.client.session().take();
            for frame in batch.frames {
                if let Err(Stop::Gone(e)) = self.send_frame(frame).await {
                    return e;
                }
            }
            reason = batch.close.unwrap_or(reason);
        }
        let retry = reason.retry_after_ms();
        let mut bye = String::new();
        if reason.reconnect() && retry > 0 {
            let _ = writeln!(bye, "retry: {retry}");
        }
        bye.push_str(&String::from_utf8_lossy(&event(
            None,
            None,
            &reason.bye_frame(),
        )));
        match self.send(Bytes::from(bye)).await {
            Err(Stop::Gone(e)) => e,
            _ => Ended::Closed(reason),
        }
    }

    async fn send_frame(&mut self, frame: Outbound) -> Result<(), Stop> {
        let id = frame.position.as_ref().map(|p| {
            self.positions.insert(p.channel.clone(), p.position.clone());
            format_since_compact(&self.positions)
        });
        metrics::frames_written(1, frame.ts_ms);
        self.send(event(id.as_deref(), None, &frame.text)).await?;
        if let Some(trace) = &frame.trace {
            trace.written();
        }
        Ok(())
    }

    /// Hands one event to the response body, waiting at most the write
    /// timeout for room: a client that stops reading is let go.
    async fn send(&self, bytes: Bytes) -> Result<(), Stop> {
        match timeout(self.cfg.write_timeout, self.tx.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone(Ended::ClientClosed)),
            Err(_) => {
                tracing::debug!(conn = self.client.session().id(), "SSE write timed out");
                Err(Stop::Gone(Ended::Closed(CloseReason::WriteError)))
            }
        }
    }
}

/// One event: an optional `id:` and `event:` line, then the frame as one
/// `data:` line (frames are single-line JSON).
fn event(id: Option<&str>, kind: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + id.map_or(0, str::len) + 16);
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    if let Some(kind) = kind {
        let _ = writeln!(out, "event: {kind}");
    }
    let _ = write!(out, "data: {data}\n\n");
    Bytes::from(out)
}
