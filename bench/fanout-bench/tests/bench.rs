//! CI's smoke run of `fanout-bench`: every scenario of the suite, and the
//! side-by-side comparison with the Socket.IO peer, at small sizes. They
//! prove the tool works end to end (real nodes, a real redis-server, real
//! worker processes and WebSocket clients) and that every message is
//! accounted for; they check no speed: numbers on a shared CI machine mean
//! nothing, and the targets live in docs/benchmarks.md.
//!
//! The nodes are the server package's `fanout` binary. Cargo gives a test
//! only the binaries of its own package (`CARGO_BIN_EXE_*`), and a
//! dependency on the `fanout` package would build its library, not its
//! binary; so the test looks for `fanout` next to `fanout-bench` in the
//! target directory, where `cargo test --workspace` and `cargo nextest run
//! --workspace` put it (they build the binaries of every package with
//! integration tests, the server's included). `FANOUT_BIN` overrides the
//! path; `cargo test -p fanout-bench` alone needs `cargo build -p fanout`
//! first.

mod support;

use std::{path::Path, process::Command};

use serde_json::Value;
use support::{
    assert_accounted, assert_compared_with, bench, fanout_bin, json_of, metric, redis_available,
};

/// Runs `fanout-bench <args> --quick --json`; returns its exit success and JSON.
fn run_quick(args: &[&str]) -> (bool, Value) {
    let out = bench()
        .args(args)
        .args(["--quick", "--json", "--fanout-bin"])
        .arg(fanout_bin())
        .arg("--redis-server-bin")
        .arg(fanout_testkit::server_bin())
        .output()
        .expect("fanout-bench runs");
    (out.status.success(), json_of(&out))
}

#[test]
fn the_suite_runs_every_scenario_and_accounts_for_every_message() {
    if !redis_available() {
        return;
    }
    // Two worker processes, so the split of connections between them is
    // exercised too.
    let (ok, json) = run_quick(&["suite", "--workers", "2"]);
    let results = json["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|o| o["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "idle",
            "broadcast",
            "broadcast",
            "broadcast",
            "broadcast",
            "steady",
            "storm",
            "publish-api",
            "publish-api",
            "steady",
            "steady",
            "rolling"
        ],
        "{json:#}"
    );
    // Broadcast runs carry the nodes' own account, scraped from their
    // /metrics: the message's stages and how busy their workers were.
    for o in results.iter().filter(|o| o["scenario"] == "broadcast") {
        let written = metric(o, "node: last write p50");
        assert!(written > 0.0, "{o:#}");
        assert!(metric(o, "node: last write p99") >= written, "{o:#}");
        assert!(metric(o, "node: workers busy") > 0.0, "{o:#}");
    }
    for o in results {
        if o["scenario"] != "rolling" {
            assert_eq!(o["closed_by_server"], serde_json::json!({}), "{o:#}");
        }
        if o["scenario"] == "idle" {
            assert_eq!(o["errors"], serde_json::json!([]), "{o:#}");
            assert_eq!(metric(o, "open at end"), 200.0);
            assert!(metric(o, "server RSS per connection") > 0.0, "{o:#}");
        } else {
            assert_accounted(o);
        }
    }
    // The storm stays away past the unsubscribe linger: the node
    // unsubscribed and subscribed again, and the tool counted it.
    let find = |scenario: &str, setup: &str| {
        results
            .iter()
            .find(|o| o["scenario"] == scenario && o["setup"].as_str().unwrap().contains(setup))
            .unwrap_or_else(|| panic!("no {scenario} run with {setup:?}: {json:#}"))
    };
    let storm = find("storm", "");
    assert!(metric(storm, "SUBSCRIBE commands") >= 1.0, "{storm:#}");
    assert!(metric(storm, "UNSUBSCRIBE commands") >= 1.0, "{storm:#}");
    // Many users per request, through two nodes on Redis: each request was
    // delivered to all 50 of its users.
    let many = find("publish-api", "each to 50 of 200");
    let setup = many["setup"].as_str().unwrap();
    assert!(
        setup.contains("each to 50 of 200") && setup.contains("2 nodes, Redis"),
        "{many:#}"
    );
    let a = &many["accounting"];
    assert_eq!(
        a["expected"].as_u64(),
        a["sent"].as_u64().map(|s| s * 50),
        "{many:#}"
    );
    assert!(metric(many, "requests/s") > 0.0, "{many:#}");
    // Steady through Redis with history on (FCALL fanout_publish) and off.
    for (history, via) in [
        ("--history true", "FCALL fanout_publish"),
        ("--history false", "Redis PUBLISH"),
    ] {
        let o = find("steady", history);
        assert!(o["setup"].as_str().unwrap().contains(via), "{o:#}");
    }
    assert_rolling(find("rolling", ""), 300, 2);
    assert!(ok, "fanout-bench exited with an error: {json:#}");
}

/// The rolling restart: both nodes were restarted, clients came back and
/// resumed, every client is connected again, and (checked by
/// `assert_accounted`) the application missed nothing and saw nothing twice.
fn assert_rolling(o: &Value, clients: u64, nodes: u64) {
    assert_eq!(o["scenario"], "rolling", "{o:#}");
    assert_accounted(o);
    assert_eq!(metric(o, "nodes restarted"), nodes as f64, "{o:#}");
    assert!(metric(o, "resumes") > 0.0, "{o:#}");
    assert!(metric(o, "replayed messages") >= 0.0, "{o:#}");
    assert_eq!(metric(o, "offset gaps seen"), 0.0, "{o:#}");
    assert_eq!(
        metric(o, "clients connected at end"),
        clients as f64,
        "{o:#}"
    );
    // Clients on the drained nodes were told to come back (WebSocket close
    // 3001; SSE clients get the bye without a close code).
    assert!(o["closed_by_server"]["3001"].as_u64().unwrap() > 0, "{o:#}");
    assert!(metric(o, "bye frames") >= metric(o, "reconnects"), "{o:#}");
}

#[test]
fn the_comparison_runs_against_socketio_on_the_same_redis() {
    if !redis_available() {
        return;
    }
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/socketio/node_modules");
    let node = Command::new("node").arg("--version").output().is_ok();
    if !peer.is_dir() || !node {
        if std::env::var("FANOUT_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
            panic!(
                "node or {} is missing and FANOUT_REQUIRE_TOOLS=1",
                peer.display()
            );
        }
        eprintln!("SKIPPED: node or the Socket.IO peer's packages are missing (run `make test`)");
        return;
    }
    // Sockudo, when built, has a test of its own (tests/sockudo.rs).
    let (ok, json) = run_quick(&["compare", "--peers", "socketio"]);
    assert_compared_with(&json, "socketio");
    let ratios = json["ratios"].as_array().unwrap();
    assert!(
        ratios
            .iter()
            .any(|r| r["scenario"] == "broadcast" && r["metric"] == "deliveries/s"),
        "{json:#}"
    );
    assert!(ok, "fanout-bench exited with an error: {json:#}");
}

/// A short soak: two nodes, resuming clients reconnecting at a trickle,
/// samples of every node, a verdict. It proves the scenario works end to
/// end and that a reconnect loses nothing; its growth checks run too, but
/// 30 s of a debug build prove little about growth: `make soak-smoke`
/// (CI, 90 s, 2,000 clients) and the 30-minute run in docs/benchmarks.md do.
#[test]
fn the_soak_samples_both_nodes_and_loses_nothing_across_reconnects() {
    if !redis_available() {
        return;
    }
    let out = bench()
        .args(["soak", "--connections", "300", "--duration", "24s"])
        .args(["--sample", "2s", "--warmup", "8s", "--rate", "50"])
        .args(["--reconnect-rate", "30", "--json", "--fanout-bin"])
        .arg(fanout_bin())
        .arg("--redis-server-bin")
        .arg(fanout_testkit::server_bin())
        .output()
        .expect("fanout-bench runs");
    let json = json_of(&out);
    let o = &json["results"][0];
    assert_accounted(o);
    assert!(metric(o, "reconnects") >= 100.0, "{o:#}");
    assert!(metric(o, "resumes") >= 100.0, "{o:#}");
    assert_eq!(metric(o, "clients connected at end"), 300.0, "{o:#}");
    // Without an outage every message reached the nodes live.
    assert_eq!(metric(o, "messages the nodes missed live"), 0.0, "{o:#}");
    let samples = json["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 12, "{json:#}");
    for s in samples {
        let nodes = s["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "{s:#}");
        for n in nodes {
            for field in [
                "rss_bytes",
                "fds",
                "connections",
                "tasks",
                "send_queue_bytes",
            ] {
                assert!(n[field].as_f64().is_some(), "{field} missing: {s:#}");
            }
        }
    }
    // Both nodes held clients: the trickle moves them from one to the other.
    let last = &samples[samples.len() - 1]["nodes"];
    assert!(last[0]["connections"].as_f64().unwrap() > 0.0, "{json:#}");
    assert!(last[1]["connections"].as_f64().unwrap() > 0.0, "{json:#}");
    // Once every client went, each node held what it held before.
    for (b, a) in json["before"]
        .as_array()
        .unwrap()
        .iter()
        .zip(json["after"].as_array().unwrap())
    {
        assert_eq!(a["connections"], 0.0, "{json:#}");
        assert_eq!(a["fds"], b["fds"], "a file descriptor leaked: {json:#}");
    }
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["what"] == "node 2 RSS"), "{json:#}");
    assert_eq!(json["verdict"], "pass", "{json:#}");
    assert!(out.status.success(), "{json:#}");
}

/// Bad input gets a clear message and a failing exit, not a panic.
#[test]
fn missing_credentials_are_a_clear_error() {
    let out = bench()
        .args(["broadcast", "--node", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--jwt-secret"), "{err}");
    let out = bench()
        .args(["storm", "--connections", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
