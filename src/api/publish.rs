//! `POST /api/publish`: one message to users, groups, or everyone.

use std::collections::HashSet;

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::http_error::HttpError;
use crate::{
    broker::IdempotencyKey,
    node::Targets,
    protocol::{self, ErrorCode, NAME_RULE, Positions, is_valid_event, is_valid_name, json_depth},
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
    let Checked {
        targets,
        event,
        data,
        key,
    } = check(req, state.cfg.max_json_depth)?;
    let mut publication = state.node.publication(event, data, None);
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

/// A publish body that passed every check: what the handler publishes.
struct Checked {
    targets: Targets,
    event: Option<String>,
    data: Box<RawValue>,
    key: Option<IdempotencyKey>,
}

/// Every check of a publish body that needs no node. `max_depth` is
/// `--max-json-depth`.
fn check(req: PublishRequest, max_depth: usize) -> Result<Checked, HttpError> {
    // The rest of the body is typed (names, a flag, strings): only `data`
    // can nest. Reading it skipped the value without a recursion limit.
    if let Some(data) = &req.data
        && json_depth::exceeds(data.get().as_bytes(), max_depth)
    {
        return Err(HttpError::bad_request(
            ErrorCode::TooDeep.as_str(),
            format!("`data` may nest at most {max_depth} levels deep"),
        ));
    }
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
    Ok(Checked {
        targets,
        event: req.event,
        data: req.data.unwrap_or_else(protocol::null_value),
        key,
    })
}

/// Reads and checks a publish body exactly as `POST /api/publish` does
/// (axum's JSON extractor, then [`check`]), without publishing it: the
/// entry point of the `publish_body` fuzz target (docs/fuzzing.md).
#[doc(hidden)]
pub fn check_publish_body(body: &[u8], max_depth: usize) -> Result<Targets, HttpError> {
    let Json(req) = Json::<PublishRequest>::from_bytes(body)?;
    check(req, max_depth).map(|checked| checked.targets)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's entry point reads bodies as the handler does.
    #[test]
    fn publish_bodies_are_checked_as_documented() {
        let t = check_publish_body(
            br#"{"to":{"users":["42","7","42"],"groups":["room-1"]}}"#,
            32,
        )
        .unwrap();
        assert_eq!(
            (t.users, t.groups, t.all),
            (vec!["42".into(), "7".into()], vec!["room-1".into()], false)
        );
        for (body, code) in [
            (&br#"{"to":{}}"#[..], "no_target"),
            (br#"{"to":{"all":true},"extra":1}"#, "invalid_json"),
            (br#"{"to":{"users":["a b"]}}"#, "invalid_user"),
            (br#"{"to":{"all":true},"event":""}"#, "invalid_event"),
            (
                br#"{"to":{"all":true},"idempotency_key":"a b"}"#,
                "invalid_idempotency_key",
            ),
            (b"{", "invalid_json"),
            (br#"{"to":{"all":true},"data":[[[[1]]]]}"#, "too_deep"),
        ] {
            assert_eq!(
                check_publish_body(body, 3).map(drop).map_err(|e| e.code),
                Err(code)
            );
        }
        assert!(check_publish_body(br#"{"to":{"all":true},"data":[[["[[[["]]]}"#, 3).is_ok());
        // A million levels (2 MB): refused, no stack overflow.
        let deep = format!(
            r#"{{"to":{{"all":true}},"data":{}{}}}"#,
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        assert_eq!(
            check_publish_body(deep.as_bytes(), 32)
                .map(drop)
                .map_err(|e| e.code),
            Err("too_deep")
        );
    }
}
