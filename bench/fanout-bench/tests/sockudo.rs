//! The Pusher target against real Sockudo nodes: `fanout-bench compare
//! --quick --peers sockudo`, two fanout and two Sockudo nodes on one
//! redis-server, every scenario on both, every message accounted for.
//!
//! Only where Sockudo is built: its build takes about 10 minutes, so
//! `make test` never builds it (`bench/peers/sockudo/build.sh` does, and
//! `make bench-compare` runs that). Without the binary the test says so
//! and passes. `SOCKUDO_BIN` names another binary.

mod support;

use std::path::PathBuf;

use support::{assert_compared_with, bench, fanout_bin, json_of};

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
    let out = bench()
        .args(["compare", "--quick", "--json", "--peers", "sockudo"])
        .arg("--sockudo-bin")
        .arg(&sockudo)
        .arg("--fanout-bin")
        .arg(fanout_bin())
        .arg("--redis-server-bin")
        .arg(redis)
        .output()
        .expect("fanout-bench runs");
    let json = json_of(&out);
    assert_compared_with(&json, "sockudo");
    let results = json["results"].as_array().unwrap();
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
