//! The backend HTTP API against real clients: addressing, presence, kick,
//! server-side membership, API keys and every documented error.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{API_KEY_2, TestServer};

/// A user with three connections gets exactly one copy on each; another
/// user gets none.
#[tokio::test]
async fn user_publish_reaches_every_connection_once() {
    let server = TestServer::start().await;
    let mut tabs = vec![
        server.client("42").await,
        server.client("42").await,
        server.client("42").await,
    ];
    let mut other = server.client("43").await;
    let (status, body) = server
        .publish(json!({"to": {"users": ["42"]}, "event": "new_msg", "data": {"n": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offline_users"], json!([]));
    let id = body["id"].as_str().unwrap();
    for tab in &mut tabs {
        let m = tab.recv().await;
        assert_eq!(
            (
                m["type"].as_str(),
                m["channel"].as_str(),
                m["event"].as_str(),
                m["id"].as_str()
            ),
            (Some("message"), Some("user:42"), Some("new_msg"), Some(id))
        );
        assert_eq!(m["data"], json!({"n": 1}));
        assert!(
            m.get("from").is_none(),
            "backend publishes have no from: {m}"
        );
    }
    let marker = server
        .publish_ok(json!({"users": ["42"]}), "marker", json!(null))
        .await;
    for tab in &mut tabs {
        assert_eq!(
            tab.recv().await["id"],
            marker,
            "no second copy before the marker"
        );
    }
    assert_eq!(
        server.frames_until_marker(&mut other, "43").await,
        Vec::<Value>::new()
    );
}

/// Users with no live connection are listed in offline_users; duplicates
/// are published once.
#[tokio::test]
async fn offline_users_are_reported() {
    let server = TestServer::start().await;
    let mut on = server.client("on").await;
    let (status, body) = server
        .publish(json!({"to": {"users": ["on", "off1", "on", "off2"]}, "data": 1}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["offline_users"], json!(["off1", "off2"]));
    let m = on.recv().await;
    assert_eq!(m["data"], 1);
    assert!(m.get("event").is_none());
    assert_eq!(
        server.frames_until_marker(&mut on, "on").await,
        Vec::<Value>::new()
    );
}

/// Group publishes reach members only; `all` reaches everyone.
#[tokio::test]
async fn group_and_broadcast_addressing() {
    let server = TestServer::start().await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    a.join("room-1").await;
    let gid = server
        .publish_ok(json!({"groups": ["room-1"]}), "g", json!("x"))
        .await;
    let m = a.recv().await;
    assert_eq!(
        (m["channel"].as_str(), m["id"].as_str()),
        (Some("group:room-1"), Some(&*gid))
    );
    assert_eq!(
        server.frames_until_marker(&mut b, "b").await,
        Vec::<Value>::new()
    );

    let all = server
        .publish_ok(
            json!({"all": true, "users": ["a"], "groups": ["room-1"]}),
            "all",
            json!(null),
        )
        .await;
    for (c, uid) in [(&mut a, "a"), (&mut b, "b")] {
        let m = c.recv().await;
        assert_eq!(
            (m["channel"].as_str(), m["id"].as_str()),
            (Some("all"), Some(&*all))
        );
        assert_eq!(
            server.frames_until_marker(c, uid).await,
            Vec::<Value>::new()
        );
    }
}

/// Presence and stats reflect live connections and groups.
#[tokio::test]
async fn presence_and_stats() {
    let server = TestServer::start().await;
    let (s, body) = server.api(Method::GET, "/api/users/42", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        json!({"uid": "42", "online": false, "connections": 0, "complete": true, "unanswered_nodes": 0})
    );
    let mut c1 = server.client("42").await;
    let _c2 = server.client("42").await;
    let _c3 = server.client("7").await;
    c1.join("g").await;
    let (_, body) = server.api(Method::GET, "/api/users/42", None).await;
    assert_eq!(
        body,
        json!({"uid": "42", "online": true, "connections": 2, "complete": true, "unanswered_nodes": 0})
    );
    let stats = server.stats().await;
    assert_eq!(
        (
            stats["connections"].as_u64(),
            stats["users"].as_u64(),
            stats["groups"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(stats["nodes"], 1);
}

/// Kicking closes every connection of the user with bye kicked / 3503 and
/// leaves other users alone.
#[tokio::test]
async fn disconnect_kicks_all_connections_of_a_user() {
    let server = TestServer::start().await;
    let mut a1 = server.client("a").await;
    let mut a2 = server.client("a").await;
    let mut b = server.client("b").await;
    let (s, body) = server
        .api(Method::POST, "/api/users/a/disconnect", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(body, json!({"uid": "a", "disconnected": true}));
    for c in [&mut a1, &mut a2] {
        let bye = c.expect_bye("kicked", 3503).await;
        assert_eq!(bye["reconnect"], false);
    }
    assert_eq!(
        b.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
    assert_eventually!(server.api(Method::GET, "/api/users/a", None).await.1["online"] == false);
    let (_, body) = server
        .api(Method::POST, "/api/users/a/disconnect", None)
        .await;
    assert_eq!(body["disconnected"], false);
}

/// Server-side join/leave act on all of the user's connections, which get
/// joined/left frames, regardless of the token's groups claim.
#[tokio::test]
async fn server_side_join_and_leave() {
    let server = TestServer::start().await;
    let token = server.token_with("u", &[], &[], std::time::Duration::from_secs(60));
    let mut c1 = server.client_with_token(&token).await;
    let mut c2 = server.client_with_token(&token).await;
    let (s, body) = server
        .api(Method::PUT, "/api/users/u/groups/team/a", None)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"uid": "u", "group": "team/a", "online": true}));
    for c in [&mut c1, &mut c2] {
        assert_eq!(
            support::positionless(&c.recv().await),
            json!({"type": "joined", "group": "team/a"})
        );
    }
    let id = server
        .publish_ok(json!({"groups": ["team/a"]}), "x", json!(1))
        .await;
    for c in [&mut c1, &mut c2] {
        assert_eq!(c.recv().await["id"], id);
    }
    let (s, _) = server
        .api(Method::DELETE, "/api/users/u/groups/team/a", None)
        .await;
    assert_eq!(s, 200);
    for c in [&mut c1, &mut c2] {
        assert_eq!(c.recv().await, json!({"type": "left", "group": "team/a"}));
    }
    server
        .publish_ok(json!({"groups": ["team/a"]}), "x", json!(2))
        .await;
    assert_eq!(
        server.frames_until_marker(&mut c1, "u").await,
        Vec::<Value>::new()
    );
    assert_eq!(server.stats().await["groups"], 0);
    let (_, body) = server
        .api(Method::PUT, "/api/users/nobody/groups/g", None)
        .await;
    assert_eq!(body["online"], false);
}

/// Without a valid key every API call is 401 with a JSON body; every
/// configured key works (rotation).
#[tokio::test]
async fn api_keys_are_required() {
    let server = TestServer::start().await;
    let http = server.http();
    let publish = json!({"to": {"all": true}, "data": 1});
    let cases = [
        http.post(server.url("/api/publish")).json(&publish),
        http.post(server.url("/api/publish"))
            .bearer_auth("wrong-key-wrong-key")
            .json(&publish),
        http.post(server.url("/api/publish"))
            .header("Authorization", "Basic abc")
            .json(&publish),
        http.get(server.url("/api/stats"))
            .bearer_auth("integration-test-api-key-"),
        http.get(server.url("/api/users/1")),
        http.post(server.url("/api/users/1/disconnect")),
    ];
    for req in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let (status, body) = support::read(res).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let res = http
        .post(server.url("/api/publish"))
        .bearer_auth(API_KEY_2)
        .json(&publish)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Each bad request gets its status and a JSON error code.
#[tokio::test]
async fn bad_requests_get_json_errors() {
    let server = TestServer::with(|c| c.api_body_limit = 2048).await;
    let http = server.http();
    let key = support::API_KEY;
    let post = |body: &'static str, ct: &'static str| {
        http.post(server.url("/api/publish"))
            .bearer_auth(key)
            .header("Content-Type", ct)
            .body(body)
    };
    let big = Box::leak(
        format!(r#"{{"to":{{"all":true}},"data":"{}"}}"#, "x".repeat(4096)).into_boxed_str(),
    );
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (post("{nope", "application/json"), 400, "invalid_json"),
        (
            post(r#"{"to":{"all":true}}"#, "text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            http.post(server.url("/api/publish"))
                .bearer_auth(key)
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (post(big, "application/json"), 413, "body_too_large"),
        (
            post(r#"{"data":1}"#, "application/json"),
            400,
            "invalid_json",
        ),
        (post(r#"{"to":{}}"#, "application/json"), 400, "no_target"),
        (
            post(r#"{"to":{"all":false,"users":[]}}"#, "application/json"),
            400,
            "no_target",
        ),
        (
            post(r#"{"to":{"users":["ok","bad uid"]}}"#, "application/json"),
            400,
            "invalid_user",
        ),
        (
            post(r#"{"to":{"groups":[""]}}"#, "application/json"),
            400,
            "invalid_group",
        ),
        (
            post(r#"{"to":{"all":true},"event":""}"#, "application/json"),
            400,
            "invalid_event",
        ),
        (
            post(r#"{"to":{"all":true},"evnt":"x"}"#, "application/json"),
            400,
            "invalid_json",
        ),
        (
            post(r#"{"to":{"user":["1"]}}"#, "application/json"),
            400,
            "invalid_json",
        ),
        (
            post(r#"{"to":{"users":"1"}}"#, "application/json"),
            400,
            "invalid_json",
        ),
        (
            http.get(server.url("/api/nope")).bearer_auth(key),
            404,
            "not_found",
        ),
        (
            http.get(server.url("/api/publish")).bearer_auth(key),
            405,
            "method_not_allowed",
        ),
        (
            http.get(server.url("/api/users/bad%20uid"))
                .bearer_auth(key),
            400,
            "invalid_user",
        ),
        (
            http.put(server.url("/api/users/1/groups/bad%20group"))
                .bearer_auth(key),
            400,
            "invalid_group",
        ),
    ];
    for (req, status, code) in cases {
        let (s, body) = support::read(req.send().await.unwrap()).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The limit check on targets needs a body over 2 KiB: use a roomier server.
    let roomy = TestServer::with(|c| c.api_body_limit = 1 << 20).await;
    let (s, body) = roomy
        .publish(json!({"to": {"users": (0..10_001).map(|i| i.to_string()).collect::<Vec<_>>()}}))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("too_many_targets"))
    );
}

/// A publish whose `data` nests deeper than `--max-json-depth` is refused
/// with 400 `too_deep` and reaches no one; one as deep as the limit is
/// published.
#[tokio::test]
async fn too_deep_data_is_refused() {
    let server = TestServer::start().await;
    let limit = fanout::config::Config::default().max_json_depth;
    let mut c = server.client("u").await;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let post = |data: String| {
        server
            .http()
            .post(server.url("/api/publish"))
            .bearer_auth(support::API_KEY)
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"to":{{"users":["u"]}},"data":{data}}}"#))
            .send()
    };
    // 32,000 levels fill a 64 KiB body.
    for depth in [32_000, limit + 1] {
        let (s, body) = support::read(post(nested(depth)).await.unwrap()).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (400, Some("too_deep")),
            "{body}"
        );
    }
    let (s, body) = support::read(post(nested(limit)).await.unwrap()).await;
    assert_eq!(s, 200, "{body}");
    let m = c.recv_type("message").await;
    assert_eq!(
        m["id"], body["id"],
        "nothing deeper was delivered first: {m}"
    );
}

/// A request that announces a body over the limit is answered 413 at once,
/// without waiting for a body that never comes.
#[tokio::test]
async fn an_announced_oversized_body_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n",
        support::API_KEY
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(support::patience(), tcp.read(&mut buf))
            .await
            .expect("an answer before the patience ran out")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"body_too_large\""), "{text}");
}
