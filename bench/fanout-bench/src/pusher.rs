//! The Pusher Channels protocol (version 7), as `--target pusher` speaks
//! it to Sockudo (`bench/peers/sockudo/`) or any Pusher-compatible server:
//! the client's frames and handshake, and the signed HTTP API request a
//! publisher sends.
//!
//! A client connects to `ws://host:port/app/<key>?protocol=7&…`, waits for
//! `pusher:connection_established`, subscribes to one public channel per
//! user (`user-u<i>`) and one per group (`group-g<n>`), and counts itself
//! ready once every subscription is confirmed. Events then arrive as
//! `{"event":…,"channel":…,"data":"<string>"}`: `data` is a JSON string
//! holding the bench payload, so the recorder reads it once unquoted.
//! `pusher:ping` is answered with `pusher:pong`.
//!
//! Publishing is `POST /apps/<id>/events` with a body naming the event, its
//! channels and its data (a string), and a query signed with the app
//! secret: `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` and
//! `auth_signature`, the HMAC-SHA256 (hex) of `POST\n<path>\n<sorted
//! query>`.

use std::{borrow::Cow, time::Duration};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

/// The app the bench's Sockudo nodes are configured with
/// (`bench/peers/sockudo/sockudo.toml`; a test checks they agree).
pub(crate) const APP_ID: &str = "fanout-bench";
pub(crate) const APP_KEY: &str = "fanout-bench-key";
pub(crate) const APP_SECRET: &str = "fanout-bench-secret-0123456789abcdef";

/// The event name the publisher sends.
const EVENT: &str = "bench";

/// The answer to `pusher:ping`.
pub(crate) const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// An app's credentials: the key names it to clients and signs API
/// requests; the secret never leaves the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct App {
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) secret: String,
}

impl Default for App {
    fn default() -> Self {
        Self {
            id: APP_ID.into(),
            key: APP_KEY.into(),
            secret: APP_SECRET.into(),
        }
    }
}

/// User `uid`'s channel (public: the bench tests fan-out, not auth).
pub(crate) fn user_channel(uid: &str) -> String {
    format!("user-{uid}")
}

/// Group `group`'s channel.
pub(crate) fn group_channel(group: &str) -> String {
    format!("group-{group}")
}

/// The WebSocket URL path and query for an app key.
pub(crate) fn ws_path(key: &str) -> String {
    format!("/app/{key}?protocol=7&client=fanout-bench&version=1")
}

fn subscribe(channel: &str) -> String {
    format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#)
}

/// What a server frame means to the bench.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// `pusher:connection_established`.
    Established,
    /// `pusher_internal:subscription_succeeded` (some servers omit the
    /// `_internal`).
    Subscribed,
    /// `pusher:ping`: answer with [`PONG`].
    Ping,
    /// `pusher:error` or `pusher:subscription_error`, with its data.
    Error(String),
    /// Any other event: its data, unquoted when it is a string.
    Event(Cow<'a, str>),
    /// Not a Pusher frame.
    Other,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Reads one text frame.
pub(crate) fn parse(text: &str) -> Frame<'_> {
    let Ok(raw) = serde_json::from_str::<Raw<'_>>(text) else {
        return Frame::Other;
    };
    match raw.event.as_ref() {
        "pusher:connection_established" => Frame::Established,
        "pusher_internal:subscription_succeeded" | "pusher:subscription_succeeded" => {
            Frame::Subscribed
        }
        "pusher:ping" => Frame::Ping,
        "pusher:error" | "pusher:subscription_error" => {
            Frame::Error(unquote(raw.data).into_owned())
        }
        _ => Frame::Event(unquote(raw.data)),
    }
}

/// A frame's data: a string's contents, or any other JSON value as written.
fn unquote(data: Option<&RawValue>) -> Cow<'_, str> {
    let Some(d) = data.map(RawValue::get) else {
        return Cow::Borrowed("");
    };
    if d.starts_with('"')
        && let Ok(s) = serde_json::from_str::<String>(d)
    {
        return Cow::Owned(s);
    }
    Cow::Borrowed(d)
}

/// Waits for `pusher:connection_established`, subscribes to `channels`
/// (all in one write) and waits until each subscription is confirmed,
/// answering pings meanwhile; at most `timeout` in all.
pub(crate) async fn handshake<S>(
    ws: &mut WebSocketStream<S>,
    channels: &[String],
    timeout: Duration,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    // `None` until the connection is established, then the subscriptions
    // confirmed so far.
    let mut confirmed: Option<usize> = None;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "handshake timed out".to_owned())?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "closed during handshake: {}",
                    frame.map_or_else(
                        || "no close frame".into(),
                        |f| format!("{} {}", f.code, f.reason)
                    )
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("handshake: {e}")),
            None => return Err("closed during handshake".into()),
        };
        match parse(&text) {
            Frame::Established if confirmed.is_none() => {
                for c in channels {
                    ws.feed(Message::text(subscribe(c)))
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
                ws.flush().await.map_err(|e| format!("send: {e}"))?;
                confirmed = Some(0);
            }
            Frame::Subscribed => {
                if let Some(n) = &mut confirmed {
                    *n += 1;
                }
            }
            Frame::Ping => ws
                .send(Message::text(PONG))
                .await
                .map_err(|e| format!("send: {e}"))?,
            Frame::Error(e) => return Err(format!("refused: {e}")),
            _ => {}
        }
        if confirmed.is_some_and(|n| n >= channels.len()) {
            return Ok(());
        }
    }
}

/// The body of `POST /apps/<id>/events`: event `bench` on `channels`, with
/// `payload` (a JSON object) as its data, a JSON string.
pub(crate) fn event_body(channels: &[String], payload: &str) -> Result<String, String> {
    let data = serde_json::to_string(payload).map_err(|e| format!("encoding data: {e}"))?;
    let channels =
        serde_json::to_string(channels).map_err(|e| format!("encoding channels: {e}"))?;
    Ok(format!(
        r#"{{"name":"{EVENT}","channels":{channels},"data":{data}}}"#
    ))
}

/// The path of the events endpoint.
pub(crate) fn events_path(app: &App) -> String {
    format!("/apps/{}/events", app.id)
}

/// `path?query` for `POST path` with `body`, signed at `timestamp` (unix
/// seconds; servers refuse one more than 600 s off).
pub(crate) fn signed_uri(
    app: &App,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> Result<String, String> {
    let md5 = hex::encode(Md5::digest(body));
    // Already in the sorted order the signature needs.
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
        app.key
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(app.secret.as_bytes())
        .map_err(|e| format!("HMAC key: {e}"))?;
    mac.update(format!("POST\n{path}\n{query}").as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Ok(format!("{path}?{query}&auth_signature={signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's HTTP API reference (app 3, key
    /// 278d425bdf160c739803, the body below, timestamp 1353088179): a
    /// published vector, so a wrongly assembled string to sign fails here,
    /// not only against a server.
    #[test]
    fn signs_pushers_documented_example() {
        let app = App {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let uri = signed_uri(&app, &events_path(&app), body, 1_353_088_179).unwrap();
        assert_eq!(
            uri,
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    /// The event body carries the payload as a string, which the example's
    /// shape is; the recorder finds the payload in the data a client gets.
    #[test]
    fn event_body_quotes_the_payload_and_a_delivery_unquotes_it() {
        let body = event_body(&["project-3".into()], r#"{"some":"data"}"#).unwrap();
        assert_eq!(
            body,
            r#"{"name":"bench","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#
        );
        let delivered =
            r#"{"event":"bench","channel":"user-u1","data":"{\"s\":12,\"t\":34,\"p\":\"xx\"}"}"#;
        assert_eq!(
            parse(delivered),
            Frame::Event(Cow::Borrowed(r#"{"s":12,"t":34,"p":"xx"}"#))
        );
    }

    #[test]
    fn parses_the_protocol_frames() {
        let established = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#;
        assert_eq!(parse(established), Frame::Established);
        let ok =
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"user-u1","data":"{}"}"#;
        assert_eq!(parse(ok), Frame::Subscribed);
        assert_eq!(parse(r#"{"event":"pusher:ping","data":"{}"}"#), Frame::Ping);
        assert_eq!(
            parse(
                r#"{"event":"pusher:error","data":{"code":4001,"message":"App key x not in this cluster"}}"#
            ),
            Frame::Error(r#"{"code":4001,"message":"App key x not in this cluster"}"#.into())
        );
        // Data that is an object, not a string, is passed as it is.
        assert_eq!(
            parse(r#"{"event":"e","channel":"c","data":{"s":1}}"#),
            Frame::Event(Cow::Borrowed(r#"{"s":1}"#))
        );
        assert_eq!(parse("2"), Frame::Other);
        assert_eq!(parse(r#"{"type":"welcome"}"#), Frame::Other);
    }

    /// The committed Sockudo configuration names the app these constants
    /// describe, so the bench and the nodes it starts agree.
    #[test]
    fn the_sockudo_config_holds_the_bench_app() {
        let config = include_str!("../../peers/sockudo/sockudo.toml");
        for value in [APP_ID, APP_KEY, APP_SECRET] {
            assert!(
                config.contains(&format!("\"{value}\"")),
                "{value} is not in sockudo.toml"
            );
        }
    }

    /// Against a scripted server: established, two subscriptions (sent in
    /// one go), a ping in between answered with a pong, then ready.
    #[tokio::test]
    async fn the_handshake_subscribes_and_answers_pings() {
        let (client_io, server_io) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(server_io).await.unwrap();
            let hello =
                r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\"}"}"#;
            ws.send(Message::text(hello)).await.unwrap();
            let mut subs = Vec::new();
            for _ in 0..2 {
                let m = ws.next().await.unwrap().unwrap();
                subs.push(m.into_text().unwrap().to_string());
            }
            ws.send(Message::text(r#"{"event":"pusher:ping","data":"{}"}"#))
                .await
                .unwrap();
            let pong = ws.next().await.unwrap().unwrap();
            for c in ["user-u1", "group-g0"] {
                let ok = format!(
                    r#"{{"event":"pusher_internal:subscription_succeeded","channel":"{c}","data":"{{}}"}}"#
                );
                ws.send(Message::text(ok)).await.unwrap();
            }
            (subs, pong.into_text().unwrap().to_string())
        });
        let (mut ws, _) = tokio_tungstenite::client_async("ws://x/app/k", client_io)
            .await
            .unwrap();
        let channels = [user_channel("u1"), group_channel("g0")];
        handshake(&mut ws, &channels, Duration::from_secs(5))
            .await
            .unwrap();
        let (subs, pong) = server.await.unwrap();
        assert_eq!(
            subs,
            [
                r#"{"event":"pusher:subscribe","data":{"channel":"user-u1"}}"#,
                r#"{"event":"pusher:subscribe","data":{"channel":"group-g0"}}"#
            ]
        );
        assert_eq!(pong, PONG);
    }

    /// An error frame before the subscriptions are confirmed fails the
    /// handshake with the server's words.
    #[tokio::test]
    async fn an_error_frame_fails_the_handshake() {
        let (client_io, server_io) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(server_io).await.unwrap();
            let err = r#"{"event":"pusher:error","data":{"code":4001,"message":"no such app"}}"#;
            ws.send(Message::text(err)).await.unwrap();
            let _ = ws.next().await;
        });
        let (mut ws, _) = tokio_tungstenite::client_async("ws://x/app/k", client_io)
            .await
            .unwrap();
        let err = handshake(&mut ws, &[user_channel("u1")], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("no such app"), "{err}");
    }
}
