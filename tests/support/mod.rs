//! Shared helpers for integration tests: a real gateway on a free port, real
//! WebSocket clients, an HTTP client for the API, and `assert_eventually!`.
//!
//! Waits are bounded by a patience (default 10 s, `FANOUT_TEST_PATIENCE_MS`)
//! that only turns a hang into a failure; no test depends on how fast
//! something happens.

#![allow(dead_code, unreachable_pub)]

pub mod process;
pub mod proxy;
pub mod redis;

use std::{net::SocketAddr, time::Duration};

use fanout::{
    app::{self, App},
    auth::{Authenticator, JwtAlgorithm, JwtKey},
    broker::memory::MemoryBus,
    config::Config,
    shutdown::Shutdown,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

pub const SECRET: &str = "integration-test-secret";
pub const API_KEY: &str = "integration-test-api-key-1";
pub const API_KEY_2: &str = "integration-test-api-key-2";

pub fn patience() -> Duration {
    let ms = std::env::var("FANOUT_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Retries `$cond` until it holds or the patience runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(, $($msg:tt)+)?) => {{
        let deadline = std::time::Instant::now() + $crate::support::patience();
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                let detail: String = String::new() $(+ &format!($($msg)+))?;
                panic!("condition never held: {} {}", stringify!($cond), detail);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A test configuration: free port, known secret and API keys.
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        internal_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        node_id: Some("test-node".into()),
        jwt: fanout::config::JwtArgs {
            secret: Some(SECRET.into()),
            ..Default::default()
        },
        api_keys: vec![API_KEY.into(), API_KEY_2.into()],
        log: "warn".into(),
        drain_window: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

pub struct TestServer {
    app: Option<App>,
    pub addr: SocketAddr,
    shutdown: Shutdown,
    auth: Authenticator,
    http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(change: impl FnOnce(&mut Config)) -> Self {
        Self::spawn(change, None).await
    }

    async fn spawn(change: impl FnOnce(&mut Config), bus: Option<MemoryBus>) -> Self {
        let mut cfg = config();
        change(&mut cfg);
        let mut settings = app::Settings::from_config(cfg.clone()).expect("test config is valid");
        if let Some(bus) = bus {
            settings = settings.on_bus(bus);
        }
        let shutdown = Shutdown::new();
        let app = app::spawn(settings, shutdown.clone())
            .await
            .expect("server starts");
        let auth = Authenticator::new(
            JwtAlgorithm::Hs256,
            &JwtKey::Secret(SECRET.as_bytes().to_vec()),
            cfg.jwt.issuer.clone(),
            cfg.jwt.audience.clone(),
            &[],
        )
        .unwrap();
        Self {
            addr: app.addr(),
            app: Some(app),
            shutdown,
            auth,
            http: reqwest::Client::new(),
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    /// Runs the app's graceful shutdown to completion.
    pub async fn shutdown(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// A token for `uid` that may join `groups` and publish to `publish`.
    pub fn token_with(
        &self,
        uid: &str,
        groups: &[&str],
        publish: &[&str],
        ttl: Duration,
    ) -> String {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        self.auth
            .mint(uid, &owned(groups), &owned(publish), ttl)
            .unwrap()
    }

    pub fn token(&self, uid: &str) -> String {
        self.token_with(uid, &["*"], &["*"], Duration::from_secs(3600))
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Connects with `?token=` and reads the welcome frame.
    pub async fn client(&self, uid: &str) -> Client {
        self.client_with_token(&self.token(uid)).await
    }

    pub async fn client_with_token(&self, token: &str) -> Client {
        let mut c = Client::connect(&format!("{}?token={token}", self.ws_url())).await;
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c
    }

    /// Connects with `?token=` and returns the welcome frame too.
    pub async fn client_welcome(&self, uid: &str) -> (Client, Value) {
        let mut c = Client::connect(&format!("{}?token={}", self.ws_url(), self.token(uid))).await;
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        (c, w)
    }

    /// Connects, authenticates with an `auth` frame carrying `since`, and
    /// returns the first frame (welcome, or the error).
    pub async fn resume(&self, uid: &str, since: Value) -> (Client, Value) {
        let mut c = self.raw_client().await;
        let first = c
            .call(json!({"type": "auth", "token": self.token(uid), "since": since}))
            .await;
        (c, first)
    }

    /// Connects without a token (auth by first frame).
    pub async fn raw_client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An authorised API call; returns status and JSON body.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        api_call(&self.http, self.addr, method, path, body).await
    }

    pub async fn publish(&self, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::POST, "/api/publish", Some(body))
            .await
    }

    /// Publishes and asserts success, returning the message id.
    pub async fn publish_ok(&self, to: Value, event: &str, data: Value) -> String {
        let (status, body) = self
            .publish(json!({"to": to, "event": event, "data": data}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Publishes a marker to `uid` and returns what `client` read before
    /// it: anything wrongly delivered earlier shows up here (one node's
    /// broker delivers in order).
    pub async fn frames_until_marker(&self, client: &mut Client, uid: &str) -> Vec<Value> {
        let id = self
            .publish_ok(json!({"users": [uid]}), "marker", json!(null))
            .await;
        client.read_until(&id).await
    }

    pub async fn stats(&self) -> Value {
        self.api(reqwest::Method::GET, "/api/stats", None).await.1
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.shutdown.stop_background();
    }
}

/// `N` nodes in this process on one in-process bus: they act as one
/// service, as nodes on one Redis do, without Redis. Node ids are
/// `node-0`, `node-1`, …
pub async fn spawn_nodes<const N: usize>() -> [TestServer; N] {
    spawn_nodes_with::<N>(|_, _| {}).await
}

/// [`spawn_nodes`], with each node's configuration changed by
/// `change(index, config)`.
pub async fn spawn_nodes_with<const N: usize>(
    change: impl Fn(usize, &mut Config),
) -> [TestServer; N] {
    let bus = MemoryBus::default();
    let mut nodes = Vec::with_capacity(N);
    for i in 0..N {
        let node = TestServer::spawn(
            |c| {
                c.node_id = Some(format!("node-{i}"));
                change(i, c);
            },
            Some(bus.clone()),
        )
        .await;
        nodes.push(node);
    }
    match nodes.try_into() {
        Ok(nodes) => nodes,
        Err(_) => unreachable!("N nodes were spawned"),
    }
}

/// An API call with the test API key against the server at `addr`.
pub async fn api_call(
    http: &reqwest::Client,
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    read(req.send().await.unwrap()).await
}

pub async fn read(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A real WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw at the end of a connection.
#[derive(Debug, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = connect_async(url).await.expect("websocket connects");
        Self { ws }
    }

    /// Tries to connect; returns the HTTP status and body of a refusal.
    pub async fn refused(request: impl IntoClientRequest + Unpin) -> (u16, Value) {
        match connect_async(request).await {
            Ok(_) => panic!("connection was accepted"),
            Err(tungstenite::Error::Http(res)) => {
                let body = res
                    .body()
                    .as_ref()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                (res.status().as_u16(), body)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next text frame as JSON (pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(patience(), self.ws.next())
                .await
                .expect("a frame within the patience")
                .expect("connection still open")
                .expect("read ok");
            match m {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Sends a frame and returns the reply.
    pub async fn call(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Reads until the close frame; returns the frames before it and the close.
    pub async fn recv_until_close(&mut self) -> (Vec<Value>, Closed) {
        let mut frames = Vec::new();
        loop {
            let m = tokio::time::timeout(patience(), self.ws.next())
                .await
                .expect("close within the patience");
            match m {
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (
                        frames,
                        Closed {
                            code: u16::from(code),
                            reason: reason.to_string(),
                        },
                    );
                }
                Some(Ok(Message::Close(None))) => {
                    return (
                        frames,
                        Closed {
                            code: u16::from(CloseCode::Status),
                            reason: String::new(),
                        },
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("read failed before close: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    /// The frames read before the message with `id` (a duplicate or stray
    /// message would show up here).
    pub async fn read_until(&mut self, id: &str) -> Vec<Value> {
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["id"] == id {
                return before;
            }
            before.push(v);
        }
    }

    /// Expects `bye` with `reason` followed by a close with `code`.
    pub async fn expect_bye(&mut self, reason: &str, code: u16) -> Value {
        let (frames, closed) = self.recv_until_close().await;
        let bye = frames
            .iter()
            .rev()
            .find(|f| f["type"] == "bye")
            .cloned()
            .unwrap_or_else(|| panic!("no bye frame in {frames:?}"));
        assert_eq!(bye["reason"], reason, "{bye}");
        assert_eq!(closed.code, code, "{closed:?}");
        assert_eq!(closed.reason, reason);
        bye
    }

    /// Round-trips an application ping: proves the connection is open and
    /// every frame the server queued before it has been read.
    pub async fn sync(&mut self) -> Vec<Value> {
        let id = rand_id();
        self.send(json!({"type": "ping", "id": id})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["id"] == id {
                return before;
            }
            before.push(v);
        }
    }

    pub async fn join(&mut self, group: &str) {
        let id = rand_id();
        let r = self
            .call(json!({"type": "join", "id": id, "group": group}))
            .await;
        assert_eq!(
            positionless(&r),
            json!({"type": "joined", "id": id, "group": group})
        );
    }
}

/// `frame` without its channel position (`offset`, `epoch`), which must be
/// there, and well formed, on `joined` and `message` frames: for comparing
/// the rest exactly.
pub fn positionless(frame: &Value) -> Value {
    let mut v = frame.clone();
    if v["type"] == "joined" || v["type"] == "message" {
        assert!(v["offset"].as_u64().is_some(), "no offset: {frame}");
        assert!(
            v["epoch"].as_str().is_some_and(|e| !e.is_empty()),
            "no epoch: {frame}"
        );
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("offset");
        o.remove("epoch");
    }
    v
}

/// A one-hour token for `uid` that may join and publish anywhere.
pub fn mint(uid: &str) -> String {
    Authenticator::new(
        JwtAlgorithm::Hs256,
        &JwtKey::Secret(SECRET.as_bytes().to_vec()),
        None,
        None,
        &[],
    )
    .unwrap()
    .mint(uid, &["*".into()], &["*".into()], Duration::from_secs(3600))
    .unwrap()
}

/// Sum of a metric's samples whose label text contains `labels`
/// (`""` matches every sample) in a Prometheus exposition.
pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let matches = series == name
                || (series.starts_with(name) && series[name.len()..].starts_with('{'));
            (matches && series.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn rand_id() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(1_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A Server-Sent Events reader over a real HTTP response, as `EventSource`
/// reads one: events split on blank lines, comments skipped, `id:`,
/// `retry:` and `data:` fields parsed.
pub struct SseClient {
    pub res: reqwest::Response,
    buf: String,
}

/// One event of an SSE stream.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub retry: Option<u64>,
    pub data: Value,
}

impl SseClient {
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            res,
            buf: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    retry: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("retry: ") {
                        event.retry = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive) or a bare retry
                }
                event.data = serde_json::from_str(&data).unwrap();
                return Some(event);
            }
            let chunk = tokio::time::timeout(patience(), self.res.chunk())
                .await
                .expect("an event within the patience")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// The next event whose frame is of `kind`.
    pub async fn next_of(&mut self, kind: &str) -> SseEvent {
        loop {
            let e = self.next().await.expect("the stream is still open");
            if e.data["type"] == kind {
                return e;
            }
        }
    }
}
