//! Frames the server sends in reply to a client (`welcome`, `joined`,
//! `ack`, `error`…). `message` frames are in [`super::message`], `bye` in
//! [`super::close`].

use serde::Serialize;

use super::error::ErrorCode;

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

pub fn joined_frame(id: Option<i64>, group: &str) -> String {
    reply("joined", id, Some(group), None)
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
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        code: &'static str,
        message: &'a str,
    }
    encode(&Error {
        kind: "error",
        id,
        code: code.as_str(),
        message,
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
