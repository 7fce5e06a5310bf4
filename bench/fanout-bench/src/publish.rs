//! Publishing from the coordinator: a minimal keep-alive HTTP/1.1 client
//! (cheap enough not to be the bottleneck on a shared 2-core machine),
//! PUBLISH straight to Redis, and a driver that publishes at a fixed rate or
//! as fast as a number of requests in flight allows.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::Semaphore,
};

use crate::{
    control::{Target, group, uid},
    recorder::{latency_hist, unix_us},
};

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
struct HttpConn {
    stream: BufReader<TcpStream>,
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::with_capacity(8192, stream),
        })
    }

    /// Sends one request and reads the whole response: (status, body).
    async fn request(&mut self, head: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut req = Vec::with_capacity(head.len() + 40 + body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);
        self.stream.get_mut().write_all(&req).await?;

        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed in headers".into()));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().map_err(|_| bad("bad content-length".into()))?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| bad("bad chunk size".into()))?;
                let start = body.len();
                body.resize(start + size + 2, 0);
                self.stream.read_exact(&mut body[start..]).await?;
                body.truncate(start + size);
                if size == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok((status, body))
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Idle keep-alive connections to one node; callers bound the concurrency.
#[derive(Debug)]
pub(crate) struct HttpPool {
    addr: SocketAddr,
    head: String,
    idle: Mutex<Vec<HttpConn>>,
}

impl HttpPool {
    pub(crate) fn new(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> Self {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
        );
        if let Some(key) = bearer {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        Self {
            addr,
            head,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) async fn send(&self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let conn = self.idle.lock().pop();
        let mut conn = match conn {
            Some(c) => c,
            None => HttpConn::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?,
        };
        let res = conn
            .request(&self.head, body)
            .await
            .map_err(|e| format!("HTTP request to {}: {e}", self.addr))?;
        self.idle.lock().push(conn);
        Ok(res)
    }
}

/// Where one message goes, by connection index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dest {
    /// User `u<i>`.
    User(u64),
    /// Group `g<i>`.
    Group(u64),
    All,
}

#[derive(Debug)]
pub(crate) enum Publisher {
    /// One HTTP request per message.
    Http(Arc<HttpPublisher>),
    /// `PUBLISH <prefix>:user:<uid>` straight to Redis, pipelined.
    Redis(RedisTarget),
}

/// Publish endpoints of the nodes, used round robin: fanout's
/// `POST /api/publish`, or the Socket.IO peer's `POST /publish`.
#[derive(Debug)]
pub(crate) struct HttpPublisher {
    target: Target,
    pools: Vec<HttpPool>,
}

/// Where to PUBLISH: one connection, commands written in batches, replies
/// read by another task. Cheaper per message than a general client, so the
/// load generator leaves the shared cores to the node.
#[derive(Debug, Clone)]
pub(crate) struct RedisTarget {
    addr: SocketAddr,
    password: Option<String>,
    prefix: String,
}

impl RedisTarget {
    /// `redis://[:password@]ip:port[/db]` (db 0 only).
    pub(crate) fn parse(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("redis://")
            .context("--redis: expected redis://[:password@]ip:port")?;
        let rest = rest.split('/').next().unwrap_or(rest);
        let (password, host) = match rest.rsplit_once('@') {
            Some((auth, host)) => (Some(auth.trim_start_matches(':').to_owned()), host),
            None => (None, rest),
        };
        let host = if host.starts_with("localhost:") {
            host.replacen("localhost", "127.0.0.1", 1)
        } else {
            host.to_owned()
        };
        let addr = host
            .parse()
            .with_context(|| format!("--redis: {host:?} is not ip:port"))?;
        Ok(Self {
            addr,
            password: password.filter(|p| !p.is_empty()),
            prefix: prefix.to_owned(),
        })
    }

    fn channel(&self, dest: Dest) -> String {
        match dest {
            Dest::User(i) => format!("{}:user:{}", self.prefix, uid(i)),
            Dest::Group(g) => format!("{}:group:{}", self.prefix, group(g, 1).unwrap_or_default()),
            Dest::All => format!("{}:all", self.prefix),
        }
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to Redis at {}", self.addr))?;
        stream.set_nodelay(true)?;
        if let Some(pw) = &self.password {
            let mut cmd = Vec::new();
            resp_command(&mut cmd, &[b"AUTH", pw.as_bytes()]);
            stream.write_all(&cmd).await?;
            let mut reader = BufReader::new(&mut stream);
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            if !line.starts_with('+') {
                bail!("Redis AUTH: {}", line.trim());
            }
        }
        Ok(stream)
    }
}

fn resp_command(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        buf.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        buf.extend_from_slice(p);
        buf.extend_from_slice(b"\r\n");
    }
}

impl Publisher {
    pub(crate) fn http(target: Target, nodes: &[SocketAddr], api_key: &str) -> Self {
        let (path, key) = match target {
            Target::Fanout => ("/api/publish", Some(api_key)),
            Target::Socketio => ("/publish", None),
        };
        let pools = nodes
            .iter()
            .map(|a| HttpPool::new(*a, "POST", path, key))
            .collect();
        Self::Http(Arc::new(HttpPublisher { target, pools }))
    }

    pub(crate) async fn redis(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let target = RedisTarget::parse(url, prefix)?;
        // Fail here, not in the middle of a run.
        drop(target.connect().await?);
        Ok(Self::Redis(target))
    }

    pub(crate) fn via(&self) -> &'static str {
        match self {
            Self::Http(h) if h.target == Target::Fanout => "POST /api/publish",
            Self::Http(_) => "POST /publish",
            Self::Redis(_) => "Redis PUBLISH",
        }
    }
}

impl HttpPublisher {
    /// Publishes `payload` (a JSON object) to `dest`; `n` spreads the
    /// requests over the nodes.
    async fn publish(&self, n: u64, dest: Dest, payload: &str) -> Result<(), String> {
        let pools = &self.pools;
        match self.target {
            Target::Fanout => {
                let to = match dest {
                    Dest::User(i) => format!(r#"{{"users":["{}"]}}"#, uid(i)),
                    Dest::Group(g) => format!(r#"{{"groups":["g{g}"]}}"#),
                    Dest::All => r#"{"all":true}"#.to_owned(),
                };
                let body = format!(r#"{{"to":{to},"event":"bench","data":{payload}}}"#);
                expect_ok(pick(pools, n).send(body.as_bytes()).await?)
            }
            Target::Socketio => {
                let to = match dest {
                    Dest::User(i) => format!(r#""to":"{}","#, uid(i)),
                    Dest::Group(g) => format!(r#""room":"g{g}","#),
                    Dest::All => String::new(),
                };
                let body = format!(r#"{{{to}"event":"new_msg","content":{payload}}}"#);
                expect_ok(pick(pools, n).send(body.as_bytes()).await?)
            }
        }
    }
}

fn pick(pools: &[HttpPool], n: u64) -> &HttpPool {
    &pools[(n % pools.len() as u64) as usize]
}

fn expect_ok((status, body): (u16, Vec<u8>)) -> Result<(), String> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ))
    }
}

/// How to publish: `rate` messages per second (0: as fast as `in_flight`
/// requests allow), until `count` messages or `duration` have gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drive {
    pub(crate) base_seq: u64,
    pub(crate) count: u64,
    pub(crate) rate: f64,
    pub(crate) duration: Option<Duration>,
    pub(crate) in_flight: usize,
    pub(crate) pad: usize,
}

/// What a drive did.
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) errors: Vec<String>,
    /// Unix µs at which each message (by offset) was handed to the publisher; 0 if never.
    pub(crate) send_times: Vec<u64>,
    /// Destination of each message, by offset.
    pub(crate) dests: Vec<Dest>,
    /// Request latency (µs) of every successful publish.
    pub(crate) request_latency: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

#[derive(Debug)]
struct DriveState {
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    hist: Mutex<Histogram<u64>>,
    send_times: Vec<AtomicU64>,
}

pub(crate) async fn drive(
    publisher: Arc<Publisher>,
    plan: Drive,
    dest_of: impl Fn(u64) -> Dest,
) -> Sent {
    let publisher = match &*publisher {
        Publisher::Redis(target) => return drive_pipelined(target, plan, dest_of).await,
        Publisher::Http(h) => h.clone(),
    };
    let state = Arc::new(DriveState {
        failed: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        hist: Mutex::new(latency_hist()),
        send_times: (0..plan.count).map(|_| AtomicU64::new(0)).collect(),
    });
    let in_flight = plan.in_flight.max(1);
    let gate = Arc::new(Semaphore::new(in_flight));
    let padding: Arc<str> = "x".repeat(plan.pad).into();
    let start = Instant::now();
    let mut dests = Vec::with_capacity(plan.count as usize);
    let mut i = 0;
    while i < plan.count {
        if plan.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        if plan.rate > 0.0 {
            let due = Duration::from_secs_f64(i as f64 / plan.rate);
            let now = start.elapsed();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let dest = dest_of(i);
        dests.push(dest);
        let (publisher, state, padding) = (publisher.clone(), state.clone(), padding.clone());
        let seq = plan.base_seq + i;
        let offset = i as usize;
        tokio::spawn(async move {
            let t = unix_us();
            let payload = format!(r#"{{"s":{seq},"t":{t},"p":"{padding}"}}"#);
            state.send_times[offset].store(t, Ordering::Relaxed);
            let began = Instant::now();
            match publisher.publish(seq, dest, &payload).await {
                Ok(()) => {
                    let us = began.elapsed().as_micros() as u64;
                    let _ = state.hist.lock().record(us.max(1));
                }
                Err(e) => {
                    // A failed publish is expected nowhere.
                    state.send_times[offset].store(0, Ordering::Relaxed);
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    let mut errors = state.errors.lock();
                    if errors.len() < 5 && !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
            drop(permit);
        });
        i += 1;
    }
    // Wait for the requests still in flight.
    let _ = gate.acquire_many(in_flight as u32).await;
    let elapsed = start.elapsed();
    let failed = state.failed.load(Ordering::Relaxed);
    Sent {
        sent: i - failed,
        failed,
        errors: state.errors.lock().clone(),
        send_times: state
            .send_times
            .iter()
            .take(i as usize)
            .map(|t| t.load(Ordering::Relaxed))
            .collect(),
        dests,
        request_latency: state.hist.lock().clone(),
        elapsed,
    }
}

/// Replies the reader has not seen yet, at most: bounds what is in flight.
const MAX_OUTSTANDING: u64 = 20_000;

/// Publishes to Redis in batches: every millisecond (or as fast as Redis
/// answers, at rate 0) the messages due are written as one pipelined
/// buffer; a reader task matches the replies to them in order.
async fn drive_pipelined(target: &RedisTarget, plan: Drive, dest_of: impl Fn(u64) -> Dest) -> Sent {
    let start = Instant::now();
    let mut sent = Sent {
        sent: 0,
        failed: 0,
        errors: Vec::new(),
        send_times: vec![0; plan.count as usize],
        dests: Vec::with_capacity(plan.count as usize),
        request_latency: latency_hist(),
        elapsed: Duration::ZERO,
    };
    let stream = match target.connect().await {
        Ok(s) => s,
        Err(e) => {
            sent.errors.push(format!("{e:#}"));
            return sent;
        }
    };
    let (read_half, mut write_half) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<usize>>();
    let replied = Arc::new(AtomicU64::new(0));
    let reader = {
        let replied = replied.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(read_half);
            let mut line = String::new();
            let mut failed = Vec::new();
            let mut errors = Vec::new();
            while let Some(batch) = rx.recv().await {
                for offset in batch {
                    line.clear();
                    let ok = match reader.read_line(&mut line).await {
                        Ok(n) if n > 0 => line.starts_with(':'),
                        _ => false,
                    };
                    if !ok {
                        failed.push(offset);
                        if errors.len() < 5 {
                            errors.push(format!("PUBLISH: {}", line.trim()));
                        }
                    }
                    replied.fetch_add(1, Ordering::Relaxed);
                }
            }
            (failed, errors)
        })
    };
    let padding = "x".repeat(plan.pad);
    let mut buf = Vec::new();
    let mut i = 0u64;
    while i < plan.count {
        if plan.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        if i.saturating_sub(replied.load(Ordering::Relaxed)) >= MAX_OUTSTANDING {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let due = if plan.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * plan.rate) as u64 + 1;
            if due <= i {
                let next = Duration::from_secs_f64(i as f64 / plan.rate);
                tokio::time::sleep(next.saturating_sub(start.elapsed())).await;
                continue;
            }
            due.min(plan.count)
        } else {
            (i + 1000).min(plan.count)
        };
        let t = unix_us();
        buf.clear();
        let mut offsets = Vec::with_capacity((due - i) as usize);
        for j in i..due {
            let dest = dest_of(j);
            let seq = plan.base_seq + j;
            let msg =
                format!(r#"{{"event":"bench","data":{{"s":{seq},"t":{t},"p":"{padding}"}}}}"#);
            resp_command(
                &mut buf,
                &[b"PUBLISH", target.channel(dest).as_bytes(), msg.as_bytes()],
            );
            sent.dests.push(dest);
            sent.send_times[j as usize] = t;
            offsets.push(j as usize);
        }
        if let Err(e) = write_half.write_all(&buf).await {
            for &o in &offsets {
                sent.send_times[o] = 0;
            }
            sent.failed += offsets.len() as u64;
            sent.errors.push(format!("writing to Redis: {e}"));
            i = due;
            break;
        }
        let _ = tx.send(offsets);
        i = due;
    }
    drop(tx);
    if let Ok((failed, errors)) = reader.await {
        for o in failed {
            if let Some(t) = sent.send_times.get_mut(o)
                && *t != 0
            {
                *t = 0;
                sent.failed += 1;
            }
        }
        sent.errors.extend(errors);
    }
    sent.send_times.truncate(i as usize);
    sent.sent = i - sent.failed;
    sent.elapsed = start.elapsed();
    sent
}
