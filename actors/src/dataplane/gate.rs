//! A subtask's mailbox: one bounded lane per input channel plus one priority lane.
//!
//! [`InputGate::next`] returns the next event: a priority message if one is queued, otherwise a
//! message from the next data lane in round-robin order. Lanes can be **blocked** (the gate stops
//! polling them, so their senders fill up and wait: that is how a barrier is aligned without
//! buffering) and **ended** (after their end of input).

use crate::dataplane::lane::{
    LaneMessage, LaneProbe, LaneReceiver, LaneSender, TryRecvError, lane,
};
use std::sync::Arc;
use tokio::sync::Notify;

/// What [`InputGate::next`] returns.
#[derive(Debug)]
pub enum GateEvent<M, P> {
    /// A message from the priority lane.
    Priority(P),
    /// A message from data lane `lane`.
    Data {
        /// Index of the lane (its input channel).
        lane: usize,
        /// The message.
        message: M,
    },
    /// Every sender of data lane `lane` is gone without a final message. The lane is marked
    /// ended.
    Disconnected {
        /// Index of the lane.
        lane: usize,
    },
}

/// Builds an [`InputGate`]: hands out the senders of its lanes while the job is being wired.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::dataplane::gate::{GateEvent, InputGateBuilder};
/// use actorflow_runtime::dataplane::lane::LaneMessage;
/// #[derive(Debug, PartialEq)]
/// struct Msg(&'static str);
/// impl LaneMessage for Msg { fn cost(&self) -> usize { 1 } }
///
/// let mut builder = InputGateBuilder::<Msg, Msg>::new(4);
/// let data = builder.add_lane(16);
/// let prio = builder.priority_sender();
/// let mut gate = builder.build();
/// data.try_send(Msg("record")).unwrap();
/// prio.try_send(Msg("cancel")).unwrap();
/// // The priority message overtakes the queued data.
/// assert!(matches!(gate.try_next(), Some(GateEvent::Priority(Msg("cancel")))));
/// assert!(matches!(gate.try_next(), Some(GateEvent::Data { lane: 0, message: Msg("record") })));
/// ```
pub struct InputGateBuilder<M: LaneMessage, P: LaneMessage> {
    data_bell: Arc<Notify>,
    priority_bell: Arc<Notify>,
    lanes: Vec<LaneReceiver<M>>,
    priority_tx: LaneSender<P>,
    priority_rx: LaneReceiver<P>,
}

impl<M: LaneMessage, P: LaneMessage> InputGateBuilder<M, P> {
    /// A gate whose priority lane holds up to `priority_capacity` messages.
    pub fn new(priority_capacity: usize) -> Self {
        let priority_bell = Arc::new(Notify::new());
        let (priority_tx, priority_rx) = lane(priority_capacity, priority_bell.clone());
        InputGateBuilder {
            data_bell: Arc::new(Notify::new()),
            priority_bell,
            lanes: Vec::new(),
            priority_tx,
            priority_rx,
        }
    }

    /// Adds a data lane of the given capacity and returns its sender. Lanes are numbered in the
    /// order they are added.
    pub fn add_lane(&mut self, capacity: usize) -> LaneSender<M> {
        let (tx, rx) = lane(capacity, self.data_bell.clone());
        self.lanes.push(rx);
        tx
    }

    /// Number of data lanes so far.
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// A sender for the priority lane (cloneable; several parties may hold one).
    pub fn priority_sender(&self) -> LaneSender<P> {
        self.priority_tx.clone()
    }

    /// Finishes the gate.
    pub fn build(self) -> InputGate<M, P> {
        let n = self.lanes.len();
        InputGate {
            lanes: self.lanes,
            priority: self.priority_rx,
            data_bell: self.data_bell,
            priority_bell: self.priority_bell,
            blocked: vec![false; n],
            ended: vec![false; n],
            open: n,
            cursor: 0,
        }
    }
}

/// The receiving side of a subtask's mailbox. See the [module docs](self).
pub struct InputGate<M: LaneMessage, P: LaneMessage> {
    lanes: Vec<LaneReceiver<M>>,
    priority: LaneReceiver<P>,
    data_bell: Arc<Notify>,
    priority_bell: Arc<Notify>,
    blocked: Vec<bool>,
    ended: Vec<bool>,
    open: usize,
    cursor: usize,
}

impl<M: LaneMessage, P: LaneMessage> InputGate<M, P> {
    /// Number of data lanes.
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Number of data lanes not yet ended.
    pub fn open_lanes(&self) -> usize {
        self.open
    }

    /// Stops polling `lane`: its messages stay queued and its sender waits once it is full.
    pub fn block(&mut self, lane: usize) {
        if let Some(b) = self.blocked.get_mut(lane) {
            *b = true;
        }
    }

    /// Resumes polling `lane`.
    pub fn unblock(&mut self, lane: usize) {
        if let Some(b) = self.blocked.get_mut(lane) {
            *b = false;
        }
    }

    /// Resumes polling every lane.
    pub fn unblock_all(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// True if `lane` is blocked.
    pub fn is_blocked(&self, lane: usize) -> bool {
        self.blocked.get(lane).copied().unwrap_or(false)
    }

    /// Marks `lane` as ended (its end of input was received); it is never polled again.
    pub fn end(&mut self, lane: usize) {
        if let Some(e) = self.ended.get_mut(lane)
            && !*e
        {
            *e = true;
            self.open -= 1;
        }
    }

    /// True if `lane` has ended.
    pub fn is_ended(&self, lane: usize) -> bool {
        self.ended.get(lane).copied().unwrap_or(true)
    }

    /// Probes of every data lane's fill, in lane order, for metrics.
    pub fn probes(&self) -> Vec<LaneProbe> {
        self.lanes.iter().map(LaneReceiver::probe).collect()
    }

    /// The data lane receivers, for inspection (e.g. recording queued data).
    pub fn lane(&self, lane: usize) -> Option<&LaneReceiver<M>> {
        self.lanes.get(lane)
    }

    /// Takes a priority message if one is queued.
    #[inline]
    pub fn try_priority(&mut self) -> Option<P> {
        self.priority.try_recv().ok()
    }

    /// The next event if one is ready now: the priority lane first, then the data lanes that
    /// are neither blocked nor ended, round robin.
    #[inline]
    pub fn try_next(&mut self) -> Option<GateEvent<M, P>> {
        if let Ok(p) = self.priority.try_recv() {
            return Some(GateEvent::Priority(p));
        }
        let n = self.lanes.len();
        let mut i = self.cursor;
        for _ in 0..n {
            if i >= n {
                i = 0;
            }
            if !self.blocked[i] && !self.ended[i] {
                match self.lanes[i].try_recv() {
                    Ok(message) => {
                        self.cursor = i + 1;
                        return Some(GateEvent::Data { lane: i, message });
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => {
                        self.end(i);
                        self.cursor = i + 1;
                        return Some(GateEvent::Disconnected { lane: i });
                    }
                }
            }
            i += 1;
        }
        None
    }

    /// Waits for the next event (see [`try_next`](Self::try_next)). With every data lane ended
    /// or blocked, only a priority message can end the wait.
    pub async fn next(&mut self) -> GateEvent<M, P> {
        loop {
            let data = self.data_bell.clone();
            let prio = self.priority_bell.clone();
            let data_rung = data.notified();
            let prio_rung = prio.notified();
            tokio::pin!(data_rung);
            tokio::pin!(prio_rung);
            data_rung.as_mut().enable();
            prio_rung.as_mut().enable();
            if let Some(event) = self.try_next() {
                return event;
            }
            tokio::select! {
                _ = data_rung => {}
                _ = prio_rung => {}
            }
        }
    }

    /// Waits for the next priority message only; data lanes are not touched. Used while a
    /// subtask waits for room downstream, so it still reacts to cancellation.
    pub async fn next_priority(&mut self) -> P {
        loop {
            let prio = self.priority_bell.clone();
            let rung = prio.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            if let Ok(p) = self.priority.try_recv() {
                return p;
            }
            rung.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq, Eq, Clone)]
    struct M(u32);
    impl LaneMessage for M {
        fn cost(&self) -> usize {
            1
        }
    }

    fn data(ev: Option<GateEvent<M, M>>) -> (usize, u32) {
        match ev {
            Some(GateEvent::Data { lane, message }) => (lane, message.0),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn round_robin_keeps_per_lane_order() {
        let mut b = InputGateBuilder::<M, M>::new(4);
        let a = b.add_lane(10);
        let c = b.add_lane(10);
        let mut gate = b.build();
        for i in 0..3 {
            a.try_send(M(i)).unwrap();
            c.try_send(M(100 + i)).unwrap();
        }
        let mut got = Vec::new();
        while let Some(ev) = gate.try_next() {
            got.push(data(Some(ev)));
        }
        assert_eq!(
            got,
            vec![(0, 0), (1, 100), (0, 1), (1, 101), (0, 2), (1, 102)]
        );
    }

    #[test]
    fn blocked_lane_is_not_polled_until_resumed() {
        let mut b = InputGateBuilder::<M, M>::new(4);
        let a = b.add_lane(2);
        let c = b.add_lane(2);
        let mut gate = b.build();
        gate.block(0);
        a.try_send(M(1)).unwrap();
        a.try_send(M(2)).unwrap();
        c.try_send(M(10)).unwrap();
        assert_eq!(data(gate.try_next()), (1, 10));
        assert!(gate.try_next().is_none(), "lane 0 is blocked");
        // The blocked lane fills up and refuses its sender: backpressure, not buffering.
        assert!(a.try_send(M(3)).is_err());
        gate.unblock(0);
        assert_eq!(data(gate.try_next()), (0, 1));
        assert_eq!(data(gate.try_next()), (0, 2));
    }

    #[test]
    fn priority_overtakes_queued_data_even_when_all_lanes_blocked() {
        let mut b = InputGateBuilder::<M, M>::new(4);
        let a = b.add_lane(10);
        let p = b.priority_sender();
        let mut gate = b.build();
        a.try_send(M(1)).unwrap();
        a.try_send(M(2)).unwrap();
        assert_eq!(data(gate.try_next()), (0, 1));
        p.try_send(M(99)).unwrap();
        assert!(matches!(gate.try_next(), Some(GateEvent::Priority(M(99)))));
        gate.block(0);
        p.try_send(M(98)).unwrap();
        assert!(matches!(gate.try_next(), Some(GateEvent::Priority(M(98)))));
        assert!(gate.try_next().is_none());
    }

    #[test]
    fn disconnected_lane_reported_once_and_ended() {
        let mut b = InputGateBuilder::<M, M>::new(4);
        let a = b.add_lane(10);
        let _c = b.add_lane(10);
        let mut gate = b.build();
        a.try_send(M(1)).unwrap();
        drop(a);
        assert_eq!(data(gate.try_next()), (0, 1));
        assert!(matches!(
            gate.try_next(),
            Some(GateEvent::Disconnected { lane: 0 })
        ));
        assert!(gate.try_next().is_none());
        assert_eq!(gate.open_lanes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn next_wakes_on_data_and_on_priority() {
        let mut b = InputGateBuilder::<M, M>::new(4);
        let a = b.add_lane(10);
        let p = b.priority_sender();
        let mut gate = b.build();
        let waiter = tokio::spawn(async move {
            let first = gate.next().await;
            let second = gate.next().await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        a.send(M(7)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        p.send(M(8)).await.unwrap();
        let (first, second) = waiter.await.unwrap();
        assert!(matches!(
            first,
            GateEvent::Data {
                lane: 0,
                message: M(7)
            }
        ));
        assert!(matches!(second, GateEvent::Priority(M(8))));
    }

    #[tokio::test(start_paused = true)]
    async fn next_priority_ignores_data() {
        let mut b = InputGateBuilder::<M, M>::new(4);
        let a = b.add_lane(10);
        let p = b.priority_sender();
        let mut gate = b.build();
        a.try_send(M(1)).unwrap();
        let waiter = tokio::spawn(async move { (gate.next_priority().await, gate) });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        p.send(M(2)).await.unwrap();
        let (msg, mut gate) = waiter.await.unwrap();
        assert_eq!(msg, M(2));
        assert_eq!(data(gate.try_next()), (0, 1));
    }
}
