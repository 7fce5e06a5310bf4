//! The WebSocket transport: `GET /ws`.
//!
//! # Layout
//! - this file: the checks before the upgrade (shutdown, Origin, a
//!   `?token=`) and the socket's size limits.
//! - `handshake`: waiting for the `auth` frame of a client without a token.
//! - `conn`: the connection task, its writer and the close handshake.

mod conn;
mod handshake;

use axum::{
    Extension,
    extract::{
        Query, State, WebSocketUpgrade, rejection::QueryRejection,
        ws::rejection::WebSocketUpgradeRejection,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    config::Config,
    http_error::HttpError,
    metrics::{self, Rejected},
    protocol::{ErrorCode, Positions, parse_since_compact},
    state::{AppState, ConnectionSlot},
};

/// tungstenite's own limit is this many times `max_frame`: frames between
/// the two are read whole and refused by us with a clean 1009 close;
/// tungstenite aborts beyond it, which leaves unread input (see
/// `conn::finish`).
const HARD_FRAME_FACTOR: usize = 4;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    /// Where the client was, to resume from, in the compact form
    /// (`user:42~17~k3x9a,all~4~q1w2e`).
    since: Option<String>,
}

/// `GET /ws`: checks Origin and `?token=`, then upgrades.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    slot: Option<Extension<ConnectionSlot>>,
) -> Response {
    if state.shutdown.is_triggered() {
        metrics::connection_rejected(Rejected::ShuttingDown);
        return HttpError::shutting_down().into_response();
    }
    if !state.origins.admits(&headers) {
        metrics::connection_rejected(Rejected::Origin);
        return HttpError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this Origin may not open WebSocket connections (see --allowed-origins)",
        )
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            metrics::connection_rejected(Rejected::NotWebsocket);
            return HttpError::new(
                rejection.status(),
                "websocket_required",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    if !valid_key(&headers) {
        metrics::connection_rejected(Rejected::NotWebsocket);
        return HttpError::bad_request(
            "websocket_required",
            "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455)",
        )
        .into_response();
    }
    let (token, since) = match query {
        Ok(Query(q)) => (q.token, q.since),
        Err(rejection) => {
            metrics::connection_rejected(Rejected::BadRequest);
            return HttpError::bad_request("invalid_query", rejection.body_text()).into_response();
        }
    };
    let since = match since.as_deref().map(parse_since_compact) {
        None => Positions::new(),
        Some(Ok(since)) => since,
        Some(Err(message)) => {
            metrics::connection_rejected(Rejected::BadRequest);
            return HttpError::bad_request(ErrorCode::InvalidPosition.as_str(), message)
                .into_response();
        }
    };
    let creds = match token.map(|t| state.auth.verify(&t)) {
        None => None,
        Some(Ok(creds)) => Some((creds, since)),
        Some(Err(e)) => {
            metrics::connection_rejected(Rejected::Unauthorized);
            return HttpError::from(e).into_response();
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
        .on_upgrade(move |socket| {
            let run = conn::run(socket, state, creds);
            // The connection keeps its place under --max-connections.
            tracker.track_future(async move {
                run.await;
                drop(slot);
            })
        })
}

/// Whether `Sec-WebSocket-Key` is what RFC 6455 requires: 16 random bytes
/// in base64 (axum only checks that the header is there).
fn valid_key(headers: &HeaderMap) -> bool {
    use base64::Engine;
    headers
        .get("sec-websocket-key")
        .and_then(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k.as_bytes())
                .ok()
        })
        .is_some_and(|bytes| bytes.len() == 16)
}

/// tungstenite's hard cap on buffered outgoing bytes. Our own queue is the
/// real bound; this only has to exceed the write buffer (tungstenite
/// requires it) plus what one flush may hold: a queue's worth and one
/// large message published straight to Redis.
fn max_write_buffer(cfg: &Config) -> usize {
    const LARGEST_MESSAGE: usize = 16 << 20;
    (cfg.ws_write_buffer as usize)
        .saturating_add((cfg.outbound_queue as usize).saturating_mul(2))
        .saturating_add(LARGEST_MESSAGE)
}
