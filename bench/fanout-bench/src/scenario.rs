//! The five scenarios. Each opens its clients in worker processes, measures,
//! closes them, and returns an `Outcome`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use fred::prelude::{Client, ClientLike};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    control::{ConnectOutcome, ConnectPlan, PhaseReport, Target},
    pool::Pool,
    procstat::{CpuMeter, total_rss},
    publish::{Dest, Drive, Publisher, Sent, drive},
    pusher,
    recorder::{latency_hist, pairs_into_hist, unix_us},
    report::{Accounting, MissingMessage, Outcome},
    stages,
};

/// Connections one worker process holds at most by default (the machine
/// caps each process at 20,000 open files).
pub(crate) const PER_WORKER: u64 = 15_000;

/// The deployment under test and how to load it.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) target: Target,
    /// Client (and HTTP API) addresses of the nodes.
    pub(crate) nodes: Vec<SocketAddr>,
    /// Node pids, for RSS and CPU (empty: not measured).
    pub(crate) pids: Vec<u32>,
    /// fanout nodes' internal addresses, for their own timings of a
    /// broadcast (empty: not reported).
    pub(crate) internal: Vec<SocketAddr>,
    pub(crate) redis_pid: Option<u32>,
    pub(crate) secret: String,
    pub(crate) api_key: String,
    /// The Pusher app (`--target pusher`): its key in the clients' URL,
    /// its id and secret for the signed publish requests.
    pub(crate) pusher: pusher::App,
    /// Redis URL for publishing straight to Redis and counting commands.
    pub(crate) redis: Option<String>,
    pub(crate) prefix: String,
    /// Publish through Redis instead of the HTTP API (fanout only).
    pub(crate) via_redis: bool,
    /// Through Redis, with `FCALL fanout_publish` (history kept) instead of
    /// `PUBLISH`.
    pub(crate) redis_fcall: bool,
    /// What the nodes use as a broker, when known (for the heading).
    pub(crate) broker: Option<&'static str>,
    /// Worker processes (0: one per 15,000 connections).
    pub(crate) workers: usize,
    /// Loopback source addresses 127.0.0.2 … 127.0.0.(1+sources).
    pub(crate) sources: u8,
    pub(crate) connect_concurrency: usize,
    /// Seconds to wait for the last deliveries once nothing new arrives.
    pub(crate) quiet: Duration,
}

impl Env {
    fn plan(&self, count: u64, group_size: u64) -> ConnectPlan {
        let scheme_urls = self.nodes.iter().map(|a| format!("ws://{a}")).collect();
        ConnectPlan {
            target: self.target,
            urls: scheme_urls,
            sources: (0..self.sources.max(1))
                .map(|i| format!("127.0.0.{}", 2 + u16::from(i)))
                .collect(),
            first: 0,
            count,
            group_size,
            secret: match self.target {
                Target::Pusher => self.pusher.key.clone(),
                Target::Fanout | Target::Socketio => self.secret.clone(),
            },
            concurrency: self.connect_concurrency,
            connect_timeout_ms: 30_000,
        }
    }

    async fn publisher(&self, allow_redis: bool) -> anyhow::Result<Arc<Publisher>> {
        if allow_redis && self.via_redis && self.target == Target::Fanout {
            let url = self.redis.as_deref().context("--via redis needs --redis")?;
            return Ok(Arc::new(
                Publisher::redis(url, &self.prefix, self.redis_fcall).await?,
            ));
        }
        if self.target == Target::Pusher {
            return Ok(Arc::new(Publisher::pusher(&self.nodes, &self.pusher)?));
        }
        if self.target == Target::Fanout && self.api_key.is_empty() {
            bail!("--api-key (or FANOUT_API_KEY) is required to publish through fanout's API");
        }
        Ok(Arc::new(Publisher::http(
            self.target,
            &self.nodes,
            &self.api_key,
        )?))
    }

    pub(crate) fn redis_pids(&self) -> Vec<u32> {
        self.redis_pid.into_iter().collect()
    }

    pub(crate) fn nodes_desc(&self) -> String {
        let n = self.nodes.len();
        let nodes = format!("{n} node{}", if n == 1 { "" } else { "s" });
        match self.broker {
            Some(broker) => format!("{nodes}, {broker}"),
            None => nodes,
        }
    }
}

/// Clients connected in worker processes, and the meter of everything.
pub(crate) struct Load {
    pub(crate) pool: Pool,
    pub(crate) loadgen: Vec<u32>,
    /// How the initial connections went (with their time to ready).
    pub(crate) connected: ConnectOutcome,
}

async fn connect(env: &Env, count: u64, group_size: u64) -> anyhow::Result<Load> {
    let workers = if env.workers == 0 {
        count.div_ceil(PER_WORKER).max(1) as usize
    } else {
        env.workers
    };
    let mut pool = Pool::spawn(workers)?;
    let outcome = pool.connect(&env.plan(count, group_size)).await?;
    if outcome.failed > 0 {
        let _ = pool.close().await;
        bail!(
            "{} of {count} connections failed, e.g. {}",
            outcome.failed,
            outcome.errors.join("; ")
        );
    }
    let mut loadgen = pool.pids();
    loadgen.push(std::process::id());
    Ok(Load {
        pool,
        loadgen,
        connected: outcome,
    })
}

/// p50 and p99 of the connections' time from TCP connect to ready.
fn ready_percentiles(out: &mut Outcome, name: &str, connected: &ConnectOutcome) {
    let mut h = latency_hist();
    pairs_into_hist(&mut h, &connected.ready_us);
    out.percentiles(name, &h, &[0.5, 0.99]);
}

impl Load {
    pub(crate) fn meter(&self, env: &Env) -> CpuMeter {
        CpuMeter::start(vec![
            env.pids.clone(),
            self.loadgen.clone(),
            env.redis_pids(),
        ])
    }

    /// Waits until `expected` deliveries arrived or none arrived for
    /// `env.quiet`, then collects the workers' reports.
    async fn settle(&mut self, env: &Env, expected: u64) -> anyhow::Result<Vec<PhaseReport>> {
        let mut last = (0, Instant::now());
        loop {
            let got = self.pool.progress().await?;
            if got >= expected {
                break;
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() >= env.quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.pool.reports().await
    }
}

pub(crate) fn resources(out: &mut Outcome, env: &Env, meter: &CpuMeter) {
    let (cpu, wall) = meter.read();
    out.resources.wall_s = wall;
    out.resources.server_cpu_s = (!env.pids.is_empty()).then_some(cpu[0]);
    out.resources.loadgen_cpu_s = cpu[1];
    out.resources.redis_cpu_s = env.redis_pid.map(|_| cpu[2]);
}

/// Per-message delivery counts and slowest delivery, merged over workers.
pub(crate) struct Merged {
    counts: Vec<u64>,
    max_latency: Vec<u64>,
    /// Per connection: deliveries and the sum of their offsets.
    per_conn: Vec<(u64, u64)>,
    latency: Histogram<u64>,
    stray: u64,
    closed: BTreeMap<u16, u64>,
}

pub(crate) fn merge(reports: &[PhaseReport], len: usize, conns: u64) -> Merged {
    let mut m = Merged {
        counts: vec![0; len],
        max_latency: vec![0; len],
        per_conn: vec![(0, 0); conns as usize],
        latency: latency_hist(),
        stray: 0,
        closed: BTreeMap::new(),
    };
    for r in reports {
        for &(offset, n, lat) in &r.per_seq {
            if let Some(i) = usize::try_from(offset).ok().filter(|&i| i < len) {
                m.counts[i] += u64::from(n);
                m.max_latency[i] = m.max_latency[i].max(u64::from(lat));
            }
        }
        for &(conn, n, sum) in &r.per_conn {
            if let Some(c) = m.per_conn.get_mut(conn as usize) {
                c.0 += u64::from(n);
                c.1 = c.1.wrapping_add(sum);
            }
        }
        pairs_into_hist(&mut m.latency, &r.latency);
        m.stray += r.stray;
        for &(code, n) in &r.closed_by_code {
            *m.closed.entry(code).or_default() += n;
        }
    }
    m
}

/// Missing messages and mismatched clients named in the accounting.
const EXAMPLES_KEPT: usize = 10;

/// Who receives what: `k` connections (users u0 … u<k-1>), connection `i`
/// in group `g<i / group_size>` when `group_size > 0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Audience {
    pub(crate) k: u64,
    pub(crate) group_size: u64,
}

impl Audience {
    /// The connections a message to `dest` reaches.
    fn each(self, dest: Dest, mut f: impl FnMut(u64)) {
        match dest {
            Dest::User(_) | Dest::Users { .. } => dest.users().filter(|&u| u < self.k).for_each(f),
            Dest::Group(g) if self.group_size > 0 => {
                let lo = g.saturating_mul(self.group_size).min(self.k);
                let hi = lo.saturating_add(self.group_size).min(self.k);
                (lo..hi).for_each(f);
            }
            Dest::Group(_) => {}
            Dest::All => (0..self.k).for_each(&mut f),
        }
    }

    pub(crate) fn count(self, dest: Dest) -> u64 {
        let mut n = 0;
        self.each(dest, |_| n += 1);
        n
    }
}

/// Connections whose deliveries differ from what was addressed to them:
/// each must have received every successful message that named it exactly
/// once, and nothing else (checked by count and by the sum of the
/// messages' offsets). `None` when some publish failed: a failed request may
/// still have been delivered, so the expectation is unknown.
fn clients_mismatched(sent: &Sent, merged: &Merged, audience: Audience) -> Option<Vec<u64>> {
    if sent.failed > 0 {
        return None;
    }
    let mut expected = vec![(0u64, 0u64); merged.per_conn.len()];
    for (i, (&t, &dest)) in sent.send_times.iter().zip(&sent.dests).enumerate() {
        if t == 0 {
            continue;
        }
        audience.each(dest, |c| {
            if let Some(e) = expected.get_mut(c as usize) {
                e.0 += 1;
                e.1 = e.1.wrapping_add(i as u64);
            }
        });
    }
    Some(
        expected
            .iter()
            .zip(&merged.per_conn)
            .enumerate()
            .filter(|(_, (e, got))| e != got)
            .map(|(c, _)| c as u64)
            .collect(),
    )
}

/// Accounts for every message and every client, and adds throughput and
/// latency metrics. Returns the unix µs of the last delivery.
pub(crate) fn account(out: &mut Outcome, sent: &Sent, merged: &Merged, audience: Audience) -> u64 {
    let mut acc = Accounting {
        sent: sent.sent,
        publish_failed: sent.failed,
        stray: merged.stray,
        ..Accounting::default()
    };
    // The run's first publish: missing messages are timed from it.
    let first = sent
        .send_times
        .iter()
        .copied()
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let mut last = 0;
    let mut completion = latency_hist();
    for (i, (&t, &dest)) in sent.send_times.iter().zip(&sent.dests).enumerate() {
        if t == 0 {
            continue; // failed publish
        }
        let expected = audience.count(dest);
        let got = merged.counts.get(i).copied().unwrap_or(0);
        acc.expected += expected;
        acc.delivered += got.min(expected);
        acc.missing += expected.saturating_sub(got);
        acc.duplicated += got.saturating_sub(expected);
        if got < expected && acc.missing_messages.len() < EXAMPLES_KEPT {
            acc.missing_messages.push(MissingMessage {
                seq: i as u64,
                to: format!("{dest:?}"),
                sent_at_s: t.saturating_sub(first) as f64 / 1e6,
                expected,
                delivered: got,
            });
        }
        if got > 0 {
            let lat = merged.max_latency[i];
            last = last.max(t + lat);
            if expected > 1 {
                let _ = completion.record(lat.max(1));
            }
        }
    }
    if last > first {
        let span = (last - first) as f64 / 1e6;
        out.metric("deliveries/s", acc.delivered as f64 / span, "/s");
    }
    out.percentiles("latency", &merged.latency, &[0.5, 0.99, 0.999]);
    // Per message with several recipients (group, `all`): until the last one had it.
    out.percentiles("last delivery", &completion, &[0.5, 0.99]);
    out.closed_by_server = merged.closed.clone();
    out.errors.extend(sent.errors.iter().cloned());
    if let Some(clients) = clients_mismatched(sent, merged, audience) {
        acc.clients_mismatched = Some(clients.len() as u64);
        acc.mismatched_clients = clients.into_iter().take(EXAMPLES_KEPT).collect();
    }
    out.accounting = Some(acc);
    last
}

// ---------------------------------------------------------------- idle

pub(crate) async fn idle(
    env: &Env,
    count: u64,
    settle: Duration,
    window: Duration,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new(
        "idle",
        env.target.name(),
        format!(
            "{count} connections, {}, {}s idle window",
            env.nodes_desc(),
            window.as_secs()
        ),
    );
    let baseline = total_rss(&env.pids);
    let started = Instant::now();
    let mut load = connect(env, count, 0).await?;
    let took = started.elapsed().as_secs_f64();
    out.metric("connect time", took, "s");
    out.metric("connect rate", count as f64 / took.max(1e-3), "conn/s");
    ready_percentiles(&mut out, "connect → welcome", &load.connected);
    tokio::time::sleep(settle).await;
    load.pool.phase(0, 0).await?;
    let meter = load.meter(env);
    tokio::time::sleep(window).await;
    resources(&mut out, env, &meter);
    if !env.pids.is_empty() {
        let rss = total_rss(&env.pids);
        out.metric(
            "server RSS per connection",
            rss.saturating_sub(baseline) as f64 / count as f64 / 1024.0,
            "KiB",
        );
        out.metric("server RSS", rss as f64 / (1 << 20) as f64, "MiB");
        out.metric(
            "server CPU per connection",
            out.resources.server_cpu_s.unwrap_or(0.0) / out.resources.wall_s / count as f64 * 1e6,
            "µs/s",
        );
    }
    let reports = load.pool.reports().await?;
    let merged = merge(&reports, 0, 0);
    out.closed_by_server = merged.closed;
    out.metric(
        "open at end",
        reports.iter().map(|r| r.open).sum::<u64>() as f64,
        "",
    );
    load.pool.close().await?;
    Ok(out)
}

// ----------------------------------------------------------- broadcast

#[derive(Debug, Clone, Copy)]
pub(crate) struct BroadcastOpts {
    pub(crate) connections: u64,
    pub(crate) messages: u64,
    /// Messages per second; 0 publishes the next as soon as the last
    /// publish request returned.
    pub(crate) rate: f64,
    pub(crate) pad: usize,
    /// Publish to `all` instead of one group holding every connection.
    pub(crate) to_all: bool,
    /// Publish requests in flight at once.
    pub(crate) in_flight: usize,
}

pub(crate) async fn broadcast(env: &Env, o: BroadcastOpts) -> anyhow::Result<Outcome> {
    let k = o.connections;
    let pipelined = env.via_redis && env.target == Target::Fanout;
    let pace = match (o.rate > 0.0, pipelined) {
        (true, _) => format!("{} msg/s", o.rate),
        (false, true) => "back to back, pipelined".to_owned(),
        (false, false) => format!("back to back, {} in flight", o.in_flight),
    };
    let mut out = Outcome::new(
        "broadcast",
        env.target.name(),
        format!(
            "{k} connections in {}, {} messages {pace}, {}",
            if o.to_all { "`all`" } else { "one group" },
            o.messages,
            env.nodes_desc()
        ),
    );
    let mut load = connect(env, k, if o.to_all { 0 } else { k }).await?;
    let publisher = env.publisher(true).await?;
    out.setup.push_str(&format!(", via {}", publisher.via()));
    load.pool.phase(0, o.messages).await?;
    let meter = load.meter(env);
    let before = stages::snapshot(&env.internal).await;
    let plan = Drive {
        base_seq: 0,
        count: o.messages,
        rate: o.rate,
        duration: None,
        in_flight: o.in_flight.max(1),
        pad: o.pad,
    };
    let dest = if o.to_all { Dest::All } else { Dest::Group(0) };
    let sent = drive(publisher, plan, move |_| dest).await;
    let reports = load.settle(env, sent.sent * k).await?;
    resources(&mut out, env, &meter);
    let merged = merge(&reports, o.messages as usize, k);
    let group_size = if o.to_all { 0 } else { k };
    account(&mut out, &sent, &merged, Audience { k, group_size });
    // How long the publish itself took (over HTTP: until the node answered,
    // after Redis had it): the part of the latency before any fan-out.
    out.percentiles("publish request", &sent.request_latency, &[0.5, 0.99]);
    stages::snapshot(&env.internal)
        .await
        .report_since(&before, &mut out);
    load.pool.close().await?;
    Ok(out)
}

// -------------------------------------------------------------- steady

#[derive(Debug, Clone, Copy)]
pub(crate) struct SteadyOpts {
    pub(crate) users: u64,
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    /// Percentage of messages that go to a group instead of a user.
    pub(crate) group_percent: u8,
    pub(crate) group_size: u64,
    pub(crate) pad: usize,
    pub(crate) seed: u64,
}

pub(crate) async fn steady(env: &Env, o: SteadyOpts) -> anyhow::Result<Outcome> {
    let k = o.users;
    let group_size = if o.group_percent > 0 {
        o.group_size.max(1)
    } else {
        0
    };
    let groups = if group_size > 0 {
        k.div_ceil(group_size)
    } else {
        0
    };
    let mut out = Outcome::new(
        "steady",
        env.target.name(),
        format!(
            "{k} users, {} msg/s for {}s, {}% to groups of {}, {}",
            o.rate,
            o.duration.as_secs(),
            o.group_percent,
            o.group_size,
            env.nodes_desc()
        ),
    );
    let mut load = connect(env, k, group_size).await?;
    let publisher = env.publisher(true).await?;
    out.setup.push_str(&format!(", via {}", publisher.via()));
    let len = (o.rate * o.duration.as_secs_f64()).ceil() as u64 + 1;
    load.pool.phase(0, len).await?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    let dests: Vec<Dest> = (0..len)
        .map(|_| {
            if groups > 0 && rng.random_range(0..100) < o.group_percent {
                Dest::Group(rng.random_range(0..groups))
            } else {
                Dest::User(rng.random_range(0..k))
            }
        })
        .collect();
    let meter = load.meter(env);
    let plan = Drive {
        base_seq: 0,
        count: len,
        rate: o.rate,
        duration: Some(o.duration),
        in_flight: 512,
        pad: o.pad,
    };
    let dests = Arc::new(dests);
    let sent = drive(publisher, plan, move |i| dests[i as usize]).await;
    let audience = Audience { k, group_size };
    let expected_total: u64 = sent
        .send_times
        .iter()
        .zip(&sent.dests)
        .filter(|(t, _)| **t > 0)
        .map(|(_, d)| audience.count(*d))
        .sum();
    let reports = load.settle(env, expected_total).await?;
    resources(&mut out, env, &meter);
    out.metric(
        "messages/s",
        sent.sent as f64 / sent.elapsed.as_secs_f64(),
        "/s",
    );
    let merged = merge(&reports, len as usize, k);
    account(&mut out, &sent, &merged, audience);
    load.pool.close().await?;
    Ok(out)
}

// --------------------------------------------------------------- storm

/// A connection for `INFO commandstats`, opened once so that its own
/// connection setup (PING, CLIENT, INFO server) is not counted between two
/// snapshots.
async fn info_client(url: &str) -> anyhow::Result<Client> {
    let config = fred::types::config::Config::from_url(url)?;
    let client: Client = fred::types::Builder::from_config(config).build()?;
    client.init().await?;
    Ok(client)
}

/// Redis commands by name (`INFO commandstats`).
async fn command_counts(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let info: String = client
        .custom(
            fred::types::CustomCommand::new_static("INFO", fred::types::ClusterHash::Random, false),
            vec!["commandstats"],
        )
        .await?;
    let mut counts = BTreeMap::new();
    for line in info.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if let Some(calls) = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|c| c.parse().ok())
        {
            counts.insert(name.to_owned(), calls);
        }
    }
    Ok(counts)
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            after
                .get(*n)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(*n).copied().unwrap_or(0))
        })
        .sum()
}

pub(crate) async fn storm(env: &Env, count: u64, down: Duration) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new(
        "storm",
        env.target.name(),
        format!(
            "{count} clients drop and reconnect at once ({} ms down), {}",
            down.as_millis(),
            env.nodes_desc()
        ),
    );
    let mut load = connect(env, count, 0).await?;
    let publisher = env.publisher(true).await?;
    let info = match &env.redis {
        Some(url) => {
            let client = info_client(url).await?;
            let before = command_counts(&client).await?;
            Some((client, before))
        }
        None => None,
    };
    let meter = load.meter(env);
    let t0 = unix_us();
    let back = load.pool.storm(down.as_millis() as u64).await?;
    if back.failed > 0 {
        out.errors.push(format!(
            "{} reconnects failed, e.g. {}",
            back.failed,
            back.errors.join("; ")
        ));
    }
    out.metric(
        "all reconnected",
        back.elapsed_ms.saturating_sub(down.as_millis() as u64) as f64,
        "ms",
    );
    ready_percentiles(&mut out, "reconnect → welcome", &back);
    // Then one message to every user: the storm is over when all arrived.
    load.pool.phase(0, count).await?;
    let plan = Drive {
        base_seq: 0,
        count,
        rate: 0.0,
        duration: None,
        in_flight: 256,
        pad: 0,
    };
    let sent = drive(publisher.clone(), plan, Dest::User).await;
    let reports = load.settle(env, sent.sent).await?;
    resources(&mut out, env, &meter);
    let merged = merge(&reports, count as usize, count);
    let audience = Audience {
        k: count,
        group_size: 0,
    };
    let last = account(&mut out, &sent, &merged, audience);
    out.metrics.retain(|m| m.name != "deliveries/s");
    let reconnect_start = t0 + down.as_micros() as u64;
    out.metric(
        "all receiving again",
        last.saturating_sub(reconnect_start) as f64 / 1000.0,
        "ms",
    );
    if let Some((client, before)) = info {
        let after = command_counts(&client).await?;
        let _ = client.quit().await;
        out.metric(
            "SUBSCRIBE commands",
            diff(&after, &before, &["subscribe", "ssubscribe", "psubscribe"]) as f64,
            "",
        );
        out.metric(
            "UNSUBSCRIBE commands",
            diff(
                &after,
                &before,
                &["unsubscribe", "sunsubscribe", "punsubscribe"],
            ) as f64,
            "",
        );
        // Every other command on that Redis (health probes of every client
        // of it included), less the messages themselves and the bench's INFO.
        let all = after.keys().map(String::as_str).collect::<Vec<_>>();
        let publish_family = ["publish", "spublish"];
        let subscribe_family = [
            "subscribe",
            "ssubscribe",
            "psubscribe",
            "unsubscribe",
            "sunsubscribe",
            "punsubscribe",
        ];
        let other = diff(&after, &before, &all)
            .saturating_sub(diff(&after, &before, &subscribe_family))
            .saturating_sub(diff(&after, &before, &publish_family))
            .saturating_sub(1);
        out.metric("other Redis commands", other as f64, "");
    }
    load.pool.close().await?;
    Ok(out)
}

// --------------------------------------------------------- publish-api

#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiOpts {
    /// Connected users (one connection each).
    pub(crate) users: u64,
    /// Distinct users named in each request's `to.users` (1 ..= users).
    pub(crate) users_per_publish: u64,
    pub(crate) in_flight: usize,
    pub(crate) duration: Duration,
}

pub(crate) async fn publish_api(env: &Env, o: ApiOpts) -> anyhow::Result<Outcome> {
    let ApiOpts {
        users,
        users_per_publish: n,
        in_flight,
        duration,
    } = o;
    if n == 0 || n > users {
        bail!("--users-per-publish must be between 1 and --users ({users}), not {n}");
    }
    if n > 1 && env.target != Target::Fanout {
        bail!(
            "--users-per-publish > 1 needs --target fanout (the peers take one user per request)"
        );
    }
    let each = if n == 1 {
        format!("each to one of {users} connected users")
    } else {
        format!("each to {n} of {users} connected users")
    };
    let mut out = Outcome::new(
        "publish-api",
        env.target.name(),
        format!(
            "{in_flight} requests in flight for {}s, {each}, {}",
            duration.as_secs(),
            env.nodes_desc()
        ),
    );
    let mut load = connect(env, users, 0).await?;
    let publisher = env.publisher(false).await?;
    let cap = 2_000_000;
    load.pool.phase(0, cap).await?;
    let meter = load.meter(env);
    let plan = Drive {
        base_seq: 0,
        count: cap,
        rate: 0.0,
        duration: Some(duration),
        in_flight,
        pad: 0,
    };
    // Request i starts at a user spread over the range by a prime stride;
    // with n > 1 it names the n users from there on (mod users).
    let sent = drive(publisher, plan, move |i| {
        let first = i.wrapping_mul(7919) % users;
        if n == 1 {
            Dest::User(first)
        } else {
            Dest::Users {
                first,
                n,
                of: users,
            }
        }
    })
    .await;
    let reports = load.settle(env, sent.sent * n).await?;
    resources(&mut out, env, &meter);
    out.metric(
        "requests/s",
        sent.sent as f64 / sent.elapsed.as_secs_f64(),
        "/s",
    );
    out.percentiles("request", &sent.request_latency, &[0.5, 0.99, 0.999]);
    let merged = merge(&reports, sent.send_times.len(), users);
    let audience = Audience {
        k: users,
        group_size: 0,
    };
    account(&mut out, &sent, &merged, audience);
    // Per delivery latency says little here; with several users per
    // request, "last delivery" (until the last of them had it) stays. With
    // one user per request, deliveries/s is requests/s again.
    out.metrics
        .retain(|m| !m.name.starts_with("latency ") && (n > 1 || m.name != "deliveries/s"));
    load.pool.close().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(dests: Vec<Dest>) -> Sent {
        Sent {
            sent: dests.len() as u64,
            failed: 0,
            errors: Vec::new(),
            send_times: vec![1; dests.len()],
            dests,
            request_latency: latency_hist(),
            elapsed: Duration::from_secs(1),
        }
    }

    fn merged(per_conn: Vec<(u64, u64)>) -> Merged {
        Merged {
            counts: Vec::new(),
            max_latency: Vec::new(),
            per_conn,
            latency: latency_hist(),
            stray: 0,
            closed: BTreeMap::new(),
        }
    }

    /// Message 0 to users 3, 0 (wrapping) of 4; message 1 to user 1. A
    /// client that got another client's message is caught even when every
    /// message was delivered as often as expected.
    #[test]
    fn clients_must_get_exactly_their_messages() {
        let audience = Audience {
            k: 4,
            group_size: 0,
        };
        let s = sent(vec![
            Dest::Users {
                first: 3,
                n: 2,
                of: 4,
            },
            Dest::User(1),
        ]);
        assert_eq!(audience.count(s.dests[0]), 2);
        let right = merged(vec![(1, 0), (1, 1), (0, 0), (1, 0)]);
        assert_eq!(clients_mismatched(&s, &right, audience), Some(vec![]));
        // User 2 got message 1 instead of user 1.
        let wrong = merged(vec![(1, 0), (0, 0), (1, 1), (1, 0)]);
        assert_eq!(clients_mismatched(&s, &wrong, audience), Some(vec![1, 2]));
        // User 0 got message 1 instead of message 0 (same count).
        let swapped = merged(vec![(1, 1), (1, 1), (0, 0), (1, 0)]);
        assert_eq!(clients_mismatched(&s, &swapped, audience), Some(vec![0]));
    }

    /// A loss names the message (where it went, when it was sent) and the
    /// clients that lack it, so a failed run says where to look.
    #[test]
    fn a_loss_names_the_message_and_the_client() {
        let audience = Audience {
            k: 4,
            group_size: 2,
        };
        let mut s = sent(vec![Dest::Group(0), Dest::User(3), Dest::Group(1)]);
        s.send_times = vec![1_000_000, 1_500_000, 3_250_000];
        let mut m = merged(vec![(1, 0), (1, 0), (0, 0), (2, 3)]);
        // Message 2 to g1 (users 2 and 3) reached only user 3.
        m.counts = vec![2, 1, 1];
        m.max_latency = vec![0; 3];
        let mut out = Outcome::new("t", "fanout", String::new());
        account(&mut out, &s, &m, audience);
        let a = out.accounting.expect("accounted");
        assert_eq!(a.missing, 1);
        assert_eq!(a.missing_messages.len(), 1);
        let lost = &a.missing_messages[0];
        assert_eq!((lost.seq, lost.expected, lost.delivered), (2, 2, 1));
        assert_eq!(lost.to, "Group(1)");
        assert!((lost.sent_at_s - 2.25).abs() < 1e-9, "{}", lost.sent_at_s);
        assert_eq!(a.clients_mismatched, Some(1));
        assert_eq!(a.mismatched_clients, vec![2]);
    }
}
