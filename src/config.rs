//! Command line and environment configuration.
//!
//! Every `serve` option is both a flag and a `FANOUT_*` environment variable
//! (the `ENV_*` constants below; docs/configuration.md lists them all).
//! clap parses and explains them; [`Config::validate`] checks what clap
//! cannot (cross-field rules, missing secrets) and reports every problem at
//! once. Tests build a `Config` with [`Config::default`] and change fields.

use std::{fmt, net::SocketAddr, time::Duration};

use clap::{Args, FromArgMatches, Parser, Subcommand, builder::BoolishValueParser};

pub const ENV_LISTEN: &str = "FANOUT_LISTEN";
pub const ENV_NODE_ID: &str = "FANOUT_NODE_ID";
pub const ENV_DEV: &str = "FANOUT_DEV";
pub const ENV_DEV_FILE: &str = "FANOUT_DEV_FILE";
pub const ENV_HTTP_HEADER_TIMEOUT: &str = "FANOUT_HTTP_HEADER_TIMEOUT";
pub const ENV_MAX_CONNECTIONS: &str = "FANOUT_MAX_CONNECTIONS";
pub const ENV_JWT_ALGORITHM: &str = "FANOUT_JWT_ALGORITHM";
pub const ENV_JWT_SECRET: &str = "FANOUT_JWT_SECRET";
pub const ENV_JWT_PUBLIC_KEY: &str = "FANOUT_JWT_PUBLIC_KEY";
pub const ENV_JWT_ISSUER: &str = "FANOUT_JWT_ISSUER";
pub const ENV_JWT_AUDIENCE: &str = "FANOUT_JWT_AUDIENCE";
pub const ENV_API_KEYS: &str = "FANOUT_API_KEYS";
pub const ENV_ALLOWED_ORIGINS: &str = "FANOUT_ALLOWED_ORIGINS";
pub const ENV_AUTH_TIMEOUT: &str = "FANOUT_AUTH_TIMEOUT";
pub const ENV_HEARTBEAT: &str = "FANOUT_HEARTBEAT";
pub const ENV_IDLE_TIMEOUT: &str = "FANOUT_IDLE_TIMEOUT";
pub const ENV_WRITE_TIMEOUT: &str = "FANOUT_WRITE_TIMEOUT";
pub const ENV_OUTBOUND_QUEUE: &str = "FANOUT_OUTBOUND_QUEUE";
pub const ENV_MAX_FRAME: &str = "FANOUT_MAX_FRAME";
pub const ENV_MAX_JSON_DEPTH: &str = "FANOUT_MAX_JSON_DEPTH";
pub const ENV_MAX_GROUPS: &str = "FANOUT_MAX_GROUPS";
pub const ENV_MAX_USER_CONNECTIONS: &str = "FANOUT_MAX_USER_CONNECTIONS";
pub const ENV_CLIENT_FRAME_RATE: &str = "FANOUT_CLIENT_FRAME_RATE";
pub const ENV_CLIENT_FRAME_BURST: &str = "FANOUT_CLIENT_FRAME_BURST";
pub const ENV_CLIENT_PUBLISH_RATE: &str = "FANOUT_CLIENT_PUBLISH_RATE";
pub const ENV_CLIENT_PUBLISH_BURST: &str = "FANOUT_CLIENT_PUBLISH_BURST";
pub const ENV_CLIENT_JOIN_RATE: &str = "FANOUT_CLIENT_JOIN_RATE";
pub const ENV_CLIENT_JOIN_BURST: &str = "FANOUT_CLIENT_JOIN_BURST";
pub const ENV_API_RATE: &str = "FANOUT_API_RATE";
pub const ENV_API_BURST: &str = "FANOUT_API_BURST";
pub const ENV_API_BODY_LIMIT: &str = "FANOUT_API_BODY_LIMIT";
pub const ENV_API_TIMEOUT: &str = "FANOUT_API_TIMEOUT";
pub const ENV_WS_READ_BUFFER: &str = "FANOUT_WS_READ_BUFFER";
pub const ENV_WS_WRITE_BUFFER: &str = "FANOUT_WS_WRITE_BUFFER";
pub const ENV_SHUTDOWN_GRACE: &str = "FANOUT_SHUTDOWN_GRACE";
pub const ENV_DRAIN_WINDOW: &str = "FANOUT_DRAIN_WINDOW";
pub const ENV_DRAIN_RATE: &str = "FANOUT_DRAIN_RATE";
pub const ENV_INTERNAL_ADDR: &str = "FANOUT_INTERNAL_ADDR";
pub const ENV_REDIS_URL: &str = "FANOUT_REDIS_URL";
pub const ENV_REDIS_CLUSTER: &str = "FANOUT_REDIS_CLUSTER";
pub const ENV_REDIS_SENTINEL: &str = "FANOUT_REDIS_SENTINEL";
pub const ENV_REDIS_SENTINEL_MASTER: &str = "FANOUT_REDIS_SENTINEL_MASTER";
pub const ENV_REDIS_PREFIX: &str = "FANOUT_REDIS_PREFIX";
pub const ENV_REDIS_PUBSUB_CONNECTIONS: &str = "FANOUT_REDIS_PUBSUB_CONNECTIONS";
pub const ENV_REDIS_TIMEOUT: &str = "FANOUT_REDIS_TIMEOUT";
pub const ENV_REDIS_PROBE_INTERVAL: &str = "FANOUT_REDIS_PROBE_INTERVAL";
pub const ENV_UNSUBSCRIBE_LINGER: &str = "FANOUT_UNSUBSCRIBE_LINGER";
pub const ENV_QUERY_TIMEOUT: &str = "FANOUT_QUERY_TIMEOUT";
pub const ENV_NODE_FENCE_AFTER: &str = "FANOUT_NODE_FENCE_AFTER";
pub const ENV_HISTORY: &str = "FANOUT_HISTORY";
pub const ENV_HISTORY_USER_SIZE: &str = "FANOUT_HISTORY_USER_SIZE";
pub const ENV_HISTORY_USER_TTL: &str = "FANOUT_HISTORY_USER_TTL";
pub const ENV_HISTORY_GROUP_SIZE: &str = "FANOUT_HISTORY_GROUP_SIZE";
pub const ENV_HISTORY_GROUP_TTL: &str = "FANOUT_HISTORY_GROUP_TTL";
pub const ENV_HISTORY_ALL_SIZE: &str = "FANOUT_HISTORY_ALL_SIZE";
pub const ENV_HISTORY_ALL_TTL: &str = "FANOUT_HISTORY_ALL_TTL";
pub const ENV_HISTORY_META_TTL: &str = "FANOUT_HISTORY_META_TTL";
pub const ENV_IDEMPOTENCY_TTL: &str = "FANOUT_IDEMPOTENCY_TTL";
pub const ENV_MAX_RECOVERY: &str = "FANOUT_MAX_RECOVERY";
pub const ENV_LOG: &str = "FANOUT_LOG";
pub const ENV_LOG_FORMAT: &str = "FANOUT_LOG_FORMAT";

const KIB: u64 = 1024;
/// Most messages a channel's history, or one resume, may hold.
pub const MAX_HISTORY_SIZE: usize = 100_000;
/// Bounds of `--max-json-depth`: fanout's own frames nest `data` plus one
/// level in places (an `auth` frame's `since` is 3 deep as a whole), and
/// `fanout_publish` decodes a backend's body (one level above `data`) with
/// Redis's cjson, which stops at 1000 levels.
const MIN_JSON_DEPTH: usize = 2;
const MAX_JSON_DEPTH: usize = 999;
const MIB: u64 = 1024 * KIB;

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    about = "A real-time push gateway: WebSocket clients, per-user/group/all delivery, an HTTP publish API",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<Config>),
    /// Mint an HS256 client token with the configured secret (development and tests).
    Token(TokenArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The JWT signature algorithms fanout accepts (one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        })
    }
}

/// The JWT options `serve` and `token` share.
#[derive(Debug, Clone, Default, Args)]
pub struct JwtArgs {
    /// HS256 shared secret: verifies client tokens (serve) or signs one (token).
    #[arg(id = "jwt_secret", long = "jwt-secret", value_name = "JWT_SECRET", env = ENV_JWT_SECRET, hide_env_values = true)]
    pub secret: Option<String>,

    /// `iss` claim: required in client tokens when set (serve), or included (token).
    #[arg(id = "jwt_issuer", long = "jwt-issuer", value_name = "JWT_ISSUER", env = ENV_JWT_ISSUER)]
    pub issuer: Option<String>,

    /// `aud` claim: required in client tokens when set (serve), or included (token).
    #[arg(id = "jwt_audience", long = "jwt-audience", value_name = "JWT_AUDIENCE", env = ENV_JWT_AUDIENCE)]
    pub audience: Option<String>,
}

/// Everything `fanout serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address for WebSocket clients and the HTTP API.
    #[arg(long, env = ENV_LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Internal address for /metrics, /healthz and /readyz (keep it off the public network).
    #[arg(long, env = ENV_INTERNAL_ADDR, default_value = "0.0.0.0:9090")]
    pub internal_addr: SocketAddr,

    /// Redis URL; without it (and without --redis-sentinel) fanout runs as a single node on
    /// its in-process broker. `redis://[user:pass@]host:port`, `rediss://` for TLS,
    /// `redis-cluster://host:port` (`rediss-cluster://` with TLS) for Redis Cluster,
    /// `redis-sentinel://sentinel:port?sentinelServiceName=mymaster` (`rediss-sentinel://`)
    /// for Sentinel; `valkey://` and `valkeys://` work too.
    #[arg(long, env = ENV_REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Treat --redis-url as a seed node of a Redis Cluster (sharded pub/sub).
    #[arg(long, env = ENV_REDIS_CLUSTER, value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub redis_cluster: bool,

    /// Sentinel addresses (`host:port`, comma-separated); credentials, TLS and database
    /// come from --redis-url when given.
    #[arg(long, env = ENV_REDIS_SENTINEL, value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,

    /// Name of the master the sentinels watch.
    #[arg(long, env = ENV_REDIS_SENTINEL_MASTER, default_value = "mymaster")]
    pub redis_sentinel_master: String,

    /// Prefix of every Redis channel (`<prefix>:user:<uid>`), so deployments can share a Redis.
    #[arg(long, env = ENV_REDIS_PREFIX, default_value = "fanout")]
    pub redis_prefix: String,

    /// Subscriber connections per node; channels are spread over them.
    #[arg(long, env = ENV_REDIS_PUBSUB_CONNECTIONS, default_value_t = 4)]
    pub redis_pubsub_connections: usize,

    /// Timeout of one Redis command and of connecting.
    #[arg(long, env = ENV_REDIS_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// How often a probe message checks that every pub/sub connection delivers.
    #[arg(long, env = ENV_REDIS_PROBE_INTERVAL, default_value = "5s", value_parser = parse_duration)]
    pub redis_probe_interval: Duration,

    /// How long a node stays subscribed to a channel after its last local subscriber left,
    /// to absorb reconnect flapping (Redis broker only).
    #[arg(long, env = ENV_UNSUBSCRIBE_LINGER, default_value = "1s", value_parser = parse_duration)]
    pub unsubscribe_linger: Duration,

    /// How long presence and stats queries wait for other nodes' answers.
    #[arg(long, env = ENV_QUERY_TIMEOUT, default_value = "1s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// A node that has not refreshed its heartbeat key in Redis for this long is fenced:
    /// another node closes its Redis connections (`CLIENT KILL`), so its users read
    /// offline and its subscriptions stop counting (Redis broker only; 0: off).
    #[arg(long, env = ENV_NODE_FENCE_AFTER, default_value = "10s", value_parser = parse_duration)]
    pub node_fence_after: Duration,

    /// Keep channel history so that reconnecting clients resume where they were
    /// (`false`: none is kept; messages still carry offsets, and only a client that
    /// missed nothing recovers).
    #[arg(long, env = ENV_HISTORY, value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub history: bool,

    /// Messages kept per `user:` channel (0: none).
    #[arg(long, env = ENV_HISTORY_USER_SIZE, default_value_t = 100)]
    pub history_user_size: usize,

    /// How long a `user:` channel's messages are kept.
    #[arg(long, env = ENV_HISTORY_USER_TTL, default_value = "5m", value_parser = parse_duration)]
    pub history_user_ttl: Duration,

    /// Messages kept per `group:` channel (0: none).
    #[arg(long, env = ENV_HISTORY_GROUP_SIZE, default_value_t = 100)]
    pub history_group_size: usize,

    /// How long a `group:` channel's messages are kept.
    #[arg(long, env = ENV_HISTORY_GROUP_TTL, default_value = "5m", value_parser = parse_duration)]
    pub history_group_ttl: Duration,

    /// Messages kept of `all` broadcasts (0: none).
    #[arg(long, env = ENV_HISTORY_ALL_SIZE, default_value_t = 100)]
    pub history_all_size: usize,

    /// How long `all` broadcasts are kept.
    #[arg(long, env = ENV_HISTORY_ALL_TTL, default_value = "5m", value_parser = parse_duration)]
    pub history_all_ttl: Duration,

    /// How long a channel's epoch and offset outlive its last message (at least the
    /// longest history TTL): a client away for longer resumes with `recovered: false`.
    #[arg(long, env = ENV_HISTORY_META_TTL, default_value = "1h", value_parser = parse_duration)]
    pub history_meta_ttl: Duration,

    /// How long a publish's `idempotency_key` is remembered (per channel).
    #[arg(long, env = ENV_IDEMPOTENCY_TTL, default_value = "5m", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// Most messages one resume replays on one channel; a client that missed more gets
    /// `recovered: false` and must reload.
    #[arg(long, env = ENV_MAX_RECOVERY, default_value_t = 1000)]
    pub max_recovery: usize,

    /// This node's id, shown to clients in `welcome.node` and in logs. Default: random.
    #[arg(long, env = ENV_NODE_ID)]
    pub node_id: Option<String>,

    /// Development mode: generate a JWT secret and an API key when none is set (kept in
    /// `--dev-file`), allow any Origin, serve the demo page at `/` with its `/dev/*`
    /// helpers, and print a ready-to-use token, the demo's address and a curl command.
    #[arg(long, env = ENV_DEV, value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub dev: bool,

    /// Development mode only: the file that keeps the generated JWT secret and API key, so
    /// that a restart keeps tokens and open pages working. Delete it to rotate them.
    #[arg(long, env = ENV_DEV_FILE, default_value = ".fanout-dev.json")]
    pub dev_file: std::path::PathBuf,

    /// JWT signature algorithm clients' tokens must use (the only one accepted).
    #[arg(long, env = ENV_JWT_ALGORITHM, value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub jwt_algorithm: JwtAlgorithm,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// RS256/ES256 public key: a PEM file path, or the PEM text itself.
    #[arg(long, env = ENV_JWT_PUBLIC_KEY)]
    pub jwt_public_key: Option<String>,

    /// API keys for the backend HTTP API, comma-separated (several allow rotation).
    #[arg(long, env = ENV_API_KEYS, value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// Origins allowed to open /ws, comma-separated (`https://app.example.com`), or `*`
    /// for any. Default: same-origin only. Requests without an Origin header always pass.
    #[arg(long, env = ENV_ALLOWED_ORIGINS, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// How long a client has to send a request's headers, from when its connection is
    /// accepted or its previous response was sent (so idle keep-alive connections close too).
    #[arg(long, env = ENV_HTTP_HEADER_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// Most connections (of every kind on the client listener: WebSocket, SSE, API, not yet
    /// authenticated) open at once; more are closed as soon as they are accepted. 0: the
    /// open-files limit minus 512.
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value_t = 0)]
    pub max_connections: usize,

    /// How long a client without `?token=` has to send its `auth` frame.
    #[arg(long, env = ENV_AUTH_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// Interval of server WebSocket pings (the first comes at a random point in
    /// [interval/2, interval)).
    #[arg(long, env = ENV_HEARTBEAT, default_value = "25s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// A connection that sends nothing (not even a pong) for this long is closed with 3012.
    #[arg(long, env = ENV_IDLE_TIMEOUT, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// A write to a client that makes no progress for this long ends the connection.
    #[arg(long, env = ENV_WRITE_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Bytes of frames queued for one client before it is cut off as a slow consumer
    /// (accepts KiB/MiB suffixes).
    #[arg(long, env = ENV_OUTBOUND_QUEUE, default_value = "1MiB", value_parser = parse_bytes)]
    pub outbound_queue: u64,

    /// Largest frame a client may send; bigger ones close the connection with 1009.
    #[arg(long, env = ENV_MAX_FRAME, default_value = "64KiB", value_parser = parse_bytes)]
    pub max_frame: u64,

    /// How deeply a message's `data` may nest arrays and objects (`{"a":[1]}` is 2), on
    /// every way in: client frames, the publish API, bodies from Redis. Deeper is refused
    /// (`too_deep`): receivers' JSON parsers have limits (.NET's is 64 for the whole frame).
    #[arg(long, env = ENV_MAX_JSON_DEPTH, default_value_t = 32)]
    pub max_json_depth: usize,

    /// Most groups one connection may be in.
    #[arg(long, env = ENV_MAX_GROUPS, default_value_t = 256)]
    pub max_groups: usize,

    /// Most connections one user (token `sub`) may hold on this node (0: no cap); one
    /// more is refused (`connection_limit`, close 3014, SSE: 429).
    #[arg(long, env = ENV_MAX_USER_CONNECTIONS, default_value_t = 100)]
    pub max_user_connections: usize,

    /// Frames of every kind one connection may send per second, on average (0: no
    /// limit); a connection over it is closed with 3013 `too_many_requests`.
    #[arg(long, env = ENV_CLIENT_FRAME_RATE, default_value_t = 100)]
    pub client_frame_rate: u32,

    /// Frames one connection may send at once above --client-frame-rate.
    #[arg(long, env = ENV_CLIENT_FRAME_BURST, default_value_t = 300)]
    pub client_frame_burst: u32,

    /// `publish` frames one connection may send per second, on average (0: no limit);
    /// one over it is refused with a `rate_limited` error, the connection stays.
    #[arg(long, env = ENV_CLIENT_PUBLISH_RATE, default_value_t = 10)]
    pub client_publish_rate: u32,

    /// `publish` frames one connection may send at once above --client-publish-rate.
    #[arg(long, env = ENV_CLIENT_PUBLISH_BURST, default_value_t = 50)]
    pub client_publish_burst: u32,

    /// `join` frames one connection may send per second, on average (0: no limit); one
    /// over it is refused with a `rate_limited` error, the connection stays.
    #[arg(long, env = ENV_CLIENT_JOIN_RATE, default_value_t = 10)]
    pub client_join_rate: u32,

    /// `join` frames one connection may send at once above --client-join-rate: at least
    /// --max-groups, so a client that reconnects can rejoin all its groups at once.
    #[arg(long, env = ENV_CLIENT_JOIN_BURST, default_value_t = 300)]
    pub client_join_burst: u32,

    /// API requests one API key may make per second on this node, on average (0: no
    /// limit); one over it gets 429 `rate_limited` with `Retry-After`.
    #[arg(long, env = ENV_API_RATE, default_value_t = 0)]
    pub api_rate: u32,

    /// API requests one API key may make at once above --api-rate.
    #[arg(long, env = ENV_API_BURST, default_value_t = 1000)]
    pub api_burst: u32,

    /// Largest HTTP API request body.
    #[arg(long, env = ENV_API_BODY_LIMIT, default_value = "64KiB", value_parser = parse_bytes)]
    pub api_body_limit: u64,

    /// Longest an HTTP API request may take before it fails with 503.
    #[arg(long, env = ENV_API_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// WebSocket read buffer per connection (tungstenite's default, 128 KiB, costs that
    /// much memory per idle connection).
    #[arg(long, env = ENV_WS_READ_BUFFER, default_value = "512B", value_parser = parse_bytes)]
    pub ws_read_buffer: u64,

    /// WebSocket write buffer per connection: frames are gathered up to this size
    /// before a socket write.
    #[arg(long, env = ENV_WS_WRITE_BUFFER, default_value = "4KiB", value_parser = parse_bytes)]
    pub ws_write_buffer: u64,

    /// On SIGTERM, clients are told to reconnect elsewhere and closed evenly over this
    /// window (at least 100 per second, so a small node does not wait it out), with
    /// reconnect hints spread over it too, so the other nodes see no thundering herd.
    #[arg(long, env = ENV_DRAIN_WINDOW, default_value = "30s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// Most connections closed per second while draining (0: no cap). Whatever is left
    /// at the end of the drain window is closed then.
    #[arg(long, env = ENV_DRAIN_RATE, default_value_t = 0)]
    pub drain_rate: u32,

    /// Extra time after the drain window for connections and in-flight requests to
    /// finish before the process exits anyway.
    #[arg(long, env = ENV_SHUTDOWN_GRACE, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log filter (`info`, `fanout=debug`, ...).
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Default for Config {
    /// The documented defaults: exactly what `fanout serve` parses with no
    /// flags and no environment, so each default is written once, in its
    /// `#[arg]` attribute above.
    fn default() -> Self {
        // Parsing no arguments can only fail if an attribute above is
        // broken, which every test (and `defaults_parse`) would show at once.
        #[allow(clippy::expect_used)]
        Self::defaults().expect("the built-in defaults parse")
    }
}

impl Config {
    fn defaults() -> Result<Self, clap::Error> {
        // Config's own command, with every `env = ...` dropped so that
        // FANOUT_* variables of the current process cannot leak in.
        let mut cmd = <Self as clap::Args>::augment_args(clap::Command::new("fanout-serve"))
            .mut_args(|a| a.env(None::<&str>));
        let matches = cmd.try_get_matches_from_mut(["fanout-serve"])?;
        Self::from_arg_matches(&matches)
    }
}

/// `fanout token` arguments.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The uid (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Groups the token may join: names or prefix patterns ending in `*`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Groups the token may publish to, same syntax.
    #[arg(long, value_delimiter = ',')]
    pub publish: Vec<String>,
    /// Lifetime (`exp` = now + ttl).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// What is wrong with a configuration; `main` prints it and exits 64.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Checks cross-field rules and required secrets, reporting every
    /// problem at once. `--dev` must have filled in generated secrets first.
    /// (The Redis settings and the JWT key are checked where they are
    /// built, by `app::Settings::from_config`, which reports them with
    /// these.)
    pub fn validate(self) -> Result<Self, ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Every problem [`Config::validate`] reports.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => need(
                self.jwt.secret.as_ref().is_some_and(|s| !s.is_empty()),
                format!(
                    "{ENV_JWT_SECRET} (--jwt-secret) is required for HS256 tokens (or use --dev)"
                ),
            ),
            alg => need(
                self.jwt_public_key.is_some(),
                format!("{ENV_JWT_PUBLIC_KEY} (--jwt-public-key) is required for {alg} tokens"),
            ),
        }
        need(
            self.api_keys.iter().any(|k| !k.is_empty()),
            format!("{ENV_API_KEYS} (--api-keys) needs at least one API key (or use --dev)"),
        );
        need(
            self.api_keys.iter().all(|k| k.len() >= 16 || self.dev),
            format!("{ENV_API_KEYS}: API keys must be at least 16 characters"),
        );
        for (name, d) in [
            (ENV_HTTP_HEADER_TIMEOUT, self.http_header_timeout),
            (ENV_AUTH_TIMEOUT, self.auth_timeout),
            (ENV_HEARTBEAT, self.heartbeat),
            (ENV_IDLE_TIMEOUT, self.idle_timeout),
            (ENV_WRITE_TIMEOUT, self.write_timeout),
            (ENV_API_TIMEOUT, self.api_timeout),
            (ENV_REDIS_TIMEOUT, self.redis_timeout),
            (ENV_REDIS_PROBE_INTERVAL, self.redis_probe_interval),
            (ENV_QUERY_TIMEOUT, self.query_timeout),
            (ENV_HISTORY_USER_TTL, self.history_user_ttl),
            (ENV_HISTORY_GROUP_TTL, self.history_group_ttl),
            (ENV_HISTORY_ALL_TTL, self.history_all_ttl),
            (ENV_IDEMPOTENCY_TTL, self.idempotency_ttl),
        ] {
            need(!d.is_zero(), format!("{name} must be longer than 0s"));
        }
        need(
            self.heartbeat < self.idle_timeout,
            format!(
                "{ENV_HEARTBEAT} must be shorter than {ENV_IDLE_TIMEOUT}, or idle clients that answer pings are cut off"
            ),
        );
        need(
            self.outbound_queue >= 4 * KIB,
            format!("{ENV_OUTBOUND_QUEUE} must be at least 4KiB"),
        );
        need(
            (256..=16 * MIB).contains(&self.max_frame),
            format!("{ENV_MAX_FRAME} must be between 256 bytes and 16MiB"),
        );
        need(
            (MIN_JSON_DEPTH..=MAX_JSON_DEPTH).contains(&self.max_json_depth),
            format!(
                "{ENV_MAX_JSON_DEPTH} must be between {MIN_JSON_DEPTH} (fanout's own frames nest that deep) and {MAX_JSON_DEPTH} (a body one level deeper must fit the 1000 levels Redis's cjson reads)"
            ),
        );
        need(
            (KIB..=16 * MIB).contains(&self.api_body_limit),
            format!("{ENV_API_BODY_LIMIT} must be between 1KiB and 16MiB"),
        );
        need(
            (256..=MIB).contains(&self.ws_read_buffer),
            format!("{ENV_WS_READ_BUFFER} must be between 256 bytes and 1MiB"),
        );
        need(
            self.ws_write_buffer <= MIB,
            format!("{ENV_WS_WRITE_BUFFER} must be at most 1MiB"),
        );
        need(
            self.max_groups > 0,
            format!("{ENV_MAX_GROUPS} must be at least 1"),
        );
        for (rate_name, rate, burst_name, burst) in [
            (
                ENV_CLIENT_FRAME_RATE,
                self.client_frame_rate,
                ENV_CLIENT_FRAME_BURST,
                self.client_frame_burst,
            ),
            (
                ENV_CLIENT_PUBLISH_RATE,
                self.client_publish_rate,
                ENV_CLIENT_PUBLISH_BURST,
                self.client_publish_burst,
            ),
            (
                ENV_CLIENT_JOIN_RATE,
                self.client_join_rate,
                ENV_CLIENT_JOIN_BURST,
                self.client_join_burst,
            ),
            (ENV_API_RATE, self.api_rate, ENV_API_BURST, self.api_burst),
        ] {
            need(
                rate == 0 || burst >= 1,
                format!("{burst_name} must be at least 1 when {rate_name} is set"),
            );
        }
        need(
            self.client_frame_rate == 0
                || self.client_frame_burst >= self.client_join_burst.min(self.max_groups as u32),
            format!(
                "{ENV_CLIENT_FRAME_BURST} must let a reconnecting client rejoin its groups: at least {ENV_CLIENT_JOIN_BURST} or {ENV_MAX_GROUPS}, whichever is smaller"
            ),
        );
        for (name, size) in [
            (ENV_HISTORY_USER_SIZE, self.history_user_size),
            (ENV_HISTORY_GROUP_SIZE, self.history_group_size),
            (ENV_HISTORY_ALL_SIZE, self.history_all_size),
        ] {
            need(
                size <= MAX_HISTORY_SIZE,
                format!("{name} must be at most {MAX_HISTORY_SIZE}"),
            );
        }
        let longest = self
            .history_user_ttl
            .max(self.history_group_ttl)
            .max(self.history_all_ttl);
        need(
            self.history_meta_ttl >= longest,
            format!(
                "{ENV_HISTORY_META_TTL} must be at least the longest history TTL ({})",
                humantime::format_duration(longest)
            ),
        );
        need(
            (1..=MAX_HISTORY_SIZE).contains(&self.max_recovery),
            format!("{ENV_MAX_RECOVERY} must be between 1 and {MAX_HISTORY_SIZE}"),
        );
        need(
            self.node_fence_after.is_zero() || self.node_fence_after >= Duration::from_secs(1),
            format!("{ENV_NODE_FENCE_AFTER} must be 0s (off) or at least 1s"),
        );
        need(
            (1..=64).contains(&self.redis_pubsub_connections),
            format!("{ENV_REDIS_PUBSUB_CONNECTIONS} must be between 1 and 64"),
        );
        need(
            !self.redis_prefix.is_empty()
                && self.redis_prefix.len() <= 64
                && self
                    .redis_prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-{}".contains(&b)),
            format!("{ENV_REDIS_PREFIX} must be 1-64 characters of A-Za-z0-9_.-{{}}"),
        );
        if let Some(id) = &self.node_id {
            need(
                crate::protocol::is_valid_name(id),
                format!("{ENV_NODE_ID} must be {}", crate::protocol::NAME_RULE),
            );
        }
        problems
    }
}

/// Parses humantime durations: `30s`, `1m 30s`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 30s: {e}"))
}

/// Parses byte sizes: `65536`, `64KiB`, `1MiB` (also `KB`/`MB`, read as binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 65536, 64KiB or 1MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        _ => return Err(format!("`{s}`: unknown unit, use KiB or MiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = Config::defaults().unwrap();
        assert_eq!(d.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert_eq!(d.heartbeat, Duration::from_secs(25));
        assert_eq!(d.outbound_queue, MIB);
        assert_eq!(d.ws_read_buffer, 512);
        assert_eq!(d.redis_pubsub_connections, 4);
        assert_eq!(d.max_json_depth, 32);
        assert_eq!(d.jwt_algorithm, JwtAlgorithm::Hs256);
        assert!(d.jwt.secret.is_none() && d.api_keys.is_empty() && !d.dev);
    }

    #[test]
    fn serve_and_token_share_the_jwt_flags() {
        let cli =
            Cli::try_parse_from(["fanout", "token", "--sub", "1", "--jwt-secret", "s"]).unwrap();
        let Command::Token(t) = cli.command else {
            panic!("not token")
        };
        assert_eq!(t.jwt.secret.as_deref(), Some("s"));
        let cli = Cli::try_parse_from(["fanout", "serve", "--jwt-issuer", "me"]).unwrap();
        let Command::Serve(c) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(c.jwt.issuer.as_deref(), Some("me"));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("1GiB").is_err() && parse_bytes("x").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn missing_secrets_are_named() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains(ENV_JWT_SECRET), "{err}");
        assert!(err.contains(ENV_API_KEYS), "{err}");
    }
}
