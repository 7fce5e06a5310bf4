//! Fencing a hung node. A node that stops running (SIGSTOP, a stuck
//! process, a host cut off) keeps its Redis connections open, and Redis
//! keeps counting its subscriptions: its users read online in
//! `offline_users`, queries wait for answers that never come, and the
//! messages it is sent wait in buffers until it wakes. So each node keeps a
//! heartbeat key that expires `--node-fence-after` after its last refresh,
//! and registers the names of its Redis connections (fred sends `CLIENT
//! SETNAME` on every connection and reconnection). Every live node checks
//! the registry; one of them closes an expired node's connections with
//! `CLIENT KILL` (on every master of a cluster), so Redis forgets its
//! subscriptions and its users read offline everywhere (the messages for
//! them stay in history). The fenced node, when it wakes, finds the mark
//! its fencer left and sends its clients away to resume elsewhere
//! ([`Inbound::Fenced`]); its connections reconnect and it registers again.
//!
//! False fencing is guarded against from both sides:
//! - heartbeats use a connection of their own, so a backlog of publishes
//!   does not delay them, and are refreshed every tenth of the fence time
//!   (at most every second): a node must miss about ten in a row;
//! - a node fences others only while its own heartbeats have all been
//!   answered in time, with its key still alive, for a whole fence time. A
//!   node that cannot reach Redis, a Redis that is slow or was frozen (all
//!   keys expire at once when it wakes), a failover to a replica without
//!   the keys, or a node that was itself stalled: each restarts that
//!   period, which gives every other node a full fence time to refresh.
//!
//! Keys, all in one hash slot so that a cluster answers each step with one
//! command (`{<prefix>:nodes}` unless the prefix carries its own tag):
//! - `{<prefix>:nodes}`: hash, node id → its connection names;
//! - `{<prefix>:nodes}:hb:<id>`: the heartbeat, expiring after the fence time;
//! - `{<prefix>:nodes}:fencing:<id>`: the fencer's lock, for one fence time;
//! - `{<prefix>:nodes}:fenced:<id>`: the mark left for the fenced node
//!   ([`MARK_TTL`]).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use fred::{
    clients::Client,
    error::Error as FredError,
    interfaces::{ClientLike, ClusterInterface, KeysInterface},
    types::{ClusterHash, CustomCommand, Expiration, SetOptions, Value},
};
use tokio::time::{Instant, MissedTickBehavior};

use super::{RedisBroker, history::key_base};
use crate::{broker::Inbound, log_limit::LogLimiter, metrics};

/// How long the mark left for a fenced node lasts: it must outlive the
/// hang for the node to learn, when it wakes, that it was fenced.
const MARK_TTL: Duration = Duration::from_secs(3600);
/// Longest time between two heartbeats (and two checks).
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Heartbeat failures are logged at most once every 10 s.
static HEARTBEAT_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(10));

/// The fencing state of one node.
#[derive(Debug)]
pub(super) struct Fence {
    node_id: String,
    after: Duration,
    /// How long a fenced node takes to send its clients away.
    drain: Duration,
    /// The heartbeat's own connection (also used to check and fence).
    client: Client,
    /// This node's connection names, space-separated, as registered.
    names: String,
    /// `{<prefix>:nodes}` (or `<prefix>:nodes` for a tagged prefix).
    base: String,
    /// Since when every heartbeat has been answered in time with this
    /// node's key still alive; `None` while they fail. Written by the
    /// heartbeat task, read by the fencer.
    steady_since: parking_lot::Mutex<Option<Instant>>,
}

impl Fence {
    pub(super) fn new(
        prefix: &str,
        node_id: &str,
        after: Duration,
        drain: Duration,
        client: Client,
        names: &[String],
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            after,
            drain,
            client,
            names: names.join(" "),
            base: key_base(&format!("{prefix}:nodes")),
            steady_since: parking_lot::Mutex::new(None),
        }
    }

    /// Heartbeats and checks happen every tenth of the fence time, at most
    /// every second.
    fn interval(&self) -> Duration {
        (self.after / 10).min(MAX_INTERVAL)
    }

    fn heartbeat_key(&self, id: &str) -> String {
        format!("{}:hb:{id}", self.base)
    }

    fn lock_key(&self, id: &str) -> String {
        format!("{}:fencing:{id}", self.base)
    }

    fn mark_key(&self, id: &str) -> String {
        format!("{}:fenced:{id}", self.base)
    }

    /// Whether this node may fence others now: its own heartbeats have
    /// gone through for a whole fence time.
    fn steady(&self) -> bool {
        self.steady_since
            .lock()
            .is_some_and(|since| since.elapsed() >= self.after)
    }

    /// Leaves the registry (on a clean shutdown), so nobody fences a node
    /// that is gone. Bounded: a dead Redis must not hold the exit up.
    pub(super) async fn leave(&self) {
        let leave = async {
            let _: Result<Value, FredError> = self
                .client
                .custom(
                    command("HDEL"),
                    vec![self.base.clone(), self.node_id.clone()],
                )
                .await;
            let _: Result<i64, FredError> =
                self.client.del(self.heartbeat_key(&self.node_id)).await;
        };
        let _ = tokio::time::timeout(self.interval().max(Duration::from_millis(500)), leave).await;
        let _ = self.client.quit().await;
    }
}

/// One heartbeat's outcome.
struct Beat {
    /// The key was still there (not expired since the last heartbeat).
    was_alive: bool,
    /// The id of a node that fenced this one since the last heartbeat.
    fenced_by: Option<String>,
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// === impl RedisBroker ===

impl RedisBroker {
    /// Refreshes this node's heartbeat every interval, each bounded by the
    /// interval; tells the node when it finds it was fenced.
    pub(super) async fn heartbeat(self) {
        let Some(fence) = self.inner.fence.as_ref() else {
            return;
        };
        let every = fence.interval();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_ok: Option<Instant> = None;
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            match tokio::time::timeout(every, self.beat(fence)).await {
                Ok(Ok(beat)) => {
                    // The streak goes on only if the key was alive and the
                    // last heartbeat was recent: not after a stall of this
                    // process, nor after a Redis that was gone or frozen.
                    let continued = beat.was_alive
                        && last_ok.is_some_and(|t| now.duration_since(t) <= every * 3);
                    {
                        let mut since = fence.steady_since.lock();
                        if !continued || since.is_none() {
                            *since = Some(now);
                        }
                    }
                    let first = last_ok.is_none();
                    last_ok = Some(now);
                    // A mark found by a node's first heartbeat is a former
                    // process's with the same id: nothing to send away.
                    if let Some(by) = beat.fenced_by.filter(|_| !first) {
                        metrics::fence_self_fenced();
                        tracing::warn!(
                            fenced_by = %by,
                            "this node was fenced: it did not refresh its heartbeat in time; sending its clients to reconnect"
                        );
                        let drain = fence.drain;
                        if self
                            .inner
                            .events
                            .send(Inbound::Fenced { drain })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                failed => {
                    *fence.steady_since.lock() = None;
                    metrics::fence_heartbeat_failed();
                    if let Some(suppressed) = HEARTBEAT_LOG.allow() {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "no answer within the heartbeat interval".to_owned(),
                        };
                        tracing::warn!(%error, suppressed, "node heartbeat failed");
                    }
                }
            }
        }
    }

    /// Refreshes the heartbeat key (reading whether it was still there),
    /// registers this node's connection names, and takes the mark a fencer
    /// may have left. Issued together: one round trip.
    async fn beat(&self, fence: &Fence) -> Result<Beat, FredError> {
        let c = &fence.client;
        let id = &fence.node_id;
        let refresh = c.set::<Option<String>, _, _>(
            fence.heartbeat_key(id),
            id.as_str(),
            Some(Expiration::PX(millis(fence.after))),
            None,
            true,
        );
        let register = c.custom::<Value, String>(
            command("HSET"),
            vec![fence.base.clone(), id.clone(), fence.names.clone()],
        );
        let mark = c.getdel::<Option<String>, _>(fence.mark_key(id));
        let (previous, registered, mark) = tokio::join!(refresh, register, mark);
        registered?;
        Ok(Beat {
            was_alive: previous?.is_some(),
            fenced_by: mark?,
        })
    }

    /// Every interval, while this node is steady: fences each registered
    /// node whose heartbeat expired.
    pub(super) async fn fencer(self) {
        let Some(fence) = self.inner.fence.as_ref() else {
            return;
        };
        let every = fence.interval();
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if !fence.steady() {
                continue;
            }
            let expired = match tokio::time::timeout(every, self.expired(fence)).await {
                Ok(Ok(expired)) => expired,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot check the other nodes' heartbeats");
                    continue;
                }
                Err(_) => continue,
            };
            for (id, names) in expired {
                // Checked again: the answer must come from a moment this
                // node was itself steady.
                if !fence.steady() {
                    break;
                }
                match tokio::time::timeout(fence.after, self.fence_node(fence, &id, &names)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(node = %id, error = %e, "cannot fence a node whose heartbeat expired")
                    }
                    Err(_) => tracing::warn!(node = %id, "fencing a node did not finish in time"),
                }
            }
        }
    }

    /// The registered nodes (other than this one) whose heartbeat key is gone,
    /// with their connection names.
    async fn expired(&self, fence: &Fence) -> Result<Vec<(String, String)>, FredError> {
        let registry: HashMap<String, String> = fence
            .client
            .custom(command("HGETALL"), vec![fence.base.clone()])
            .await?;
        let others: Vec<(String, String)> = registry
            .into_iter()
            .filter(|(id, _)| *id != fence.node_id)
            .collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = others
            .iter()
            .map(|(id, _)| fence.heartbeat_key(id))
            .collect();
        let alive: Vec<Option<String>> = fence.client.mget(keys).await?;
        Ok(others
            .into_iter()
            .zip(alive)
            .filter(|(_, alive)| alive.is_none())
            .map(|(node, _)| node)
            .collect())
    }

    /// Fences node `id`: takes the lock (one fencer per node), closes its
    /// connections, leaves it the mark and removes it from the registry.
    async fn fence_node(&self, fence: &Fence, id: &str, names: &str) -> Result<(), FredError> {
        let c = &fence.client;
        let locked: Option<String> = c
            .set(
                fence.lock_key(id),
                fence.node_id.as_str(),
                Some(Expiration::PX(millis(fence.after))),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if locked.is_none() {
            return Ok(()); // another node is fencing it
        }
        let names: HashSet<&str> = names.split(' ').filter(|n| !n.is_empty()).collect();
        let killed = self.kill_connections(c, &names).await?;
        if killed > 0 {
            // Left after the kill: the node, if it woke meanwhile, takes it
            // with its next heartbeat.
            let _: Option<String> = c
                .set(
                    fence.mark_key(id),
                    fence.node_id.as_str(),
                    Some(Expiration::PX(millis(MARK_TTL))),
                    None,
                    false,
                )
                .await?;
            metrics::fence_node_fenced(killed);
            tracing::warn!(
                node = %id,
                connections = killed,
                after_ms = millis(fence.after),
                "fenced a node whose heartbeat expired: closed its Redis connections"
            );
        } else {
            tracing::info!(node = %id, "forgot a node whose heartbeat expired (no connections left)");
        }
        // A node that woke re-registers with its next heartbeat.
        let _: Value = c
            .custom(command("HDEL"), vec![fence.base.clone(), id.to_owned()])
            .await?;
        Ok(())
    }

    /// Closes every connection named in `names`, on every master of a
    /// cluster (where a client has one connection per master). Returns how
    /// many were closed.
    async fn kill_connections(&self, c: &Client, names: &HashSet<&str>) -> Result<u64, FredError> {
        let list_cmd = || CustomCommand::new_static("CLIENT", ClusterHash::Random, false);
        let servers = if self.inner.clustered {
            c.cached_cluster_state()
                .map(|s| s.unique_primary_nodes())
                .unwrap_or_default()
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        let mut killed = 0;
        for server in servers {
            let target = match &server {
                Some(server) => c.with_cluster_node(server.clone()),
                None => c.with_options(&fred::types::config::Options::default()),
            };
            let list: String = target.custom(list_cmd(), vec!["LIST"]).await?;
            for id in connections_named(&list, names) {
                let n: i64 = target
                    .custom(list_cmd(), vec!["KILL".to_owned(), "ID".to_owned(), id])
                    .await?;
                killed += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(killed)
    }
}

/// The ids of the connections in a `CLIENT LIST` reply whose name is one
/// of `names`.
fn connections_named(list: &str, names: &HashSet<&str>) -> Vec<String> {
    list.lines()
        .filter_map(|line| {
            let mut id = None;
            let mut name = None;
            for field in line.split(' ') {
                match field.split_once('=') {
                    Some(("id", v)) => id = Some(v),
                    Some(("name", v)) => name = Some(v),
                    _ => {}
                }
            }
            name.filter(|n| names.contains(n))
                .and(id)
                .map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_found_by_name() {
        let list = "id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=fred-aaa age=1 cmd=subscribe\n\
                    id=4 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=9 name= age=1 cmd=client|list\n\
                    id=7 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=10 name=fred-bbb age=1 cmd=publish\n\
                    id=9 addr=127.0.0.1:5003 laddr=127.0.0.1:6379 fd=11 name=fred-zzz age=1 cmd=get\n";
        let names: HashSet<&str> = ["fred-aaa", "fred-bbb"].into();
        assert_eq!(connections_named(list, &names), ["3", "7"]);
        assert!(connections_named(list, &HashSet::new()).is_empty());
    }
}
