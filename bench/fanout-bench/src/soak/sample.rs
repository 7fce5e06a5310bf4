//! What the soak reads, per node and from the workers, at each sample:
//! `/proc` (RSS, open files, kernel send queues), the node's `/metrics`
//! (connections, tasks, broker subscriptions), the clients' running tally;
//! and the table rows it prints.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{control::Tally, http, pool::Pool, procstat};

/// How long a node may take to settle once every client has gone.
const AT_REST_MAX: Duration = Duration::from_secs(30);

/// One node as the soak watches it.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    pub(super) pid: u32,
    pub(super) port: u16,
    pub(super) internal: SocketAddr,
}

/// One node at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct NodeSample {
    pub(super) rss_bytes: Option<u64>,
    pub(super) fds: Option<u64>,
    /// `fanout_connections_active`, all transports.
    pub(super) connections: Option<f64>,
    /// `fanout_runtime_tasks_alive`.
    pub(super) tasks: Option<f64>,
    /// `fanout_broker_subscriptions`.
    pub(super) subscriptions: Option<f64>,
    /// Kernel send queues of the node's client sockets.
    pub(super) send_queue_bytes: Option<u64>,
    /// `fanout_history_gap_messages_total`, both results: messages the
    /// node filled in from history after they failed to arrive live, and
    /// gaps it could not fill. Without an outage, none.
    pub(super) gap_messages: Option<f64>,
}

impl NodeSample {
    /// Open files beyond one per connection.
    pub(super) fn fds_over(&self) -> Option<f64> {
        Some(self.fds? as f64 - self.connections?)
    }

    pub(super) fn tasks_over(&self) -> Option<f64> {
        Some(self.tasks? - self.connections?)
    }

    /// Redis subscriptions beyond one per connection (each client is a
    /// user of its own): the groups, and channels lingering before their
    /// unsubscribe.
    pub(super) fn subscriptions_over(&self) -> Option<f64> {
        Some(self.subscriptions? - self.connections?)
    }
}

/// Every node and the clients at one moment.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sample {
    /// Seconds since publishing started.
    pub(super) t_s: f64,
    pub(super) nodes: Vec<NodeSample>,
    #[serde(flatten)]
    pub(super) clients: Tally,
    /// Deliveries owed by the messages published so far that have not
    /// arrived (yet): in flight, or lost.
    pub(super) outstanding: u64,
}

/// A node before the first client came and after the last one went.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct AtRest {
    pub(super) fds: Option<u64>,
    pub(super) tasks: Option<f64>,
    pub(super) rss_bytes: Option<u64>,
    pub(super) connections: Option<f64>,
}

/// Sums every series of `name` (all label sets) in a Prometheus text scrape.
fn metric_sum(scrape: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let series = line.split([' ', '{']).next().unwrap_or("");
        if series != name {
            continue;
        }
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Reads every node: open files first (the scrape's own connection is one
/// more), then `/metrics`, then the send queues.
pub(super) async fn read_nodes(watched: &[Watched]) -> Vec<NodeSample> {
    let mut out: Vec<NodeSample> = watched
        .iter()
        .map(|w| NodeSample {
            rss_bytes: procstat::rss_bytes(w.pid),
            fds: procstat::fd_count(w.pid),
            ..NodeSample::default()
        })
        .collect();
    for (n, w) in out.iter_mut().zip(watched) {
        let body = http::get_body(w.internal, "/metrics", Duration::from_secs(5)).await;
        let text = body
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        n.connections = metric_sum(&text, "fanout_connections_active");
        n.tasks = metric_sum(&text, "fanout_runtime_tasks_alive");
        n.subscriptions = metric_sum(&text, "fanout_broker_subscriptions");
        n.gap_messages = metric_sum(&text, "fanout_history_gap_messages_total");
    }
    let ports: Vec<u16> = watched.iter().map(|w| w.port).collect();
    if let Some(queues) = procstat::send_queues(&ports) {
        for (n, q) in out.iter_mut().zip(queues) {
            n.send_queue_bytes = Some(q);
        }
    }
    out
}

pub(super) async fn sample(
    watched: &[Watched],
    pool: &mut Pool,
    started: Instant,
    owed: u64,
) -> anyhow::Result<Sample> {
    let t_s = started.elapsed().as_secs_f64();
    let nodes = read_nodes(watched).await;
    let clients = pool.tally().await?;
    Ok(Sample {
        t_s,
        nodes,
        clients,
        outstanding: owed.saturating_sub(clients.received),
    })
}

/// Waits until no node holds a client connection and each one's open
/// files stayed the same over three readings, at most [`AT_REST_MAX`];
/// then reads them.
pub(super) async fn at_rest(watched: &[Watched]) -> Vec<AtRest> {
    let began = Instant::now();
    let mut last: Vec<Option<u64>> = Vec::new();
    let mut same = 0;
    loop {
        let now = read_nodes(watched).await;
        let fds: Vec<Option<u64>> = now.iter().map(|n| n.fds).collect();
        let idle = now.iter().all(|n| n.connections.is_none_or(|c| c == 0.0));
        same = if idle && fds == last { same + 1 } else { 0 };
        last = fds;
        if same >= 2 || began.elapsed() >= AT_REST_MAX {
            return now
                .iter()
                .map(|n| AtRest {
                    fds: n.fds,
                    tasks: n.tasks,
                    rss_bytes: n.rss_bytes,
                    connections: n.connections,
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) fn header(nodes: usize) -> String {
    let mut s = format!("{:>7}", "t");
    for i in 1..=nodes {
        let _ = write!(
            s,
            " | n{i} RSS MiB {:>6} {:>6} {:>7} {:>7} {:>8}",
            "fds", "conns", "fd-conn", "tasks", "sendQ KiB"
        );
    }
    let _ = write!(
        s,
        " | {:>6} {:>8} {:>11} {:>11} {:>6} {:>4}",
        "held", "reconn", "delivered", "outstanding", "dups", "gaps"
    );
    s
}

pub(super) fn row(s: &Sample) -> String {
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
    let mut out = format!("{:>6.0}s", s.t_s);
    for n in &s.nodes {
        let _ = write!(
            out,
            " | {:>10} {:>6} {:>6} {:>7} {:>7} {:>9}",
            opt(n.rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0)), 1),
            opt(n.fds.map(|f| f as f64), 0),
            opt(n.connections, 0),
            opt(n.fds_over(), 0),
            opt(n.tasks, 0),
            opt(n.send_queue_bytes.map(|b| b as f64 / 1024.0), 1),
        );
    }
    let c = &s.clients;
    let _ = write!(
        out,
        " | {:>6} {:>8} {:>11} {:>11} {:>6} {:>4}",
        c.connected, c.reconnects, c.received, s.outstanding, c.raw_duplicates, c.gaps
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_are_summed_over_labels() {
        let text = "# HELP fanout_connections_active x\n\
                    fanout_connections_active{transport=\"sse\"} 3\n\
                    fanout_connections_active{transport=\"websocket\"} 7\n\
                    fanout_connections_active_other 100\n\
                    fanout_runtime_tasks_alive 42\n";
        assert_eq!(metric_sum(text, "fanout_connections_active"), Some(10.0));
        assert_eq!(metric_sum(text, "fanout_runtime_tasks_alive"), Some(42.0));
        assert_eq!(metric_sum(text, "fanout_broker_subscriptions"), None);
    }
}
