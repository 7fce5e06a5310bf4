//! A connection's life: heartbeats, idle timeout, token refresh and expiry,
//! slow consumers, many connections, an empty registry afterwards, and
//! shutdown.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Client, TestServer};
use tokio::net::TcpSocket;
use tokio_tungstenite::{MaybeTlsStream, tungstenite::Message};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The server pings; a client that answers stays connected past the idle
/// timeout.
#[tokio::test]
async fn heartbeats_keep_a_responsive_client_alive() {
    let server = TestServer::with(|c| {
        c.heartbeat = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let mut c = server.client("1").await;
    let mut pings = 0;
    // Reading lets tungstenite answer each ping with a pong.
    while pings < 6 {
        match tokio::time::timeout(support::patience(), c.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    // Six pings at 200 ms intervals span well over the 600 ms idle timeout.
    assert_eq!(
        c.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
}

/// A client that sends nothing, not even pongs, is closed with 3012.
#[tokio::test]
async fn silent_client_is_closed_as_idle() {
    let server = TestServer::with(|c| {
        c.heartbeat = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(400);
    })
    .await;
    // A hand-made client that never writes after the handshake: a
    // WebSocket library would answer the server's pings.
    let mut raw = RawClient::connect(&server, &server.token("idle")).await;
    let mut texts = Vec::new();
    let close = loop {
        match raw.frame().await {
            (0x1, payload) => texts.push(serde_json::from_slice::<Value>(&payload).unwrap()),
            (0x8, payload) => break payload,
            _ => {}
        }
    };
    assert_eq!(texts[0]["type"], "welcome");
    let bye = texts.last().unwrap();
    assert_eq!(
        (bye["type"].as_str(), bye["reason"].as_str()),
        (Some("bye"), Some("idle_timeout"))
    );
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 3012);
    assert_eq!(&close[2..], b"idle_timeout");
}

/// A WebSocket client reduced to reading server frames; it never writes
/// after the handshake.
struct RawClient {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl RawClient {
    async fn connect(server: &TestServer, token: &str) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let req = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut stream = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 101"), "{line}");
        while line != "\r\n" {
            line.clear();
            stream.read_line(&mut line).await.unwrap();
        }
        Self { stream }
    }

    /// The next frame's opcode and payload (server frames are unmasked).
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.unwrap();
            let len = match head[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await.unwrap();
            (head[0] & 0x0f, payload)
        };
        tokio::time::timeout(support::patience(), read)
            .await
            .expect("a frame")
    }
}

/// At `exp` the server sends bye token_expired and closes 3005.
#[tokio::test]
async fn expired_token_closes_with_3005() {
    let server = TestServer::start().await;
    let token = server.token_with("1", &[], &[], Duration::from_secs(1));
    let mut c = server.client_with_token(&token).await;
    let bye = c.expect_bye("token_expired", 3005).await;
    assert_eq!(bye["reconnect"], true);
}

/// A refresh with the same sub moves the expiry; the connection outlives
/// the first token.
#[tokio::test]
async fn refresh_extends_the_connection() {
    let server = TestServer::start().await;
    let short = server.token_with("1", &[], &[], Duration::from_secs(2));
    let mut c = server.client_with_token(&short).await;
    let first_exp = unix_now() + 2;
    let long = server.token_with("1", &["*"], &[], Duration::from_secs(3600));
    let r = c
        .call(json!({"type": "refresh", "id": 4, "token": long}))
        .await;
    assert_eq!(r["type"], "refreshed");
    assert_eq!(r["id"], 4);
    assert!(r["exp"].as_u64().unwrap() >= unix_now() + 3590);
    // The new grants apply: the short token could join nothing.
    c.join("anything").await;
    // Outlive the first token's expiry, then prove the connection is open.
    while unix_now() <= first_exp {
        assert_eq!(
            c.call(json!({"type": "ping", "id": 1})).await["type"],
            "pong"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        c.call(json!({"type": "ping", "id": 2})).await["type"],
        "pong"
    );
}

/// A refresh token for another uid, or a bad one, is refused and the
/// connection keeps its identity.
#[tokio::test]
async fn refresh_must_keep_the_same_sub() {
    let server = TestServer::start().await;
    let mut c = server.client("1").await;
    let other = server.token("2");
    let r = c
        .call(json!({"type": "refresh", "id": 1, "token": other}))
        .await;
    assert_eq!(
        (r["code"].as_str(), r["id"].as_i64()),
        (Some("sub_mismatch"), Some(1))
    );
    let r = c
        .call(json!({"type": "refresh", "id": 2, "token": "garbage"}))
        .await;
    assert_eq!(r["code"], "invalid_token");
    let (_, body) = server.api(reqwest::Method::GET, "/api/users/1", None).await;
    assert_eq!(body["connections"], 1);
}

/// A client that stops reading is cut off as a slow consumer (3008) while
/// a fast client on the same group receives every message.
#[tokio::test]
async fn slow_consumer_is_cut_off_and_fast_one_gets_everything() {
    const MESSAGES: usize = 512;
    let server = TestServer::with(|c| {
        c.outbound_queue = 256 * 1024;
        c.api_body_limit = 1 << 20;
        // Long enough that the server is still waiting to send `bye` when
        // the slow client finally reads; this is the server's patience.
        c.write_timeout = Duration::from_secs(120);
    })
    .await;
    let mut fast = server.client("fast").await;
    fast.join("feed").await;
    // A small fixed receive buffer stops the kernel from absorbing
    // megabytes on the slow client's behalf.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = format!("{}?token={}", server.ws_url(), server.token("slow"));
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut slow = Client { ws };
    assert_eq!(slow.recv().await["type"], "welcome");
    slow.join("feed").await;

    // 512 × 16 KiB = 8 MiB: far more than the slow client's queue and the
    // socket buffers between us. Each publish waits until the fast client
    // has it, so the fast client never has more than one message queued.
    let pad = "x".repeat(16 * 1024);
    for i in 0..MESSAGES {
        let id = server
            .publish_ok(
                json!({"groups": ["feed"]}),
                "tick",
                json!({"i": i, "pad": pad}),
            )
            .await;
        let m = fast.recv().await;
        assert_eq!(
            (m["id"].as_str(), m["data"]["i"].as_u64()),
            (Some(&*id), Some(i as u64))
        );
    }
    // Each broadcast queued for the slow client too, or cut it off when its
    // queue was full: by now it has been cut off, and reads what it was
    // sent before, then bye.
    let (frames, closed) = slow.recv_until_close().await;
    let got: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["data"]["i"].as_u64().unwrap())
        .collect();
    assert!(got.len() < MESSAGES, "the slow client was not cut off");
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "in order, no gaps"
    );
    let bye = frames.last().unwrap();
    assert_eq!(bye["reason"], "slow_consumer");
    assert_eq!(closed.code, 3008);
    // The fast client is still fine.
    assert_eq!(
        fast.call(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
}

/// 1,000 concurrent connections all get a broadcast, and once they are gone
/// the registry is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connections_then_an_empty_registry() {
    const N: usize = 1000;
    let server = TestServer::start().await;
    let mut clients = Vec::with_capacity(N);
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let batch = chunk.iter().map(|i| {
            let uid = format!("u{}", i % 700);
            let server = &server;
            async move {
                let mut c = server.client(&uid).await;
                c.join(&format!("g{}", i % 10)).await;
                c
            }
        });
        clients.extend(futures_util::future::join_all(batch).await);
    }
    let stats = server.stats().await;
    assert_eq!(
        (
            stats["connections"].as_u64(),
            stats["users"].as_u64(),
            stats["groups"].as_u64()
        ),
        (Some(N as u64), Some(700), Some(10))
    );
    let id = server
        .publish_ok(json!({"all": true}), "hello", json!(null))
        .await;
    let received = futures_util::future::join_all(clients.iter_mut().map(|c| async {
        let m: Value = c.recv().await;
        m["id"].as_str().map(str::to_owned)
    }))
    .await;
    assert!(received.iter().all(|r| r.as_deref() == Some(&*id)));
    // Half leave cleanly, half just drop their TCP connection.
    for (i, mut c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            let _ = c.ws.close(None).await;
        }
    }
    assert_eventually!(
        server.stats().await
            == json!({"nodes": 1, "connections": 0, "users": 0, "groups": 0, "complete": true, "unanswered_nodes": 0}),
        "registry not empty: {}",
        server.stats().await
    );
}

/// Shutdown tells every client to reconnect elsewhere (bye shutdown, 3001,
/// a retry hint) and refuses new connections.
#[tokio::test]
async fn shutdown_closes_clients_with_3001() {
    let mut server = TestServer::with(|c| c.shutdown_grace = Duration::from_secs(10)).await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    let url = format!("{}?token={}", server.ws_url(), server.token("c"));
    server.shutdown().await;
    for c in [&mut a, &mut b] {
        let bye = c.expect_bye("shutdown", 3001).await;
        assert_eq!(bye["reconnect"], true);
        assert!(bye["retry_after_ms"].as_u64().unwrap() <= 5_000, "{bye}");
    }
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}
