//! Broker events into the hub: the dispatcher task receives everything the
//! broker delivers to this node, encodes each message into its final frame
//! once per channel and hands the shared buffer to the hub, and carries
//! out commands (kick, server-side join/leave, cluster queries).

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeError};
use crate::{
    broker::{BrokerEvent, Command, Envelope},
    hub::Counts,
    metrics::{self, BrokerDrop},
    protocol::{self, Channel, ChannelKind, CloseReason},
    session::Session,
};

// === impl Node ===

impl Node {
    /// Receives broker events until the broker goes away or `stop` fires.
    pub async fn dispatch(self, mut events: mpsc::Receiver<BrokerEvent>, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
            };
            self.handle_event(event);
        }
    }

    fn handle_event(&self, event: BrokerEvent) {
        metrics::broker_received();
        let hub = &self.inner.hub;
        match event.envelope {
            Envelope::Publication(p) => {
                let started = std::time::Instant::now();
                let frame = Utf8Bytes::from(protocol::message_frame(&event.channel, &p));
                let delivery = match event.channel.kind() {
                    ChannelKind::User(uid) => hub.broadcast_user(uid, &frame, p.ts),
                    ChannelKind::Group(group) => hub.broadcast_group(group, &frame, p.ts),
                    ChannelKind::All => hub.broadcast_all(&frame, p.ts),
                    ChannelKind::Node(_) => {
                        // Node channels carry replies only.
                        metrics::broker_dropped(BrokerDrop::Misdirected, 1);
                        return;
                    }
                };
                metrics::broadcast(delivery.queued, delivery.slow, started.elapsed());
                if delivery.slow > 0 {
                    tracing::info!(
                        channel = %event.channel,
                        slow = delivery.slow,
                        "closing slow consumers"
                    );
                }
            }
            Envelope::Command(cmd) => self.handle_command(&event.channel, cmd),
        }
    }

    fn handle_command(&self, channel: &Channel, cmd: Command) {
        let hub = &self.inner.hub;
        match (channel.kind(), cmd) {
            (ChannelKind::User(uid), Command::Disconnect) => {
                for s in hub.user_sessions(uid) {
                    s.close(CloseReason::Kicked);
                }
            }
            (ChannelKind::User(uid), Command::Join { group }) => {
                let (node, sessions) = (self.clone(), hub.user_sessions(uid));
                tokio::spawn(async move {
                    for s in sessions {
                        node.server_join(&s, &group).await;
                    }
                });
            }
            (ChannelKind::User(uid), Command::Leave { group }) => {
                let (node, sessions) = (self.clone(), hub.user_sessions(uid));
                tokio::spawn(async move {
                    for s in sessions {
                        if node.leave(&s, &group).await {
                            push_text(&s, protocol::left_frame(None, &group));
                        }
                    }
                });
            }
            (ChannelKind::User(uid), Command::Presence { req, reply_to }) => {
                let counts = Counts {
                    connections: hub.user_connections(uid) as u64,
                    ..Counts::default()
                };
                self.reply(req, &reply_to, counts);
            }
            (ChannelKind::All, Command::Stats { req, reply_to }) => {
                self.reply(req, &reply_to, hub.counts());
            }
            (ChannelKind::Node(_), Command::Reply { req, counts, .. }) => {
                if let Some(q) = self.inner.queries.lock().get_mut(&req) {
                    q.answer(counts);
                }
            }
            (_, cmd) => {
                // Only a misbehaving publisher sends these: count, don't log each.
                metrics::broker_dropped(BrokerDrop::Misdirected, 1);
                tracing::debug!(%channel, ?cmd, "command not valid on this channel; ignored");
            }
        }
    }

    /// A join a backend asked for: the session learns of it through a
    /// `joined` frame, or an `error` frame without `id`.
    async fn server_join(&self, session: &Session, group: &str) {
        match self.join(session, group).await {
            Ok(()) => push_text(session, protocol::joined_frame(None, group)),
            Err(NodeError::Closed) => {}
            Err(e) => {
                tracing::warn!(conn = session.id(), group, error = %e, "server-side join failed");
                push_text(
                    session,
                    protocol::error_frame(None, e.code(), &e.to_string()),
                );
            }
        }
    }
}

fn push_text(session: &Session, text: String) {
    // A closing session needs no more replies.
    let _ = session.push(&Utf8Bytes::from(text), 0);
}
