//! `fanout-bench compare` (`make bench-compare`): fanout and its peers side
//! by side. One Redis; two nodes of each server on it (fanout, the
//! Socket.IO peer of `bench/peers/socketio/`, Sockudo of
//! `bench/peers/sockudo/`); every scenario on each in turn; the results,
//! then a table of fanout's figures over each peer's.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::{
    control::Target,
    deploy::{self, Node, find_bin},
    pusher,
    report::{Goal, Outcome, fmt_num},
    scenario::{self, ApiOpts, BroadcastOpts, SteadyOpts},
    suite::{MODERATE_RATE, SuiteArgs, attempt, failed, progress},
};

/// A server `compare` runs beside fanout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// socket.io 4.8 with @socket.io/redis-adapter (`bench/peers/socketio/`).
    Socketio,
    /// Sockudo (Pusher protocol) with its Redis adapter (`bench/peers/sockudo/`).
    Sockudo,
}

impl Peer {
    fn target(self) -> Target {
        match self {
            Self::Socketio => Target::Socketio,
            Self::Sockudo => Target::Pusher,
        }
    }
}

/// The name a target's results carry in the comparison: the server, not
/// the protocol.
fn label(target: Target) -> &'static str {
    match target {
        Target::Fanout => "fanout",
        Target::Socketio => "socketio",
        Target::Pusher => "sockudo",
    }
}

/// The column heading of a peer's results.
fn heading(peer: &str) -> &str {
    match peer {
        "socketio" => "socket.io",
        other => other,
    }
}

/// Which peers run: those asked for; by default Socket.IO, and Sockudo
/// when its binary is where it was asked to be or where
/// `bench/peers/sockudo/build.sh` puts it. A peer asked for by name (or a
/// `--sockudo-bin` given) that cannot run is an error, not a skip.
fn peers(args: &SuiteArgs) -> anyhow::Result<(Vec<Peer>, Option<PathBuf>, Vec<String>)> {
    let mut notes = Vec::new();
    let sockudo = args
        .sockudo_bin
        .clone()
        .or_else(deploy::default_sockudo_bin);
    let found = sockudo.as_deref().is_some_and(Path::is_file);
    let explicit = !args.peers.is_empty() || args.sockudo_bin.is_some();
    let peers = if args.peers.is_empty() {
        let mut p = vec![Peer::Socketio];
        if found || args.sockudo_bin.is_some() {
            p.push(Peer::Sockudo);
        } else {
            notes.push(format!(
                "Sockudo skipped: no binary at {} (bench/peers/sockudo/build.sh builds it, \
                 about 10 minutes; make bench-compare runs it)",
                sockudo.as_deref().map_or_else(
                    || "$HOME/.cache/fanout-peers".into(),
                    |p| p.display().to_string()
                )
            ));
        }
        p
    } else {
        args.peers.clone()
    };
    if peers.contains(&Peer::Sockudo) && !found && explicit {
        bail!(
            "no Sockudo binary at {}: run bench/peers/sockudo/build.sh (or give --sockudo-bin)",
            sockudo
                .as_deref()
                .map_or_else(|| "(no $HOME)".into(), |p| p.display().to_string())
        );
    }
    Ok((peers, sockudo, notes))
}

/// Starts two nodes of `peer` on the Redis at `url`.
async fn start(
    args: &SuiteArgs,
    peer: Peer,
    sockudo: Option<&Path>,
    url: &str,
) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::with_capacity(2);
    for i in 1..=2 {
        nodes.push(match peer {
            Peer::Socketio => {
                let dir = args
                    .socketio_dir
                    .clone()
                    .unwrap_or_else(crate::default_socketio_dir);
                deploy::socketio(&args.node_bin, &dir, &format!("sio{i}"), Some(url)).await?
            }
            Peer::Sockudo => {
                let bin = sockudo.context("no Sockudo binary")?;
                let config = args
                    .sockudo_config
                    .clone()
                    .unwrap_or_else(crate::default_sockudo_config);
                let id = format!("sockudo{i}");
                deploy::sockudo(bin, &config, &id, url, pusher::APP_ID).await?
            }
        });
    }
    Ok(nodes)
}

pub(crate) async fn compare(args: &SuiteArgs) -> anyhow::Result<ExitCode> {
    const SCENARIOS: [&str; 6] = [
        "idle",
        "broadcast",
        "broadcast-moderate",
        "steady",
        "storm",
        "publish-api",
    ];
    args.check_only(&SCENARIOS)?;
    let quick = args.quick;
    let (peers, sockudo, notes) = peers(args)?;
    for n in &notes {
        eprintln!("fanout-bench: {n}");
    }
    let redis = args.redis()?;
    let url = redis.url();
    let fanout_bin = find_bin(args.fanout_bin.as_deref(), "fanout");
    let mut deployments = Vec::new();
    let mut fanout_nodes = Vec::new();
    for i in 1..=2 {
        let id = format!("bench{i}");
        fanout_nodes.push(deploy::fanout(&fanout_bin, &id, Some(&url), &[]).await?);
    }
    deployments.push((Target::Fanout, fanout_nodes));
    for peer in peers {
        let nodes = start(args, peer, sockudo.as_deref(), &url).await?;
        deployments.push((peer.target(), nodes));
    }
    let envs: Vec<_> = deployments
        .iter()
        .map(|(target, nodes)| args.env(*target, nodes, Some(&redis)))
        .collect();
    let (idle, settle, window) = if quick {
        (200, Duration::from_millis(500), Duration::from_secs(1))
    } else {
        (10_000, Duration::from_secs(5), Duration::from_secs(30))
    };
    let broadcast = BroadcastOpts {
        connections: if quick { 200 } else { 5_000 },
        messages: if quick { 10 } else { 100 },
        rate: 0.0,
        pad: 40,
        to_all: false,
        in_flight: 4,
    };
    // Issue 13's table: 2,500 clients per node, 20 broadcasts/s.
    let moderate = BroadcastOpts {
        connections: if quick { 200 } else { 5_000 },
        messages: if quick { 20 } else { 200 },
        rate: MODERATE_RATE,
        ..broadcast
    };
    let steady = SteadyOpts {
        users: if quick { 200 } else { 5_000 },
        rate: if quick { 200.0 } else { 2_000.0 },
        duration: Duration::from_secs(if quick { 2 } else { 10 }),
        group_percent: 10,
        group_size: 50,
        pad: 40,
        seed: 1,
    };
    let (storm, down) = if quick {
        (200, Duration::from_millis(1500))
    } else {
        (5_000, Duration::from_secs(2))
    };
    let api = ApiOpts {
        users: if quick { 100 } else { 1_000 },
        users_per_publish: 1,
        in_flight: if quick { 8 } else { 32 },
        duration: Duration::from_secs(if quick { 2 } else { 10 }),
    };

    let mut out = Vec::new();
    for name in SCENARIOS {
        if !args.wants(name) {
            continue;
        }
        for env in &envs {
            progress(&format!("{name} on {}", label(env.target)));
            let mut o = match name {
                "idle" => {
                    attempt(name, env.target, scenario::idle(env, idle, settle, window)).await
                }
                "broadcast" => attempt(name, env.target, scenario::broadcast(env, broadcast)).await,
                "broadcast-moderate" => {
                    let mut o = attempt(name, env.target, scenario::broadcast(env, moderate)).await;
                    o.scenario = name;
                    o
                }
                "steady" => attempt(name, env.target, scenario::steady(env, steady)).await,
                "storm" => attempt(name, env.target, scenario::storm(env, storm, down)).await,
                _ => attempt("publish-api", env.target, scenario::publish_api(env, api)).await,
            };
            o.target = label(env.target);
            out.push(o);
            // Let the nodes finish what the run left behind (unsubscribing
            // after the linger) before the next run measures Redis.
            tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 2 })).await;
        }
    }

    let ratios = ratios(&out, !quick);
    if args.json {
        let json = serde_json::json!({ "results": out, "ratios": ratios, "notes": notes });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        crate::print(&out, false)?;
        println!();
        print!("{}", ratio_table(&ratios));
        for n in &notes {
            println!("{n}");
        }
    }
    drop(deployments);
    Ok(if failed(&out) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One cell of the comparison: fanout's value of a metric over one peer's.
#[derive(Debug, Serialize)]
struct Ratio {
    scenario: &'static str,
    metric: String,
    unit: &'static str,
    fanout: f64,
    /// The peer (`socketio`, `sockudo`) and its value.
    peer: &'static str,
    value: f64,
    /// fanout ÷ the peer.
    ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    goal: Option<Goal>,
}

/// The bound fanout's figure should keep to a peer's (docs/benchmarks.md,
/// section 6; issue 13 for Sockudo's).
fn goal(scenario: &str, metric: &str, peer: &str) -> Option<Goal> {
    match (scenario, metric, peer) {
        ("broadcast", "deliveries/s", "socketio") => Some(Goal::AtLeast(5.0)),
        ("broadcast", "deliveries/s", "sockudo") => Some(Goal::AtLeast(4.0)),
        ("broadcast", "latency p99", "socketio") => Some(Goal::AtMost(1.0)),
        ("broadcast-moderate", "latency p99", "sockudo") => Some(Goal::AtMost(0.6)),
        (_, "server RSS per connection", "socketio") => Some(Goal::AtMost(0.5)),
        _ => None,
    }
}

fn ratios(out: &[Outcome], goals: bool) -> Vec<Ratio> {
    let mut ratios = Vec::new();
    for f in out.iter().filter(|o| o.target == "fanout") {
        for p in out
            .iter()
            .filter(|o| o.target != "fanout" && o.scenario == f.scenario)
        {
            for m in &f.metrics {
                let Some(theirs) = p.get(&m.name) else {
                    continue;
                };
                ratios.push(Ratio {
                    scenario: f.scenario,
                    metric: m.name.clone(),
                    unit: m.unit,
                    fanout: m.value,
                    peer: p.target,
                    value: theirs,
                    ratio: if theirs == 0.0 {
                        f64::NAN
                    } else {
                        m.value / theirs
                    },
                    goal: goal(f.scenario, &m.name, p.target).filter(|_| goals),
                });
            }
        }
    }
    ratios
}

/// One row per scenario and metric: fanout, then each peer's value and
/// fanout ÷ it, then the goals.
fn ratio_table(ratios: &[Ratio]) -> String {
    let mut peers: Vec<&'static str> = Vec::new();
    let mut keys: Vec<(&'static str, &str)> = Vec::new();
    for r in ratios {
        if !peers.contains(&r.peer) {
            peers.push(r.peer);
        }
        if !keys.contains(&(r.scenario, r.metric.as_str())) {
            keys.push((r.scenario, r.metric.as_str()));
        }
    }
    let mut header = vec!["scenario".to_owned(), "metric".into(), "fanout".into()];
    for p in &peers {
        header.push(heading(p).to_owned());
        header.push(format!("fanout ÷ {}", heading(p)));
    }
    header.push("goal".into());
    let mut rows = vec![header];
    for (scenario, metric) in keys {
        let cells: Vec<&Ratio> = ratios
            .iter()
            .filter(|r| r.scenario == scenario && r.metric == metric)
            .collect();
        let Some(first) = cells.first() else {
            continue;
        };
        let mut row = vec![
            scenario.to_owned(),
            metric.to_owned(),
            format!("{} {}", fmt_num(first.fanout), first.unit),
        ];
        let mut goals = Vec::new();
        for p in &peers {
            match cells.iter().find(|r| r.peer == *p) {
                Some(r) => {
                    row.push(format!("{} {}", fmt_num(r.value), r.unit));
                    row.push(if r.ratio.is_finite() {
                        format!("{:.2}", r.ratio)
                    } else {
                        "n/a".into()
                    });
                    if let Some(g) = r.goal {
                        let (text, met) = match g {
                            Goal::AtLeast(b) => (format!("≥ {b}×"), r.ratio >= b),
                            Goal::AtMost(b) => (format!("≤ {b}×"), r.ratio <= b),
                        };
                        let verdict = if met { "ok" } else { "MISSED" };
                        goals.push(if peers.len() > 1 {
                            format!("{} {text} {verdict}", heading(p))
                        } else {
                            format!("{text} {verdict}")
                        });
                    }
                }
                None => {
                    row.push(String::new());
                    row.push(String::new());
                }
            }
        }
        row.push(goals.join("; "));
        rows.push(row);
    }
    let mut widths = vec![0usize; rows[0].len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.push_str(cells.join(" | ").trim_end());
        s.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            s.push_str(&rule.join("-|-"));
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench looks for the Sockudo the build script installs.
    #[test]
    fn the_build_script_installs_the_version_the_bench_looks_for() {
        let script = include_str!("../../peers/sockudo/build.sh");
        let line = format!("\nVERSION={}\n", deploy::SOCKUDO_VERSION);
        assert!(script.contains(&line), "build.sh does not say{line}");
    }

    fn outcome(target: &'static str, deliveries: f64, p99: f64) -> Outcome {
        let mut o = Outcome::new("broadcast", target, String::new());
        o.metric("deliveries/s", deliveries, "/s");
        o.metric("latency p99", p99, "ms");
        o
    }

    /// Each peer gets its own value, ratio and goal, side by side in one
    /// row per metric.
    #[test]
    fn the_table_puts_every_peer_beside_fanout() {
        let out = [
            outcome("fanout", 800_000.0, 40.0),
            outcome("socketio", 100_000.0, 200.0),
            outcome("sockudo", 250_000.0, 50.0),
        ];
        let ratios = ratios(&out, true);
        assert_eq!(ratios.len(), 4);
        let sockudo = ratios
            .iter()
            .find(|r| r.peer == "sockudo" && r.metric == "deliveries/s")
            .unwrap();
        assert_eq!(sockudo.ratio, 3.2);
        let table = ratio_table(&ratios);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("fanout ÷ socket.io") && lines[0].contains("fanout ÷ sockudo"));
        assert!(
            lines[2].contains("8.00") && lines[2].contains("3.20"),
            "{table}"
        );
        assert!(
            lines[2].contains("socket.io ≥ 5× ok") && lines[2].contains("sockudo ≥ 4× MISSED"),
            "{table}"
        );
    }
}
