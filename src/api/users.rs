//! Per-user endpoints (presence, kick, server-side group membership) and
//! `/api/stats`. Actions on a user's connections travel as commands on the
//! user's channel, so they reach that user on every node.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::{Value, json};

use crate::http_error::HttpError;
use crate::{
    protocol::{NAME_RULE, is_valid_name},
    state::AppState,
};

fn uid_of(path: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    let Path(uid) = path.map_err(|e| HttpError::bad_request("invalid_path", e.body_text()))?;
    check(&uid, "invalid_user", "uid")?;
    Ok(uid)
}

fn check(name: &str, code: &'static str, what: &str) -> Result<(), HttpError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(HttpError::bad_request(
            code,
            format!("invalid {what}: {NAME_RULE}"),
        ))
    }
}

/// `GET /api/users/{uid}`
pub(super) async fn get_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, HttpError> {
    let uid = uid_of(path)?;
    let p = state.node.presence(&uid).await?;
    // A node that holds the user's channel but did not answer in time may
    // hold connections: `online` says so (as `offline_users` does), and
    // `complete`/`unanswered_nodes` say the count is short.
    Ok(Json(json!({
        "uid": uid,
        "online": p.online(),
        "connections": p.connections,
        "complete": p.unanswered == 0,
        "unanswered_nodes": p.unanswered,
    })))
}

/// `POST /api/users/{uid}/disconnect`
pub(super) async fn disconnect(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, HttpError> {
    let uid = uid_of(path)?;
    let online = state.node.kick(&uid).await?;
    Ok(Json(json!({"uid": uid, "disconnected": online})))
}

fn uid_and_group(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), HttpError> {
    let Path((uid, group)) =
        path.map_err(|e| HttpError::bad_request("invalid_path", e.body_text()))?;
    check(&uid, "invalid_user", "uid")?;
    check(&group, "invalid_group", "group")?;
    Ok((uid, group))
}

/// `PUT /api/users/{uid}/groups/{group}`
pub(super) async fn join_group(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, HttpError> {
    let (uid, group) = uid_and_group(path)?;
    let online = state.node.join_user(&uid, &group).await?;
    Ok(Json(json!({"uid": uid, "group": group, "online": online})))
}

/// `DELETE /api/users/{uid}/groups/{group}`
pub(super) async fn leave_group(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, HttpError> {
    let (uid, group) = uid_and_group(path)?;
    let online = state.node.leave_user(&uid, &group).await?;
    Ok(Json(json!({"uid": uid, "group": group, "online": online})))
}

/// `GET /api/stats`: every node's counts, summed. A user connected to two
/// nodes, or a group with members on two nodes, counts once per node.
pub(super) async fn stats(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let c = state.node.cluster_counts().await?;
    Ok(Json(json!({
        "nodes": c.nodes,
        "complete": c.complete(),
        "unanswered_nodes": c.unanswered,
        "connections": c.counts.connections,
        "users": c.counts.users,
        "groups": c.counts.groups,
    })))
}
