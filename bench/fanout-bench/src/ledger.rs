//! What a resuming client keeps and what its worker adds up (the `rolling`
//! scenario): per client, its position on every channel and the message
//! ids it has had (to de-duplicate as an application would); per worker,
//! counters of reconnects, resumes, `recovered: false` answers and
//! duplicates, and two latency histograms: messages that came by replay
//! after a resume, and messages that came live.
//!
//! Deliveries themselves (after de-duplication) go to the worker's
//! [`Recorder`], the same accounting every other scenario uses.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    control::{PhaseReport, ResumeReport, Tally},
    recorder::{Recorder, hist_to_pairs, latency_hist, unix_us},
};

const SHARDS: usize = 8;
/// `(client, channel)` pairs of `recovered: false` kept for the report.
const UNRECOVERED_KEPT: usize = 50;
const ERRORS_KEPT: usize = 5;
const MAX_LATENCY_US: u64 = 600_000_000;

/// Counters shared by the resuming clients of one worker. Everything but
/// `connected` and `given_up` restarts at each phase.
#[derive(Debug)]
pub(crate) struct Ledger {
    raw_duplicates: AtomicU64,
    reconnects: AtomicU64,
    resumes: AtomicU64,
    recovered: [AtomicU64; 3],
    failed_attempts: AtomicU64,
    byes: AtomicU64,
    max_retry_after_ms: AtomicU64,
    gaps: AtomicU64,
    epoch_changes: AtomicU64,
    unrecovered_total: AtomicU64,
    unrecovered_clients: AtomicU64,
    /// Clients connected now: up when a connection is ready, down when it ends.
    pub(crate) connected: AtomicU64,
    /// Clients whose task ended before the run did.
    pub(crate) given_up: AtomicU64,
    /// Whether clients with a cycle still close their connections
    /// themselves; cleared by the `Hold` command, never set again.
    cycling: AtomicBool,
    unrecovered: Mutex<Vec<(u64, String)>>,
    errors: Mutex<Vec<String>>,
    /// Latency shards, by client index: (replayed, live).
    hist: Vec<Mutex<(Histogram<u64>, Histogram<u64>)>>,
}

impl Ledger {
    pub(crate) fn new() -> Self {
        Self {
            raw_duplicates: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            recovered: Default::default(),
            failed_attempts: AtomicU64::new(0),
            byes: AtomicU64::new(0),
            max_retry_after_ms: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            epoch_changes: AtomicU64::new(0),
            unrecovered_total: AtomicU64::new(0),
            unrecovered_clients: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            cycling: AtomicBool::new(true),
            unrecovered: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            hist: (0..SHARDS)
                .map(|_| Mutex::new((latency_hist(), latency_hist())))
                .collect(),
        }
    }

    /// Forgets everything counted so far (a new phase starts).
    pub(crate) fn reset(&self) {
        for c in [
            &self.raw_duplicates,
            &self.reconnects,
            &self.resumes,
            &self.failed_attempts,
            &self.byes,
            &self.max_retry_after_ms,
            &self.gaps,
            &self.epoch_changes,
            &self.unrecovered_total,
            &self.unrecovered_clients,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in &self.recovered {
            c.store(0, Ordering::Relaxed);
        }
        self.unrecovered.lock().clear();
        self.errors.lock().clear();
        for h in &self.hist {
            let mut h = h.lock();
            h.0.reset();
            h.1.reset();
        }
    }

    /// A connection after the client's first one is ready; `resumed`: it
    /// gave positions.
    pub(crate) fn reconnected(&self, resumed: bool) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.resumes.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn attempt_failed(&self, error: String) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        self.error(error);
    }

    pub(crate) fn error(&self, error: String) {
        let mut errors = self.errors.lock();
        if errors.len() < ERRORS_KEPT && !errors.contains(&error) {
            errors.push(error);
        }
    }

    fn bye(&self, retry_after_ms: u64) {
        self.byes.fetch_add(1, Ordering::Relaxed);
        self.max_retry_after_ms
            .fetch_max(retry_after_ms, Ordering::Relaxed);
    }

    fn latency(&self, client: u64, sent_us: u64, replayed: bool) {
        let us = unix_us().saturating_sub(sent_us).clamp(1, MAX_LATENCY_US);
        let mut h = self.hist[(client % SHARDS as u64) as usize].lock();
        let h = if replayed { &mut h.0 } else { &mut h.1 };
        let _ = h.record(us);
    }

    pub(crate) fn hold(&self) {
        self.cycling.store(false, Ordering::Relaxed);
    }

    pub(crate) fn cycling(&self) -> bool {
        self.cycling.load(Ordering::Relaxed)
    }

    /// The running counters, with the recorder's deliveries so far.
    pub(crate) fn tally(&self, received: u64) -> Tally {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Tally {
            received,
            connected: load(&self.connected),
            reconnects: load(&self.reconnects),
            resumes: load(&self.resumes),
            raw_duplicates: load(&self.raw_duplicates),
            gaps: load(&self.gaps),
            unrecovered: load(&self.unrecovered_total),
            failed_attempts: load(&self.failed_attempts),
            given_up: load(&self.given_up),
        }
    }

    pub(crate) fn report(&self, phase: PhaseReport) -> ResumeReport {
        let (mut replay, mut live) = (latency_hist(), latency_hist());
        for h in &self.hist {
            let h = h.lock();
            let _ = replay.add(&h.0);
            let _ = live.add(&h.1);
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ResumeReport {
            phase,
            raw_duplicates: load(&self.raw_duplicates),
            unrecovered: self.unrecovered.lock().clone(),
            unrecovered_total: load(&self.unrecovered_total),
            unrecovered_clients: load(&self.unrecovered_clients),
            reconnects: load(&self.reconnects),
            resumes: load(&self.resumes),
            recovered: [
                load(&self.recovered[0]),
                load(&self.recovered[1]),
                load(&self.recovered[2]),
            ],
            failed_attempts: load(&self.failed_attempts),
            byes: load(&self.byes),
            max_retry_after_ms: load(&self.max_retry_after_ms),
            gaps: load(&self.gaps),
            epoch_changes: load(&self.epoch_changes),
            replay_latency: hist_to_pairs(&replay),
            live_latency: hist_to_pairs(&live),
            connected: load(&self.connected),
            given_up: load(&self.given_up),
            errors: self.errors.lock().clone(),
        }
    }
}

/// A channel position as frames carry it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Pos {
    offset: u64,
    epoch: String,
}

/// The fields of a server frame this client reads; `id` is a string in
/// `message` and an integer in replies, so it stays raw.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    group: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    positions: Option<BTreeMap<String, Pos>>,
    #[serde(default)]
    recovered: Option<BTreeMap<String, bool>>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// The bench's payload inside `data`.
#[derive(Deserialize)]
struct Payload {
    s: u64,
    t: u64,
}

/// What a frame meant to the connection reading it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Welcome,
    Joined,
    Message,
    /// `bye`, with its `retry_after_ms`.
    Bye(u64),
    Error(String),
    Other,
}

/// One client's memory across its connections.
#[derive(Debug)]
pub(crate) struct Tracker {
    index: u64,
    /// Where the client is on each channel: the last message it processed,
    /// or where a connection started it.
    positions: BTreeMap<String, Pos>,
    /// For the current connection: channels it resumed with `recovered:
    /// true`, and the top the welcome gave (what follows up to it is replay).
    replay_top: BTreeMap<String, u64>,
    /// Hashes of the message ids received: the application's de-duplication.
    seen_ids: HashSet<u64>,
    unrecovered_once: bool,
    /// The `id:` of the last SSE event that had one: what `EventSource`
    /// sends back as `Last-Event-ID`.
    last_event_id: Option<String>,
    hasher: BuildHasherDefault<DefaultHasher>,
}

impl Tracker {
    pub(crate) fn new(index: u64) -> Self {
        Self {
            index,
            positions: BTreeMap::new(),
            replay_top: BTreeMap::new(),
            seen_ids: HashSet::new(),
            unrecovered_once: false,
            last_event_id: None,
            hasher: BuildHasherDefault::default(),
        }
    }

    pub(crate) fn has_positions(&self) -> bool {
        !self.positions.is_empty()
    }

    /// An SSE event's id, once its frame was handled.
    pub(crate) fn event_id(&mut self, id: Option<String>) {
        if id.is_some() {
            self.last_event_id = id;
        }
    }

    pub(crate) fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    pub(crate) fn has_channel(&self, channel: &str) -> bool {
        self.positions.contains_key(channel)
    }

    /// Positions in the compact form (`user:u1~17~k3x9a,group:g0~4~q1w2e`).
    pub(crate) fn since_compact(&self) -> String {
        let mut out = String::new();
        for (channel, p) in &self.positions {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{channel}~{}~{}", p.offset, p.epoch);
        }
        out
    }

    /// Positions as the `auth` frame's `since` object.
    pub(crate) fn since_json(&self) -> String {
        let map: BTreeMap<&str, serde_json::Value> = self
            .positions
            .iter()
            .map(|(c, p)| {
                (
                    c.as_str(),
                    serde_json::json!({"offset": p.offset, "epoch": p.epoch}),
                )
            })
            .collect();
        serde_json::to_string(&map).unwrap_or_default()
    }

    /// A new connection starts: nothing is replay until its welcome says so.
    pub(crate) fn connection_started(&mut self) {
        self.replay_top.clear();
    }

    /// Handles one frame (the JSON text of a WebSocket message or an SSE
    /// event's `data:`).
    pub(crate) fn on_frame(&mut self, text: &str, ledger: &Ledger, recorder: &Recorder) -> Seen {
        let frame: Frame<'_> = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => return Seen::Error(format!("unreadable frame ({e}): {text:.120}")),
        };
        match &*frame.kind {
            "message" => {
                self.on_message(&frame, ledger, recorder);
                Seen::Message
            }
            "welcome" => {
                self.on_welcome(&frame, ledger);
                Seen::Welcome
            }
            "joined" => {
                if let (Some(group), Some(offset), Some(epoch)) =
                    (&frame.group, frame.offset, &frame.epoch)
                {
                    let channel = format!("group:{group}");
                    self.positions.entry(channel).or_insert(Pos {
                        offset,
                        epoch: epoch.to_string(),
                    });
                }
                Seen::Joined
            }
            "bye" => {
                let retry = frame.retry_after_ms.unwrap_or(0);
                ledger.bye(retry);
                Seen::Bye(retry)
            }
            "error" => Seen::Error(format!("error frame: {text:.200}")),
            _ => Seen::Other,
        }
    }

    fn on_welcome(&mut self, frame: &Frame<'_>, ledger: &Ledger) {
        let recovered = frame.recovered.clone().unwrap_or_default();
        let mut unrecovered_here = false;
        for (channel, top) in frame.positions.clone().unwrap_or_default() {
            match recovered.get(&channel) {
                Some(true) => {
                    let kind = match channel.split(':').next() {
                        Some("user") => 0,
                        Some("group") => 1,
                        _ => 2,
                    };
                    ledger.recovered[kind].fetch_add(1, Ordering::Relaxed);
                    // What it missed follows, up to this top; the position
                    // moves as the replayed messages are processed.
                    self.replay_top.insert(channel.clone(), top.offset);
                    let keep = self
                        .positions
                        .get(&channel)
                        .is_some_and(|p| p.epoch == top.epoch && p.offset <= top.offset);
                    if !keep {
                        self.positions.insert(channel, top);
                    }
                }
                Some(false) => {
                    unrecovered_here = true;
                    ledger.unrecovered_total.fetch_add(1, Ordering::Relaxed);
                    let mut kept = ledger.unrecovered.lock();
                    if kept.len() < UNRECOVERED_KEPT {
                        kept.push((self.index, channel.clone()));
                    }
                    drop(kept);
                    // Stale: the application would reload; the position
                    // starts again at the channel's top.
                    self.positions.insert(channel, top);
                }
                None => {
                    self.positions.insert(channel, top);
                }
            }
        }
        if unrecovered_here && !self.unrecovered_once {
            self.unrecovered_once = true;
            ledger.unrecovered_clients.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_message(&mut self, frame: &Frame<'_>, ledger: &Ledger, recorder: &Recorder) {
        let Some(channel) = frame.channel.as_deref() else {
            ledger.error("a message frame without a channel".into());
            return;
        };
        let id = frame.id.map_or("", RawValue::get);
        if !self.seen_ids.insert(self.hasher.hash_one(id)) {
            ledger.raw_duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let (Some(offset), Some(epoch)) = (frame.offset, frame.epoch.as_deref()) {
            self.advance(channel, offset, epoch, ledger);
        }
        let Some(payload) = frame
            .data
            .and_then(|d| serde_json::from_str::<Payload>(d.get()).ok())
        else {
            return;
        };
        // A second id for a message already had (a publish that reached
        // the channel twice) is recorded again: the accounting counts it
        // as duplicated.
        let replayed = frame
            .offset
            .zip(self.replay_top.get(channel))
            .is_some_and(|(offset, top)| offset <= *top);
        ledger.latency(self.index, payload.t, replayed);
        recorder.record(payload.s, payload.t, self.index);
    }

    /// Moves the channel's position to a new message, counting a skipped
    /// offset (a gap) or a new epoch.
    fn advance(&mut self, channel: &str, offset: u64, epoch: &str, ledger: &Ledger) {
        match self.positions.get_mut(channel) {
            Some(p) if p.epoch == epoch => {
                if offset > p.offset + 1 {
                    ledger.gaps.fetch_add(1, Ordering::Relaxed);
                }
                p.offset = p.offset.max(offset);
            }
            Some(p) => {
                ledger.epoch_changes.fetch_add(1, Ordering::Relaxed);
                *p = Pos {
                    offset,
                    epoch: epoch.to_owned(),
                };
            }
            None => {
                self.positions.insert(
                    channel.to_owned(),
                    Pos {
                        offset,
                        epoch: epoch.to_owned(),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, id: &str, offset: u64, seq: u64) -> String {
        let t = unix_us();
        format!(
            r#"{{"type":"message","channel":"{channel}","event":"bench","data":{{"s":{seq},"t":{t},"p":""}},"id":"{id}","ts":1,"offset":{offset},"epoch":"e1"}}"#
        )
    }

    /// A client de-duplicates by id, counts what the id check caught,
    /// tells replay from live by the welcome's top, and resumes from the
    /// last message it processed.
    #[test]
    fn a_client_dedups_by_id_and_resumes_from_its_last_message() {
        let (ledger, recorder) = (Ledger::new(), Recorder::new());
        recorder.set_connections(7, 1);
        recorder.start_phase(0, 10);
        let mut t = Tracker::new(7);
        t.connection_started();
        let welcome = r#"{"type":"welcome","conn":"n-1","uid":"u7","node":"n","exp":1,"heartbeat":25,"positions":{"all":{"offset":0,"epoch":"a"},"user:u7":{"offset":2,"epoch":"e1"}}}"#;
        assert_eq!(t.on_frame(welcome, &ledger, &recorder), Seen::Welcome);
        let joined = r#"{"type":"joined","id":1,"group":"g0","offset":5,"epoch":"g"}"#;
        assert_eq!(t.on_frame(joined, &ledger, &recorder), Seen::Joined);
        t.on_frame(&msg("user:u7", "m1", 3, 0), &ledger, &recorder);
        t.on_frame(&msg("user:u7", "m1", 3, 0), &ledger, &recorder);
        t.on_frame(&msg("user:u7", "m2", 5, 1), &ledger, &recorder);
        assert_eq!(
            t.since_compact(),
            "all~0~a,group:g0~5~g,user:u7~5~e1",
            "positions follow the messages"
        );
        assert!(
            t.since_json()
                .contains(r#""user:u7":{"epoch":"e1","offset":5}"#)
        );
        // Reconnect: the user channel resumed up to 7, the group did not.
        t.connection_started();
        let welcome = r#"{"type":"welcome","positions":{"all":{"offset":0,"epoch":"a"},"group:g0":{"offset":9,"epoch":"h"},"user:u7":{"offset":7,"epoch":"e1"}},"recovered":{"all":true,"group:g0":false,"user:u7":true}}"#;
        t.on_frame(welcome, &ledger, &recorder);
        t.on_frame(&msg("user:u7", "m3", 6, 2), &ledger, &recorder);
        t.on_frame(&msg("user:u7", "m4", 8, 3), &ledger, &recorder);
        let bye = r#"{"type":"bye","reason":"shutdown","reconnect":true,"retry_after_ms":1500}"#;
        assert_eq!(t.on_frame(bye, &ledger, &recorder), Seen::Bye(1500));
        let r = ledger.report(recorder.report(1));
        assert_eq!(r.raw_duplicates, 1);
        assert_eq!(r.unrecovered, [(7, "group:g0".to_owned())]);
        assert_eq!((r.unrecovered_total, r.unrecovered_clients), (1, 1));
        assert_eq!(r.recovered, [1, 0, 1]);
        assert_eq!(r.gaps, 2, "3 → 5 and 6 → 8 skip an offset");
        let count = |pairs: &[(u64, u64)]| pairs.iter().map(|p| p.1).sum::<u64>();
        assert_eq!(count(&r.replay_latency), 1, "offset 6 ≤ top 7");
        assert_eq!(count(&r.live_latency), 3);
        assert_eq!(r.phase.received, 4);
        assert_eq!((r.byes, r.max_retry_after_ms), (1, 1500));
        assert!(t.since_compact().contains("group:g0~9~h"));
    }
}
