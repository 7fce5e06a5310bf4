//! A hostile client and a bad day, through a real process: connections
//! that never finish their headers (silent, slowloris, idle keep-alive)
//! are closed after `--http-header-timeout` while other clients are
//! served; `--max-connections` closes what is over it at once and frees a
//! WebSocket's slot only when it ends; and a node at its open-files limit
//! keeps serving its clients and recovers by itself.

mod support;

use std::time::Duration;

use serde_json::json;
use support::process::FanoutProcess;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Whether the server closes `stream` (EOF or reset) within the patience,
/// reading and discarding whatever it sends first.
async fn closed_by_server(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(support::patience(), wait)
        .await
        .is_ok()
}

async fn ping(c: &mut support::Client) {
    let pong = c.call(json!({"type": "ping", "id": 1})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

/// A connection that sends nothing, one that sends its headers a byte at a
/// time (slowloris) and an idle keep-alive connection after a complete
/// request are all closed; a WebSocket client is served throughout.
#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed() {
    let node = FanoutProcess::start("hdr", &["--http-header-timeout", "1s"]);
    let mut client = node.client("h1").await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(node.addr).await.unwrap());
    }
    // Slowloris: a request line, then one header byte every 200 ms.
    let slow = TcpStream::connect(node.addr).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let _ = slow_write
            .write_all(b"GET /client.js HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        while slow_write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Keep-alive: one complete request, then nothing.
    let mut idle = TcpStream::connect(node.addr).await.unwrap();
    idle.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"}") {
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 404"));

    // The attack does not disturb a connected client.
    ping(&mut client).await;
    let (status, _) = node
        .publish(json!({"users": ["h1"]}), json!("still here"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(client.recv_type("message").await["data"], "still here");

    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(s).await,
            "silent connection {i} still open"
        );
    }
    assert!(
        closed_by_server(&mut slow_read).await,
        "slowloris still open"
    );
    assert!(
        closed_by_server(&mut idle).await,
        "idle keep-alive still open"
    );
    trickle.abort();
    ping(&mut client).await;
}

/// A token of about 4 KiB (a JWT with many group patterns), as some
/// identity providers issue.
fn big_token(uid: &str) -> String {
    use fanout::{auth::Authenticator, config::JwtAlgorithm};
    let groups: Vec<String> = (0..120)
        .map(|i| format!("group-with-a-long-name-{i}"))
        .collect();
    Authenticator::new(
        JwtAlgorithm::Hs256,
        &fanout::auth::JwtKey::Secret(support::SECRET.as_bytes().to_vec()),
        None,
        None,
        &[],
    )
    .unwrap()
    .mint(uid, &groups, &[], Duration::from_secs(3600))
    .unwrap()
}

/// An oversized request target gets the JSON error 414 and oversized
/// headers (too many bytes, or too many headers) the JSON error 431, on a
/// connection that stays usable; a head past hyper's own buffer gets
/// hyper's bare 431. WebSocket and SSE with a 4 KiB token in the URL are
/// served, and so is a client connected throughout.
#[tokio::test]
async fn oversized_urls_and_headers_get_json_errors() {
    let node = FanoutProcess::start("big", &[]);
    let mut client = node.client("b1").await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", node.addr);
    let expect = |status: u16, code: &'static str| {
        move |(s, body): (u16, serde_json::Value)| {
            assert_eq!(
                (s, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}"
            );
        }
    };
    let long = "x".repeat(20 * 1024);
    let res = http
        .get(url(&format!("/client.js?pad={long}")))
        .send()
        .await
        .unwrap();
    expect(414, "uri_too_long")(support::read(res).await);
    let res = http
        .get(url("/client.js"))
        .header("X-Pad", &long)
        .send()
        .await
        .unwrap();
    expect(431, "headers_too_large")(support::read(res).await);
    let mut many = reqwest::header::HeaderMap::new();
    for i in 0..150 {
        many.insert(
            reqwest::header::HeaderName::try_from(format!("x-h{i}")).unwrap(),
            reqwest::header::HeaderValue::from_static("1"),
        );
    }
    let res = http
        .get(url("/client.js"))
        .headers(many)
        .send()
        .await
        .unwrap();
    expect(431, "headers_too_large")(support::read(res).await);

    // The same connection (HTTP/1.1 keep-alive) goes on after a refusal.
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "GET /client.js?pad={long} HTTP/1.1\r\nHost: x\r\n\r\nGET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while answer.matches("HTTP/1.1 ").count() < 2 || !answer.ends_with('}') {
        let n = tokio::time::timeout(support::patience(), tcp.read(&mut buf))
            .await
            .expect("both answers within the patience")
            .unwrap();
        assert!(n > 0, "closed: {answer}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(answer.contains("\"uri_too_long\""), "{answer}");
    assert!(
        answer.contains("HTTP/1.1 401"),
        "the second request was answered: {answer}"
    );

    // Past hyper's buffer: its own 431, no body.
    let huge = "x".repeat(100 * 1024);
    let res = http
        .get(url("/client.js"))
        .header("X-Pad", &huge)
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), 431);
    }

    // A 4 KiB token in the URL is fine for both transports.
    let token = big_token("b2");
    assert!(token.len() > 4000, "{}", token.len());
    let mut ws = support::Client::connect(&format!("ws://{}/ws?token={token}", node.addr)).await;
    assert_eq!(ws.recv().await["type"], "welcome");
    let res = http
        .get(url(&format!("/sse?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    ping(&mut client).await;
}

/// At `--max-connections` a new connection is closed at once (and counted
/// as `node_full`); a WebSocket keeps its slot while it lives; slots come
/// back when connections end, with nothing to do by hand.
#[tokio::test]
async fn over_max_connections_is_closed_at_once_and_slots_come_back() {
    let node = FanoutProcess::start(
        "cap",
        &["--max-connections", "3", "--http-header-timeout", "2s"],
    );
    let mut a = node.client("m1").await;
    let b = node.client("m2").await;
    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    // Full: the fourth is closed before it can say anything.
    let mut over = TcpStream::connect(node.addr).await.unwrap();
    assert!(closed_by_server(&mut over).await);
    assert_eventually!(
        node.metric("fanout_connections_rejected_total", "reason=\"node_full\"")
            .await
            >= 1.0
    );
    ping(&mut a).await;
    // The silent one times out; its slot comes back by itself.
    assert!(closed_by_server(&mut silent).await);
    let mut c = reconnecting_client(&node, "m3").await;
    ping(&mut c).await;
    // Still full (a, b, c): closing b frees its slot.
    let mut over = TcpStream::connect(node.addr).await.unwrap();
    assert!(closed_by_server(&mut over).await);
    drop(b);
    let mut d = reconnecting_client(&node, "m4").await;
    ping(&mut d).await;
}

/// A client, retrying while the node is still full (its slots free
/// asynchronously after the connection that held them ends).
async fn reconnecting_client(node: &FanoutProcess, uid: &str) -> support::Client {
    let deadline = std::time::Instant::now() + support::patience();
    loop {
        let url = format!("ws://{}/ws?token={}", node.addr, support::mint(uid));
        if let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        {
            let mut c = support::Client { ws };
            if c.recv().await["type"] == "welcome" {
                return c;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{uid} never got in:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With an open-files limit of 600 the automatic cap is 88 connections: a
/// flood of 150 silent connections fills it without ever exhausting the
/// node's file descriptors (no accept error), connected clients keep
/// being served, and new clients get in once the flood times out.
#[tokio::test]
async fn a_node_at_its_open_files_limit_keeps_serving_and_recovers() {
    let node =
        FanoutProcess::start_with_open_files("fds", &["--http-header-timeout", "2s"], Some(600));
    let mut client = node.client("f1").await;
    let mut flood = Vec::new();
    for _ in 0..150 {
        if let Ok(s) = TcpStream::connect(node.addr).await {
            flood.push(s);
        }
    }
    ping(&mut client).await;
    assert_eventually!(
        node.metric("fanout_connections_rejected_total", "reason=\"node_full\"")
            .await
            >= 1.0
    );
    for s in &mut flood {
        assert!(closed_by_server(s).await);
    }
    let mut again = reconnecting_client(&node, "f2").await;
    ping(&mut again).await;
    ping(&mut client).await;
    assert!(
        !node.log().contains("accept error"),
        "the node ran out of file descriptors:\n{}",
        node.log()
    );
}
