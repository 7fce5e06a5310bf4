//! One client connection as the rest of the node sees it: identity, the
//! bounded outbound queue, its group memberships, and a close request.
//!
//! A [`Session`] is a cheap `Arc` handle. Producers (the hub's broadcast, the
//! connection's own replies) call [`Session::push`]; the connection's single
//! task is the only consumer and takes everything queued at once with
//! [`Session::take`], writes it, and flushes once. The queue is bounded in
//! bytes: a push that would exceed the bound closes the session as a slow
//! consumer instead of waiting, so fan-out never blocks on one client.

use std::{collections::VecDeque, fmt, sync::Arc};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::CloseReason;

/// Node-local connection id.
pub type ConnId = u64;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its byte bound; the session is now closing as a slow consumer.
    Full,
    /// The session is already closing.
    Closed,
}

/// One queued frame: the shared encoded text, and the publish time of the
/// message it carries (0 for replies), for the latency metric.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub text: Utf8Bytes,
    pub ts_ms: u64,
}

/// What the connection task takes from the queue in one go.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: VecDeque<Outbound>,
    /// Set once the session must end; frames already taken may still be sent.
    pub close: Option<CloseReason>,
}

#[derive(Clone)]
pub struct Session {
    inner: Arc<Shared>,
}

struct Shared {
    id: ConnId,
    uid: Arc<str>,
    max_queue_bytes: usize,
    /// Frames waiting for the connection task. Pushed by any task (broadcast,
    /// replies), drained only by the connection task. A `parking_lot` mutex
    /// is right here: it is held for a push or a swap, never across `.await`.
    queue: Mutex<Queue>,
    /// Wakes the connection task after a push or a close request. `Notify`
    /// keeps one permit, so a push before the task waits is not lost. Only
    /// the task's main loop waits on it: whoever takes a wake-up must also
    /// write the queue, or a frame stays queued with nothing to send it.
    wake: Notify,
    /// Signalled only when a close is requested, for waits that must notice
    /// a close (a slow consumer) without taking the queue's wake-ups.
    closing: Notify,
    /// Groups this session is in. Changed only by the node, under the
    /// group's subscription lock, so it always matches the hub.
    groups: Mutex<Groups>,
}

#[derive(Default)]
struct Groups {
    names: Vec<Arc<str>>,
    /// Set when the node starts removing the session: no group may be added
    /// after, so the removal cannot miss one.
    detached: bool,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    bytes: usize,
    close: Option<CloseReason>,
}

impl Session {
    pub fn new(id: ConnId, uid: Arc<str>, max_queue_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Shared {
                id,
                uid,
                max_queue_bytes,
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                closing: Notify::new(),
                groups: Mutex::new(Groups::default()),
            }),
        }
    }

    pub fn id(&self) -> ConnId {
        self.inner.id
    }

    pub fn uid(&self) -> &Arc<str> {
        &self.inner.uid
    }

    /// Queues a frame for this client without waiting. An empty queue always
    /// takes one frame, so a message bigger than the bound still goes out.
    pub fn push(&self, frame: &Utf8Bytes, ts_ms: u64) -> Result<(), PushError> {
        {
            let mut q = self.inner.queue.lock();
            if q.close.is_some() {
                return Err(PushError::Closed);
            }
            if q.bytes > 0 && q.bytes + frame.len() > self.inner.max_queue_bytes {
                q.close = Some(CloseReason::slow_consumer());
                // The slow client will not read what is queued in time; drop
                // it so its memory is released now.
                let dropped = q.frames.len() + 1;
                q.frames = VecDeque::new();
                q.bytes = 0;
                drop(q);
                crate::metrics::slow_consumer();
                crate::metrics::slow_consumer_dropped(dropped);
                self.inner.wake.notify_one();
                self.inner.closing.notify_one();
                return Err(PushError::Full);
            }
            q.bytes += frame.len();
            q.frames.push_back(Outbound {
                text: frame.clone(),
                ts_ms,
            });
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Asks the connection to end with `reason`. The first reason wins;
    /// later calls do nothing. Returns whether this call set the reason.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut q = self.inner.queue.lock();
        if q.close.is_some() {
            return false;
        }
        q.close = Some(reason);
        drop(q);
        self.inner.wake.notify_one();
        self.inner.closing.notify_one();
        true
    }

    pub fn is_closing(&self) -> bool {
        self.inner.queue.lock().close.is_some()
    }

    /// Takes every queued frame (and the close request, if any).
    pub fn take(&self) -> Batch {
        let mut q = self.inner.queue.lock();
        q.bytes = 0;
        Batch {
            frames: std::mem::take(&mut q.frames),
            close: q.close,
        }
    }

    /// Resolves after the next push or close request (or at once if one
    /// happened since the last wait).
    pub async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// Resolves after the next close request (or at once if one happened
    /// since the last wait). Leaves the wake-ups of [`Session::woken`] alone.
    pub async fn close_requested(&self) {
        self.inner.closing.notified().await;
    }

    /// Bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queue.lock().bytes
    }

    pub fn group_count(&self) -> usize {
        self.inner.groups.lock().names.len()
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.inner.groups.lock().names.iter().any(|g| **g == *group)
    }

    /// Records membership; call only under the group's subscription lock.
    /// Returns false (and records nothing) once the session is detached.
    pub(crate) fn add_group(&self, group: Arc<str>) -> bool {
        let mut groups = self.inner.groups.lock();
        if groups.detached {
            return false;
        }
        if !groups.names.contains(&group) {
            groups.names.push(group);
        }
        true
    }

    /// Forgets membership; call only under the group's subscription lock.
    pub(crate) fn remove_group(&self, group: &str) {
        let mut groups = self.inner.groups.lock();
        groups.names.retain(|g| **g != *group);
        if groups.names.is_empty() {
            groups.names = Vec::new();
        }
    }

    /// Marks the session as leaving and returns its groups: from now on
    /// [`Session::add_group`] refuses, so the list is final.
    pub(crate) fn detach(&self) -> Vec<Arc<str>> {
        let mut groups = self.inner.groups.lock();
        groups.detached = true;
        groups.names.clone()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("uid", &self.inner.uid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Utf8Bytes {
        "x".repeat(n).into()
    }

    #[test]
    fn queue_is_bounded_in_bytes_and_closes_as_slow() {
        let s = Session::new(1, "u".into(), 100);
        s.push(&frame(60), 0).unwrap();
        s.push(&frame(40), 0).unwrap();
        assert_eq!(s.queued_bytes(), 100);
        assert_eq!(s.push(&frame(1), 0), Err(PushError::Full));
        assert_eq!(s.push(&frame(1), 0), Err(PushError::Closed));
        let b = s.take();
        assert!(b.frames.is_empty());
        assert!(matches!(b.close, Some(CloseReason::SlowConsumer { .. })));
    }

    #[test]
    fn an_empty_queue_takes_one_oversized_frame() {
        let s = Session::new(1, "u".into(), 10);
        s.push(&frame(50), 0).unwrap();
        assert_eq!(s.take().frames.len(), 1);
        s.push(&frame(50), 0).unwrap();
    }

    /// Waiting for a close (as a write does, to drop a slow consumer) must
    /// not take the wake-up of a queued frame: it would stay queued.
    #[test]
    fn watching_for_a_close_leaves_frame_wakeups_alone() {
        use futures_util::FutureExt;
        let s = Session::new(1, "u".into(), 100);
        s.push(&frame(10), 0).unwrap();
        assert!(s.close_requested().now_or_never().is_none());
        assert!(s.woken().now_or_never().is_some());
        assert!(s.woken().now_or_never().is_none());
        s.close(CloseReason::Kicked);
        assert!(s.close_requested().now_or_never().is_some());
        assert!(s.woken().now_or_never().is_some());
    }

    #[test]
    fn first_close_reason_wins() {
        let s = Session::new(1, "u".into(), 10);
        assert!(s.close(CloseReason::Kicked));
        assert!(!s.close(CloseReason::IdleTimeout));
        assert_eq!(s.take().close, Some(CloseReason::Kicked));
    }
}
