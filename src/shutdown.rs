//! Shutdown coordination, in two phases, each a token that says "stop"
//! and a tracker that knows which tasks still run:
//!
//! 1. **Connections** ([`Shutdown::trigger`]): readiness fails, the
//!    listener stops accepting, connections are drained; every connection
//!    task is on this tracker. axum's graceful shutdown does not wait for
//!    upgraded WebSockets (tokio-rs/axum#3003), so the app waits for the
//!    tracker itself, bounded by the configured grace period.
//! 2. **Background** ([`Shutdown::stop_background`]): the broker's tasks
//!    and the node's dispatcher and linger tasks. They must outlive phase
//!    1, so messages keep reaching the connections the drain has not closed
//!    yet; they stop only after it.

use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled once, by `trigger`; readiness, the accept loop, the
    /// WebSocket handler and connections still authenticating watch it.
    /// (The node's dispatcher runs on until the drain is over.)
    token: CancellationToken,
    /// Every client connection task; `wait` resolves when all ended.
    tracker: TaskTracker,
    /// Cancelled by `stop_background`, after the drain; the dispatcher and
    /// the linger task watch it (the broker has its own stop on close).
    background_token: CancellationToken,
    /// Broker, dispatch and linger tasks; `background_stopped` resolves
    /// when all ended.
    background_tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutting down. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once `trigger` has been called.
    pub fn triggered(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Resolves when every connection task has ended (after `trigger`).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// Where background tasks are spawned.
    pub fn background(&self) -> &TaskTracker {
        &self.background_tracker
    }

    /// What background tasks watch to know when to stop.
    pub fn background_token(&self) -> &CancellationToken {
        &self.background_token
    }

    /// Starts phase 2: background tasks are told to stop. Idempotent.
    pub fn stop_background(&self) {
        self.background_token.cancel();
        self.background_tracker.close();
    }

    /// Resolves when every background task has ended (after
    /// `stop_background`).
    pub async fn background_stopped(&self) {
        self.background_tracker.wait().await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; waiting for Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
