//! Bounded lanes: the mailbox slots between subtasks.
//!
//! A lane is a bounded FIFO from one sender (an upstream subtask's output writer) to one
//! receiver (a downstream subtask's [`InputGate`](crate::dataplane::gate::InputGate)). It is bounded by
//! **cost**, not by message count: a data batch costs its number of records, any other message
//! costs one. When the queued cost would exceed the capacity, the sender waits — that wait is the
//! backpressure, and it travels upstream lane by lane until it reaches the sources.
//!
//! The API follows tokio's `mpsc`: [`LaneSender::send`] waits for room, [`LaneSender::try_send`]
//! returns the message back when the lane is full or closed, and [`LaneSender::reserve`] waits
//! for room without giving up a message (so it is cancel-safe, usable in `select!`).
//!
//! A message bigger than the whole capacity is admitted when the lane is empty, so an oversized
//! batch can never wedge a lane; writers cut batches to the configured batch size anyway.
//!
//! A waiting sender is woken only when at least half of the lane is free and its message fits
//! (hysteresis): it then sends several batches in a row instead of trading one wake-up per
//! batch with the receiver, which on this kind of machine costs more than moving the batch.
//!
//! The receiver does not wait on a lane directly: every lane of a gate rings the gate's shared
//! doorbell when it receives a message, and the gate scans its lanes. This is what lets a
//! subtask stop polling some lanes (barrier alignment) and take its priority lane first.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// A message that can travel on a lane: it knows what it costs against the lane's capacity.
pub trait LaneMessage: Send + 'static {
    /// The capacity this message occupies while queued: at least 1.
    fn cost(&self) -> usize;
}

/// Counters of a lane that metrics can read without touching the queue.
#[derive(Debug)]
pub(crate) struct LaneStats {
    capacity: usize,
    queued_cost: AtomicUsize,
    queued_messages: AtomicUsize,
    senders_gone: AtomicBool,
}

/// A handle that reads how full a lane is, for metrics. Cheap to clone; does not keep the lane
/// open.
#[derive(Debug, Clone)]
pub struct LaneProbe(Arc<LaneStats>);

impl LaneProbe {
    /// How full the lane is right now.
    pub fn fill(&self) -> LaneFill {
        LaneFill {
            queued: self.0.queued_cost.load(Ordering::Relaxed),
            capacity: self.0.capacity,
        }
    }
}

/// How full a lane is: queued cost (records, for data lanes) against its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneFill {
    /// Cost queued now (records, plus one per control message).
    pub queued: usize,
    /// The lane's capacity in the same unit.
    pub capacity: usize,
}

impl LaneFill {
    /// The fill as a fraction in `[0, 1]` (may exceed 1 briefly for an oversized batch).
    pub fn ratio(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.queued as f64 / self.capacity as f64
        }
    }
}

struct State<M> {
    queue: VecDeque<M>,
    queued: usize,
    reserved: usize,
    waiting: usize,
    /// The largest cost a waiting sender asked for (reset when none waits).
    wanted: usize,
    senders: usize,
    receiver_alive: bool,
    pushed: u64,
    popped: u64,
}

struct Shared<M> {
    state: Mutex<State<M>>,
    stats: Arc<LaneStats>,
    room: Notify,
    doorbell: Arc<Notify>,
}

impl<M> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // No code path panics while holding this lock; recover the guard if one ever did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fits(&self, st: &State<M>, cost: usize) -> bool {
        let used = st.queued + st.reserved;
        used == 0 || used + cost <= self.stats.capacity
    }

    /// Whether waiting senders should be woken: half the lane is free and the largest waiting
    /// message fits (or the lane is empty, which admits anything).
    fn should_wake(&self, st: &State<M>) -> bool {
        if st.waiting == 0 {
            return false;
        }
        let used = st.queued + st.reserved;
        let cap = self.stats.capacity;
        used == 0 || (used <= cap / 2 && used + st.wanted <= cap)
    }
}

/// Creates a lane of the given capacity whose receiver rings `doorbell` on every arrival.
///
/// Most code gets lanes from an [`InputGateBuilder`](crate::dataplane::gate::InputGateBuilder) instead,
/// which supplies the gate's doorbell.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::dataplane::lane::{lane, LaneMessage, TrySendError};
/// use std::sync::Arc;
/// struct Msg(usize);
/// impl LaneMessage for Msg { fn cost(&self) -> usize { self.0 } }
///
/// let (tx, rx) = lane::<Msg>(10, Arc::new(tokio::sync::Notify::new()));
/// assert!(tx.try_send(Msg(6)).is_ok());
/// // 6 + 6 > 10: the lane is full and hands the message back.
/// assert!(matches!(tx.try_send(Msg(6)), Err(TrySendError::Full(Msg(6)))));
/// assert_eq!(rx.try_recv().ok().map(|m| m.0), Some(6));
/// assert!(tx.try_send(Msg(6)).is_ok());
/// ```
pub fn lane<M: LaneMessage>(
    capacity: usize,
    doorbell: Arc<Notify>,
) -> (LaneSender<M>, LaneReceiver<M>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            queued: 0,
            reserved: 0,
            waiting: 0,
            wanted: 0,
            senders: 1,
            receiver_alive: true,
            pushed: 0,
            popped: 0,
        }),
        stats: Arc::new(LaneStats {
            capacity: capacity.max(1),
            queued_cost: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
            senders_gone: AtomicBool::new(false),
        }),
        room: Notify::new(),
        doorbell,
    });
    (
        LaneSender {
            shared: shared.clone(),
        },
        LaneReceiver { shared },
    )
}

/// The sending half of a lane. Cloneable (the priority lane has several senders); the lane is
/// disconnected when every sender is dropped.
pub struct LaneSender<M: LaneMessage> {
    shared: Arc<Shared<M>>,
}

/// The lane's receiver is gone; the message is handed back.
#[derive(PartialEq, Eq)]
pub struct SendError<M>(pub M);

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the receiving subtask is gone")
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Why [`LaneSender::try_send`] did not send; the message is handed back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<M> {
    /// The lane has no room now.
    Full(M),
    /// The receiver is gone.
    Closed(M),
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// The lane's receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the receiving subtask is gone")]
pub struct Closed;

impl<M: LaneMessage> LaneSender<M> {
    /// Sends a message, waiting while the lane is full.
    ///
    /// Not cancel-safe: if the future is dropped while waiting, the message is dropped with it.
    /// Use [`reserve`](Self::reserve) inside `select!`.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the message if the receiver is gone.
    pub async fn send(&self, msg: M) -> Result<(), SendError<M>> {
        match self.reserve(msg.cost()).await {
            Ok(permit) => {
                permit.send(msg);
                Ok(())
            }
            Err(Closed) => Err(SendError(msg)),
        }
    }

    /// Sends a message if the lane has room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the message.
    pub fn try_send(&self, msg: M) -> Result<(), TrySendError<M>> {
        let cost = msg.cost();
        let st = self.shared.lock();
        if !st.receiver_alive {
            return Err(TrySendError::Closed(msg));
        }
        if !self.shared.fits(&st, cost) {
            return Err(TrySendError::Full(msg));
        }
        self.push_locked(st, msg, cost);
        Ok(())
    }

    /// Sends a message even if the lane is full: the lane goes over its capacity by this
    /// message, and senders wait until it is back under. Only for what must reach the
    /// receiver's queue now and is bounded by construction: an unaligned checkpoint barrier
    /// (at most one per checkpoint and sender), so the receiver finds the lane's whole
    /// in-flight data in its queue.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the message if the receiver is gone.
    pub fn send_overflow(&self, msg: M) -> Result<(), SendError<M>> {
        let cost = msg.cost();
        let st = self.shared.lock();
        if !st.receiver_alive {
            return Err(SendError(msg));
        }
        self.push_locked(st, msg, cost);
        Ok(())
    }

    /// Waits until `cost` fits in the lane and reserves it.
    ///
    /// Cancel-safe: dropping the future before it completes reserves nothing.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the receiver is gone.
    pub async fn reserve(&self, cost: usize) -> Result<Permit<'_, M>, Closed> {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if !st.receiver_alive {
                    return Err(Closed);
                }
                if self.shared.fits(&st, cost) {
                    st.reserved += cost;
                    return Ok(Permit {
                        sender: self,
                        cost,
                        used: false,
                    });
                }
                st.waiting += 1;
                st.wanted = st.wanted.max(cost);
            }
            let guard = WaitGuard {
                shared: &self.shared,
            };
            notified.await;
            drop(guard);
        }
    }

    fn push_locked(&self, mut st: MutexGuard<'_, State<M>>, msg: M, cost: usize) {
        st.queue.push_back(msg);
        st.queued += cost;
        st.pushed += 1;
        self.shared
            .stats
            .queued_messages
            .store(st.queue.len(), Ordering::Release);
        self.shared
            .stats
            .queued_cost
            .store(st.queued, Ordering::Relaxed);
        drop(st);
        self.shared.doorbell.notify_one();
    }

    /// The lane's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.stats.capacity
    }

    /// True if the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }

    /// How many messages this lane has accepted so far (the sequence number of the next one).
    pub fn pushed(&self) -> u64 {
        self.shared.lock().pushed
    }

    /// A probe for metrics.
    pub fn probe(&self) -> LaneProbe {
        LaneProbe(self.shared.stats.clone())
    }
}

impl<M: LaneMessage> Clone for LaneSender<M> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        LaneSender {
            shared: self.shared.clone(),
        }
    }
}

impl<M: LaneMessage> Drop for LaneSender<M> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        let last = st.senders == 0;
        if last {
            self.shared
                .stats
                .senders_gone
                .store(true, Ordering::Release);
        }
        drop(st);
        if last {
            self.shared.doorbell.notify_one();
        }
    }
}

impl<M: LaneMessage> fmt::Debug for LaneSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaneSender")
            .field("fill", &LaneProbe(self.shared.stats.clone()).fill())
            .finish()
    }
}

struct WaitGuard<'a, M> {
    shared: &'a Shared<M>,
}

impl<M> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.waiting -= 1;
        if st.waiting == 0 {
            st.wanted = 0;
        }
    }
}

/// Room reserved in a lane by [`LaneSender::reserve`]. Sending through it cannot wait or fail;
/// dropping it releases the room.
pub struct Permit<'a, M: LaneMessage> {
    sender: &'a LaneSender<M>,
    cost: usize,
    used: bool,
}

impl<M: LaneMessage> Permit<'_, M> {
    /// Sends the message into the reserved room. Its cost should equal the reserved cost. If
    /// the receiver has meanwhile gone away, the message is dropped.
    pub fn send(mut self, msg: M) {
        self.used = true;
        let cost = msg.cost();
        let mut st = self.sender.shared.lock();
        st.reserved -= self.cost;
        if !st.receiver_alive {
            return;
        }
        self.sender.push_locked(st, msg, cost);
    }
}

impl<M: LaneMessage> Drop for Permit<'_, M> {
    fn drop(&mut self) {
        if !self.used {
            let mut st = self.sender.shared.lock();
            st.reserved -= self.cost;
            let wake = self.sender.shared.should_wake(&st);
            drop(st);
            if wake {
                self.sender.shared.room.notify_waiters();
            }
        }
    }
}

/// Why [`LaneReceiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued and every sender is gone.
    Disconnected,
}

/// The receiving half of a lane, normally owned by an [`InputGate`](crate::dataplane::gate::InputGate).
/// Dropping it closes the lane: waiting senders wake up with an error.
pub struct LaneReceiver<M: LaneMessage> {
    shared: Arc<Shared<M>>,
}

impl<M: LaneMessage> LaneReceiver<M> {
    /// Takes the oldest message, if any.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] or [`TryRecvError::Disconnected`].
    #[inline]
    pub fn try_recv(&self) -> Result<M, TryRecvError> {
        let stats = &self.shared.stats;
        if stats.queued_messages.load(Ordering::Acquire) == 0
            && !stats.senders_gone.load(Ordering::Acquire)
        {
            return Err(TryRecvError::Empty);
        }
        let mut st = self.shared.lock();
        match st.queue.pop_front() {
            Some(msg) => {
                st.queued -= msg.cost();
                st.popped += 1;
                stats
                    .queued_messages
                    .store(st.queue.len(), Ordering::Release);
                stats.queued_cost.store(st.queued, Ordering::Relaxed);
                let wake = self.shared.should_wake(&st);
                drop(st);
                if wake {
                    self.shared.room.notify_waiters();
                }
                Ok(msg)
            }
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits for the next message on this lane alone; `None` once every sender is gone and the
    /// lane is empty. Gates do not use this (they scan many lanes); it serves simple consumers
    /// and tests.
    pub async fn recv(&self) -> Option<M> {
        loop {
            let notified = self.shared.doorbell.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_recv() {
                Ok(m) => return Some(m),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => notified.await,
            }
        }
    }

    /// True if a message is queued (a hint: it may be taken by the time you look).
    pub fn has_message(&self) -> bool {
        self.shared.stats.queued_messages.load(Ordering::Acquire) > 0
    }

    /// How full the lane is.
    pub fn fill(&self) -> LaneFill {
        LaneProbe(self.shared.stats.clone()).fill()
    }

    /// A probe for metrics.
    pub fn probe(&self) -> LaneProbe {
        LaneProbe(self.shared.stats.clone())
    }

    /// How many messages have been taken from this lane so far.
    pub fn popped(&self) -> u64 {
        self.shared.lock().popped
    }

    /// Calls `f` on each queued message, oldest first, without taking them (what an unaligned
    /// checkpoint needs to record the data a barrier overtook).
    pub fn for_each_queued(&self, mut f: impl FnMut(&M)) {
        let st = self.shared.lock();
        st.queue.iter().for_each(&mut f);
    }
}

impl<M: LaneMessage> Drop for LaneReceiver<M> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_alive = false;
        let dropped = std::mem::take(&mut st.queue);
        st.queued = 0;
        self.shared
            .stats
            .queued_messages
            .store(0, Ordering::Release);
        self.shared.stats.queued_cost.store(0, Ordering::Relaxed);
        drop(st);
        drop(dropped);
        self.shared.room.notify_waiters();
    }
}

impl<M: LaneMessage> fmt::Debug for LaneReceiver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaneReceiver")
            .field("fill", &self.fill())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq, Eq)]
    struct M(usize, u32);
    impl LaneMessage for M {
        fn cost(&self) -> usize {
            self.0
        }
    }

    fn bell() -> Arc<Notify> {
        Arc::new(Notify::new())
    }

    #[test]
    fn bounded_by_cost_not_message_count() {
        let (tx, rx) = lane::<M>(100, bell());
        for i in 0..4 {
            tx.try_send(M(25, i)).unwrap();
        }
        assert_eq!(
            rx.fill(),
            LaneFill {
                queued: 100,
                capacity: 100
            }
        );
        assert!(matches!(
            tx.try_send(M(1, 9)),
            Err(TrySendError::Full(M(1, 9)))
        ));
        rx.try_recv().unwrap();
        tx.try_send(M(25, 4)).unwrap();
        assert!(matches!(tx.try_send(M(1, 9)), Err(TrySendError::Full(_))));
    }

    #[test]
    fn oversized_message_enters_only_an_empty_lane() {
        let (tx, rx) = lane::<M>(10, bell());
        tx.try_send(M(50, 0)).unwrap();
        assert!(matches!(tx.try_send(M(1, 1)), Err(TrySendError::Full(_))));
        assert_eq!(rx.try_recv().unwrap(), M(50, 0));
        tx.try_send(M(1, 1)).unwrap();
        assert!(matches!(tx.try_send(M(50, 2)), Err(TrySendError::Full(_))));
    }

    #[test]
    fn fifo_order_and_sequence_numbers() {
        let (tx, rx) = lane::<M>(1000, bell());
        for i in 0..100 {
            tx.try_send(M(1, i)).unwrap();
        }
        assert_eq!(tx.pushed(), 100);
        for i in 0..100 {
            assert_eq!(rx.try_recv().unwrap().1, i);
        }
        assert_eq!(rx.popped(), 100);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn disconnect_and_close_are_reported() {
        let (tx, rx) = lane::<M>(10, bell());
        tx.try_send(M(1, 0)).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv().unwrap(), M(1, 0));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = lane::<M>(10, bell());
        drop(rx);
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(M(1, 0)), Err(TrySendError::Closed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn full_lane_makes_the_sender_wait_until_room() {
        let (tx, rx) = lane::<M>(2, bell());
        tx.send(M(1, 0)).await.unwrap();
        tx.send(M(1, 1)).await.unwrap();
        let sender = tokio::spawn(async move {
            tx.send(M(1, 2)).await.unwrap();
            tx
        });
        // With the clock paused, this returns only once every task is idle: the sender is
        // parked on a full lane.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!sender.is_finished());
        assert_eq!(rx.try_recv().unwrap(), M(1, 0));
        let tx = sender.await.unwrap();
        assert_eq!(rx.fill().queued, 2);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_sender_fails_when_receiver_drops() {
        let (tx, rx) = lane::<M>(1, bell());
        tx.send(M(1, 0)).await.unwrap();
        let sender = tokio::spawn(async move { tx.send(M(1, 1)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(rx);
        assert_eq!(sender.await.unwrap(), Err(SendError(M(1, 1))));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_reserve_future_reserves_nothing() {
        let (tx, rx) = lane::<M>(1, bell());
        tx.send(M(1, 0)).await.unwrap();
        {
            let reserve = tx.reserve(1);
            let timed = tokio::time::timeout(Duration::from_millis(10), reserve).await;
            assert!(timed.is_err());
        }
        rx.try_recv().unwrap();
        // The abandoned reservation left nothing behind: the full capacity is free.
        assert_eq!(rx.fill().queued, 0);
        let permit = tx.reserve(1).await.unwrap();
        permit.send(M(1, 1));
        assert_eq!(rx.recv().await, Some(M(1, 1)));
    }
}
