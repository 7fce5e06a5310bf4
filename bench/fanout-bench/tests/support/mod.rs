//! What the integration tests of `fanout-bench` share: the binaries, the
//! JSON a run prints, its metrics, and the checks every run must pass.

#![allow(dead_code)] // each test file uses its own subset

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// The server binary the runs start their nodes from (see tests/bench.rs).
pub(crate) fn fanout_bin() -> PathBuf {
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

/// False (after saying why) when redis-server is missing and not required
/// (`FANOUT_REQUIRE_REDIS=1`, as `make test` sets, makes it a failure).
pub(crate) fn redis_available() -> bool {
    fanout_testkit::available_for_tests().unwrap_or_else(|e| panic!("{e}"))
}

/// `fanout-bench`, without the `FANOUT_*` settings of the environment
/// (they would reach the nodes it starts).
pub(crate) fn bench() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout-bench"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FANOUT_") && key != "FANOUT_REQUIRE_TOOLS" && key != "FANOUT_BIN" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The JSON a `--json` run printed; fails with its output when it printed none.
pub(crate) fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "fanout-bench printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(crate) fn metric(o: &Value, name: &str) -> f64 {
    o["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name:?} in {o:#}"))["value"]
        .as_f64()
        .unwrap()
}

/// Every message of a run was delivered exactly as often as expected.
pub(crate) fn assert_accounted(o: &Value) {
    let name = format!("{} on {}", o["scenario"], o["target"]);
    assert_eq!(o["errors"], serde_json::json!([]), "{name}: {o:#}");
    let a = &o["accounting"];
    assert!(a["expected"].as_u64().unwrap() > 0, "{name}: {o:#}");
    assert_eq!(a["delivered"], a["expected"], "{name}: {o:#}");
    assert_eq!(a["missing"], 0, "{name}: {o:#}");
    assert_eq!(a["duplicated"], 0, "{name}: {o:#}");
    assert_eq!(a["publish_failed"], 0, "{name}: {o:#}");
    // Every client got exactly the messages addressed to it.
    assert_eq!(a["clients_mismatched"], 0, "{name}: {o:#}");
}

/// A `compare --quick` run has every scenario on fanout and on `peer`:
/// the idle ones all connected, the others every message accounted for.
pub(crate) fn assert_compared_with(json: &Value, peer: &str) {
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
        for target in ["fanout", peer] {
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
}
