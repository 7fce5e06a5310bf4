//! The examples in examples/ work as the docs say: each is run as a real
//! program against a real fanout node, and the message it publishes
//! reaches a connected client. The HTTP API ones: PHP with curl, Python's
//! standard library, Node.js's fetch. The direct-Redis ones (redis-cli,
//! Python with redis-py, PHP with phpredis and with predis), against a real
//! Redis: kept in history (with an offset) and resumable. Interpreters missing skip the test with a message,
//! unless `FANOUT_REQUIRE_TOOLS=1` (as `make test` sets, after installing
//! them).

mod support;

use std::{path::PathBuf, process::Command};

use serde_json::json;
use support::{process::FanoutProcess, redis::RedisServer};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn require_tools() -> bool {
    std::env::var("FANOUT_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// The first of `candidates` that runs `check` successfully.
fn find(candidates: &[String], check: &[&str]) -> Option<String> {
    candidates.iter().find_map(|bin| {
        Command::new(bin)
            .args(check)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| bin.clone())
    })
}

fn python() -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("PYTHON_BIN").into_iter().collect();
    candidates.extend(["/usr/bin/python3".into(), "python3".into()]);
    find(&candidates, &["-c", "import redis"])
}

fn php(extension_check: &str) -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("PHP_BIN").into_iter().collect();
    candidates.push("php".into());
    find(&candidates, &["-r", extension_check])
}

/// Runs one example that publishes `text` to `uid`; returns its output.
fn run(program: &str, args: &[&str], redis: &RedisServer) -> String {
    let out = Command::new(program)
        .args(args)
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port.to_string())
        .env_remove("FANOUT_PREFIX")
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every direct-Redis example publishes through `FCALL fanout_publish`:
/// the client gets the message with its offset, in order, and a client
/// resuming from before them gets them all again from history.
#[tokio::test]
async fn direct_redis_examples_publish_into_history() {
    if !support::redis::available() {
        return;
    }
    let tools = [
        ("redis-cli", Some(support::redis::cli_bin()), "sh"),
        ("python", python(), "python"),
        (
            "phpredis",
            php("exit(class_exists('Redis') ? 0 : 1);"),
            "php",
        ),
        (
            "predis",
            php(
                "exit(stream_resolve_include_path('Predis/Autoloader.php') || file_exists('vendor/autoload.php') ? 0 : 1);",
            ),
            "php",
        ),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(_, bin, _)| bin.is_none())
        .map(|(name, ..)| *name)
        .collect();
    if !missing.is_empty() {
        assert!(
            !require_tools(),
            "missing {missing:?} and FANOUT_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: {missing:?} not installed (make test installs them)");
        return;
    }
    let redis = RedisServer::start();
    let node = FanoutProcess::start("ex", &["--redis-url", &redis.url()]);
    let (mut c, welcome) = node.client_welcome("ex1").await;
    let start = welcome["positions"]["user:ex1"].clone();
    let dir = examples().join("redis");
    let runs: [(&str, Vec<String>); 4] = [
        ("sh", vec![dir.join("publish.sh").display().to_string()]),
        ("python", vec![dir.join("publish.py").display().to_string()]),
        (
            "phpredis",
            vec![dir.join("publish-phpredis.php").display().to_string()],
        ),
        (
            "predis",
            vec![dir.join("publish-predis.php").display().to_string()],
        ),
    ];
    for (i, (which, script)) in runs.iter().enumerate() {
        let program = match *which {
            "sh" => "sh".to_owned(),
            "python" => tools[1].1.clone().unwrap(),
            _ => tools[2].1.clone().unwrap(),
        };
        let text = format!("from {which}");
        let mut args: Vec<&str> = script.iter().map(String::as_str).collect();
        args.extend(["ex1", &text]);
        let out = run(&program, &args, &redis);
        let offset = i as u64 + 1;
        if *which != "sh" {
            assert!(
                out.starts_with(&format!("offset {offset} epoch ")),
                "{which}: {out}"
            );
        }
        let m = c.recv_type("message").await;
        assert_eq!(
            (&m["channel"], &m["offset"], &m["data"]["text"]),
            (&json!("user:ex1"), &json!(offset), &json!(text)),
            "{which}: {m}"
        );
    }
    drop(c);
    let (mut c, welcome) = node.resume("ex1", json!({"user:ex1": start})).await;
    assert_eq!(welcome["recovered"], json!({"user:ex1": true}), "{welcome}");
    for offset in 1..=4u64 {
        assert_eq!(c.recv_type("message").await["offset"], offset);
    }
}

fn node_js() -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("NODE_BIN").into_iter().collect();
    candidates.push("node".into());
    find(
        &candidates,
        &["-e", "if (typeof fetch !== 'function') process.exit(1)"],
    )
}

/// The HTTP API examples (PHP with curl, Python's standard library,
/// Node.js's fetch) each publish to a connected user, who gets the message;
/// each prints the id and offset the API answered, and `online`.
#[tokio::test]
async fn http_api_examples_publish_to_a_user() {
    let tools = [
        ("php", php("exit(function_exists('curl_init') ? 0 : 1);")),
        ("python", {
            let mut candidates: Vec<String> = std::env::var("PYTHON_BIN").into_iter().collect();
            candidates.extend(["/usr/bin/python3".into(), "python3".into()]);
            find(&candidates, &["-c", "import urllib.request"])
        }),
        ("node", node_js()),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(_, bin)| bin.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        assert!(
            !require_tools(),
            "missing {missing:?} and FANOUT_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: {missing:?} not installed (make test installs them)");
        return;
    }
    let node = FanoutProcess::start("http-ex", &[]);
    let (mut c, _) = node.client_welcome("hx1").await;
    let dir = examples().join("http");
    let scripts = ["publish.php", "publish.py", "publish.mjs"];
    for (offset, ((which, bin), script)) in (1u64..).zip(tools.iter().zip(scripts)) {
        let text = format!("from {which}");
        let out = Command::new(bin.as_deref().unwrap())
            .arg(dir.join(script))
            .args(["hx1", &text])
            .env("FANOUT_URL", format!("http://{}", node.addr))
            .env("FANOUT_API_KEY", support::API_KEY)
            .output()
            .unwrap_or_else(|e| panic!("{which} runs: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{which} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = c.recv_type("message").await;
        assert_eq!(
            (&m["channel"], &m["offset"], &m["data"]["text"]),
            (&json!("user:hx1"), &json!(offset), &json!(text)),
            "{which}: {m}"
        );
        let id = m["id"].as_str().unwrap();
        assert_eq!(
            stdout.trim(),
            format!("id {id} offset {offset} online"),
            "{which}"
        );
    }
}
