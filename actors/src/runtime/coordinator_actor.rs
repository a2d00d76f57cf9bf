//! The checkpoint coordinator actor, what subtasks send it, and how a stored checkpoint is
//! handed back to the subtasks of a new deployment.
//!
//! The actor applies the pure [`CheckpointCoordinator`]'s decisions: it sends `Trigger` to the
//! source subtasks' priority lanes, writes each acknowledged subtask's state as a blob as it
//! arrives, commits the manifest once the last one is in, tells every subtask `Complete` (the
//! two-phase-commit sinks commit then), and sends `Abort` (the cancel marker) for a checkpoint
//! given up. Acknowledgements of an older generation (a subtask from before a restart) are
//! ignored.

use crate::checkpoint::capture::CheckpointMeta;
use crate::checkpoint::coordinator::{
    CheckpointCoordinator, CheckpointSettings, Decision, SavepointRequest, TaskRef,
};
use crate::checkpoint::snapshot::{BlobEntry, FORMAT_VERSION, Manifest, SnapshotStore};
use crate::checkpoint::types::{JobEvent, JobListener};
use crate::dataplane::lane::{LaneSender, TrySendError};
use crate::dataplane::message::{CheckpointBarrier, CheckpointKind, PriorityMessage};
use crate::runtime::control::{CoordinatorMsg, SupervisorMsg};
use crate::runtime::observer::{JobObserver, SubtaskCheckpointStats};
use crate::types::CheckpointId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

struct Collected {
    started: Instant,
    blobs: Vec<BlobEntry>,
    /// Bytes written for this checkpoint.
    bytes: u64,
    /// Bytes listed from earlier checkpoints (shared blobs).
    shared_bytes: u64,
    unaligned: bool,
    alignment_ms: u64,
    sync_ms: u64,
    async_ms: u64,
}

impl Collected {
    fn new() -> Self {
        Collected {
            started: Instant::now(),
            blobs: Vec::new(),
            bytes: 0,
            shared_bytes: 0,
            unaligned: false,
            alignment_ms: 0,
            sync_ms: 0,
            async_ms: 0,
        }
    }
}

/// Runs store I/O on a blocking thread, so that writing and fsyncing a large checkpoint never
/// holds a runtime worker the subtasks need. The coordinator waits for it: its decisions stay
/// sequential.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("the checkpoint store's thread failed: {e}")))
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
    pub(crate) observer: Arc<JobObserver>,
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
    finished: BTreeMap<TaskRef, Arc<Vec<u8>>>,
    /// Where a finished subtask's final state was stored, once a completed checkpoint holds
    /// it: later checkpoints list that blob instead of writing it again.
    finished_blobs: HashMap<TaskRef, BlobEntry>,
    start: Instant,
    listener: Option<JobListener>,
    observer: Arc<JobObserver>,
    supervisor: Option<ActorRef<SupervisorMsg>>,
    /// Who waits for each pending savepoint, and whether the job stops with it.
    savepoint_waiters: HashMap<CheckpointId, SavepointWaiter>,
    /// Savepoint requests the pure coordinator queued, oldest first; each gets the id of the
    /// next savepoint it triggers (or its refusal).
    queued_savepoints: std::collections::VecDeque<SavepointWaiter>,
    /// A stop-with-savepoint completed: nothing more is triggered or completed.
    stopped: bool,
    wake: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<CoordinatorMsg>>>>,
    /// Subtasks not running (before the first deployment, or being restarted): while any
    /// is, no checkpoint can complete, so none is triggered.
    halted: HashSet<TaskRef>,
}

pub(crate) struct CoordinatorActor;

type SavepointWaiter = (RpcReplyPort<Result<CheckpointId, String>>, bool);

/// Removes the stored checkpoints beyond the newest `keep`. Savepoints are never removed
/// (they belong to the user, as in Flink) and do not count; nor are checkpoints whose
/// manifest cannot be read (a restore may still want to report them).
fn discard_beyond(store: &dyn SnapshotStore, keep: usize) {
    let Ok(ids) = store.list() else {
        return;
    };
    let mut kept = 0;
    for id in ids {
        match store.manifest(id) {
            Ok(m) if m.kind == CheckpointKind::Checkpoint => {
                if kept < keep {
                    kept += 1;
                } else if let Err(e) = store.remove(id) {
                    warn!(checkpoint = %id, error = %e, "cannot remove an old checkpoint");
                }
            }
            _ => {}
        }
    }
}

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
        self.observer.event(&event);
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

    async fn apply(&mut self, decisions: Vec<Decision>) {
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
                    self.collected.insert(id, Collected::new());
                    if kind == CheckpointKind::Savepoint
                        && !self.savepoint_waiters.contains_key(&id)
                        && let Some(w) = self.queued_savepoints.pop_front()
                    {
                        // A queued request, started now that the pending checkpoint ended.
                        self.savepoint_waiters.insert(id, w);
                    }
                    tracing::debug!(job = %self.job, checkpoint = %id, ?kind, ?alignment, "triggering");
                    let acks = self.generations.len().saturating_sub(self.finished.len());
                    self.observer.checkpoint_triggered(id, kind, acks);
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
                Decision::Complete { id, kind } => {
                    let next = self.complete(id, kind).await;
                    queue.extend(next);
                }
                Decision::Abort { id, reason } => {
                    let reason = format!("{reason:?}");
                    info!(job = %self.job, checkpoint = %id, %reason, "checkpoint aborted");
                    self.collected.remove(&id);
                    let store = self.store.clone();
                    if let Err(e) =
                        blocking(move || store.remove(id).map_err(|e| e.to_string())).await
                    {
                        warn!(job = %self.job, checkpoint = %id, error = %e, "cannot remove the blobs of an aborted checkpoint");
                    }
                    self.broadcast(PriorityMessage::Abort(id));
                    if let Some((w, _)) = self.savepoint_waiters.remove(&id) {
                        let _ = w.send(Err(format!("savepoint {id} aborted: {reason}")));
                    }
                    self.emit(JobEvent::CheckpointAborted { id, reason });
                }
                Decision::Discard(ids) => {
                    for id in ids {
                        let store = self.store.clone();
                        if let Err(e) =
                            blocking(move || store.remove(id).map_err(|e| e.to_string())).await
                        {
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
                Decision::RefuseSavepoint(why) => {
                    if let Some((w, _)) = self.queued_savepoints.pop_front() {
                        let _ = w.send(Err(format!("cannot take a savepoint: {why}")));
                    }
                }
            }
        }
    }

    async fn commit(
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
        let store = self.store.clone();
        blocking(move || store.commit(&manifest).map_err(|e| e.to_string())).await
    }

    /// Commits the manifest of checkpoint `id` over the blobs in `c`, then tells every
    /// subtask and the listener. The final checkpoint's completion is announced as
    /// [`CheckpointId::FINAL`], the id the sinks tagged their last transactions with.
    async fn publish(
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
        self.commit(id, kind, c.blobs, meta).await?;
        let duration_ms = u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(job = %self.job, checkpoint = %id, ?kind, is_final, duration_ms, sync_ms = c.sync_ms, async_ms = c.async_ms, bytes = c.bytes, shared_bytes = c.shared_bytes, unaligned = c.unaligned, "checkpoint completed");
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
            sync_ms: c.sync_ms,
            async_ms: c.async_ms,
            bytes: c.bytes,
            shared_bytes: c.shared_bytes,
            is_final,
        });
        Ok(())
    }

    /// Adds the final state of every finished subtask that did not acknowledge `id` to `c`:
    /// listed from the checkpoint that first stored it when there is one (a savepoint gets its
    /// own copy: it must stand alone), written otherwise. Returns the subtasks added and the
    /// entries written for them that later checkpoints may list.
    async fn add_finished(
        &mut self,
        id: CheckpointId,
        kind: CheckpointKind,
        c: &mut Collected,
    ) -> Result<(Vec<TaskRef>, Vec<(TaskRef, BlobEntry)>), String> {
        let mut added = Vec::new();
        let mut written = Vec::new();
        let shareable = kind != CheckpointKind::Savepoint;
        for (task, bytes) in &self.finished {
            let name = blob_name(*task);
            if c.blobs.iter().any(|b| b.name == name) {
                continue;
            }
            added.push(*task);
            if shareable && let Some(e) = self.finished_blobs.get(task) {
                c.shared_bytes += e.len;
                c.blobs.push(e.clone());
                continue;
            }
            let (store, bytes) = (self.store.clone(), bytes.clone());
            let task = *task;
            let e = blocking(move || {
                store
                    .put_blob(id, &name, &bytes)
                    .map_err(|e| format!("cannot store the final state of {task:?}: {e}"))
            })
            .await?;
            c.bytes += e.len;
            if shareable {
                written.push((task, e.clone()));
            }
            c.blobs.push(e);
        }
        Ok((added, written))
    }

    /// Publishes checkpoint `id` (all acknowledged) and tells the pure coordinator how it
    /// went; returns its decisions (discards after a success; the abort, and the job's
    /// failure beyond the tolerated number, after a failure).
    async fn complete(&mut self, id: CheckpointId, kind: CheckpointKind) -> Vec<Decision> {
        let Some(mut c) = self.collected.remove(&id) else {
            return Vec::new();
        };
        // Subtasks that finished without acknowledging: their final state stands in.
        let (result, finals) = match self.add_finished(id, kind, &mut c).await {
            Ok((finals, written)) => match self.publish(id, kind, c, false).await {
                Ok(()) => {
                    self.finished_blobs.extend(written);
                    (Ok(()), finals)
                }
                Err(e) => (Err(e), Vec::new()),
            },
            Err(e) => (Err(e), Vec::new()),
        };
        let next = match &result {
            Err(e) => {
                error!(job = %self.job, checkpoint = %id, error = %e, "cannot publish the checkpoint");
                self.pure.publish_failed(id, kind, e)
            }
            Ok(()) => {
                // Their last transactions are in a completed checkpoint now: let the finished
                // subtasks commit them and end (Flink's final checkpoint of a finished task).
                for task in finals {
                    if let Some(p) = self.priority.get(&task) {
                        let _ = p.try_send(PriorityMessage::Complete(CheckpointId::FINAL));
                    }
                }
                let now = self.now_ms();
                self.pure.published(id, kind, now)
            }
        };
        if let Some((w, stop)) = self.savepoint_waiters.remove(&id) {
            if stop && result.is_ok() {
                // The job stops with this savepoint: nothing after it may be committed.
                info!(job = %self.job, savepoint = %id, "stop-with-savepoint completed: no further checkpoints");
                self.stopped = true;
                for (w, _) in self.queued_savepoints.drain(..) {
                    let _ = w.send(Err(format!(
                        "cannot take a savepoint: the job stopped with savepoint {id}"
                    )));
                }
            }
            let _ = w.send(result.map(|()| id));
        }
        next
    }

    async fn final_checkpoint(&mut self) {
        let now = self.now_ms();
        let id = self.pure.final_checkpoint(now);
        let mut c = Collected::new();
        if let Err(e) = self
            .add_finished(id, CheckpointKind::Checkpoint, &mut c)
            .await
        {
            error!(job = %self.job, error = %e, "cannot store the final checkpoint");
            self.final_failed(e);
            return;
        }
        self.finished.clear();
        self.finished_blobs.clear();
        if let Err(e) = self.publish(id, CheckpointKind::Checkpoint, c, true).await {
            error!(job = %self.job, checkpoint = %id, error = %e, "cannot publish the final checkpoint");
            self.final_failed(e);
            return;
        }
        let keep = self.pure.settings().retained.max(1);
        let store = self.store.clone();
        let _ = blocking(move || {
            discard_beyond(store.as_ref(), keep);
            Ok(())
        })
        .await;
    }

    /// The final checkpoint could not be stored: the finished subtasks would wait for it
    /// forever (their last transactions are committed only by it), so the job fails and its
    /// restart strategy takes over (a restore replays from the last published checkpoint).
    fn final_failed(&mut self, error: String) {
        if let Some(s) = &self.supervisor {
            let _ = s.cast(SupervisorMsg::CheckpointFailure(format!(
                "the final checkpoint could not be stored: {error}"
            )));
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
        if !self.halted.is_empty() || self.priority.is_empty() || self.stopped {
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
            finished_blobs: HashMap::new(),
            start: Instant::now(),
            listener: args.listener,
            observer: args.observer,
            supervisor: None,
            savepoint_waiters: HashMap::new(),
            queued_savepoints: Default::default(),
            stopped: false,
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
                if state.halted.is_empty() && !state.stopped {
                    let now = state.now_ms();
                    let d = state.pure.tick(now);
                    state.apply(d).await;
                }
            }
            CoordinatorMsg::Ack {
                generation,
                task,
                id,
                state: mut bytes,
                unaligned,
                alignment_ms,
                sync_ms,
                async_ms,
            } => {
                if !state.current(task, generation) || !state.halted.is_empty() || state.stopped {
                    tracing::debug!(checkpoint = %id, ?task, generation, "ignoring a stale acknowledgement (or one after a stop-with-savepoint)");
                } else if state.collected.contains_key(&id) {
                    // Off the runtime's workers; nothing else changes the state meanwhile
                    // (the actor handles one message at a time).
                    let store = state.store.clone();
                    let shared = std::mem::take(&mut bytes.shared);
                    let in_flight_bytes = bytes.in_flight_bytes;
                    let written = blocking(move || {
                        // The chunks of incremental keyed state, then the state blob.
                        let mut entries = Vec::with_capacity(bytes.chunks.len() + 1);
                        for (expected, chunk) in &bytes.chunks {
                            let e = store
                                .put_blob(id, &expected.name, chunk)
                                .map_err(|e| e.to_string())?;
                            if e != *expected {
                                return Err(format!(
                                    "chunk {:?} was stored as {e:?}, the subtask described it as {expected:?}",
                                    expected.name
                                ));
                            }
                            entries.push(e);
                        }
                        entries.push(
                            store
                                .put_blob(id, &blob_name(task), &bytes.state)
                                .map_err(|e| e.to_string())?,
                        );
                        Ok(entries)
                    })
                    .await;
                    match (written, state.collected.get_mut(&id)) {
                        (Ok(entries), Some(c)) => {
                            state.observer.checkpoint_acknowledged(
                                id,
                                SubtaskCheckpointStats {
                                    vertex: task.0,
                                    subtask: task.1,
                                    ack_timestamp_ms: wall_ms(),
                                    alignment_ms,
                                    sync_ms,
                                    async_ms,
                                    state_size: entries.iter().map(|e| e.len).sum(),
                                    in_flight_bytes,
                                    unaligned,
                                },
                            );
                            for entry in entries {
                                c.bytes += entry.len;
                                c.blobs.push(entry);
                            }
                            // Chunks of earlier checkpoints the chains still list, once each.
                            for e in shared {
                                if !c
                                    .blobs
                                    .iter()
                                    .any(|b| b.owner == e.owner && b.name == e.name)
                                {
                                    c.shared_bytes += e.len;
                                    c.blobs.push(e);
                                }
                            }
                            c.unaligned |= unaligned;
                            c.alignment_ms = c.alignment_ms.max(alignment_ms);
                            c.sync_ms = c.sync_ms.max(sync_ms);
                            c.async_ms = c.async_ms.max(async_ms);
                            let now = state.now_ms();
                            let d = state.pure.acknowledge(id, task, now);
                            state.apply(d).await;
                        }
                        (Ok(_), None) => {}
                        (Err(e), _) => {
                            let d = state.pure.decline(id, task, &e);
                            state.apply(d).await;
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
                    state.apply(d).await;
                }
            }
            CoordinatorMsg::Finished {
                generation,
                task,
                state: bytes,
            } => {
                // A finished subtask's final state counts even while another region
                // restarts. Checkpoints go on without it (FLIP-147).
                // After a stop-with-savepoint nothing completes: the job is being stopped.
                if state.current(task, generation)
                    && !state.halted.contains(&task)
                    && !state.stopped
                {
                    state.finished.insert(task, Arc::new(bytes));
                    state.finished_blobs.remove(&task);
                    state.update_sources_running();
                    let now = state.now_ms();
                    let d = state.pure.task_finished(task, now);
                    state.apply(d).await;
                    if state.pure.all_finished() {
                        state.final_checkpoint().await;
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
                    state.finished_blobs.remove(&task);
                }
                state.sources.retain(|t| !deployed.contains(t));
                state.sources.extend(sources);
                state.pure.tasks_running(deployed);
                state.update_sources_running();
                let now = state.now_ms();
                let d = state.pure.reset_pending(now);
                state.apply(d).await;
            }
            CoordinatorMsg::Attach(s) => state.supervisor = Some(s),
            CoordinatorMsg::Drain(reply) => {
                let _ = reply.send(());
            }
            CoordinatorMsg::Stopping { tasks } => {
                for task in tasks {
                    state.priority.remove(&task);
                    state.halted.insert(task);
                }
                let now = state.now_ms();
                let d = state.pure.reset_pending(now);
                state.apply(d).await;
            }
            CoordinatorMsg::Savepoint { reply, .. } if state.stopped => {
                let _ = reply.send(Err(
                    "cannot take a savepoint: the job is stopping with a savepoint".into(),
                ));
            }
            CoordinatorMsg::Savepoint { stop, reply } => {
                let now = state.now_ms();
                let restarting = !state.halted.is_empty();
                match state.pure.request_savepoint(now, restarting) {
                    SavepointRequest::Triggered(d) => {
                        if let Decision::Trigger { id, .. } = &d {
                            state.savepoint_waiters.insert(*id, (reply, stop));
                        }
                        state.apply(vec![d]).await;
                    }
                    SavepointRequest::Queued => {
                        debug!(job = %state.job, "savepoint queued behind the pending checkpoint");
                        state.queued_savepoints.push_back((reply, stop));
                    }
                    SavepointRequest::Refused(why) => {
                        let _ = reply.send(Err(format!("cannot take a savepoint: {why}")));
                    }
                }
            }
        }
        state.reschedule(&myself);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::snapshot::MemoryStore;

    fn commit(store: &MemoryStore, id: u64, kind: CheckpointKind) {
        let id = CheckpointId(id);
        let blob = store.put_blob(id, "s", b"state").unwrap();
        store
            .commit(&Manifest {
                version: FORMAT_VERSION,
                id,
                kind,
                triggered_ms: 0,
                blobs: vec![blob],
                metadata: Vec::new(),
            })
            .unwrap();
    }

    #[test]
    fn retention_after_the_final_checkpoint_keeps_every_savepoint() {
        let store = MemoryStore::new();
        for (id, kind) in [
            (1, CheckpointKind::Checkpoint),
            (2, CheckpointKind::Savepoint),
            (3, CheckpointKind::Checkpoint),
            (4, CheckpointKind::Checkpoint),
            (5, CheckpointKind::Savepoint),
        ] {
            commit(&store, id, kind);
        }
        discard_beyond(&store, 1);
        let ids: Vec<u64> = store.list().unwrap().into_iter().map(|c| c.0).collect();
        assert_eq!(ids, vec![5, 4, 2]);
    }
}
