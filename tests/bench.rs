//! CI's smoke run of `fanout-bench`: every scenario of the suite, and the
//! side-by-side comparison with the Socket.IO peer, at small sizes. They
//! prove the tool works end to end (real nodes, a real redis-server, real
//! worker processes and WebSocket clients) and that every message is
//! accounted for; they check no speed: numbers on a shared CI machine mean
//! nothing, and the targets live in docs/benchmarks.md.

mod support;

use std::{path::Path, process::Command};

use serde_json::Value;

fn bench() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout-bench"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FANOUT_") && key != "FANOUT_REQUIRE_TOOLS" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `fanout-bench <args> --quick --json`; returns its exit success and JSON.
fn run_quick(args: &[&str]) -> (bool, Value) {
    let out = bench()
        .args(args)
        .args([
            "--quick",
            "--json",
            "--fanout-bin",
            env!("CARGO_BIN_EXE_fanout"),
        ])
        .arg("--redis-server-bin")
        .arg(support::redis::server_bin())
        .output()
        .expect("fanout-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "fanout-bench printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

/// Every message of a run was delivered exactly as often as expected.
fn assert_accounted(o: &Value) {
    let name = format!("{} on {}", o["scenario"], o["target"]);
    assert_eq!(o["errors"], serde_json::json!([]), "{name}: {o:#}");
    let a = &o["accounting"];
    assert!(a["expected"].as_u64().unwrap() > 0, "{name}: {o:#}");
    assert_eq!(a["delivered"], a["expected"], "{name}: {o:#}");
    assert_eq!(a["missing"], 0, "{name}: {o:#}");
    assert_eq!(a["duplicated"], 0, "{name}: {o:#}");
    assert_eq!(a["publish_failed"], 0, "{name}: {o:#}");
}

fn metric(o: &Value, name: &str) -> f64 {
    o["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name:?} in {o:#}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn the_suite_runs_every_scenario_and_accounts_for_every_message() {
    if !support::redis::available() {
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
            "steady",
            "storm",
            "publish-api"
        ],
        "{json:#}"
    );
    for o in results {
        assert_eq!(o["closed_by_server"], serde_json::json!({}), "{o:#}");
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
    let storm = &results[5];
    assert!(metric(storm, "SUBSCRIBE commands") >= 1.0, "{storm:#}");
    assert!(metric(storm, "UNSUBSCRIBE commands") >= 1.0, "{storm:#}");
    assert!(ok, "fanout-bench exited with an error: {json:#}");
}

#[test]
fn the_comparison_runs_against_socketio_on_the_same_redis() {
    if !support::redis::available() {
        return;
    }
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peers/socketio/node_modules");
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
    let (ok, json) = run_quick(&["compare"]);
    let results = json["results"].as_array().unwrap();
    for scenario in ["idle", "broadcast", "steady", "storm", "publish-api"] {
        for target in ["fanout", "socketio"] {
            let o = results
                .iter()
                .find(|o| o["scenario"] == scenario && o["target"] == target)
                .unwrap_or_else(|| panic!("no {scenario} on {target}: {json:#}"));
            if scenario == "idle" {
                assert_eq!(o["errors"], serde_json::json!([]), "{o:#}");
                assert_eq!(metric(o, "open at end"), 200.0, "{o:#}");
            } else {
                assert_accounted(o);
            }
        }
    }
    let ratios = json["ratios"].as_array().unwrap();
    assert!(
        ratios
            .iter()
            .any(|r| r["scenario"] == "broadcast" && r["metric"] == "deliveries/s"),
        "{json:#}"
    );
    assert!(ok, "fanout-bench exited with an error: {json:#}");
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
