//! The control protocol between the coordinator and its worker processes:
//! one JSON object per line, commands on the worker's stdin, events on its
//! stdout. Workers log to stderr only.

use serde::{Deserialize, Serialize};

/// Which server the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// fanout's `/ws` endpoint, token in `?token=`.
    Fanout,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only.
    Socketio,
    /// The Pusher Channels protocol 7 (Sockudo): `/app/<key>`, public
    /// channels, events through the signed HTTP API.
    Pusher,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Socketio => "socketio",
            Self::Pusher => "pusher",
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
    /// HS256 secret for fanout tokens; for Pusher, the app key the URL
    /// names (public); unused for Socket.IO.
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

/// The resuming clients one worker opens (the `rolling` scenario): client
/// `i` is user `u<i>` in group `g<i / group_size>`, on SSE when `i % 100 <
/// sse_percent` and on WebSocket otherwise, first connected to node `i %
/// nodes`. Each keeps its positions, resumes with them on whichever node
/// takes it next, and de-duplicates by message id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResumePlan {
    /// `host:port` of every node (`ws://` and `http://` alike).
    pub(crate) nodes: Vec<String>,
    pub(crate) sources: Vec<String>,
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) group_size: u64,
    pub(crate) secret: String,
    pub(crate) concurrency: usize,
    pub(crate) connect_timeout_ms: u64,
    /// Percentage of clients on SSE (0–100).
    pub(crate) sse_percent: u8,
    /// Longest a client waits before reconnecting, whatever
    /// `retry_after_ms` says.
    pub(crate) retry_cap_ms: u64,
    /// The `soak` scenario's trickle: each client closes its connection
    /// itself about every `cycle_ms` (its first close at a random point of
    /// that interval, so the closes are spread evenly) and reconnects,
    /// resuming. 0: only the server ends connections.
    #[serde(default)]
    pub(crate) cycle_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    Connect(ConnectPlan),
    /// Open resuming clients (see [`ResumePlan`]).
    Resume(ResumePlan),
    /// The phase report plus what the resuming clients saw.
    ResumeReport,
    /// The resuming clients' running counters, without the per-message
    /// report (cheap enough to ask for every few seconds).
    Tally,
    /// Resuming clients stop closing their connections themselves (the
    /// soak's end: every client connected again, none mid-reconnect).
    Hold,
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
    Resume(Box<ResumeReport>),
    Tally(Tally),
    Closed,
}

/// What one worker's resuming clients did so far in the current phase
/// (`connected` and `given_up`: now, whatever the phase).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Tally {
    /// Deliveries of the phase's messages, after de-duplication by id.
    pub(crate) received: u64,
    pub(crate) connected: u64,
    pub(crate) reconnects: u64,
    pub(crate) resumes: u64,
    pub(crate) raw_duplicates: u64,
    pub(crate) gaps: u64,
    pub(crate) unrecovered: u64,
    pub(crate) failed_attempts: u64,
    pub(crate) given_up: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, o: &Self) {
        self.received += o.received;
        self.connected += o.connected;
        self.reconnects += o.reconnects;
        self.resumes += o.resumes;
        self.raw_duplicates += o.raw_duplicates;
        self.gaps += o.gaps;
        self.unrecovered += o.unrecovered;
        self.failed_attempts += o.failed_attempts;
        self.given_up += o.given_up;
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ConnectOutcome {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Up to a few distinct error messages.
    pub(crate) errors: Vec<String>,
    /// Milliseconds from the command to the last connection's outcome.
    pub(crate) elapsed_ms: u64,
    /// Time from opening the TCP connection to being ready (fanout:
    /// `welcome`, then `joined` for a client in a group; Socket.IO: the
    /// namespace's connect packet, then the join's ack): `[µs, count]` pairs.
    #[serde(default)]
    pub(crate) ready_us: Vec<(u64, u64)>,
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
    /// Connections the server closed, by close code (0: no close frame):
    /// `[code, connections]` pairs. A list, not a map: the events are an
    /// internally tagged enum, and serde cannot read integer map keys back
    /// through one.
    pub(crate) closed_by_code: Vec<(u16, u64)>,
}

/// What the resuming clients of one worker saw in the current phase, as
/// the application sees it: deliveries after de-duplication by message id
/// are in `phase` (so a message that arrived under two ids counts twice
/// there); frames whose id the client already had are only counted here.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ResumeReport {
    pub(crate) phase: PhaseReport,
    /// Message frames whose id the client had already received.
    pub(crate) raw_duplicates: u64,
    /// `(client, channel)` for every channel a resume answered with
    /// `recovered: false` (the first 50).
    pub(crate) unrecovered: Vec<(u64, String)>,
    /// All such answers, and the clients that got at least one.
    pub(crate) unrecovered_total: u64,
    pub(crate) unrecovered_clients: u64,
    /// Connections opened after each client's first one, and of them those
    /// that gave positions (`since`, `Last-Event-ID`).
    pub(crate) reconnects: u64,
    pub(crate) resumes: u64,
    /// `recovered: true` answers, by channel kind: user, group, all.
    pub(crate) recovered: [u64; 3],
    /// Connection attempts that failed (node down or refusing).
    pub(crate) failed_attempts: u64,
    /// `bye` frames received, and the longest `retry_after_ms` among them.
    pub(crate) byes: u64,
    pub(crate) max_retry_after_ms: u64,
    /// Messages whose offset skipped one on its channel (same epoch), and
    /// epoch changes seen.
    pub(crate) gaps: u64,
    pub(crate) epoch_changes: u64,
    /// Publish → arrival (µs) of messages that came by replay after a
    /// resume, and of those that came live.
    pub(crate) replay_latency: Vec<(u64, u64)>,
    pub(crate) live_latency: Vec<(u64, u64)>,
    /// Clients connected now, and clients whose task ended for good.
    pub(crate) connected: u64,
    pub(crate) given_up: u64,
    /// Up to a few distinct errors.
    pub(crate) errors: Vec<String>,
}
