//! `fanout-bench suite` (`make bench`): start a Redis and the nodes each
//! scenario needs, run the scenarios sized for a 2-core machine, print one
//! table. Its options serve `compare` (`make bench-compare`) too.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use fanout_testkit::RedisServer;

use crate::{
    LoadArgs,
    compare::Peer,
    control::Target,
    deploy::{self, API_KEY, Node, SECRET, find_bin},
    pusher,
    report::{Goal, Outcome},
    rolling::{self, Restarts, RollingOpts},
    scenario::{self, ApiOpts, BroadcastOpts, Env, SteadyOpts},
};

#[derive(Debug, Args)]
pub(crate) struct SuiteArgs {
    /// Small sizes and short windows: proves every scenario works (CI's smoke run).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Run only these scenarios (comma-separated names from the table's
    /// first column, e.g. `broadcast,storm`; both also know
    /// `broadcast-moderate`; suite also `broadcast-paced`, `broadcast-redis`,
    /// `publish-api-1000`, `steady-history` (history on and off) and
    /// `steady-history-on`/`-off`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The fanout binary (default: next to fanout-bench, else on PATH).
    #[arg(long)]
    pub(crate) fanout_bin: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, env = "REDIS_SERVER_BIN")]
    redis_server_bin: Option<PathBuf>,
    /// The Node.js binary for the Socket.IO peer.
    #[arg(long, default_value = "node")]
    pub(crate) node_bin: PathBuf,
    /// The Socket.IO peer's directory (default: bench/peers/socketio of this source tree).
    #[arg(long)]
    pub(crate) socketio_dir: Option<PathBuf>,
    /// compare: the peers beside fanout (default: socketio, and sockudo
    /// when its binary is found).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) peers: Vec<Peer>,
    /// compare: the Sockudo binary (default: where
    /// bench/peers/sockudo/build.sh installs it,
    /// ${FANOUT_PEER_CACHE:-$HOME/.cache/fanout-peers}/sockudo-<version>/bin).
    #[arg(long, env = "SOCKUDO_BIN")]
    pub(crate) sockudo_bin: Option<PathBuf>,
    /// compare: Sockudo's configuration (default: bench/peers/sockudo/sockudo.toml).
    #[arg(long)]
    pub(crate) sockudo_config: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A deployment started for one or more scenarios; dropped, it stops.
struct Deployed {
    _redis: Option<RedisServer>,
    nodes: Vec<Node>,
    env: Env,
}

impl SuiteArgs {
    /// Refuses `--only` names this command does not know.
    pub(crate) fn check_only(&self, known: &[&str]) -> anyhow::Result<()> {
        for name in &self.only {
            if !known.contains(&name.as_str()) {
                anyhow::bail!(
                    "--only: unknown scenario `{name}` (known: {})",
                    known.join(", ")
                );
            }
        }
        Ok(())
    }

    pub(crate) fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    pub(crate) fn env(&self, target: Target, nodes: &[Node], redis: Option<&RedisServer>) -> Env {
        Env {
            target,
            nodes: nodes.iter().map(|n| n.addr).collect(),
            pids: nodes.iter().map(|n| n.proc_.pid()).collect(),
            internal: nodes.iter().filter_map(Node::internal).collect(),
            redis_pid: redis.and_then(RedisServer::pid),
            secret: SECRET.into(),
            api_key: API_KEY.into(),
            pusher: pusher::App::default(),
            redis: redis.map(RedisServer::url),
            prefix: "fanout".into(),
            via_redis: false,
            redis_fcall: false,
            broker: Some(if redis.is_some() {
                "Redis"
            } else {
                "memory broker"
            }),
            workers: self.load.workers,
            sources: self.load.sources,
            connect_concurrency: self.load.connect_concurrency,
            quiet: self.load.quiet,
        }
    }

    pub(crate) fn redis(&self) -> anyhow::Result<RedisServer> {
        deploy::redis(&find_bin(self.redis_server_bin.as_deref(), "redis-server"))
    }

    /// `n` fanout nodes, on Redis or (one node) the memory broker, with
    /// `node_args` added to each node's command line.
    async fn fanout(
        &self,
        n: usize,
        with_redis: bool,
        node_args: &[&str],
    ) -> anyhow::Result<Deployed> {
        let redis = if with_redis {
            Some(self.redis()?)
        } else {
            None
        };
        let bin = find_bin(self.fanout_bin.as_deref(), "fanout");
        let url = redis.as_ref().map(RedisServer::url);
        let extra: Vec<String> = node_args.iter().map(|a| (*a).to_owned()).collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let id = format!("bench{i}");
            nodes.push(deploy::fanout(&bin, &id, url.as_deref(), &extra).await?);
        }
        let env = self.env(Target::Fanout, &nodes, redis.as_ref());
        Ok(Deployed {
            _redis: redis,
            nodes,
            env,
        })
    }
}

/// Broadcasts per second of `broadcast-moderate` (suite and compare).
pub(crate) const MODERATE_RATE: f64 = 20.0;

/// Sizes of one run of the suite.
struct Sizes {
    idle: u64,
    settle: Duration,
    window: Duration,
    broadcast: u64,
    burst: u64,
    paced_rate: f64,
    paced: u64,
    redis_per_node: u64,
    redis_burst: u64,
    /// broadcast-moderate: clients per node, messages (at 20/s).
    moderate_per_node: u64,
    moderate: u64,
    steady_users: u64,
    steady_rate: f64,
    steady_for: Duration,
    storm: u64,
    storm_down: Duration,
    api_users: u64,
    api_in_flight: usize,
    api_for: Duration,
    /// publish-api-1000: clients (on two nodes), users per request,
    /// requests in flight.
    many_users: u64,
    many_per_publish: u64,
    many_in_flight: usize,
    /// steady with history on and off: users, rate.
    history_users: u64,
    history_rate: f64,
    /// rolling: nodes, their drain window, the scenario's options.
    rolling_nodes: usize,
    rolling_drain: &'static str,
    rolling: RollingOpts,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                idle: 200,
                settle: Duration::from_millis(500),
                window: Duration::from_secs(1),
                broadcast: 200,
                burst: 20,
                paced_rate: 20.0,
                paced: 10,
                redis_per_node: 100,
                redis_burst: 20,
                moderate_per_node: 100,
                moderate: 20,
                steady_users: 300,
                steady_rate: 300.0,
                steady_for: Duration::from_secs(2),
                storm: 300,
                storm_down: Duration::from_millis(1500),
                api_users: 100,
                api_in_flight: 8,
                api_for: Duration::from_secs(2),
                many_users: 200,
                many_per_publish: 50,
                many_in_flight: 4,
                history_users: 300,
                history_rate: 300.0,
                rolling_nodes: 2,
                rolling_drain: "1s",
                rolling: RollingOpts {
                    clients: 300,
                    sse_percent: 20,
                    rate: 200.0,
                    group_percent: 50,
                    group_size: 50,
                    pad: 40,
                    seed: 1,
                    warmup: Duration::from_secs(1),
                    gap: Duration::from_millis(500),
                    tail: Duration::from_secs(1),
                    retry_cap: Duration::from_secs(1),
                    drain_timeout: Duration::from_secs(30),
                    duration: Duration::ZERO,
                },
            }
        } else {
            Self {
                idle: 15_000,
                settle: Duration::from_secs(5),
                window: Duration::from_secs(30),
                broadcast: 10_000,
                burst: 300,
                paced_rate: 25.0,
                paced: 200,
                redis_per_node: 5_000,
                redis_burst: 200,
                moderate_per_node: 2_500,
                moderate: 200,
                steady_users: 15_000,
                steady_rate: 30_000.0,
                steady_for: Duration::from_secs(10),
                storm: 15_000,
                storm_down: Duration::from_secs(2),
                api_users: 1_000,
                api_in_flight: 32,
                api_for: Duration::from_secs(10),
                many_users: 4_000,
                many_per_publish: 1_000,
                many_in_flight: 16,
                history_users: 15_000,
                history_rate: 20_000.0,
                rolling_nodes: 3,
                rolling_drain: "2s",
                rolling: RollingOpts {
                    clients: 6_000,
                    sse_percent: 20,
                    rate: 1_000.0,
                    group_percent: 50,
                    group_size: 100,
                    pad: 40,
                    seed: 1,
                    warmup: Duration::from_secs(3),
                    gap: Duration::from_secs(2),
                    tail: Duration::from_secs(3),
                    retry_cap: Duration::from_secs(2),
                    drain_timeout: Duration::from_secs(60),
                    duration: Duration::ZERO,
                },
            }
        }
    }
}

pub(crate) fn progress(step: &str) {
    eprintln!("fanout-bench: {step} …");
}

/// Between scenarios: the previous deployment's processes are gone, but the
/// kernel is still tearing down its thousands of sockets; measuring now
/// would measure that too.
async fn pause(quick: bool) {
    tokio::time::sleep(Duration::from_millis(if quick { 300 } else { 3000 })).await;
}

/// Runs one scenario; a failure becomes an outcome holding the error.
pub(crate) async fn attempt(
    scenario: &'static str,
    target: Target,
    run: impl Future<Output = anyhow::Result<Outcome>>,
) -> Outcome {
    match run.await {
        Ok(o) => o,
        Err(e) => {
            let mut o = Outcome::new(scenario, target.name(), "failed".into());
            o.errors.push(format!("{e:#}"));
            o
        }
    }
}

pub(crate) fn failed(outcomes: &[Outcome]) -> bool {
    outcomes.iter().any(|o| {
        !o.errors.is_empty()
            || o.accounting.as_ref().is_some_and(|a| {
                a.missing > 0 || a.duplicated > 0 || a.clients_mismatched.is_some_and(|n| n > 0)
            })
    })
}

/// What one run of the suite needs: a deployment, a scenario, its goals.
struct Step {
    /// The name `--only` selects it by (besides `also`).
    name: &'static str,
    also: &'static str,
    label: &'static str,
    nodes: usize,
    redis: bool,
    via_redis: bool,
    /// Through Redis with `FCALL fanout_publish` instead of `PUBLISH`.
    redis_fcall: bool,
    /// Added to every node's command line.
    node_args: Vec<&'static str>,
    run: Run,
    goals: &'static [(&'static str, Goal)],
}

enum Run {
    Idle,
    Broadcast(BroadcastOpts),
    Steady(SteadyOpts),
    Storm,
    PublishApi(ApiOpts),
    Rolling(RollingOpts),
}

fn steps(s: &Sizes, quick: bool) -> Vec<Step> {
    let broadcast = |connections, messages, rate| BroadcastOpts {
        connections,
        messages,
        rate,
        pad: 40,
        to_all: false,
        in_flight: 4,
    };
    let history_steady = SteadyOpts {
        users: s.history_users,
        rate: s.history_rate,
        duration: s.steady_for,
        group_percent: if quick { 20 } else { 0 },
        group_size: 100,
        pad: 40,
        seed: 1,
    };
    vec![
        Step {
            name: "idle",
            also: "idle",
            label: "idle",
            nodes: 1,
            redis: false,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Idle,
            goals: &[
                ("server RSS per connection", Goal::AtMost(5.0)),
                ("server CPU per connection", Goal::AtMost(2.0)),
            ],
        },
        Step {
            name: "broadcast",
            also: "broadcast",
            label: "broadcast, back to back",
            nodes: 1,
            redis: false,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Broadcast(broadcast(s.broadcast, s.burst, 0.0)),
            goals: &[("deliveries/s", Goal::AtLeast(1_000_000.0))],
        },
        Step {
            name: "broadcast",
            also: "broadcast-paced",
            label: "broadcast, paced",
            nodes: 1,
            redis: false,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Broadcast(broadcast(s.broadcast, s.paced, s.paced_rate)),
            goals: &[("latency p99", Goal::AtMost(50.0))],
        },
        Step {
            name: "broadcast",
            also: "broadcast-redis",
            label: "broadcast through Redis",
            nodes: 2,
            redis: true,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Broadcast(broadcast(2 * s.redis_per_node, s.redis_burst, 0.0)),
            goals: &[("deliveries/s", Goal::AtLeast(500_000.0))],
        },
        // Issue 13's comparison load: a fifth of the nodes' capacity, where
        // the tail (not the throughput) is what users feel.
        Step {
            name: "broadcast",
            also: "broadcast-moderate",
            label: "broadcast through Redis, moderate rate",
            nodes: 2,
            redis: true,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Broadcast(broadcast(
                2 * s.moderate_per_node,
                s.moderate,
                MODERATE_RATE,
            )),
            goals: &[
                ("latency p99", Goal::AtMost(60.0)),
                ("last delivery p99", Goal::AtMost(60.0)),
            ],
        },
        Step {
            name: "steady",
            also: "steady",
            label: "steady",
            nodes: 1,
            redis: true,
            via_redis: true,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Steady(SteadyOpts {
                users: s.steady_users,
                rate: s.steady_rate,
                duration: s.steady_for,
                group_percent: if quick { 20 } else { 0 },
                group_size: 100,
                pad: 40,
                seed: 1,
            }),
            goals: &[
                ("messages/s", Goal::AtLeast(30_000.0 * 0.99)),
                ("latency p99", Goal::AtMost(20.0)),
            ],
        },
        Step {
            name: "storm",
            also: "storm",
            label: "storm",
            nodes: 1,
            redis: true,
            via_redis: true,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::Storm,
            goals: &[
                ("all receiving again", Goal::AtMost(5000.0)),
                ("SUBSCRIBE commands", Goal::AtMost(100.0)),
            ],
        },
        Step {
            name: "publish-api",
            also: "publish-api",
            label: "publish-api",
            nodes: 1,
            redis: false,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::PublishApi(ApiOpts {
                users: s.api_users,
                users_per_publish: 1,
                in_flight: s.api_in_flight,
                duration: s.api_for,
            }),
            goals: &[
                ("requests/s", Goal::AtLeast(20_000.0)),
                ("request p99", Goal::AtMost(10.0)),
            ],
        },
        // Many targets per request, through the HTTP API of nodes on
        // Redis: what a node does per target (one Redis round trip each,
        // in turn or at once) shows in requests/s and request p99.
        Step {
            name: "publish-api",
            also: "publish-api-1000",
            label: "publish-api, 1,000 users per request",
            nodes: 2,
            redis: true,
            via_redis: false,
            redis_fcall: false,
            node_args: Vec::new(),
            run: Run::PublishApi(ApiOpts {
                users: s.many_users,
                users_per_publish: s.many_per_publish,
                in_flight: s.many_in_flight,
                duration: s.api_for,
            }),
            goals: &[],
        },
        // The same steady load through Redis with history on (every
        // message an FCALL fanout_publish, as a node's publish is) and off
        // (PUBLISH; the nodes keep no history).
        Step {
            name: "steady-history",
            also: "steady-history-on",
            label: "steady through Redis, history on",
            nodes: 1,
            redis: true,
            via_redis: true,
            redis_fcall: true,
            node_args: vec!["--history", "true"],
            run: Run::Steady(history_steady),
            goals: &[
                ("messages/s", Goal::AtLeast(20_000.0 * 0.99)),
                ("latency p99", Goal::AtMost(20.0)),
            ],
        },
        Step {
            name: "steady-history",
            also: "steady-history-off",
            label: "steady through Redis, history off",
            nodes: 1,
            redis: true,
            via_redis: true,
            redis_fcall: false,
            node_args: vec!["--history", "false"],
            run: Run::Steady(history_steady),
            goals: &[
                ("messages/s", Goal::AtLeast(20_000.0 * 0.99)),
                ("latency p99", Goal::AtMost(20.0)),
            ],
        },
        Step {
            name: "rolling",
            also: "rolling",
            label: "rolling restart with resuming clients",
            nodes: s.rolling_nodes,
            redis: true,
            via_redis: false,
            redis_fcall: false,
            node_args: vec!["--drain-window", s.rolling_drain, "--history", "true"],
            run: Run::Rolling(s.rolling),
            goals: &[
                ("clients with recovered: false", Goal::AtMost(0.0)),
                ("raw duplicates (before de-dup)", Goal::AtMost(0.0)),
            ],
        },
    ]
}

pub(crate) async fn suite(args: &SuiteArgs) -> anyhow::Result<ExitCode> {
    args.check_only(&[
        "idle",
        "broadcast",
        "broadcast-paced",
        "broadcast-redis",
        "broadcast-moderate",
        "steady",
        "storm",
        "publish-api",
        "publish-api-1000",
        "steady-history",
        "steady-history-on",
        "steady-history-off",
        "rolling",
    ])?;
    let s = Sizes::new(args.quick);
    let mut out = Vec::new();
    for step in steps(&s, args.quick) {
        if !args.wants(step.name) && !args.wants(step.also) {
            continue;
        }
        progress(step.label);
        // Each run gets a fresh deployment, stopped (dropped) after it.
        let mut d = args.fanout(step.nodes, step.redis, &step.node_args).await?;
        d.env.via_redis = step.via_redis;
        d.env.redis_fcall = step.redis_fcall;
        let env = &d.env;
        let name = step.name;
        let mut o = match step.run {
            Run::Idle => {
                attempt(
                    name,
                    Target::Fanout,
                    scenario::idle(env, s.idle, s.settle, s.window),
                )
                .await
            }
            Run::Broadcast(opts) => {
                attempt(name, Target::Fanout, scenario::broadcast(env, opts)).await
            }
            Run::Steady(opts) => attempt(name, Target::Fanout, scenario::steady(env, opts)).await,
            Run::Storm => {
                attempt(
                    name,
                    Target::Fanout,
                    scenario::storm(env, s.storm, s.storm_down),
                )
                .await
            }
            Run::PublishApi(opts) => {
                attempt(name, Target::Fanout, scenario::publish_api(env, opts)).await
            }
            Run::Rolling(opts) => {
                let restarts = Restarts::Suite(&mut d.nodes);
                attempt(name, Target::Fanout, rolling::rolling(env, opts, restarts)).await
            }
        };
        if !step.node_args.is_empty() {
            o.setup
                .push_str(&format!(", nodes with {}", step.node_args.join(" ")));
        }
        if !args.quick {
            for (metric, goal) in step.goals {
                o.goal(metric, *goal);
            }
        }
        out.push(o);
        drop(d);
        pause(args.quick).await;
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "results": out }))?
        );
    } else {
        crate::print(&out, false)?;
    }
    Ok(if failed(&out) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
