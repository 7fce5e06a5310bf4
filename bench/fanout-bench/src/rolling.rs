//! The `rolling` scenario: clients that resume, while every node is
//! restarted in turn.
//!
//! Thousands of clients (WebSocket, and a share on SSE), each a user in a
//! group, keep their positions and de-duplicate by message id as an
//! application would (`resume`, `ledger`). The coordinator publishes at a
//! steady rate through the HTTP API to users and groups, with idempotency
//! keys and retries on the next node, and meanwhile restarts the nodes one
//! after another: SIGTERM, wait for the drain and the exit, start again on
//! the same ports. Clients closed by the drain come back to any live node
//! and resume. At the end every message is accounted for, as the
//! application saw it.
//!
//! Restarting needs processes the bench may signal and a way to start
//! them again: the suite's own nodes, or `--pid` and `--start-cmd` for each
//! node of a deployment the user started. Without either, the bench
//! publishes for `--duration` and the user restarts the nodes meanwhile.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    control::{PhaseReport, ResumePlan, ResumeReport, Target},
    deploy::{self, Node},
    http,
    pool::Pool,
    publish::{Dest, Drive, Publisher, drive_http},
    recorder::{latency_hist, pairs_into_hist},
    report::Outcome,
    scenario::{Audience, Env, Load, PER_WORKER, account, merge, resources},
};

/// How long a restarted node of the user's may take to answer again.
const STARTUP: Duration = Duration::from_secs(30);
/// Longest the bench waits for the last deliveries after publishing stopped.
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// Requests in flight while publishing.
const IN_FLIGHT: usize = 64;
/// `recovered: false` answers listed in the notes.
const UNRECOVERED_SHOWN: usize = 10;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RollingOpts {
    pub(crate) clients: u64,
    /// Percentage of clients on SSE.
    pub(crate) sse_percent: u8,
    /// Messages per second.
    pub(crate) rate: f64,
    /// Percentage of messages to a group instead of a user.
    pub(crate) group_percent: u8,
    pub(crate) group_size: u64,
    pub(crate) pad: usize,
    pub(crate) seed: u64,
    /// Publishing before the first restart, between two, and after the last.
    pub(crate) warmup: Duration,
    pub(crate) gap: Duration,
    pub(crate) tail: Duration,
    /// Longest a client waits before reconnecting, whatever the server asks.
    pub(crate) retry_cap: Duration,
    /// Longest a node may take to exit after SIGTERM.
    pub(crate) drain_timeout: Duration,
    /// With [`Restarts::Manual`]: how long to publish.
    pub(crate) duration: Duration,
}

/// Who restarts the nodes.
#[derive(Debug)]
pub(crate) enum Restarts<'a> {
    /// The suite's own nodes: same options, same ports.
    Suite(&'a mut [Node]),
    /// A deployment the user started: a pid and a start command per node.
    Commands(Vec<External>),
    /// Nobody here: the user restarts nodes during the run.
    Manual,
}

/// A node of the user's: its address, pid, and the shell command that
/// starts it again on the same address.
#[derive(Debug, Clone)]
pub(crate) struct External {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    pub(crate) start: String,
}

impl Restarts<'_> {
    fn count(&self) -> usize {
        match self {
            Self::Suite(nodes) => nodes.len(),
            Self::Commands(list) => list.len(),
            Self::Manual => 0,
        }
    }
}

pub(crate) async fn rolling(
    env: &Env,
    o: RollingOpts,
    mut restarts: Restarts<'_>,
) -> anyhow::Result<Outcome> {
    if env.target != Target::Fanout {
        bail!("rolling needs --target fanout");
    }
    if env.api_key.is_empty() {
        bail!("--api-key (or FANOUT_API_KEY) is required to publish through fanout's API");
    }
    // A restarted node is a new process: CPU and memory read by the old
    // pids would measure nothing.
    let mut env = env.clone();
    if !matches!(restarts, Restarts::Manual) {
        env.pids.clear();
    }
    let env = &env;
    let k = o.clients.max(1);
    let group_size = o.group_size.max(1);
    let groups = k.div_ceil(group_size);
    let n = restarts.count();
    let how = match &restarts {
        Restarts::Manual => format!("nodes restarted by hand within {}s", o.duration.as_secs()),
        _ => format!("{n} nodes restarted one by one"),
    };
    let mut out = Outcome::new(
        "rolling",
        env.target.name(),
        format!(
            "{k} clients ({}% SSE) in groups of {group_size}, {} msg/s ({}% to groups), {how}, {}",
            o.sse_percent,
            o.rate,
            o.group_percent,
            env.nodes_desc()
        ),
    );
    // Room for every message the longest run could publish.
    let longest = match restarts {
        Restarts::Manual => o.duration,
        _ => o.warmup + o.tail + (o.drain_timeout + STARTUP + o.gap) * n as u32,
    };
    let cap = (o.rate * longest.as_secs_f64()).ceil() as u64 + 1;

    let workers = if env.workers == 0 {
        k.div_ceil(PER_WORKER).max(1) as usize
    } else {
        env.workers
    };
    let mut pool = Pool::spawn(workers)?;
    let plan = ResumePlan {
        nodes: env.nodes.iter().map(ToString::to_string).collect(),
        sources: (0..env.sources.max(1))
            .map(|i| format!("127.0.0.{}", 2 + u16::from(i)))
            .collect(),
        first: 0,
        count: k,
        group_size,
        secret: env.secret.clone(),
        concurrency: env.connect_concurrency,
        connect_timeout_ms: 10_000,
        sse_percent: o.sse_percent.min(100),
        retry_cap_ms: o.retry_cap.as_millis() as u64,
        cycle_ms: 0,
    };
    let opened = pool.resume(&plan).await?;
    if opened.failed > 0 {
        let _ = pool.close().await;
        bail!(
            "{} of {k} clients failed to connect, e.g. {}",
            opened.failed,
            opened.errors.join("; ")
        );
    }
    let mut loadgen = pool.pids();
    loadgen.push(std::process::id());
    let mut load = Load {
        pool,
        loadgen,
        connected: opened,
    };
    load.pool.phase(0, cap).await?;
    let meter = load.meter(env);

    let mut rng = StdRng::seed_from_u64(o.seed);
    let dests: Arc<Vec<Dest>> = Arc::new(
        (0..cap)
            .map(|_| {
                if rng.random_range(0..100) < o.group_percent {
                    Dest::Group(rng.random_range(0..groups))
                } else {
                    Dest::User(rng.random_range(0..k))
                }
            })
            .collect(),
    );
    let attempts = 2 * env.nodes.len() as u32 + 2;
    let publisher = Publisher::http_resilient(&env.nodes, &env.api_key, attempts)?;
    let plan = Drive {
        base_seq: 0,
        count: cap,
        rate: o.rate,
        duration: Some(longest),
        in_flight: IN_FLIGHT,
        pad: o.pad,
    };
    let of = dests.clone();
    let drive = tokio::spawn(drive_http(
        publisher.clone(),
        plan,
        Arc::new(move |i: u64| of[i as usize]),
    ));

    let restarted = restart_all(&mut restarts, &o, &mut out).await;
    publisher.stop();
    let sent = drive.await.context("the publisher failed")?;
    if let Err(e) = restarted {
        out.errors.push(format!("{e:#}"));
    }

    let audience = Audience { k, group_size };
    let expected: u64 = sent
        .send_times
        .iter()
        .zip(&sent.dests)
        .filter(|(t, _)| **t > 0)
        .map(|(_, d)| audience.count(*d))
        .sum();
    let quiet = env.quiet.max(o.retry_cap + Duration::from_secs(2));
    settle(&mut load.pool, expected, quiet).await?;
    resources(&mut out, env, &meter);
    let reports = load.pool.resume_reports().await?;
    load.pool.close().await?;

    out.metric(
        "messages/s",
        sent.sent as f64 / sent.elapsed.as_secs_f64(),
        "/s",
    );
    out.metric("publish retries", publisher.retried() as f64, "");
    let phases: Vec<PhaseReport> = reports.iter().map(|r| r.phase.clone()).collect();
    let merged = merge(&phases, sent.send_times.len(), k);
    account(&mut out, &sent, &merged, audience);
    out.metrics
        .retain(|m| m.name != "deliveries/s" && !m.name.starts_with("last delivery"));
    summarize(&mut out, &reports, k);
    Ok(out)
}

/// Restarts every node in turn, publishing meanwhile: `warmup` first,
/// `gap` between two, `tail` after the last. Adds a note per restart.
async fn restart_all(
    restarts: &mut Restarts<'_>,
    o: &RollingOpts,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    if let Restarts::Manual = restarts {
        tokio::time::sleep(o.duration).await;
        return Ok(());
    }
    tokio::time::sleep(o.warmup).await;
    let (mut longest_exit, mut longest_start) = (Duration::ZERO, Duration::ZERO);
    let n = restarts.count();
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(o.gap).await;
        }
        let (name, exited, started) = match restarts {
            Restarts::Suite(nodes) => {
                let node = &mut nodes[i];
                let exited = node.terminate(o.drain_timeout).await?;
                let began = Instant::now();
                node.start_again().await?;
                (node.proc_.name.clone(), exited, began.elapsed())
            }
            Restarts::Commands(list) => {
                let e = &list[i];
                let (exited, started) = restart_external(e, o.drain_timeout).await?;
                (format!("node {}", e.addr), exited, started)
            }
            Restarts::Manual => return Ok(()),
        };
        longest_exit = longest_exit.max(exited);
        longest_start = longest_start.max(started);
        out.notes.push(format!(
            "{name}: SIGTERM → exited in {:.2} s → ready again in {:.2} s",
            exited.as_secs_f64(),
            started.as_secs_f64()
        ));
    }
    tokio::time::sleep(o.tail).await;
    out.metric("nodes restarted", n as f64, "");
    out.metric("longest drain", longest_exit.as_secs_f64(), "s");
    out.metric("longest start", longest_start.as_secs_f64(), "s");
    Ok(())
}

/// SIGTERM to a node of the user's, wait for its exit, run its start
/// command, wait until its address answers `GET /sse` with 401 (up, not
/// draining, asking for a token). Returns the time to exit and to start.
async fn restart_external(
    e: &External,
    patience: Duration,
) -> anyhow::Result<(Duration, Duration)> {
    let began = Instant::now();
    deploy::sigterm(e.pid)?;
    while alive(e.pid) {
        if began.elapsed() >= patience {
            bail!(
                "process {} had not exited {patience:?} after SIGTERM",
                e.pid
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exited = began.elapsed();
    let began = Instant::now();
    // Not waited for: the node it starts is the user's deployment and
    // outlives the bench.
    Command::new("sh")
        .arg("-c")
        .arg(&e.start)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running --start-cmd {:?}", e.start))?;
    while http::get_status(e.addr, "/sse", Duration::from_secs(2)).await != Some(401) {
        if began.elapsed() >= STARTUP {
            bail!(
                "{} did not answer GET /sse within {STARTUP:?} of `{}`",
                e.addr,
                e.start
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((exited, began.elapsed()))
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Waits until `expected` deliveries arrived, or none for `quiet`, or
/// [`SETTLE_MAX`] passed.
pub(crate) async fn settle(pool: &mut Pool, expected: u64, quiet: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = (0, Instant::now());
    while started.elapsed() < SETTLE_MAX {
        let got = pool.progress().await?;
        if got >= expected {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The resuming clients' side of the outcome: reconnects, resumes,
/// `recovered: false`, duplicates before de-duplication, latency of
/// replayed and live messages.
pub(crate) fn summarize(out: &mut Outcome, reports: &[ResumeReport], k: u64) {
    let sum = |f: fn(&ResumeReport) -> u64| reports.iter().map(f).sum::<u64>();
    let (mut replay, mut live) = (latency_hist(), latency_hist());
    for r in reports {
        pairs_into_hist(&mut replay, &r.replay_latency);
        pairs_into_hist(&mut live, &r.live_latency);
    }
    out.metric("reconnects", sum(|r| r.reconnects) as f64, "");
    out.metric("resumes", sum(|r| r.resumes) as f64, "");
    out.metric(
        "channels recovered",
        sum(|r| r.recovered.iter().sum()) as f64,
        "",
    );
    out.metric(
        "clients with recovered: false",
        sum(|r| r.unrecovered_clients) as f64,
        "",
    );
    out.metric(
        "channels with recovered: false",
        sum(|r| r.unrecovered_total) as f64,
        "",
    );
    out.metric(
        "raw duplicates (before de-dup)",
        sum(|r| r.raw_duplicates) as f64,
        "",
    );
    out.metric("offset gaps seen", sum(|r| r.gaps) as f64, "");
    out.metric("replayed messages", replay.len() as f64, "");
    out.percentiles("replayed latency", &replay, &[0.5, 0.99]);
    out.percentiles("live latency", &live, &[0.5, 0.99]);
    out.metric("bye frames", sum(|r| r.byes) as f64, "");
    out.metric(
        "longest retry_after_ms",
        reports
            .iter()
            .map(|r| r.max_retry_after_ms)
            .max()
            .unwrap_or(0) as f64,
        "ms",
    );
    out.metric(
        "failed connection attempts",
        sum(|r| r.failed_attempts) as f64,
        "",
    );
    let connected = sum(|r| r.connected);
    out.metric("clients connected at end", connected as f64, "");
    let unrecovered: Vec<String> = reports
        .iter()
        .flat_map(|r| r.unrecovered.iter())
        .take(UNRECOVERED_SHOWN)
        .map(|(client, channel)| format!("u{client} {channel}"))
        .collect();
    if !unrecovered.is_empty() {
        out.notes
            .push(format!("recovered: false for {}", unrecovered.join(", ")));
    }
    let mut seen = Vec::new();
    for e in reports.iter().flat_map(|r| r.errors.iter()) {
        if seen.len() < 5 && !seen.contains(e) {
            seen.push(e.clone());
        }
    }
    for e in seen {
        out.notes.push(format!("a client saw: {e}"));
    }
    let given_up = sum(|r| r.given_up);
    if given_up > 0 {
        out.errors
            .push(format!("{given_up} clients gave up reconnecting"));
    }
    if connected < k {
        out.errors.push(format!(
            "{} of {k} clients were not connected at the end",
            k - connected
        ));
    }
    if sum(|r| r.gaps) > 0 {
        out.errors.push(
            "a client saw an offset skipped on a channel (a message missing mid-stream)".into(),
        );
    }
}
