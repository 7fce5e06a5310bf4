//! Real `redis-server` processes: a free port, no persistence (`--save ""
//! --appendonly no`), PING until up while checking the child is alive, its
//! log (in a private temporary directory) in every startup error, SIGKILL
//! and restart on the same port, killed and cleaned up on drop.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The `redis-server` to run: `REDIS_SERVER_BIN`, else the one on `PATH`.
pub fn server_bin() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN").map_or_else(|| "redis-server".into(), PathBuf::from)
}

/// The `redis-cli` to run: `REDIS_CLI_BIN`, else the one on `PATH`.
pub fn cli_bin() -> PathBuf {
    std::env::var_os("REDIS_CLI_BIN").map_or_else(|| "redis-cli".into(), PathBuf::from)
}

/// Whether `bin --version` runs and succeeds.
pub fn server_found(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// For tests: `Ok(true)` when redis-server is there; `Ok(false)`, after
/// saying why on stderr, when it is missing and the test may skip;
/// `Err` when it is missing but required (`FANOUT_REQUIRE_REDIS=1`, as
/// `make test` sets), which the test turns into a failure.
pub fn available_for_tests() -> Result<bool, String> {
    if server_found(&server_bin()) {
        return Ok(true);
    }
    if std::env::var("FANOUT_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
        return Err("redis-server not found and FANOUT_REQUIRE_REDIS=1".into());
    }
    eprintln!("SKIPPED: redis-server not found (install it, or run `make test`)");
    Ok(false)
}

/// Runs `redis-cli -p <port> args…` and returns what it printed on stdout
/// (`redis-cli` prints command errors there too, and exits 0).
pub fn cli(port: u16, args: &[&str]) -> io::Result<String> {
    let bin = cli_bin();
    let out = Command::new(&bin)
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", bin.display())))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How to start a [`RedisServer`]; [`RedisServer::builder`] makes one.
#[derive(Debug, Clone)]
pub struct RedisBuilder {
    bin: PathBuf,
    port: Option<u16>,
    args: Vec<String>,
    patience: Duration,
}

impl RedisBuilder {
    /// The `redis-server` binary (default: [`server_bin`]).
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = bin.into();
        self
    }

    /// The port to listen on (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Extra `redis-server` arguments, after the builder's own.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How long to wait for the first PONG (default 10 s).
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Spawns the server and waits until it answers PING.
    pub fn start(self) -> io::Result<RedisServer> {
        let port = match self.port {
            Some(p) => p,
            None => crate::free_port()?,
        };
        let dir = std::env::temp_dir().join(format!("fanout-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            config: self,
        };
        server.spawn()?;
        Ok(server)
    }
}

/// One `redis-server` child process on `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    /// None between [`kill`](Self::kill) and [`restart`](Self::restart).
    child: Option<Child>,
    /// Working directory and log file; removed on drop.
    dir: PathBuf,
    config: RedisBuilder,
}

impl RedisServer {
    /// A server on a free port, with the default binary and patience.
    pub fn start() -> io::Result<Self> {
        Self::builder().start()
    }

    pub fn builder() -> RedisBuilder {
        RedisBuilder {
            bin: server_bin(),
            port: None,
            args: Vec::new(),
            patience: Duration::from_secs(10),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let bin = &self.config.bin;
        // Errors before the log file is open (a bad option) go to stderr.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())?;
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.config.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "starting {} (install redis-server, or set REDIS_SERVER_BIN): {e}",
                        bin.display()
                    ),
                )
            })?;
        self.child = Some(child);
        let addr = self.addr();
        let deadline = Instant::now() + self.config.patience;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(self.failed(&format!("exited with {status}")));
            }
            if answers_ping(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(self.failed(&format!(
                    "never answered PING in {:?}",
                    self.config.patience
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn failed(&self, what: &str) -> io::Error {
        io::Error::other(format!(
            "redis-server on port {} {what}; its log:\n{}",
            self.port,
            self.log()
        ))
    }

    /// The server's log so far, then anything it wrote to stderr.
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        if !stderr.is_empty() {
            log.push_str("--- stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `redis-cli -p <port> args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        cli(self.port, args)
    }

    /// SIGKILLs the server (an outage, not a clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server if it runs, and starts it again on the same port
    /// with the same arguments.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Calls of a command since start, from `INFO commandstats` (0 if never
    /// called).
    pub fn command_calls(&self, command: &str) -> io::Result<u64> {
        let info = self.cli(&["INFO", "commandstats"])?;
        let key = format!("cmdstat_{command}:calls=");
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Subscribers of a channel (`PUBSUB NUMSUB`).
    pub fn numsub(&self, channel: &str) -> io::Result<u64> {
        let out = self.cli(&["PUBSUB", "NUMSUB", channel])?;
        Ok(out
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- redis-server :{} log ---\n{}", self.port, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An inline `PING` answered with `+PONG` (or `-NOAUTH`: up, but with a
/// password the caller configured).
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// A Redis Cluster, one [`RedisServer`] per node: masters, and optionally
/// replicas of them.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` servers in cluster mode, joins them with
    /// `redis-cli --cluster create`, and waits (up to three times
    /// `patience`) until every node reports `cluster_state:ok`.
    pub fn start(masters: usize, patience: Duration) -> io::Result<Self> {
        Self::start_with_replicas(masters, 0, patience)
    }

    /// As [`RedisCluster::start`], with `replicas` replicas per master
    /// (`redis-cli` picks which server replicates which).
    pub fn start_with_replicas(
        masters: usize,
        replicas: usize,
        patience: Duration,
    ) -> io::Result<Self> {
        let count = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            // The bus port is port + 10000 unless set: past 65535 for
            // ports from the ephemeral range.
            let bus = crate::free_port()?.to_string();
            let node = RedisServer::builder()
                .patience(patience)
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ])
                .start()?;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(cli_bin())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let deadline = Instant::now() + patience * 3;
        loop {
            let mut ok = true;
            for n in &nodes {
                ok &= n.cli(&["CLUSTER", "INFO"])?.contains("cluster_state:ok");
            }
            if ok {
                return Ok(Self { nodes });
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "the cluster never reached cluster_state:ok",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL fred understands, naming the first node.
    pub fn url(&self) -> String {
        let port = self.nodes.first().map_or(0, |n| n.port);
        format!("redis-cluster://127.0.0.1:{port}")
    }

    /// The port of the node that owns `key`'s hash slot.
    pub fn owner_of(&self, key: &str) -> io::Result<u16> {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(|n| n.port)
            .collect();
        slot_owner(&ports, key)
    }

    /// The port of a replica of the master on `master_port`, if it has one.
    pub fn replica_of(&self, master_port: u16) -> io::Result<Option<u16>> {
        let master_id = cli(master_port, &["CLUSTER", "MYID"])?;
        let master_id = master_id.trim();
        for n in self.nodes.iter().filter(|n| n.port != master_port) {
            let info = n.cli(&["CLUSTER", "NODES"])?;
            let id = n.cli(&["CLUSTER", "MYID"])?;
            let mine = info.lines().find(|l| l.starts_with(id.trim()));
            if mine.is_some_and(|l| l.split_whitespace().nth(3) == Some(master_id)) {
                return Ok(Some(n.port));
            }
        }
        Ok(None)
    }
}

/// Of the cluster nodes on `ports`, the one whose slot ranges (`CLUSTER
/// NODES`) hold `key`'s slot (`CLUSTER KEYSLOT`).
pub fn slot_owner(ports: &[u16], key: &str) -> io::Result<u16> {
    let first = *ports
        .first()
        .ok_or_else(|| io::Error::other("no cluster nodes"))?;
    let slot_text = cli(first, &["CLUSTER", "KEYSLOT", key])?;
    let slot: u16 = slot_text.trim().parse().map_err(|_| {
        io::Error::other(format!("CLUSTER KEYSLOT answered {:?}", slot_text.trim()))
    })?;
    for &port in ports {
        let id = cli(port, &["CLUSTER", "MYID"])?;
        let id = id.trim();
        let nodes = cli(port, &["CLUSTER", "NODES"])?;
        for line in nodes.lines().filter(|l| l.starts_with(id)) {
            // Fields 9.. are slot ranges `lo-hi` or single slots.
            for range in line.split_whitespace().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return Ok(port);
                }
            }
        }
    }
    Err(io::Error::other(format!("no node owns slot {slot}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start, PING through redis-cli, SIGKILL, restart on the same port,
    /// and a clear error (with the log) when the server cannot start.
    #[test]
    fn server_starts_restarts_and_reports_failures() {
        if !available_for_tests().unwrap() {
            return;
        }
        let mut s = RedisServer::start().unwrap();
        let port = s.port;
        assert!(s.pid().is_some());
        assert_eq!(s.cli(&["PING"]).unwrap().trim(), "PONG");
        assert_eq!(s.numsub("nobody").unwrap(), 0);
        assert!(s.command_calls("ping").unwrap() >= 1);
        s.kill();
        assert!(s.pid().is_none());
        assert!(!answers_ping(s.addr()));
        s.restart().unwrap();
        assert_eq!(s.port, port);
        assert!(answers_ping(s.addr()));

        let err = RedisServer::builder()
            .args(["--no-such-option", "x"])
            .start()
            .unwrap_err();
        assert!(err.to_string().contains("exited"), "{err}");
        assert!(err.to_string().contains("no-such-option"), "{err}");
        let err = RedisServer::builder()
            .bin("/nonexistent/redis-server")
            .start()
            .unwrap_err();
        assert!(err.to_string().contains("REDIS_SERVER_BIN"), "{err}");
    }
}
