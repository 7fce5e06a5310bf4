//! No message lost across a reconnect: positions in every frame, and a
//! client that comes back with `since` gets what it missed, in order, with
//! no gap and no duplicate across the seam to live delivery, or
//! `recovered: false` when history cannot give it all. In-process broker;
//! the same on Redis is in redis_history.rs.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use support::{Client, TestServer};

/// `{"offset": N, "epoch": E}` of a frame that carries them.
fn position_of(frame: &Value) -> Value {
    json!({"offset": frame["offset"], "epoch": frame["epoch"]})
}

/// The next `n` message frames.
async fn messages(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = c.recv().await;
        if f["type"] == "message" {
            out.push(f);
        }
    }
    out
}

async fn publish_to_user(server: &TestServer, uid: &str, n: u64) -> Value {
    let (s, body) = server
        .publish(json!({"to": {"users": [uid]}, "event": "e", "data": n}))
        .await;
    assert_eq!(s, 200, "{body}");
    body
}

/// Offsets count each channel's messages; welcome says where a connection
/// starts; a publish answers with the positions it got.
#[tokio::test]
async fn every_message_carries_its_channel_position() {
    let server = TestServer::start().await;
    let (mut c, welcome) = server.client_welcome("p1").await;
    let start = &welcome["positions"]["user:p1"];
    assert_eq!(start["offset"], 0, "{welcome}");
    assert!(
        welcome["positions"]["all"]["epoch"].is_string(),
        "{welcome}"
    );
    assert!(welcome.get("recovered").is_none(), "{welcome}");
    for n in 1..=3 {
        let body = publish_to_user(&server, "p1", n).await;
        let m = &messages(&mut c, 1).await[0];
        assert_eq!(m["offset"], n);
        assert_eq!(m["epoch"], start["epoch"]);
        assert_eq!(body["positions"]["user:p1"], position_of(m), "{body}");
    }
}

/// A client that reconnects with the position of the last message it saw
/// gets the ones published meanwhile, in order and unchanged, then live
/// ones, over the auth frame and over `?since=`.
#[tokio::test]
async fn a_reconnect_resumes_where_the_client_was() {
    let server = TestServer::start().await;
    let (mut c, _) = server.client_welcome("r1").await;
    publish_to_user(&server, "r1", 1).await;
    let seen = messages(&mut c, 1).await.remove(0);
    drop(c);
    let mut missed = Vec::new();
    for n in 2..=4 {
        missed.push(publish_to_user(&server, "r1", n).await["id"].clone());
    }
    let (mut c, welcome) = server
        .resume("r1", json!({"user:r1": position_of(&seen)}))
        .await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["recovered"], json!({"user:r1": true}), "{welcome}");
    assert_eq!(welcome["positions"]["user:r1"]["offset"], 4, "{welcome}");
    let replayed = messages(&mut c, 3).await;
    let ids: Vec<&Value> = replayed.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, missed.iter().collect::<Vec<_>>());
    let offsets: Vec<u64> = replayed
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!(replayed[0]["data"], 2, "original content");
    let live = publish_to_user(&server, "r1", 5).await;
    let m = messages(&mut c, 1).await.remove(0);
    assert_eq!((&m["id"], &m["offset"]), (&live["id"], &json!(5)));

    // The same through ?token=...&since=<channel>~<offset>~<epoch>.
    drop(c);
    publish_to_user(&server, "r1", 6).await;
    let since = format!("user:r1~5~{}", m["epoch"].as_str().unwrap());
    let url = format!(
        "{}?token={}&since={since}",
        server.ws_url(),
        server.token("r1")
    );
    let mut c = Client::connect(&url).await;
    let welcome = c.recv().await;
    assert_eq!(welcome["recovered"]["user:r1"], true, "{welcome}");
    assert_eq!(messages(&mut c, 1).await[0]["offset"], 6);
}

/// A group resumes with `join` + `since`; `joined` says where it starts
/// and that it recovered, and comes before the replayed messages.
#[tokio::test]
async fn a_join_resumes_a_group() {
    let server = TestServer::start().await;
    let mut c = server.client("j1").await;
    let joined = c
        .call(json!({"type": "join", "id": 1, "group": "room"}))
        .await;
    assert_eq!(joined["offset"], 0, "{joined}");
    server
        .publish_ok(json!({"groups": ["room"]}), "e", json!(1))
        .await;
    let seen = messages(&mut c, 1).await.remove(0);
    drop(c);
    server
        .publish_ok(json!({"groups": ["room"]}), "e", json!(2))
        .await;
    server
        .publish_ok(json!({"groups": ["room"]}), "e", json!(3))
        .await;
    let mut c = server.client("j1").await;
    let joined = c
        .call(json!({"type": "join", "id": 2, "group": "room", "since": position_of(&seen)}))
        .await;
    assert_eq!(
        (&joined["type"], &joined["recovered"], &joined["offset"]),
        (&json!("joined"), &json!(true), &json!(3)),
        "{joined}"
    );
    let data: Vec<Value> = messages(&mut c, 2)
        .await
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!(2), json!(3)]);

    // Or in the auth frame: the group is joined and resumed at once.
    drop(c);
    server
        .publish_ok(json!({"groups": ["room"]}), "e", json!(4))
        .await;
    let since = json!({"group:room": {"offset": 3, "epoch": joined["epoch"]}});
    let (mut c, welcome) = server.resume("j1", since).await;
    assert_eq!(
        welcome["recovered"],
        json!({"group:room": true}),
        "{welcome}"
    );
    assert!(welcome["positions"]["group:room"].is_object(), "{welcome}");
    assert_eq!(messages(&mut c, 1).await[0]["data"], 4);
    server
        .publish_ok(json!({"groups": ["room"]}), "e", json!(5))
        .await;
    assert_eq!(
        messages(&mut c, 1).await[0]["data"],
        5,
        "it is in the group"
    );
}

/// When history no longer holds everything after the position (trimmed,
/// another epoch, more than the replay cap, a position from the future),
/// the channel comes back `recovered: false` with nothing replayed, and
/// live delivery carries on.
#[tokio::test]
async fn a_position_history_cannot_serve_is_not_recovered() {
    let server = TestServer::with(|c| {
        c.history_user_size = 3;
        c.max_recovery = 5;
    })
    .await;
    let (c, welcome) = server.client_welcome("t1").await;
    let epoch = welcome["positions"]["user:t1"]["epoch"].clone();
    drop(c);
    for n in 1..=4 {
        publish_to_user(&server, "t1", n).await;
    }
    for since in [
        json!({"offset": 0, "epoch": epoch}),     // 1 was trimmed
        json!({"offset": 3, "epoch": "another"}), // not this epoch
        json!({"offset": 9, "epoch": epoch}),     // beyond the top
    ] {
        let (mut c2, welcome) = server.resume("t1", json!({"user:t1": since})).await;
        assert_eq!(
            welcome["recovered"],
            json!({"user:t1": false}),
            "{since} {welcome}"
        );
        assert!(welcome["positions"]["user:t1"]["offset"].as_u64() >= Some(4));
        let live = publish_to_user(&server, "t1", 100).await;
        // Nothing replayed: the first message is the live one.
        assert_eq!(messages(&mut c2, 1).await[0]["id"], live["id"]);
    }
    // More missed than --max-recovery (history holds them all).
    let server = TestServer::with(|c| c.max_recovery = 2).await;
    let (c, welcome) = server.client_welcome("t2").await;
    drop(c);
    for n in 1..=3 {
        publish_to_user(&server, "t2", n).await;
    }
    let since = json!({"user:t2": welcome["positions"]["user:t2"]});
    let (_c, welcome) = server.resume("t2", since).await;
    assert_eq!(welcome["recovered"], json!({"user:t2": false}), "{welcome}");
}

/// A position for a channel the token may not read, or a malformed one,
/// gets an error and nothing else: the connection is refused, nothing is
/// replayed, and other clients see nothing.
#[tokio::test]
async fn resuming_never_reads_what_the_token_does_not_allow() {
    let server = TestServer::start().await;
    let mut other = server.client("victim").await;
    server
        .publish_ok(json!({"users": ["victim"]}), "secret", json!("s"))
        .await;
    let secret = messages(&mut other, 1).await.remove(0);
    let at0 = json!({"offset": 0, "epoch": secret["epoch"]});
    let token = server.token_with("mallory", &["room-*"], &[], Duration::from_secs(60));

    let cases = [
        (json!({"user:victim": at0}), "forbidden"),
        (
            json!({"group:admins": {"offset": 0, "epoch": "e"}}),
            "forbidden",
        ),
        (
            json!({"node:x": {"offset": 0, "epoch": "e"}}),
            "invalid_position",
        ),
        (
            json!({"user:mallory": {"offset": -1, "epoch": "e"}}),
            "invalid_position",
        ),
        (
            json!({"user:mallory": {"offset": 1, "epoch": "not valid"}}),
            "invalid_position",
        ),
        (json!([1, 2]), "invalid_position"),
    ];
    for (since, code) in cases {
        let mut c = server.raw_client().await;
        let error = c
            .call(json!({"type": "auth", "token": token, "since": since}))
            .await;
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("error"), &json!(code)),
            "{since}"
        );
        let (frames, closed) = c.recv_until_close().await;
        assert_eq!(closed.code, 3500, "{since}: {frames:?}");
        assert!(frames.iter().all(|f| f["type"] != "message"), "{frames:?}");
    }
    // A join with a bad since is an error frame; the connection stays.
    let mut c = server.client_with_token(&token).await;
    let r = c
        .call(json!({"type": "join", "id": 7, "group": "room-1", "since": {"offset": "x"}}))
        .await;
    assert_eq!(
        (&r["code"], &r["id"]),
        (&json!("invalid_position"), &json!(7)),
        "{r}"
    );
    let r = c
        .call(json!({"type": "join", "id": 8, "group": "admins", "since": at0}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    // ?since= that does not parse is refused before the upgrade.
    let url = format!("{}?token={token}&since=user:mallory~x~e", server.ws_url());
    let (status, body) = Client::refused(url.as_str()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_position"))
    );
    // The victim saw nothing more.
    assert_eq!(
        server.frames_until_marker(&mut other, "victim").await,
        Vec::<Value>::new()
    );
}

/// The hard case: a client keeps reconnecting with `since` while a
/// publisher publishes as fast as it can. Across every seam it sees each
/// message exactly once and in order.
#[tokio::test]
async fn resumes_racing_with_publishes_lose_and_repeat_nothing() {
    // History deep enough for however far the publisher gets ahead of the
    // reading client: this test is about the seam, not about trimming.
    let server = Arc::new(
        TestServer::with(|c| {
            c.history_user_size = 100_000;
            c.history_group_size = 100_000;
            c.max_recovery = 100_000;
        })
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (server, stop, published) = (server.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let to = json!({"groups": ["race"], "users": ["racer"]});
                server.publish_ok(to, "n", json!(n)).await;
                published.store(n, Ordering::Relaxed);
            }
        })
    };
    let mut positions = serde_json::Map::new();
    let (mut seen_group, mut seen_user) = (0u64, 0u64);
    for round in 0..12 {
        let (mut c, welcome) = if positions.is_empty() {
            let (mut c, w) = server.client_welcome("racer").await;
            let joined = c
                .call(json!({"type": "join", "id": 1, "group": "race"}))
                .await;
            positions.insert("group:race".into(), position_of(&joined));
            positions.insert("user:racer".into(), w["positions"]["user:racer"].clone());
            (c, w)
        } else {
            server
                .resume("racer", Value::Object(positions.clone()))
                .await
        };
        if round > 0 {
            assert_eq!(
                welcome["recovered"],
                json!({"group:race": true, "user:racer": true}),
                "{welcome}"
            );
        }
        // Read a while, then drop the connection mid-stream.
        for _ in 0..(20 + round * 7) {
            let m = messages(&mut c, 1).await.remove(0);
            let n = m["data"].as_u64().unwrap();
            let channel = m["channel"].as_str().unwrap().to_owned();
            let last = if channel == "group:race" {
                &mut seen_group
            } else {
                &mut seen_user
            };
            if *last > 0 {
                assert_eq!(
                    n,
                    *last + 1,
                    "round {round}: {channel} went from {last} to {n}"
                );
            }
            *last = n;
            positions.insert(channel, position_of(&m));
        }
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    assert!(
        seen_group > 100 && seen_user > 100,
        "{seen_group} {seen_user}"
    );
    assert!(published.load(Ordering::Relaxed) >= seen_group.max(seen_user));
}

/// A publish retried with the same `idempotency_key` is answered with the
/// first one's id and positions and delivers nothing twice; a new key
/// publishes again.
#[tokio::test]
async fn an_idempotent_retry_delivers_nothing_twice() {
    let server = TestServer::start().await;
    let mut c = server.client("i1").await;
    c.join("orders").await;
    let body = json!({
        "to": {"users": ["i1", "nobody"], "groups": ["orders"]},
        "event": "order.paid",
        "data": {"order": 7},
        "idempotency_key": "order-7-paid",
    });
    let (s1, first) = server.publish(body.clone()).await;
    let (s2, again) = server.publish(body).await;
    assert_eq!((s1, s2), (200, 200), "{first} {again}");
    assert_eq!(first, again);
    assert_eq!(first["offline_users"], json!(["nobody"]));
    assert_eq!(first["id"], "key:order-7-paid");
    let got = messages(&mut c, 2).await;
    assert!(got.iter().all(|m| m["id"] == first["id"]), "{got:?}");
    assert_eq!(
        server.frames_until_marker(&mut c, "i1").await,
        Vec::<Value>::new(),
        "the retry delivered nothing"
    );
    let (s, bad) = server
        .publish(json!({"to": {"users": ["i1"]}, "idempotency_key": "has space"}))
        .await;
    assert_eq!(
        (s, &bad["error"]["code"]),
        (400, &json!("invalid_idempotency_key"))
    );
}
