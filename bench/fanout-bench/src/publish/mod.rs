//! Publishing from the coordinator: HTTP requests to the nodes (hyper, see
//! `http`), PUBLISH straight to Redis (`redis`), and a driver that publishes
//! at a fixed rate or as fast as a number of requests in flight allows.

mod redis;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;

use self::redis::RedisTarget;
use crate::{
    control::{Target, uid},
    http::{Conn, Endpoint},
    pusher,
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
    /// `PUBLISH <prefix>:user:<uid>` (or `FCALL fanout_publish`) straight
    /// to Redis, pipelined.
    Redis(Arc<RedisTarget>),
}

/// Publish endpoints of the nodes, used round robin: fanout's
/// `POST /api/publish`, the Socket.IO peer's `POST /publish`, or Pusher's
/// `POST /apps/<id>/events` (signed per request).
#[derive(Debug)]
pub(crate) struct HttpPublisher {
    target: Target,
    endpoints: Vec<Endpoint>,
    /// The app a Pusher publisher signs its requests for.
    pusher: Option<pusher::App>,
    /// Retries over the other nodes, with idempotency keys (`rolling`).
    retry: Option<Retry>,
    /// Set by whoever drives a run that ends on its own schedule (`rolling`);
    /// the request loops stop taking new messages.
    stop: AtomicBool,
    /// Attempts after a message's first one.
    retried: AtomicU64,
}

/// How a resilient publisher retries: every message carries the
/// idempotency key `<run>-<seq>`, so a retry of a publish whose outcome is
/// unknown (the node went away mid-request) is taken at most once per
/// channel and keeps its message id.
#[derive(Debug)]
struct Retry {
    run: String,
    attempts: u32,
}

/// Longest one publish attempt of a resilient publisher may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

impl Publisher {
    pub(crate) fn http(
        target: Target,
        nodes: &[SocketAddr],
        api_key: &str,
    ) -> anyhow::Result<Self> {
        let (path, key) = match target {
            Target::Fanout => ("/api/publish", Some(api_key)),
            Target::Socketio => ("/publish", None),
            Target::Pusher => anyhow::bail!("a Pusher publisher needs its app: Publisher::pusher"),
        };
        let endpoints = nodes
            .iter()
            .map(|a| Endpoint::new(*a, path, key))
            .collect::<anyhow::Result<_>>()
            .context("--api-key: not a valid header value")?;
        Ok(Self::Http(Arc::new(HttpPublisher {
            target,
            endpoints,
            pusher: None,
            retry: None,
            stop: AtomicBool::new(false),
            retried: AtomicU64::new(0),
        })))
    }

    /// A fanout HTTP publisher that survives nodes going away: each
    /// message carries an idempotency key and is retried on the next node
    /// (up to `attempts` attempts in all) when a request fails.
    pub(crate) fn http_resilient(
        nodes: &[SocketAddr],
        api_key: &str,
        attempts: u32,
    ) -> anyhow::Result<Arc<HttpPublisher>> {
        let endpoints = nodes
            .iter()
            .map(|a| Endpoint::new(*a, "/api/publish", Some(api_key)))
            .collect::<anyhow::Result<_>>()
            .context("--api-key: not a valid header value")?;
        Ok(Arc::new(HttpPublisher {
            target: Target::Fanout,
            endpoints,
            pusher: None,
            retry: Some(Retry {
                run: format!("bench-{}", unix_us()),
                attempts: attempts.max(1),
            }),
            stop: AtomicBool::new(false),
            retried: AtomicU64::new(0),
        }))
    }

    /// Publishes through Pusher's HTTP API (`POST /apps/<id>/events`),
    /// each request signed with the app's secret.
    pub(crate) fn pusher(nodes: &[SocketAddr], app: &pusher::App) -> anyhow::Result<Self> {
        let path = pusher::events_path(app);
        let endpoints = nodes
            .iter()
            .map(|a| Endpoint::new(*a, &path, None))
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("app id {:?}: not a valid path", app.id))?;
        Ok(Self::Http(Arc::new(HttpPublisher {
            target: Target::Pusher,
            endpoints,
            pusher: Some(app.clone()),
            retry: None,
            stop: AtomicBool::new(false),
            retried: AtomicU64::new(0),
        })))
    }

    /// Publishes straight to Redis: `PUBLISH`, or with `fcall` the
    /// history function `FCALL fanout_publish`, as a node does.
    pub(crate) async fn redis(url: &str, prefix: &str, fcall: bool) -> anyhow::Result<Self> {
        let target = RedisTarget::parse(url, prefix, fcall)?;
        // Fail here, not in the middle of a run; each drive connects anew.
        drop(target.connect().await?);
        Ok(Self::Redis(Arc::new(target)))
    }

    pub(crate) fn via(&self) -> &'static str {
        match self {
            Self::Http(h) if h.target == Target::Fanout => "POST /api/publish",
            Self::Http(h) if h.target == Target::Pusher => "POST /apps/<id>/events",
            Self::Http(_) => "POST /publish",
            Self::Redis(r) if r.fcall() => "Redis FCALL fanout_publish",
            Self::Redis(_) => "Redis PUBLISH",
        }
    }
}

impl HttpPublisher {
    /// Stops the drive: request loops take no new message.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Attempts after a message's first one, so far.
    pub(crate) fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// The request body publishing `payload` (a JSON object) to `dest`.
    fn body(&self, dest: Dest, payload: &str, seq: u64) -> Result<Bytes, String> {
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
                match &self.retry {
                    Some(r) => format!(
                        r#"{{"to":{to},"event":"bench","data":{payload},"idempotency_key":"{}-{seq}"}}"#,
                        r.run
                    ),
                    None => format!(r#"{{"to":{to},"event":"bench","data":{payload}}}"#),
                }
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
            Target::Pusher => {
                let channel = match dest {
                    Dest::User(i) => pusher::user_channel(&uid(i)),
                    Dest::Group(g) => pusher::group_channel(&format!("g{g}")),
                    Dest::Users { .. } | Dest::All => {
                        return Err(
                            "the Pusher target publishes to one user or one group per request"
                                .into(),
                        );
                    }
                };
                pusher::event_body(&[channel], payload)?
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
        let nodes = self.endpoints.len() as u64;
        let body = self.body(dest, payload, n)?;
        let Some(retry) = &self.retry else {
            let k = (n % nodes) as usize;
            let (Some(endpoint), Some(conn)) = (self.endpoints.get(k), conns.get_mut(k)) else {
                return Err("no node to publish to".into());
            };
            let res = match &self.pusher {
                Some(app) => {
                    let uri = signed(app, &body)?;
                    endpoint.post_to(conn, uri, body).await?
                }
                None => endpoint.post(conn, body).await?,
            };
            return expect_ok(res);
        };
        let mut last = String::new();
        for attempt in 0..u64::from(retry.attempts) {
            if attempt > 0 {
                self.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20 * attempt.min(10))).await;
            }
            let k = ((n + attempt) % nodes) as usize;
            let (Some(endpoint), Some(conn)) = (self.endpoints.get(k), conns.get_mut(k)) else {
                return Err("no node to publish to".into());
            };
            let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, endpoint.post(conn, body.clone()));
            match sent.await {
                Ok(Ok(res)) => match expect_ok(res) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                },
                Ok(Err(e)) => last = e,
                Err(_) => {
                    // The connection is mid-request: never reuse it.
                    conns[k] = None;
                    last = format!("no answer within {ATTEMPT_TIMEOUT:?}");
                }
            }
        }
        Err(format!(
            "{} attempts failed, the last: {last}",
            retry.attempts
        ))
    }
}

/// The signed path and query of a Pusher events request carrying `body`.
fn signed(app: &pusher::App, body: &[u8]) -> Result<hyper::Uri, String> {
    let now = unix_us() / 1_000_000;
    pusher::signed_uri(app, &pusher::events_path(app), body, now)?
        .parse()
        .map_err(|e| format!("signed URI: {e}"))
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
        Publisher::Redis(target) => redis::drive(target.clone(), plan, dest_of).await,
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
pub(crate) async fn drive_http<F>(http: Arc<HttpPublisher>, plan: Drive, dest_of: Arc<F>) -> Sent
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
        if plan.duration.is_some_and(|max| d.start.elapsed() >= max)
            || http.stop.load(Ordering::Relaxed)
        {
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
