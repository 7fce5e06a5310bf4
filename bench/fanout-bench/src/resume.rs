//! A resuming client (the `rolling` scenario), inside a worker process:
//! one user in one group, on WebSocket (token in the URL and positions in
//! `?since=`, or token and positions in the `auth` frame) or on SSE
//! (`Last-Event-ID`, as a browser's `EventSource` resumes). When its node
//! closes it, it waits what `bye.retry_after_ms` asks (at most the plan's
//! cap) and connects to the next node, then the next, until one takes it,
//! resuming from the positions it kept (see [`Tracker`]). With a cycle
//! (the `soak` scenario) it also closes its connection itself every so
//! often, with a close handshake, and reconnects the same way.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{
    Request, StatusCode,
    body::Incoming,
    client::conn::http1::{self, SendRequest},
    header::{ACCEPT, HOST},
};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{Semaphore, watch},
    task::JoinHandle,
    time::timeout,
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    client::{Shared, Signal, mint},
    control::{ResumePlan, group, uid},
    ledger::{Ledger, Seen, Tracker},
    recorder::Recorder,
};

/// Attempts of one reconnect (each to the next node) before the client
/// gives up.
const MAX_ATTEMPTS: u32 = 50;
/// Largest SSE event the client buffers.
const MAX_EVENT: usize = 1 << 20;

/// How a client connects and says where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `/ws?token=…&since=<compact positions>`.
    WsQuery,
    /// `/ws`, then `{"type":"auth","token":…,"since":{…}}`.
    WsAuth,
    /// `/sse?token=…&groups=…` with `Last-Event-ID`.
    Sse,
}

/// Everything one resuming client needs, computed once.
#[derive(Debug)]
pub(crate) struct ResumeSpec {
    index: u64,
    via: Via,
    nodes: Vec<SocketAddr>,
    src: IpAddr,
    token: String,
    group: Option<String>,
    timeout: Duration,
    retry_cap: Duration,
    /// About how long each connection lives before the client closes it
    /// itself (`None`: until the server ends it).
    cycle: Option<Duration>,
}

impl ResumeSpec {
    pub(crate) fn new(plan: &ResumePlan, index: u64) -> Result<Self, String> {
        let nodes = plan
            .nodes
            .iter()
            .map(|n| n.parse().map_err(|_| format!("{n}: expected <ip>:<port>")))
            .collect::<Result<Vec<SocketAddr>, String>>()?;
        if nodes.is_empty() {
            return Err("no node".into());
        }
        let src = if nodes.iter().all(|n| n.ip().is_loopback()) && !plan.sources.is_empty() {
            plan.sources[(index % plan.sources.len() as u64) as usize]
                .parse()
                .map_err(|e| format!("source address: {e}"))?
        } else {
            IpAddr::from([0, 0, 0, 0])
        };
        let via = if index % 100 < u64::from(plan.sse_percent) {
            Via::Sse
        } else if index.is_multiple_of(2) {
            Via::WsQuery
        } else {
            Via::WsAuth
        };
        Ok(Self {
            index,
            via,
            nodes,
            src,
            token: mint(&plan.secret, &uid(index))?,
            group: group(index, plan.group_size),
            timeout: Duration::from_millis(plan.connect_timeout_ms),
            retry_cap: Duration::from_millis(plan.retry_cap_ms),
            cycle: (plan.cycle_ms > 0).then(|| Duration::from_millis(plan.cycle_ms)),
        })
    }
}

/// The worker's parts a client reports to.
#[derive(Debug, Clone)]
pub(crate) struct Sinks {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ledger: Arc<Ledger>,
}

/// One client for the whole run: connect (its outcome answers the
/// worker's `Resume` command), read, reconnect and resume after every
/// close, until the run closes or a reconnect fails [`MAX_ATTEMPTS`] times.
pub(crate) async fn run(spec: ResumeSpec, sinks: Sinks, gate: Arc<Semaphore>) {
    let Sinks { shared, ledger } = sinks;
    let recorder = &shared.recorder;
    let mut signal = shared.signal.subscribe();
    signal.mark_unchanged();
    let mut tracker = Tracker::new(spec.index);
    let mut node = (spec.index % spec.nodes.len() as u64) as usize;
    let first = {
        let _permit = gate.acquire().await;
        connect(&spec, node, &mut tracker, &ledger, recorder).await
    };
    let mut conn = match first {
        Ok(c) => c,
        Err(e) => {
            shared.outcome(Err(e));
            return;
        }
    };
    shared.outcome(Ok(()));
    // The first self-close falls anywhere in the first cycle, so that the
    // clients' closes are spread evenly over time from the start.
    let mut life = spec
        .cycle
        .map(|c| c.mul_f64(rand::rng().random_range(0.0..1.0)));
    loop {
        ledger.connected.fetch_add(1, Ordering::Relaxed);
        let end = conn
            .read(&mut tracker, &ledger, recorder, &mut signal, life)
            .await;
        life = spec
            .cycle
            .map(|c| c.mul_f64(rand::rng().random_range(0.9..1.1)));
        ledger.connected.fetch_sub(1, Ordering::Relaxed);
        // Closed now, not after the wait: the node waits for its clients'
        // sockets to close before it exits.
        drop(conn);
        let wait = match end {
            End::Stop => return,
            End::Cycle => backoff(0, spec.retry_cap),
            End::Closed {
                retry_after_ms: Some(ms),
            } => Duration::from_millis(ms).min(spec.retry_cap),
            End::Closed {
                retry_after_ms: None,
            } => backoff(0, spec.retry_cap),
            End::Lost(e) => {
                ledger.error(e);
                backoff(0, spec.retry_cap)
            }
        };
        node = (node + 1) % spec.nodes.len();
        match reconnect(
            &spec,
            &mut node,
            wait,
            &mut tracker,
            &ledger,
            recorder,
            &mut signal,
        )
        .await
        {
            Reconnect::Open(c) => conn = c,
            Reconnect::Stop => return,
            Reconnect::GaveUp => {
                ledger.given_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

enum Reconnect {
    Open(Conn),
    Stop,
    GaveUp,
}

/// Waits `wait`, then tries the nodes in turn from `node` until one takes
/// the client, backing off between attempts.
async fn reconnect(
    spec: &ResumeSpec,
    node: &mut usize,
    mut wait: Duration,
    tracker: &mut Tracker,
    ledger: &Ledger,
    recorder: &Recorder,
    signal: &mut watch::Receiver<Signal>,
) -> Reconnect {
    for attempt in 0..MAX_ATTEMPTS {
        if !pause(signal, wait).await {
            return Reconnect::Stop;
        }
        let resumed = tracker.has_positions();
        match connect(spec, *node, tracker, ledger, recorder).await {
            Ok(c) => {
                ledger.reconnected(resumed);
                return Reconnect::Open(c);
            }
            Err(e) => ledger.attempt_failed(e),
        }
        *node = (*node + 1) % spec.nodes.len();
        wait = backoff(attempt + 1, spec.retry_cap);
    }
    Reconnect::GaveUp
}

/// 50–250 ms more per failed attempt, at most `cap`.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let ms = rand::rng().random_range(50..250) * u64::from(attempt + 1);
    Duration::from_millis(ms).min(cap)
}

/// Sleeps `wait`; false if the run closed meanwhile.
async fn pause(signal: &mut watch::Receiver<Signal>, wait: Duration) -> bool {
    if signal.borrow().close {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        changed = signal.changed() => changed.is_ok() && !signal.borrow().close,
    }
}

/// Why a connection ended.
enum End {
    /// The run closed.
    Stop,
    /// The server ended it, with the `bye`'s retry hint if one came.
    Closed { retry_after_ms: Option<u64> },
    /// It broke without a `bye`.
    Lost(String),
    /// The client closed it itself (its cycle ran out).
    Cycle,
}

/// An open connection of either transport.
enum Conn {
    /// Boxed: a WebSocket stream is four times the size of an SSE one.
    Ws(Box<WebSocketStream<TcpStream>>),
    Sse(SseStream),
}

/// Connects to `nodes[node]` and waits until the connection is ready
/// (welcome, and the group joined), everything within the spec's timeout.
async fn connect(
    spec: &ResumeSpec,
    node: usize,
    tracker: &mut Tracker,
    ledger: &Ledger,
    recorder: &Recorder,
) -> Result<Conn, String> {
    let dst = spec.nodes[node];
    let open = async {
        tracker.connection_started();
        let mut conn = match spec.via {
            Via::WsQuery | Via::WsAuth => Conn::Ws(Box::new(open_ws(spec, dst, tracker).await?)),
            Via::Sse => Conn::Sse(open_sse(spec, dst, tracker).await?),
        };
        conn.handshake(spec, tracker, ledger, recorder).await?;
        Ok(conn)
    };
    timeout(spec.timeout, open)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {dst} timed out")))
}

async fn tcp(spec: &ResumeSpec, dst: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(spec.src, 0))
        .map_err(|e| format!("bind {}: {e}", spec.src))?;
    let stream = socket
        .connect(dst)
        .await
        .map_err(|e| format!("connect {dst}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

async fn open_ws(
    spec: &ResumeSpec,
    dst: SocketAddr,
    tracker: &Tracker,
) -> Result<WebSocketStream<TcpStream>, String> {
    let stream = tcp(spec, dst).await?;
    let url = match spec.via {
        Via::WsQuery if tracker.has_positions() => format!(
            "ws://{dst}/ws?token={}&since={}",
            spec.token,
            tracker.since_compact()
        ),
        Via::WsQuery => format!("ws://{dst}/ws?token={}", spec.token),
        _ => format!("ws://{dst}/ws"),
    };
    let (mut ws, _) = client_async_with_config(url.as_str(), stream, Some(ws_config()))
        .await
        .map_err(|e| format!("upgrade at {dst}: {e}"))?;
    if spec.via == Via::WsAuth {
        let token = serde_json::to_string(&spec.token).unwrap_or_default();
        let auth = if tracker.has_positions() {
            format!(
                r#"{{"type":"auth","token":{token},"since":{}}}"#,
                tracker.since_json()
            )
        } else {
            format!(r#"{{"type":"auth","token":{token}}}"#)
        };
        ws.send(Message::text(auth))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    Ok(ws)
}

/// An SSE response being read: the body, the bytes of an event not yet
/// complete, and the task driving the HTTP connection (aborted on drop).
struct SseStream {
    body: Incoming,
    buf: Vec<u8>,
    task: JoinHandle<()>,
    _sender: SendRequest<Empty<Bytes>>,
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn open_sse(
    spec: &ResumeSpec,
    dst: SocketAddr,
    tracker: &Tracker,
) -> Result<SseStream, String> {
    let stream = tcp(spec, dst).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {dst}: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut path = format!("/sse?token={}", spec.token);
    if let Some(g) = &spec.group {
        path.push_str("&groups=");
        path.push_str(g);
    }
    let mut req = Request::get(path)
        .header(HOST, dst.to_string())
        .header(ACCEPT, "text/event-stream");
    if let Some(id) = tracker.last_event_id() {
        req = req.header("last-event-id", id);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("building the SSE request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET /sse at {dst}: {e}"))?;
    if res.status() != StatusCode::OK {
        let status = res.status();
        let body = Limited::new(res.into_body(), 4096)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        task.abort();
        return Err(format!("GET /sse at {dst}: {status} {body:.200}"));
    }
    Ok(SseStream {
        body: res.into_body(),
        buf: Vec::new(),
        task,
        _sender: sender,
    })
}

impl SseStream {
    /// The next event's `data:` and `id:`, `None` at the end of the stream.
    async fn next_event(&mut self) -> Result<Option<(String, Option<String>)>, String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&raw);
                let (mut data, mut id) = (String::new(), None);
                for line in text.lines() {
                    if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    } else if let Some(i) = line.strip_prefix("id:") {
                        id = Some(i.strip_prefix(' ').unwrap_or(i).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive) or `retry:` alone
                }
                return Ok(Some((data, id)));
            }
            if self.buf.len() > MAX_EVENT {
                return Err("an SSE event over 1 MiB".into());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("reading the SSE stream: {e}")),
                None => return Ok(None),
            }
        }
    }
}

impl Conn {
    /// The next frame's text (and for SSE the event's id); `None` when the
    /// server ended the connection.
    async fn next_frame(
        &mut self,
        recorder: &Recorder,
    ) -> Result<Option<(String, Option<String>)>, String> {
        match self {
            Self::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Ok(Some((t.as_str().to_owned(), None))),
                    Some(Ok(Message::Close(frame))) => {
                        recorder.closed(frame.map_or(0, |f| u16::from(f.code)));
                        // Sends the close reply tungstenite queued.
                        let _ = timeout(Duration::from_secs(1), ws.flush()).await;
                        return Ok(None);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("WebSocket: {e}")),
                    None => return Ok(None),
                }
            },
            Self::Sse(sse) => sse.next_event().await,
        }
    }

    /// Reads until the connection is ready: `welcome` (with the groups its
    /// positions name), and on WebSocket a `joined` for the client's group
    /// when the welcome did not already put it there.
    async fn handshake(
        &mut self,
        spec: &ResumeSpec,
        tracker: &mut Tracker,
        ledger: &Ledger,
        recorder: &Recorder,
    ) -> Result<(), String> {
        let mut joining = false;
        loop {
            let Some((text, id)) = self.next_frame(recorder).await? else {
                return Err("closed during the handshake".into());
            };
            let seen = tracker.on_frame(&text, ledger, recorder);
            tracker.event_id(id);
            match seen {
                Seen::Welcome => {
                    let group = spec
                        .group
                        .as_ref()
                        .filter(|g| !tracker.has_channel(&format!("group:{g}")));
                    match (&mut *self, group) {
                        (Self::Ws(ws), Some(g)) => {
                            let join = format!(r#"{{"type":"join","id":1,"group":"{g}"}}"#);
                            ws.send(Message::text(join))
                                .await
                                .map_err(|e| format!("send: {e}"))?;
                            joining = true;
                        }
                        _ => return Ok(()),
                    }
                }
                Seen::Joined if joining => return Ok(()),
                Seen::Bye(_) => return Err(format!("refused: {text:.200}")),
                Seen::Error(e) => return Err(e),
                _ => {}
            }
        }
    }

    /// Reads and records until the server ends the connection, the run
    /// closes or `life` runs out (then a WebSocket is closed with a
    /// handshake).
    async fn read(
        &mut self,
        tracker: &mut Tracker,
        ledger: &Ledger,
        recorder: &Recorder,
        signal: &mut watch::Receiver<Signal>,
        life: Option<Duration>,
    ) -> End {
        let mut retry_after_ms = None;
        let (mut cycled, mut timed) = (false, life.is_some());
        // One wait for the signal for the whole connection, not one per frame.
        let stop = {
            let changed = signal.changed();
            tokio::pin!(changed);
            let expiry = tokio::time::sleep(life.unwrap_or(Duration::MAX));
            tokio::pin!(expiry);
            loop {
                tokio::select! {
                    _ = &mut changed => break true,
                    () = &mut expiry, if timed => {
                        if ledger.cycling() {
                            cycled = true;
                            break true;
                        }
                        timed = false;
                    }
                    next = self.next_frame(recorder) => match next {
                        Ok(Some((text, id))) => {
                            match tracker.on_frame(&text, ledger, recorder) {
                                Seen::Bye(ms) => retry_after_ms = Some(ms),
                                Seen::Error(e) => ledger.error(e),
                                _ => {}
                            }
                            tracker.event_id(id);
                        }
                        Ok(None) => break false,
                        Err(e) if retry_after_ms.is_none() => return End::Lost(e),
                        Err(_) => break false,
                    },
                }
            }
        };
        if !stop {
            return End::Closed { retry_after_ms };
        }
        if let Self::Ws(ws) = self {
            let _ = timeout(Duration::from_secs(2), WebSocketStream::close(ws, None)).await;
            if cycled {
                // The rest of the handshake: frames sent before the
                // server saw the close still count, then its close frame.
                let drain = async {
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(t) = msg {
                            tracker.on_frame(t.as_str(), ledger, recorder);
                        }
                    }
                };
                let _ = timeout(Duration::from_secs(2), drain).await;
            }
        }
        if cycled { End::Cycle } else { End::Stop }
    }
}
