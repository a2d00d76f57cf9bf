//! Barrier alignment decisions for a subtask with several input lanes. Plain state, no I/O:
//! the subtask applies the outcome to its [`InputGate`](crate::dataplane::gate::InputGate).
//!
//! * **Aligned**: each lane that delivered the barrier is blocked until every lane has; then
//!   all lanes resume and the subtask snapshots and forwards the barrier.
//! * **At-least-once**: nothing is blocked; the barrier is forwarded when every lane has
//!   delivered it.
//! * **Unaligned**: the first barrier is forwarded at once; the same barrier on the other lanes
//!   is consumed. (Recording the overtaken in-flight data is part of the checkpointing step.)
//!
//! A barrier of a newer checkpoint aborts the alignment of an older one; barriers older than
//! the last completed one are ignored. Ended lanes count as having delivered every barrier.

use crate::dataplane::message::{BarrierAlignment, CheckpointBarrier};
use crate::types::CheckpointId;

/// What the subtask must do after a barrier or a lane's end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlignOutcome {
    /// An older checkpoint's alignment was given up.
    pub aborted: Option<CheckpointId>,
    /// Resume every blocked lane (done before `block`).
    pub unblock_all: bool,
    /// Stop polling this lane.
    pub block: Option<usize>,
    /// Snapshot now and forward this barrier downstream.
    pub trigger: Option<CheckpointBarrier>,
    /// Every lane delivered this checkpoint's barrier: for an unaligned one, the recording of
    /// in-flight data is complete.
    pub completed: Option<CheckpointId>,
}

#[derive(Debug, Clone)]
struct Pending {
    barrier: CheckpointBarrier,
    seen: Vec<bool>,
    forwarded: bool,
}

/// Tracks barrier alignment over a subtask's input lanes.
#[derive(Debug, Clone)]
pub struct BarrierAligner {
    ended: Vec<bool>,
    pending: Option<Pending>,
    last_done: Option<CheckpointId>,
}

impl BarrierAligner {
    /// An aligner over `lanes` input lanes.
    pub fn new(lanes: usize) -> Self {
        BarrierAligner {
            ended: vec![false; lanes],
            pending: None,
            last_done: None,
        }
    }

    /// The checkpoint being aligned, if any.
    pub fn pending(&self) -> Option<CheckpointId> {
        self.pending.as_ref().map(|p| p.barrier.id)
    }

    /// True while `lane`'s data belongs to an unaligned checkpoint's in-flight data: the
    /// checkpoint was taken and this lane's barrier has not arrived yet.
    pub fn is_recording(&self, lane: usize) -> bool {
        self.pending.as_ref().is_some_and(|p| {
            p.forwarded && p.barrier.alignment == BarrierAlignment::Unaligned && !p.seen[lane]
        })
    }

    /// An unaligned barrier overtook the data through the priority lane: act on it now (it
    /// counts as first barrier); the in-band copies that follow on each lane end the
    /// recording of that lane.
    pub fn on_priority_barrier(&mut self, barrier: CheckpointBarrier) -> AlignOutcome {
        let mut out = AlignOutcome::default();
        if self.last_done.is_some_and(|d| barrier.id <= d) {
            return out;
        }
        match &self.pending {
            Some(p) if barrier.id <= p.barrier.id => return out,
            Some(p) => {
                out.aborted = Some(p.barrier.id);
                out.unblock_all = true;
                self.pending = None;
            }
            None => {}
        }
        let mut barrier = barrier;
        barrier.alignment = BarrierAlignment::Unaligned;
        let seen = self.ended.clone();
        let complete = seen.iter().all(|s| *s);
        self.pending = Some(Pending {
            barrier,
            seen,
            forwarded: true,
        });
        out.trigger = Some(barrier);
        if complete {
            self.finish(&mut out);
        }
        out
    }

    /// The coordinator aborted checkpoint `id` (a cancel marker): stop aligning or recording
    /// it; `unblock_all` says whether lanes were blocked.
    pub fn abort(&mut self, id: CheckpointId) -> AlignOutcome {
        let mut out = AlignOutcome::default();
        if self.pending.as_ref().is_some_and(|p| p.barrier.id == id) {
            self.pending = None;
            self.last_done = Some(self.last_done.map_or(id, |d| d.max(id)));
            out.aborted = Some(id);
            out.unblock_all = true;
        }
        out
    }

    /// Turns the pending aligned checkpoint unaligned (the alignment timeout passed): the
    /// lanes whose barrier is missing are recorded from now on. Returns the barrier to
    /// snapshot and forward, if one was aligning.
    pub fn switch_to_unaligned(&mut self) -> Option<CheckpointBarrier> {
        let p = self.pending.as_mut()?;
        if p.forwarded || p.barrier.alignment != BarrierAlignment::Aligned {
            return None;
        }
        p.barrier.alignment = BarrierAlignment::Unaligned;
        p.forwarded = true;
        Some(p.barrier)
    }

    /// True if checkpoint `id` needs nothing more from this subtask's inputs: it (or a newer
    /// one) completed here, was aborted, or was already taken unaligned.
    pub fn is_settled(&self, id: CheckpointId) -> bool {
        self.last_done.is_some_and(|d| id <= d)
            || self
                .pending
                .as_ref()
                .is_some_and(|p| p.barrier.id > id || (p.barrier.id == id && p.forwarded))
    }

    /// When the pending checkpoint, if aligned and not yet complete, started aligning.
    pub fn pending_barrier(&self) -> Option<CheckpointBarrier> {
        self.pending.as_ref().map(|p| p.barrier)
    }

    /// A barrier arrived on `lane`.
    pub fn on_barrier(&mut self, lane: usize, barrier: CheckpointBarrier) -> AlignOutcome {
        let mut out = AlignOutcome::default();
        if lane >= self.ended.len() || self.last_done.is_some_and(|d| barrier.id <= d) {
            return out;
        }
        match &self.pending {
            Some(p) if barrier.id < p.barrier.id => return out,
            Some(p) if barrier.id > p.barrier.id => {
                out.aborted = Some(p.barrier.id);
                out.unblock_all = true;
                self.pending = None;
            }
            _ => {}
        }
        let ended = &self.ended;
        let p = self.pending.get_or_insert_with(|| Pending {
            barrier,
            seen: ended.clone(),
            forwarded: false,
        });
        p.seen[lane] = true;
        let complete = p.seen.iter().all(|s| *s);
        match p.barrier.alignment {
            BarrierAlignment::Unaligned if !p.forwarded => {
                p.forwarded = true;
                out.trigger = Some(barrier);
            }
            BarrierAlignment::Aligned if !complete => out.block = Some(lane),
            _ => {}
        }
        if complete {
            self.finish(&mut out);
        }
        out
    }

    /// `lane` delivered its end of input.
    pub fn on_lane_ended(&mut self, lane: usize) -> AlignOutcome {
        let mut out = AlignOutcome::default();
        if let Some(e) = self.ended.get_mut(lane) {
            *e = true;
        }
        if let Some(p) = &mut self.pending {
            if let Some(s) = p.seen.get_mut(lane) {
                *s = true;
            }
            if p.seen.iter().all(|s| *s) {
                self.finish(&mut out);
            }
        }
        out
    }

    fn finish(&mut self, out: &mut AlignOutcome) {
        if let Some(p) = self.pending.take() {
            self.last_done = Some(p.barrier.id);
            out.unblock_all = true;
            out.completed = Some(p.barrier.id);
            if !p.forwarded {
                out.trigger = Some(p.barrier);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::message::CheckpointKind;

    fn b(id: u64, alignment: BarrierAlignment) -> CheckpointBarrier {
        CheckpointBarrier {
            id: CheckpointId(id),
            timestamp_ms: 0,
            kind: CheckpointKind::Checkpoint,
            alignment,
        }
    }

    #[test]
    fn aligned_blocks_each_lane_until_all_arrive() {
        let mut a = BarrierAligner::new(3);
        let one = b(1, BarrierAlignment::Aligned);
        assert_eq!(a.on_barrier(0, one).block, Some(0));
        assert_eq!(a.on_barrier(2, one).block, Some(2));
        let done = a.on_barrier(1, one);
        assert_eq!(done.block, None);
        assert!(done.unblock_all);
        assert_eq!(done.trigger, Some(one));
        // A late duplicate is ignored.
        assert_eq!(a.on_barrier(1, one), AlignOutcome::default());
    }

    #[test]
    fn newer_barrier_aborts_older_alignment() {
        let mut a = BarrierAligner::new(2);
        a.on_barrier(0, b(1, BarrierAlignment::Aligned));
        let out = a.on_barrier(1, b(2, BarrierAlignment::Aligned));
        assert_eq!(out.aborted, Some(CheckpointId(1)));
        assert!(out.unblock_all);
        assert_eq!(out.block, Some(1));
        assert_eq!(
            a.on_barrier(0, b(1, BarrierAlignment::Aligned)),
            AlignOutcome::default()
        );
        assert_eq!(
            a.on_barrier(0, b(2, BarrierAlignment::Aligned))
                .trigger
                .map(|b| b.id),
            Some(CheckpointId(2))
        );
    }

    #[test]
    fn ended_lane_counts_as_aligned() {
        let mut a = BarrierAligner::new(2);
        assert_eq!(
            a.on_barrier(0, b(1, BarrierAlignment::Aligned)).block,
            Some(0)
        );
        assert_eq!(
            a.on_lane_ended(1).trigger.map(|b| b.id),
            Some(CheckpointId(1))
        );
        assert!(
            a.on_barrier(0, b(2, BarrierAlignment::Aligned))
                .trigger
                .is_some()
        );
    }

    #[test]
    fn at_least_once_never_blocks_and_unaligned_forwards_first() {
        let mut a = BarrierAligner::new(2);
        let alo = b(1, BarrierAlignment::AtLeastOnce);
        assert_eq!(a.on_barrier(0, alo), AlignOutcome::default());
        assert_eq!(a.on_barrier(1, alo).trigger, Some(alo));
        let un = b(2, BarrierAlignment::Unaligned);
        let first = a.on_barrier(1, un);
        assert_eq!((first.trigger, first.block), (Some(un), None));
        let second = a.on_barrier(0, un);
        assert_eq!((second.trigger, second.block), (None, None));
        assert_eq!(a.pending(), None);
    }
}
