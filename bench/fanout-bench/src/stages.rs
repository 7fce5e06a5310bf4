//! The nodes' own account of a broadcast run: `fanout_broadcast_stage_seconds`
//! (where a message's time goes inside a node, src/stages.rs),
//! `fanout_broker_transit_seconds` (from the publish to the node's broker
//! hand-over, the part before those stages) and the runtime workers' busy
//! time, scraped from every fanout node's `/metrics`
//! before and after the run. The difference, summed over the nodes, gives
//! each stage's percentiles and how busy the worker threads were.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tokio::time::Instant;

use crate::{http, report::Outcome};

const STAGE: &str = "fanout_broadcast_stage_seconds_bucket{";
const TRANSIT: &str = "fanout_broker_transit_seconds_bucket{";
const BUSY: &str = "fanout_runtime_worker_busy_seconds_total{";
/// The stages, in order, with the names they get in the report.
const STAGES: [(&str, &str); 5] = [
    ("transit", "node: publish → hand-over"),
    ("dispatched", "node: dispatched"),
    ("queued", "node: all queued"),
    ("first_write", "node: first write"),
    ("last_write", "node: last write"),
];

/// One scrape of every node, summed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    /// Per stage: cumulative counts by upper bound (`le`, `+Inf` as ∞).
    buckets: BTreeMap<String, Vec<(f64, f64)>>,
    /// Worker busy seconds, summed over the nodes' workers.
    busy: f64,
    workers: usize,
    at: Option<Instant>,
}

/// Scrapes `nodes` (internal addresses); a node that does not answer is
/// left out.
pub(crate) async fn snapshot(nodes: &[SocketAddr]) -> Snapshot {
    let mut snap = Snapshot {
        at: Some(Instant::now()),
        ..Snapshot::default()
    };
    for &node in nodes {
        if let Some(body) = http::get_body(node, "/metrics", Duration::from_secs(5)).await {
            snap.add(&String::from_utf8_lossy(&body));
        }
    }
    snap
}

impl Snapshot {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let stage_le = if let Some(labels) = series.strip_prefix(STAGE) {
                label(labels, "stage").zip(label(labels, "le"))
            } else if let Some(labels) = series.strip_prefix(TRANSIT) {
                // Not a stage of the node's: kept beside them as `transit`.
                label(labels, "le").map(|le| ("transit", le))
            } else {
                None
            };
            if let Some((stage, le)) = stage_le {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                let buckets = self.buckets.entry(stage.to_owned()).or_default();
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, count)) => *count += value,
                    None => {
                        buckets.push((le, value));
                        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                }
            } else if series.starts_with(BUSY) {
                self.busy += value;
                self.workers += 1;
            }
        }
    }

    /// What happened between `before` and `self`, as metrics of `out`.
    pub(crate) fn report_since(&self, before: &Self, out: &mut Outcome) {
        for (stage, name) in STAGES {
            let Some(after) = self.buckets.get(stage) else {
                continue;
            };
            let earlier = before.buckets.get(stage);
            let delta: Vec<(f64, f64)> = after
                .iter()
                .map(|&(le, n)| {
                    let was = earlier
                        .and_then(|b| b.iter().find(|(l, _)| *l == le))
                        .map_or(0.0, |(_, n)| *n);
                    (le, n - was)
                })
                .collect();
            for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
                if let Some(v) = quantile(&delta, q) {
                    out.metric(&format!("{name} {label}"), v * 1000.0, "ms");
                }
            }
        }
        if let (Some(a), Some(b)) = (self.at, before.at)
            && self.workers > 0
        {
            let wall = a.duration_since(b).as_secs_f64() * self.workers as f64;
            if wall > 0.0 {
                let busy = (self.busy - before.busy) / wall * 100.0;
                out.metric("node: workers busy", busy, "%");
            }
        }
    }
}

/// The value of label `name` in `a="x",b="y"}`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// The `q` quantile of cumulative `buckets`, interpolated linearly inside
/// its bucket (as Prometheus' `histogram_quantile` does); `None` when
/// nothing was counted.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let inside = count - prev.1;
            let frac = if inside > 0.0 {
                (rank - prev.1) / inside
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# TYPE fanout_broadcast_stage_seconds histogram
fanout_broadcast_stage_seconds_bucket{stage=\"queued\",le=\"0.01\"} 50
fanout_broadcast_stage_seconds_bucket{stage=\"queued\",le=\"0.02\"} 90
fanout_broadcast_stage_seconds_bucket{stage=\"queued\",le=\"+Inf\"} 100
fanout_broadcast_stage_seconds_sum{stage=\"queued\"} 1.2
fanout_broker_transit_seconds_bucket{le=\"0.01\"} 4
fanout_broker_transit_seconds_bucket{le=\"+Inf\"} 4
fanout_runtime_worker_busy_seconds_total{worker=\"0\"} 3
fanout_runtime_worker_busy_seconds_total{worker=\"1\"} 1
";

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut s = Snapshot::default();
        s.add(SCRAPE);
        let q = &s.buckets["queued"];
        assert_eq!(quantile(q, 0.5), Some(0.01));
        let p70 = quantile(q, 0.7).unwrap();
        assert!((p70 - 0.015).abs() < 1e-9, "{p70}");
        assert_eq!(quantile(q, 0.99), Some(0.02), "past the last bound");
        assert_eq!((s.busy, s.workers), (4.0, 2));
        assert_eq!(s.buckets["transit"], [(0.01, 4.0), (f64::INFINITY, 4.0)]);
    }

    /// Two nodes' scrapes add up, and only what happened since the first
    /// snapshot is reported.
    #[test]
    fn the_report_counts_only_the_run() {
        let mut before = Snapshot::default();
        before.add(SCRAPE);
        let mut after = Snapshot::default();
        after.add(SCRAPE);
        let busier = SCRAPE
            .replace("} 100", "} 210")
            .replace("} 50", "} 150")
            .replace("} 90", "} 190");
        after.add(&busier);
        let mut out = Outcome::new("broadcast", "fanout", String::new());
        after.report_since(&before, &mut out);
        // The run: 150 at ≤ 10 ms, 40 more at ≤ 20 ms, 20 above.
        let p50 = out.get("node: all queued p50").unwrap();
        assert!((p50 - 7.0).abs() < 1e-6, "{p50}");
        assert_eq!(out.get("node: all queued p99"), Some(20.0));
    }
}
