//! The internal listener: `/metrics` for Prometheus, `/healthz` (the
//! process is alive) and `/readyz` (this node can take clients and receive
//! from the broker). Not for the public network.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::state::AppState;

#[derive(Debug, Clone)]
struct Internal {
    app: AppState,
    metrics: PrometheusHandle,
}

pub fn router(app: AppState, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .with_state(Internal { app, metrics })
}

async fn render(State(s): State<Internal>) -> Response {
    s.metrics.run_upkeep();
    let mut text = s.metrics.render();
    text.push_str(&crate::metrics::process_exposition());
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// 200 when this node should get traffic; 503 with a reason otherwise.
async fn ready(State(s): State<Internal>) -> Response {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        )
            .into_response()
    };
    if s.app.shutdown.is_triggered() {
        return not_ready("draining");
    }
    let health = s.app.node.health();
    if !health.connected {
        return not_ready("redis_disconnected");
    }
    if !health.probe_ok {
        return not_ready("pubsub_probe_failing");
    }
    Json(json!({"status": "ready"})).into_response()
}
