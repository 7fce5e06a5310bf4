//! The soak's verdict: after the warm-up nothing a node holds may keep
//! growing (see `trend`), and once every client has gone it must hold as
//! many files and tasks as before the first came.

use serde::Serialize;

use super::sample::{AtRest, NodeSample, Sample};
use crate::{
    report::fmt_num,
    trend::{self, Allowance, Growth},
};

/// Open files a node may hold, over its connections, beyond what it held
/// after the warm-up: connections being accepted or closed at the moment
/// of a sample, the API's keep-alive connections.
const FDS_SLACK: f64 = 16.0;
/// Tasks a node may run, over its connections, beyond the baseline: the
/// same moments, and in-flight API requests.
const TASKS_SLACK: f64 = 64.0;
/// Redis subscriptions a node may hold, over its connections, beyond the
/// baseline: channels lingering before their unsubscribe (about a second
/// of the reconnect rate), groups whose last member just left or came.
const SUBSCRIPTIONS_SLACK: f64 = 50.0;
/// Kernel send-queue bytes a node's sockets may hold beyond the baseline.
const SEND_QUEUE_SLACK: f64 = 1024.0 * 1024.0;

/// One check of the verdict.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Check {
    pub(super) what: String,
    pub(super) unit: &'static str,
    #[serde(flatten)]
    pub(super) growth: Option<Growth>,
    pub(super) allowed: f64,
    pub(super) ok: bool,
}

/// After the warm-up, per node: RSS; open files, tasks and Redis
/// subscriptions beyond one per connection; kernel send queues.
pub(super) fn growth_checks(post: &[&Sample], nodes: usize, rss_share: f64) -> Vec<Check> {
    type Series = fn(&NodeSample) -> Option<f64>;
    let series: [(&str, &'static str, Series, Allowance); 5] = [
        (
            "RSS",
            "MiB",
            |n| n.rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
            Allowance {
                absolute: 0.0,
                relative: rss_share,
            },
        ),
        (
            "open files beyond connections",
            "",
            NodeSample::fds_over,
            Allowance {
                absolute: FDS_SLACK,
                relative: 0.0,
            },
        ),
        (
            "tasks beyond connections",
            "",
            NodeSample::tasks_over,
            Allowance {
                absolute: TASKS_SLACK,
                relative: 0.0,
            },
        ),
        (
            "send-queue bytes",
            "KiB",
            |n| n.send_queue_bytes.map(|b| b as f64 / 1024.0),
            Allowance {
                absolute: SEND_QUEUE_SLACK / 1024.0,
                relative: 0.5,
            },
        ),
        (
            "subscriptions beyond connections",
            "",
            NodeSample::subscriptions_over,
            Allowance {
                absolute: SUBSCRIPTIONS_SLACK,
                relative: 0.0,
            },
        ),
    ];
    let mut checks = Vec::new();
    for node in 0..nodes {
        for (name, unit, read, allowance) in &series {
            let points: Vec<(f64, f64)> = post
                .iter()
                .filter_map(|s| Some((s.t_s, read(s.nodes.get(node)?)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let growth = trend::growth(&points);
            let allowed = growth.map_or(0.0, |g| allowance.of(g.baseline));
            checks.push(Check {
                what: format!("node {} {name}", node + 1),
                unit,
                growth,
                allowed,
                // Too few samples to judge is a failure: a soak must say.
                ok: growth.is_some_and(|g| allowance.holds(&g)),
            });
        }
    }
    checks
}

/// Once every client went: open files and tasks back where they were
/// before the first came, within `slack`.
pub(super) fn rest_checks(before: &[AtRest], after: &[AtRest], slack: f64) -> Vec<Check> {
    let mut checks = Vec::new();
    for (i, (b, e)) in before.iter().zip(after).enumerate() {
        let pairs = [
            (
                "open files",
                b.fds.map(|v| v as f64),
                e.fds.map(|v| v as f64),
            ),
            ("tasks", b.tasks, e.tasks),
        ];
        for (name, b, e) in pairs {
            let (Some(b), Some(e)) = (b, e) else {
                continue;
            };
            checks.push(Check {
                what: format!("node {} {name} with no client (before → after)", i + 1),
                unit: "",
                growth: Some(Growth {
                    baseline: b,
                    end: e,
                    by_median: e - b,
                    by_fit: e - b,
                    samples: 2,
                }),
                allowed: slack,
                ok: e - b <= slack,
            });
        }
        if e.connections.is_some_and(|c| c > 0.0) {
            checks.push(Check {
                what: format!("node {} connections once every client closed", i + 1),
                unit: "",
                growth: e.connections.map(|c| Growth {
                    baseline: 0.0,
                    end: c,
                    by_median: c,
                    by_fit: c,
                    samples: 1,
                }),
                allowed: 0.0,
                ok: false,
            });
        }
    }
    checks
}

pub(super) fn describe(c: &Check) -> String {
    let Some(g) = c.growth else {
        return "too few samples after the warm-up to judge".into();
    };
    let unit = if c.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", c.unit)
    };
    if g.samples <= 2 {
        return format!(
            "{} → {} ({:+}), allowed {:+}",
            fmt_num(g.baseline),
            fmt_num(g.end),
            g.by_median,
            c.allowed
        );
    }
    let pct = |v: f64| {
        if g.baseline.abs() > 0.0 {
            format!(" ({:+.2} %)", 100.0 * v / g.baseline)
        } else {
            String::new()
        }
    };
    format!(
        "median {}{unit} → {}{unit}: {:+.1}{}; fitted {:+.1}{}; allowed +{}{unit} ({} samples)",
        fmt_num(g.baseline),
        fmt_num(g.end),
        g.by_median,
        pct(g.by_median),
        g.by_fit,
        pct(g.by_fit),
        fmt_num(c.allowed),
        g.samples
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Tally;

    fn at(fds: u64, tasks: f64) -> AtRest {
        AtRest {
            fds: Some(fds),
            tasks: Some(tasks),
            rss_bytes: None,
            connections: Some(0.0),
        }
    }

    /// One file more after every client went is a leak; the same count is not.
    #[test]
    fn a_file_left_open_fails() {
        let ok = rest_checks(&[at(20, 30.0)], &[at(20, 30.0)], 0.0);
        assert!(ok.iter().all(|c| c.ok), "{ok:?}");
        let leak = rest_checks(&[at(20, 30.0)], &[at(21, 30.0)], 0.0);
        assert!(!leak[0].ok && leak[1].ok, "{leak:?}");
    }

    /// RSS climbing 10 % after the warm-up fails; open files tracking the
    /// connections do not.
    #[test]
    fn growing_rss_fails() {
        let samples: Vec<Sample> = (0..30u32)
            .map(|i| Sample {
                t_s: f64::from(i) * 10.0,
                nodes: vec![NodeSample {
                    rss_bytes: Some((100.0 + f64::from(i) / 3.0) as u64 * 1024 * 1024),
                    fds: Some(1000 + u64::from(i % 3) + 20),
                    connections: Some(1000.0 + f64::from(i % 3)),
                    tasks: Some(2000.0),
                    subscriptions: Some(500.0),
                    send_queue_bytes: Some(0),
                    gap_messages: None,
                }],
                clients: Tally::default(),
                outstanding: 0,
            })
            .collect();
        let post: Vec<&Sample> = samples.iter().collect();
        let checks = growth_checks(&post, 1, 0.05);
        let by = |w: &str| checks.iter().find(|c| c.what == w).unwrap();
        assert!(!by("node 1 RSS").ok, "{checks:?}");
        assert!(by("node 1 open files beyond connections").ok, "{checks:?}");
        assert!(by("node 1 send-queue bytes").ok, "{checks:?}");
    }
}
