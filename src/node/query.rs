//! Cluster queries: presence of a user and stats of every node, asked and
//! answered over the broker, so nothing about connections is stored
//! anywhere. The asker publishes a query carrying a request id and its own
//! node id; every node that receives it answers on the asker's `node:<id>`
//! channel, and the asker sums the answers until all have arrived (the
//! broker says how many received the query) or the query timeout passes.
//!
//! An answer never passes a silence off as a count: the nodes that
//! received a query and did not answer in time (hung, overloaded, cut off)
//! are reported as `unanswered`, and presence counts a user with such a
//! node as possibly online, the same way `offline_users` does (it comes
//! from the same receiver count).

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{Node, NodeError};
use crate::{
    broker::{Broker, Command, Envelope},
    hub::Counts,
    protocol::{self, Channel},
};

/// Summed answers to a cluster query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    /// Nodes that answered.
    pub nodes: u64,
    /// Nodes that received the query but did not answer in time: their
    /// counts are missing from `counts`.
    pub unanswered: u64,
    pub counts: Counts,
}

impl ClusterCounts {
    /// Every node that received the query answered.
    pub fn complete(&self) -> bool {
        self.unanswered == 0
    }
}

/// A user's presence across the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    /// Connections on the nodes that answered.
    pub connections: u64,
    /// Nodes subscribed to the user's channel that did not answer in time.
    pub unanswered: u64,
}

impl Presence {
    /// Whether the user may be connected: a node counted a connection, or
    /// a node that holds the user's channel did not answer. This is what
    /// `offline_users` says too: a user listed there has no subscribed
    /// node, so presence finds no node to ask and says offline.
    pub fn online(&self) -> bool {
        self.connections > 0 || self.unanswered > 0
    }
}

/// A query this node asked and is collecting answers for.
#[derive(Debug)]
pub(super) struct PendingQuery {
    /// Nodes that received the query (known once PUBLISH returns).
    expected: Option<usize>,
    replies: usize,
    sum: Counts,
    /// Fires once `replies` reaches `expected`; the asking task waits on it.
    done: Option<oneshot::Sender<()>>,
}

impl PendingQuery {
    fn check_done(&mut self) {
        if self.expected.is_some_and(|n| self.replies >= n)
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }

    /// Adds one node's answer.
    pub(super) fn answer(&mut self, counts: Counts) {
        self.replies += 1;
        self.sum += counts;
        self.check_done();
    }

    /// What was gathered: the answers, and how many of the nodes that
    /// received the query are missing from them.
    fn summary(&self) -> ClusterCounts {
        let expected = self.expected.unwrap_or(self.replies);
        ClusterCounts {
            nodes: self.replies as u64,
            unanswered: expected.saturating_sub(self.replies) as u64,
            counts: self.sum,
        }
    }
}

// === impl Node ===

impl Node {
    /// Live connections of `uid` on every node (that answered).
    pub async fn presence(&self, uid: &str) -> Result<Presence, NodeError> {
        let answer = self
            .query(&Channel::user(uid), |req, reply_to| Command::Presence {
                req,
                reply_to,
            })
            .await?;
        Ok(Presence {
            connections: answer.counts.connections,
            unanswered: answer.unanswered,
        })
    }

    /// Every node's counts, summed.
    pub async fn cluster_counts(&self) -> Result<ClusterCounts, NodeError> {
        self.query(&Channel::all(), |req, reply_to| Command::Stats {
            req,
            reply_to,
        })
        .await
    }

    /// Publishes a query on `channel` and sums the replies of every node
    /// that received it, waiting at most the query timeout.
    async fn query(
        &self,
        channel: &Channel,
        make: impl FnOnce(u64, String) -> Command,
    ) -> Result<ClusterCounts, NodeError> {
        let req = self.inner.next_query.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        self.inner.queries.lock().insert(
            req,
            PendingQuery {
                expected: None,
                replies: 0,
                sum: Counts::default(),
                done: Some(done_tx),
            },
        );
        let query = Envelope::Command(make(req, self.id().to_owned()));
        match self
            .inner
            .broker
            .publish(std::slice::from_ref(channel), &query, None)
            .await
        {
            Ok(outcomes) => {
                if let Some(q) = self.inner.queries.lock().get_mut(&req) {
                    q.expected = Some(outcomes.iter().map(|o| o.receivers).sum());
                    q.check_done();
                }
            }
            Err(e) => {
                self.inner.queries.lock().remove(&req);
                return Err(e.into());
            }
        }
        // A node that does not answer in time (wedged, partitioned) is
        // left out rather than holding the answer up.
        let _ = tokio::time::timeout(self.inner.opts.query_timeout, done_rx).await;
        let q = self.inner.queries.lock().remove(&req);
        Ok(q.map_or_else(ClusterCounts::default, |q| q.summary()))
    }

    /// Answers a query with this node's `counts`, on the asker's channel.
    pub(super) fn reply(&self, req: u64, reply_to: &str, counts: Counts) {
        if !protocol::is_valid_name(reply_to) {
            return;
        }
        let node = self.clone();
        let channel = Channel::node(reply_to);
        tokio::spawn(async move {
            let reply = Envelope::Command(Command::Reply {
                req,
                node: node.id().to_owned(),
                counts,
            });
            if let Err(e) = node.inner.broker.publish(&[channel], &reply, None).await {
                tracing::debug!(error = %e, "cannot answer a cluster query");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expected: usize) -> PendingQuery {
        PendingQuery {
            expected: Some(expected),
            replies: 0,
            sum: Counts::default(),
            done: None,
        }
    }

    #[test]
    fn a_silent_node_is_reported_not_counted_as_zero() {
        let mut q = pending(2);
        q.answer(Counts::default());
        let summary = q.summary();
        assert_eq!((summary.nodes, summary.unanswered), (1, 1));
        assert!(!summary.complete());
        let presence = Presence {
            connections: summary.counts.connections,
            unanswered: summary.unanswered,
        };
        assert!(presence.online(), "a silent node may hold the user");
        q.answer(Counts::default());
        assert!(q.summary().complete());
        assert!(!Presence::default().online());
    }
}
