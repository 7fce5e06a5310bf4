//! Deployments the suites start for themselves: a redis-server on a free
//! port (`fanout-testkit`, the launcher the integration tests use too),
//! fanout nodes, Socket.IO nodes, Sockudo nodes. Every process is killed on
//! drop.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use fanout_testkit::RedisServer;

use crate::http;

/// The secret and API key every node the bench starts is configured with.
pub(crate) const SECRET: &str = "fanout-bench-secret-0123456789abcdef";
pub(crate) const API_KEY: &str = "fanout-bench-api-key";

/// How long a process the bench starts may take to become ready.
const STARTUP: Duration = Duration::from_secs(20);

fn free_port() -> anyhow::Result<u16> {
    fanout_testkit::free_port().context("finding a free port")
}

/// A child process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    pub(crate) name: String,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited: {status}", self.name)),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET <path>` on `addr` answers 200, failing early if the
/// process exits.
async fn wait_ready(proc_: &mut Proc, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if let Some(exit) = proc_.exited() {
            bail!("{exit} before it was ready");
        }
        if http::get_status(addr, path, Duration::from_secs(2)).await == Some(200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} did not answer GET {path} with 200 within {STARTUP:?}",
        proc_.name
    )
}

/// A redis-server for the nodes and the bench, on a free port.
pub(crate) fn redis(bin: &Path) -> anyhow::Result<RedisServer> {
    RedisServer::builder()
        .bin(bin)
        .args(["--maxclients", "10000"])
        .patience(STARTUP)
        .start()
        .context("starting redis-server")
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) proc_: Proc,
    pub(crate) addr: SocketAddr,
    /// How a fanout node was started, to start it again on the same ports
    /// (`None` for the peers).
    launch: Option<Launch>,
}

/// The command line of one fanout node.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    id: String,
    redis: Option<String>,
    internal: SocketAddr,
    extra: Vec<String>,
}

/// Starts `fanout serve` with the bench's secret and API key, on free
/// ports; `extra` are more `serve` options (`--history false`).
pub(crate) async fn fanout(
    bin: &Path,
    id: &str,
    redis: Option<&str>,
    extra: &[String],
) -> anyhow::Result<Node> {
    let (port, internal) = (free_port()?, free_port()?);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let launch = Launch {
        bin: bin.to_owned(),
        id: id.to_owned(),
        redis: redis.map(str::to_owned),
        internal: SocketAddr::from(([127, 0, 0, 1], internal)),
        extra: extra.to_vec(),
    };
    let proc_ = start_fanout(&launch, addr).await?;
    Ok(Node {
        proc_,
        addr,
        launch: Some(launch),
    })
}

async fn start_fanout(launch: &Launch, addr: SocketAddr) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(&launch.bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("FANOUT_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["serve", "--node-id", &launch.id])
        .args(["--listen", &addr.to_string()])
        .args(["--internal-addr", &launch.internal.to_string()])
        .args(&launch.extra)
        .env("FANOUT_JWT_SECRET", SECRET)
        .env("FANOUT_API_KEYS", API_KEY)
        .env("FANOUT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = &launch.redis {
        cmd.args(["--redis-url", url]);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", launch.bin.display()))?;
    let mut proc_ = Proc {
        child,
        name: format!("fanout {}", launch.id),
    };
    wait_ready(&mut proc_, launch.internal, "/readyz").await?;
    Ok(proc_)
}

impl Node {
    /// Sends SIGTERM and waits until the process exits (it drains its
    /// clients first), at most `patience`; then kills it and fails.
    /// Returns how long it took.
    pub(crate) async fn terminate(&mut self, patience: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        sigterm(self.proc_.pid())?;
        while started.elapsed() < patience {
            if self.proc_.exited().is_some() {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.proc_.child.kill();
        let _ = self.proc_.child.wait();
        bail!(
            "{} had not exited {patience:?} after SIGTERM: killed",
            self.proc_.name
        )
    }

    /// A fanout node's internal address (`/metrics`, `/readyz`).
    pub(crate) fn internal(&self) -> Option<SocketAddr> {
        self.launch.as_ref().map(|l| l.internal)
    }

    /// Starts a fanout node again with the same options and ports, and
    /// waits until it is ready.
    pub(crate) async fn start_again(&mut self) -> anyhow::Result<()> {
        let launch = self
            .launch
            .as_ref()
            .context("only fanout nodes the bench started can be restarted")?;
        self.proc_ = start_fanout(launch, self.addr).await?;
        Ok(())
    }
}

/// Sends SIGTERM to a process.
pub(crate) fn sigterm(pid: u32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("SIGTERM to process {}", pid.as_raw_nonzero()))
}

/// Starts `node server.js` from the Socket.IO peer directory.
pub(crate) async fn socketio(
    node_bin: &Path,
    dir: &Path,
    id: &str,
    redis: Option<&str>,
) -> anyhow::Result<Node> {
    if !dir.join("node_modules").is_dir() {
        bail!(
            "{}/node_modules is missing: run `npm ci --prefix {}` (make bench-compare does)",
            dir.display(),
            dir.display()
        );
    }
    let mut cmd = Command::new(node_bin);
    cmd.arg(dir.join("server.js"))
        .args(["--host", "127.0.0.1", "--port", "0", "--node-id", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = redis {
        cmd.args(["--redis", url]);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} (install Node.js)", node_bin.display()))?;
    let stdout = child.stdout.take().context("socket.io stdout")?;
    let mut proc_ = Proc {
        child,
        name: format!("socket.io {id}"),
    };
    // The first line says where it listens; the rest is drained so the
    // node never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| anyhow::anyhow!("{} did not say where it listens", proc_.name))?;
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("socket.io node said {line:?}"))?;
    let port = v["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("socket.io node did not report its port")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(&mut proc_, addr, "/healthz").await?;
    Ok(Node {
        proc_,
        addr,
        launch: None,
    })
}

/// The Sockudo release `bench/peers/sockudo/build.sh` installs (keep the
/// two in step; a test checks they are).
pub(crate) const SOCKUDO_VERSION: &str = "5.2.0";

/// Where `bench/peers/sockudo/build.sh` installs Sockudo:
/// `${FANOUT_PEER_CACHE:-$HOME/.cache/fanout-peers}/sockudo-<version>/bin/sockudo`.
pub(crate) fn default_sockudo_bin() -> Option<PathBuf> {
    let cache = match std::env::var_os("FANOUT_PEER_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/fanout-peers"),
    };
    Some(
        cache
            .join(format!("sockudo-{SOCKUDO_VERSION}"))
            .join("bin/sockudo"),
    )
}

/// Starts a Sockudo node with `config` (the committed
/// `bench/peers/sockudo/sockudo.toml`) on free ports, its Redis adapter on
/// `redis`; ready once `GET /up/<app id>` answers 200, which needs the app
/// of the file: Sockudo falls back to its defaults, silently, when it cannot
/// read the file.
pub(crate) async fn sockudo(
    bin: &Path,
    config: &Path,
    id: &str,
    redis: &str,
    app_id: &str,
) -> anyhow::Result<Node> {
    let (port, metrics) = (free_port()?, free_port()?);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = config
        .canonicalize()
        .with_context(|| format!("Sockudo's configuration {}", config.display()))?;
    // Sockudo reads `config/config.{toml,json}` from its working directory
    // before `--config`, and many environment variables after it: a
    // directory with neither, and only the variables that differ per node.
    let dir = config.parent().context("the configuration's directory")?;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .current_dir(dir)
        .arg("--config")
        .arg(&config)
        .env("PORT", port.to_string())
        .env("METRICS_PORT", metrics.to_string())
        .env("REDIS_URL", redis)
        .env("INSTANCE_PROCESS_ID", id)
        .env("RUST_LOG", "warn")
        .env("LOG_COLORS_ENABLED", "false")
        // It logs to stdout, where the bench's report goes.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    let child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (bench/peers/sockudo/build.sh builds it)",
            bin.display()
        )
    })?;
    let mut proc_ = Proc {
        child,
        name: format!("sockudo {id}"),
    };
    wait_ready(&mut proc_, addr, &format!("/up/{app_id}")).await?;
    Ok(Node {
        proc_,
        addr,
        launch: None,
    })
}

/// Looks for an executable: an explicit path, next to this executable, or on PATH.
pub(crate) fn find_bin(explicit: Option<&Path>, name: &str) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join(name);
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from(name)
}
