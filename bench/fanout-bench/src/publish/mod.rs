//! Publishing from the coordinator: HTTP requests to the nodes (hyper, see
//! `http`), PUBLISH straight to Redis, and a driver that publishes at a
//! fixed rate or as fast as a number of requests in flight allows.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use fred::{
    clients::Client,
    interfaces::{ClientLike, PubsubInterface},
    types::{Builder, Value, config::Config},
};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use tokio::task::JoinHandle;

use crate::{
    control::{Target, group, uid},
    http::{Conn, Endpoint},
    recorder::{latency_hist, unix_us},
};

/// Where one message goes, by connection index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// User `u<i>`.
    User(u64),
    /// `n` users in one message: `u<(first + j) mod of>` for `j < n`
    /// (distinct while `n ≤ of`).
    Users {
        first: u64,
        n: u64,
        of: u64,
    },
    /// Group `g<i>`.
    Group(u64),
    All,
}

impl Dest {
    /// The users of a `Users` destination (one for `User`, none otherwise).
    pub(crate) fn users(self) -> impl Iterator<Item = u64> {
        let (first, n, of) = match self {
            Self::User(i) => (i, 1, u64::MAX),
            Self::Users { first, n, of } => (first, n, of.max(1)),
            Self::Group(_) | Self::All => (0, 0, 1),
        };
        (0..n).map(move |j| (first + j) % of)
    }
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
    endpoints: Vec<Endpoint>,
}

/// Where to PUBLISH: one fred client (one connection). Messages go out in
/// pipelines (`Pipeline::try_all`), several in flight at once, so the load
/// generator spends little per message and leaves the shared cores to the
/// node.
#[derive(Debug)]
pub(crate) struct RedisTarget {
    client: Client,
    prefix: String,
}

impl RedisTarget {
    /// Connects to `url` (any URL fred's `Config::from_url` reads:
    /// `redis://[[user]:password@]host:port[/db]`, …; no TLS in this build); fails
    /// here, not in the middle of a run.
    async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let config = Config::from_url(url).with_context(|| format!("--redis {url}"))?;
        let client = Builder::from_config(config).build()?;
        client
            .init()
            .await
            .with_context(|| format!("connecting to Redis at {url}"))?;
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
        })
    }

    /// The channel of a destination; a `Users` destination has one per
    /// user, published separately (see `drive_pipelined`).
    fn channel(&self, dest: Dest) -> String {
        match dest {
            Dest::User(i) => format!("{}:user:{}", self.prefix, uid(i)),
            Dest::Users { first, .. } => format!("{}:user:{}", self.prefix, uid(first)),
            Dest::Group(g) => format!("{}:group:{}", self.prefix, group(g, 1).unwrap_or_default()),
            Dest::All => format!("{}:all", self.prefix),
        }
    }
}

impl Publisher {
    pub(crate) fn http(
        target: Target,
        nodes: &[SocketAddr],
        api_key: &str,
    ) -> anyhow::Result<Self> {
        let (path, key) = match target {
            Target::Fanout => ("/api/publish", Some(api_key)),
            Target::Socketio => ("/publish", None),
        };
        let endpoints = nodes
            .iter()
            .map(|a| Endpoint::new(*a, path, key))
            .collect::<anyhow::Result<_>>()
            .context("--api-key: not a valid header value")?;
        Ok(Self::Http(Arc::new(HttpPublisher { target, endpoints })))
    }

    pub(crate) async fn redis(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self::Redis(RedisTarget::connect(url, prefix).await?))
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
    /// The request body publishing `payload` (a JSON object) to `dest`.
    fn body(&self, dest: Dest, payload: &str) -> Result<Bytes, String> {
        let body = match self.target {
            Target::Fanout => {
                let to = match dest {
                    Dest::User(i) => format!(r#"{{"users":["{}"]}}"#, uid(i)),
                    Dest::Users { .. } => {
                        let mut to = String::from(r#"{"users":["#);
                        for (j, u) in dest.users().enumerate() {
                            if j > 0 {
                                to.push(',');
                            }
                            to.push('"');
                            to.push_str(&uid(u));
                            to.push('"');
                        }
                        to.push_str("]}");
                        to
                    }
                    Dest::Group(g) => format!(r#"{{"groups":["g{g}"]}}"#),
                    Dest::All => r#"{"all":true}"#.to_owned(),
                };
                format!(r#"{{"to":{to},"event":"bench","data":{payload}}}"#)
            }
            Target::Socketio => {
                let to = match dest {
                    Dest::User(i) => format!(r#""to":"{}","#, uid(i)),
                    Dest::Users { .. } => {
                        return Err("the Socket.IO peer publishes to one user per request".into());
                    }
                    Dest::Group(g) => format!(r#""room":"g{g}","#),
                    Dest::All => String::new(),
                };
                format!(r#"{{{to}"event":"new_msg","content":{payload}}}"#)
            }
        };
        Ok(body.into())
    }

    /// Publishes `payload` to `dest` on node `n mod nodes`, over `conns[n
    /// mod nodes]` (the caller's connection to that node).
    async fn publish(
        &self,
        conns: &mut [Option<Conn>],
        n: u64,
        dest: Dest,
        payload: &str,
    ) -> Result<(), String> {
        let k = (n % self.endpoints.len() as u64) as usize;
        let (Some(endpoint), Some(conn)) = (self.endpoints.get(k), conns.get_mut(k)) else {
            return Err("no node to publish to".into());
        };
        expect_ok(endpoint.post(conn, self.body(dest, payload)?).await?)
    }
}

fn expect_ok((status, body): (StatusCode, Bytes)) -> Result<(), String> {
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
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

pub(crate) async fn drive(
    publisher: Arc<Publisher>,
    plan: Drive,
    dest_of: impl Fn(u64) -> Dest + Send + Sync + 'static,
) -> Sent {
    match &*publisher {
        Publisher::Redis(target) => drive_pipelined(target, plan, dest_of).await,
        Publisher::Http(http) => drive_http(http.clone(), plan, Arc::new(dest_of)).await,
    }
}

/// What the request loops of one HTTP drive share.
#[derive(Debug)]
struct HttpDrive {
    plan: Drive,
    start: Instant,
    /// The next message to send; each loop takes one at a time.
    next: AtomicU64,
    /// Unix µs at which each message was handed to the publisher; 0 if it
    /// failed or was never sent.
    send_times: Vec<AtomicU64>,
    padding: String,
}

/// What one request loop did.
#[derive(Debug)]
struct LoopOutcome {
    failed: u64,
    errors: Vec<String>,
    hist: Histogram<u64>,
}

/// Publishes over HTTP with `plan.in_flight` request loops, each a task
/// with its own keep-alive connection per node: a loop takes the next
/// message, waits for its due time when paced, publishes it, repeats. No
/// task, lock or pool per request, so the bench leaves the cores to the
/// node; several tasks, so both cores can work for it.
async fn drive_http<F>(http: Arc<HttpPublisher>, plan: Drive, dest_of: Arc<F>) -> Sent
where
    F: Fn(u64) -> Dest + Send + Sync + 'static,
{
    let shared = Arc::new(HttpDrive {
        plan,
        start: Instant::now(),
        next: AtomicU64::new(0),
        send_times: (0..plan.count).map(|_| AtomicU64::new(0)).collect(),
        padding: "x".repeat(plan.pad),
    });
    let loops: Vec<_> = (0..plan.in_flight.max(1))
        .map(|_| tokio::spawn(request_loop(http.clone(), shared.clone(), dest_of.clone())))
        .collect();
    let mut sent = Sent {
        sent: 0,
        failed: 0,
        errors: Vec::new(),
        send_times: Vec::new(),
        dests: Vec::new(),
        request_latency: latency_hist(),
        elapsed: Duration::ZERO,
    };
    for l in loops {
        match l.await {
            Ok(o) => {
                sent.failed += o.failed;
                for e in o.errors {
                    if sent.errors.len() < 5 && !sent.errors.contains(&e) {
                        sent.errors.push(e);
                    }
                }
                let _ = sent.request_latency.add(&o.hist);
            }
            Err(e) => sent.errors.push(format!("a request loop failed: {e}")),
        }
    }
    sent.elapsed = shared.start.elapsed();
    let issued = shared.next.load(Ordering::Relaxed).min(plan.count);
    sent.sent = issued.saturating_sub(sent.failed);
    sent.send_times = shared.send_times[..issued as usize]
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .collect();
    sent.dests = (0..issued).map(|i| dest_of(i)).collect();
    sent
}

async fn request_loop<F>(
    http: Arc<HttpPublisher>,
    d: Arc<HttpDrive>,
    dest_of: Arc<F>,
) -> LoopOutcome
where
    F: Fn(u64) -> Dest + Send + Sync + 'static,
{
    let mut out = LoopOutcome {
        failed: 0,
        errors: Vec::new(),
        hist: latency_hist(),
    };
    let mut conns: Vec<Option<Conn>> = http.endpoints.iter().map(|_| None).collect();
    let plan = d.plan;
    loop {
        if plan.duration.is_some_and(|max| d.start.elapsed() >= max) {
            break;
        }
        let i = d.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.count {
            break;
        }
        if plan.rate > 0.0 {
            let due = Duration::from_secs_f64(i as f64 / plan.rate);
            tokio::time::sleep(due.saturating_sub(d.start.elapsed())).await;
        }
        let seq = plan.base_seq + i;
        let t = unix_us();
        let payload = format!(r#"{{"s":{seq},"t":{t},"p":"{}"}}"#, d.padding);
        d.send_times[i as usize].store(t, Ordering::Relaxed);
        let began = Instant::now();
        match http.publish(&mut conns, seq, dest_of(i), &payload).await {
            Ok(()) => {
                let us = began.elapsed().as_micros() as u64;
                let _ = out.hist.record(us.max(1));
            }
            Err(e) => {
                // A failed publish is expected nowhere.
                d.send_times[i as usize].store(0, Ordering::Relaxed);
                out.failed += 1;
                if out.errors.len() < 5 && !out.errors.contains(&e) {
                    out.errors.push(e);
                }
            }
        }
    }
    out
}

/// Messages whose replies have not been read yet, at most: bounds what is
/// in flight.
const MAX_OUTSTANDING: usize = 20_000;

/// Messages per pipeline when publishing back to back.
const BATCH: u64 = 1000;

/// One pipeline in flight: the message offsets of its commands, in order,
/// and the task waiting for its replies.
type Batch = (
    Vec<usize>,
    JoinHandle<Vec<Result<Value, fred::error::Error>>>,
);

/// Publishes to Redis in pipelines: every millisecond (or, at rate 0, in
/// batches of 1,000 as fast as Redis answers) the messages due are queued
/// on a fred pipeline and sent at once; its replies are matched to the
/// messages when it completes, with up to 20,000 messages in flight.
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
    let padding = "x".repeat(plan.pad);
    let mut in_flight: VecDeque<Batch> = VecDeque::new();
    let mut outstanding = 0;
    let mut i = 0u64;
    while i < plan.count {
        if plan.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        while in_flight.front().is_some_and(|b| b.1.is_finished()) || outstanding >= MAX_OUTSTANDING
        {
            let Some(batch) = in_flight.pop_front() else {
                break;
            };
            outstanding -= batch.0.len();
            settle_batch(&mut sent, batch).await;
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
            (i + BATCH).min(plan.count)
        };
        let t = unix_us();
        let pipeline = target.client.pipeline();
        let mut offsets = Vec::with_capacity((due - i) as usize);
        for j in i..due {
            let dest = dest_of(j);
            let seq = plan.base_seq + j;
            let msg =
                format!(r#"{{"event":"bench","data":{{"s":{seq},"t":{t},"p":"{padding}"}}}}"#);
            // Queues the command in memory; nothing can fail yet.
            if let Dest::Users { .. } = dest {
                // One PUBLISH per user (the channels differ).
                for u in dest.users() {
                    let channel = target.channel(Dest::User(u));
                    let _: Result<(), _> = pipeline.publish(channel, msg.clone()).await;
                    offsets.push(j as usize);
                }
                sent.dests.push(dest);
                sent.send_times[j as usize] = t;
                continue;
            }
            let _: Result<(), _> = pipeline.publish(target.channel(dest), msg).await;
            sent.dests.push(dest);
            sent.send_times[j as usize] = t;
            offsets.push(j as usize);
        }
        outstanding += offsets.len();
        let replies = tokio::spawn(async move { pipeline.try_all::<Value>().await });
        in_flight.push_back((offsets, replies));
        i = due;
    }
    for batch in in_flight {
        settle_batch(&mut sent, batch).await;
    }
    sent.send_times.truncate(i as usize);
    sent.sent = i - sent.failed;
    sent.elapsed = start.elapsed();
    sent
}

/// Waits for a pipeline's replies; a message whose PUBLISH failed is marked
/// failed (send time 0).
async fn settle_batch(sent: &mut Sent, (offsets, replies): Batch) {
    let replies = match replies.await {
        Ok(r) => r,
        Err(e) => vec![Err(fred::error::Error::new(
            fred::error::ErrorKind::Unknown,
            format!("pipeline task: {e}"),
        ))],
    };
    for (k, &o) in offsets.iter().enumerate() {
        let error = match replies.get(k) {
            Some(Ok(Value::Integer(_))) => continue,
            Some(Ok(other)) => format!("PUBLISH answered {other:?}"),
            Some(Err(e)) => format!("PUBLISH: {e}"),
            None => "PUBLISH: no reply".to_owned(),
        };
        if let Some(t) = sent.send_times.get_mut(o)
            && *t != 0
        {
            *t = 0;
            sent.failed += 1;
        }
        if sent.errors.len() < 5 && !sent.errors.contains(&error) {
            sent.errors.push(error);
        }
    }
}
