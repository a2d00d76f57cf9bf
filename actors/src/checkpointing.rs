//! The checkpoint coordinator actor, what subtasks send it, and how a stored checkpoint is
//! handed back to the subtasks of a new deployment.
//!
//! The actor applies the pure [`CheckpointCoordinator`]'s decisions: it sends `Trigger` to the
//! source subtasks' priority lanes, writes each acknowledged subtask's state as a blob as it
//! arrives, commits the manifest once the last one is in, tells every subtask `Complete` (the
//! two-phase-commit sinks commit then), and sends `Abort` (the cancel marker) for a checkpoint
//! given up. Acknowledgements of an older generation (a subtask from before a restart) are
//! ignored.

use crate::checkpoint::{JobEvent, JobListener, OperatorState, RestoredState};
use crate::coordinator::{CheckpointCoordinator, CheckpointSettings, Decision, TaskRef};
use crate::error::BuildError;
use crate::keygroup::KeyGroupRange;
use crate::lane::{LaneReceiver, LaneSender, TrySendError};
use crate::message::{
    CheckpointBarrier, CheckpointKind, PriorityMessage, StreamMessage, WatermarkStatus,
};
use crate::operator_state::{Redistribution, redistribute};
use crate::snapshot::{BlobEntry, FORMAT_VERSION, Manifest, Snapshot, SnapshotStore};
use crate::supervisor::SupervisorMsg;
use crate::types::CheckpointId;
use crate::valve::WatermarkValve;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// One item of an input lane's in-flight data (unaligned checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum InFlight {
    /// A batch, serialized with its record type.
    Data(Vec<u8>),
    Watermark(i64),
    Status(WatermarkStatus),
}

/// The in-flight data of one input lane.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LaneRecord {
    pub(crate) lane: usize,
    pub(crate) items: Vec<InFlight>,
}

/// One operator's state inside a subtask's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OperatorEntry {
    /// The operator's stable key: its `uid`, or its name and graph position.
    pub(crate) key: String,
    pub(crate) max_parallelism: u32,
    pub(crate) state: OperatorState,
}

/// What one subtask stores for one checkpoint (one blob).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SubtaskState {
    /// The key of the chain's head operator, with `index` and `parallelism` identifying the
    /// subtask for the lane-level state below.
    pub(crate) head: String,
    pub(crate) index: usize,
    pub(crate) parallelism: u32,
    pub(crate) lanes: usize,
    pub(crate) operators: Vec<OperatorEntry>,
    /// The input watermarks per lane.
    pub(crate) valve: Option<WatermarkValve>,
    /// Unaligned: the data each lane delivered after the snapshot and before its barrier.
    pub(crate) in_flight: Vec<LaneRecord>,
    /// Unaligned: the output the barrier overtook, still waiting in this subtask's network
    /// writers (Flink's output channel state).
    pub(crate) out_flight: Vec<OutputRecord>,
}

/// A message as in-flight data; `None` for barriers and ends of input (not recorded).
pub(crate) fn in_flight_of(msg: &StreamMessage) -> Option<Result<InFlight, String>> {
    match msg {
        StreamMessage::Data(batch) => Some(batch.encode().map(InFlight::Data)),
        StreamMessage::Watermark(wm) => Some(Ok(InFlight::Watermark(wm.0))),
        StreamMessage::Status(s) => Some(Ok(InFlight::Status(*s))),
        StreamMessage::Barrier(_) | StreamMessage::EndOfInput => None,
    }
}

/// An unaligned checkpoint's in-flight data of one lane, read from its queue without taking
/// anything: the messages before checkpoint `id`'s barrier (or the end of input), skipping the
/// first `skip` that an earlier scan captured already. Also says whether the barrier (or the
/// end) was found, which completes the lane.
///
/// # Errors
///
/// If a batch cannot be encoded.
pub(crate) fn capture_queued(
    rx: &LaneReceiver<StreamMessage>,
    id: CheckpointId,
    mut skip: usize,
) -> Result<(Vec<InFlight>, bool), String> {
    let mut items = Vec::new();
    let mut done = false;
    let mut failed = None;
    rx.for_each_queued(|m| {
        if done || failed.is_some() {
            return;
        }
        match m {
            StreamMessage::Barrier(b) if b.id >= id => done = true,
            StreamMessage::EndOfInput => done = true,
            other => match in_flight_of(other) {
                Some(_) if skip > 0 => skip -= 1,
                Some(Ok(item)) => items.push(item),
                Some(Err(e)) => failed = Some(e),
                None => {}
            },
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok((items, done)),
    }
}

/// The lane-level state a restored subtask starts from.
#[derive(Debug, Default)]
pub(crate) struct LaneRestore {
    /// Input watermarks per lane.
    pub(crate) valve: Option<WatermarkValve>,
    /// In-flight input to process before anything new.
    pub(crate) input: Vec<LaneRecord>,
    /// Overtaken output to send before anything new.
    pub(crate) output: Vec<OutputRecord>,
}

/// Output of one network tail's channel that an unaligned barrier overtook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OutputRecord {
    /// Which network tail of the subtask (in chain order).
    pub(crate) tail: usize,
    /// The tail's number of channels when the snapshot was taken.
    pub(crate) channels: usize,
    pub(crate) channel: usize,
    pub(crate) items: Vec<InFlight>,
}

/// Facts about a checkpoint kept in its manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointMeta {
    pub(crate) job: String,
    pub(crate) generation: u64,
    pub(crate) is_final: bool,
    pub(crate) unaligned: bool,
}

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
        state: Vec<u8>,
        unaligned: bool,
        alignment_ms: u64,
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
    Savepoint(RpcReplyPort<Result<CheckpointId, String>>),
    /// The job supervisor, told once it runs.
    Attach(ActorRef<SupervisorMsg>),
}

struct Collected {
    started: Instant,
    blobs: Vec<BlobEntry>,
    bytes: u64,
    unaligned: bool,
    alignment_ms: u64,
}

pub(crate) struct CoordinatorArgs {
    pub(crate) job: Arc<str>,
    pub(crate) settings: CheckpointSettings,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) tasks: Vec<TaskRef>,
    pub(crate) restored: Option<(CheckpointId, CheckpointKind)>,
    /// The newest checkpoint id already in the store (ids continue after it).
    pub(crate) newest_in_store: Option<CheckpointId>,
    pub(crate) listener: Option<JobListener>,
}

pub(crate) struct CoordinatorState {
    job: Arc<str>,
    pure: CheckpointCoordinator,
    store: Arc<dyn SnapshotStore>,
    /// The generation each subtask runs as; messages of another generation are stale.
    generations: HashMap<TaskRef, u64>,
    priority: HashMap<TaskRef, LaneSender<PriorityMessage>>,
    sources: Vec<TaskRef>,
    collected: HashMap<CheckpointId, Collected>,
    finished: BTreeMap<TaskRef, Vec<u8>>,
    start: Instant,
    listener: Option<JobListener>,
    supervisor: Option<ActorRef<SupervisorMsg>>,
    savepoint_waiters: HashMap<CheckpointId, RpcReplyPort<Result<CheckpointId, String>>>,
    wake: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<CoordinatorMsg>>>>,
    /// Subtasks not running (before the first deployment, or being restarted): while any
    /// is, no checkpoint can complete, so none is triggered.
    halted: HashSet<TaskRef>,
}

pub(crate) struct CoordinatorActor;

fn blob_name(task: TaskRef) -> String {
    format!("subtask-{}-{}", task.0, task.1)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl CoordinatorState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True if `generation` is the one `task` currently runs as.
    fn current(&self, task: TaskRef, generation: u64) -> bool {
        self.generations.get(&task) == Some(&generation)
    }

    fn emit(&self, event: JobEvent) {
        if let Some(l) = &self.listener {
            l(&event);
        }
    }

    fn broadcast(&self, msg: PriorityMessage) {
        for (task, p) in &self.priority {
            match p.try_send(msg.clone()) {
                Ok(()) => {}
                // The subtask has ended (finished, or cancelled for a restart).
                Err(TrySendError::Closed(_)) => {
                    debug!(job = %self.job, ?task, ?msg, "priority lane closed; message not sent");
                }
                Err(TrySendError::Full(_)) => {
                    warn!(job = %self.job, ?task, ?msg, "priority lane full; message dropped");
                }
            }
        }
    }

    fn apply(&mut self, decisions: Vec<Decision>) {
        let mut queue: std::collections::VecDeque<Decision> = decisions.into();
        while let Some(d) = queue.pop_front() {
            match d {
                Decision::Trigger {
                    id,
                    kind,
                    alignment,
                } => {
                    let barrier = CheckpointBarrier {
                        id,
                        timestamp_ms: wall_ms(),
                        kind,
                        alignment,
                    };
                    self.collected.insert(
                        id,
                        Collected {
                            started: Instant::now(),
                            blobs: Vec::new(),
                            bytes: 0,
                            unaligned: false,
                            alignment_ms: 0,
                        },
                    );
                    tracing::debug!(job = %self.job, checkpoint = %id, ?kind, ?alignment, "triggering");
                    for task in self.sources.clone() {
                        if self.finished.contains_key(&task) {
                            continue; // its final state stands in for it
                        }
                        let sent = match self.priority.get(&task) {
                            Some(p) => p.try_send(PriorityMessage::Trigger(barrier)),
                            None => Err(TrySendError::Closed(PriorityMessage::Trigger(barrier))),
                        };
                        match sent {
                            Ok(()) => {}
                            // Finishing (its final state is on its way and will stand in) or
                            // failed (the restart abandons the checkpoint).
                            Err(TrySendError::Closed(_)) => {
                                debug!(job = %self.job, checkpoint = %id, ?task, "source ended; not triggered");
                            }
                            Err(TrySendError::Full(_)) => {
                                queue.extend(self.pure.decline(
                                    id,
                                    task,
                                    "the source's priority lane is full",
                                ));
                            }
                        }
                    }
                }
                Decision::Complete { id, kind } => self.complete(id, kind),
                Decision::Abort { id, reason } => {
                    let reason = format!("{reason:?}");
                    info!(job = %self.job, checkpoint = %id, %reason, "checkpoint aborted");
                    self.collected.remove(&id);
                    if let Err(e) = self.store.remove(id) {
                        warn!(job = %self.job, checkpoint = %id, error = %e, "cannot remove the blobs of an aborted checkpoint");
                    }
                    self.broadcast(PriorityMessage::Abort(id));
                    if let Some(w) = self.savepoint_waiters.remove(&id) {
                        let _ = w.send(Err(format!("savepoint {id} aborted: {reason}")));
                    }
                    self.emit(JobEvent::CheckpointAborted { id, reason });
                }
                Decision::Discard(ids) => {
                    for id in ids {
                        if let Err(e) = self.store.remove(id) {
                            warn!(job = %self.job, checkpoint = %id, error = %e, "cannot remove an old checkpoint");
                        }
                    }
                }
                Decision::FailJob(why) => {
                    error!(job = %self.job, "{why}");
                    if let Some(s) = &self.supervisor {
                        let _ = s.cast(SupervisorMsg::CheckpointFailure(why));
                    }
                }
            }
        }
    }

    fn commit(
        &mut self,
        id: CheckpointId,
        kind: CheckpointKind,
        blobs: Vec<BlobEntry>,
        meta: CheckpointMeta,
    ) -> Result<(), String> {
        let manifest = Manifest {
            version: FORMAT_VERSION,
            id,
            kind,
            triggered_ms: wall_ms(),
            blobs,
            metadata: postcard::to_allocvec(&meta).map_err(|e| e.to_string())?,
        };
        self.store.commit(&manifest).map_err(|e| e.to_string())
    }

    /// Commits the manifest of checkpoint `id` over the blobs in `c`, then tells every
    /// subtask and the listener. The final checkpoint's completion is announced as
    /// [`CheckpointId::FINAL`], the id the sinks tagged their last transactions with.
    fn publish(
        &mut self,
        id: CheckpointId,
        kind: CheckpointKind,
        c: Collected,
        is_final: bool,
    ) -> Result<(), String> {
        let meta = CheckpointMeta {
            job: self.job.to_string(),
            generation: self.generations.values().copied().max().unwrap_or(0),
            is_final,
            unaligned: c.unaligned,
        };
        self.commit(id, kind, c.blobs, meta)?;
        let duration_ms = u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(job = %self.job, checkpoint = %id, ?kind, is_final, duration_ms, bytes = c.bytes, unaligned = c.unaligned, "checkpoint completed");
        self.broadcast(PriorityMessage::Complete(if is_final {
            CheckpointId::FINAL
        } else {
            id
        }));
        self.emit(JobEvent::CheckpointCompleted {
            id,
            kind,
            unaligned: c.unaligned,
            duration_ms,
            alignment_ms: c.alignment_ms,
            bytes: c.bytes,
            is_final,
        });
        Ok(())
    }

    fn complete(&mut self, id: CheckpointId, kind: CheckpointKind) {
        let Some(mut c) = self.collected.remove(&id) else {
            return;
        };
        // Subtasks that finished without acknowledging: their final state stands in.
        let mut finals = Vec::new();
        let mut result = Ok(());
        for (task, bytes) in &self.finished {
            let name = blob_name(*task);
            if c.blobs.iter().any(|b| b.name == name) {
                continue;
            }
            match self.store.put_blob(id, &name, bytes) {
                Ok(e) => {
                    c.bytes += e.len;
                    c.blobs.push(e);
                    finals.push(*task);
                }
                Err(e) => {
                    result = Err(format!("cannot store the final state of {task:?}: {e}"));
                    break;
                }
            }
        }
        let result = result.and_then(|()| self.publish(id, kind, c, false));
        match &result {
            Err(e) => {
                error!(job = %self.job, checkpoint = %id, error = %e, "cannot publish the checkpoint");
            }
            Ok(()) => {
                // Their last transactions are in a completed checkpoint now: let the finished
                // subtasks commit them and end (Flink's final checkpoint of a finished task).
                for task in finals {
                    if let Some(p) = self.priority.get(&task) {
                        let _ = p.try_send(PriorityMessage::Complete(CheckpointId::FINAL));
                    }
                }
            }
        }
        if let Some(w) = self.savepoint_waiters.remove(&id) {
            let _ = w.send(result.map(|()| id));
        }
    }

    fn final_checkpoint(&mut self) {
        let now = self.now_ms();
        let id = self.pure.final_checkpoint(now);
        let mut c = Collected {
            started: Instant::now(),
            blobs: Vec::new(),
            bytes: 0,
            unaligned: false,
            alignment_ms: 0,
        };
        for (task, state) in std::mem::take(&mut self.finished) {
            match self.store.put_blob(id, &blob_name(task), &state) {
                Ok(e) => {
                    c.bytes += e.len;
                    c.blobs.push(e);
                }
                Err(e) => {
                    error!(job = %self.job, error = %e, "cannot store the final checkpoint");
                    return;
                }
            }
        }
        if let Err(e) = self.publish(id, CheckpointKind::Checkpoint, c, true) {
            error!(job = %self.job, checkpoint = %id, error = %e, "cannot publish the final checkpoint");
            return;
        }
        let keep = self.pure.settings().retained.max(1);
        if let Ok(ids) = self.store.list() {
            for old in ids.into_iter().skip(keep) {
                let _ = self.store.remove(old);
            }
        }
    }

    /// Tells the pure coordinator whether a barrier can still be injected somewhere.
    fn update_sources_running(&mut self) {
        let running = self.sources.iter().any(|s| !self.finished.contains_key(s));
        self.pure.set_sources_running(running);
    }

    fn reschedule(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if let Some(w) = self.wake.take() {
            w.abort();
        }
        if !self.halted.is_empty() || self.priority.is_empty() {
            return;
        }
        if let Some(at) = self.pure.next_wakeup() {
            let delay = std::time::Duration::from_millis(at.saturating_sub(self.now_ms()));
            self.wake = Some(ractor::time::send_after(delay, myself.get_cell(), || {
                CoordinatorMsg::Tick
            }));
        }
    }
}

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CoordinatorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let halted = args.tasks.iter().copied().collect();
        let mut pure = CheckpointCoordinator::new(args.settings, args.tasks, 0);
        if let Some((id, kind)) = args.restored {
            pure = pure.continue_after(id, kind);
        }
        if let Some(id) = args.newest_in_store {
            pure = pure.ids_after(id);
        }
        Ok(CoordinatorState {
            job: args.job,
            pure,
            store: args.store,
            generations: HashMap::new(),
            priority: HashMap::new(),
            sources: Vec::new(),
            collected: HashMap::new(),
            finished: BTreeMap::new(),
            start: Instant::now(),
            listener: args.listener,
            supervisor: None,
            savepoint_waiters: HashMap::new(),
            wake: None,
            halted,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(w) = state.wake.take() {
            w.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: CoordinatorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorMsg::Tick => {
                if state.halted.is_empty() {
                    let now = state.now_ms();
                    let d = state.pure.tick(now);
                    state.apply(d);
                }
            }
            CoordinatorMsg::Ack {
                generation,
                task,
                id,
                state: bytes,
                unaligned,
                alignment_ms,
            } => {
                if !state.current(task, generation) || !state.halted.is_empty() {
                    tracing::debug!(checkpoint = %id, ?task, generation, "ignoring a stale acknowledgement");
                } else if let Some(c) = state.collected.get_mut(&id) {
                    match state.store.put_blob(id, &blob_name(task), &bytes) {
                        Ok(entry) => {
                            c.bytes += entry.len;
                            c.blobs.push(entry);
                            c.unaligned |= unaligned;
                            c.alignment_ms = c.alignment_ms.max(alignment_ms);
                            let now = state.now_ms();
                            let d = state.pure.acknowledge(id, task, now);
                            state.apply(d);
                        }
                        Err(e) => {
                            let d = state.pure.decline(id, task, &e.to_string());
                            state.apply(d);
                        }
                    }
                }
            }
            CoordinatorMsg::Decline {
                generation,
                task,
                id,
                reason,
            } => {
                if state.current(task, generation) && state.halted.is_empty() {
                    warn!(job = %state.job, checkpoint = %id, ?task, %reason, "checkpoint declined");
                    let d = state.pure.decline(id, task, &reason);
                    state.apply(d);
                }
            }
            CoordinatorMsg::Finished {
                generation,
                task,
                state: bytes,
            } => {
                // A finished subtask's final state counts even while another region
                // restarts. Checkpoints go on without it (FLIP-147).
                if state.current(task, generation) && !state.halted.contains(&task) {
                    state.finished.insert(task, bytes);
                    state.update_sources_running();
                    let now = state.now_ms();
                    let d = state.pure.task_finished(task, now);
                    state.apply(d);
                    if state.pure.all_finished() {
                        state.final_checkpoint();
                    }
                }
            }
            CoordinatorMsg::Deployed {
                generation,
                priority,
                sources,
            } => {
                let deployed: HashSet<TaskRef> = priority.iter().map(|(t, _)| *t).collect();
                for (task, lane) in priority {
                    state.generations.insert(task, generation);
                    state.priority.insert(task, lane);
                    state.halted.remove(&task);
                    state.finished.remove(&task);
                }
                state.sources.retain(|t| !deployed.contains(t));
                state.sources.extend(sources);
                state.pure.tasks_running(deployed);
                state.update_sources_running();
                let now = state.now_ms();
                let d = state.pure.reset_pending(now);
                state.apply(d);
            }
            CoordinatorMsg::Attach(s) => state.supervisor = Some(s),
            CoordinatorMsg::Stopping { tasks } => {
                for task in tasks {
                    state.priority.remove(&task);
                    state.halted.insert(task);
                }
                let now = state.now_ms();
                let d = state.pure.reset_pending(now);
                state.apply(d);
            }
            CoordinatorMsg::Savepoint(reply) => {
                let now = state.now_ms();
                match state.pure.trigger_savepoint(now) {
                    Some(d @ Decision::Trigger { id, .. }) if state.halted.is_empty() => {
                        state.savepoint_waiters.insert(id, reply);
                        state.apply(vec![d]);
                    }
                    _ => {
                        let _ = reply.send(Err(
                            "cannot trigger a savepoint now (another checkpoint is pending, or \
                             the job is restarting or finishing); try again"
                                .into(),
                        ));
                    }
                }
            }
        }
        state.reschedule(&myself);
        Ok(())
    }
}

// ----- restore ------------------------------------------------------------------------------

struct OpRestore {
    max_parallelism: u32,
    old_parallelism: usize,
    /// State of each old instance, by old index.
    instances: BTreeMap<usize, OperatorState>,
}

struct LaneState {
    parallelism: u32,
    lanes: usize,
    valve: Option<WatermarkValve>,
    in_flight: Vec<LaneRecord>,
    out_flight: Vec<OutputRecord>,
}

/// A stored checkpoint, decoded and indexed for the subtasks of a new deployment.
pub(crate) struct RestorePlan {
    pub(crate) checkpoint: CheckpointId,
    ops: HashMap<String, OpRestore>,
    subtasks: HashMap<(String, usize), LaneState>,
    placed: std::sync::Mutex<HashSet<String>>,
}

fn restore_error(id: CheckpointId, message: String) -> BuildError {
    BuildError::InvalidConfig(format!("cannot restore checkpoint {id}: {message}"))
}

impl RestorePlan {
    /// Decodes every subtask blob of `snapshot`.
    pub(crate) fn new(snapshot: &Snapshot) -> Result<Self, BuildError> {
        let id = snapshot.manifest.id;
        let mut ops: HashMap<String, OpRestore> = HashMap::new();
        let mut subtasks = HashMap::new();
        for (name, bytes) in &snapshot.blobs {
            let st: SubtaskState = postcard::from_bytes(bytes)
                .map_err(|e| restore_error(id, format!("blob {name:?} is unreadable: {e}")))?;
            for op in st.operators {
                let entry = ops.entry(op.key.clone()).or_insert(OpRestore {
                    max_parallelism: op.max_parallelism,
                    old_parallelism: st.parallelism as usize,
                    instances: BTreeMap::new(),
                });
                entry.instances.insert(st.index, op.state);
            }
            subtasks.insert(
                (st.head, st.index),
                LaneState {
                    parallelism: st.parallelism,
                    lanes: st.lanes,
                    valve: st.valve,
                    in_flight: st.in_flight,
                    out_flight: st.out_flight,
                },
            );
        }
        Ok(RestorePlan {
            checkpoint: id,
            ops,
            subtasks,
            placed: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// The state of operator `key`'s instance `index` of `parallelism`, owning `range` of
    /// `max_parallelism` key groups; `None` if the checkpoint has no state for the operator.
    pub(crate) fn for_operator(
        &self,
        key: &str,
        index: usize,
        parallelism: u32,
        max_parallelism: u32,
        range: KeyGroupRange,
    ) -> Result<Option<RestoredState>, BuildError> {
        let Some(op) = self.ops.get(key) else {
            return Ok(None);
        };
        if let Ok(mut placed) = self.placed.lock() {
            placed.insert(key.to_string());
        }
        let has_keyed = op.instances.values().any(|s| !s.keyed.is_empty());
        if has_keyed && op.max_parallelism != max_parallelism {
            return Err(restore_error(
                self.checkpoint,
                format!(
                    "operator {key:?} has keyed state for max parallelism {}, the job now has {max_parallelism}; the max parallelism cannot change",
                    op.max_parallelism
                ),
            ));
        }
        let mut state = OperatorState::default();
        for s in op.instances.values() {
            for (kg, b) in &s.keyed {
                if range.contains(*kg) {
                    state.keyed.insert(*kg, b.clone());
                }
            }
            state.union.extend(s.union.iter().cloned());
        }
        let old: Vec<Vec<Vec<u8>>> = op.instances.values().map(|s| s.items.clone()).collect();
        let mut split = redistribute(Redistribution::EvenSplit, old, parallelism as usize);
        if index < split.len() {
            state.items = std::mem::take(&mut split[index]);
        }
        let same_index = (op.old_parallelism == parallelism as usize).then_some(index);
        Ok(Some(RestoredState { state, same_index }))
    }

    /// The lane-level state (input watermarks, in-flight data) of subtask `index` of the chain
    /// headed by `head`, if the checkpoint was taken at the same parallelism and lanes.
    pub(crate) fn for_lanes(
        &self,
        head: &str,
        index: usize,
        parallelism: u32,
        lanes: usize,
    ) -> Result<LaneRestore, BuildError> {
        let Some(s) = self.subtasks.get(&(head.to_string(), index)) else {
            return Ok(LaneRestore::default());
        };
        if s.parallelism == parallelism && s.lanes == lanes {
            return Ok(LaneRestore {
                valve: s.valve.clone(),
                input: s.in_flight.clone(),
                output: s.out_flight.clone(),
            });
        }
        let in_flight = s.in_flight.iter().any(|l| !l.items.is_empty())
            || s.out_flight.iter().any(|l| !l.items.is_empty());
        if in_flight {
            return Err(restore_error(
                self.checkpoint,
                format!(
                    "it is an unaligned checkpoint with in-flight data at {head:?}, which was at \
                     parallelism {} and cannot be rescaled; restore it at the same parallelism, \
                     or take a savepoint (always aligned) and rescale from that",
                    s.parallelism
                ),
            ));
        }
        Ok(LaneRestore::default())
    }

    /// Refuses a restore that leaves state of an operator unplaced, unless allowed.
    pub(crate) fn check_all_placed(&self, allow: bool) -> Result<(), BuildError> {
        let placed = self.placed.lock().map(|p| p.clone()).unwrap_or_default();
        let mut missing: Vec<&String> = self
            .ops
            .iter()
            .filter(|(k, op)| !placed.contains(*k) && op.instances.values().any(|s| !s.is_empty()))
            .map(|(k, _)| k)
            .collect();
        missing.sort();
        if missing.is_empty() {
            return Ok(());
        }
        if allow {
            warn!(checkpoint = %self.checkpoint, ?missing, "state of operators the job no longer has is skipped (allow non-restored state)");
            return Ok(());
        }
        Err(restore_error(
            self.checkpoint,
            format!(
                "it holds state of operators this job does not have: {missing:?}. Give operators \
                 stable ids with uid(...), or allow non-restored state to skip it"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Batch, DataBatch};
    use crate::lane::lane;
    use crate::message::BarrierAlignment;
    use crate::types::Watermark;

    fn barrier(id: u64) -> StreamMessage {
        StreamMessage::Barrier(CheckpointBarrier {
            id: CheckpointId(id),
            timestamp_ms: 0,
            kind: CheckpointKind::Checkpoint,
            alignment: BarrierAlignment::Unaligned,
        })
    }

    fn data(v: &[u64]) -> StreamMessage {
        StreamMessage::Data(DataBatch::new(Batch::from_values(v.to_vec())))
    }

    fn decoded(items: &[InFlight]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                InFlight::Data(bytes) => format!(
                    "{:?}",
                    DataBatch::decode::<u64>(bytes)
                        .unwrap()
                        .downcast::<u64>()
                        .unwrap()
                        .into_values()
                ),
                InFlight::Watermark(w) => format!("wm {w}"),
                InFlight::Status(s) => format!("{s:?}"),
            })
            .collect()
    }

    /// The receiver's half of an unaligned checkpoint: the in-flight data of a lane is what
    /// is queued before the checkpoint's barrier, read without taking it; a later scan skips
    /// what an earlier one captured; a lane whose barrier is not queued yet stays open.
    #[test]
    fn in_flight_data_is_captured_from_the_queue_up_to_the_barrier() {
        let (tx, rx) = lane::<StreamMessage>(100, std::sync::Arc::new(tokio::sync::Notify::new()));
        tx.try_send(data(&[1, 2])).unwrap();
        tx.try_send(StreamMessage::Watermark(Watermark(5))).unwrap();
        let (items, done) = capture_queued(&rx, CheckpointId(7), 0).unwrap();
        assert_eq!(decoded(&items), ["[1, 2]", "wm 5"]);
        assert!(!done, "the barrier is not queued yet");
        tx.try_send(data(&[3])).unwrap();
        tx.try_send(barrier(7)).unwrap();
        tx.try_send(data(&[4])).unwrap();
        // Two messages were captured before: only the rest up to the barrier is new.
        let (items, done) = capture_queued(&rx, CheckpointId(7), 2).unwrap();
        assert_eq!(decoded(&items), ["[3]"]);
        assert!(done);
        // Nothing was taken from the lane.
        assert!(matches!(rx.try_recv(), Ok(StreamMessage::Data(b)) if b.len() == 2));
        // An older checkpoint's barrier does not end the capture; the end of input does.
        let (tx, rx) = lane::<StreamMessage>(100, std::sync::Arc::new(tokio::sync::Notify::new()));
        tx.try_send(barrier(6)).unwrap();
        tx.try_send(data(&[8])).unwrap();
        tx.try_send(StreamMessage::EndOfInput).unwrap();
        let (items, done) = capture_queued(&rx, CheckpointId(7), 0).unwrap();
        assert_eq!(decoded(&items), ["[8]"]);
        assert!(done);
    }
}
