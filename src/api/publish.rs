//! `POST /api/publish`: one message to users, groups, or everyone.

use std::collections::HashSet;

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::http_error::HttpError;
use crate::{
    broker::IdempotencyKey,
    node::Targets,
    protocol::{self, NAME_RULE, Positions, is_valid_event, is_valid_name},
    state::AppState,
};

/// Most users plus groups one publish may target.
pub(super) const MAX_TARGETS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishRequest {
    to: To,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    /// Makes a retry safe: a channel that already took a publish with this
    /// key (within `--idempotency-ttl`) takes nothing and answers again.
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct To {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct PublishResponse {
    id: String,
    offline_users: Vec<String>,
    /// Where the message went in each target channel's history.
    positions: Positions,
}

pub(super) async fn publish(
    State(state): State<AppState>,
    body: Result<Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PublishResponse>, HttpError> {
    let Json(req) = body?;
    let targets = validate(req.to)?;
    if let Some(event) = &req.event
        && !is_valid_event(event)
    {
        return Err(HttpError::bad_request(
            "invalid_event",
            "`event` must be 1-128 bytes",
        ));
    }
    let key = match req.idempotency_key.as_deref() {
        None => None,
        Some(k) => Some(IdempotencyKey::parse(k).ok_or_else(|| {
            HttpError::bad_request(
                "invalid_idempotency_key",
                format!("`idempotency_key` must be {NAME_RULE}"),
            )
        })?),
    };
    let data = req.data.unwrap_or_else(protocol::null_value);
    let mut publication = state.node.publication(req.event, data, None);
    if let Some(key) = &key {
        // A retry must carry the same id, whichever channels it reaches.
        publication.id = key.message_id();
    }
    let published = state
        .node
        .publish(&targets, publication, key.as_ref())
        .await?;
    Ok(Json(PublishResponse {
        id: published.id,
        offline_users: published.offline_users,
        positions: published.positions.into_iter().collect(),
    }))
}

fn validate(to: To) -> Result<Targets, HttpError> {
    if !to.all && to.users.is_empty() && to.groups.is_empty() {
        return Err(HttpError::bad_request(
            "no_target",
            "`to` needs `users`, `groups` or `all: true`",
        ));
    }
    if to.users.len() + to.groups.len() > MAX_TARGETS {
        return Err(HttpError::bad_request(
            "too_many_targets",
            format!("one publish may target at most {MAX_TARGETS} users and groups"),
        ));
    }
    Ok(Targets {
        users: names(to.users, "invalid_user", "uid")?,
        groups: names(to.groups, "invalid_group", "group")?,
        all: to.all,
    })
}

/// Validates and de-duplicates names, keeping their order.
fn names(list: Vec<String>, code: &'static str, what: &str) -> Result<Vec<String>, HttpError> {
    let mut seen = HashSet::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for name in list {
        if !is_valid_name(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(HttpError::bad_request(
                code,
                format!("invalid {what} `{shown}`: {NAME_RULE}"),
            ));
        }
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    Ok(out)
}
