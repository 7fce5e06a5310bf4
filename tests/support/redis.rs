//! Real `redis-server` processes for tests, from `fanout-testkit` (shared
//! with fanout-bench): a free port, no persistence, PING until up, the log
//! dumped on failure, killed on drop. Also the `redis-cli` helper and
//! Cluster topologies. This layer adds the tests' patience and turns the
//! testkit's errors into test failures.
//!
//! `REDIS_SERVER_BIN` / `REDIS_CLI_BIN` override the binaries. When
//! redis-server is missing, tests skip with a message unless
//! `FANOUT_REQUIRE_REDIS=1` (as `make test` sets), where they fail.

#![allow(dead_code)]

use fanout_testkit as testkit;

pub fn server_bin() -> String {
    testkit::server_bin().to_string_lossy().into_owned()
}

pub fn cli_bin() -> String {
    testkit::cli_bin().to_string_lossy().into_owned()
}

/// False (after saying why) when redis-server is not installed and not
/// required; panics when it is required.
pub fn available() -> bool {
    testkit::available_for_tests().unwrap_or_else(|e| panic!("{e}"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    testkit::free_port().expect("a free port")
}

pub struct RedisServer {
    pub port: u16,
    inner: testkit::RedisServer,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// Starts on `port` with extra `redis-server` arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let inner = testkit::RedisServer::builder()
            .port(port)
            .args(extra.iter().copied())
            .patience(super::patience())
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        Self::from(inner)
    }

    pub fn log(&self) -> String {
        self.inner.log()
    }

    pub fn url(&self) -> String {
        self.inner.url()
    }

    /// Runs `redis-cli -p <port> args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Whether the server runs (was not killed).
    pub fn alive(&self) -> bool {
        self.inner.pid().is_some()
    }

    /// SIGKILLs the server (an outage, not a clean shutdown).
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// SIGSTOPs the server: it keeps its connections and answers nothing
    /// (a Redis stuck in a long command, a paused VM).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONTs a frozen server.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.inner.pid().expect("redis-server runs").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.inner.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Calls of a command since start, from `INFO commandstats`.
    pub fn command_calls(&self, command: &str) -> u64 {
        self.inner.command_calls(command).expect("redis-cli runs")
    }

    /// Subscribers of a channel (`PUBSUB NUMSUB`).
    pub fn numsub(&self, channel: &str) -> u64 {
        self.inner.numsub(channel).expect("redis-cli runs")
    }
}

impl From<testkit::RedisServer> for RedisServer {
    fn from(inner: testkit::RedisServer) -> Self {
        Self {
            port: inner.port,
            inner,
        }
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    testkit::cli(port, args).expect("redis-cli runs")
}

/// A Redis Cluster of `masters` masters and, optionally, replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        Self::start_with_replicas(masters, 0)
    }

    /// `masters` masters with `replicas` replicas each.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> Self {
        let cluster =
            testkit::RedisCluster::start_with_replicas(masters, replicas, super::patience())
                .unwrap_or_else(|e| panic!("{e}"));
        Self {
            nodes: cluster.nodes.into_iter().map(RedisServer::from).collect(),
        }
    }

    /// A replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let master_id = cli(master, &["CLUSTER", "MYID"]);
        self.nodes
            .iter()
            .filter(|n| n.port != master && n.alive())
            .find(|n| {
                let id = n.cli(&["CLUSTER", "MYID"]);
                n.cli(&["CLUSTER", "NODES"])
                    .lines()
                    .find(|l| l.starts_with(id.trim()))
                    .is_some_and(|l| l.split_whitespace().nth(3) == Some(master_id.trim()))
            })
            .map(|n| n.port)
    }

    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port")
    }

    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The node that owns `key`'s hash slot (of those still running).
    pub fn owner_of(&self, key: &str) -> u16 {
        self.try_owner_of(key).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The node that owns `key`'s hash slot, or why none does right now
    /// (during a failover).
    pub fn try_owner_of(&self, key: &str) -> std::io::Result<u16> {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.port)
            .collect();
        testkit::slot_owner(&ports, key)
    }
}
