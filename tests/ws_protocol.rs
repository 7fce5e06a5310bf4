//! The client contract over real WebSocket connections: auth, every client
//! frame and its reply, and every kind of bad input.

mod support;

use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Client, SECRET, TestServer};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HMAC token signed with `secret` using `alg` (HS256 or HS384).
fn hmac_token(alg: &str, secret: &str, claims: &Value) -> String {
    let header = jsonwebtoken::Header::new(match alg {
        "HS384" => jsonwebtoken::Algorithm::HS384,
        _ => jsonwebtoken::Algorithm::HS256,
    });
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The welcome frame carries the connection, uid, node, expiry and heartbeat.
#[tokio::test]
async fn token_in_url_gets_welcome() {
    let server = TestServer::start().await;
    let token = server.token_with("42", &[], &[], Duration::from_secs(600));
    let mut c = Client::connect(&format!("{}?token={token}", server.ws_url())).await;
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["uid"], "42");
    assert_eq!(w["node"], "test-node");
    assert!(w["conn"].as_str().unwrap().starts_with("test-node-"));
    assert_eq!(w["heartbeat"], 25);
    let exp = w["exp"].as_u64().unwrap();
    assert!(exp >= now() + 590 && exp <= now() + 600, "{w}");
}

/// Without a token in the URL, the first frame authenticates.
#[tokio::test]
async fn auth_frame_authenticates() {
    let server = TestServer::start().await;
    let mut c = server.raw_client().await;
    let w = c
        .call(json!({"type": "auth", "token": server.token("7")}))
        .await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["uid"], "7");
    assert_eq!(
        c.call(json!({"type": "ping", "id": 1})).await,
        json!({"type": "pong", "id": 1})
    );
}

/// A bad token in the URL is refused with 401 and a JSON body, no upgrade.
#[tokio::test]
async fn bad_token_in_url_is_401_before_upgrade() {
    let server = TestServer::start().await;
    let forged = hmac_token(
        "HS256",
        "other-secret",
        &json!({"sub": "1", "exp": now() + 60}),
    );
    let (status, body) = Client::refused(format!("{}?token={forged}", server.ws_url())).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_token", "{body}");

    let expired = hmac_token("HS256", SECRET, &json!({"sub": "1", "exp": now() - 10}));
    let (status, body) = Client::refused(format!("{}?token={expired}", server.ws_url())).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_expired", "{body}");
}

/// Tokens that must never pass: forged, expired, `alg: none`, another
/// algorithm, no `sub`, a `sub` that is not a valid uid, garbage.
#[tokio::test]
async fn bad_tokens_in_auth_frame_get_error_and_3500() {
    let server = TestServer::start().await;
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "1", "exp": now() + 60}))
    );
    let cases = [
        (
            hmac_token(
                "HS256",
                "other-secret",
                &json!({"sub": "1", "exp": now() + 60}),
            ),
            "invalid_token",
        ),
        (
            hmac_token("HS256", SECRET, &json!({"sub": "1", "exp": now() - 5})),
            "token_expired",
        ),
        (none, "invalid_token"),
        (
            hmac_token("HS384", SECRET, &json!({"sub": "1", "exp": now() + 60})),
            "invalid_token",
        ),
        (
            hmac_token("HS256", SECRET, &json!({"exp": now() + 60})),
            "invalid_token",
        ),
        (
            hmac_token("HS256", SECRET, &json!({"sub": "a b", "exp": now() + 60})),
            "invalid_token",
        ),
        (
            hmac_token("HS256", SECRET, &json!({"sub": "1"})),
            "invalid_token",
        ),
        ("not.a.jwt".to_owned(), "invalid_token"),
    ];
    for (token, code) in cases {
        let mut c = server.raw_client().await;
        c.send(json!({"type": "auth", "token": token})).await;
        let (frames, closed) = c.recv_until_close().await;
        assert_eq!(frames[0]["type"], "error", "{frames:?}");
        assert_eq!(frames[0]["code"], code, "{token}: {frames:?}");
        assert_eq!(closed.code, 3500);
    }
    assert_eq!(server.stats().await["connections"], 0);
}

/// Anything but an auth frame first is refused with auth_required.
#[tokio::test]
async fn first_frame_must_be_auth() {
    let server = TestServer::start().await;
    let mut c = server.raw_client().await;
    c.send(json!({"type": "join", "group": "g"})).await;
    let (frames, closed) = c.recv_until_close().await;
    assert_eq!(frames[0]["code"], "auth_required");
    assert_eq!(frames[1]["type"], "bye");
    assert_eq!(frames[1]["reconnect"], false);
    assert_eq!(closed.code, 3500);
}

/// A client that never authenticates is closed after auth_timeout.
#[tokio::test]
async fn silent_unauthenticated_client_times_out() {
    let server = TestServer::with(|c| c.auth_timeout = Duration::from_millis(300)).await;
    let mut c = server.raw_client().await;
    let (frames, closed) = c.recv_until_close().await;
    assert_eq!(frames[0]["code"], "auth_timeout");
    assert_eq!(closed.code, 3500);
}

/// join → joined, leave → left, ping → pong, each echoing the id; join and
/// leave are idempotent.
#[tokio::test]
async fn every_frame_gets_its_reply() {
    let server = TestServer::start().await;
    let mut c = server.client("1").await;
    assert_eq!(
        support::positionless(
            &c.call(json!({"type": "join", "id": 1, "group": "room-1"}))
                .await
        ),
        json!({"type": "joined", "id": 1, "group": "room-1"})
    );
    assert_eq!(
        support::positionless(
            &c.call(json!({"type": "join", "id": 2, "group": "room-1"}))
                .await
        ),
        json!({"type": "joined", "id": 2, "group": "room-1"})
    );
    assert_eq!(server.stats().await["groups"], 1);
    assert_eq!(
        c.call(json!({"type": "leave", "id": 3, "group": "room-1"}))
            .await,
        json!({"type": "left", "id": 3, "group": "room-1"})
    );
    assert_eq!(
        c.call(json!({"type": "leave", "id": 4, "group": "room-1"}))
            .await,
        json!({"type": "left", "id": 4, "group": "room-1"})
    );
    assert_eq!(server.stats().await["groups"], 0);
    assert_eq!(
        c.call(json!({"type": "ping", "id": 5})).await,
        json!({"type": "pong", "id": 5})
    );
    assert_eq!(
        c.call(json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

/// A client publish is acked and reaches every member, sender included,
/// with `from`; non-members get nothing.
#[tokio::test]
async fn client_publish_reaches_the_group_with_from() {
    let server = TestServer::start().await;
    let mut sender = server.client("alice").await;
    let mut member = server.client("bob").await;
    let mut outsider = server.client("carol").await;
    sender.join("room-1").await;
    member.join("room-1").await;
    let ack = sender
        .call(json!({"type": "publish", "id": 9, "group": "room-1", "event": "chat", "data": {"text": "hi"}}))
        .await;
    assert_eq!(ack, json!({"type": "ack", "id": 9}));
    for c in [&mut sender, &mut member] {
        let m = c.recv_type("message").await;
        assert_eq!(m["channel"], "group:room-1");
        assert_eq!(m["event"], "chat");
        assert_eq!(m["data"], json!({"text": "hi"}));
        assert_eq!(m["from"], "alice");
        assert!(m["id"].is_string() && m["ts"].is_u64(), "{m}");
    }
    assert_eq!(
        server.frames_until_marker(&mut outsider, "carol").await,
        Vec::<Value>::new()
    );
}

/// `data` nested as deep as `--max-json-depth` allows.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// A publish nesting deeper than `--max-json-depth` (32,000 levels in a
/// 64 KiB frame, or one level too many) is refused with `too_deep`, is not
/// delivered, and leaves the connection usable; one exactly as deep as the
/// limit is delivered.
#[tokio::test]
async fn too_deep_publish_is_refused_and_the_connection_stays() {
    let server = TestServer::start().await;
    let limit = fanout::config::Config::default().max_json_depth;
    let mut sender = server.client("alice").await;
    let mut member = server.client("bob").await;
    sender.join("room-1").await;
    member.join("room-1").await;
    for (id, depth) in [(1, 32_000), (2, limit + 1)] {
        let frame = format!(
            r#"{{"type":"publish","id":{id},"group":"room-1","data":{}}}"#,
            nested(depth)
        );
        sender.send_raw(Message::text(frame)).await;
        let r = sender.recv().await;
        assert_eq!(
            (&r["type"], &r["id"], &r["code"]),
            (&json!("error"), &json!(id), &json!("too_deep")),
            "{r}"
        );
    }
    let frame = format!(
        r#"{{"type":"publish","id":3,"group":"room-1","data":{}}}"#,
        nested(limit)
    );
    sender.send_raw(Message::text(frame)).await;
    assert_eq!(sender.recv().await, json!({"type": "ack", "id": 3}));
    // Each member's first message (the sender's too) is the one within
    // the limit.
    let want: Value = serde_json::from_str(&nested(limit)).unwrap();
    for c in [&mut member, &mut sender] {
        let m = c.recv_type("message").await;
        assert_eq!(m["data"], want, "{m}");
    }
    assert_eq!(
        sender.call(json!({"type": "ping", "id": 4})).await,
        json!({"type": "pong", "id": 4})
    );
}

/// Joins follow the token's `groups` claim, including prefix patterns.
#[tokio::test]
async fn joins_are_allowed_by_name_and_pattern_only() {
    let server = TestServer::start().await;
    let token = server.token_with("1", &["lobby", "room-*"], &[], Duration::from_secs(60));
    let mut c = server.client_with_token(&token).await;
    c.join("lobby").await;
    c.join("room-7").await;
    for (id, group) in [(1, "lobby2"), (2, "room"), (3, "secret")] {
        let r = c
            .call(json!({"type": "join", "id": id, "group": group}))
            .await;
        assert_eq!(r["type"], "error");
        assert_eq!(r["id"], id);
        assert_eq!(r["code"], "forbidden", "{group}");
    }
    assert_eq!(server.stats().await["groups"], 2);
}

/// Publishing needs the token's `publish` claim.
#[tokio::test]
async fn publish_without_claim_is_forbidden() {
    let server = TestServer::start().await;
    let token = server.token_with("1", &["*"], &["news"], Duration::from_secs(60));
    let mut c = server.client_with_token(&token).await;
    c.join("chat").await;
    let r = c
        .call(json!({"type": "publish", "id": 1, "group": "chat", "data": 1}))
        .await;
    assert_eq!(
        (r["code"].as_str(), r["id"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    let r = c
        .call(json!({"type": "publish", "id": 2, "group": "news", "data": 1}))
        .await;
    assert_eq!(r, json!({"type": "ack", "id": 2}));
}

/// Each malformed frame gets its documented error; the connection stays
/// open and another client on the same group notices nothing.
#[tokio::test]
async fn bad_frames_get_errors_and_disturb_nobody() {
    let server = TestServer::with(|c| c.max_groups = 2).await;
    let mut bad = server.client("bad").await;
    let mut good = server.client("good").await;
    bad.join("g").await;
    good.join("g").await;
    let cases: Vec<(Message, &str, Option<i64>)> = vec![
        (Message::text("{not json"), "invalid_json", None),
        (Message::text("[1,2]"), "invalid_frame", None),
        (Message::text(r#"{"id":1}"#), "invalid_frame", Some(1)),
        (
            Message::text(r#"{"type":"dance","id":2}"#),
            "unknown_type",
            Some(2),
        ),
        (
            Message::text(r#"{"type":"join","id":3}"#),
            "invalid_frame",
            Some(3),
        ),
        (
            Message::text(r#"{"type":"join","id":4,"group":"bad group"}"#),
            "invalid_group",
            Some(4),
        ),
        (
            Message::text(format!(
                r#"{{"type":"join","id":5,"group":"{}"}}"#,
                "g".repeat(129)
            )),
            "invalid_group",
            Some(5),
        ),
        (
            Message::text(r#"{"type":"publish","id":6,"group":"g","event":""}"#),
            "invalid_event",
            Some(6),
        ),
        (
            Message::text(r#"{"type":"refresh","id":7}"#),
            "invalid_frame",
            Some(7),
        ),
        (
            Message::text(r#"{"type":"auth","token":"x"}"#),
            "already_authenticated",
            None,
        ),
        (
            Message::text(r#"{"type":"join","id":"x","group":"g"}"#),
            "invalid_frame",
            None,
        ),
        (Message::binary(vec![1, 2, 3]), "binary_not_supported", None),
        (
            Message::text(r#"{"type":"join","id":8,"group":"g2"}"#),
            "",
            None,
        ),
        (
            Message::text(r#"{"type":"join","id":9,"group":"g3"}"#),
            "too_many_groups",
            Some(9),
        ),
    ];
    for (frame, code, id) in cases {
        bad.send_raw(frame.clone()).await;
        let r = bad.recv().await;
        if code.is_empty() {
            assert_eq!(r["type"], "joined");
            continue;
        }
        assert_eq!(r["type"], "error", "{frame:?}");
        assert_eq!(r["code"], code, "{frame:?} → {r}");
        assert_eq!(r["id"].as_i64(), id, "{frame:?} → {r}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still open, still a member, and the other member saw nothing odd.
    let id = server
        .publish_ok(json!({"groups": ["g"]}), "after", json!(1))
        .await;
    assert_eq!(bad.recv_type("message").await["id"], id);
    let m = good.recv().await;
    assert_eq!(m["id"], id, "the good client got only the message: {m}");
}

/// A frame over the size limit closes the connection with 1009, whether it
/// is a little over (read, then refused) or far over (cut off mid-read),
/// before or after authentication; other clients are unaffected.
#[tokio::test]
async fn oversize_frame_closes_with_1009() {
    let server = TestServer::with(|c| c.max_frame = 1024).await;
    let mut other = server.client("other").await;
    for (pad, authed) in [
        (2_000, true),
        (50_000, true),
        (2_000, false),
        (50_000, false),
    ] {
        let mut c = if authed {
            server.client("big").await
        } else {
            server.raw_client().await
        };
        c.send(json!({"type": "ping", "pad": "x".repeat(pad)}))
            .await;
        let (frames, closed) = c.recv_until_close().await;
        assert!(
            frames.iter().any(|f| f["code"] == "message_too_big"),
            "{pad}: {frames:?}"
        );
        assert_eq!(closed.code, 1009, "{pad}");
    }
    assert_eq!(
        other.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
    assert_eventually!(server.stats().await["connections"] == 1);
}

/// Too many bad frames in a row is a protocol violation (3501).
#[tokio::test]
async fn endless_bad_frames_close_with_3501() {
    let server = TestServer::start().await;
    let mut c = server.client("1").await;
    for _ in 0..20 {
        c.send_raw(Message::text("nope")).await;
    }
    let (frames, closed) = c.recv_until_close().await;
    let errors = frames.iter().filter(|f| f["type"] == "error").count();
    assert_eq!(errors, 17, "16 tolerated, then too_many_errors: {frames:?}");
    assert_eq!(frames[16]["code"], "too_many_errors");
    assert_eq!(closed.code, 3501);
}

/// Browsers from other origins are refused; same-origin, listed origins
/// and non-browser clients pass.
#[tokio::test]
async fn origin_allowlist_guards_the_websocket() {
    let server =
        TestServer::with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let url = format!("{}?token={}", server.ws_url(), server.token("1"));
    let with_origin = |origin: &str| {
        let mut req = url.clone().into_client_request().unwrap();
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
        req
    };
    let (status, body) = Client::refused(with_origin("https://evil.example.com")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    for ok in [
        "https://app.example.com",
        &format!("http://{}", server.addr),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(with_origin(ok))
            .await
            .unwrap();
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("no welcome")
        };
        assert!(t.contains("welcome"), "{ok}");
    }
    server.client("no-origin").await;
    // Same origin when the Host header spells out the default port.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("Host", HeaderValue::from_static("fanout.example.com:80"));
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("http://fanout.example.com"),
    );
    tokio_tungstenite::connect_async(req).await.unwrap();
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("Host", HeaderValue::from_static("fanout.example.com:8443"));
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://fanout.example.com"),
    );
    assert_eq!(Client::refused(req).await.0, 403);

    let open = TestServer::with(|c| c.allowed_origins = vec!["*".into()]).await;
    let url = format!("{}?token={}", open.ws_url(), open.token("1"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_static("https://anywhere.example"),
    );
    tokio_tungstenite::connect_async(req).await.unwrap();
}

/// Plain HTTP on /ws is told to upgrade, as JSON.
#[tokio::test]
async fn plain_http_on_ws_is_a_json_error() {
    let server = TestServer::start().await;
    let res = server.http().get(server.url("/ws")).send().await.unwrap();
    let (status, body) = support::read(res).await;
    assert!(status == 400 || status == 426, "{status}");
    assert_eq!(body["error"]["code"], "websocket_required");
    // An upgrade whose Sec-WebSocket-Key is empty or not 16 bytes of
    // base64 is refused before it upgrades.
    for key in ["", "c2hvcnQ=", "not base64!!"] {
        let res = server
            .http()
            .get(server.url("/ws"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", key)
            .send()
            .await
            .unwrap();
        let (status, body) = support::read(res).await;
        assert_eq!(status, 400, "key {key:?}: {body}");
        assert_eq!(body["error"]["code"], "websocket_required", "{key:?}");
    }
}

/// RS256 and ES256 servers verify with a public key (file or inline PEM),
/// and refuse HS256 tokens, including one "signed" with the public key as
/// an HMAC secret (the algorithm-confusion attack).
#[tokio::test]
async fn public_key_algorithms_are_pinned() {
    use fanout::auth::JwtAlgorithm;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let cases = [
        (
            JwtAlgorithm::Rs256,
            jsonwebtoken::Algorithm::RS256,
            "rs256",
            true,
        ),
        (
            JwtAlgorithm::Es256,
            jsonwebtoken::Algorithm::ES256,
            "es256",
            false,
        ),
    ];
    for (alg, jwt_alg, name, inline) in cases {
        let public_path = format!("{dir}/{name}-public.pem");
        let public = std::fs::read_to_string(&public_path).unwrap();
        let private = std::fs::read(format!("{dir}/{name}-private.pem")).unwrap();
        let server = TestServer::with(|c| {
            c.jwt_algorithm = alg;
            c.jwt.secret = None;
            c.jwt_public_key = Some(if inline {
                public.clone()
            } else {
                public_path.clone()
            });
        })
        .await;
        let claims = json!({"sub": "pk", "exp": now() + 60});
        let key = match jwt_alg {
            jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&private),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&private),
        }
        .unwrap();
        let good =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jwt_alg), &claims, &key).unwrap();
        let mut c = server.client_with_token(&good).await;
        assert_eq!(
            c.call(json!({"type": "ping", "id": 1})).await["type"],
            "pong"
        );

        for bad in [
            hmac_token("HS256", &public, &claims),
            hmac_token("HS256", SECRET, &claims),
        ] {
            let (status, body) = Client::refused(format!("{}?token={bad}", server.ws_url())).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("invalid_token")),
                "{name}"
            );
        }
    }
}
