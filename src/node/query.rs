//! Cluster queries: presence of a user and stats of every node, asked and
//! answered over the broker, so nothing about connections is stored
//! anywhere. The asker publishes a query carrying a request id and its own
//! node id; every node that receives it answers on the asker's `node:<id>`
//! channel, and the asker sums the answers until all have arrived (the
//! broker says how many received the query) or the query timeout passes.

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
    pub counts: Counts,
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
}

// === impl Node ===

impl Node {
    /// Live connections of `uid` on every node.
    pub async fn user_connections(&self, uid: &str) -> Result<u64, NodeError> {
        let answer = self
            .query(&Channel::user(uid), |req, reply_to| Command::Presence {
                req,
                reply_to,
            })
            .await?;
        Ok(answer.counts.connections)
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
        Ok(q.map_or_else(ClusterCounts::default, |q| ClusterCounts {
            nodes: q.replies as u64,
            counts: q.sum,
        }))
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
