//! Shutdown coordination: one token that says "stop", one tracker that
//! knows every connection and background task still running.
//!
//! axum's graceful shutdown does not wait for upgraded WebSockets
//! (tokio-rs/axum#3003), so every connection task is tracked here and the
//! app waits for the tracker, bounded by the configured grace period.

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

    /// Resolves when every tracked task has ended (after `trigger`).
    pub async fn wait(&self) {
        self.tracker.wait().await;
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
