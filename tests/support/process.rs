//! fanout as a real process: `fanout serve` with the given flags, its
//! client and internal addresses read from its JSON log, its output kept
//! for failure reports, killed on drop.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
};

use serde_json::{Value, json};

use super::{API_KEY, API_KEY_2, Client, SECRET};

pub struct FanoutProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub internal: SocketAddr,
    pub node_id: String,
    log: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl FanoutProcess {
    /// Starts `fanout serve` as node `node_id` with extra flags.
    pub fn start(node_id: &str, args: &[&str]) -> Self {
        Self::start_with_open_files(node_id, args, None)
    }

    /// Starts a node whose open-files limit (soft and hard) is `limit`.
    pub fn start_with_open_files(node_id: &str, args: &[&str], limit: Option<u64>) -> Self {
        let bin = env!("CARGO_BIN_EXE_fanout");
        let mut cmd = match limit {
            // The shell lowers its limit, then becomes fanout (exec).
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    bin,
                ]);
                sh
            }
            None => Command::new(bin),
        };
        for (key, _) in std::env::vars() {
            if key.starts_with("FANOUT_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--internal-addr",
                "127.0.0.1:0",
                "--node-id",
                node_id,
                "--log-format",
                "json",
                "--log",
                "info",
            ])
            .args(args)
            .env("FANOUT_JWT_SECRET", SECRET)
            .env("FANOUT_API_KEYS", format!("{API_KEY},{API_KEY_2}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fanout starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["fields"]["message"] == "fanout listening"
                    {
                        let _ = tx.send(v["fields"].clone());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut p = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_id: node_id.to_owned(),
            log,
            http: reqwest::Client::new(),
        };
        match rx.recv_timeout(super::patience()) {
            Ok(fields) => {
                p.addr = fields["addr"].as_str().unwrap().parse().unwrap();
                p.internal = fields["internal"].as_str().unwrap().parse().unwrap();
            }
            Err(_) => panic!("fanout {node_id} did not start:\n{}", p.log()),
        }
        p
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (`TERM`, `INT`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (up to the patience, several times over) for the process to
    /// exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, patience_factor: u32) -> Option<i32> {
        let deadline = std::time::Instant::now() + super::patience() * patience_factor;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fanout {} did not exit:\n{}",
                self.node_id,
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL: the node dies without any cleanup.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client of `uid` on this node, past its welcome frame.
    pub async fn client(&self, uid: &str) -> Client {
        self.client_welcome(uid).await.0
    }

    /// A client of `uid` on this node, and its welcome frame.
    pub async fn client_welcome(&self, uid: &str) -> (Client, Value) {
        let token = super::mint(uid);
        let mut c = Client::connect(&format!("ws://{}/ws?token={token}", self.addr)).await;
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        assert_eq!(w["node"], self.node_id);
        (c, w)
    }

    /// A client of `uid` that authenticates with `since`; its first frame.
    pub async fn resume(&self, uid: &str, since: Value) -> (Client, Value) {
        let mut c = Client::connect(&format!("ws://{}/ws", self.addr)).await;
        let first = c
            .call(json!({"type": "auth", "token": super::mint(uid), "since": since}))
            .await;
        (c, first)
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        super::api_call(&self.http, self.addr, method, path, body).await
    }

    pub async fn publish(&self, to: Value, data: Value) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            "/api/publish",
            Some(json!({"to": to, "event": "e", "data": data})),
        )
        .await
    }

    pub async fn internal_get(&self, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("http://{}{path}", self.internal))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A counter's value (summed over label sets matching `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = self.internal_get("/metrics").await;
        super::metric_value(&text, name, labels)
    }
}

impl Drop for FanoutProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- fanout {} log ---\n{}", self.node_id, self.log());
        }
    }
}
