//! What operators rely on: the paced drain on SIGTERM, readiness that tells
//! the truth about Redis and a wedged pub/sub connection, log lines that say
//! why a client was refused without flooding.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::{Client, process::FanoutProcess, proxy::WedgeProxy, redis::RedisServer};
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

/// SIGTERM with 1,000 clients: readiness fails first, every client gets
/// `bye` shutdown with reconnect hints spread over the drain window, the
/// closes are paced (most clients are still connected when the first is
/// closed), and the process exits 0 on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_drain_with_a_thousand_clients() {
    const N: usize = 1_000;
    const WINDOW_MS: u64 = 3_000;
    let mut node =
        FanoutProcess::start("drain", &["--drain-window", "3s", "--shutdown-grace", "5s"]);
    let mut clients = Vec::with_capacity(N);
    for chunk in (0..N).collect::<Vec<_>>().chunks(250) {
        let uids: Vec<String> = chunk.iter().map(|i| format!("d{i}")).collect();
        let batch = uids.iter().map(|uid| node.client(uid));
        clients.extend(futures_util::future::join_all(batch).await);
    }
    assert_eq!(node.internal_get("/readyz").await.0, 200);
    assert_eq!(node.metric("fanout_connections_active", "").await, N as f64);

    // Every client reads until its close; the first close is announced.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = std::sync::Mutex::new(Some(first_tx));
    let first_tx = std::sync::Arc::new(first_tx);
    let readers = clients.into_iter().map(|mut c| {
        let first_tx = first_tx.clone();
        tokio::spawn(async move {
            let mut bye = None;
            loop {
                match tokio::time::timeout(support::patience() * 3, c.ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        bye = Some(serde_json::from_str::<serde_json::Value>(&t).unwrap());
                    }
                    Ok(Some(Ok(Message::Close(Some(CloseFrame { code, .. }))))) => {
                        if let Some(tx) = first_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        return (bye, u16::from(code));
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("no close frame: {other:?}"),
                }
            }
        })
    });
    let readers: Vec<_> = readers.collect();

    node.signal("TERM");
    // Readiness flips at once, while (nearly) everyone is still connected.
    assert_eventually!(node.internal_get("/readyz").await.0 == 503);
    let (_, ready) = node.internal_get("/readyz").await;
    assert!(ready.contains("draining"), "{ready}");
    // Pacing: when the first client is closed, most are still connected.
    first_rx.await.unwrap();
    let still_open = node.metric("fanout_connections_active", "").await;
    assert!(
        still_open > (N / 2) as f64,
        "only {still_open} still open after the first close"
    );
    assert_eq!(node.metric("fanout_draining", "").await, 1.0);

    let mut hints = Vec::with_capacity(N);
    for r in readers {
        let (bye, code) = r.await.unwrap();
        let bye = bye.expect("a bye frame before the close");
        assert_eq!(
            (
                bye["type"].as_str(),
                bye["reason"].as_str(),
                bye["reconnect"].as_bool(),
                code
            ),
            (Some("bye"), Some("shutdown"), Some(true), 3001)
        );
        hints.push(bye["retry_after_ms"].as_u64().unwrap());
    }
    // Hints spread over the whole window, not bunched.
    let (min, max) = (*hints.iter().min().unwrap(), *hints.iter().max().unwrap());
    assert!(
        max < WINDOW_MS && max - min > WINDOW_MS / 2,
        "hints {min}..{max}"
    );
    let early = hints.iter().filter(|h| **h < WINDOW_MS / 2).count();
    assert!(
        (N / 4..3 * N / 4).contains(&early),
        "{early} of {N} hints in the first half"
    );
    assert_eq!(node.wait_exit(3), Some(0));
}

/// A second signal during the drain exits at once (130).
#[tokio::test]
async fn second_signal_exits_at_once() {
    let mut node = FanoutProcess::start("twice", &["--drain-window", "60s"]);
    let _clients =
        futures_util::future::join_all(["t0", "t1", "t2"].map(|uid| node.client(uid))).await;
    node.signal("TERM");
    assert_eventually!(node.internal_get("/readyz").await.0 == 503);
    node.signal("INT");
    assert_eq!(node.wait_exit(1), Some(130));
}

/// Readiness is 503 while Redis is down and when a pub/sub connection is
/// up but delivers nothing; the wedged connection is restarted by the probe
/// and delivery and readiness come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_the_probe() {
    if !support::redis::available() {
        return;
    }
    let mut redis = RedisServer::start();
    let proxy = WedgeProxy::start(redis.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let node = FanoutProcess::start(
        "ready",
        &[
            "--redis-url",
            &url,
            "--redis-probe-interval",
            "400ms",
            "--redis-pubsub-connections",
            "2",
        ],
    );
    let mut c = node.client("r").await;
    assert_eq!(node.internal_get("/readyz").await.0, 200);

    // A wedged pub/sub connection: TCP up, nothing delivered.
    assert_eq!(proxy.wedge_subscribers(), 2);
    assert_eventually!(
        node.internal_get("/readyz")
            .await
            .1
            .contains("pubsub_probe_failing")
    );
    assert!(node.metric("fanout_broker_probe_failures_total", "").await >= 2.0);
    assert_eventually!(node.internal_get("/readyz").await.0 == 200);
    // At most once: a message published before the resubscribe may be
    // lost, so publish until one arrives (each is polled briefly).
    let mut delivered = false;
    let mut sent = Vec::new();
    for _ in 0..50 {
        let (s, body) = node
            .publish(json!({"users": ["r"]}), json!("after-wedge"))
            .await;
        assert_eq!(s, 200, "{body}");
        sent.push(body["id"].clone());
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), c.recv()).await {
            assert!(sent.contains(&m["id"]), "{m}");
            delivered = true;
            break;
        }
    }
    assert!(
        delivered,
        "no delivery after the wedged connection was restarted"
    );

    // Redis down: 503 (after the 1 s debounce); back up: 200.
    redis.kill();
    assert_eventually!(
        node.internal_get("/readyz")
            .await
            .1
            .contains("redis_disconnected")
    );
    redis.restart();
    assert_eventually!(node.internal_get("/readyz").await.0 == 200);
    assert_eventually!(node.metric("fanout_broker_connected", "").await == 1.0);
}

/// Liveness stays 200 through a drain (the process is alive).
#[tokio::test]
async fn liveness_is_only_about_the_process() {
    let node = FanoutProcess::start("live", &["--drain-window", "30s"]);
    let _c: Client = node.client("x").await;
    assert_eq!(
        node.internal_get("/healthz").await,
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    node.signal("TERM");
    assert_eventually!(node.internal_get("/readyz").await.0 == 503);
    assert_eq!(node.internal_get("/healthz").await.0, 200);
}

/// During the drain, clients not yet closed keep getting messages: the
/// dispatcher runs until the connections are gone.
#[tokio::test]
async fn messages_flow_during_the_drain() {
    // One close per second: the others stay open for a while.
    let node = FanoutProcess::start("flow", &["--drain-window", "30s", "--drain-rate", "1"]);
    let mut clients = Vec::new();
    for uid in ["f0", "f1", "f2"] {
        let mut c = node.client(uid).await;
        c.join("g").await;
        clients.push(c);
    }
    node.signal("TERM");
    assert_eventually!(node.internal_get("/readyz").await.0 == 503);
    let mut flowed = false;
    for c in &mut clients {
        c.send(json!({"type": "publish", "id": 7, "group": "g", "data": "during drain"}))
            .await;
        // A closed client answers with bye; an open one acks and then gets
        // its own message back through the broker and dispatcher.
        let reply = c.recv().await;
        if reply == json!({"type": "ack", "id": 7}) {
            let m = c.recv_type("message").await;
            assert_eq!(m["data"], "during drain");
            flowed = true;
            break;
        }
    }
    assert!(flowed, "no client was still open");
}

/// A client that drops its TCP connection without a close frame is counted
/// as connection_lost, not as a protocol violation; the in-process broker
/// reports itself connected.
#[tokio::test]
async fn vanished_client_is_connection_lost() {
    let node = FanoutProcess::start("gone", &[]);
    assert_eq!(node.metric("fanout_broker_connected", "").await, 1.0);
    let c = node.client("g").await;
    drop(c); // TCP FIN without a WebSocket close frame
    assert_eventually!(
        node.metric("fanout_disconnects_total", "reason=\"connection_lost\"")
            .await
            == 1.0
    );
    assert_eq!(
        node.metric("fanout_disconnects_total", "reason=\"protocol_violation\"")
            .await,
        0.0
    );
}

/// A page whose Origin is not allowed sees only a close code in the
/// browser: the node says why in its log at the default level, once per
/// burst (later refusals are counted into the next line, not each logged).
#[tokio::test]
async fn a_refused_origin_is_logged_without_flooding() {
    let node = FanoutProcess::start("origin", &["--allowed-origins", "https://app.example"]);
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let res = http
            .get(format!("http://{}/ws", node.addr))
            .header("Origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }
    let refused = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Origin not allowed") && l.contains("https://evil.example"))
            .count()
    };
    assert_eventually!(refused(&node.log()) >= 1, "{}", node.log());
    let lines = refused(&node.log());
    assert!(lines < 5, "every refusal was logged:\n{}", node.log());
}

/// A frozen Redis (SIGSTOP: connections stay up, nothing is answered) is
/// noticed: readiness fails within a few probe intervals, publishes are
/// then refused at once (503, nothing sent) instead of each waiting the
/// Redis timeout, and everything recovers after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed_and_publishes_fail_fast() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let node = FanoutProcess::start(
        "frozen",
        &[
            "--redis-url",
            &redis.url(),
            "--redis-probe-interval",
            "300ms",
            "--redis-timeout",
            "30s",
        ],
    );
    let mut c = node.client("z").await;
    assert_eq!(node.internal_get("/readyz").await.0, 200);
    redis.freeze();
    // 503: `pubsub_probe_failing`, or `redis_disconnected` once the
    // connections that deliver nothing are being restarted.
    assert_eventually!(
        node.internal_get("/readyz").await.0 == 503,
        "{}",
        node.log()
    );
    assert!(node.log().contains("pub/sub probe not received"));
    // Refused without waiting for the 30 s Redis timeout: the request
    // answers within the patience, with 503.
    let (status, body) = tokio::time::timeout(
        support::patience(),
        node.publish(json!({"users": ["z"]}), json!("while frozen")),
    )
    .await
    .expect("a publish to a frozen Redis is answered at once");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "broker_unavailable", "{body}");
    redis.thaw();
    assert_eventually!(node.internal_get("/readyz").await.0 == 200);
    assert_eventually!(
        node.publish(json!({"users": ["z"]}), json!("thawed"))
            .await
            .0
            == 200
    );
    assert_eq!(c.recv_type("message").await["data"], "thawed");
}

/// Publishes sent right after Redis died (SIGKILL) fail fast: each is
/// answered 503 (or 504 `outcome_unknown`, for one already written to the
/// connection), long before the 60 s Redis timeout the node is given
/// (the client gives up at half of it), with the probe out of the picture.
/// After Redis restarts, publishing works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_right_after_redis_died_fail_fast() {
    if !support::redis::available() {
        return;
    }
    let mut redis = RedisServer::start();
    let node = FanoutProcess::start(
        "killed",
        &[
            "--redis-url",
            &redis.url(),
            "--redis-timeout",
            "60s",
            "--redis-probe-interval",
            "1h",
            "--api-timeout",
            "120s",
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let publish = || {
        let http = http.clone();
        let url = format!("http://{}/api/publish", node.addr);
        async move {
            let res = http
                .post(url)
                .bearer_auth(support::API_KEY)
                .json(&json!({"to": {"users": ["k"]}, "data": "after the kill"}))
                .send()
                .await
                .expect("answered before the client's 30 s timeout");
            support::read(res).await
        }
    };
    let mut c = node.client("k").await;
    assert_eq!(publish().await.0, 200);
    c.recv_type("message").await;

    redis.kill();
    // A burst at once, then one after another for a while.
    let mut answers = futures_util::future::join_all((0..20).map(|_| publish())).await;
    for _ in 0..20 {
        answers.push(publish().await);
    }
    for (status, body) in &answers {
        assert!(
            matches!(
                (*status, body["error"]["code"].as_str()),
                (503, Some("broker_unavailable")) | (504, Some("outcome_unknown"))
            ),
            "{status} {body}"
        );
    }
    redis.restart();
    assert_eventually!(publish().await.0 == 200, "{}", node.log());
}

/// A publish Redis never answered (frozen, before the probe notices) is
/// answered 504 `outcome_unknown`, not "unavailable": it may still be
/// published when Redis wakes. A retry with the same idempotency key then
/// delivers it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_publish_is_outcome_unknown_and_a_keyed_retry_is_safe() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let node = FanoutProcess::start(
        "unknown",
        &[
            "--redis-url",
            &redis.url(),
            "--redis-timeout",
            "1s",
            "--redis-probe-interval",
            "1h",
        ],
    );
    let mut c = node.client("u").await;
    let body =
        json!({"to": {"users": ["u"]}, "event": "e", "data": "once", "idempotency_key": "k-1"});
    redis.freeze();
    let (status, answer) = node
        .api(reqwest::Method::POST, "/api/publish", Some(body.clone()))
        .await;
    redis.thaw();
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["code"], "outcome_unknown", "{answer}");
    // The retry with the same key: 200, and the message reaches the client
    // once, whether or not the first attempt went through.
    let (status, retried) = node
        .api(reqwest::Method::POST, "/api/publish", Some(body))
        .await;
    assert_eq!(status, 200, "{retried}");
    let (_, marker) = node.publish(json!({"users": ["u"]}), json!("marker")).await;
    let mut seen = Vec::new();
    loop {
        let m = c.recv_type("message").await;
        if m["id"] == marker["id"] {
            break;
        }
        seen.push(m["id"].clone());
    }
    assert_eq!(seen, vec![retried["id"].clone()], "delivered once");
}
