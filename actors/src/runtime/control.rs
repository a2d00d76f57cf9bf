//! The messages of the control plane that several runtime actors share: what subtasks and the
//! supervisor send the checkpoint coordinator actor ([`CoordinatorMsg`], through a subtask's
//! [`CoordinatorLink`]), and what the job handle and the coordinator send the job supervisor
//! ([`SupervisorMsg`]). Kept apart from both actors so that neither imports the other.

use crate::checkpoint::coordinator::TaskRef;
use crate::dataplane::lane::LaneSender;
use crate::dataplane::message::PriorityMessage;
use crate::types::CheckpointId;
use ractor::{ActorRef, RpcReplyPort};

/// A subtask's handle on the coordinator.
#[derive(Clone)]
pub(crate) struct CoordinatorLink {
    pub(crate) task: TaskRef,
    pub(crate) generation: u64,
    pub(crate) coordinator: ActorRef<CoordinatorMsg>,
}

/// Messages to the coordinator actor.
pub(crate) enum CoordinatorMsg {
    /// Time to look at the pure coordinator's timers.
    Tick,
    /// A subtask stored its state for checkpoint `id`.
    Ack {
        generation: u64,
        task: TaskRef,
        id: CheckpointId,
        state: crate::checkpoint::capture::EncodedState,
        unaligned: bool,
        alignment_ms: u64,
        /// The subtask's pause at the barrier (the synchronous part of the snapshot).
        sync_ms: u64,
        /// Encoding the frozen state off the subtask (the asynchronous part).
        async_ms: u64,
    },
    /// A subtask could not snapshot checkpoint `id`.
    Decline {
        generation: u64,
        task: TaskRef,
        id: CheckpointId,
        reason: String,
    },
    /// A subtask reached end of input; `state` is its final state.
    Finished {
        generation: u64,
        task: TaskRef,
        state: Vec<u8>,
    },
    /// These subtasks run (the whole job at start, a region after its restart), as
    /// `generation`: where their priority lanes are, which of them are sources.
    Deployed {
        generation: u64,
        priority: Vec<(TaskRef, LaneSender<PriorityMessage>)>,
        sources: Vec<TaskRef>,
    },
    /// The supervisor is cancelling these subtasks (a region) for a restart: pending
    /// checkpoints are abandoned and no new one starts until they are deployed again.
    Stopping { tasks: Vec<TaskRef> },
    /// Trigger a savepoint; the reply comes when it completed (or failed).
    Savepoint {
        /// A stop-with-savepoint: once it completes, no further checkpoint is triggered or
        /// completed (nothing is committed after the savepoint the job stops with).
        stop: bool,
        reply: RpcReplyPort<Result<CheckpointId, String>>,
    },
    /// The job supervisor, told once it runs.
    Attach(ActorRef<SupervisorMsg>),
    /// The job ended: answered once every message sent before it was handled (the final
    /// checkpoint published, an acknowledgement in flight written).
    Drain(RpcReplyPort<()>),
}

/// Requests to the job supervisor.
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Cancel the job.
    Cancel,
    /// The grace period after a cancel ran out: kill what still runs (of `region` at
    /// `generation`, or of the whole job).
    CancelTimeout {
        region: Option<usize>,
        generation: u64,
    },
    /// Log every subtask's metrics.
    LogMetrics,
    /// Too many checkpoints failed in a row.
    CheckpointFailure(String),
    /// The restart delay of a region passed: deploy it again.
    Redeploy(usize),
    /// Savepoint `id` of a stop-with-savepoint completed: stop the job.
    StopAfterSavepoint(CheckpointId),
    /// Trigger a savepoint (and cancel the job after it, if `stop`).
    Savepoint {
        stop: bool,
        reply: ractor::RpcReplyPort<Result<CheckpointId, String>>,
    },
}
