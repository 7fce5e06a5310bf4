//! One WebSocket connection, from upgrade to close.
//!
//! Each connection runs as one task that owns the socket and `select!`s
//! over: frames from the client, the session's outbound queue, and one
//! timer (next heartbeat, idle deadline or token expiry, whichever is
//! first). One task and one timer per connection keep the footprint small;
//! the writer takes everything queued, feeds it into the socket and
//! flushes once. What a frame means is the [`Client`]'s business.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, stream::FusedStream};
use tokio::time::{Instant, sleep_until, timeout};

use super::handshake;
use crate::{
    auth::Credentials,
    client::{self, Client, ConnectError, Connected, Outcome, Start},
    config::Config,
    ids::jitter_ms,
    metrics::{self, Ended, Rejected, Transport},
    protocol::{CloseReason, Positions, error_frame},
    shutdown::Shutdown,
    state::AppState,
    transport::heartbeat_slot,
};

/// Longest wait for the client's close reply after our close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// One connection, from upgrade to close.
///
/// The task's future is allocated once and lives as long as the
/// connection, and an async fn's state holds all its parameters plus its
/// largest await. So the one-off setup (authentication, positions, a
/// resume's history reads) runs in a future of its own, on the heap only
/// until it is done, and the task keeps just that box and the [`Live`]
/// connection.
pub(super) fn run(
    socket: WebSocket,
    state: AppState,
    creds: Option<(Credentials, Positions)>,
) -> impl Future<Output = ()> + Send {
    let setup = Box::pin(setup(socket, state, creds));
    async move {
        let live = {
            // Moved here, so the finished setup is freed before the
            // connection's life begins.
            let setup = setup;
            setup.await
        };
        // Taken apart rather than handed to another async fn, which would
        // keep a second copy of it for the connection's life.
        let Some(Live {
            mut conn,
            welcome,
            shutdown,
        }) = live
        else {
            return;
        };
        let write_timeout = conn.cfg.write_timeout;
        // Boxed, like every one-off step: only the loop's waits should
        // count in the connection's long-lived future.
        let welcomed = Box::pin(conn.write_with_timeout([text(welcome)], true)).await;
        let served = match welcomed {
            Ok(()) => conn.serve(&shutdown).await,
            Err(_) => None,
        };
        let ended = match served {
            Some(reason) => {
                Box::pin(finish(&mut conn.socket, reason, write_timeout)).await;
                Ended::Closed(reason)
            }
            // The client closed: send the close reply tungstenite has queued.
            None => {
                let _ = timeout(write_timeout, conn.socket.flush()).await;
                if conn.peer_closed {
                    Ended::ClientClosed
                } else {
                    Ended::ConnectionLost
                }
            }
        };
        Box::pin(conn.client.disconnect()).await;
        metrics::connection_closed(Transport::WebSocket, ended);
    }
}

/// Authenticates and registers the connection; `None` once it has been
/// refused (and closed).
async fn setup(
    mut socket: WebSocket,
    state: AppState,
    creds: Option<(Credentials, Positions)>,
) -> Option<Live> {
    let (creds, since) = match creds {
        Some(c) => c,
        None => match handshake::authenticate(&mut socket, &state).await {
            Ok(c) => c,
            Err(reason) => {
                metrics::connection_rejected(match reason {
                    CloseReason::Shutdown { .. } => Rejected::ShuttingDown,
                    CloseReason::MessageTooBig | CloseReason::ProtocolViolation => {
                        Rejected::BadFrame
                    }
                    _ => Rejected::AuthFailed,
                });
                finish(&mut socket, reason, state.cfg.write_timeout).await;
                return None;
            }
        },
    };
    let connected = Client::connect(
        &state.node,
        state.auth.clone(),
        creds,
        Start {
            groups: Vec::new(),
            since,
        },
        state.cfg.heartbeat,
    )
    .await;
    let Connected {
        client, welcome, ..
    } = match connected {
        Ok(c) => c,
        Err(ConnectError::Refused(e)) => {
            metrics::connection_rejected(Rejected::AuthFailed);
            let _ = timeout(state.cfg.write_timeout, socket.send(text(e.frame()))).await;
            finish(
                &mut socket,
                CloseReason::Unauthorized,
                state.cfg.write_timeout,
            )
            .await;
            return None;
        }
        Err(ConnectError::Limited(e)) => {
            metrics::connection_rejected(Rejected::UserLimit);
            let _ = timeout(state.cfg.write_timeout, socket.send(text(e.frame()))).await;
            finish(
                &mut socket,
                CloseReason::connection_limit(),
                state.cfg.write_timeout,
            )
            .await;
            return None;
        }
        Err(ConnectError::Unavailable(e)) => {
            tracing::warn!(error = %e, "cannot register connection");
            metrics::connection_rejected(Rejected::BrokerUnavailable);
            let _ = socket
                .send(text(error_frame(
                    None,
                    e.code(),
                    "the message broker is unavailable; reconnect later",
                )))
                .await;
            finish(
                &mut socket,
                CloseReason::unavailable(),
                state.cfg.write_timeout,
            )
            .await;
            return None;
        }
    };
    metrics::connection_opened(Transport::WebSocket);
    let AppState { cfg, shutdown, .. } = state;
    Some(Live {
        conn: Box::new(Conn::new(socket, client, cfg)),
        welcome,
        shutdown,
    })
}

/// A registered connection and what it still needs: its welcome frame,
/// and the shutdown it watches.
struct Live {
    /// Boxed: the task's future would otherwise hold it twice (as `Live`
    /// and as the local it is taken apart into).
    conn: Box<Conn>,
    welcome: String,
    shutdown: Shutdown,
}

/// Maps a read error to a close we can still send, or `None` when the
/// connection is simply gone.
pub(super) fn read_error_reason(e: &axum::Error) -> Option<CloseReason> {
    use tungstenite::Error as WsError;
    let inner = std::error::Error::source(e)?.downcast_ref::<WsError>()?;
    match inner {
        WsError::Capacity(_) => Some(CloseReason::MessageTooBig),
        // The peer closed TCP without a close frame: it is gone, not rude.
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) | WsError::Utf8(_) => Some(CloseReason::ProtocolViolation),
        _ => None,
    }
}

pub(super) fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Sends `bye` and the close frame, then waits briefly for the client's
/// close reply so the closing handshake completes. When tungstenite has
/// already given up reading (an over-limit frame), input is left unread and
/// dropping the socket would send a TCP reset that can destroy our close
/// frame before the client reads it, so the linger then simply waits.
async fn finish(socket: &mut WebSocket, reason: CloseReason, write_timeout: Duration) {
    let reading_stopped = socket.is_terminated();
    let close = async {
        if reason != CloseReason::WriteError {
            socket.feed(text(reason.bye_frame())).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code: reason.code(),
                reason: Utf8Bytes::from(reason.as_str()),
            })))
            .await
    };
    if let Ok(Ok(())) = timeout(write_timeout, close).await {
        let _ = timeout(CLOSE_LINGER, async {
            if reading_stopped {
                std::future::pending::<()>().await;
            }
            // Until the client's close reply (or the stream) ends.
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

/// A registered, authenticated connection.
struct Conn {
    socket: WebSocket,
    client: Client,
    cfg: std::sync::Arc<Config>,
    last_recv: Instant,
    next_ping: Instant,
    /// The client sent a close frame (rather than vanishing).
    peer_closed: bool,
}

/// What the connection loop does next.
enum Step {
    Continue,
    /// The token was replaced: recompute the expiry deadline.
    Refreshed,
    Close(CloseReason),
    Gone,
}

impl From<Outcome> for Step {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Continue => Self::Continue,
            Outcome::Refreshed => Self::Refreshed,
            Outcome::Close(reason) => Self::Close(reason),
        }
    }
}

impl Conn {
    fn new(socket: WebSocket, client: Client, cfg: std::sync::Arc<Config>) -> Self {
        let now = Instant::now();
        let hb = u64::try_from(cfg.heartbeat.as_millis()).unwrap_or(u64::MAX);
        // The first ping lands anywhere in [hb/2, hb) so a reconnect storm
        // does not ping in lockstep ever after.
        let next_ping = heartbeat_slot(
            now + Duration::from_millis(jitter_ms(hb / 2, hb)),
            cfg.heartbeat,
        );
        Self {
            socket,
            client,
            cfg,
            last_recv: now,
            next_ping,
            peer_closed: false,
        }
    }

    /// Runs until the connection must end: `Some(reason)` to send a close,
    /// `None` when the client is gone or already closed.
    async fn serve(&mut self, shutdown: &Shutdown) -> Option<CloseReason> {
        if shutdown.is_triggered() {
            return Some(CloseReason::shutdown());
        }
        let mut expiry = self.client.expires_at();
        // One timer for the connection's life. Frames from the client only
        // move the idle deadline later, so the timer is not reset for them:
        // at worst it fires early and `on_timer` finds nothing due.
        let timer = sleep_until(self.next_wake(expiry));
        tokio::pin!(timer);
        loop {
            let step = tokio::select! {
                // The handlers are boxed: an idle connection's future then
                // holds only the three waits, not the largest handler's state
                // (a write with its timeout, a join through the broker).
                () = self.client.session().woken() => Box::pin(self.flush_queue(true)).await,
                msg = self.socket.recv() => Box::pin(self.on_message(msg)).await,
                () = &mut timer => {
                    let step = Box::pin(self.on_timer(expiry)).await;
                    timer.as_mut().reset(self.next_wake(expiry));
                    step
                }
            };
            match step {
                Step::Continue => {}
                Step::Refreshed => {
                    expiry = self.client.expires_at();
                    timer.as_mut().reset(self.next_wake(expiry));
                }
                Step::Close(reason) => return Some(Box::pin(self.before_close(reason)).await),
                Step::Gone => return None,
            }
        }
    }

    /// Sends what is still queued (replies such as the error that caused
    /// the close) unless the client cannot take it. Returns the reason to
    /// close with, which the queue may have replaced (a slow consumer).
    async fn before_close(&mut self, reason: CloseReason) -> CloseReason {
        if matches!(
            reason,
            CloseReason::SlowConsumer { .. } | CloseReason::WriteError
        ) {
            return reason;
        }
        self.client.session().close(reason);
        match self.flush_queue(false).await {
            Step::Close(r) => r,
            _ => reason,
        }
    }

    /// Writes what is queued as one batch and flushes once. With
    /// `abort_on_close` (normal operation) a close requested meanwhile (a
    /// slow consumer) stops the write, and only one batch is written per
    /// wake-up so a busy stream cannot starve reading the socket; without
    /// it (the session is closing, nothing new arrives) everything left is
    /// written.
    async fn flush_queue(&mut self, abort_on_close: bool) -> Step {
        loop {
            let batch = self.client.session().take();
            if batch.frames.is_empty() {
                return batch.close.map_or(Step::Continue, Step::Close);
            }
            let count = batch.frames.len();
            let oldest_ts = batch
                .frames
                .iter()
                .find(|f| f.ts_ms > 0)
                .map_or(0, |f| f.ts_ms);
            // At most one message is traced at a time, so a batch carries
            // at most one trace; kept until the flush is done.
            let trace = batch.frames.iter().find_map(|f| f.trace.clone());
            // Fed straight from the queue: no list of messages per write.
            let frames = batch.frames.into_iter().map(|f| Message::Text(f.text));
            if let Err(step) = self.write_with_timeout(frames, abort_on_close).await {
                return step;
            }
            metrics::frames_written(count, oldest_ts);
            if let Some(trace) = trace {
                trace.written();
            }
            if let Some(reason) = batch.close {
                return Step::Close(reason);
            }
            if abort_on_close {
                // Frames pushed meanwhile have left their wake-up for the
                // next turn of the main loop.
                return Step::Continue;
            }
        }
    }

    /// Feeds `frames` and flushes once. Gives up when the write makes no
    /// progress within the write timeout, or when the session is closed
    /// meanwhile (a slow consumer is not waited for).
    async fn write_with_timeout(
        &mut self,
        frames: impl IntoIterator<Item = Message>,
        abort_on_close: bool,
    ) -> Result<(), Step> {
        let write_timeout = self.cfg.write_timeout;
        // Borrowed, not cloned: this runs once per socket write.
        let session = self.client.session();
        let socket = &mut self.socket;
        let write = async {
            for f in frames {
                socket.feed(f).await?;
            }
            socket.flush().await
        };
        let closed = async {
            if !abort_on_close {
                std::future::pending::<()>().await;
            }
            // Not `woken()`: that would take the wake-up of frames pushed
            // during the write, and they would stay queued.
            loop {
                session.close_requested().await;
                if session.is_closing() {
                    break;
                }
            }
        };
        tokio::select! {
            r = timeout(write_timeout, write) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    tracing::debug!(conn = session.id(), error = %e, "write failed");
                    Err(Step::Gone)
                }
                Err(_) => {
                    tracing::debug!(conn = session.id(), "write timed out");
                    Err(Step::Close(CloseReason::WriteError))
                }
            },
            () = closed => Err(match session.take().close {
                Some(reason) => Step::Close(reason),
                None => Step::Continue,
            }),
        }
    }

    /// The earliest of: next heartbeat, idle deadline, token expiry.
    fn next_wake(&self, expiry: Instant) -> Instant {
        self.next_ping
            .min(self.last_recv + self.cfg.idle_timeout)
            .min(expiry)
    }

    async fn on_timer(&mut self, expiry: Instant) -> Step {
        let now = Instant::now();
        let idle_at = self.last_recv + self.cfg.idle_timeout;
        if now >= expiry {
            return Step::Close(CloseReason::TokenExpired);
        }
        if now >= idle_at {
            return Step::Close(CloseReason::IdleTimeout);
        }
        if now >= self.next_ping {
            self.next_ping = heartbeat_slot(now + self.cfg.heartbeat, self.cfg.heartbeat);
            if let Err(step) = self
                .write_with_timeout([Message::Ping(Default::default())], true)
                .await
            {
                return step;
            }
        }
        Step::Continue
    }

    async fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Step {
        self.last_recv = Instant::now();
        let max_frame = self.cfg.max_frame as usize;
        // Every frame counts against the connection's frame rate, read or
        // not (pings too), before any work is done for it.
        if matches!(&msg, Some(Ok(m)) if !matches!(m, Message::Close(_)))
            && let Outcome::Close(reason) = self.client.admit_frame()
        {
            return Step::Close(reason);
        }
        let text = match msg {
            None => return Step::Gone,
            Some(Ok(Message::Close(_))) => {
                self.peer_closed = true;
                return Step::Gone;
            }
            Some(Err(e)) => {
                return match read_error_reason(&e) {
                    Some(reason) => {
                        self.client.reply(if reason == CloseReason::MessageTooBig {
                            client::too_big().frame()
                        } else {
                            client::malformed().frame()
                        });
                        Step::Close(reason)
                    }
                    None => {
                        tracing::debug!(conn = self.client.session().id(), error = %e, "read failed");
                        Step::Gone
                    }
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Step::Continue,
            Some(Ok(Message::Binary(b))) if b.len() > max_frame => {
                self.client.reply(client::too_big().frame());
                return Step::Close(CloseReason::MessageTooBig);
            }
            Some(Ok(Message::Binary(_))) => return self.client.refuse(&client::binary()).into(),
            Some(Ok(Message::Text(t))) if t.len() > max_frame => {
                self.client.reply(client::too_big().frame());
                return Step::Close(CloseReason::MessageTooBig);
            }
            Some(Ok(Message::Text(t))) => t,
        };
        self.client.on_text(&text).await.into()
    }
}
