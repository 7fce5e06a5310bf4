//! The SSE transport (`GET /sse`) through a real HTTP client: the same
//! frames as WebSocket as `data:`, positions as event ids so a reconnect
//! with `Last-Event-ID` resumes every channel, and the same limits (Origin,
//! token and its expiry, slow consumers, drain, presence, metrics).

mod support;

use std::time::Duration;

use reqwest::{Method, header};
use serde_json::{Value, json};
use support::{SseClient, TestServer};

async fn open(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = server.http().get(server.url(&format!("/sse?{query}")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn stream(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> SseClient {
    let res = open(server, query, headers).await;
    assert_eq!(res.status(), 200, "{query}");
    SseClient::new(res)
}

/// A stream starts with `welcome` (its id the connection's positions) and
/// carries every message as the WebSocket frame, each with an id that
/// moves its channel's position; the headers keep proxies from buffering.
#[tokio::test]
async fn messages_arrive_as_websocket_frames_with_positions_as_ids() {
    let server = TestServer::start().await;
    let token = server.token("s1");
    let res = open(&server, &format!("token={token}&groups=room"), &[]).await;
    let h = res.headers();
    assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(
        h[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-cache")
    );
    let mut sse = SseClient::new(res);
    let welcome = sse.next().await.unwrap();
    assert_eq!(welcome.data["type"], "welcome");
    let id = welcome.id.clone().unwrap();
    for channel in ["user:s1", "group:room", "all"] {
        assert!(id.contains(&format!("{channel}~0~")), "{id}");
    }
    let sent = server
        .publish_ok(json!({"users": ["s1"], "groups": ["room"]}), "e", json!(1))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let e = sse.next_of("message").await;
        assert_eq!(e.data["id"], sent.as_str());
        let channel = e.data["channel"].as_str().unwrap().to_owned();
        assert!(
            e.id.as_deref().unwrap().contains(&format!("{channel}~1~")),
            "{e:?}"
        );
        got.push(channel);
    }
    got.sort();
    assert_eq!(got, ["group:room", "user:s1"]);
    // Counted as an SSE connection, and the user is online.
    let (_, user) = server.api(Method::GET, "/api/users/s1", None).await;
    assert_eq!(user["connections"], 1, "{user}");
    let (_, body) = server.publish(json!({"to": {"users": ["s1"]}})).await;
    assert_eq!(body["offline_users"], json!([]));
}

/// What a browser's EventSource does by itself: reconnect with the last
/// event id. Every channel resumes from it, and the missed messages come
/// first.
#[tokio::test]
async fn last_event_id_resumes_every_channel() {
    let server = TestServer::start().await;
    let token = server.token("s2");
    let query = format!("token={token}&groups=room");
    let mut sse = stream(&server, &query, &[]).await;
    sse.next_of("welcome").await;
    server
        .publish_ok(json!({"groups": ["room"]}), "e", json!(1))
        .await;
    let last = sse.next_of("message").await.id.unwrap();
    drop(sse);
    let mut missed = Vec::new();
    missed.push(
        server
            .publish_ok(json!({"groups": ["room"]}), "e", json!(2))
            .await,
    );
    missed.push(
        server
            .publish_ok(json!({"users": ["s2"]}), "e", json!(3))
            .await,
    );
    // A stream that breaks right after `welcome`: the welcome's id is
    // still where the client was (not the channels' tops), so the next
    // reconnect replays what the broken one never delivered.
    let mut broken = stream(&server, &query, &[("last-event-id", &last)]).await;
    let first = broken.next_of("welcome").await;
    assert_eq!(first.id.as_deref(), Some(last.as_str()), "{:?}", first.data);
    assert_eq!(first.data["positions"]["user:s2"]["offset"], 1, "tops");
    drop(broken);
    let first_id = first.id.unwrap();
    let mut sse = stream(&server, &query, &[("last-event-id", &first_id)]).await;
    let welcome = sse.next_of("welcome").await;
    assert_eq!(
        welcome.data["recovered"],
        json!({"all": true, "group:room": true, "user:s2": true}),
        "{:?}",
        welcome.data
    );
    let mut ids: Vec<Value> = Vec::new();
    for _ in 0..2 {
        ids.push(sse.next_of("message").await.data["id"].clone());
    }
    ids.sort_by_key(|v| v.to_string());
    missed.sort();
    assert_eq!(ids, missed.iter().map(|m| json!(m)).collect::<Vec<_>>());
}

/// Refused before the stream starts, with the documented JSON errors:
/// no token, a bad one, a group the token does not allow, a bad group
/// name, a bad Last-Event-ID, an Origin not allowed. An allowed Origin gets
/// the CORS header a page needs to read the stream.
#[tokio::test]
async fn bad_requests_are_refused_before_the_stream() {
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let limited = server.token_with("s3", &["room-*"], &[], Duration::from_secs(60));
    let cases = [
        (String::new(), vec![], 401, "auth_required"),
        ("token=nope".into(), vec![], 401, "invalid_token"),
        (
            format!("token={limited}&groups=admins"),
            vec![],
            403,
            "forbidden",
        ),
        (
            format!("token={limited}&groups=bad%20name"),
            vec![],
            400,
            "invalid_group",
        ),
        (
            format!("token={limited}"),
            vec![("last-event-id", "user:s3~x~e")],
            400,
            "invalid_position",
        ),
        (
            format!("token={limited}"),
            vec![("last-event-id", "user:other~1~e")],
            403,
            "forbidden",
        ),
        (
            format!("token={limited}"),
            vec![("origin", "https://evil.example")],
            403,
            "origin_not_allowed",
        ),
    ];
    for (query, headers, status, code) in cases {
        let res = open(&server, &query, &headers).await;
        let (s, body) = support::read(res).await;
        assert_eq!(
            (s, &body["error"]["code"]),
            (status, &json!(code)),
            "{query} {headers:?}"
        );
    }
    // The Authorization header works as well as ?token=, and an allowed
    // Origin is told it may read.
    let bearer = format!("Bearer {limited}");
    let res = open(
        &server,
        "groups=room-1",
        &[
            ("authorization", &bearer),
            ("origin", "https://app.example"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let mut sse = SseClient::new(res);
    assert_eq!(sse.next().await.unwrap().data["type"], "welcome");
}

/// The stream ends with `bye` when the token expires, and on a drain with
/// the reconnect hint as the stream's `retry:`.
#[tokio::test]
async fn the_stream_ends_with_bye_on_expiry_and_drain() {
    let mut server = TestServer::start().await;
    let short = server.token_with("s4", &[], &[], Duration::from_secs(1));
    let mut sse = stream(&server, &format!("token={short}"), &[]).await;
    sse.next_of("welcome").await;
    let bye = sse.next_of("bye").await;
    assert_eq!(bye.data["reason"], "token_expired", "{:?}", bye.data);
    assert!(sse.next().await.is_none(), "the stream ends after bye");

    let token = server.token("s5");
    let mut sse = stream(&server, &format!("token={token}"), &[]).await;
    sse.next_of("welcome").await;
    server.shutdown().await;
    let bye = sse.next_of("bye").await;
    assert_eq!(bye.data["reason"], "shutdown", "{:?}", bye.data);
    assert_eq!(
        bye.retry,
        bye.data["retry_after_ms"].as_u64().filter(|r| *r > 0)
    );
    assert!(sse.next().await.is_none());
}

/// A client that stops reading is cut off like a slow WebSocket client:
/// its queue overflows, the node lets it go, and other clients are served.
#[tokio::test]
async fn a_client_that_stops_reading_is_let_go() {
    let server = TestServer::with(|c| {
        c.outbound_queue = 64 * 1024;
        c.write_timeout = Duration::from_millis(300);
    })
    .await;
    let token = server.token("stuck");
    let mut stuck = stream(&server, &format!("token={token}"), &[]).await;
    stuck.next_of("welcome").await;
    let mut fine = server.client("fine").await;
    let big = "x".repeat(32 * 1024);
    for _ in 0..200 {
        server
            .publish_ok(json!({"users": ["stuck", "fine"]}), "e", json!(big))
            .await;
        fine.recv_type("message").await;
    }
    assert_eventually!(server.stats().await["connections"] == 1);
    let (_, user) = server.api(Method::GET, "/api/users/stuck", None).await;
    assert_eq!(user["online"], false, "{user}");
}
