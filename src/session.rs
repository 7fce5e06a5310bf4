//! One client connection as the rest of the node sees it: identity, the
//! bounded outbound queue, its group memberships, and a close request.
//!
//! A [`Session`] is a cheap `Arc` handle. Producers (the hub's broadcast, the
//! connection's own replies) call [`Session::push`] and
//! [`Session::push_message`]; the connection's single task is the only
//! consumer and takes everything queued at once with [`Session::take`],
//! writes it, and flushes once. The queue is bounded in bytes: a push that
//! would exceed the bound closes the session as a slow consumer instead of
//! waiting, so fan-out never blocks on one client.
//!
//! While a channel's history is being read for the session (a resume, or
//! the start position of a new subscription), its live messages are held
//! back ([`Session::begin_recovery`]) and queued after the replay
//! ([`Session::finish_recovery`]), those already replayed or older than the
//! start dropped: no gap and no duplicate across the seam.

use std::{collections::VecDeque, fmt, sync::Arc};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{
    protocol::{Channel, ChannelPosition, CloseReason, Position},
    stages::Trace,
};

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

/// One queued frame: the shared encoded text, the publish time of the
/// message it carries (0 for replies), for the latency metric, the
/// message's channel position (none for replies and live-only messages),
/// and, for the one message whose fan-out is being timed, its [`Trace`].
#[derive(Debug, Clone)]
pub struct Outbound {
    pub text: Utf8Bytes,
    pub ts_ms: u64,
    pub position: Option<Arc<ChannelPosition>>,
    pub trace: Option<Arc<Trace>>,
}

impl Outbound {
    pub fn reply(text: Utf8Bytes) -> Self {
        Self {
            text,
            ts_ms: 0,
            position: None,
            trace: None,
        }
    }
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
    /// Bytes of `frames`.
    bytes: usize,
    /// Bytes of the frames held in `recovering` (the bound counts both).
    held_bytes: usize,
    close: Option<CloseReason>,
    /// Channels being recovered, with their live frames held back.
    recovering: Vec<Held>,
    /// Where the session started on channels it has received nothing on
    /// since: a message at or before it (delivered late by the node, after
    /// being in flight or filled in from history) is not for this session.
    /// An entry goes with the first message past it.
    floors: Vec<Floor>,
}

struct Floor {
    channel: Channel,
    start: Position,
}

struct Held {
    channel: Channel,
    frames: Vec<Outbound>,
}

impl Queue {
    /// Ends the holding of `channel`: its held frames. Once nothing is
    /// held the vector's capacity goes too (idle sessions are most
    /// sessions; each byte counts).
    fn take_held(&mut self, channel: &Channel) -> Vec<Outbound> {
        let held = match self.recovering.iter().position(|h| h.channel == *channel) {
            Some(i) => self.recovering.swap_remove(i).frames,
            None => Vec::new(),
        };
        if self.recovering.is_empty() {
            self.recovering = Vec::new();
        }
        held
    }
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

    /// Queues a reply for this client without waiting. An empty queue
    /// always takes one frame, so a message bigger than the bound still goes
    /// out.
    pub fn push(&self, frame: &Utf8Bytes, ts_ms: u64) -> Result<(), PushError> {
        let out = Outbound {
            ts_ms,
            ..Outbound::reply(frame.clone())
        };
        let mut q = self.inner.queue.lock();
        self.enqueue(&mut q, out)?;
        drop(q);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Queues a copy of `message` (the frame shared with every recipient),
    /// or holds it back while its channel is being recovered.
    pub fn push_message(&self, message: &Outbound) -> Result<(), PushError> {
        let mut q = self.inner.queue.lock();
        let held = match &message.position {
            None => None,
            Some(position) => {
                if !q.floors.is_empty()
                    && let Some(i) = q.floors.iter().position(|f| f.channel == position.channel)
                {
                    let start = &q.floors[i].start;
                    if start.epoch == position.position.epoch
                        && position.position.offset <= start.offset
                    {
                        // Before where this session started: not a duplicate
                        // to deliver.
                        return Ok(());
                    }
                    q.floors.swap_remove(i);
                    if q.floors.is_empty() {
                        // Idle sessions keep no spare capacity.
                        q.floors = Vec::new();
                    }
                }
                q.recovering
                    .iter()
                    .position(|h| h.channel == position.channel)
            }
        };
        match held {
            None => self.enqueue(&mut q, message.clone())?,
            Some(i) => {
                self.admit(&mut q, message.text.len())?;
                q.held_bytes += message.text.len();
                q.recovering[i].frames.push(message.clone());
                return Ok(());
            }
        }
        drop(q);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Checks that `len` more bytes fit the bound, or cuts the session off
    /// as a slow consumer.
    fn admit(&self, q: &mut Queue, len: usize) -> Result<(), PushError> {
        if q.close.is_some() {
            return Err(PushError::Closed);
        }
        let used = q.bytes + q.held_bytes;
        if used > 0 && used.saturating_add(len) > self.inner.max_queue_bytes {
            q.close = Some(CloseReason::slow_consumer());
            // The slow client will not read what is queued in time; drop
            // it so its memory is released now.
            let held: usize = q.recovering.iter().map(|h| h.frames.len()).sum();
            let dropped = q.frames.len() + held + 1;
            q.frames = VecDeque::new();
            q.recovering = Vec::new();
            q.bytes = 0;
            q.held_bytes = 0;
            crate::metrics::slow_consumer();
            crate::metrics::slow_consumer_dropped(dropped);
            self.inner.wake.notify_one();
            self.inner.closing.notify_one();
            return Err(PushError::Full);
        }
        Ok(())
    }

    fn enqueue(&self, q: &mut Queue, out: Outbound) -> Result<(), PushError> {
        self.admit(q, out.text.len())?;
        q.bytes += out.text.len();
        q.frames.push_back(out);
        Ok(())
    }

    /// Holds back live messages of `channel` until [`Session::finish_recovery`]
    /// (or [`Session::abandon_recovery`]). Call before the session can
    /// receive on the channel (before it joins the hub's index for it).
    pub fn begin_recovery(&self, channel: &Channel) {
        let mut q = self.inner.queue.lock();
        if !q.recovering.iter().any(|h| h.channel == *channel) {
            q.recovering.push(Held {
                channel: channel.clone(),
                frames: Vec::new(),
            });
        }
    }

    /// Ends the recovery of `channel`: queues `replay` (the messages after
    /// the client's position, up to `top`), then the live messages held
    /// meanwhile that come after `top` (or belong to a newer epoch).
    pub fn finish_recovery(
        &self,
        channel: &Channel,
        top: &Position,
        replay: Vec<Outbound>,
    ) -> Result<(), PushError> {
        let mut q = self.inner.queue.lock();
        let held = q.take_held(channel);
        // Counted again as they are queued, with the replay.
        let held_bytes: usize = held.iter().map(|f| f.text.len()).sum();
        q.held_bytes = q.held_bytes.saturating_sub(held_bytes);
        let after_top = held.into_iter().filter(|f| {
            f.position
                .as_ref()
                .is_none_or(|p| p.position.epoch != top.epoch || p.position.offset > top.offset)
        });
        for out in replay.into_iter().chain(after_top) {
            self.enqueue(&mut q, out)?;
        }
        q.floors.retain(|f| f.channel != *channel);
        if top.offset > 0 {
            q.floors.push(Floor {
                channel: channel.clone(),
                start: top.clone(),
            });
        }
        drop(q);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Ends the recovery of `channel` with nothing delivered (it failed).
    pub fn abandon_recovery(&self, channel: &Channel) {
        let mut q = self.inner.queue.lock();
        let held = q.take_held(channel);
        let bytes: usize = held.iter().map(|f| f.text.len()).sum();
        q.held_bytes = q.held_bytes.saturating_sub(bytes);
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

    /// Takes every queued frame (and the close request, if any). Held
    /// frames stay held.
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

    fn placed(channel: &Channel, offset: u64, epoch: &str) -> Arc<ChannelPosition> {
        Arc::new(ChannelPosition {
            channel: channel.clone(),
            position: Position::new(offset, crate::protocol::Epoch::parse(epoch).unwrap()),
        })
    }

    fn message(channel: &Channel, offset: u64, epoch: &str, len: usize) -> Outbound {
        Outbound {
            position: Some(placed(channel, offset, epoch)),
            ..Outbound::reply(frame(len))
        }
    }

    fn offsets(b: &Batch) -> Vec<u64> {
        b.frames
            .iter()
            .map(|f| f.position.as_ref().map_or(0, |p| p.position.offset))
            .collect()
    }

    /// Live messages of a channel being recovered wait for the replay and
    /// come after it, without the ones the replay (or the start) covers;
    /// other channels flow meanwhile.
    #[test]
    fn recovery_holds_live_messages_until_the_replay_is_queued() {
        let s = Session::new(1, "u".into(), 1 << 20);
        let (g, u) = (Channel::group("g"), Channel::user("u"));
        s.begin_recovery(&g);
        for off in [3, 4, 5] {
            s.push_message(&message(&g, off, "e", 1)).unwrap();
        }
        s.push_message(&message(&u, 9, "e", 1)).unwrap();
        assert_eq!(offsets(&s.take()), [9], "only the other channel flowed");
        let replay = [2, 3, 4]
            .into_iter()
            .map(|off| message(&g, off, "e", 1))
            .collect();
        let top = Position::new(4, crate::protocol::Epoch::parse("e").unwrap());
        s.finish_recovery(&g, &top, replay).unwrap();
        assert_eq!(offsets(&s.take()), [2, 3, 4, 5]);
        s.push_message(&message(&g, 6, "e", 1)).unwrap();
        assert_eq!(offsets(&s.take()), [6], "recovery over: live again");
    }

    /// Held frames count against the byte bound: a session that falls too
    /// far behind while recovering is cut off like any slow consumer.
    #[test]
    fn held_frames_count_against_the_bound() {
        let s = Session::new(1, "u".into(), 10);
        let g = Channel::group("g");
        s.begin_recovery(&g);
        s.push_message(&message(&g, 1, "e", 6)).unwrap();
        assert_eq!(
            s.push_message(&message(&g, 2, "e", 6)),
            Err(PushError::Full)
        );
        assert!(s.is_closing());
    }

    /// A message at or before where the session started, delivered late
    /// (in flight, or filled in from history), is dropped; the first one
    /// past the start ends the check.
    #[test]
    fn messages_before_the_start_are_not_delivered_late() {
        let s = Session::new(1, "u".into(), 1 << 20);
        let g = Channel::group("g");
        s.begin_recovery(&g);
        let top = Position::new(5, crate::protocol::Epoch::parse("e").unwrap());
        s.finish_recovery(&g, &top, Vec::new()).unwrap();
        for off in [4, 5, 6, 5] {
            s.push_message(&message(&g, off, "e", 1)).unwrap();
        }
        assert_eq!(offsets(&s.take()), [6, 5], "only until the start is passed");
        s.begin_recovery(&g);
        s.finish_recovery(&g, &top, Vec::new()).unwrap();
        s.push_message(&message(&g, 1, "other", 1)).unwrap();
        assert_eq!(
            offsets(&s.take()),
            [1],
            "another epoch is not before the start"
        );
    }
}
