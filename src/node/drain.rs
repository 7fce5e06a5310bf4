//! The paced drain: on shutdown, every session is closed with `shutdown`
//! evenly over the drain window, so the other nodes see the clients
//! return as a steady stream rather than a thundering herd.

use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::Node;
use crate::protocol::CloseReason;

/// A drain closes at least this many connections per second.
pub const DRAIN_MIN_RATE: f64 = 100.0;
/// How often a drain closes the next batch.
const DRAIN_TICK: Duration = Duration::from_millis(20);

// === impl Node ===

impl Node {
    /// Closes every session with `shutdown`, paced: in random order, evenly
    /// over `window` (at least [`DRAIN_MIN_RATE`] per second), at most
    /// `max_rate` per second if not 0; whatever is left when the window
    /// ends is closed then. Each gets a reconnect hint spread over the
    /// window. Messages keep flowing to sessions not yet closed.
    pub async fn drain(&self, window: Duration, max_rate: u32) {
        let mut sessions = self.inner.hub.all_sessions();
        sessions.shuffle(&mut rand::rng());
        let n = sessions.len();
        if n == 0 {
            return;
        }
        let mut rate = (n as f64 / window.as_secs_f64().max(0.001)).max(DRAIN_MIN_RATE);
        if max_rate > 0 {
            rate = rate.min(f64::from(max_rate));
        }
        tracing::info!(
            connections = n,
            per_second = rate as u64,
            "draining connections"
        );
        let started = Instant::now();
        let deadline = started + window;
        let mut closed = 0;
        while closed < n {
            let now = Instant::now();
            let due = if now >= deadline {
                n
            } else {
                (((now - started).as_secs_f64() * rate) as usize + 1).min(n)
            };
            for s in &sessions[closed..due] {
                s.close(CloseReason::drained(window));
            }
            closed = due;
            if closed < n {
                tokio::time::sleep(DRAIN_TICK).await;
            }
        }
    }
}
