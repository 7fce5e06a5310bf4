//! The Pusher target against real Sockudo nodes: `fanout-bench compare
//! --quick --peers sockudo`, two fanout and two Sockudo nodes on one
//! redis-server, every scenario on both, every message accounted for.
//!
//! Only where Sockudo is built: its build takes about 10 minutes, so
//! `make test` never builds it (`bench/peers/sockudo/build.sh` does, and
//! `make bench-compare` runs that). Without the binary the test says so
//! and passes. `SOCKUDO_BIN` names another binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The version `bench/peers/sockudo/build.sh` installs.
const VERSION: &str = "5.2.0";

/// Where the build script puts Sockudo (or `SOCKUDO_BIN`), if it is there.
fn sockudo_bin() -> Option<PathBuf> {
    let path = match std::env::var_os("SOCKUDO_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = match std::env::var_os("FANOUT_PEER_CACHE") {
                Some(c) => PathBuf::from(c),
                None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/fanout-peers"),
            };
            cache.join(format!("sockudo-{VERSION}/bin/sockudo"))
        }
    };
    path.is_file().then_some(path)
}

/// The server binary, next to fanout-bench (see tests/bench.rs).
fn fanout_bin() -> PathBuf {
    let path = std::env::var_os("FANOUT_BIN").map_or_else(
        || Path::new(env!("CARGO_BIN_EXE_fanout-bench")).with_file_name("fanout"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no fanout binary at {}: run `cargo test --workspace` (or `cargo build -p fanout` \
         first), or set FANOUT_BIN",
        path.display()
    );
    path
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

/// Every message of a run was delivered exactly as often as expected, to
/// exactly the clients it named.
fn assert_accounted(o: &Value) {
    let name = format!("{} on {}", o["scenario"], o["target"]);
    assert_eq!(o["errors"], serde_json::json!([]), "{name}: {o:#}");
    let a = &o["accounting"];
    assert!(a["expected"].as_u64().unwrap() > 0, "{name}: {o:#}");
    assert_eq!(a["delivered"], a["expected"], "{name}: {o:#}");
    assert_eq!(a["missing"], 0, "{name}: {o:#}");
    assert_eq!(a["duplicated"], 0, "{name}: {o:#}");
    assert_eq!(a["publish_failed"], 0, "{name}: {o:#}");
    assert_eq!(a["clients_mismatched"], 0, "{name}: {o:#}");
}

/// Pusher clients connect, subscribe to their user and group channels,
/// answer pings and receive what the signed HTTP API publishes, on either
/// node (so through Sockudo's Redis adapter), in every scenario of the
/// comparison; the ratio table names Sockudo.
#[test]
fn the_comparison_runs_against_sockudo_on_the_same_redis() {
    let Some(sockudo) = sockudo_bin() else {
        eprintln!(
            "SKIPPED: no Sockudo binary (bench/peers/sockudo/build.sh builds it, ~10 minutes)"
        );
        return;
    };
    let redis = fanout_testkit::server_bin();
    if !fanout_testkit::server_found(&redis) {
        eprintln!("SKIPPED: redis-server not found");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fanout-bench"))
        .args(["compare", "--quick", "--json", "--peers", "sockudo"])
        .arg("--sockudo-bin")
        .arg(&sockudo)
        .arg("--fanout-bin")
        .arg(fanout_bin())
        .arg("--redis-server-bin")
        .arg(redis)
        .output()
        .expect("fanout-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "fanout-bench printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let results = json["results"].as_array().unwrap();
    let scenarios = [
        "idle",
        "broadcast",
        "broadcast-moderate",
        "steady",
        "storm",
        "publish-api",
    ];
    for scenario in scenarios {
        for target in ["fanout", "sockudo"] {
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
    assert!(
        !results.iter().any(|o| o["target"] == "socketio"),
        "--peers sockudo ran Socket.IO too: {json:#}"
    );
    let ratios = json["ratios"].as_array().unwrap();
    assert!(
        ratios.iter().any(|r| r["scenario"] == "broadcast"
            && r["metric"] == "deliveries/s"
            && r["peer"] == "sockudo"),
        "{json:#}"
    );
    assert!(
        out.status.success(),
        "fanout-bench exited with an error: {json:#}"
    );
}
