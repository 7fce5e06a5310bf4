//! Client transports. What every transport does, in order:
//!
//! 1. Before accepting the connection: refuse it while the node shuts down
//!    (503 `shutting_down`), check the Origin ([`crate::origin`]), and verify a
//!    token the request carries, answering refusals with an
//!    [`HttpError`](crate::http_error::HttpError).
//! 2. Authenticate a client that came without a token (its first frame,
//!    through [`client::authenticate`](crate::client::authenticate)) within
//!    `--auth-timeout`.
//! 3. Register it ([`Client::connect`](crate::client::Client::connect)),
//!    send `welcome`, then loop: hand every text frame to the client, write
//!    what the session queues (one flush per batch, within
//!    `--write-timeout`), send heartbeats, end on idle timeout or token
//!    expiry.
//! 4. Close with the session's [`CloseReason`](crate::protocol::CloseReason)
//!    (`bye`, then the transport's own close), then unregister.
//!
//! A transport never talks to the broker and never decides what a frame
//! means; it moves frames and bytes. Every connection task is spawned on
//! the shutdown tracker so the drain can wait for it.

pub mod sse;
pub mod ws;

use std::{sync::OnceLock, time::Duration};

use tokio::time::Instant;

/// Rounds a heartbeat time up to the next slot of a process-wide grid, the
/// slot being a 25th of the heartbeat (1 s for the default 25 s, at least
/// 1 ms). Heartbeats of many connections then fire in the same timer tick
/// and are written in one busy stretch, instead of waking the runtime's
/// threads (epoll, futex, context switches) for one or two each
/// millisecond: that halved the CPU an idle connection costs (see
/// docs/benchmarks.md). The jitter of the first heartbeat still spreads
/// the connections over the slots.
pub fn heartbeat_slot(at: Instant, heartbeat: Duration) -> Instant {
    static GRID: OnceLock<Instant> = OnceLock::new();
    let grid = *GRID.get_or_init(Instant::now);
    let slot = (heartbeat / 25).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let since = at.saturating_duration_since(grid).as_nanos();
    let slot_ns = slot.as_nanos().max(1);
    let slots = since.div_ceil(slot_ns);
    grid + Duration::from_nanos(u64::try_from(slots * slot_ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_rounded_up_to_shared_slots() {
        let hb = Duration::from_secs(25);
        let slot = Duration::from_secs(1);
        let t = Instant::now() + Duration::from_secs(3);
        let a = heartbeat_slot(t, hb);
        assert!(a >= t && a < t + slot, "{a:?} not in [{t:?}, +1s)");
        // Times within one slot share it; the next slot is one slot later.
        assert_eq!(heartbeat_slot(a - Duration::from_millis(1), hb), a);
        assert_eq!(heartbeat_slot(a + Duration::from_millis(1), hb), a + slot);
        // Short heartbeats (tests) get short slots, never zero.
        let short = Duration::from_millis(2);
        let b = heartbeat_slot(t, short);
        assert!(b >= t && b <= t + Duration::from_millis(1));
    }
}
