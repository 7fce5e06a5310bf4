//! The `fanout` binary as a user runs it: `--version`, `token`, startup
//! errors with exit code 64, and `serve --dev`, whose printed token and
//! curl command must work as printed.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
};

use serde_json::json;
use support::{Client, TestServer};

fn fanout() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
    // The tests must not inherit a developer's FANOUT_* settings.
    for (key, _) in std::env::vars() {
        if key.starts_with("FANOUT_") {
            cmd.env_remove(key);
        }
    }
    // `serve --dev` keeps its secrets in a file; never in the source tree.
    cmd.env(
        "FANOUT_DEV_FILE",
        std::env::temp_dir().join(format!("fanout-cli-dev-{}.json", std::process::id())),
    );
    cmd
}

/// A directory of its own under the system's temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fanout-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `serve --dev` with its secrets kept in `dev_file`; returns the
/// process and its banner, up to the printed curl command.
fn start_dev(dev_file: &std::path::Path) -> (Running, Vec<String>) {
    let mut child = fanout()
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--internal-addr",
            "127.0.0.1:0",
            "--log",
            "warn",
        ])
        .arg("--dev-file")
        .arg(dev_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while !banner.iter().any(|l: &String| l.contains("-d '")) {
        banner.push(rx.recv_timeout(support::patience()).expect("banner line"));
    }
    (child, banner)
}

/// The value after `prefix` on a banner line.
fn banner_value(banner: &[String], prefix: &str) -> String {
    banner
        .iter()
        .find_map(|l| l.trim().strip_prefix(prefix).map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| panic!("no `{prefix}` in {banner:#?}"))
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fanout --version` prints the package version.
#[test]
fn version_is_printed() {
    let out = fanout().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("fanout {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `fanout token` mints a token a server with the same secret accepts,
/// with the requested uid and grants.
#[tokio::test]
async fn token_command_mints_usable_tokens() {
    let out = fanout()
        .args([
            "token",
            "--sub",
            "42",
            "--groups",
            "room-*,lobby",
            "--ttl",
            "10m",
        ])
        .env("FANOUT_JWT_SECRET", support::SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = TestServer::start().await;
    let mut c = Client::connect(&format!("{}?token={token}", server.ws_url())).await;
    let w = c.recv().await;
    assert_eq!(w["uid"], "42");
    c.join("room-9").await;
    c.join("lobby").await;
    let r = c
        .call(json!({"type": "join", "id": 1, "group": "other"}))
        .await;
    assert_eq!(r["code"], "forbidden");
}

/// Missing secrets are startup errors that name the variable, exit 64.
#[test]
fn missing_configuration_exits_64_naming_the_variable() {
    let out = fanout()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FANOUT_JWT_SECRET") && err.contains("FANOUT_API_KEYS"),
        "{err}"
    );

    let out = fanout().args(["token", "--sub", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FANOUT_JWT_SECRET"));

    let out = fanout()
        .args(["serve", "--heartbeat", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--heartbeat"));

    let out = fanout()
        .args([
            "serve",
            "--jwt-algorithm",
            "RS256",
            "--jwt-public-key",
            "/nonexistent.pem",
        ])
        .env("FANOUT_API_KEYS", "a-long-enough-api-key")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FANOUT_JWT_PUBLIC_KEY"));

    let out = fanout()
        .args(["serve", "--dev", "--redis-url", "http://not-redis:6379"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FANOUT_REDIS_URL"));

    let bad_pem = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----";
    let out = fanout()
        .args(["serve", "--jwt-algorithm", "ES256"])
        .env("FANOUT_JWT_PUBLIC_KEY", bad_pem)
        .env("FANOUT_API_KEYS", "a-long-enough-api-key")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FANOUT_JWT_PUBLIC_KEY"));
}

/// `serve --dev` prints a secret, an API key, a token, a browser snippet and
/// a curl command; the token connects and the printed publish arrives.
/// SIGTERM then stops it with exit code 0.
#[tokio::test]
async fn dev_mode_banner_works_as_printed() {
    let dir = TempDir::new("banner");
    let (child, banner) = start_dev(&dir.0.join("dev.json"));
    // Logs to a pipe carry no colour codes (the dev-mode warnings come
    // before the banner).
    assert!(
        banner.iter().any(|l| l.contains("development mode")),
        "{banner:#?}"
    );
    assert!(
        !banner.iter().any(|l| l.contains('\x1b')),
        "escape codes in piped output: {banner:#?}"
    );
    let find = |prefix: &str| banner_value(&banner, prefix);
    let key = find("API key:");
    let ws_line = find("const ws = new WebSocket(\"");
    let ws_url = ws_line.trim_end_matches("\");").to_owned();
    let base = ws_url
        .split("/ws?")
        .next()
        .unwrap()
        .replace("ws://", "http://");
    assert!(banner.iter().any(|l| l.contains("Authorization: Bearer")));

    // The browser snippet's URL connects as the dev user.
    let mut c = Client::connect(&ws_url).await;
    assert_eq!(c.recv().await["uid"], "dev-user");
    // Development mode lets any page connect, whatever its Origin.
    {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "Origin",
            HeaderValue::from_static("https://any-site.example"),
        );
        let (mut other, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        use futures_util::StreamExt;
        assert!(
            matches!(other.next().await, Some(Ok(m)) if m.to_text().unwrap().contains("welcome"))
        );
    }

    // Run the printed curl command as printed (with its line continuations).
    let start = banner
        .iter()
        .position(|l| l.trim_start().starts_with("curl "))
        .unwrap();
    let curl: String = banner[start..]
        .iter()
        .map(|l| l.trim().trim_end_matches('\\').to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(curl.contains(&base) && curl.contains(&key), "{curl}");
    let out = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["offline_users"], json!([]), "{reply}");
    let m = c.recv().await;
    assert_eq!(m["id"], reply["id"]);
    assert_eq!(m["data"]["text"], "hi from curl");

    // SIGTERM: the client is told to go, the process exits 0.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    c.expect_bye("shutdown", 3001).await;
    let mut child = child;
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `serve --dev` keeps its generated secret and API key in the dev file, so
/// a restart keeps earlier tokens and open pages working; the file is the
/// owner's alone; deleting it rotates them; a damaged one is a usage error
/// that says what to do.
#[test]
fn dev_mode_keeps_its_secrets_across_restarts() {
    let dir = TempDir::new("keep");
    let file = dir.0.join("dev.json");
    let (first, banner) = start_dev(&file);
    let (secret, key) = (
        banner_value(&banner, "JWT secret:"),
        banner_value(&banner, "API key:"),
    );
    drop(first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let (again, banner) = start_dev(&file);
    assert_eq!(banner_value(&banner, "JWT secret:"), secret);
    assert_eq!(banner_value(&banner, "API key:"), key);
    drop(again);

    std::fs::remove_file(&file).unwrap();
    let (rotated, banner) = start_dev(&file);
    assert_ne!(banner_value(&banner, "JWT secret:"), secret);
    assert_ne!(banner_value(&banner, "API key:"), key);
    drop(rotated);

    std::fs::write(&file, "not json").unwrap();
    let out = fanout()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .arg("--dev-file")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("delete it"), "{err}");
}
