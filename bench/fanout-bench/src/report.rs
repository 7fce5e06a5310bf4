//! Results: one `Outcome` per scenario run, printed as a table or JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A bound a metric should meet (from the targets in docs/benchmarks.md).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Self::AtMost(b) => value <= b,
            Self::AtLeast(b) => value >= b,
        }
    }

    fn show(self) -> String {
        match self {
            Self::AtMost(b) => format!("≤ {}", fmt_num(b)),
            Self::AtLeast(b) => format!("≥ {}", fmt_num(b)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) goal: Option<Goal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) met: Option<bool>,
}

/// Every message accounted for.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Accounting {
    /// Messages published successfully.
    pub(crate) sent: u64,
    /// Publishes that failed (no delivery expected).
    pub(crate) publish_failed: u64,
    /// Deliveries expected from the successful publishes.
    pub(crate) expected: u64,
    /// Expected deliveries that arrived (once).
    pub(crate) delivered: u64,
    pub(crate) missing: u64,
    /// Deliveries beyond the expected count of a message.
    pub(crate) duplicated: u64,
    /// Deliveries of messages from outside the measurement.
    pub(crate) stray: u64,
    /// Clients whose deliveries differ from the messages addressed to them
    /// (count or which ones); absent when not checked (a publish failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) clients_mismatched: Option<u64>,
    /// The first messages with deliveries missing, to tell where a loss
    /// happened (empty when none is missing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) missing_messages: Vec<MissingMessage>,
    /// The first clients (by index, client i is user u<i>) whose deliveries
    /// differ from what was addressed to them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) mismatched_clients: Vec<u64>,
}

/// A message some of whose deliveries never came.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MissingMessage {
    /// Its index in the run (`s` in the payload).
    pub(crate) seq: u64,
    /// Where it was published to.
    pub(crate) to: String,
    /// Seconds after the run's first publish that it was sent.
    pub(crate) sent_at_s: f64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Resources {
    pub(crate) wall_s: f64,
    /// CPU seconds of the server node(s) during the measurement (null
    /// without `--pid`).
    pub(crate) server_cpu_s: Option<f64>,
    /// CPU seconds of the load generator (coordinator and workers).
    pub(crate) loadgen_cpu_s: f64,
    /// CPU seconds of redis-server, when the bench knows its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis_cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    pub(crate) scenario: &'static str,
    pub(crate) target: &'static str,
    pub(crate) setup: String,
    pub(crate) metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) accounting: Option<Accounting>,
    pub(crate) resources: Resources,
    /// Connections the server closed during the measurement, by close code.
    pub(crate) closed_by_server: std::collections::BTreeMap<u16, u64>,
    pub(crate) errors: Vec<String>,
    /// What happened along the way, worth reading but no failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
}

impl Outcome {
    pub(crate) fn new(scenario: &'static str, target: &'static str, setup: String) -> Self {
        Self {
            scenario,
            target,
            setup,
            metrics: Vec::new(),
            accounting: None,
            resources: Resources::default(),
            closed_by_server: Default::default(),
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn metric(&mut self, name: &str, value: f64, unit: &'static str) {
        self.metrics.push(Metric {
            name: name.to_owned(),
            value,
            unit,
            goal: None,
            met: None,
        });
    }

    /// Attaches a goal to the metric called `name`, if present.
    pub(crate) fn goal(&mut self, name: &str, goal: Goal) {
        if let Some(m) = self.metrics.iter_mut().find(|m| m.name == name) {
            m.goal = Some(goal);
            m.met = Some(goal.met(m.value));
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Latency percentiles (in ms) of a µs histogram as metrics `<prefix> p50` ….
    pub(crate) fn percentiles(&mut self, prefix: &str, h: &Histogram<u64>, quantiles: &[f64]) {
        if h.is_empty() {
            return;
        }
        for &q in quantiles {
            let label = match q {
                q if q >= 0.999 => "p99.9",
                q if q >= 0.99 => "p99",
                q if q >= 0.5 => "p50",
                _ => "p?",
            };
            let name = format!("{prefix} {label}");
            self.metric(&name, h.value_at_quantile(q) as f64 / 1000.0, "ms");
        }
    }
}

pub(crate) fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    // Thousands separators for the integer part.
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// The results as one table: a heading line per scenario run, then a row
/// per metric.
pub(crate) fn table(outcomes: &[Outcome]) -> String {
    let mut blocks: Vec<(String, Vec<[String; 3]>)> = Vec::new();
    for o in outcomes {
        let mut rows = Vec::new();
        for m in &o.metrics {
            let goal = m.goal.map_or(String::new(), |g| {
                format!(
                    "goal {} {}",
                    g.show(),
                    if m.met == Some(true) { "ok" } else { "MISSED" }
                )
            });
            rows.push([
                m.name.clone(),
                format!("{} {}", fmt_num(m.value), m.unit),
                goal,
            ]);
        }
        if let Some(a) = &o.accounting {
            let mut text = format!(
                "sent {} · expected {} · delivered {} · missing {} · duplicated {}",
                fmt_num(a.sent as f64),
                fmt_num(a.expected as f64),
                fmt_num(a.delivered as f64),
                a.missing,
                a.duplicated
            );
            if let Some(n) = a.clients_mismatched {
                let _ = write!(text, " · clients mismatched {n}");
            }
            if a.publish_failed > 0 {
                let _ = write!(text, " · publish failed {}", a.publish_failed);
            }
            for m in a.missing_messages.iter().take(3) {
                let _ = write!(
                    text,
                    " · message {} to {} (sent at {:.2} s) reached {} of {}",
                    m.seq, m.to, m.sent_at_s, m.delivered, m.expected
                );
            }
            if !a.mismatched_clients.is_empty() {
                let _ = write!(text, " · clients {:?}", a.mismatched_clients);
            }
            rows.push(["messages".into(), text, String::new()]);
        }
        let r = &o.resources;
        let server = r.server_cpu_s.map_or_else(
            || "not measured (no --pid)".to_owned(),
            |s| format!("{s:.1} s"),
        );
        let mut cpu = format!("server {server} · load generator {:.1} s", r.loadgen_cpu_s);
        if let Some(redis) = r.redis_cpu_s {
            let _ = write!(cpu, " · redis {redis:.1} s");
        }
        let _ = write!(cpu, " in {:.1} s", r.wall_s);
        rows.push(["cpu".into(), cpu, String::new()]);
        if !o.closed_by_server.is_empty() {
            let closed: Vec<String> = o
                .closed_by_server
                .iter()
                .map(|(code, n)| format!("{n} × {code}"))
                .collect();
            rows.push(["closed by server".into(), closed.join(", "), String::new()]);
        }
        for n in &o.notes {
            rows.push(["note".into(), n.clone(), String::new()]);
        }
        for e in &o.errors {
            rows.push(["error".into(), e.clone(), String::new()]);
        }
        blocks.push((format!("{} · {} · {}", o.scenario, o.target, o.setup), rows));
    }
    let mut widths = [0usize; 2];
    for (_, rows) in &blocks {
        for r in rows {
            widths[0] = widths[0].max(r[0].chars().count());
            // A goal is only ever on a metric's row: long free text
            // (notes) need not push the goals of every table to the right.
            if r[0] != "note" {
                widths[1] = widths[1].max(r[1].chars().count());
            }
        }
    }
    let mut out = String::new();
    for (heading, rows) in &blocks {
        let _ = writeln!(out, "{heading}");
        for [name, value, goal] in rows {
            let line = format!(
                "  {name:<w0$}  {value:<w1$}  {goal}",
                w0 = widths[0],
                w1 = widths[1]
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(4.8), "4.80");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(-1500.0), "-1,500");
    }

    #[test]
    fn goals_are_judged() {
        let mut o = Outcome::new("idle", "fanout", "x".into());
        o.metric("rss", 4.8, "KiB");
        o.goal("rss", Goal::AtMost(5.0));
        assert_eq!(o.metrics[0].met, Some(true));
        assert!(table(&[o]).contains("goal ≤ 5 ok"));
    }
}
