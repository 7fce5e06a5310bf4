//! The control protocol between the coordinator and its worker processes:
//! one JSON object per line, commands on the worker's stdin, events on its
//! stdout. Workers log to stderr only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which server the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// fanout's `/ws` endpoint, token in `?token=`.
    Fanout,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only.
    Socketio,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Socketio => "socketio",
        }
    }
}

/// The connections one worker opens. Connection `i` (global index, from
/// `first` to `first + count - 1`) is user `u<i>`, talks to
/// `urls[i % urls.len()]` from `sources[i % sources.len()]`, and, with a
/// group size, joins group `g<i / group_size>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConnectPlan {
    pub(crate) target: Target,
    /// Base URLs (`ws://host:port`) of the nodes.
    pub(crate) urls: Vec<String>,
    pub(crate) sources: Vec<String>,
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) group_size: u64,
    /// HS256 secret for fanout tokens (unused for Socket.IO).
    pub(crate) secret: String,
    pub(crate) concurrency: usize,
    pub(crate) connect_timeout_ms: u64,
}

pub(crate) fn uid(i: u64) -> String {
    format!("u{i}")
}

pub(crate) fn group(i: u64, group_size: u64) -> Option<String> {
    (group_size > 0).then(|| format!("g{}", i / group_size))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    Connect(ConnectPlan),
    /// Start counting deliveries of sequence numbers `base .. base + len`.
    Phase {
        base: u64,
        len: u64,
    },
    Progress,
    Report,
    /// Drop every connection without a close handshake, wait `down_ms`,
    /// connect again.
    Storm {
        down_ms: u64,
    },
    Close,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(crate) enum Event {
    Connected(ConnectOutcome),
    Ready,
    Progress { received: u64 },
    Report(PhaseReport),
    Closed,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ConnectOutcome {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Up to a few distinct error messages.
    pub(crate) errors: Vec<String>,
    /// Milliseconds from the command to the last connection's outcome.
    pub(crate) elapsed_ms: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct PhaseReport {
    /// Deliveries of this phase's sequence numbers.
    pub(crate) received: u64,
    /// Deliveries of sequence numbers outside the phase (late or foreign).
    pub(crate) stray: u64,
    /// `[offset, deliveries, max latency µs]` for every offset that was delivered.
    pub(crate) per_seq: Vec<(u64, u32, u32)>,
    /// `[connection index, deliveries, sum of their offsets]` for every
    /// connection that received something in this phase.
    #[serde(default)]
    pub(crate) per_conn: Vec<(u64, u32, u64)>,
    /// Latency histogram: `[µs, count]` pairs.
    pub(crate) latency: Vec<(u64, u64)>,
    /// Connections open now.
    pub(crate) open: u64,
    /// Connections the server closed, by close code (0: no close frame).
    pub(crate) closed_by_code: BTreeMap<u16, u64>,
}
