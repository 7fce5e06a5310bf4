//! Resuming a channel for a session: where the session starts on the
//! channel (its top), and, when the client says where it was, the messages
//! it missed, read from history.
//!
//! The session is already receiving the channel (subscribed, in the hub)
//! with its live messages held back ([`Session::begin_recovery`]) before
//! the history is read, so nothing published after the read can be missed;
//! [`Resumed::finish`] queues the replay and then the held messages that
//! come after it. No gap and no duplicate across the seam.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use super::{Node, NodeError};
use crate::{
    broker::{Broker, History},
    metrics,
    protocol::{self, Channel, ChannelPosition, Position},
    session::{Outbound, Session},
};

/// Where a session starts on a channel, and what it missed.
#[derive(Debug)]
pub struct Resumed {
    /// The channel's top as read: the session has everything up to it
    /// (after the replay) and receives everything after it.
    pub top: Position,
    /// `None` when the client gave no position; otherwise whether every
    /// message after it is replayed (`false`: the client must reload).
    pub recovered: Option<bool>,
    /// The missed messages, encoded, in offset order.
    replay: Vec<Outbound>,
}

impl Resumed {
    /// A session already receiving the channel live, up to `top`.
    pub(super) fn live(top: Position) -> Self {
        Self {
            top,
            recovered: None,
            replay: Vec::new(),
        }
    }

    /// Queues the replay, then the live messages held back meanwhile.
    /// Anything the session must see first (`welcome`, `joined`) is queued
    /// or written before this.
    pub fn finish(self, session: &Session, channel: &Channel) {
        // A full queue means the session is already closing as a slow
        // consumer: nothing more to deliver.
        let _ = session.finish_recovery(channel, &self.top, self.replay);
    }
}

// === impl Node ===

impl Node {
    /// Where a session starts on `channel` and, from `since`, what it
    /// missed (at most the configured replay cap). Call with the session
    /// already recovering the channel.
    pub async fn resume(
        &self,
        channel: &Channel,
        since: Option<&Position>,
    ) -> Result<Resumed, NodeError> {
        let broker = &self.inner.broker;
        let Some(since) = since else {
            let top = broker.position(channel).await?;
            self.started_at(channel, &top);
            return Ok(Resumed {
                top,
                recovered: None,
                replay: Vec::new(),
            });
        };
        let history = broker
            .history(channel, since, self.inner.opts.max_recovery)
            .await?;
        self.started_at(channel, history.top());
        Ok(match history {
            History::Complete { top, messages } => {
                metrics::recovery(true, messages.len());
                let replay = messages
                    .into_iter()
                    .map(|m| {
                        let position = Position::new(m.offset, top.epoch.clone());
                        let text =
                            protocol::message_frame(channel, &m.publication, Some(&position));
                        Outbound {
                            text: Utf8Bytes::from(text),
                            ts_ms: m.publication.ts,
                            position: Some(Arc::new(ChannelPosition {
                                channel: channel.clone(),
                                position,
                            })),
                            trace: None,
                        }
                    })
                    .collect();
                Resumed {
                    top,
                    recovered: Some(true),
                    replay,
                }
            }
            History::Incomplete { top } => {
                metrics::recovery(false, 0);
                Resumed {
                    top,
                    recovered: Some(false),
                    replay: Vec::new(),
                }
            }
        })
    }

    /// Notes where a session started, as the node's catch-up point for a
    /// channel it has delivered nothing on yet.
    fn started_at(&self, channel: &Channel, top: &Position) {
        self.inner
            .tracked
            .lock()
            .entry(channel.clone())
            .or_default()
            .started_at(top);
    }

    /// The last position the node delivered on `channel`, if any.
    pub(super) fn delivered(&self, channel: &Channel) -> Option<Position> {
        self.inner
            .tracked
            .lock()
            .get(channel)
            .and_then(|t| t.delivered())
    }
}
