//! One benchmark client connection, inside a worker process: connect from
//! a chosen loopback source address, authenticate (fanout token or Socket.IO
//! CONNECT; Pusher: subscribe, see `pusher`), join a group, then read and
//! record until told to drop or close.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    control::{ConnectOutcome, ConnectPlan, Target, group, uid},
    pusher,
    recorder::{Recorder, hist_to_pairs, latency_hist},
};

type Ws = WebSocketStream<TcpStream>;

/// What every connection task of a worker watches: `generation` bumps on a
/// storm; `close` ends the run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Signal {
    pub(crate) generation: u64,
    pub(crate) down_ms: u64,
    pub(crate) close: bool,
}

/// State shared by the connection tasks of one worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) recorder: Recorder,
    pub(crate) open: AtomicU64,
    pub(crate) signal: watch::Sender<Signal>,
    outcomes: Mutex<Tally>,
}

#[derive(Debug)]
struct Tally {
    expected: u64,
    ok: u64,
    failed: u64,
    errors: Vec<String>,
    started: Instant,
    last: Instant,
    /// Time to ready of each connection that opened, in µs.
    ready: Histogram<u64>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            recorder: Recorder::new(),
            open: AtomicU64::new(0),
            signal: watch::channel(Signal::default()).0,
            outcomes: Mutex::new(Tally {
                expected: 0,
                ok: 0,
                failed: 0,
                errors: Vec::new(),
                started: now,
                last: now,
                ready: latency_hist(),
            }),
        }
    }

    /// Starts counting the outcomes of `expected` connection attempts.
    pub(crate) fn count_attempts(&self, expected: u64) {
        let now = Instant::now();
        *self.outcomes.lock() = Tally {
            expected,
            ok: 0,
            failed: 0,
            errors: Vec::new(),
            started: now,
            last: now,
            ready: latency_hist(),
        };
    }

    /// Records how long a connection took from TCP connect to ready.
    pub(crate) fn ready_after(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self.outcomes.lock().ready.record(us.max(1));
    }

    pub(crate) fn outcome(&self, result: Result<(), String>) {
        let mut t = self.outcomes.lock();
        t.last = Instant::now();
        match result {
            Ok(()) => t.ok += 1,
            Err(e) => {
                t.failed += 1;
                if t.errors.len() < 5 && !t.errors.contains(&e) {
                    t.errors.push(e);
                }
            }
        }
    }

    /// Waits until every expected attempt has an outcome.
    pub(crate) async fn outcomes(&self) -> ConnectOutcome {
        loop {
            {
                let t = self.outcomes.lock();
                if t.ok + t.failed >= t.expected {
                    return ConnectOutcome {
                        ok: t.ok,
                        failed: t.failed,
                        errors: t.errors.clone(),
                        elapsed_ms: t.last.duration_since(t.started).as_millis() as u64,
                        ready_us: hist_to_pairs(&t.ready),
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Everything one connection needs, computed once.
#[derive(Debug)]
pub(crate) struct Spec {
    target: Target,
    index: u64,
    dst: SocketAddr,
    src: IpAddr,
    url: String,
    uid: String,
    group: Option<String>,
    timeout: Duration,
}

impl Spec {
    pub(crate) fn new(plan: &ConnectPlan, index: u64) -> Result<Self, String> {
        let base = pick(&plan.urls, index).ok_or("no node URL")?;
        let host = base
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{base}: only ws:// URLs are supported"))?;
        let dst: SocketAddr = host
            .trim_end_matches('/')
            .parse()
            .map_err(|_| format!("{base}: expected ws://<ip>:<port>"))?;
        // Loopback source addresses only make sense towards a loopback
        // node; towards another host the kernel picks the address.
        let src: IpAddr = if dst.ip().is_loopback() {
            pick(&plan.sources, index)
                .ok_or("no source address")?
                .parse()
                .map_err(|e| format!("source address: {e}"))?
        } else {
            IpAddr::from([0, 0, 0, 0])
        };
        let uid = uid(index);
        let group = group(index, plan.group_size);
        let url = match plan.target {
            Target::Fanout => {
                let token = mint(&plan.secret, &uid)?;
                format!("ws://{dst}/ws?token={token}")
            }
            Target::Socketio => format!("ws://{dst}/socket.io/?EIO=4&transport=websocket"),
            Target::Pusher => format!("ws://{dst}{}", pusher::ws_path(&plan.secret)),
        };
        Ok(Self {
            target: plan.target,
            index,
            dst,
            src,
            url,
            uid,
            group,
            timeout: Duration::from_millis(plan.connect_timeout_ms),
        })
    }
}

fn pick(list: &[String], index: u64) -> Option<&String> {
    let n = list.len() as u64;
    (n > 0).then(|| &list[(index % n) as usize])
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    groups: [&'a str; 1],
}

pub(crate) fn mint(secret: &str, uid: &str) -> Result<String, String> {
    let exp = crate::recorder::unix_us() / 1_000_000 + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            sub: uid,
            exp,
            groups: ["*"],
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("minting a token: {e}"))
}

/// Small buffers: the load generator holds as many connections as the server.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

async fn open(spec: &Spec) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(spec.src, 0))
        .map_err(|e| format!("bind {}: {e}", spec.src))?;
    let stream = socket
        .connect(spec.dst)
        .await
        .map_err(|e| format!("connect {}: {e}", spec.dst))?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _) = client_async_with_config(spec.url.as_str(), stream, Some(ws_config()))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    match spec.target {
        Target::Fanout => {
            expect_text(&mut ws, spec, |t| t.contains("\"type\":\"welcome\"")).await?;
            if let Some(g) = &spec.group {
                let join = format!(r#"{{"type":"join","id":1,"group":"{g}"}}"#);
                send(&mut ws, join).await?;
                expect_text(&mut ws, spec, |t| t.contains("\"type\":\"joined\"")).await?;
            }
        }
        Target::Pusher => {
            let mut channels = vec![pusher::user_channel(&spec.uid)];
            channels.extend(spec.group.as_deref().map(pusher::group_channel));
            pusher::handshake(&mut ws, &channels, spec.timeout).await?;
        }
        Target::Socketio => {
            expect_text(&mut ws, spec, |t| t.starts_with("0{")).await?;
            send(&mut ws, format!(r#"40{{"uid":"{}"}}"#, spec.uid)).await?;
            expect_text(&mut ws, spec, |t| t.starts_with("40")).await?;
            if let Some(g) = &spec.group {
                send(&mut ws, format!(r#"421["join","{g}"]"#)).await?;
                expect_text(&mut ws, spec, |t| t.starts_with("431")).await?;
            }
        }
    }
    Ok(ws)
}

async fn send(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Reads frames until one satisfies `want`; an error, bye or Socket.IO
/// CONNECT_ERROR before it fails the handshake.
async fn expect_text(ws: &mut Ws, spec: &Spec, want: impl Fn(&str) -> bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + spec.timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "handshake timed out".to_owned())?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                if want(&t) {
                    return Ok(());
                }
                if t.contains("\"type\":\"error\"")
                    || t.contains("\"type\":\"bye\"")
                    || t.starts_with("44")
                {
                    return Err(format!("refused: {}", t.as_str()));
                }
                if spec.target == Target::Socketio && t.as_str() == "2" {
                    send(ws, "3".into()).await?;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "closed during handshake: {}",
                    frame.map_or_else(
                        || "no close frame".into(),
                        |f| format!("{} {}", f.code, f.reason)
                    )
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("handshake: {e}")),
            None => return Err("closed during handshake".into()),
        }
    }
}

enum Ended {
    /// Told to drop the connection (storm) for this long.
    Dropped(u64),
    /// Told to close, or the server closed.
    Done,
}

/// [`open`], recording the time to ready of a connection that opened.
async fn timed_open(spec: &Spec, shared: &Shared) -> Result<Ws, String> {
    let started = Instant::now();
    let ws = open(spec).await?;
    shared.ready_after(started.elapsed());
    Ok(ws)
}

/// One connection for the whole run: connect, read and record, reconnect
/// after each storm, until the run closes or the server ends it.
pub(crate) async fn run(spec: Spec, shared: Arc<Shared>, gate: Arc<Semaphore>) {
    let mut signal = shared.signal.subscribe();
    signal.mark_unchanged();
    let mut first = true;
    loop {
        let opened = if first {
            // The initial connect is paced by the gate; storms are not.
            let _permit = gate.acquire().await;
            timed_open(&spec, &shared).await
        } else {
            timed_open(&spec, &shared).await
        };
        first = false;
        let ws = match opened {
            Ok(ws) => ws,
            Err(e) => {
                shared.outcome(Err(e));
                return;
            }
        };
        shared.open.fetch_add(1, Ordering::Relaxed);
        shared.outcome(Ok(()));
        let ended = read_loop(ws, &spec, &shared, &mut signal).await;
        shared.open.fetch_sub(1, Ordering::Relaxed);
        match ended {
            Ended::Dropped(down_ms) => {
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
            }
            Ended::Done => return,
        }
    }
}

async fn read_loop(
    mut ws: Ws,
    spec: &Spec,
    shared: &Shared,
    signal: &mut watch::Receiver<Signal>,
) -> Ended {
    let conn = spec.index;
    // One wait for the signal for the whole loop: a new `changed()` per
    // frame would register with (and lock) the channel shared by every
    // connection of the worker on each delivery.
    let changed_ok = {
        let changed = signal.changed();
        tokio::pin!(changed);
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) if spec.target == Target::Pusher => {
                        let ping = match pusher::parse(&t) {
                            pusher::Frame::Event(data) => {
                                shared.recorder.record_frame(&data, conn);
                                false
                            }
                            frame => frame == pusher::Frame::Ping,
                        };
                        if ping && send(&mut ws, pusher::PONG.into()).await.is_err() {
                            shared.recorder.closed(0);
                            return Ended::Done;
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        if !shared.recorder.record_frame(&t, conn)
                            && spec.target == Target::Socketio
                            && t.as_str() == "2"
                            && send(&mut ws, "3".into()).await.is_err()
                        {
                            shared.recorder.closed(0);
                            return Ended::Done;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        shared.recorder.closed(frame.map_or(0, |f| u16::from(f.code)));
                        return Ended::Done;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        shared.recorder.closed(0);
                        return Ended::Done;
                    }
                },
                changed = &mut changed => break changed.is_ok(),
            }
        }
    };
    let s = *signal.borrow_and_update();
    if !changed_ok || s.close {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        return Ended::Done;
    }
    // Dropping the stream closes the socket with no close handshake.
    Ended::Dropped(s.down_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(url: &str) -> ConnectPlan {
        ConnectPlan {
            target: Target::Socketio,
            urls: vec![url.into()],
            sources: vec!["127.0.0.2".into(), "127.0.0.3".into()],
            first: 0,
            count: 3,
            group_size: 2,
            secret: String::new(),
            concurrency: 1,
            connect_timeout_ms: 1000,
        }
    }

    /// Connections take the loopback source addresses in turn, towards a
    /// loopback node only; users and groups follow the index.
    #[test]
    fn connections_spread_over_source_addresses() {
        let p = plan("ws://127.0.0.1:8080");
        let specs: Vec<Spec> = (0..3).map(|i| Spec::new(&p, i).unwrap()).collect();
        let srcs: Vec<String> = specs.iter().map(|s| s.src.to_string()).collect();
        assert_eq!(srcs, ["127.0.0.2", "127.0.0.3", "127.0.0.2"]);
        assert_eq!(specs[2].uid, "u2");
        assert_eq!(specs[2].group.as_deref(), Some("g1"));
        let remote = Spec::new(&plan("ws://10.1.2.3:8080"), 0).unwrap();
        assert_eq!(remote.src.to_string(), "0.0.0.0");
        assert!(Spec::new(&plan("http://127.0.0.1:8080"), 0).is_err());
    }
}
