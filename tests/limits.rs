//! Abuse limits through real clients: per-connection publish, join and
//! frame rates, the per-user connection cap (WebSocket and SSE), and
//! per-API-key request rates, each with its documented error, close code,
//! hint and metric, and with other clients undisturbed.
//!
//! Rates are set to 1 per second so that a burst sent back to back can
//! only be admitted as far as the configured burst (plus at most a cell or
//! two that time refills while the frames are sent).

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::{API_KEY, API_KEY_2, Client, SseClient, TestServer, metric_value};

async fn metrics(server: &TestServer) -> String {
    let url = format!("http://{}/metrics", server.app().internal_addr());
    server
        .http()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads replies (skipping anything else) until one for each of `ids`.
async fn replies(client: &mut Client, ids: &[i64]) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let v = client.recv().await;
        if v["id"].as_i64().is_some_and(|id| ids.contains(&id)) {
            got.push(v);
        }
    }
    got
}

#[tokio::test]
async fn publishes_over_the_rate_are_refused_with_a_hint_and_the_connection_stays() {
    let server = TestServer::with(|c| {
        c.client_publish_rate = 1;
        c.client_publish_burst = 3;
    })
    .await;
    let mut member = server.client("member").await;
    member.join("room").await;
    let mut sender = server.client("sender").await;

    let ids: Vec<i64> = (1..=12).collect();
    for id in &ids {
        sender
            .send(json!({"type": "publish", "id": id, "group": "room", "data": id}))
            .await;
    }
    let got = replies(&mut sender, &ids).await;
    let acked: Vec<i64> = got
        .iter()
        .filter(|r| r["type"] == "ack")
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let limited: Vec<&Value> = got.iter().filter(|r| r["type"] == "error").collect();
    assert!(acked.len() >= 3, "the burst passes: {got:?}");
    assert!(
        !limited.is_empty(),
        "12 publishes at once exceed 3 + 1/s: {got:?}"
    );
    assert_eq!(acked.len() + limited.len(), ids.len(), "{got:?}");
    for r in &limited {
        assert_eq!(r["code"], "rate_limited", "{r}");
        let hint = r["retry_after_ms"].as_u64().expect("a retry hint");
        assert!(
            (1..=1_000).contains(&hint),
            "at most one period at 1/s: {r}"
        );
    }

    // The member got exactly the acknowledged messages, in order.
    let marker = server
        .publish_ok(json!({"users": ["member"]}), "marker", json!(null))
        .await;
    let delivered: Vec<i64> = member
        .read_until(&marker)
        .await
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["data"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered, acked);

    // Refusals are not bad frames: the connection is open and usable.
    sender.sync().await;
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(&m, "fanout_rate_limited_total", r#"limit="publish""#),
        limited.len() as f64
    );
    // Backends are not limited by the clients' rate.
    for _ in 0..10 {
        server
            .publish_ok(json!({"groups": ["room"]}), "from-backend", json!(1))
            .await;
    }
}

#[tokio::test]
async fn joins_over_the_rate_are_refused_and_a_later_join_passes() {
    let server = TestServer::with(|c| {
        c.client_join_rate = 1;
        c.client_join_burst = 2;
    })
    .await;
    let mut c = server.client("u").await;
    let ids: Vec<i64> = (1..=8).collect();
    for id in &ids {
        c.send(json!({"type": "join", "id": id, "group": format!("g{id}")}))
            .await;
    }
    let got = replies(&mut c, &ids).await;
    let joined = got.iter().filter(|r| r["type"] == "joined").count();
    let limited: Vec<&Value> = got.iter().filter(|r| r["code"] == "rate_limited").collect();
    assert!(joined >= 2 && !limited.is_empty(), "{got:?}");
    assert_eq!(joined + limited.len(), ids.len(), "{got:?}");

    // Once the hint has passed, a join is accepted again.
    let wait = limited
        .iter()
        .filter_map(|r| r["retry_after_ms"].as_u64())
        .max()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let r = c
        .call(json!({"type": "join", "id": 100, "group": "later"}))
        .await;
    assert_eq!(r["type"], "joined", "{r}");
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(&m, "fanout_rate_limited_total", r#"limit="join""#),
        limited.len() as f64
    );
}

#[tokio::test]
async fn a_frame_flood_is_closed_with_3013_and_others_are_served() {
    let server = TestServer::with(|c| {
        c.client_frame_rate = 1;
        c.client_frame_burst = 5;
        c.client_join_burst = 5;
        c.max_groups = 5;
    })
    .await;
    let mut bystander = server.client("bystander").await;
    let mut flooder = server.client("flooder").await;
    for id in 0..50 {
        // The server may close the connection mid-way: stop sending then.
        if flooder
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                json!({"type": "ping", "id": id}).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let (frames, closed) = flooder.recv_until_close().await;
    assert_eq!(closed.code, 3013, "{frames:?}");
    assert_eq!(closed.reason, "too_many_requests");
    let error = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("an error before the close");
    assert_eq!(error["code"], "rate_limited", "{error}");
    let bye = frames.last().unwrap();
    assert_eq!(bye["type"], "bye", "{frames:?}");
    assert_eq!(bye["reconnect"], true);
    assert!(bye["retry_after_ms"].as_u64().unwrap() >= 1_000, "{bye}");
    let pongs = frames.iter().filter(|f| f["type"] == "pong").count();
    assert!((5..50).contains(&pongs), "the burst was answered: {pongs}");

    // The other connection never noticed.
    let id = server
        .publish_ok(json!({"users": ["bystander"]}), "still-here", json!(1))
        .await;
    assert!(bystander.read_until(&id).await.is_empty());
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(&m, "fanout_rate_limited_total", r#"limit="frames""#),
        1.0
    );
    // Counted once the connection's task has ended.
    let disconnects = || async {
        metric_value(
            &metrics(&server).await,
            "fanout_disconnects_total",
            r#"reason="too_many_requests",code="3013""#,
        )
    };
    assert_eventually!(disconnects().await == 1.0);
}

#[tokio::test]
async fn a_user_over_the_connection_cap_is_refused_on_connect_over_ws_and_sse() {
    let server = TestServer::with(|c| c.max_user_connections = 2).await;
    let first = server.client("greedy").await;
    let _second = server.client("greedy").await;

    // A third WebSocket: an error instead of welcome, then close 3014.
    let mut third = Client::connect(&format!(
        "{}?token={}",
        server.ws_url(),
        server.token("greedy")
    ))
    .await;
    let (frames, closed) = third.recv_until_close().await;
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    assert_eq!(frames[0]["code"], "connection_limit", "{frames:?}");
    assert_eq!(closed.code, 3014);
    let bye = &frames[1];
    assert_eq!(bye["reason"], "connection_limit", "{bye}");
    assert!(bye["retry_after_ms"].as_u64().unwrap() >= 10_000, "{bye}");

    // The same over SSE: 429 with Retry-After, before any stream.
    let res = server
        .http()
        .get(server.url(&format!("/sse?token={}", server.token("greedy"))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 10, "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "connection_limit", "{body}");

    // Other users are not affected, and presence counts only the two.
    let _other = server.client("modest").await;
    let (_, user) = server
        .api(reqwest::Method::GET, "/api/users/greedy", None)
        .await;
    assert_eq!(user["connections"], 2, "{user}");

    // Once one of the two ends, the user may connect again.
    drop(first);
    assert_eventually!(server.app().node().hub().user_connections("greedy") < 2);
    let mut again = server.client("greedy").await;
    again.sync().await;
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(
            &m,
            "fanout_connections_rejected_total",
            r#"reason="user_limit""#
        ),
        2.0
    );
    // An SSE stream counts against the cap like a WebSocket.
    drop(again);
    let sse = server
        .http()
        .get(server.url(&format!("/sse?token={}", server.token("capped"))))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = SseClient::new(sse);
    sse.next_of("welcome").await;
}

#[tokio::test]
async fn api_requests_over_a_keys_rate_get_429_with_retry_after_and_other_keys_pass() {
    let server = TestServer::with(|c| {
        c.api_rate = 1;
        c.api_burst = 2;
    })
    .await;
    let publish = |key: &'static str| {
        let http = server.http().clone();
        let url = server.url("/api/publish");
        async move {
            let res = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"to": {"users": ["u"]}, "data": 1}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let retry = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (status, retry, res.json::<Value>().await.unwrap())
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(publish(API_KEY).await);
    }
    let ok = statuses.iter().filter(|(s, ..)| *s == 200).count();
    let limited: Vec<_> = statuses.iter().filter(|(s, ..)| *s == 429).collect();
    assert!(ok >= 2 && !limited.is_empty(), "{statuses:?}");
    assert_eq!(ok + limited.len(), statuses.len(), "{statuses:?}");
    for (_, retry, body) in &limited {
        assert_eq!(*retry, Some(1), "whole seconds, rounded up: {body}");
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert!(body["error"]["retry_after_ms"].as_u64().unwrap() <= 1_000);
    }
    // The limit is per key.
    let (status, _, body) = publish(API_KEY_2).await;
    assert_eq!(status, 200, "{body}");
    // A wrong key is still a 401, not a 429.
    let (status, _, _) = publish("not-a-key-not-a-key").await;
    assert_eq!(status, 401);
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(&m, "fanout_rate_limited_total", r#"limit="api""#),
        limited.len() as f64
    );
}

#[tokio::test]
async fn by_default_a_client_may_rejoin_every_group_at_once() {
    // The client library rejoins each group with a `join` frame after a
    // reconnect: the default limits must let a full connection through.
    let server = TestServer::start().await;
    let max = fanout::config::Config::default().max_groups;
    let mut c = server.client("many").await;
    let ids: Vec<i64> = (0..max as i64).collect();
    for id in &ids {
        c.send(json!({"type": "join", "id": id, "group": format!("g{id}")}))
            .await;
    }
    let got = replies(&mut c, &ids).await;
    assert!(got.iter().all(|r| r["type"] == "joined"), "{got:?}");
}
