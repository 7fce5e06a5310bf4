//! Where a broadcast message's time goes inside the node, from the moment
//! the broker hands it over: waiting for the dispatcher, queueing it for
//! every local recipient, and the first and last socket write that carries
//! it. Each is recorded, counted from the broker's hand-over, in
//! `fanout_broadcast_stage_seconds{stage}` (docs/benchmarks.md,
//! "Profiling", reads them).
//!
//! The dispatcher stages are recorded for every message. The writes are
//! followed for one message at a time: that message's frame carries a
//! [`Trace`] to every recipient, each writer marks it after its flush, and
//! when the last recipient lets go of it (written, or dropped with a
//! closing session) the trace records the last write and the next message
//! can be traced. One message at a time keeps the cost (an `Arc` clone per
//! recipient) off every other message while still sampling the fan-out
//! continuously: at a moderate rate nearly every message is traced, back
//! to back about one in every fan-out's duration.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::metrics::{self, Stage};

/// Set while a message is traced; process-wide, so nodes sharing a
/// process (tests) share the one slot.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Follows one message to its recipients' sockets.
#[derive(Debug)]
pub struct Trace {
    /// The slot this trace holds ([`TRACING`] outside tests).
    slot: &'static AtomicBool,
    /// When the broker handed the message over.
    received: Instant,
    /// Set by the first writer that flushed the message.
    written: AtomicBool,
}

impl Trace {
    /// Starts tracing a message received at `received`, unless another
    /// one is being traced.
    pub fn begin(received: Instant) -> Option<Arc<Self>> {
        Self::begin_in(&TRACING, received)
    }

    fn begin_in(slot: &'static AtomicBool, received: Instant) -> Option<Arc<Self>> {
        slot.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        Some(Arc::new(Self {
            slot,
            received,
            written: AtomicBool::new(false),
        }))
    }

    /// A socket write that carried the message was flushed.
    pub fn written(&self) {
        if !self.written.swap(true, Ordering::Relaxed) {
            metrics::broadcast_stage(Stage::FirstWrite, self.received.elapsed());
        }
    }
}

impl Drop for Trace {
    /// The last recipient is done: written, or gone without it (a message
    /// that reached no socket records nothing).
    fn drop(&mut self) {
        if *self.written.get_mut() {
            metrics::broadcast_stage(Stage::LastWrite, self.received.elapsed());
        }
        self.slot.store(false, Ordering::Release);
    }
}

/// The dispatcher stages of a message received at `received`.
pub fn dispatched(received: Instant) {
    metrics::broadcast_stage(Stage::Dispatched, received.elapsed());
}

pub fn queued(received: Instant) {
    metrics::broadcast_stage(Stage::Queued, received.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One message at a time: the slot frees when the last holder of the
    /// trace lets go, whether or not it was written.
    #[test]
    fn one_message_is_traced_at_a_time() {
        static SLOT: AtomicBool = AtomicBool::new(false);
        let begin = || Trace::begin_in(&SLOT, Instant::now());
        let first = begin().unwrap();
        let copy = first.clone();
        assert!(begin().is_none());
        first.written();
        drop(first);
        assert!(begin().is_none(), "a recipient holds it");
        drop(copy);
        let unwritten = begin().unwrap();
        drop(unwritten);
        assert!(begin().is_some());
    }
}
