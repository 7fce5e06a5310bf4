//! The `soak` scenario: a long run at a steady load that fails if the
//! nodes keep growing.
//!
//! It starts its own deployment: a redis-server and two fanout nodes on
//! it, with channel history. Thousands of resuming WebSocket clients (the
//! `rolling` scenario's clients: user `u<i>` in group `g<i / group-size>`,
//! positions kept, de-duplication by message id) are spread over both
//! nodes, and each closes its connection itself every so often, with a
//! close handshake, and reconnects to the other node, resuming: a steady
//! trickle of `--reconnect-rate` reconnects per second in all. Meanwhile
//! the coordinator publishes at a steady rate through both nodes' HTTP
//! API, to random users and groups.
//!
//! Every `--sample` it reads, per node, its RSS and open files (`/proc`),
//! the bytes waiting in the kernel's send queues of its client sockets
//! (`/proc/net/tcp`), and from its `/metrics` its connections, live tokio
//! tasks and broker subscriptions; from the workers, the clients connected
//! and what they received. After `--warmup`, none of these may keep
//! growing (see `trend`); at the end every message must be accounted for,
//! and once every client has gone the nodes must hold as many files and
//! tasks as before the first one came.

mod sample;
mod verdict;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use fanout_testkit::RedisServer;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::task::JoinHandle;

use self::{
    sample::{AtRest, Sample, Watched, at_rest, header, row},
    verdict::{Check, describe, growth_checks, rest_checks},
};
use crate::{
    LoadArgs,
    control::ResumePlan,
    deploy::{self, API_KEY, Node, SECRET, find_bin},
    pool::Pool,
    procstat::CpuMeter,
    publish::{Dest, Drive, HttpPublisher, Publisher, Sent, drive_http},
    report::{Goal, Outcome},
    rolling,
    scenario::{Audience, PER_WORKER, account, merge},
    suite,
};

/// Requests in flight while publishing.
const IN_FLIGHT: usize = 16;

#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    /// Clients, spread over both nodes; client i is user u<i> in group
    /// g<i / group-size>.
    #[arg(long, default_value_t = 15_000)]
    connections: u64,
    /// How long to publish and reconnect.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time between two samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// The start of the run the verdict leaves out (default: the first
    /// fifth of --duration).
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Messages per second, through POST /api/publish on both nodes in turn.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Percentage of messages sent to a group instead of a user.
    #[arg(long, default_value_t = 30)]
    group_percent: u8,
    /// Members per group.
    #[arg(long, default_value_t = 100)]
    group_size: u64,
    /// Clients that close their connection and reconnect, per second, all
    /// together (each client about every connections ÷ rate seconds).
    #[arg(long, default_value_t = 20.0)]
    reconnect_rate: f64,
    /// Share of clients on SSE (0.0–1.0); the others use WebSocket.
    #[arg(long, default_value_t = 0.0)]
    sse_share: f64,
    /// Largest growth of a node's RSS after the warm-up, in percent.
    #[arg(long, default_value_t = 5.0)]
    max_rss_growth: f64,
    /// Open files and tasks a node may hold, once every client has gone,
    /// beyond what it held before the first came.
    #[arg(long, default_value_t = 0)]
    leak_slack: u64,
    /// Padding bytes added to each payload.
    #[arg(long, default_value_t = 40)]
    pad: usize,
    /// Seed of the random choice of users and groups.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Another `fanout serve` option for both nodes (repeat; e.g.
    /// `--node-arg=--outbound-queue --node-arg=256`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// The fanout binary (default: next to fanout-bench, else on PATH).
    #[arg(long)]
    fanout_bin: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, env = "REDIS_SERVER_BIN")]
    redis_server_bin: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// What the run is, from the arguments.
#[derive(Debug, Clone, Copy)]
struct Shape {
    k: u64,
    group_size: u64,
    warmup: Duration,
    /// Each client's connection lifetime (0: the client never closes).
    cycle_ms: u64,
    sse_percent: u8,
}

impl SoakArgs {
    fn shape(&self) -> anyhow::Result<Shape> {
        if self.connections == 0
            || self.rate <= 0.0
            || self.sample.is_zero()
            || self.duration.is_zero()
        {
            bail!("--connections, --rate, --sample and --duration must be above 0");
        }
        let warmup = self.warmup.unwrap_or(self.duration / 5);
        if warmup + self.sample * 4 > self.duration {
            bail!(
                "--duration {} leaves fewer than 4 samples after --warmup {}",
                humantime::format_duration(self.duration),
                humantime::format_duration(warmup)
            );
        }
        let k = self.connections;
        Ok(Shape {
            k,
            group_size: self.group_size.max(1),
            warmup,
            cycle_ms: if self.reconnect_rate > 0.0 {
                (k as f64 / self.reconnect_rate * 1000.0).round().max(1.0) as u64
            } else {
                0
            },
            sse_percent: (self.sse_share.clamp(0.0, 1.0) * 100.0).round() as u8,
        })
    }

    fn setup(&self, s: &Shape) -> String {
        format!(
            "{} clients ({}% SSE) in groups of {}, each reconnecting about every {:.0} s \
             ({}/s in all), {} msg/s ({}% to groups) through the API, {} with history, \
             2 nodes, Redis, warm-up {}",
            s.k,
            s.sse_percent,
            s.group_size,
            s.cycle_ms as f64 / 1000.0,
            self.reconnect_rate,
            self.rate,
            self.group_percent.min(100),
            humantime::format_duration(self.duration),
            humantime::format_duration(s.warmup),
        )
    }
}

/// The soak's own redis-server and two nodes; dropped, they stop.
struct Deployed {
    _redis: RedisServer,
    _nodes: Vec<Node>,
    addrs: Vec<SocketAddr>,
    watched: Vec<Watched>,
    redis_pid: Option<u32>,
}

async fn deploy(a: &SoakArgs) -> anyhow::Result<Deployed> {
    progress("starting redis-server and two fanout nodes");
    let redis = deploy::redis(&find_bin(a.redis_server_bin.as_deref(), "redis-server"))?;
    let url = redis.url();
    let bin = find_bin(a.fanout_bin.as_deref(), "fanout");
    let mut extra: Vec<String> = vec!["--history".into(), "true".into()];
    extra.extend(a.node_args.iter().cloned());
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=2 {
        nodes.push(deploy::fanout(&bin, &format!("soak{i}"), Some(&url), &extra).await?);
    }
    let watched = nodes
        .iter()
        .map(|n| {
            Ok(Watched {
                pid: n.proc_.pid(),
                port: n.addr.port(),
                internal: n
                    .internal()
                    .context("a fanout node without internal address")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Deployed {
        addrs: nodes.iter().map(|n| n.addr).collect(),
        redis_pid: redis.pid(),
        _redis: redis,
        _nodes: nodes,
        watched,
    })
}

/// Opens the resuming clients in worker processes, spread over the nodes.
async fn connect(a: &SoakArgs, s: &Shape, d: &Deployed) -> anyhow::Result<(Pool, f64)> {
    progress(&format!("connecting {} clients", s.k));
    let workers = if a.load.workers == 0 {
        s.k.div_ceil(PER_WORKER).max(1) as usize
    } else {
        a.load.workers
    };
    let mut pool = Pool::spawn(workers)?;
    let plan = ResumePlan {
        nodes: d.addrs.iter().map(ToString::to_string).collect(),
        sources: (0..a.load.sources.max(1))
            .map(|i| format!("127.0.0.{}", 2 + u16::from(i)))
            .collect(),
        first: 0,
        count: s.k,
        group_size: s.group_size,
        secret: SECRET.into(),
        concurrency: a.load.connect_concurrency,
        connect_timeout_ms: 30_000,
        sse_percent: s.sse_percent,
        retry_cap_ms: 2_000,
        cycle_ms: s.cycle_ms,
    };
    let opened = pool.resume(&plan).await?;
    if opened.failed > 0 {
        let _ = pool.close().await;
        bail!(
            "{} of {} clients failed to connect, e.g. {}",
            opened.failed,
            s.k,
            opened.errors.join("; ")
        );
    }
    Ok((pool, opened.elapsed_ms as f64 / 1000.0))
}

/// The publisher at work: its handle, and how far it got.
struct Publishing {
    http: Arc<HttpPublisher>,
    drive: JoinHandle<Sent>,
    /// Messages handed to the publisher so far.
    issued: Arc<AtomicU64>,
    /// Deliveries owed by messages `0 ..= i`, for the running `outstanding`.
    owed: Vec<u64>,
}

impl Publishing {
    /// Most messages the run publishes.
    fn cap(a: &SoakArgs) -> u64 {
        (a.rate * a.duration.as_secs_f64()).ceil() as u64 + 1
    }

    /// Publishes `--rate` messages per second for `--duration` through both
    /// nodes' API, each to a random user or (`--group-percent`) group.
    /// Starts at once: call with the clients' phase started, or the first
    /// messages could be counted before it and wiped by it.
    fn start(a: &SoakArgs, s: &Shape, d: &Deployed, audience: Audience) -> anyhow::Result<Self> {
        let cap = Self::cap(a);
        let groups = s.k.div_ceil(s.group_size);
        let mut rng = StdRng::seed_from_u64(a.seed);
        let dests: Arc<Vec<Dest>> = Arc::new(
            (0..cap)
                .map(|_| {
                    if rng.random_range(0..100) < a.group_percent {
                        Dest::Group(rng.random_range(0..groups))
                    } else {
                        Dest::User(rng.random_range(0..s.k))
                    }
                })
                .collect(),
        );
        let owed = dests
            .iter()
            .scan(0u64, |sum, d| {
                *sum += audience.count(*d);
                Some(*sum)
            })
            .collect();
        let http = Publisher::http_resilient(&d.addrs, API_KEY, 4)?;
        let issued = Arc::new(AtomicU64::new(0));
        let (of, seen) = (dests, issued.clone());
        let drive = tokio::spawn(drive_http(
            http.clone(),
            Drive {
                base_seq: 0,
                count: cap,
                rate: a.rate,
                duration: Some(a.duration),
                in_flight: IN_FLIGHT,
                pad: a.pad,
            },
            Arc::new(move |i: u64| {
                seen.fetch_max(i + 1, Ordering::Relaxed);
                of[i as usize]
            }),
        ));
        Ok(Self {
            http,
            drive,
            issued,
            owed,
        })
    }

    /// Deliveries owed by the messages handed to the publisher so far.
    fn owed_now(&self) -> u64 {
        owed_until(&self.owed, self.issued.load(Ordering::Relaxed))
    }
}

pub(crate) async fn soak(a: &SoakArgs) -> anyhow::Result<ExitCode> {
    let shape = a.shape()?;
    let d = deploy(a).await?;
    let mut out = Outcome::new("soak", "fanout", a.setup(&shape));

    progress("measuring the nodes before any client");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = at_rest(&d.watched).await;
    let (mut pool, connect_s) = connect(a, &shape, &d).await?;
    out.metric("connect time", connect_s, "s");
    let audience = Audience {
        k: shape.k,
        group_size: shape.group_size,
    };
    // The phase starts (every worker's deliveries counted from zero)
    // before the first message goes out: the other way round, a message
    // delivered before a worker took the phase was wiped by it, and
    // counted as lost (3 in 30 loaded runs of the bench test's soak,
    // always the first message).
    pool.phase(0, Publishing::cap(a)).await?;
    let publishing = Publishing::start(a, &shape, &d, audience)?;
    let mut loadgen = pool.pids();
    loadgen.push(std::process::id());
    let meter = CpuMeter::start(vec![
        d.watched.iter().map(|w| w.pid).collect(),
        loadgen,
        d.redis_pid.into_iter().collect(),
    ]);

    progress(&format!(
        "publishing and reconnecting for {}, a sample every {}",
        humantime::format_duration(a.duration),
        humantime::format_duration(a.sample)
    ));
    eprintln!("{}", header(d.watched.len()));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next = a.sample;
    while next <= a.duration {
        tokio::time::sleep_until((started + next).into()).await;
        let s = sample::sample(&d.watched, &mut pool, started, publishing.owed_now()).await?;
        eprintln!("{}", row(&s));
        samples.push(s);
        next += a.sample;
    }
    publishing.http.stop();
    let sent = publishing.drive.await.context("the publisher failed")?;
    // The trickle stops, so that every client is connected at the end.
    pool.hold().await?;
    let back = Instant::now();
    while pool.tally().await?.connected < shape.k && back.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected: u64 = sent
        .send_times
        .iter()
        .zip(&sent.dests)
        .filter(|(t, _)| **t > 0)
        .map(|(_, d)| audience.count(*d))
        .sum();
    rolling::settle(
        &mut pool,
        expected,
        a.load.quiet.max(Duration::from_secs(5)),
    )
    .await?;
    let last = sample::sample(&d.watched, &mut pool, started, expected).await?;
    eprintln!("{}  (end, publishing stopped)", row(&last));
    let (cpu, wall) = meter.read();
    out.resources.server_cpu_s = Some(cpu[0]);
    out.resources.loadgen_cpu_s = cpu[1];
    out.resources.redis_cpu_s = d.redis_pid.map(|_| cpu[2]);
    out.resources.wall_s = wall;
    let reports = pool.resume_reports().await?;
    progress("closing every client");
    pool.close().await?;
    let after = at_rest(&d.watched).await;

    out.metric(
        "messages/s",
        sent.sent as f64 / sent.elapsed.as_secs_f64(),
        "/s",
    );
    out.metric("publish retries", publishing.http.retried() as f64, "");
    // Messages that failed to reach a node live: read back from history
    // when the next one showed the gap (late), or, counted once per gap,
    // not found there (lost). Without an outage there should be none.
    out.metric(
        "messages the nodes missed live",
        last.nodes
            .iter()
            .filter(|n| n.connections.is_some())
            .map(|n| n.gap_messages.unwrap_or(0.0))
            .sum(),
        "",
    );
    let phases: Vec<_> = reports.iter().map(|r| r.phase.clone()).collect();
    let merged = merge(&phases, sent.send_times.len(), shape.k);
    account(&mut out, &sent, &merged, audience);
    out.metrics
        .retain(|m| m.name != "deliveries/s" && !m.name.starts_with("last delivery"));
    rolling::summarize(&mut out, &reports, shape.k);

    let post: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= shape.warmup.as_secs_f64())
        .collect();
    let mut checks = growth_checks(&post, d.watched.len(), a.max_rss_growth / 100.0);
    checks.extend(rest_checks(&before, &after, a.leak_slack as f64));
    judge(
        &mut out,
        &checks,
        &samples,
        &before,
        &after,
        a.max_rss_growth,
    );

    let failed = suite::failed(std::slice::from_ref(&out));
    let run = Run {
        samples: &samples,
        last: &last,
        before: &before,
        after: &after,
        checks: &checks,
        failed,
    };
    print(a.json, &out, &run, d.watched.len())?;
    drop(d);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Failed checks become errors of the outcome; RSS growth and leaked
/// files become metrics.
fn judge(
    out: &mut Outcome,
    checks: &[Check],
    samples: &[Sample],
    before: &[AtRest],
    after: &[AtRest],
    max_rss_growth: f64,
) {
    for c in checks {
        if !c.ok {
            out.errors
                .push(format!("{} kept growing: {}", c.what, describe(c)));
        }
        if c.what.ends_with("RSS") {
            let name = format!("{} growth after warm-up", c.what);
            let pct = c.growth.map_or(f64::NAN, |g| {
                100.0 * g.by_median.max(g.by_fit) / g.baseline.max(1.0)
            });
            out.metric(&name, pct, "%");
            out.goal(&name, Goal::AtMost(max_rss_growth));
        }
    }
    for (i, (b, e)) in before.iter().zip(after).enumerate() {
        if let (Some(b), Some(e)) = (b.fds, e.fds) {
            out.metric(
                &format!("node {} leaked fds", i + 1),
                e as f64 - b as f64,
                "",
            );
        }
    }
    if samples
        .iter()
        .any(|s| s.nodes.iter().any(|n| n.tasks.is_none()))
    {
        out.notes
            .push("a node exposed no fanout_runtime_tasks_alive: tasks were not checked".into());
    }
    out.notes.push(
        "queued bytes are the kernel send queues of the nodes' client sockets \
         (/proc/net/tcp); a node's own outbound queues expose no gauge"
            .into(),
    );
}

/// Everything the run measured, for printing.
struct Run<'a> {
    samples: &'a [Sample],
    last: &'a Sample,
    before: &'a [AtRest],
    after: &'a [AtRest],
    checks: &'a [Check],
    failed: bool,
}

fn print(json: bool, out: &Outcome, r: &Run<'_>, nodes: usize) -> anyhow::Result<()> {
    if json {
        let doc = serde_json::json!({
            "results": [out],
            "samples": r.samples,
            "end": r.last,
            "before": r.before,
            "after": r.after,
            "checks": r.checks,
            "verdict": if r.failed { "fail" } else { "pass" },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut text = String::new();
    let _ = writeln!(text, "{}", header(nodes));
    for s in r.samples {
        let _ = writeln!(text, "{}", row(s));
    }
    let _ = writeln!(text, "{}  (end)\n", row(r.last));
    for c in r.checks {
        let verdict = if c.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(text, "{verdict} {}: {}", c.what, describe(c));
    }
    println!("{text}");
    crate::print(std::slice::from_ref(out), false)?;
    println!("verdict: {}", if r.failed { "FAIL" } else { "pass" });
    Ok(())
}

fn progress(step: &str) {
    eprintln!("fanout-bench: {step} …");
}

/// Deliveries owed by the first `issued` messages.
fn owed_until(owed: &[u64], issued: u64) -> u64 {
    usize::try_from(issued)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| owed.get(i.min(owed.len().saturating_sub(1))))
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_counts_the_issued_messages() {
        let owed = [1, 101, 102];
        assert_eq!(owed_until(&owed, 0), 0);
        assert_eq!(owed_until(&owed, 2), 101);
        assert_eq!(owed_until(&owed, 9), 102);
    }
}
