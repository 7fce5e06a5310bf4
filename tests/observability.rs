//! Metrics as operators see them: a live scrape of a node that has done
//! real work passes `promtool check metrics`, contains every metric fanout
//! declares and every one the Grafana dashboard queries, and a real
//! Prometheus scrapes it.
//!
//! promtool and prometheus come from `PROMTOOL_BIN` / `PROMETHEUS_BIN`
//! (`make test` extracts them from Debian's package); without them these
//! tests skip, unless `FANOUT_REQUIRE_TOOLS=1`.

mod support;

use std::{collections::BTreeSet, process::Command};

use reqwest::Method;
use serde_json::json;
use support::{Client, process::FanoutProcess, redis::RedisServer};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;

fn tool(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            if std::env::var("FANOUT_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
                panic!("{var} is not set and FANOUT_REQUIRE_TOOLS=1");
            }
            eprintln!("SKIPPED: {var} not set (run `make test`)");
            None
        }
    }
}

/// Every `const NAME: &str = "..."` metric name in src/metrics.rs.
fn declared_metrics() -> BTreeSet<String> {
    let src = include_str!("../src/metrics.rs");
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter(|l| l.contains(": &str = \""))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("fanout_") || n.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every metric name the dashboard's queries use.
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/fanout.json"))
        .expect("grafana/fanout.json exists");
    let mut names = BTreeSet::new();
    for (i, _) in text
        .match_indices("fanout_")
        .chain(text.match_indices("process_"))
    {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// A metric name as exposed: histograms add suffixes.
fn exposed(scrape: &str, name: &str) -> bool {
    scrape.lines().filter(|l| !l.starts_with('#')).any(|l| {
        let series = l.split([' ', '{']).next().unwrap_or("");
        series == name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| series.strip_suffix(s) == Some(name))
    })
}

/// A node that has done everything its metrics describe: connections,
/// joins, publishes, a slow consumer, rejected connections, a kick, an
/// invalid Redis body, a Redis reconnect, API errors.
async fn busy_node(redis: &RedisServer) -> FanoutProcess {
    let node = FanoutProcess::start(
        "obs",
        &[
            "--redis-url",
            &redis.url(),
            "--redis-probe-interval",
            "300ms",
            "--outbound-queue",
            "4KiB",
            "--api-body-limit",
            "1MiB",
        ],
    );
    let mut a = node.client("a").await;
    a.join("g").await;
    let mut b = node.client("b").await;
    b.send(json!({"type": "publish", "id": 1, "group": "g", "data": 1}))
        .await;
    let (s, _) = node
        .publish(json!({"users": ["a", "nobody"]}), json!({"n": 1}))
        .await;
    assert_eq!(s, 200);
    node.publish(json!({"all": true}), json!(2)).await;
    a.recv_type("message").await;
    // Rejections and API errors.
    let refused = format!("ws://{}/ws?token=not-a-token", node.addr);
    assert_eq!(Client::refused(refused).await.0, 401);
    let (s, _) = node
        .api(Method::POST, "/api/publish", Some(json!({"to": {}})))
        .await;
    assert_eq!(s, 400);
    let res = reqwest::Client::new()
        .get(format!("http://{}/api/stats", node.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A kick.
    let mut k = node.client("kicked").await;
    node.api(Method::POST, "/api/users/kicked/disconnect", None)
        .await;
    k.expect_bye("kicked", 3503).await;
    // The server counts the disconnect once the close handshake ends.
    drop(k);
    assert_eventually!(
        node.metric("fanout_disconnects_total", "reason=\"kicked\"")
            .await
            >= 1.0
    );
    // A slow consumer: a client with a tiny receive buffer that never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let url = format!("ws://{}/ws?token={}", node.addr, support::mint("slow"));
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let _slow = Client { ws };
    let big = "x".repeat(500 * 1024);
    for _ in 0..40 {
        node.publish(json!({"users": ["slow"]}), json!(big)).await;
        if node.metric("fanout_slow_consumers_total", "").await >= 1.0 {
            break;
        }
    }
    assert!(node.metric("fanout_slow_consumers_total", "").await >= 1.0);
    // Broker: an invalid body and a reconnect of every pub/sub connection.
    redis.cli(&["PUBLISH", "fanout:user:a", "garbage"]);
    redis.cli(&["PUBLISH", "fanout:group:g", r#"{"cmd":"disconnect"}"#]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eventually!(
        node.metric("fanout_broker_resubscribe_duration_seconds_count", "")
            .await
            > 0.0
    );
    assert_eventually!(
        node.metric(
            "fanout_broker_messages_dropped_total",
            "reason=\"invalid_json\""
        )
        .await
            >= 1.0
            && node
                .metric(
                    "fanout_broker_messages_dropped_total",
                    "reason=\"misdirected\""
                )
                .await
                >= 1.0
    );
    // A client that leaves by itself.
    drop(b);
    node
}

/// A scrape after real work: promtool is clean, every declared metric and
/// every metric the dashboard uses is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_scrape_is_valid_and_complete() {
    if !support::redis::available() {
        return;
    }
    let redis = RedisServer::start();
    let node = busy_node(&redis).await;
    let (status, scrape) = node.internal_get("/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str, labels: &str| support::metric_value(&scrape, name, labels);
    assert!(
        value(
            "fanout_connections_rejected_total",
            "reason=\"unauthorized\""
        ) >= 1.0
    );
    assert!(
        value(
            "fanout_broker_messages_dropped_total",
            "reason=\"misdirected\""
        ) >= 1.0
    );
    assert!(
        value(
            "fanout_broker_messages_dropped_total",
            "reason=\"invalid_json\""
        ) >= 1.0
    );
    assert!(value("fanout_slow_consumers_total", "") >= 1.0);
    assert!(value("fanout_disconnects_total", "reason=\"kicked\"") >= 1.0);
    assert!(value("fanout_http_requests_total", "status=\"401\"") >= 1.0);

    let missing: Vec<String> = declared_metrics()
        .into_iter()
        .filter(|n| !exposed(&scrape, n))
        .collect();
    assert!(
        missing.is_empty(),
        "declared but not exposed after real work: {missing:?}"
    );
    if let Some(promtool) = tool("PROMTOOL_BIN") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool:\n{report}\n---\n{scrape}"
        );
    }
    let dashboard = dashboard_metrics();
    assert!(dashboard.len() > 10, "{dashboard:?}");
    let missing: Vec<&String> = dashboard.iter().filter(|n| !exposed(&scrape, n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the node does not export: {missing:?}"
    );
    for label in ["uid", "group", "channel", "user"] {
        assert!(
            !scrape.contains(&format!("{label}=\"")),
            "high-cardinality label {label}"
        );
    }
}

/// Every metric name in the dashboard is one fanout declares.
#[test]
fn dashboard_uses_only_declared_metrics() {
    let declared = declared_metrics();
    let known = |n: &str| {
        declared.contains(n)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                n.strip_suffix(s)
                    .is_some_and(|base| declared.contains(base))
            })
    };
    let unknown: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|n| !known(n))
        .collect();
    assert!(unknown.is_empty(), "not in src/metrics.rs: {unknown:?}");
}

/// A real Prometheus server scrapes a running node and answers a query on
/// a fanout metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_node() {
    let Some(prometheus) = tool("PROMETHEUS_BIN") else {
        return;
    };
    let node = FanoutProcess::start("prom", &[]);
    let _c = node.client("p").await;
    let dir = std::env::temp_dir().join(format!("fanout-prom-{}", support::redis::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: fanout\n    static_configs:\n      - targets: ['{}']\n",
            node.internal
        ),
    )
    .unwrap();
    let port = support::redis::free_port();
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let query = |q: &'static str| {
        let http = http.clone();
        async move {
            let url = format!("http://127.0.0.1:{port}/api/v1/query");
            match http.get(url).query(&[("query", q)]).send().await {
                Ok(res) => res.json::<serde_json::Value>().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            }
        }
    };
    let result = async {
        assert_eventually!(
            query("up{job=\"fanout\"}").await["data"]["result"][0]["value"][1] == "1"
        );
        assert_eventually!(
            query("sum(fanout_connections_active{job=\"fanout\"})").await["data"]["result"][0]["value"]
                [1]
                == "1"
        );
    };
    tokio::time::timeout(support::patience() * 3, result)
        .await
        .expect("prometheus answered");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The alert rules in docs/operations.md §6 are valid Prometheus rules
/// (`promtool check rules`) and query only metrics fanout exposes.
#[test]
fn documented_alert_rules_are_valid() {
    let doc = include_str!("../docs/operations.md");
    let section = doc
        .split("## 6. Dashboard and alerts")
        .nth(1)
        .expect("operations.md has section 6");
    let rules = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("section 6 has a yaml block");
    let declared = declared_metrics();
    let used: BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("fanout_") || w.starts_with("process_"))
        .map(|w| w.trim_end_matches("_bucket"))
        .collect();
    let unknown: Vec<&&str> = used.iter().filter(|n| !declared.contains(**n)).collect();
    assert!(
        unknown.is_empty(),
        "rules query undeclared metrics: {unknown:?}"
    );
    let Some(promtool) = tool("PROMTOOL_BIN") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("fanout-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broadcast's stages inside the node are recorded for every message
/// (dispatched, queued) and, for traced messages, to the first and the last
/// socket write, each counted from the broker's hand-over, so each stage
/// comes no earlier than the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_stages_are_timed_from_the_broker_to_the_last_write() {
    let node = FanoutProcess::start("stages", &[]);
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = node.client(&format!("s{i}")).await;
        c.join("room").await;
        clients.push(c);
    }
    for n in 0..5 {
        let (s, _) = node.publish(json!({"groups": ["room"]}), json!(n)).await;
        assert_eq!(s, 200);
        for c in &mut clients {
            c.recv_type("message").await;
        }
    }
    let stage = |scrape: &str, stage: &str, part: &str| {
        support::metric_value(
            scrape,
            &format!("fanout_broadcast_stage_seconds_{part}"),
            &format!("stage=\"{stage}\""),
        )
    };
    // The last recipient lets go of the trace just after its flush.
    assert_eventually!({
        let scrape = node.internal_get("/metrics").await.1;
        stage(&scrape, "first_write", "count") >= 1.0
            && stage(&scrape, "last_write", "count") == stage(&scrape, "first_write", "count")
    });
    let scrape = node.internal_get("/metrics").await.1;
    for s in ["dispatched", "queued"] {
        assert_eq!(stage(&scrape, s, "count"), 5.0, "{s}:\n{scrape}");
    }
    let transit = support::metric_value(&scrape, "fanout_broker_transit_seconds_count", "");
    assert_eq!(transit, 5.0, "{scrape}");
    let sum = |s| stage(&scrape, s, "sum");
    assert!(sum("queued") >= sum("dispatched"), "{scrape}");
    assert!(sum("last_write") >= sum("first_write"), "{scrape}");
    assert!(sum("last_write") > 0.0, "{scrape}");
}

/// A node nobody scrapes still folds its histogram samples (the exporter
/// keeps each one until then: ~20 bytes per socket write, without bound):
/// its upkeep thread runs from the start, not only when `/metrics` is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_are_folded_without_a_scrape() {
    let node = FanoutProcess::start("upkeep", &[]);
    let threads = std::fs::read_dir(format!("/proc/{}/task", node.pid())).unwrap();
    let names: Vec<String> = threads
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "fanout-metrics"),
        "no upkeep thread among {names:?}"
    );
}
