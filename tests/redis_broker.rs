//! Several fanout processes on a real Redis act as one service: delivery
//! across nodes (API and raw PUBLISH), subscriptions only where needed,
//! cluster-wide presence and commands, outages, dead nodes, bad bodies and
//! batched SUBSCRIBEs. Each test starts its own redis-server(s).

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Client, process::FanoutProcess, redis::RedisServer};

fn node(id: &str, redis: &RedisServer) -> FanoutProcess {
    FanoutProcess::start(
        id,
        &[
            "--redis-url",
            &redis.url(),
            "--redis-probe-interval",
            "500ms",
        ],
    )
}

/// A node whose Redis connections go through `proxy`, with a probe
/// interval long enough that nothing restarts a wedged connection.
fn node_behind(id: &str, proxy: &support::proxy::WedgeProxy, extra: &[&str]) -> FanoutProcess {
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let mut args = vec!["--redis-url", &url, "--redis-probe-interval", "60s"];
    args.extend_from_slice(extra);
    FanoutProcess::start(id, &args)
}

/// A client of `uid` on `node`, connected but not waiting for anything.
async fn connect(node: &FanoutProcess, uid: &str) -> Client {
    let token = support::mint(uid);
    Client::connect(&format!("ws://{}/ws?token={token}", node.addr)).await
}

/// Reads until a message with `id`; fails on any other message first.
async fn expect_message(c: &mut Client, id: &str) -> Value {
    let m = c.recv_type("message").await;
    assert_eq!(m["id"], id, "{m}");
    m
}

/// Publishes a marker to `uid` through `via` and returns its id.
async fn marker(via: &FanoutProcess, uid: &str) -> String {
    let (s, body) = via.publish(json!({"users": [uid]}), json!("marker")).await;
    assert_eq!(s, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Three nodes: messages published through node B's API and with a raw
/// PUBLISH reach the user's connections on A and C exactly once; B, which
/// holds no such user, is not subscribed and receives nothing.
#[tokio::test]
async fn three_nodes_deliver_once_and_only_where_needed() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let (a, b, c) = (node("a", &redis), node("b", &redis), node("c", &redis));
    let mut on_a = a.client("u1").await;
    let mut on_c = c.client("u1").await;
    assert_eq!(redis.numsub("fanout:user:u1"), 2);
    let received_before = b.metric("fanout_broker_messages_received_total", "").await;

    let (s, body) = b
        .publish(json!({"users": ["u1", "ghost"]}), json!("via-api"))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["offline_users"], json!(["ghost"]));
    let api_id = body["id"].as_str().unwrap().to_owned();
    redis.cli(&[
        "PUBLISH",
        "fanout:user:u1",
        r#"{"event":"raw","data":{"n":1},"id":"raw-1","ts":5}"#,
    ]);
    for client in [&mut on_a, &mut on_c] {
        let m = expect_message(client, &api_id).await;
        assert_eq!(
            (m["channel"].as_str(), m["data"].as_str()),
            (Some("user:u1"), Some("via-api"))
        );
        let m = expect_message(client, "raw-1").await;
        assert_eq!(
            (m["event"].as_str(), m["ts"].as_u64()),
            (Some("raw"), Some(5))
        );
        assert_eq!(m["data"], json!({"n": 1}));
    }
    let end = marker(&b, "u1").await;
    for client in [&mut on_a, &mut on_c] {
        assert_eq!(
            client.read_until(&end).await,
            Vec::<Value>::new(),
            "exactly once"
        );
    }
    let received_after = b.metric("fanout_broker_messages_received_total", "").await;
    assert_eq!(
        received_before, received_after,
        "B received user messages it has no client for"
    );

    // Presence and stats are cluster-wide, asked of any node.
    let (_, user) = b.api(Method::GET, "/api/users/u1", None).await;
    assert_eq!(
        user,
        json!({"uid": "u1", "online": true, "connections": 2, "complete": true, "unanswered_nodes": 0})
    );
    let (_, stats) = b.api(Method::GET, "/api/stats", None).await;
    assert_eq!(
        (stats["nodes"].as_u64(), stats["connections"].as_u64()),
        (Some(3), Some(2))
    );
}

/// One publish to many users and a group through Redis: every connected
/// user's connection gets the message exactly once, whichever node holds
/// it, and `offline_users` lists exactly the others, in request order.
#[tokio::test]
async fn a_many_target_publish_reaches_each_target_once() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let (a, b) = (node("a", &redis), node("b", &redis));
    let mut clients = Vec::new();
    let mut users = Vec::new();
    let mut offline = Vec::new();
    for i in 0..60 {
        let uid = format!("m{i}");
        match i % 3 {
            0 => clients.push((uid.clone(), a.client(&uid).await)),
            1 => clients.push((uid.clone(), b.client(&uid).await)),
            _ => offline.push(uid.clone()),
        }
        users.push(uid);
    }
    clients[0].1.join("many").await;
    let (s, body) = a
        .publish(json!({"users": users, "groups": ["many"]}), json!("fan"))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["offline_users"], json!(offline));
    let id = body["id"].as_str().unwrap().to_owned();
    for (i, (uid, c)) in clients.iter_mut().enumerate() {
        let mut channels = vec![expect_message(c, &id).await["channel"].clone()];
        if i == 0 {
            // Reached through the group too: one frame per target, in
            // either order (the channels travel on different connections).
            channels.push(expect_message(c, &id).await["channel"].clone());
            channels.sort_by_key(|v| v.to_string());
            assert_eq!(
                channels,
                [json!("group:many"), json!(format!("user:{uid}"))]
            );
        } else {
            assert_eq!(channels, [json!(format!("user:{uid}"))]);
        }
        let end = marker(&b, uid).await;
        assert_eq!(c.read_until(&end).await, Vec::<Value>::new(), "{uid}");
    }
}

/// Groups and broadcasts span nodes; kick and server-side join issued on
/// one node act on the user's connections on every node.
#[tokio::test]
async fn groups_broadcast_kick_and_server_join_across_nodes() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let (a, b) = (node("a", &redis), node("b", &redis));
    let mut x_a = a.client("x").await;
    let mut x_b = b.client("x").await;
    let mut y_b = b.client("y").await;
    x_a.join("room").await;
    y_b.join("room").await;

    let (_, body) = a.publish(json!({"groups": ["room"]}), json!(1)).await;
    let gid = body["id"].as_str().unwrap().to_owned();
    expect_message(&mut x_a, &gid).await;
    expect_message(&mut y_b, &gid).await;
    let end = marker(&a, "x").await;
    assert_eq!(
        x_b.read_until(&end).await,
        Vec::<Value>::new(),
        "x on b is not in the room"
    );
    expect_message(&mut x_a, &end).await;

    let (_, body) = b.publish(json!({"all": true}), json!(2)).await;
    let all = body["id"].as_str().unwrap().to_owned();
    for c in [&mut x_a, &mut x_b, &mut y_b] {
        assert_eq!(expect_message(c, &all).await["channel"], "all");
    }

    let (s, body) = a.api(Method::PUT, "/api/users/x/groups/team", None).await;
    assert_eq!((s, body["online"].as_bool()), (200, Some(true)));
    for c in [&mut x_a, &mut x_b] {
        assert_eq!(
            support::positionless(&c.recv().await),
            json!({"type": "joined", "group": "team"})
        );
    }
    let (_, body) = b.publish(json!({"groups": ["team"]}), json!(3)).await;
    let tid = body["id"].as_str().unwrap().to_owned();
    expect_message(&mut x_a, &tid).await;
    expect_message(&mut x_b, &tid).await;

    let (_, body) = b.api(Method::POST, "/api/users/x/disconnect", None).await;
    assert_eq!(body["disconnected"], true);
    x_a.expect_bye("kicked", 3503).await;
    x_b.expect_bye("kicked", 3503).await;
    assert_eq!(
        y_b.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
    assert_eventually!(a.api(Method::GET, "/api/users/x", None).await.1["online"] == false);
}

/// Redis killed and restarted on the same port: clients stay connected,
/// publishes during the outage get 503 (or 504 when one was in flight as
/// Redis died; readiness fails), and delivery resumes after the restart.
#[tokio::test]
async fn redis_outage_keeps_clients_and_recovers() {
    if !support::redis::available() {
        return;
    }
    let mut redis = RedisServer::start();
    let a = node("a", &redis);
    let b = node("b", &redis);
    let mut on_a = a.client("u").await;
    on_a.join("g").await;
    assert_eq!(a.internal_get("/readyz").await.0, 200);

    redis.kill();
    // 503 once the node knows the connection is gone; 504 for a publish
    // written to the connection just before it broke (the node cannot
    // know whether Redis executed it).
    let (s, body) = b.publish(json!({"users": ["u"]}), json!("lost")).await;
    assert!(
        matches!(
            (s, body["error"]["code"].as_str()),
            (503, Some("broker_unavailable")) | (504, Some("outcome_unknown"))
        ),
        "{s} {body}"
    );
    assert_eventually!(a.internal_get("/readyz").await.0 == 503);
    let (_, ready) = a.internal_get("/readyz").await;
    assert!(
        ready.contains("redis_disconnected") || ready.contains("pubsub_probe_failing"),
        "{ready}"
    );
    assert_eq!(
        on_a.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
    // A new connection needs Redis for its positions, even one of a user
    // the node already holds, and so does a resume: told to come back.
    let token = support::mint("u");
    let mut second = Client::connect(&format!("ws://{}/ws?token={token}", a.addr)).await;
    let bye = second.expect_bye("unavailable", 3004).await;
    assert!(
        bye["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{bye}"
    );
    let (mut resuming, first) = a
        .resume("u", json!({"user:u": {"offset": 1, "epoch": "e"}}))
        .await;
    assert_eq!(first["code"], "broker_unavailable", "{first}");
    resuming.expect_bye("unavailable", 3004).await;

    redis.restart();
    assert_eventually!(a.internal_get("/readyz").await.0 == 200);
    // Delivery resumes on both the user and the group channel, published
    // from the other node.
    for to in [json!({"users": ["u"]}), json!({"groups": ["g"]})] {
        let mut delivered = false;
        for _ in 0..50 {
            let (s, body) = b.publish(to.clone(), json!("after")).await;
            if s == 200 {
                expect_message(&mut on_a, body["id"].as_str().unwrap()).await;
                delivered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(delivered, "no delivery after the restart to {to}");
    }
    assert!(a.metric("fanout_broker_reconnects_total", "").await >= 1.0);
    assert_eventually!(
        a.metric("fanout_broker_resubscribe_duration_seconds_count", "")
            .await
            > 0.0
    );
}

/// A SIGKILLed node leaves no ghost: its users read offline.
#[tokio::test]
async fn killed_node_leaves_no_ghost() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let mut a = node("a", &redis);
    let b = node("b", &redis);
    let _client = a.client("doomed").await;
    let (_, user) = b.api(Method::GET, "/api/users/doomed", None).await;
    assert_eq!(user["online"], true);
    a.kill();
    assert_eventually!(b.api(Method::GET, "/api/users/doomed", None).await.1["online"] == false);
    let (_, body) = b.publish(json!({"users": ["doomed"]}), json!(1)).await;
    assert_eq!(body["offline_users"], json!(["doomed"]));
    assert_eventually!(b.api(Method::GET, "/api/stats", None).await.1["nodes"] == 1);
}

/// Bodies that are not fanout JSON, published straight to Redis, are
/// dropped and counted; the client stays connected and valid ones arrive.
#[tokio::test]
async fn invalid_direct_publishes_are_dropped_and_counted() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let a = node("a", &redis);
    let mut c = a.client("u").await;
    let dropped = |reason: &'static str| {
        let a = &a;
        async move {
            a.metric(
                "fanout_broker_messages_dropped_total",
                &format!("reason=\"{reason}\""),
            )
            .await
        }
    };
    let (json_before, field_before) = (
        dropped("invalid_json").await,
        dropped("invalid_field").await,
    );
    for body in [
        "not json",
        "{\"event\":",
        "[1,2]",
        "{\"event\":7}",
        "{\"cmd\":\"explode\"}",
    ] {
        redis.cli(&["PUBLISH", "fanout:user:u", body]);
    }
    redis.cli(&["PUBLISH", "fanout:user:u", r#"{"event":"ok","data":true}"#]);
    let m = c.recv().await;
    assert_eq!(
        (m["type"].as_str(), m["event"].as_str()),
        (Some("message"), Some("ok")),
        "{m}"
    );
    assert!(
        m["id"].as_str().is_some_and(|id| !id.is_empty()),
        "the node filled in an id: {m}"
    );
    assert_eq!(dropped("invalid_json").await - json_before, 2.0);
    assert_eq!(dropped("invalid_field").await - field_before, 2.0);
    assert!(dropped("unknown_command").await >= 1.0);
    assert_eq!(
        c.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
}

/// 5,000 distinct users connecting at once cost a handful of SUBSCRIBE
/// commands, not thousands; the node is subscribed to every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_burst_costs_a_handful_of_subscribes() {
    if !support::redis::available() {
        return;
    }
    const N: usize = 5_000;
    let redis = RedisServer::start();
    // One pub/sub connection, so each batch is exactly one SUBSCRIBE (with
    // the default four, a batch costs up to four).
    let a = FanoutProcess::start(
        "a",
        &[
            "--redis-url",
            &redis.url(),
            "--redis-pubsub-connections",
            "1",
        ],
    );
    let before = redis.command_calls("subscribe");
    let tokens: Vec<String> = (0..N)
        .map(|i| support::mint(&format!("burst-{i}")))
        .collect();
    let url = format!("ws://{}/ws", a.addr);
    let mut clients = Vec::with_capacity(N);
    for chunk in tokens.chunks(500) {
        let connects = chunk.iter().map(|t| {
            let url = format!("{url}?token={t}");
            async move {
                let mut c = Client::connect(&url).await;
                assert_eq!(c.recv().await["type"], "welcome");
                c
            }
        });
        clients.extend(futures_util::future::join_all(connects).await);
    }
    let subscribes = redis.command_calls("subscribe") - before;
    eprintln!("{N} connections cost {subscribes} SUBSCRIBE commands");
    assert!(
        subscribes <= 100,
        "{subscribes} SUBSCRIBE commands for {N} users"
    );
    for i in [0, N / 2, N - 1] {
        assert_eq!(redis.numsub(&format!("fanout:user:burst-{i}")), 1);
    }
    let (_, stats) = a.api(Method::GET, "/api/stats", None).await;
    assert_eq!(stats["connections"], N as u64);
    drop(clients);
    // After the linger, the node lets go of every user channel.
    assert_eventually!(
        redis.numsub("fanout:user:burst-0") == 0
            && redis.numsub(&format!("fanout:user:burst-{}", N - 1)) == 0
    );
}

/// A user that reconnects within the linger costs no SUBSCRIBE at all.
#[tokio::test]
async fn reconnect_within_linger_costs_no_subscribe() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let a = FanoutProcess::start(
        "a",
        &["--redis-url", &redis.url(), "--unsubscribe-linger", "30s"],
    );
    let c = a.client("flappy").await;
    drop(c);
    assert_eventually!(a.api(Method::GET, "/api/users/flappy", None).await.1["online"] == false);
    let before = redis.command_calls("subscribe");
    let _c = a.client("flappy").await;
    assert_eq!(redis.command_calls("subscribe"), before);
    assert_eq!(redis.numsub("fanout:user:flappy"), 1);
}

/// On a real Redis Cluster of three masters, delivery uses sharded pub/sub:
/// users whose channels hash to different shards get messages published
/// through another node's API and with a raw SPUBLISH.
#[tokio::test]
async fn cluster_uses_sharded_pubsub_across_shards() {
    if !support::redis::available() {
        return;
    }
    let cluster = support::redis::RedisCluster::start(3);
    let url = cluster.url();
    let a = FanoutProcess::start("a", &["--redis-url", &url]);
    let b = FanoutProcess::start("b", &["--redis-url", &url, "--redis-cluster"]);
    // Pick one uid per shard.
    let mut uids: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let uid = format!("c{i}");
        let owner = cluster.owner_of(&format!("fanout:user:{uid}"));
        if !uids.iter().any(|(_, o)| *o == owner) {
            uids.push((uid, owner));
        }
        if uids.len() == 3 {
            break;
        }
    }
    let mut clients = Vec::new();
    for (uid, _) in &uids {
        clients.push(a.client(uid).await);
    }
    for ((uid, owner), c) in uids.iter().zip(clients.iter_mut()) {
        // Sharded subscriptions live on the owning shard only.
        let shard = cluster.nodes.iter().find(|n| n.port == *owner).unwrap();
        let out = shard.cli(&["PUBSUB", "SHARDNUMSUB", &format!("fanout:user:{uid}")]);
        assert_eq!(out.lines().nth(1).map(str::trim), Some("1"), "{uid}: {out}");

        let (s, body) = b.publish(json!({"users": [uid]}), json!("api")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["offline_users"], json!([]));
        expect_message(c, body["id"].as_str().unwrap()).await;

        let raw = format!(r#"{{"data":"raw","id":"raw-{uid}","ts":1}}"#);
        support::redis::cli(*owner, &["SPUBLISH", &format!("fanout:user:{uid}"), &raw]);
        expect_message(c, &format!("raw-{uid}")).await;
    }
    // One publish to users on every shard (SPUBLISH routed per slot).
    let mut to: Vec<&str> = uids.iter().map(|(u, _)| u.as_str()).collect();
    to.push("ghost");
    let (s, body) = b.publish(json!({ "users": to }), json!("all-shards")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["offline_users"], json!(["ghost"]));
    for c in &mut clients {
        expect_message(c, body["id"].as_str().unwrap()).await;
    }
    // Groups and broadcasts too.
    clients[0].join("shared").await;
    let (_, body) = b.publish(json!({"groups": ["shared"]}), json!(1)).await;
    expect_message(&mut clients[0], body["id"].as_str().unwrap()).await;
    let (_, body) = b.publish(json!({"all": true}), json!(2)).await;
    for c in &mut clients {
        expect_message(c, body["id"].as_str().unwrap()).await;
    }
    let (_, stats) = b.api(Method::GET, "/api/stats", None).await;
    assert_eq!(
        (stats["nodes"].as_u64(), stats["connections"].as_u64()),
        (Some(2), Some(3))
    );
}

/// Behind Sentinel (one master, one replica, one sentinel), delivery
/// resumes after a failover.
#[tokio::test]
async fn sentinel_failover_resumes_delivery() {
    if !support::redis::available() {
        return;
    }
    let master = RedisServer::start();
    let replica = RedisServer::start_with(
        support::redis::free_port(),
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    assert_eventually!(
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    );
    let sentinel_port = support::redis::free_port();
    let conf = std::env::temp_dir().join(format!("fanout-sentinel-{sentinel_port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
            master.port
        ),
    )
    .unwrap();
    let mut sentinel = std::process::Command::new(support::redis::server_bin())
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get_master = || {
        support::redis::cli(
            sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
        )
    };
    assert_eventually!(get_master().contains(&master.port.to_string()));

    let a = FanoutProcess::start(
        "a",
        &[
            "--redis-sentinel",
            &format!("127.0.0.1:{sentinel_port}"),
            "--redis-sentinel-master",
            "mymaster",
        ],
    );
    let b = FanoutProcess::start(
        "b",
        &[
            "--redis-url",
            &format!("redis-sentinel://127.0.0.1:{sentinel_port}?sentinelServiceName=mymaster"),
        ],
    );
    let mut c = a.client("s").await;
    let (_, body) = b.publish(json!({"users": ["s"]}), json!("before")).await;
    expect_message(&mut c, body["id"].as_str().unwrap()).await;

    let out = support::redis::cli(sentinel_port, &["SENTINEL", "FAILOVER", "mymaster"]);
    assert!(out.contains("OK"), "{out}");
    assert_eventually!(get_master().contains(&replica.port.to_string()));

    let mut delivered = false;
    for _ in 0..100 {
        let (s, body) = b.publish(json!({"users": ["s"]}), json!("after")).await;
        if s == 200 && body["offline_users"] == json!([]) {
            expect_message(&mut c, body["id"].as_str().unwrap()).await;
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let _ = std::fs::remove_file(&conf);
    assert!(delivered, "no delivery after the failover");
}

/// When the slot of a user's channel moves to another master (resharding),
/// the node notices and resubscribes there: delivery resumes.
#[tokio::test]
async fn cluster_resharding_leads_to_a_resubscribe() {
    if !support::redis::available() {
        return;
    }
    let cluster = support::redis::RedisCluster::start(3);
    let url = cluster.url();
    let a = FanoutProcess::start(
        "a",
        &["--redis-url", &url, "--redis-probe-interval", "300ms"],
    );
    let mut c = a.client("mover").await;
    let channel = "fanout:user:mover";
    let (_, body) = a
        .publish(json!({"users": ["mover"]}), json!("before"))
        .await;
    expect_message(&mut c, body["id"].as_str().unwrap()).await;

    let slot = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", channel])
        .trim()
        .to_owned();
    let src = cluster.owner_of(channel);
    let dst = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|p| *p != src)
        .unwrap();
    let id = |port: u16| {
        support::redis::cli(port, &["CLUSTER", "MYID"])
            .trim()
            .to_owned()
    };
    let (src_id, dst_id) = (id(src), id(dst));
    support::redis::cli(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    support::redis::cli(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
    for n in &cluster.nodes {
        n.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    }
    assert_eventually!(cluster.owner_of(channel) == dst);
    let shardnumsub = || {
        support::redis::cli(dst, &["PUBSUB", "SHARDNUMSUB", channel])
            .lines()
            .nth(1)
            .map(|l| l.trim().to_owned())
    };
    assert_eventually!(
        shardnumsub().as_deref() == Some("1"),
        "never resubscribed on the new owner"
    );
    let (s, body) = a.publish(json!({"users": ["mover"]}), json!("after")).await;
    assert_eq!(
        (s, body["offline_users"].clone()),
        (200, json!([])),
        "{body}"
    );
    expect_message(&mut c, body["id"].as_str().unwrap()).await;
}

/// Channels are spread over a pool of pub/sub connections: with one of two
/// wedged (open, delivering nothing), users whose channels live on the
/// other still get their messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wedged_pubsub_connection_does_not_cut_the_node_off() {
    if !support::redis::available() {
        return;
    }
    const USERS: usize = 16;
    let redis = RedisServer::start();
    let proxy = support::proxy::WedgeProxy::start(redis.port).await;
    let a = node_behind("pool", &proxy, &["--redis-pubsub-connections", "2"]);
    let mut clients = Vec::new();
    for i in 0..USERS {
        clients.push(a.client(&format!("p{i}")).await);
    }
    assert!(proxy.wedge_one_subscriber());
    let users: Vec<String> = (0..USERS).map(|i| format!("p{i}")).collect();
    let (s, _) = a
        .publish(json!({"users": users}), json!("through the pool"))
        .await;
    assert_eq!(s, 200);
    // Users on the healthy connection get it within moments; those on the
    // wedged one never do (this wait only bounds the test).
    let received = futures_util::future::join_all(clients.iter_mut().map(|c| async {
        tokio::time::timeout(Duration::from_secs(2), c.recv())
            .await
            .is_ok()
    }))
    .await
    .into_iter()
    .filter(|r| *r)
    .count();
    assert!(
        (1..USERS).contains(&received),
        "{received} of {USERS} received"
    );
}

/// No frame (the `welcome` or `joined` that waits for the held SUBSCRIBE)
/// reaches `c`. The wait only bounds the check: before the fix the frame
/// came within milliseconds; with it none can come while the SUBSCRIBE is
/// held, however long.
async fn assert_nothing_while_held(c: &mut Client, what: &str) {
    let early = tokio::time::timeout(Duration::from_millis(500), c.recv()).await;
    assert!(
        early.is_err(),
        "{what} before Redis took the SUBSCRIBE: {early:?}"
    );
}

/// A subscribe counts once Redis has taken it, not once it is written
/// (fred resolves a SUBSCRIBE as soon as it is on the socket). While the
/// node's SUBSCRIBE is held up on its way, the client gets no welcome: the
/// history read that sets its start could otherwise overtake the
/// SUBSCRIBE, and a message published between the two reached neither.
/// Once the SUBSCRIBE goes through, the welcome comes and a message
/// published right after it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_waits_until_redis_has_taken_the_subscribe() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let proxy = support::proxy::WedgeProxy::start(redis.port).await;
    let a = node_behind("held", &proxy, &[]);
    proxy.hold_subscribes();
    let mut c = connect(&a, "late").await;
    assert_nothing_while_held(&mut c, "welcome").await;
    proxy.release_subscribes();
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome", "{w}");
    let id = marker(&a, "late").await;
    expect_message(&mut c, &id).await;

    // A join waits the same way before its `joined`.
    proxy.hold_subscribes();
    c.send(json!({"type": "join", "id": 1, "group": "g"})).await;
    assert_nothing_while_held(&mut c, "joined").await;
    proxy.release_subscribes();
    let joined = c.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let (s, body) = a.publish(json!({"groups": ["g"]}), json!("to g")).await;
    assert_eq!(s, 200, "{body}");
    expect_message(&mut c, body["id"].as_str().unwrap()).await;
}

/// A SUBSCRIBE that Redis does not carry out within `--redis-timeout` (a
/// stalled connection) refuses the client with 3004 instead of welcoming
/// it on a channel that is not subscribed. When the SUBSCRIBE goes
/// through after all, the UNSUBSCRIBE the node sent behind it undoes it:
/// Redis does not go on counting the user as online (`offline_users`)
/// nor sending the node a channel nobody there wants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_redis_does_not_carry_out_refuses_the_client() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let proxy = support::proxy::WedgeProxy::start(redis.port).await;
    let a = node_behind(
        "stalled",
        &proxy,
        &[
            "--redis-pubsub-connections",
            "1",
            "--redis-timeout",
            "300ms",
        ],
    );
    proxy.hold_subscribes();
    let mut c = connect(&a, "stuck").await;
    let (frames, closed) = c.recv_until_close().await;
    assert_eq!(closed.code, 3004, "{frames:?} {closed:?}");
    assert!(frames.iter().all(|f| f["type"] != "welcome"), "{frames:?}");
    proxy.release_subscribes();
    // The next client's SUBSCRIBE goes over the same connection, after
    // the held one and its UNSUBSCRIBE: once it is welcomed, Redis has
    // carried out all three.
    let mut other = a.client("other").await;
    assert_eq!(redis.numsub("fanout:user:stuck"), 0);
    assert_eq!(redis.numsub("fanout:user:other"), 1);
    let (s, body) = a
        .publish(json!({"users": ["stuck", "other"]}), json!("after"))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["offline_users"], json!(["stuck"]), "{body}");
    expect_message(&mut other, body["id"].as_str().unwrap()).await;
    // And the refused user connects once Redis answers.
    let mut back = a.client("stuck").await;
    let id = marker(&a, "stuck").await;
    expect_message(&mut back, &id).await;
}
