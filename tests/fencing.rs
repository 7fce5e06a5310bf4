//! A hung node is fenced, and until then nobody pretends it is not there:
//! real fanout processes on a real Redis, one of them stopped with SIGSTOP.
//! Presence (`GET /api/users/{uid}`) and a publish's `offline_users` agree
//! before and after the fence; the fenced node, when it wakes, sends its
//! clients to reconnect, and they resume without losing a message. A busy
//! but healthy node is never fenced.

mod support;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    process::FanoutProcess,
    redis::{RedisCluster, RedisServer},
};

fn node(id: &str, url: &str, fence_after: &str) -> FanoutProcess {
    node_with(id, url, fence_after, &[])
}

fn node_with(id: &str, url: &str, fence_after: &str, extra: &[&str]) -> FanoutProcess {
    let mut args = vec![
        "--redis-url",
        url,
        "--node-fence-after",
        fence_after,
        "--query-timeout",
        "300ms",
        "--redis-probe-interval",
        "500ms",
        "--drain-window",
        "1s",
    ];
    args.extend_from_slice(extra);
    FanoutProcess::start(id, &args)
}

/// What one look from a backend finds: is the user offline according to
/// the publish before presence, according to presence, and according to
/// the publish after it? Returns the ids the two publishes were given.
async fn look(via: &FanoutProcess, uid: &str, n: &mut u64) -> (bool, Value, bool, Vec<String>) {
    let mut ids = Vec::new();
    let offline = |body: &Value, ids: &mut Vec<String>| {
        ids.push(body["id"].as_str().unwrap().to_owned());
        body["offline_users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == uid)
    };
    *n += 1;
    let (s, before) = via.publish(json!({"users": [uid]}), json!(*n)).await;
    assert_eq!(s, 200, "{before}");
    let before = offline(&before, &mut ids);
    let (s, presence) = via
        .api(Method::GET, &format!("/api/users/{uid}"), None)
        .await;
    assert_eq!(s, 200, "{presence}");
    *n += 1;
    let (s, after) = via.publish(json!({"users": [uid]}), json!(*n)).await;
    assert_eq!(s, 200, "{after}");
    let after = offline(&after, &mut ids);
    (before, presence, after, ids)
}

/// Looks (through `via`) until `uid`, whose node was stopped, reads
/// offline both in publishes and in presence, checking on every look that
/// the two agree; returns the ids of the messages published meanwhile.
async fn until_fenced(via: &FanoutProcess, uid: &str, n: &mut u64) -> Vec<String> {
    let mut published = Vec::new();
    let mut silent_seen = false;
    let deadline = Instant::now() + support::patience() * 3;
    loop {
        let (before, presence, after, ids) = look(via, uid, n).await;
        published.extend(ids);
        // Publishes and presence move from online to offline once; a
        // look whose two publishes agree must find presence saying the
        // same.
        if before == after {
            assert_eq!(
                presence["online"], !before,
                "presence disagrees with offline_users ({before}): {presence}"
            );
        }
        if presence["complete"] == false {
            silent_seen = true;
            assert_eq!(presence["unanswered_nodes"], 1, "{presence}");
        }
        if before && after && presence["online"] == false {
            assert_eq!(presence["complete"], true, "{presence}");
            assert_eq!(presence["connections"], 0, "{presence}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped node was never fenced: {presence}\n{}",
            via.log()
        );
    }
    assert!(silent_seen, "the stopped node was never reported as silent");
    published
}

/// Node A is stopped with SIGSTOP while its user is connected. Presence
/// asked of node B never says offline while publishes say online (before
/// fencing both say online: a node that holds the user did not answer),
/// and once A is fenced both say offline. When A wakes, its client is told
/// to reconnect, and resuming on B it gets every message published
/// meanwhile, once and in order.
#[tokio::test]
async fn a_hung_node_is_fenced_and_presence_agrees_with_offline_users() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let a = node("a", &url, "2s");
    let b = node("b", &url, "2s");
    let uid = "hung";
    let channel = format!("user:{uid}");
    let (mut client, welcome) = a.client_welcome(uid).await;
    let mut position = welcome["positions"][&channel].clone();
    let mut n = 0;
    let mut published = Vec::new();
    // Both nodes steady: presence complete and online, publishes online.
    let deadline = Instant::now() + support::patience();
    loop {
        let (before, presence, after, ids) = look(&b, uid, &mut n).await;
        published.extend(ids);
        assert!(!before && !after, "a connected user read offline");
        if presence["online"] == true && presence["complete"] == true {
            assert_eq!(presence["connections"], 1, "{presence}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never settled: {presence}"
        );
    }

    a.signal("STOP");
    published.extend(until_fenced(&b, uid, &mut n).await);
    let (_, stats) = b.api(Method::GET, "/api/stats", None).await;
    assert_eq!(stats["complete"], true, "{stats}");
    assert_eq!(stats["nodes"], 1, "{stats}");
    assert_eq!(b.metric("fanout_fence_nodes_fenced_total", "").await, 1.0);

    a.signal("CONT");
    // A finds it was fenced and sends its client away; what it delivers
    // first is in order.
    let (frames, closed) = client.recv_until_close().await;
    assert_eq!(closed.code, 3001, "{frames:?}");
    let bye = frames.iter().find(|f| f["type"] == "bye").unwrap();
    assert_eq!(bye["reconnect"], true, "{bye}");
    let mut received = Vec::new();
    for f in frames.iter().filter(|f| f["type"] == "message") {
        received.push(f["id"].as_str().unwrap().to_owned());
        position = json!({"offset": f["offset"], "epoch": f["epoch"]});
    }
    let (mut client, w) = b.resume(uid, json!({ channel.clone(): position })).await;
    assert_eq!(w["recovered"][&channel], true, "{w}");
    let end = b.publish(json!({"users": [uid]}), json!("end")).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for f in client.read_until(&end).await {
        if f["type"] == "message" {
            received.push(f["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        received, published,
        "every message, once and in order, across the hang and the resume"
    );
    assert_eventually!(a.metric("fanout_fence_self_fenced_total", "").await == 1.0);
    // A is back in the cluster: a new client there (once A's Redis
    // connections are back) is seen by B.
    let token = support::mint("back");
    let mut back = Vec::new();
    assert_eventually!({
        let mut c = support::Client::connect(&format!("ws://{}/ws?token={token}", a.addr)).await;
        let first = c.recv().await;
        let welcomed = first["type"] == "welcome";
        if welcomed {
            back.push(c);
        }
        welcomed
    });
    assert_eq!(back.len(), 1);
    assert_eventually!(
        b.api(Method::GET, "/api/users/back", None).await.1
            == json!({"uid": "back", "online": true, "connections": 1, "complete": true, "unanswered_nodes": 0})
    );
}

/// Two nodes under steady publishing for several fence times, a client
/// on each reading throughout, neither node hung: nobody is fenced, no
/// client is sent away, and every message arrives once.
#[tokio::test]
async fn busy_healthy_nodes_are_not_fenced() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Arc::new(node("a", &url, "2s"));
    let b = Arc::new(node("b", &url, "2s"));
    let users = ["busy-a", "busy-b"];
    let mut readers = Vec::new();
    for (via, uid) in [(&a, users[0]), (&b, users[1])] {
        let mut c = via.client(uid).await;
        readers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let f = c.recv().await;
                assert_eq!(f["type"], "message", "{uid} got {f}");
                if f["data"] == "end" {
                    return ids;
                }
                ids.push(f["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for via in [a.clone(), b.clone()] {
        let stop = stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (s, body) = via.publish(json!({"users": users}), json!(n)).await;
                assert_eq!(s, 200, "{body}");
                assert_eq!(body["offline_users"], json!([]), "{body}");
                ids.push(body["id"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        }));
    }
    // Several fence times of publishing: the test's length, not a bound
    // on anything measured.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut published = HashSet::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    let (s, _) = a.publish(json!({"users": users}), json!("end")).await;
    assert_eq!(s, 200);
    for (uid, reader) in users.iter().zip(readers) {
        let ids = reader.await.unwrap();
        let got: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(got.len(), ids.len(), "{uid}: duplicates");
        assert_eq!(got, published, "{uid}: not every message arrived");
    }
    for n in [&a, &b] {
        assert_eq!(n.metric("fanout_fence_nodes_fenced_total", "").await, 0.0);
        assert_eq!(n.metric("fanout_fence_self_fenced_total", "").await, 0.0);
    }
}

/// On a Redis Cluster a client has a connection on every master: the
/// fencer closes the stopped node's connections on each, and its user
/// reads offline everywhere, presence agreeing throughout.
#[tokio::test]
async fn a_hung_node_is_fenced_on_every_cluster_master() {
    if !support::redis::available() {
        return;
    }
    let cluster = RedisCluster::start(3);
    let url = cluster.url();
    let a = node_with("a", &url, "2s", &["--redis-cluster"]);
    let b = node_with("b", &url, "2s", &["--redis-cluster"]);
    let uid = "hung-c";
    let _client = a.client(uid).await;
    let mut n = 0;
    assert_eventually!(
        b.api(Method::GET, &format!("/api/users/{uid}"), None)
            .await
            .1["connections"]
            == 1
    );
    a.signal("STOP");
    until_fenced(&b, uid, &mut n).await;
    // Its 6 clients had a connection on each master: more than one
    // master's worth was closed.
    assert!(b.metric("fanout_fence_connections_killed_total", "").await > 6.0);
    let (_, stats) = b.api(Method::GET, "/api/stats", None).await;
    assert_eq!(
        (stats["nodes"].as_u64(), stats["complete"].as_bool()),
        (Some(1), Some(true))
    );
    a.signal("CONT");
}
