//! `/dev/*`: what the demo page needs from the server, mounted **only** by
//! `fanout serve --dev` (tests/web.rs proves they are absent otherwise).
//! No API key: anyone who can reach a development node may mint a token
//! for any uid and publish to anyone, which is the point of a demo and the
//! reason `--dev` must never face a network.
//!
//! - `POST /dev/token` `{"uid": "...", "ttl_seconds": N}` → `{"token", "exp"}`:
//!   a token for that uid that may join and publish to every group.
//! - `POST /dev/publish`: `POST /api/publish` without the API key.
//! - `GET /dev/stats`: `GET /api/stats` without the API key.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{bounded, publish, track, users};
use crate::http_error::HttpError;
use crate::{
    protocol::{NAME_RULE, is_valid_name},
    state::AppState,
};

/// Tokens from `/dev/token` live this long unless the page asks otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest `ttl_seconds` a page may ask for: a day.
const MAX_TTL_SECONDS: u64 = 24 * 3600;

/// The development routes, to be nested under `/dev` in `--dev` mode only.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/token", post(token))
        .route("/publish", post(publish::publish))
        .route("/stats", get(users::stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), timeout))
        .route_layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(state.cfg.api_body_limit as usize))
}

/// The API's body check and timeout, without its key check.
async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    bounded(&state, req, next).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    uid: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /dev/token`
async fn token(
    State(state): State<AppState>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(req) = body?;
    if !is_valid_name(&req.uid) {
        return Err(HttpError::bad_request(
            "invalid_user",
            format!("uid: {NAME_RULE}"),
        ));
    }
    let ttl = match req.ttl_seconds {
        None => DEFAULT_TTL,
        Some(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(HttpError::bad_request(
                "invalid_json",
                format!("ttl_seconds must be 1 to {MAX_TTL_SECONDS}"),
            ));
        }
    };
    let all = ["*".to_owned()];
    let token = state.auth.mint(&req.uid, &all, &all, ttl).map_err(|e| {
        HttpError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "cannot_mint",
            format!("this node cannot mint tokens: {e}"),
        )
    })?;
    let exp = crate::ids::unix_now().saturating_add(ttl.as_secs());
    Ok(Json(json!({"uid": req.uid, "token": token, "exp": exp})))
}
