//! Worker-side accounting of deliveries: per sequence number, how many
//! arrived and the slowest one; per connection, how many arrived and the sum
//! of their sequence offsets (so the coordinator can check that every client
//! got exactly the messages addressed to it); a latency histogram.
//! Lock-free counters, a few histogram shards behind short locks.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use parking_lot::{Mutex, RwLock};

use crate::control::PhaseReport;

const SHARDS: usize = 8;
/// Latencies are recorded up to 10 minutes (µs).
const MAX_LATENCY_US: u64 = 600_000_000;

#[derive(Debug)]
struct Phase {
    base: u64,
    counts: Vec<AtomicU32>,
    max_latency: Vec<AtomicU32>,
    /// Connection index of `per_conn[0]`.
    first_conn: u64,
    /// Per connection of this worker: deliveries of this phase, and the sum
    /// of their offsets.
    per_conn: Vec<(AtomicU32, AtomicU64)>,
}

#[derive(Debug)]
pub(crate) struct Recorder {
    phase: RwLock<Arc<Phase>>,
    /// The connections this worker holds (first index, count), set by
    /// `Connect`; each phase counts deliveries per connection over them.
    conns: Mutex<(u64, u64)>,
    hist: Vec<Mutex<Histogram<u64>>>,
    received: AtomicU64,
    stray: AtomicU64,
    closed_by_code: Mutex<BTreeMap<u16, u64>>,
}

pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

// The bounds are constants hdrhistogram accepts (1 ≤ low, high ≥ 2 × low,
// 3 significant figures), so construction cannot fail.
#[allow(clippy::expect_used)]
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds")
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            phase: RwLock::new(Arc::new(Phase {
                base: 0,
                counts: Vec::new(),
                max_latency: Vec::new(),
                first_conn: 0,
                per_conn: Vec::new(),
            })),
            conns: Mutex::new((0, 0)),
            hist: (0..SHARDS).map(|_| Mutex::new(new_hist())).collect(),
            received: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            closed_by_code: Mutex::new(BTreeMap::new()),
        }
    }

    /// The connections this worker holds: indices `first .. first + count`.
    pub(crate) fn set_connections(&self, first: u64, count: u64) {
        *self.conns.lock() = (first, count);
    }

    /// Starts a phase: forgets earlier deliveries and counts `base .. base + len`.
    pub(crate) fn start_phase(&self, base: u64, len: u64) {
        let len = usize::try_from(len).unwrap_or(0);
        let (first_conn, conns) = *self.conns.lock();
        *self.phase.write() = Arc::new(Phase {
            base,
            counts: (0..len).map(|_| AtomicU32::new(0)).collect(),
            max_latency: (0..len).map(|_| AtomicU32::new(0)).collect(),
            first_conn,
            per_conn: (0..conns)
                .map(|_| (AtomicU32::new(0), AtomicU64::new(0)))
                .collect(),
        });
        for h in &self.hist {
            h.lock().reset();
        }
        self.received.store(0, Ordering::Relaxed);
        self.stray.store(0, Ordering::Relaxed);
    }

    /// Looks for a bench payload (`"s":<seq>,"t":<unix µs>`) in a text frame
    /// received by connection `conn`, and records it. Returns whether the
    /// frame carried one.
    pub(crate) fn record_frame(&self, text: &str, conn: u64) -> bool {
        let (Some(seq), Some(sent)) = (number_after(text, "\"s\":"), number_after(text, "\"t\":"))
        else {
            return false;
        };
        self.record(seq, sent, conn);
        true
    }

    /// Records one delivery of message `seq`, published at `sent` (unix
    /// µs), to connection `conn`.
    pub(crate) fn record(&self, seq: u64, sent: u64, conn: u64) {
        let latency = unix_us().saturating_sub(sent);
        let phase = self.phase.read();
        let Some(offset) = seq
            .checked_sub(phase.base)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o < phase.counts.len())
        else {
            self.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        phase.counts[offset].fetch_add(1, Ordering::Relaxed);
        if let Some((n, sum)) = conn
            .checked_sub(phase.first_conn)
            .and_then(|c| phase.per_conn.get(usize::try_from(c).ok()?))
        {
            n.fetch_add(1, Ordering::Relaxed);
            sum.fetch_add(offset as u64, Ordering::Relaxed);
        }
        let lat32 = u32::try_from(latency).unwrap_or(u32::MAX);
        phase.max_latency[offset].fetch_max(lat32, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
        let _ = self.hist[(conn % SHARDS as u64) as usize]
            .lock()
            .record(latency.clamp(1, MAX_LATENCY_US));
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub(crate) fn closed(&self, code: u16) {
        *self.closed_by_code.lock().entry(code).or_default() += 1;
    }

    pub(crate) fn report(&self, open: u64) -> PhaseReport {
        let phase = self.phase.read().clone();
        let per_seq = phase
            .counts
            .iter()
            .zip(&phase.max_latency)
            .enumerate()
            .filter_map(|(i, (c, m))| {
                let c = c.load(Ordering::Relaxed);
                (c > 0).then(|| (i as u64, c, m.load(Ordering::Relaxed)))
            })
            .collect();
        let per_conn = phase
            .per_conn
            .iter()
            .enumerate()
            .filter_map(|(i, (n, sum))| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (phase.first_conn + i as u64, n, sum.load(Ordering::Relaxed)))
            })
            .collect();
        let mut merged = new_hist();
        for h in &self.hist {
            let _ = merged.add(&*h.lock());
        }
        PhaseReport {
            received: self.received(),
            stray: self.stray.load(Ordering::Relaxed),
            per_seq,
            per_conn,
            latency: hist_to_pairs(&merged),
            open,
            closed_by_code: self
                .closed_by_code
                .lock()
                .iter()
                .map(|(c, n)| (*c, *n))
                .collect(),
        }
    }
}

pub(crate) fn hist_to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub(crate) fn pairs_into_hist(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, n) in pairs {
        let _ = h.record_n(v.clamp(1, MAX_LATENCY_US), n);
    }
}

pub(crate) fn latency_hist() -> Histogram<u64> {
    new_hist()
}

/// The unsigned integer right after `key` in `text`, if any.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_payload_in_both_targets_frames() {
        let r = Recorder::new();
        r.set_connections(4, 2);
        r.start_phase(10, 5);
        let now = unix_us();
        let fanout = format!(
            r#"{{"type":"message","channel":"group:g0","data":{{"s":12,"t":{now},"p":""}},"id":"x","ts":1}}"#
        );
        let sio = format!(r#"42["new_msg",{{"s":12,"t":{now}}}]"#);
        assert!(r.record_frame(&fanout, 4));
        assert!(r.record_frame(&sio, 5));
        assert!(!r.record_frame(r#"{"type":"welcome","ts":5}"#, 4));
        assert!(r.record_frame(&format!(r#"{{"s":99,"t":{now}}}"#), 4));
        assert!(r.record_frame(&format!(r#"{{"s":13,"t":{now}}}"#), 5));
        let rep = r.report(0);
        assert_eq!(rep.received, 3);
        assert_eq!(rep.stray, 1);
        assert_eq!(rep.per_seq.len(), 2);
        assert_eq!((rep.per_seq[0].0, rep.per_seq[0].1), (2, 2));
        // Connection 4 had offset 2; connection 5 offsets 2 and 3.
        assert_eq!(rep.per_conn, [(4, 1, 2), (5, 2, 5)]);
    }
}
