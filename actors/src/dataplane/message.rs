//! The messages subtasks exchange.
//!
//! * [`StreamMessage`] travels **in band**, on the bounded lane of one input channel, in order
//!   with the data: a data batch, a watermark, a watermark status, a checkpoint barrier, end of
//!   input.
//! * [`PriorityMessage`] travels on a subtask's **priority lane** and is taken ahead of any
//!   queued data: what must overtake data (cancellation now; unaligned barriers later).

use crate::dataplane::data::DataBatch;
use crate::dataplane::lane::LaneMessage;
use crate::types::{CheckpointId, Watermark};
use serde::{Deserialize, Serialize};

/// One in-band message on a data lane.
#[derive(Debug, Clone)]
pub enum StreamMessage {
    /// A batch of records.
    Data(DataBatch),
    /// Event time advanced on this channel.
    Watermark(Watermark),
    /// The channel became idle or active again (Flink's `WatermarkStatus`). An idle channel does
    /// not hold back the combined watermark.
    Status(WatermarkStatus),
    /// A checkpoint barrier: everything before it on this channel belongs to the checkpoint.
    Barrier(CheckpointBarrier),
    /// The upstream subtask finished; nothing more will arrive on this channel.
    EndOfInput,
}

impl LaneMessage for StreamMessage {
    #[inline]
    fn cost(&self) -> usize {
        match self {
            StreamMessage::Data(b) => b.len().max(1),
            _ => 1,
        }
    }
}

pub use crate::types::WatermarkStatus;

/// A checkpoint barrier, injected by sources and forwarded by every subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBarrier {
    /// Which checkpoint.
    pub id: CheckpointId,
    /// When the coordinator triggered it, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// How receivers treat it.
    pub alignment: BarrierAlignment,
}

/// What a barrier is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// A periodic checkpoint.
    Checkpoint,
    /// A savepoint triggered on demand (always aligned).
    Savepoint,
}

/// How a subtask with several input channels handles a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierAlignment {
    /// Exactly-once, aligned: stop polling each channel whose barrier arrived until every
    /// channel's has.
    Aligned,
    /// Exactly-once, unaligned: act on the first barrier; the data that it overtook becomes
    /// part of the snapshot.
    Unaligned,
    /// At-least-once: never block a channel, only count barriers.
    AtLeastOnce,
}

/// A message on a subtask's priority lane, taken ahead of queued data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorityMessage {
    /// Stop now: the job is cancelled or another subtask failed. The subtask drops its input
    /// and output without draining and ends.
    Cancel,
    /// To a source subtask, from the checkpoint coordinator: record the position and inject
    /// this barrier.
    Trigger(CheckpointBarrier),
    /// An unaligned barrier that overtook the queued data (from an upstream subtask); its
    /// in-band copy follows on each lane and ends the recording of that lane's in-flight data.
    Barrier(CheckpointBarrier),
    /// An aligned barrier is queued behind data on one of the lanes (from an upstream
    /// subtask, when an alignment timeout is set): if the checkpoint is not aligned within
    /// the timeout, the subtask acts on this announcement as on an unaligned barrier, and the
    /// queued data becomes in-flight data (Flink's aligned-checkpoint timeout, whose barriers
    /// overtake the output queues once it passes).
    Announce(CheckpointBarrier),
    /// From the coordinator: the checkpoint completed (two-phase-commit sinks commit).
    /// [`CheckpointId::FINAL`] is the job's final checkpoint after end of input.
    Complete(CheckpointId),
    /// From the coordinator: the checkpoint was aborted (a cancel marker): stop aligning it.
    Abort(CheckpointId),
}

impl LaneMessage for PriorityMessage {
    fn cost(&self) -> usize {
        1
    }
}
