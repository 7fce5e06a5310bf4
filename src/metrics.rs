//! Every metric fanout exports: names as constants (and nowhere else),
//! descriptions, the Prometheus recorder, and small typed helpers so call
//! sites never spell a name or a label. docs/metrics.md lists them.
//!
//! Labels are low-cardinality by construction: reasons, operations, routes
//! and transports from fixed sets; never a uid, group, channel, message id
//! or anything a client sends.

use std::{
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::CloseReason;

pub const BUILD_INFO: &str = "fanout_build_info";
pub const CONNECTIONS_ACTIVE: &str = "fanout_connections_active";
pub const CONNECTIONS_ACCEPTED: &str = "fanout_connections_accepted_total";
pub const CONNECTIONS_REJECTED: &str = "fanout_connections_rejected_total";
pub const DISCONNECTS: &str = "fanout_disconnects_total";
pub const SLOW_CONSUMERS: &str = "fanout_slow_consumers_total";
pub const RATE_LIMITED: &str = "fanout_rate_limited_total";
pub const USERS_ONLINE: &str = "fanout_users_online";
pub const GROUPS_ACTIVE: &str = "fanout_groups_active";
pub const MESSAGES_DELIVERED: &str = "fanout_messages_delivered_total";
pub const MESSAGES_DROPPED: &str = "fanout_messages_dropped_total";
pub const FRAMES_SENT: &str = "fanout_frames_sent_total";
pub const DELIVERY_LATENCY: &str = "fanout_delivery_latency_seconds";
pub const BROADCAST_DURATION: &str = "fanout_broadcast_duration_seconds";
pub const BROADCAST_STAGE: &str = "fanout_broadcast_stage_seconds";
pub const BROKER_TRANSIT: &str = "fanout_broker_transit_seconds";
pub const OUTBOUND_BATCH_FRAMES: &str = "fanout_outbound_batch_frames";
pub const HTTP_REQUESTS: &str = "fanout_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "fanout_http_request_duration_seconds";
pub const DRAINING: &str = "fanout_draining";
pub const BROKER_CONNECTED: &str = "fanout_broker_connected";
pub const BROKER_SUBSCRIPTIONS: &str = "fanout_broker_subscriptions";
pub const BROKER_MESSAGES_RECEIVED: &str = "fanout_broker_messages_received_total";
pub const BROKER_MESSAGES_DROPPED: &str = "fanout_broker_messages_dropped_total";
pub const BROKER_COMMANDS: &str = "fanout_broker_commands_total";
pub const BROKER_ERRORS: &str = "fanout_broker_errors_total";
pub const BROKER_RECONNECTS: &str = "fanout_broker_reconnects_total";
pub const BROKER_RESUBSCRIBE_DURATION: &str = "fanout_broker_resubscribe_duration_seconds";
pub const BROKER_PROBE_FAILURES: &str = "fanout_broker_probe_failures_total";
pub const FENCE_NODES_FENCED: &str = "fanout_fence_nodes_fenced_total";
pub const FENCE_CONNECTIONS_KILLED: &str = "fanout_fence_connections_killed_total";
pub const FENCE_SELF_FENCED: &str = "fanout_fence_self_fenced_total";
pub const FENCE_HEARTBEAT_FAILURES: &str = "fanout_fence_heartbeat_failures_total";
pub const RECOVERIES: &str = "fanout_recoveries_total";
pub const RECOVERED_MESSAGES: &str = "fanout_recovered_messages_total";
pub const HISTORY_GAP_MESSAGES: &str = "fanout_history_gap_messages_total";
pub const HISTORY_DUPLICATES: &str = "fanout_history_duplicates_total";
pub const HISTORY_EPOCH_RESETS: &str = "fanout_history_epoch_resets_total";
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
pub const RUNTIME_TASKS_ALIVE: &str = "fanout_runtime_tasks_alive";
pub const RUNTIME_GLOBAL_QUEUE: &str = "fanout_runtime_global_queue_depth";
pub const RUNTIME_WORKER_BUSY: &str = "fanout_runtime_worker_busy_seconds_total";
pub const RUNTIME_WORKER_PARKS: &str = "fanout_runtime_worker_parks_total";

// === label values ===

/// Why a connection was refused before it was registered
/// (`fanout_connections_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    ShuttingDown,
    Origin,
    NotWebsocket,
    BadRequest,
    Unauthorized,
    AuthFailed,
    BadFrame,
    BrokerUnavailable,
    /// Closed at accept: the node is at `--max-connections`.
    NodeFull,
    /// The user already holds `--max-user-connections` here.
    UserLimit,
}

impl Rejected {
    pub const ALL: [Self; 10] = [
        Self::ShuttingDown,
        Self::Origin,
        Self::NotWebsocket,
        Self::BadRequest,
        Self::Unauthorized,
        Self::AuthFailed,
        Self::BadFrame,
        Self::BrokerUnavailable,
        Self::NodeFull,
        Self::UserLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ShuttingDown => "shutting_down",
            Self::Origin => "origin",
            Self::NotWebsocket => "not_websocket",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::AuthFailed => "auth_failed",
            Self::BadFrame => "bad_frame",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::NodeFull => "node_full",
            Self::UserLimit => "user_limit",
        }
    }
}

/// Which rate limit refused something (`fanout_rate_limited_total{limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Every frame a connection sends (over it: close 3013).
    Frames,
    /// `publish` frames.
    Publish,
    /// `join` frames.
    Join,
    /// API requests of one API key.
    Api,
}

impl Limit {
    pub const ALL: [Self; 4] = [Self::Frames, Self::Publish, Self::Join, Self::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Frames => "frames",
            Self::Publish => "publish",
            Self::Join => "join",
            Self::Api => "api",
        }
    }
}

/// How a registered connection ended (`fanout_disconnects_total{reason,code}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// fanout closed it, with this reason and its close code.
    Closed(CloseReason),
    /// The client sent a close frame.
    ClientClosed,
    /// The connection went away without one.
    ConnectionLost,
}

impl Ended {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::Closed(reason) => (reason.as_str(), reason.code_str()),
            Self::ClientClosed => ("client_closed", "none"),
            Self::ConnectionLost => ("connection_lost", "none"),
        }
    }
}

/// Why messages from the broker were dropped
/// (`fanout_broker_messages_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerDrop {
    InvalidJson,
    InvalidField,
    UnknownCommand,
    TooLarge,
    /// A command on a channel where it means nothing.
    Misdirected,
    /// fred's receive buffer overflowed.
    Lagged,
    /// Nested deeper than `--max-json-depth` allows.
    TooDeep,
}

impl BrokerDrop {
    pub const ALL: [Self; 7] = [
        Self::InvalidJson,
        Self::InvalidField,
        Self::UnknownCommand,
        Self::TooLarge,
        Self::Misdirected,
        Self::Lagged,
        Self::TooDeep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidField => "invalid_field",
            Self::UnknownCommand => "unknown_command",
            Self::TooLarge => "too_large",
            Self::Misdirected => "misdirected",
            Self::Lagged => "lagged",
            Self::TooDeep => "too_deep",
        }
    }
}

/// A broker command (`fanout_broker_commands_total{op}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerOp {
    Publish,
    Subscribe,
    Unsubscribe,
}

impl BrokerOp {
    pub const ALL: [Self; 3] = [Self::Publish, Self::Subscribe, Self::Unsubscribe];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
        }
    }
}

/// What became of messages a node found missing from a channel
/// (`fanout_history_gap_messages_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapResult {
    /// Read from history and delivered in order.
    Healed,
    /// Not in history any more (or history could not be read): a gap
    /// the node could not fill (counted once per gap).
    Lost,
}

impl GapResult {
    pub const ALL: [Self; 2] = [Self::Healed, Self::Lost];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healed => "healed",
            Self::Lost => "lost",
        }
    }
}

/// How far a broadcast message got, counted from the broker's hand-over
/// (`fanout_broadcast_stage_seconds{stage}`; see `stages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The dispatcher took it up (decoded, waited in the dispatcher queue).
    Dispatched,
    /// Queued for every local recipient.
    Queued,
    /// The first socket write carrying it was flushed (traced messages).
    FirstWrite,
    /// The last recipient was done with it (traced messages).
    LastWrite,
}

impl Stage {
    pub const ALL: [Self; 4] = [
        Self::Dispatched,
        Self::Queued,
        Self::FirstWrite,
        Self::LastWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dispatched => "dispatched",
            Self::Queued => "queued",
            Self::FirstWrite => "first_write",
            Self::LastWrite => "last_write",
        }
    }
}

/// A client transport (`transport` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    pub const ALL: [Self; 2] = [Self::WebSocket, Self::Sse];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Finer where a fan-out's tail lies (tens of milliseconds).
const STAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

fn describe_all() {
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
    describe_gauge!(CONNECTIONS_ACTIVE, "Open client connections, by transport.");
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        "Client connections authenticated and registered, by transport."
    );
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Client connections refused before registration, by reason."
    );
    describe_counter!(
        DISCONNECTS,
        "Ended client connections, by reason and the close code fanout sent (client_closed and connection_lost have code none)."
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections closed because their outbound queue was full (close 3008)."
    );
    describe_counter!(
        RATE_LIMITED,
        "Client frames and API requests refused by a rate limit, by limit (frames closes the connection with 3013)."
    );
    describe_gauge!(
        USERS_ONLINE,
        "Distinct uids with at least one connection on this node."
    );
    describe_gauge!(
        GROUPS_ACTIVE,
        "Groups with at least one member on this node."
    );
    describe_counter!(
        MESSAGES_DELIVERED,
        "Message frames queued for clients (one per recipient connection)."
    );
    describe_counter!(
        MESSAGES_DROPPED,
        "Frames not delivered to a client, by reason (slow_consumer: dropped from the queue of a connection cut off as slow)."
    );
    describe_counter!(
        FRAMES_SENT,
        "Message and reply frames written to client sockets (welcome, bye and pings are not counted)."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Publish-to-delivery latency from the message ts, sampled once per socket write from the oldest message written."
    );
    describe_histogram!(
        BROADCAST_DURATION,
        Unit::Seconds,
        "Time to queue one message for every local recipient of its channel."
    );
    describe_histogram!(
        BROADCAST_STAGE,
        Unit::Seconds,
        "Time from the broker's hand-over of a message to each stage of its fan-out on this node, by stage (dispatched, queued: every message; first_write, last_write: one message traced at a time)."
    );
    describe_histogram!(
        BROKER_TRANSIT,
        Unit::Seconds,
        "Time from a message's publish (its ts, stamped by the node that published it, or by the backend; millisecond precision, across machines only as good as their clocks) to this node's broker hand-over."
    );
    describe_histogram!(
        OUTBOUND_BATCH_FRAMES,
        "Frames taken from a connection's outbound queue per socket write (queue depth at write time)."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP API requests, by method, route and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP API request duration, by route."
    );
    describe_gauge!(
        DRAINING,
        "1 while this node drains its connections for shutdown."
    );
    describe_gauge!(
        BROKER_CONNECTED,
        "1 when every broker connection is up (always 1 for the in-process broker)."
    );
    describe_gauge!(
        BROKER_SUBSCRIPTIONS,
        "Channels this node is subscribed to at the broker."
    );
    describe_counter!(
        BROKER_MESSAGES_RECEIVED,
        "Messages and commands received from the broker."
    );
    describe_counter!(
        BROKER_MESSAGES_DROPPED,
        "Messages from the broker that were dropped, by reason (invalid_json, invalid_field, unknown_command, too_large, misdirected, lagged)."
    );
    describe_counter!(BROKER_COMMANDS, "Broker commands sent, by operation.");
    describe_counter!(BROKER_ERRORS, "Broker commands that failed, by operation.");
    describe_counter!(
        BROKER_RECONNECTS,
        "Reconnects (or cluster topology changes) of broker pub/sub connections."
    );
    describe_histogram!(
        BROKER_RESUBSCRIBE_DURATION,
        Unit::Seconds,
        "Time to resubscribe a pub/sub connection's channels after a reconnect."
    );
    describe_counter!(
        BROKER_PROBE_FAILURES,
        "Pub/sub probes that did not come back through their connection in time."
    );
    describe_counter!(
        FENCE_NODES_FENCED,
        "Other nodes this node fenced: their heartbeat expired and it closed their Redis connections."
    );
    describe_counter!(
        FENCE_CONNECTIONS_KILLED,
        "Redis connections of fenced nodes closed by this node (CLIENT KILL)."
    );
    describe_counter!(
        FENCE_SELF_FENCED,
        "Times this node found it had been fenced and sent its clients to reconnect."
    );
    describe_counter!(
        FENCE_HEARTBEAT_FAILURES,
        "Heartbeats of this node that Redis did not answer within the heartbeat interval."
    );
    describe_counter!(
        RECOVERIES,
        "Channels resumed from a client's position, by result (recovered: every missed message replayed; not_recovered: the client must reload)."
    );
    describe_counter!(
        RECOVERED_MESSAGES,
        "Messages replayed from history to resuming clients."
    );
    describe_counter!(
        HISTORY_GAP_MESSAGES,
        "Messages a node found missing from a channel's offsets (a pub/sub message lost, or published while resubscribing): healed from history, or lost (counted once per gap)."
    );
    describe_counter!(
        HISTORY_DUPLICATES,
        "Messages a node received again at an offset it had already delivered, and dropped."
    );
    describe_counter!(
        HISTORY_EPOCH_RESETS,
        "Channels given a new epoch because their history went back (writes lost in a failover)."
    );
}

/// Installs the Prometheus recorder once per process and returns its
/// handle; later calls (more servers in one test process) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(OUTBOUND_BATCH_FRAMES.into()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BROADCAST_STAGE.into()), STAGE_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BROKER_TRANSIT.into()), STAGE_BUCKETS)
                });
            // Only fails for an empty bucket list, which these are not.
            let recorder = builder
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            spawn_upkeep(handle.clone());
            describe_all();
            register_zeroes();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            start_time();
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`],
/// scraped or not. The exporter keeps every sample recorded since the last
/// upkeep (about 8 bytes each) and only a scrape ran it before: a node
/// nobody scraped grew by ~20 bytes per socket write, without bound
/// (110 → 217 MiB over 5M writes in one measurement). A thread of its own,
/// not a task: a fold of a busy second's samples takes milliseconds, which
/// would hold up a runtime worker's fan-out.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("fanout-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded only when scraped");
    }
}

/// Every series with a fixed label set exists from the start (at zero), so
/// `rate()` and alerts work before the first event.
fn register_zeroes() {
    for reason in Rejected::ALL {
        counter!(CONNECTIONS_REJECTED, "reason" => reason.as_str()).absolute(0);
    }
    for limit in Limit::ALL {
        counter!(RATE_LIMITED, "limit" => limit.as_str()).absolute(0);
    }
    // (Unavailable, unauthorized and connection-limit closes happen before
    // registration: counted as rejected.)
    let ended = CloseReason::ALL
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                CloseReason::Unauthorized
                    | CloseReason::Unavailable { .. }
                    | CloseReason::ConnectionLimit { .. }
            )
        })
        .map(Ended::Closed)
        .chain([Ended::ClientClosed, Ended::ConnectionLost]);
    for e in ended {
        let (reason, code) = e.labels();
        counter!(DISCONNECTS, "reason" => reason, "code" => code).absolute(0);
    }
    for t in Transport::ALL {
        counter!(CONNECTIONS_ACCEPTED, "transport" => t.as_str()).absolute(0);
        gauge!(CONNECTIONS_ACTIVE, "transport" => t.as_str()).increment(0.0);
    }
    gauge!(USERS_ONLINE).increment(0.0);
    gauge!(GROUPS_ACTIVE).increment(0.0);
    gauge!(BROKER_SUBSCRIPTIONS).increment(0.0);
    gauge!(DRAINING).set(0.0);
    counter!(SLOW_CONSUMERS).absolute(0);
    counter!(MESSAGES_DELIVERED).absolute(0);
    counter!(FRAMES_SENT).absolute(0);
    counter!(MESSAGES_DROPPED, "reason" => "slow_consumer").absolute(0);
    counter!(BROKER_MESSAGES_RECEIVED).absolute(0);
    for reason in BrokerDrop::ALL {
        counter!(BROKER_MESSAGES_DROPPED, "reason" => reason.as_str()).absolute(0);
    }
    for op in BrokerOp::ALL {
        counter!(BROKER_COMMANDS, "op" => op.as_str()).absolute(0);
        counter!(BROKER_ERRORS, "op" => op.as_str()).absolute(0);
    }
    counter!(BROKER_RECONNECTS).absolute(0);
    counter!(BROKER_PROBE_FAILURES).absolute(0);
    for name in [
        FENCE_NODES_FENCED,
        FENCE_CONNECTIONS_KILLED,
        FENCE_SELF_FENCED,
        FENCE_HEARTBEAT_FAILURES,
    ] {
        counter!(name).absolute(0);
    }
    for result in ["recovered", "not_recovered"] {
        counter!(RECOVERIES, "result" => result).absolute(0);
    }
    counter!(RECOVERED_MESSAGES).absolute(0);
    for result in GapResult::ALL {
        counter!(HISTORY_GAP_MESSAGES, "result" => result.as_str()).absolute(0);
    }
    counter!(HISTORY_DUPLICATES).absolute(0);
    counter!(HISTORY_EPOCH_RESETS).absolute(0);
}

// === connections ===

pub fn connection_opened(transport: Transport) {
    counter!(CONNECTIONS_ACCEPTED, "transport" => transport.as_str()).increment(1);
    gauge!(CONNECTIONS_ACTIVE, "transport" => transport.as_str()).increment(1.0);
}

pub fn connection_closed(transport: Transport, ended: Ended) {
    let (reason, code) = ended.labels();
    gauge!(CONNECTIONS_ACTIVE, "transport" => transport.as_str()).decrement(1.0);
    counter!(DISCONNECTS, "reason" => reason, "code" => code).increment(1);
}

/// A connection refused before it was registered.
pub fn connection_rejected(reason: Rejected) {
    counter!(CONNECTIONS_REJECTED, "reason" => reason.as_str()).increment(1);
}

pub fn users_online(delta: f64) {
    gauge!(USERS_ONLINE).increment(delta);
}

pub fn groups_active(delta: f64) {
    gauge!(GROUPS_ACTIVE).increment(delta);
}

// === delivery ===

/// One message queued for `queued` connections; `slow` were cut off.
pub fn broadcast(queued: usize, slow: usize, took: Duration) {
    counter!(MESSAGES_DELIVERED).increment(queued as u64);
    let _ = slow; // counted where the queue overflows: `slow_consumer`
    histogram!(BROADCAST_DURATION).record(took.as_secs_f64());
}

/// A broadcast message reached `stage`, `took` after the broker handed it over.
pub fn broadcast_stage(stage: Stage, took: Duration) {
    // Twice per message from the broker: the handles are looked up once.
    static HANDLES: LazyLock<[Histogram; 4]> =
        LazyLock::new(|| Stage::ALL.map(|s| histogram!(BROADCAST_STAGE, "stage" => s.as_str())));
    HANDLES[stage as usize].record(took.as_secs_f64());
}

/// A message published at `ts_ms` (Unix ms) was handed over by the broker now.
pub fn broker_transit(ts_ms: u64) {
    static TRANSIT: LazyLock<Histogram> = LazyLock::new(|| histogram!(BROKER_TRANSIT));
    let ms = crate::ids::unix_ms().saturating_sub(ts_ms);
    TRANSIT.record(ms as f64 / 1000.0);
}

/// A client frame or API request was refused by `limit`.
pub fn rate_limited(limit: Limit) {
    counter!(RATE_LIMITED, "limit" => limit.as_str()).increment(1);
}

/// A connection's queue overflowed: it is closing with 3008.
pub fn slow_consumer() {
    counter!(SLOW_CONSUMERS).increment(1);
}

/// Messages dropped from a slow consumer's queue when it was cut off.
pub fn slow_consumer_dropped(n: usize) {
    counter!(MESSAGES_DROPPED, "reason" => "slow_consumer").increment(n as u64);
}

/// One socket write of `frames` frames; `oldest_ts_ms` is the publish time
/// of the oldest message among them (0 when none was a message).
pub fn frames_written(frames: usize, oldest_ts_ms: u64) {
    // Called once per socket write: the handles are looked up once, not in
    // the registry on every call. `app::spawn` installs the recorder before
    // any connection exists, so they bind to it.
    static SENT: LazyLock<Counter> = LazyLock::new(|| counter!(FRAMES_SENT));
    static BATCH: LazyLock<Histogram> = LazyLock::new(|| histogram!(OUTBOUND_BATCH_FRAMES));
    static LATENCY: LazyLock<Histogram> = LazyLock::new(|| histogram!(DELIVERY_LATENCY));
    SENT.increment(frames as u64);
    BATCH.record(frames as f64);
    if oldest_ts_ms > 0 {
        let now = crate::ids::unix_ms();
        LATENCY.record(now.saturating_sub(oldest_ts_ms) as f64 / 1000.0);
    }
}

// === HTTP ===

pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => "other",
    };
    counter!(HTTP_REQUESTS, "method" => method, "path" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "path" => route.to_owned()).record(took.as_secs_f64());
}

pub fn draining(on: bool) {
    gauge!(DRAINING).set(if on { 1.0 } else { 0.0 });
}

// === broker ===

pub fn broker_connected(up: bool) {
    gauge!(BROKER_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub fn broker_subscriptions(delta: f64) {
    gauge!(BROKER_SUBSCRIPTIONS).increment(delta);
}

pub fn broker_received() {
    counter!(BROKER_MESSAGES_RECEIVED).increment(1);
}

pub fn broker_dropped(reason: BrokerDrop, n: u64) {
    counter!(BROKER_MESSAGES_DROPPED, "reason" => reason.as_str()).increment(n);
}

pub fn broker_command(op: BrokerOp, ok: bool) {
    counter!(BROKER_COMMANDS, "op" => op.as_str()).increment(1);
    if !ok {
        counter!(BROKER_ERRORS, "op" => op.as_str()).increment(1);
    }
}

pub fn broker_reconnected() {
    counter!(BROKER_RECONNECTS).increment(1);
}

pub fn broker_resubscribed(took: Duration) {
    histogram!(BROKER_RESUBSCRIBE_DURATION).record(took.as_secs_f64());
}

pub fn broker_probe_failed() {
    counter!(BROKER_PROBE_FAILURES).increment(1);
}

// === fencing ===

/// This node fenced another, closing `connections` of its connections.
pub fn fence_node_fenced(connections: u64) {
    counter!(FENCE_NODES_FENCED).increment(1);
    counter!(FENCE_CONNECTIONS_KILLED).increment(connections);
}

/// This node found it had been fenced.
pub fn fence_self_fenced() {
    counter!(FENCE_SELF_FENCED).increment(1);
}

/// A heartbeat failed or was not answered in time.
pub fn fence_heartbeat_failed() {
    counter!(FENCE_HEARTBEAT_FAILURES).increment(1);
}

// === history ===

/// A channel resumed from a client's position; `replayed` messages sent.
pub fn recovery(recovered: bool, replayed: usize) {
    let result = if recovered {
        "recovered"
    } else {
        "not_recovered"
    };
    counter!(RECOVERIES, "result" => result).increment(1);
    counter!(RECOVERED_MESSAGES).increment(replayed as u64);
}

pub fn gap_messages(result: GapResult, n: u64) {
    counter!(HISTORY_GAP_MESSAGES, "result" => result.as_str()).increment(n);
}

pub fn history_duplicate() {
    counter!(HISTORY_DUPLICATES).increment(1);
}

pub fn epoch_reset() {
    counter!(HISTORY_EPOCH_RESETS).increment(1);
}

// === process ===

/// The standard `process_*` metrics of this process, read with the
/// `procfs` crate, and the tokio runtime's live task count, as text to
/// append to the exposition: the `metrics` crate has no float counters for
/// `process_cpu_seconds_total`. A value that cannot be read is left out.
pub fn process_exposition() -> String {
    use std::fmt::Write;

    use procfs::{
        WithCurrentSystemInfo,
        process::{LimitValue, Process},
    };

    let mut out = String::new();
    let mut emit = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    let me = Process::myself().ok();
    if let Some(stat) = me.as_ref().and_then(|p| p.stat().ok()) {
        let ticks = procfs::ticks_per_second().max(1) as f64;
        emit(
            PROCESS_CPU,
            "counter",
            "Total user and system CPU time spent in seconds.",
            (stat.utime + stat.stime) as f64 / ticks,
        );
        emit(
            PROCESS_RSS,
            "gauge",
            "Resident memory size in bytes.",
            stat.rss_bytes().get() as f64,
        );
    }
    if let Some(fds) = me.as_ref().and_then(|p| p.fd_count().ok()) {
        emit(
            PROCESS_OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            fds as f64,
        );
    }
    if let Some(limits) = me.as_ref().and_then(|p| p.limits().ok())
        && let LimitValue::Value(max) = limits.max_open_files.soft_limit
    {
        emit(
            PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    emit(
        PROCESS_START_TIME,
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start_time(),
    );
    // Read at the scrape like the above: a task that never ends (a session
    // or timer left behind) shows as growth here. Absent outside a runtime.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        emit(
            RUNTIME_TASKS_ALIVE,
            "gauge",
            "Tokio tasks spawned and not yet finished in this process.",
            rt.metrics().num_alive_tasks() as f64,
        );
        runtime_exposition(&mut out, &rt.metrics());
    }
    out
}

/// The runtime's scheduling data (stable tokio metrics): tasks waiting in
/// the global queue, and per worker thread its busy time and parks. A
/// worker busy for the whole of a fan-out, or a growing global queue, says
/// the node ran out of CPU rather than waited on something.
fn runtime_exposition(out: &mut String, rt: &tokio::runtime::RuntimeMetrics) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP {RUNTIME_GLOBAL_QUEUE} Tasks waiting in the runtime's global queue.\n\
         # TYPE {RUNTIME_GLOBAL_QUEUE} gauge\n{RUNTIME_GLOBAL_QUEUE} {}",
        rt.global_queue_depth()
    );
    let workers = rt.num_workers();
    let _ = writeln!(
        out,
        "# HELP {RUNTIME_WORKER_BUSY} Time each runtime worker thread spent running tasks.\n\
         # TYPE {RUNTIME_WORKER_BUSY} counter"
    );
    for w in 0..workers {
        let busy = rt.worker_total_busy_duration(w).as_secs_f64();
        let _ = writeln!(out, "{RUNTIME_WORKER_BUSY}{{worker=\"{w}\"}} {busy}");
    }
    let _ = writeln!(
        out,
        "# HELP {RUNTIME_WORKER_PARKS} Times each runtime worker thread parked (ran out of tasks).\n\
         # TYPE {RUNTIME_WORKER_PARKS} counter"
    );
    for w in 0..workers {
        let parks = rt.worker_park_count(w);
        let _ = writeln!(out, "{RUNTIME_WORKER_PARKS}{{worker=\"{w}\"}} {parks}");
    }
}

fn start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| crate::ids::unix_ms() as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_exposition();
        for name in [
            PROCESS_CPU,
            PROCESS_RSS,
            PROCESS_OPEN_FDS,
            PROCESS_MAX_FDS,
            PROCESS_START_TIME,
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok());
            assert!(value.is_some_and(|v| v >= 0.0), "{name} missing:\n{text}");
        }
        assert!(text.contains(&format!("# TYPE {PROCESS_CPU} counter")));
    }

    /// Inside a runtime the scrape adds its scheduling data, one series per
    /// worker thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runtime_metrics_are_exported_per_worker() {
        let text = process_exposition();
        for w in 0..2 {
            for name in [RUNTIME_WORKER_BUSY, RUNTIME_WORKER_PARKS] {
                let series = format!("{name}{{worker=\"{w}\"}} ");
                assert!(text.contains(&series), "{series} missing:\n{text}");
            }
        }
        assert!(text.contains(&format!("{RUNTIME_GLOBAL_QUEUE} ")));
        assert!(!text.contains("worker=\"2\""));
    }
}
