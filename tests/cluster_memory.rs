//! Several nodes in one process on one in-process bus behave as one
//! service, exactly as nodes on one Redis do: delivery across nodes,
//! `offline_users`, presence and stats, commands to a user's connections
//! wherever they are, and one node draining while the others serve. No
//! Redis needed: what involves Redis itself is in redis_broker.rs.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Client, TestServer, spawn_nodes};

/// Publishes a marker to `uid` through `via` and returns its id.
async fn marker(via: &TestServer, uid: &str) -> String {
    via.publish_ok(json!({ "users": [uid] }), "marker", json!(null))
        .await
}

/// Reads until the message `id`; nothing else may come first.
async fn expect_only(c: &mut Client, id: &str) {
    assert_eq!(c.read_until(id).await, Vec::<Value>::new());
}

/// A publish through one node reaches the user's connections on every
/// node exactly once, and a user connected elsewhere is not "offline".
#[tokio::test]
async fn publishes_cross_nodes_exactly_once() {
    let [a, b, c] = spawn_nodes::<3>().await;
    let mut u_on_b = b.client("u").await;
    let mut u_on_c = c.client("u").await;
    let (s, body) = a
        .publish(json!({"to": {"users": ["u", "ghost"]}, "data": 1}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["offline_users"], json!(["ghost"]));
    let id = body["id"].as_str().unwrap().to_owned();
    let end = marker(&a, "u").await;
    for client in [&mut u_on_b, &mut u_on_c] {
        let m = client.recv_type("message").await;
        assert_eq!(
            (m["id"].as_str(), m["channel"].as_str()),
            (Some(&*id), Some("user:u"))
        );
        expect_only(client, &end).await;
    }
}

/// Groups and `all` span nodes; the node with no member of a group gets
/// nothing for it.
#[tokio::test]
async fn groups_and_broadcasts_span_nodes() {
    let [a, b] = spawn_nodes::<2>().await;
    let mut x = a.client("x").await;
    let mut y = b.client("y").await;
    x.join("room").await;
    y.join("room").await;
    let id = a
        .publish_ok(json!({"groups": ["room"]}), "e", json!(1))
        .await;
    for c in [&mut x, &mut y] {
        let m = c.recv_type("message").await;
        assert_eq!(
            (m["id"].as_str(), m["channel"].as_str()),
            (Some(&*id), Some("group:room"))
        );
    }
    let id = b.publish_ok(json!({"all": true}), "e", json!(2)).await;
    for c in [&mut x, &mut y] {
        let m = c.recv_type("message").await;
        assert_eq!(
            (m["id"].as_str(), m["channel"].as_str()),
            (Some(&*id), Some("all"))
        );
    }
    // A client publishing to a group reaches members on the other node.
    let ack = x
        .call(json!({"type": "publish", "id": 7, "group": "room", "data": "hi"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = y.recv_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["data"].as_str()),
        (Some("x"), Some("hi"))
    );
}

/// Presence and stats are answered by every node, asked of any node.
#[tokio::test]
async fn presence_and_stats_are_cluster_wide() {
    let [a, b, c] = spawn_nodes::<3>().await;
    let _u1 = a.client("u").await;
    let _u2 = b.client("u").await;
    let mut v = b.client("v").await;
    v.join("g").await;
    let (s, user) = c.api(Method::GET, "/api/users/u", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        user,
        json!({"uid": "u", "online": true, "connections": 2, "complete": true, "unanswered_nodes": 0})
    );
    let (_, nobody) = c.api(Method::GET, "/api/users/nobody", None).await;
    assert_eq!(nobody["online"], false);
    let stats = a.stats().await;
    assert_eq!(
        (
            stats["nodes"].as_u64(),
            stats["connections"].as_u64(),
            stats["users"].as_u64(),
            stats["groups"].as_u64()
        ),
        (Some(3), Some(3), Some(3), Some(1)),
        "{stats}"
    );
}

/// Kick and server-side join/leave, asked of one node, act on the user's
/// connections on every node.
#[tokio::test]
async fn user_commands_reach_every_node() {
    let [a, b] = spawn_nodes::<2>().await;
    let mut on_a = a.client("w").await;
    let mut on_b = b.client("w").await;

    let (s, body) = b.api(Method::PUT, "/api/users/w/groups/team", None).await;
    assert_eq!((s, body["online"].as_bool()), (200, Some(true)), "{body}");
    for c in [&mut on_a, &mut on_b] {
        let j = c.recv_type("joined").await;
        assert_eq!(j["group"], "team");
    }
    let id = a
        .publish_ok(json!({"groups": ["team"]}), "e", json!(3))
        .await;
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.recv_type("message").await["id"], id.as_str());
    }
    let (s, _) = a
        .api(Method::DELETE, "/api/users/w/groups/team", None)
        .await;
    assert_eq!(s, 200);
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.recv_type("left").await["group"], "team");
    }
    let (s, body) = a.api(Method::POST, "/api/users/w/disconnect", None).await;
    assert_eq!(
        (s, body["disconnected"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    for c in [&mut on_a, &mut on_b] {
        c.expect_bye("kicked", 3503).await;
    }
    // Once both connections are gone, nobody is left to kick.
    assert_eventually!(
        a.api(Method::POST, "/api/users/w/disconnect", None).await.1["disconnected"] == false
    );
}

/// One node drains: its clients are told to reconnect elsewhere, the other
/// node keeps delivering, and the drained node no longer answers queries.
#[tokio::test]
async fn a_draining_node_leaves_the_others_serving() {
    let [mut a, b] = spawn_nodes::<2>().await;
    let mut on_a = a.client("d").await;
    let mut on_b = b.client("d").await;
    a.shutdown().await;
    let bye = on_a.expect_bye("shutdown", 3001).await;
    assert_eq!(bye["reconnect"], true, "{bye}");
    let (s, body) = b.publish(json!({"to": {"users": ["d"]}, "data": 4})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["offline_users"], json!([]));
    assert_eq!(on_b.recv_type("message").await["id"], body["id"]);
    let stats = b.stats().await;
    assert_eq!(
        (stats["nodes"].as_u64(), stats["connections"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}
