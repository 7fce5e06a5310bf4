//! The backend HTTP API under `/api`, guarded by API keys, with its
//! request metrics and timeout. Every error is a JSON body
//! (`{"error":{"code","message"}}`). `app` mounts it beside the client
//! transports.

pub mod dev;
pub mod internal;
mod publish;
mod users;

#[doc(hidden)]
pub use publish::check_publish_body;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};

use crate::http_error::HttpError;
use crate::{
    limits,
    metrics::{self, Limit},
    state::AppState,
};

/// The API routes, to be nested under `/api`.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/publish", post(publish::publish))
        .route("/users/{uid}", get(users::get_user))
        .route("/users/{uid}/disconnect", post(users::disconnect))
        .route(
            "/users/{uid}/groups/{*group}",
            put(users::join_group).delete(users::leave_group),
        )
        .route("/stats", get(users::stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_guard))
        .route_layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(state.cfg.api_body_limit as usize))
}

/// Counts every API request by method, route template and status.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    metrics::http_request(
        method.as_str(),
        &route,
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

/// Checks the API key, then runs the request within the API timeout.
async fn api_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    let Some(presented) = presented else {
        return HttpError::unauthorized("unauthorized", "send `Authorization: Bearer <api key>`")
            .into_response();
    };
    let Some(key) = state.auth.api_key_index(presented) else {
        return HttpError::unauthorized("unauthorized", "invalid API key").into_response();
    };
    if let Some(limiter) = state.api_limits.as_ref().and_then(|l| l.get(key))
        && let Err(wait) = limits::check(limiter)
    {
        metrics::rate_limited(Limit::Api);
        return HttpError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this API key made more requests than this node allows (--api-rate); nothing was done",
        )
        .retry_after(wait)
        .into_response();
    }
    bounded(&state, req, next).await
}

/// What every request past its key check gets (the API's, and the `--dev`
/// helpers' without a key): 413 at once for an announced oversized body,
/// and the API timeout.
async fn bounded(state: &AppState, req: Request, next: Next) -> Response {
    if let Some(refused) = declared_too_large(&req, state.cfg.api_body_limit) {
        return refused;
    }
    match tokio::time::timeout(state.cfg.api_timeout, next.run(req)).await {
        Ok(res) => res,
        // Cut off mid-way: a publish may have happened (or still happen).
        Err(_) => HttpError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took too long; the outcome is unknown: retry a publish only with the same idempotency_key",
        )
        .into_response(),
    }
}

/// 413 at once for a request whose `Content-Length` is over the limit,
/// instead of waiting for a body that may never come (the body limit alone
/// acts only once that much has been read).
fn declared_too_large(req: &Request, limit: u64) -> Option<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (declared > limit).then(|| {
        HttpError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is over the configured limit",
        )
        .into_response()
    })
}
