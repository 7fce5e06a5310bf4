//! `fanout-bench`: drives a fanout deployment (or a peer: the Socket.IO
//! server in `bench/peers/socketio/`, Sockudo or any Pusher-protocol server,
//! see `bench/peers/sockudo/`) over real WebSocket connections and reports
//! connections held, memory, CPU, fan-out throughput and latency.
//!
//! The coordinator (this process) publishes and measures; worker processes
//! (`fanout-bench worker`, one per 15,000 connections unless told
//! otherwise) hold the client connections, spread over loopback source
//! addresses, and count every delivery. See docs/benchmarks.md.
//!
//! # Layout
//! - `control`: the coordinator ↔ worker protocol (JSON lines).
//! - `worker`, `client`, `recorder`: the worker process, one connection,
//!   delivery accounting.
//! - `pusher`: the Pusher protocol's frames and handshake, and its signed
//!   HTTP API requests (`--target pusher`).
//! - `pool`: the coordinator's handle on its workers.
//! - `http`: keep-alive HTTP/1.1 connections on hyper's client.
//! - `publish`: HTTP and Redis publishers and the rate driver.
//! - `scenario`: idle, broadcast, steady, storm, publish-api.
//! - `rolling`, `resume`, `ledger`: the rolling-restart scenario, its
//!   resuming WebSocket and SSE clients, and what they keep and count.
//! - `deploy`, `suite`, `compare`: the default suite and the comparison
//!   with the peers (Socket.IO, Sockudo), which start their own Redis and
//!   nodes.
//! - `soak`, `trend`: the long run on its own two nodes (resuming clients
//!   reconnecting at a trickle) and its verdict on what keeps growing.
//! - `procstat`, `report`: /proc readings; tables and JSON.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod client;
mod compare;
mod control;
mod deploy;
mod http;
mod ledger;
mod pool;
mod procstat;
mod publish;
mod pusher;
mod recorder;
mod report;
mod resume;
mod rolling;
mod scenario;
mod soak;
mod stages;
mod suite;
mod trend;
mod worker;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    control::Target,
    report::{Outcome, table},
    scenario::{ApiOpts, BroadcastOpts, Env, SteadyOpts},
};

#[derive(Debug, Parser)]
#[command(
    name = "fanout-bench",
    version,
    about = "Load and measure a fanout deployment"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Open connections, wait, report server RSS and CPU per connection.
    Idle {
        #[command(flatten)]
        deployment: Deployment,
        /// Connections to open (users u0, u1, …).
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        /// Time to let the node settle after the last connection.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Idle time measured; make it longer than the heartbeat interval.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        window: Duration,
    },
    /// Publish messages to one group holding every connection (or to `all`).
    Broadcast {
        #[command(flatten)]
        deployment: Deployment,
        /// Connections, all in group g0 (users u0, u1, …).
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        /// Messages to publish.
        #[arg(long, default_value_t = 100)]
        messages: u64,
        /// Messages per second; 0 publishes back to back, with --in-flight
        /// requests outstanding (through Redis: pipelined batches).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Padding bytes added to each payload.
        #[arg(long, default_value_t = 40)]
        pad: usize,
        /// Publish to `all` instead of a group.
        #[arg(long)]
        all: bool,
        /// Publish requests in flight at once (several backends publishing);
        /// HTTP only.
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
    },
    /// Publish at a fixed rate to random users and groups; account for every message.
    Steady {
        #[command(flatten)]
        deployment: Deployment,
        /// Users, one connection each.
        #[arg(long, default_value_t = 1000)]
        users: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// How long to publish.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Percentage of messages sent to a group instead of a user.
        #[arg(long, default_value_t = 0)]
        group_percent: u8,
        /// Members per group (connection i is in group g<i/size>).
        #[arg(long, default_value_t = 100)]
        group_size: u64,
        /// Padding bytes added to each payload.
        #[arg(long, default_value_t = 40)]
        pad: usize,
        /// Seed of the random choice of users and groups.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Every client drops and reconnects at once; time until all receive again.
    Storm {
        #[command(flatten)]
        deployment: Deployment,
        /// Clients (users u0, u1, …).
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        /// Time the clients stay away (past the node's unsubscribe linger,
        /// 1 s by default, every channel is unsubscribed and subscribed again).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        down: Duration,
    },
    /// Publish API requests per second and their latency.
    PublishApi {
        #[command(flatten)]
        deployment: Deployment,
        /// Connected users the requests publish to.
        #[arg(long, default_value_t = 1000)]
        users: u64,
        /// Distinct connected users named in each request's `to.users`
        /// (each request causes this many deliveries; fanout only).
        #[arg(long, default_value_t = 1)]
        users_per_publish: u64,
        /// Requests in flight at once, each on its own keep-alive connection.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// How long to send requests.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Resuming clients (WebSocket and SSE) while every node is restarted in
    /// turn; accounts for every message as the application sees it.
    ///
    /// Restarting a node takes its pid (`--pid`, in `--node` order) and a
    /// shell command that starts it again on the same address
    /// (`--start-cmd`, same order): the bench sends SIGTERM, waits for the
    /// exit, runs the command and waits until the node answers. Without
    /// `--start-cmd` it publishes for `--duration` while you restart the
    /// nodes yourself. `suite --only rolling` starts its own nodes.
    Rolling {
        #[command(flatten)]
        deployment: Deployment,
        #[command(flatten)]
        rolling: RollingArgs,
        /// A shell command that starts node i again on the same address
        /// (repeat once per --node, in order; needs a --pid per node).
        #[arg(long = "start-cmd")]
        start_cmds: Vec<String>,
        /// Without --start-cmd: how long to publish while you restart nodes.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// The default suite (`make bench`): starts Redis and fanout nodes itself.
    Suite(suite::SuiteArgs),
    /// fanout, Socket.IO and Sockudo side by side on one Redis (`make bench-compare`).
    Compare(suite::SuiteArgs),
    /// A long run on two nodes it starts itself: steady publishing,
    /// clients reconnecting at a trickle; fails if a node's memory, open
    /// files, queued bytes or tasks keep growing, or a message is lost.
    /// An option given twice takes its last value, so `make soak-smoke
    /// SOAK_ARGS=...` can override the Makefile's own.
    #[command(args_override_self = true)]
    Soak(soak::SoakArgs),
    /// Internal: a worker process holding client connections.
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    /// POST /api/publish.
    Api,
    /// PUBLISH straight to Redis (no history kept).
    Redis,
    /// FCALL fanout_publish straight to Redis: history kept, as a node
    /// does for each publish.
    RedisFcall,
}

/// Where the deployment is and how to load it.
#[derive(Debug, Args)]
struct Deployment {
    /// Server to speak to.
    #[arg(long, value_enum, default_value = "fanout")]
    target: Target,
    /// A node's client/API address (repeat for several nodes).
    #[arg(long = "node", default_value = "127.0.0.1:8080")]
    nodes: Vec<SocketAddr>,
    /// A node's pid, to read its RSS and CPU from /proc (repeat).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// HS256 secret to mint client tokens with (fanout).
    #[arg(
        long,
        env = "FANOUT_JWT_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    jwt_secret: String,
    /// An API key for POST /api/publish (fanout).
    #[arg(
        long,
        env = "FANOUT_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    api_key: String,
    /// The Pusher app's id (`--target pusher`; default: the app of
    /// bench/peers/sockudo/sockudo.toml).
    #[arg(long, env = "PUSHER_APP_ID", default_value = pusher::APP_ID)]
    pusher_app_id: String,
    /// The Pusher app's key (clients connect to /app/<key>).
    #[arg(long, env = "PUSHER_APP_KEY", default_value = pusher::APP_KEY)]
    pusher_app_key: String,
    /// The Pusher app's secret (signs the publish requests).
    #[arg(
        long,
        env = "PUSHER_APP_SECRET",
        hide_env_values = true,
        default_value = pusher::APP_SECRET
    )]
    pusher_app_secret: String,
    /// Redis URL: for `--via redis` and for counting Redis commands in `storm`.
    #[arg(long)]
    redis: Option<String>,
    /// redis-server's pid, to report its CPU.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// The nodes' Redis channel prefix.
    #[arg(long, default_value = "fanout")]
    prefix: String,
    /// How the bench publishes: the HTTP API, or straight to Redis.
    #[arg(long, value_enum, default_value = "api")]
    via: Via,
    #[command(flatten)]
    load: LoadArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The `rolling` scenario's sizes and pacing.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct RollingArgs {
    /// Clients, each user u<i> in group g<i / group-size>.
    #[arg(long, default_value_t = 1000)]
    pub(crate) clients: u64,
    /// Share of clients on SSE (0.0–1.0); the others use WebSocket.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) sse_share: f64,
    /// Messages per second, through the HTTP API.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,
    /// Percentage of messages sent to a group instead of a user.
    #[arg(long, default_value_t = 50)]
    pub(crate) group_percent: u8,
    /// Members per group.
    #[arg(long, default_value_t = 100)]
    pub(crate) group_size: u64,
    /// Publishing before the first restart.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Publishing between one node being ready again and the next SIGTERM.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) gap: Duration,
    /// Publishing after the last restart.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) tail: Duration,
    /// Longest a client waits before reconnecting, whatever
    /// `retry_after_ms` asks.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) retry_cap: Duration,
    /// Longest a node may take to exit after SIGTERM.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// Padding bytes added to each payload.
    #[arg(long, default_value_t = 40)]
    pub(crate) pad: usize,
    /// Seed of the random choice of users and groups.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

impl RollingArgs {
    pub(crate) fn opts(&self, duration: Duration) -> rolling::RollingOpts {
        rolling::RollingOpts {
            clients: self.clients,
            sse_percent: (self.sse_share.clamp(0.0, 1.0) * 100.0).round() as u8,
            rate: self.rate,
            group_percent: self.group_percent.min(100),
            group_size: self.group_size,
            pad: self.pad,
            seed: self.seed,
            warmup: self.warmup,
            gap: self.gap,
            tail: self.tail,
            retry_cap: self.retry_cap,
            drain_timeout: self.drain_timeout,
            duration,
        }
    }
}

/// How the load generator spreads its connections.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct LoadArgs {
    /// Worker processes holding the connections (0: one per 15,000).
    #[arg(long, default_value_t = 0)]
    pub(crate) workers: usize,
    /// Loopback source addresses to connect from: 127.0.0.2 … 127.0.0.(1+N).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub(crate) sources: u8,
    /// Connections being opened at once (the storm reconnects all at once).
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Stop waiting for deliveries after this long without one.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) quiet: Duration,
}

impl Deployment {
    fn env(&self) -> anyhow::Result<Env> {
        if self.target == Target::Fanout && self.jwt_secret.is_empty() {
            anyhow::bail!(
                "--jwt-secret (or FANOUT_JWT_SECRET) is required to connect to fanout; \
                 `make run` prints the one it generated"
            );
        }
        if self.via != Via::Api && self.redis.is_none() {
            anyhow::bail!("--via redis and redis-fcall need --redis <url>");
        }
        Ok(Env {
            target: self.target,
            nodes: self.nodes.clone(),
            pids: self.pids.clone(),
            internal: Vec::new(),
            redis_pid: self.redis_pid,
            secret: self.jwt_secret.clone(),
            api_key: self.api_key.clone(),
            pusher: pusher::App {
                id: self.pusher_app_id.clone(),
                key: self.pusher_app_key.clone(),
                secret: self.pusher_app_secret.clone(),
            },
            redis: self.redis.clone(),
            prefix: self.prefix.clone(),
            via_redis: self.via != Via::Api,
            redis_fcall: self.via == Via::RedisFcall,
            broker: self.redis.is_some().then_some("Redis"),
            workers: self.load.workers,
            sources: self.load.sources,
            connect_concurrency: self.load.connect_concurrency,
            quiet: self.load.quiet,
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Hold as many sockets as the machine allows this process.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fanout-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    let (deployment, outcome) = match cmd {
        Cmd::Worker => {
            worker::run().await?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Suite(args) => return suite::suite(&args).await,
        Cmd::Compare(args) => return compare::compare(&args).await,
        Cmd::Soak(args) => return soak::soak(&args).await,
        Cmd::Idle {
            deployment,
            connections,
            settle,
            window,
        } => {
            let env = deployment.env()?;
            let out = scenario::idle(&env, connections, settle, window).await?;
            (deployment, out)
        }
        Cmd::Broadcast {
            deployment,
            connections,
            messages,
            rate,
            pad,
            all,
            in_flight,
        } => {
            let env = deployment.env()?;
            let opts = BroadcastOpts {
                connections,
                messages,
                rate,
                pad,
                to_all: all,
                in_flight,
            };
            (deployment, scenario::broadcast(&env, opts).await?)
        }
        Cmd::Steady {
            deployment,
            users,
            rate,
            duration,
            group_percent,
            group_size,
            pad,
            seed,
        } => {
            let env = deployment.env()?;
            let opts = SteadyOpts {
                users,
                rate,
                duration,
                group_percent: group_percent.min(100),
                group_size,
                pad,
                seed,
            };
            (deployment, scenario::steady(&env, opts).await?)
        }
        Cmd::Storm {
            deployment,
            connections,
            down,
        } => {
            let env = deployment.env()?;
            (deployment, scenario::storm(&env, connections, down).await?)
        }
        Cmd::Rolling {
            deployment,
            rolling,
            start_cmds,
            duration,
        } => {
            let env = deployment.env()?;
            let restarts = if start_cmds.is_empty() {
                rolling::Restarts::Manual
            } else {
                if start_cmds.len() != env.nodes.len() || env.pids.len() != env.nodes.len() {
                    anyhow::bail!(
                        "restarting needs one --pid and one --start-cmd per --node, in the same order"
                    );
                }
                rolling::Restarts::Commands(
                    env.nodes
                        .iter()
                        .zip(&env.pids)
                        .zip(start_cmds)
                        .map(|((addr, pid), start)| rolling::External {
                            addr: *addr,
                            pid: *pid,
                            start,
                        })
                        .collect(),
                )
            };
            let out = rolling::rolling(&env, rolling.opts(duration), restarts).await?;
            (deployment, out)
        }
        Cmd::PublishApi {
            deployment,
            users,
            users_per_publish,
            in_flight,
            duration,
        } => {
            let env = deployment.env()?;
            let opts = ApiOpts {
                users: users.max(1),
                users_per_publish,
                in_flight,
                duration,
            };
            (deployment, scenario::publish_api(&env, opts).await?)
        }
    };
    let outcomes = [outcome];
    print(&outcomes, deployment.json)?;
    Ok(if suite::failed(&outcomes) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn print(outcomes: &[Outcome], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(outcomes)?);
    } else {
        print!("{}", table(outcomes));
    }
    Ok(())
}

/// Paths the suites need.
pub(crate) fn default_socketio_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peers/socketio")
}

/// The committed configuration of the bench's Sockudo nodes.
pub(crate) fn default_sockudo_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peers/sockudo/sockudo.toml")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Cmd};

    /// `make soak-smoke SOAK_ARGS=...` appends to the Makefile's options:
    /// the last value of an option wins instead of being refused.
    #[test]
    fn a_soak_option_given_twice_takes_the_last_value() {
        let cli = Cli::try_parse_from(["fanout-bench", "soak", "--rate", "100", "--rate", "5"])
            .expect("a repeated option parses");
        let Cmd::Soak(args) = cli.command else {
            panic!("not the soak");
        };
        assert!(format!("{args:?}").contains("rate: 5.0"), "{args:?}");
    }
}
