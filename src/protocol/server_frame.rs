//! Frames the server sends in reply to a client (`welcome`, `joined`,
//! `ack`, `error`…). `message` frames are in [`super::message`], `bye` in
//! [`super::close`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    channel::Channel,
    error::ErrorCode,
    position::{Position, Positions},
};

/// Serialises a frame. The frames here are plain structs of strings,
/// numbers and already-valid raw JSON, which cannot fail to serialise.
pub(crate) fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

fn reply(kind: &str, id: Option<i64>, group: Option<&str>, exp: Option<u64>) -> String {
    encode(&Reply {
        kind,
        id,
        group,
        exp,
    })
}

/// `joined`, with the group's position (where the connection starts on
/// it) and, when the join gave `since`, whether every missed message
/// follows.
pub fn joined_frame(
    id: Option<i64>,
    group: &str,
    position: Option<&Position>,
    recovered: Option<bool>,
) -> String {
    #[derive(Serialize)]
    struct Joined<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        group: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    }
    encode(&Joined {
        kind: "joined",
        id,
        group,
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.as_str()),
        recovered,
    })
}

pub fn left_frame(id: Option<i64>, group: &str) -> String {
    reply("left", id, Some(group), None)
}

pub fn ack_frame(id: Option<i64>) -> String {
    reply("ack", id, None, None)
}

pub fn pong_frame(id: Option<i64>) -> String {
    reply("pong", id, None, None)
}

pub fn refreshed_frame(id: Option<i64>, exp: u64) -> String {
    reply("refreshed", id, None, Some(exp))
}

pub fn error_frame(id: Option<i64>, code: ErrorCode, message: &str) -> String {
    error_frame_retry(id, code, message, None)
}

/// An `error` frame with, for a refusal that passes with time
/// (`rate_limited`), when to try again.
pub fn error_frame_retry(
    id: Option<i64>,
    code: ErrorCode,
    message: &str,
    retry_after_ms: Option<u64>,
) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    }
    encode(&Error {
        kind: "error",
        id,
        code: code.as_str(),
        message,
        retry_after_ms,
    })
}

/// The first frame after authentication.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    pub conn: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub exp: u64,
    pub heartbeat: u64,
    /// Where the connection starts on each of its channels.
    pub positions: &'a Positions,
    /// For each channel the client gave a position for: whether every
    /// message it missed follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<&'a BTreeMap<Channel, bool>>,
}

pub fn welcome_frame(w: &Welcome<'_>) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        w: &'a Welcome<'a>,
    }
    encode(&Frame { kind: "welcome", w })
}
