//! Channel history on a real Redis, with real fanout processes: resume
//! across nodes, on a Redis Cluster, after Redis lost its data (a new
//! epoch), nodes healing the gap a pub/sub reconnect leaves, idempotent
//! retries, and backends appending through `FCALL fanout_publish`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Client,
    process::FanoutProcess,
    redis::{RedisCluster, RedisServer},
};

fn node(id: &str, url: &str, extra: &[&str]) -> FanoutProcess {
    let mut args = vec!["--redis-url", url, "--redis-probe-interval", "500ms"];
    args.extend_from_slice(extra);
    FanoutProcess::start(id, &args)
}

fn position_of(frame: &Value) -> Value {
    json!({"offset": frame["offset"], "epoch": frame["epoch"]})
}

async fn next_message(c: &mut Client) -> Value {
    c.recv_type("message").await
}

async fn publish(via: &FanoutProcess, to: Value, data: Value) -> Value {
    let (s, body) = via.publish(to, data).await;
    assert_eq!(s, 200, "{body}");
    body
}

/// A client that leaves node A comes back on node B with `since`: the
/// messages published meanwhile (through either node) are replayed from
/// Redis in order, then live delivery continues.
#[tokio::test]
async fn a_client_resumes_on_another_node() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let (a, b) = (node("a", &redis.url(), &[]), node("b", &redis.url(), &[]));
    let mut c = a.client("h1").await;
    publish(&b, json!({"users": ["h1"]}), json!(1)).await;
    let seen = next_message(&mut c).await;
    assert_eq!(seen["offset"], 1, "{seen}");
    drop(c);
    let mut ids = Vec::new();
    for n in 2..=4 {
        let via = if n % 2 == 0 { &a } else { &b };
        ids.push(publish(via, json!({"users": ["h1"]}), json!(n)).await["id"].clone());
    }
    let (mut c, welcome) = b.resume("h1", json!({"user:h1": position_of(&seen)})).await;
    assert_eq!(welcome["recovered"], json!({"user:h1": true}), "{welcome}");
    for id in &ids {
        assert_eq!(&next_message(&mut c).await["id"], id);
    }
    let live = publish(&a, json!({"users": ["h1"]}), json!(5)).await;
    let m = next_message(&mut c).await;
    assert_eq!((&m["id"], &m["offset"]), (&live["id"], &json!(5)));
    assert_eq!(live["positions"]["user:h1"], position_of(&m), "{live}");
}

/// On a Redis Cluster the history keys live in their channel's slot:
/// publishing, positions and resume work for channels on every shard.
#[tokio::test]
async fn history_works_on_every_shard_of_a_cluster() {
    if !support::redis::available() {
        return;
    }
    let cluster = RedisCluster::start(3);
    let n = node("c", &cluster.url(), &["--redis-cluster"]);
    // One uid per shard.
    let mut uids: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let uid = format!("k{i}");
        let owner = cluster.owner_of(&format!("fanout:user:{uid}"));
        if !uids.iter().any(|(_, o)| *o == owner) {
            uids.push((uid, owner));
        }
        if uids.len() == 3 {
            break;
        }
    }
    for (uid, owner) in &uids {
        let (c, welcome) = n.client_welcome(uid).await;
        let start = welcome["positions"][format!("user:{uid}")].clone();
        drop(c);
        let sent = publish(&n, json!({"users": [uid]}), json!(uid)).await;
        // The keys are in the channel's slot, on its owner.
        let shard = cluster.nodes.iter().find(|s| s.port == *owner).unwrap();
        let len = shard.cli(&["XLEN", &format!("{{fanout:user:{uid}}}:h")]);
        assert_eq!(len.trim(), "1", "{uid}");
        let (mut c, welcome) = n.resume(uid, json!({ format!("user:{uid}"): start })).await;
        assert_eq!(
            welcome["recovered"][format!("user:{uid}")],
            true,
            "{welcome}"
        );
        assert_eq!(next_message(&mut c).await["id"], sent["id"]);
    }
}

/// A Redis that restarts empty has lost every channel's history: a client
/// resuming from a position of before gets `recovered: false` and a new
/// epoch, and messages published after it are delivered as usual.
#[tokio::test]
async fn history_lost_with_redis_means_a_new_epoch() {
    if !support::redis::available() {
        return;
    }
    let mut redis = RedisServer::start();
    let a = node("a", &redis.url(), &[]);
    let mut c = a.client("l1").await;
    publish(&a, json!({"users": ["l1"]}), json!(1)).await;
    let seen = next_message(&mut c).await;
    drop(c);
    redis.kill();
    redis.restart();
    // The node reconnects by itself; publishes succeed again.
    assert_eventually!(a.publish(json!({"users": ["l1"]}), json!(2)).await.0 == 200);
    let (mut c, welcome) = a.resume("l1", json!({"user:l1": position_of(&seen)})).await;
    assert_eq!(welcome["recovered"], json!({"user:l1": false}), "{welcome}");
    let now = &welcome["positions"]["user:l1"];
    assert_ne!(now["epoch"], seen["epoch"], "{welcome}");
    let live = publish(&a, json!({"users": ["l1"]}), json!(3)).await;
    let m = next_message(&mut c).await;
    assert_eq!((&m["id"], &m["epoch"]), (&live["id"], &now["epoch"]));
}

/// A Redis that restarts empty has lost the function library too. The
/// nodes load it again as soon as they reconnect, without waiting for a
/// publish or a client of their own: a backend's `FCALL fanout_publish`
/// works again without anyone touching a node.
#[tokio::test]
async fn nodes_reload_the_library_into_a_restarted_redis() {
    if !support::redis::available() {
        return;
    }
    let mut redis = RedisServer::start();
    let _a = node("a", &redis.url(), &[]);
    redis.kill();
    redis.restart();
    let fcall = || {
        redis.cli(&[
            "FCALL",
            "fanout_publish",
            "2",
            "{fanout:user:r1}:h",
            "{fanout:user:r1}:m",
            "fanout:user:r1",
            r#"{"data":1}"#,
        ])
    };
    assert_eventually!(
        fcall().lines().next().is_some_and(|l| l.trim() == "1"),
        "last reply: {}",
        fcall()
    );
}

/// While a node's pub/sub connections reconnect, publishes still succeed
/// (the publisher's connection is fine) and their messages never reach
/// the node live. The node fills the gap from history after it
/// resubscribes: its clients get every message, in order.
#[tokio::test]
async fn a_node_heals_the_gap_a_pubsub_reconnect_leaves() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let a = node("a", &redis.url(), &[]);
    let mut c = a.client("g1").await;
    c.join("healed").await;
    publish(&a, json!({"groups": ["healed"]}), json!(0)).await;
    let first = next_message(&mut c).await;
    let healed_before = a
        .metric("fanout_history_gap_messages_total", r#"result="healed""#)
        .await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let mut sent = Vec::new();
    for n in 1..=20 {
        sent.push(publish(&a, json!({"groups": ["healed"]}), json!(n)).await["id"].clone());
    }
    let mut offset = first["offset"].as_u64().unwrap();
    for id in &sent {
        let m = next_message(&mut c).await;
        assert_eq!(&m["id"], id, "in order, none missing");
        offset += 1;
        assert_eq!(m["offset"], offset);
    }
    let healed = a
        .metric("fanout_history_gap_messages_total", r#"result="healed""#)
        .await;
    let end = publish(&a, json!({"groups": ["healed"]}), json!("end")).await;
    assert_eq!(next_message(&mut c).await["id"], end["id"], "no duplicate");
    // Unless every publish happened to land after the resubscribe, some
    // came from history: the counter says which path they took.
    assert!(healed >= healed_before, "{healed_before} -> {healed}");
}

/// A retry with the same idempotency key, through another node, delivers
/// nothing twice and answers like the first publish.
#[tokio::test]
async fn an_idempotent_retry_through_redis_delivers_once() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let (a, b) = (node("a", &redis.url(), &[]), node("b", &redis.url(), &[]));
    let mut c = a.client("o1").await;
    let body = json!({"to": {"users": ["o1"]}, "data": 1, "idempotency_key": "k-1"});
    let (_, first) = a
        .api(reqwest::Method::POST, "/api/publish", Some(body.clone()))
        .await;
    let (_, again) = b
        .api(reqwest::Method::POST, "/api/publish", Some(body))
        .await;
    assert_eq!(first, again);
    assert_eq!(next_message(&mut c).await["id"], "key:k-1");
    let end = publish(&b, json!({"users": ["o1"]}), json!("end")).await;
    assert_eq!(
        next_message(&mut c).await["id"],
        end["id"],
        "delivered once"
    );
}

/// A backend appends and publishes with `FCALL fanout_publish` (message
/// kept, offset assigned, resumable); a plain `PUBLISH` still delivers,
/// live only, without a position.
#[tokio::test]
async fn backends_publish_through_fcall_or_plain_publish() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let a = node("a", &redis.url(), &[]);
    let (mut c, welcome) = a.client_welcome("d1").await;
    let start = welcome["positions"]["user:d1"].clone();
    let reply = redis.cli(&[
        "FCALL",
        "fanout_publish",
        "2",
        "{fanout:user:d1}:h",
        "{fanout:user:d1}:m",
        "fanout:user:d1",
        r#"{"event":"direct","data":{"n":1},"id":"fcall-1"}"#,
    ]);
    assert!(
        reply.lines().next().is_some_and(|l| l.trim() == "1"),
        "{reply}"
    );
    let m = next_message(&mut c).await;
    assert_eq!(
        (&m["id"], &m["offset"], &m["event"]),
        (&json!("fcall-1"), &json!(1), &json!("direct"))
    );
    redis.cli(&[
        "PUBLISH",
        "fanout:user:d1",
        r#"{"data":"live only","id":"plain-1"}"#,
    ]);
    let m = next_message(&mut c).await;
    assert_eq!(m["id"], "plain-1");
    assert!(m.get("offset").is_none(), "{m}");
    drop(c);
    let (mut c, welcome) = a.resume("d1", json!({"user:d1": start})).await;
    assert_eq!(welcome["recovered"], json!({"user:d1": true}), "{welcome}");
    assert_eq!(
        next_message(&mut c).await["id"],
        "fcall-1",
        "only kept messages replay"
    );
}

/// Bodies nesting deeper than `--max-json-depth` are refused on Redis's
/// side of the node too: a plain `PUBLISH` of one is dropped and counted
/// (`too_deep`); `FCALL fanout_publish` answers an error and keeps and
/// publishes nothing, whether or not it starts with `id` and `ts` (which
/// let only a node's checked body skip the decode), and past cjson's own
/// default of 1000 levels.
/// A valid message after them is delivered, at offset 1.
#[tokio::test]
async fn too_deep_bodies_from_redis_are_refused() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let a = node("a", &redis.url(), &["--max-json-depth", "8"]);
    let mut c = a.client("deep").await;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let dropped = || {
        a.metric(
            "fanout_broker_messages_dropped_total",
            "reason=\"too_deep\"",
        )
    };
    let before = dropped().await;
    for depth in [9, 30_000] {
        let body = format!(r#"{{"event":"e","data":{}}}"#, nested(depth));
        redis.cli(&["PUBLISH", "fanout:user:deep", &body]);
    }
    assert_eventually!(dropped().await - before == 2.0);
    let fcall = |body: String, extra: &[&str]| {
        let mut args = vec![
            "FCALL",
            "fanout_publish",
            "2",
            "{fanout:user:deep}:h",
            "{fanout:user:deep}:m",
            "fanout:user:deep",
        ];
        args.push(&body);
        args.extend_from_slice(extra);
        redis.cli(&args)
    };
    for (body, extra) in [
        (format!(r#"{{"data":{}}}"#, nested(9)), &[][..]),
        (format!(r#"{{"data":{}}}"#, nested(30_000)), &[]),
        (format!(r#"{{"id":"x","ts":1,"data":{}}}"#, nested(9)), &[]),
        // Past cjson's default of 1000 levels.
        (format!(r#"{{"data":{}}}"#, nested(1500)), &[]),
        // A caller must not claim to be a node that checked the body
        // unless it did: `checked` skips the decode of a body with `id`
        // and `ts` only.
        (
            format!(r#"{{"data":{}}}"#, nested(9)),
            &["100", "60000", "60000", "0", "", "60000", "1"][..],
        ),
    ] {
        let reply = fcall(body, extra);
        assert!(
            reply.contains("ERR fanout_publish") && reply.contains("may nest at most"),
            "{reply}"
        );
    }
    assert_eq!(redis.cli(&["XLEN", "{fanout:user:deep}:h"]).trim(), "0");
    let reply = fcall(format!(r#"{{"event":"ok","data":{}}}"#, nested(8)), &[]);
    assert_eq!(reply.lines().next().map(str::trim), Some("1"), "{reply}");
    let m = next_message(&mut c).await;
    assert_eq!(
        (&m["event"], &m["offset"]),
        (&json!("ok"), &json!(1)),
        "{m}"
    );
}

/// `FCALL fanout_publish` with a body that has no `id` or `ts`: Redis
/// fills them in, so every node and every replay shows the same message
/// the same way (a client deduplicating by id sees one message). A body
/// the nodes could not deliver (not a JSON object, a field of the wrong
/// type, a command) is refused with an error, kept nowhere and takes no
/// offset, so it cannot stop a later resume.
#[tokio::test]
async fn fcall_without_an_id_gets_one_id_everywhere() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let (a, b) = (node("a", &redis.url(), &[]), node("b", &redis.url(), &[]));
    let (mut on_a, welcome) = a.client_welcome("f1").await;
    let start = welcome["positions"]["user:f1"].clone();
    let mut on_b = b.client("f1").await;
    let fcall = |body: &str| {
        redis.cli(&[
            "FCALL",
            "fanout_publish",
            "2",
            "{fanout:user:f1}:h",
            "{fanout:user:f1}:m",
            "fanout:user:f1",
            body,
        ])
    };
    for bad in [
        r#"{"data":1"#,
        r#"{"id":5}"#,
        r#"{"id":""}"#,
        r#"{"ts":-1}"#,
        r#"[1]"#,
        r#"{"ts":1.5}"#,
        r#"{"event":""}"#,
        r#"{"from":"bad uid"}"#,
        r#"{"cmd":"disconnect"}"#,
        r#"{"offset":7,"epoch":"x","data":1}"#,
    ] {
        let reply = fcall(bad);
        assert!(reply.contains("ERR fanout_publish"), "{bad}: {reply}");
    }
    fcall(r#"{"event":"direct","data":{"n":1}}"#);
    fcall(r#"{"id":"mine","data":2,"from":"u-1@x.y/z","ts":1796604715351}"#);
    let (m1, m2) = (next_message(&mut on_a).await, next_message(&mut on_b).await);
    assert_eq!(m1["offset"], 1, "the refused bodies took no offset: {m1}");
    assert_eq!(m1, m2, "both nodes show the same frame");
    assert!(m1["id"].as_str().is_some_and(|id| !id.is_empty()), "{m1}");
    assert!(m1["ts"].as_u64().is_some_and(|ts| ts > 0), "{m1}");
    let own = next_message(&mut on_a).await;
    assert_eq!(
        (&own["id"], &own["from"], &own["ts"]),
        (
            &json!("mine"),
            &json!("u-1@x.y/z"),
            &json!(1796604715351u64)
        )
    );
    drop(on_a);
    let (mut again, welcome) = a.resume("f1", json!({"user:f1": start})).await;
    assert_eq!(welcome["recovered"], json!({"user:f1": true}), "{welcome}");
    assert_eq!(
        next_message(&mut again).await,
        m1,
        "the replay is the same frame"
    );
    assert_eq!(next_message(&mut again).await["id"], "mine");
}

/// The hard case through Redis: a client keeps reconnecting, to one node
/// then the other, with `since`, while a publisher publishes as fast as it
/// can. Across every seam it sees each message exactly once and in order.
#[tokio::test]
async fn resumes_racing_with_publishes_across_nodes_lose_and_repeat_nothing() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    // History deep enough for however far the publisher gets ahead of the
    // reading client: this test is about the seam, not about trimming.
    let deep = [
        "--history-user-size",
        "100000",
        "--history-group-size",
        "100000",
        "--max-recovery",
        "100000",
    ];
    let nodes = Arc::new([
        node("a", &redis.url(), &deep),
        node("b", &redis.url(), &deep),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let via = &nodes[(n % 2) as usize];
                publish(
                    via,
                    json!({"groups": ["race"], "users": ["racer"]}),
                    json!(n),
                )
                .await;
            }
        })
    };
    let mut positions = serde_json::Map::new();
    let (mut seen_group, mut seen_user) = (0u64, 0u64);
    for round in 0..10usize {
        let on = &nodes[round % 2];
        let (mut c, welcome) = if positions.is_empty() {
            let (mut c, w) = on.client_welcome("racer").await;
            let joined = c
                .call(json!({"type": "join", "id": 1, "group": "race"}))
                .await;
            positions.insert("group:race".into(), position_of(&joined));
            positions.insert("user:racer".into(), w["positions"]["user:racer"].clone());
            (c, w)
        } else {
            on.resume("racer", Value::Object(positions.clone())).await
        };
        if round > 0 {
            assert_eq!(
                welcome["recovered"],
                json!({"group:race": true, "user:racer": true}),
                "{welcome}"
            );
        }
        for _ in 0..(15 + round * 5) {
            let m = next_message(&mut c).await;
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
        seen_group > 50 && seen_user > 50,
        "{seen_group} {seen_user}"
    );
}

/// History is bounded by age as well as count: once the oldest message a
/// client missed is older than the channel's TTL, the channel comes back
/// `recovered: false`, even while newer messages keep the history alive,
/// whether the node asks (it passes its TTL) or a backend calls
/// `fanout_history` without one (the library's default, which the node
/// filled in from its own configuration).
#[tokio::test]
async fn messages_older_than_the_ttl_are_not_replayed() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let a = node("a", &redis.url(), &["--history-user-ttl", "2s"]);
    let (c, welcome) = a.client_welcome("old1").await;
    let start = welcome["positions"]["user:old1"].clone();
    let epoch = start["epoch"].as_str().unwrap().to_owned();
    drop(c);
    publish(&a, json!({"users": ["old1"]}), json!(0)).await;
    let history = |since: &str| {
        redis.cli(&[
            "FCALL",
            "fanout_history",
            "2",
            "{fanout:user:old1}:h",
            "{fanout:user:old1}:m",
            since,
            &epoch,
            "100",
        ])
    };
    let complete = |reply: String| reply.lines().nth(2).map(|l| l.trim() == "1");
    // Within the TTL the first message is replayed.
    let (_c, w) = a.resume("old1", json!({"user:old1": start})).await;
    assert_eq!(w["recovered"], json!({"user:old1": true}), "{w}");
    assert_eq!(complete(history("0")), Some(true));
    // Newer messages keep the stream (and the first message) in Redis.
    let mut top = 1;
    for n in 1..=6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        top = publish(&a, json!({"users": ["old1"]}), json!(n)).await["positions"]["user:old1"]
            ["offset"]
            .as_u64()
            .unwrap();
    }
    let (_c, w) = a.resume("old1", json!({"user:old1": start})).await;
    assert_eq!(w["recovered"], json!({"user:old1": false}), "{w}");
    assert_eq!(complete(history("0")), Some(false));
    // The last message is recent: a client that missed only it recovers.
    let recent = json!({"offset": top - 1, "epoch": epoch});
    let (_c, w) = a.resume("old1", json!({"user:old1": recent})).await;
    assert_eq!(w["recovered"], json!({"user:old1": true}), "{w}");
    assert_eq!(complete(history(&(top - 1).to_string())), Some(true));
}
