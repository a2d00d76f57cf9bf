//! The actors: one [`SubtaskActor`] per subtask, supervised by one [`JobSupervisor`].
//!
//! The supervisor spawns every subtask actor linked to itself, so ractor reports each one's end
//! as a supervision event: `ActorTerminated` when it finished (or stopped on cancellation),
//! `ActorFailed` with the [`SubtaskFailure`] when user code returned an error or panicked.
//! On the first failure, or on a cancel request, it sends `Cancel` on every subtask's priority
//! lane; subtasks still running after the cancel timeout are killed. When every subtask has
//! ended it reports the job's result: success, the root-cause failure, or cancellation.
//!
//! With checkpointing, a failure does not end the job: the failed subtask's **pipelined
//! region** (the connected component of the job graph it belongs to) is cancelled and its
//! generation bumped, while the other regions keep running. Once every subtask of the region
//! has stopped, the restart strategy decides; after its delay the supervisor deploys the
//! region again with the state of the newest checkpoint that verifies (or from scratch if there
//! is none) and tells the checkpoint coordinator. When attempts run out the job fails with the
//! root cause. A connected streaming job is one region, so the whole job restarts.

use crate::checkpoint::capture::RestorePlan;
use crate::checkpoint::fault::FaultPlan;
use crate::checkpoint::restart::{RestartDecision, RestartTracker};
use crate::checkpoint::snapshot::SnapshotStore;
use crate::checkpoint::types::{JobEvent, JobListener};
use crate::dataplane::lane::LaneSender;
use crate::dataplane::message::PriorityMessage;
use crate::error::{BuildError, FailureCause, JobError, OperatorLabel, SubtaskFailure};
use crate::runtime::config::JobConfig;
use crate::runtime::control::{CoordinatorMsg, SupervisorMsg};
use crate::runtime::deploy::{DeployContext, Deployment, Regions, deploy};
use crate::runtime::graph::StreamGraph;
use crate::runtime::metrics::{ExceptionRecord, RecoveryAction, SubtaskStatus};
use crate::runtime::observer::JobStatus;
use crate::runtime::plan::ExecutionPlan;
use crate::runtime::result::{JobMetrics, JobResult};
use crate::runtime::subtask::{Remains, Subtask};
use crate::time::clock::ProcessingClock;
use crate::types::{CheckpointId, NodeId};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, error, info, warn};

/// The one message a subtask actor gets: run the subtask loop to its end.
#[derive(Debug)]
pub(crate) enum SubtaskCommand {
    Run,
}

/// Runs one subtask. Its state is the subtask until `Run` takes it.
pub(crate) struct SubtaskActor;

/// A subtask actor's state: the subtask until it runs, then, if it failed, what is left of
/// it. ractor reports a failure to the supervisor before it drops the actor's state, so the
/// chain kept here is freed while the supervisor already prepares the restart.
pub(crate) struct SubtaskSlot {
    subtask: Option<Subtask>,
    remains: Option<Remains>,
}

impl Drop for SubtaskSlot {
    fn drop(&mut self) {
        let Some(remains) = self.remains.take() else {
            return;
        };
        // Freeing takes long enough that the tasks queued on this worker (the supervisor,
        // woken by the failure report, among them) must not wait for it: on a multi-threaded
        // runtime the worker's queue moves to another thread while this one frees.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| drop(remains));
        } else {
            drop(remains);
        }
    }
}

impl Actor for SubtaskActor {
    type Msg = SubtaskCommand;
    type State = SubtaskSlot;
    type Arguments = Subtask;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Subtask,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SubtaskSlot {
            subtask: Some(args),
            remains: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself
            .cast(SubtaskCommand::Run)
            .map_err(|e| format!("could not start the subtask loop: {e}").into())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SubtaskCommand,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SubtaskCommand::Run => {
                let Some(subtask) = state.subtask.take() else {
                    return Ok(());
                };
                let span = subtask.span();
                let (result, remains) = subtask.run().instrument(span).await;
                state.remains = remains;
                match result {
                    Ok(_) => {
                        myself.stop(None);
                        Ok(())
                    }
                    Err(failure) => Err(Box::new(failure)),
                }
            }
        }
    }
}

struct ChildInfo {
    vertex: Arc<str>,
    index: usize,
    parallelism: u32,
    head: OperatorLabel,
    /// (job vertex, index), as the coordinator knows it.
    task: crate::checkpoint::coordinator::TaskRef,
    region: usize,
}

/// What the supervisor needs to restart a job.
pub(crate) struct Recovery {
    pub(crate) graph: StreamGraph,
    pub(crate) plan: ExecutionPlan,
    pub(crate) config: JobConfig,
    pub(crate) clock: ProcessingClock,
    pub(crate) coordinator: ActorRef<CoordinatorMsg>,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) tracker: RestartTracker,
    pub(crate) faults: Option<FaultPlan>,
    pub(crate) regions: Regions,
}

pub(crate) struct SupervisorArgs {
    pub(crate) job: Arc<str>,
    pub(crate) deployment: Deployment,
    pub(crate) result: oneshot::Sender<Result<JobResult, JobError>>,
    pub(crate) metrics: Arc<JobMetrics>,
    pub(crate) cancel_timeout: Duration,
    pub(crate) metrics_interval: Option<Duration>,
    pub(crate) recovery: Option<Recovery>,
    pub(crate) listener: Option<JobListener>,
}

pub(crate) struct SupervisorState {
    job: Arc<str>,
    children: HashMap<ActorId, usize>,
    cells: Vec<Option<ActorCell>>,
    info: Vec<ChildInfo>,
    priority: Vec<LaneSender<PriorityMessage>>,
    /// Failures with the region they happened in (`None`: the whole job's).
    failures: Vec<(Option<usize>, SubtaskFailure)>,
    /// The whole job is being cancelled (a cancel request, or a failure it cannot restart).
    cancelling: bool,
    cancel_requested: bool,
    /// Regions cancelled for a restart; decided when every subtask of the region stopped.
    restarting: BTreeSet<usize>,
    /// Regions whose restart was decided and waits for its delay.
    awaiting_redeploy: BTreeSet<usize>,
    result: Option<oneshot::Sender<Result<JobResult, JobError>>>,
    metrics: Arc<JobMetrics>,
    cancel_timeout: Duration,
    metrics_interval: Option<Duration>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    recovery: Option<Recovery>,
    listener: Option<JobListener>,
    /// The generation each region runs as.
    generations: Vec<u64>,
    started: tokio::time::Instant,
    stop_after_savepoint: Option<CheckpointId>,
}

/// Supervises the subtasks of one job.
pub(crate) struct JobSupervisor;

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_ms(started: tokio::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A sample in [0, 1) for restart jitter (not for anything that must be reproducible).
fn jitter_sample() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(crate::state::keygroup::fmix64(u64::from(nanos)) as u32) / f64::from(u32::MAX)
        * 0.999_999
}

impl SupervisorState {
    /// Cancels the whole job (a cancel request, stop-with-savepoint, or a failure it cannot
    /// restart).
    fn begin_cancel(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.cancelling {
            return;
        }
        self.cancelling = true;
        self.send_cancel(None);
        ractor::time::send_after(self.cancel_timeout, myself.get_cell(), move || {
            SupervisorMsg::CancelTimeout {
                region: None,
                generation: 0,
            }
        });
    }

    /// Puts `Cancel` on the priority lane of every live subtask (of `region`, or all).
    fn send_cancel(&self, region: Option<usize>) {
        for (i, p) in self.priority.iter().enumerate() {
            let live = self.cells[i].is_some();
            if live
                && region.is_none_or(|r| self.info[i].region == r)
                && p.try_send(PriorityMessage::Cancel).is_err()
            {
                warn!(job = %self.job, subtask = i, "priority lane full; the subtask will be killed after the cancel timeout");
            }
        }
    }

    fn region_live(&self, region: usize) -> bool {
        self.info
            .iter()
            .zip(&self.cells)
            .any(|(i, c)| i.region == region && c.is_some())
    }

    fn region_tasks(&self, region: usize) -> Vec<crate::checkpoint::coordinator::TaskRef> {
        self.info
            .iter()
            .filter(|i| i.region == region)
            .map(|i| i.task)
            .collect()
    }

    fn emit(&self, event: JobEvent) {
        self.metrics.observer.event(&event);
        if let Some(l) = &self.listener {
            l(&event);
        }
    }

    /// Starts the subtasks of `deployment`: the whole job at first, one region after its
    /// restart (their slots are reused).
    async fn spawn_children(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        deployment: Deployment,
    ) -> Result<(), ActorProcessingErr> {
        let Deployment {
            subtasks,
            regions,
            priority,
            metrics,
            tasks,
            sources,
        } = deployment;
        if let Some(r) = &self.recovery
            && let Some(first) = regions.first()
        {
            let _ = r.coordinator.cast(CoordinatorMsg::Deployed {
                generation: self.generations.get(*first).copied().unwrap_or(0),
                priority: tasks
                    .iter()
                    .copied()
                    .zip(priority.iter().cloned())
                    .collect(),
                sources,
            });
        }
        let fresh = self.info.is_empty();
        if fresh {
            self.metrics.replace(metrics.clone());
        }
        for (((subtask, region), (task, lane)), m) in subtasks
            .into_iter()
            .zip(regions)
            .zip(tasks.into_iter().zip(priority))
            .zip(metrics)
        {
            let info = ChildInfo {
                vertex: subtask.vertex.clone(),
                index: subtask.index,
                parallelism: subtask.parallelism,
                head: subtask.head_label.clone(),
                task,
                region,
            };
            let slot = if fresh {
                self.info.push(info);
                self.priority.push(lane);
                self.cells.push(None);
                self.info.len() - 1
            } else {
                let Some(slot) = self.info.iter().position(|i| i.task == task) else {
                    return Err(format!("no slot for restarted subtask {task:?}").into());
                };
                self.info[slot] = info;
                self.priority[slot] = lane;
                self.metrics.replace_at(slot, m);
                slot
            };
            let (actor, _) =
                Actor::spawn_linked(None, SubtaskActor, subtask, myself.get_cell()).await?;
            self.children.insert(actor.get_id(), slot);
            self.cells[slot] = Some(actor.get_cell());
        }
        Ok(())
    }

    /// A failure happened in `region` (`None`: the whole job, from the coordinator): restart
    /// the region(s) (once their subtasks stopped) or, without checkpointing, fail the job.
    fn on_failure(&mut self, region: Option<usize>, myself: &ActorRef<SupervisorMsg>) {
        if self.cancel_requested || self.cancelling {
            return;
        }
        let Some(r) = &self.recovery else {
            self.begin_cancel(myself);
            return;
        };
        let regions: Vec<usize> = match region {
            Some(g) => vec![g],
            None => (0..r.regions.count()).collect(),
        };
        for g in regions {
            if !self.restarting.insert(g) {
                continue;
            }
            let next = self.generations.get(g).copied().unwrap_or(0) + 1;
            if let Some(r) = &self.recovery {
                // From now on, nothing of this region's generation may commit.
                if let Some(atomic) = r.regions.generations.get(g) {
                    atomic.store(next, Ordering::SeqCst);
                }
                let _ = r.coordinator.cast(CoordinatorMsg::Stopping {
                    tasks: self.region_tasks(g),
                });
            }
            self.send_cancel(Some(g));
            ractor::time::send_after(self.cancel_timeout, myself.get_cell(), move || {
                SupervisorMsg::CancelTimeout {
                    region: Some(g),
                    generation: next,
                }
            });
        }
    }

    /// Every subtask of `region` stopped after a failure: restart it after the strategy's
    /// delay, or fail.
    fn decide_restart(&mut self, region: usize, myself: &ActorRef<SupervisorMsg>) -> bool {
        let generation = self.generations.get(region).copied().unwrap_or(0) + 1;
        let Some(r) = &mut self.recovery else {
            return false;
        };
        let root = self
            .failures
            .iter()
            .filter(|(g, _)| g.is_none_or(|g| g == region))
            .map(|(_, f)| f)
            .find(|f| !f.cause.is_secondary())
            .or(self.failures.first().map(|(_, f)| f))
            .cloned();
        let cause = root
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_else(|| "unknown".into());
        let record = |action: RecoveryAction| ExceptionRecord {
            timestamp_ms: wall_ms(),
            operator: root
                .as_ref()
                .map(|f| f.operator.name.to_string())
                .unwrap_or_default(),
            vertex: root
                .as_ref()
                .map(|f| f.vertex.to_string())
                .unwrap_or_default(),
            subtask_index: root.as_ref().map_or(0, |f| f.subtask_index),
            cause: cause.clone(),
            region,
            action,
        };
        let whole_job = r.regions.count() <= 1;
        match r.tracker.on_failure(now_ms(self.started), jitter_sample()) {
            RestartDecision::Restart { delay, attempt } => {
                // For the messages only (reading and verifying the whole checkpoint here would
                // double the restore's reads): the redeploy restores and checks it.
                let from = crate::checkpoint::snapshot::restore_candidate(r.store.as_ref());
                warn!(job = %self.job, region, attempt, ?delay, from_checkpoint = ?from, %cause, "restarting");
                if !tracing::dispatcher::has_been_set() {
                    // Without a tracing subscriber the warning above goes nowhere: a job that
                    // keeps failing would restart in silence.
                    eprintln!(
                        "actorflow: job {} restarts (attempt {attempt}, in {delay:?}, from {}) after: {cause}",
                        self.job,
                        from.map_or("scratch".to_string(), |c| format!("checkpoint {c}"))
                    );
                }
                self.metrics
                    .record_exception(record(RecoveryAction::RegionRestarted {
                        attempt,
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        from_checkpoint: from.map(|c| c.0),
                    }));
                let event = JobEvent::Restart {
                    attempt,
                    cause,
                    from_checkpoint: from,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    generation,
                };
                self.emit(event);
                ractor::time::send_after(delay, myself.get_cell(), move || {
                    SupervisorMsg::Redeploy(region)
                });
                if whole_job {
                    // A regional failover leaves the job RUNNING, as in Flink.
                    self.metrics.observer.set_status(JobStatus::Restarting);
                }
                true
            }
            RestartDecision::SameIncident => {
                self.metrics
                    .record_exception(record(RecoveryAction::SameIncident));
                ractor::time::send_after(Duration::ZERO, myself.get_cell(), move || {
                    SupervisorMsg::Redeploy(region)
                });
                true
            }
            RestartDecision::Fail { reason } => {
                error!(job = %self.job, %reason, "no more restarts");
                self.metrics
                    .record_exception(record(RecoveryAction::JobFailed { reason }));
                false
            }
        }
    }

    async fn redeploy(
        &mut self,
        region: usize,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), JobError> {
        let Some(r) = &self.recovery else {
            return Err(JobError::Internal(
                "redeploy without recovery settings".into(),
            ));
        };
        // The same rule as at start: the newest completed checkpoint, and a damaged store
        // fails the job rather than restarting it from older state.
        let snapshot = crate::checkpoint::snapshot::newest_completed(r.store.as_ref())
            .map_err(|e| JobError::Build(BuildError::Restore(e.to_string())))?;
        let plan = snapshot.as_ref().map(RestorePlan::new).transpose()?;
        let generation = self.generations.get(region).copied().unwrap_or(0) + 1;
        if let Some(atomic) = r.regions.generations.get(region) {
            atomic.store(generation, Ordering::SeqCst);
        }
        let whole_job = r.regions.count() <= 1;
        let ctx = DeployContext {
            restore: plan.as_ref(),
            coordinator: Some(r.coordinator.clone()),
            regions: Some(&r.regions),
            only: (!whole_job).then_some(region),
            faults: r.faults.as_ref(),
        };
        let deployment = deploy(&r.graph, &r.plan, &r.config, r.clock.clone(), &ctx)?;
        let allow = r
            .config
            .checkpointing
            .as_ref()
            .is_some_and(|c| c.allow_non_restored_state);
        // A regional restart places only its region's state; the rest belongs to regions
        // that keep running.
        if let Some(p) = &plan
            && whole_job
        {
            p.check_all_placed(allow)?;
        }
        let restored = plan.as_ref().map(|p| p.checkpoint);
        let now = now_ms(self.started);
        if let Some(r) = &mut self.recovery {
            r.tracker.on_restarted(now);
        }
        if let Some(g) = self.generations.get_mut(region) {
            *g = generation;
        }
        self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
        self.failures
            .retain(|(g, _)| *g != Some(region) && g.is_some());
        self.restarting.remove(&region);
        self.awaiting_redeploy.remove(&region);
        info!(job = %self.job, region, generation, checkpoint = ?restored, "restarted");
        self.emit(JobEvent::Restored {
            checkpoint: restored,
            generation,
        });
        self.spawn_children(myself, deployment)
            .await
            .map_err(|e| JobError::Internal(format!("cannot spawn subtasks: {e}")))?;
        if self.restarting.is_empty() {
            self.metrics.observer.set_status(JobStatus::Running);
        }
        Ok(())
    }

    fn outcome(&mut self) -> Result<JobResult, JobError> {
        let failure = self
            .failures
            .iter()
            .position(|(_, f)| !f.cause.is_secondary())
            .or(if self.cancel_requested || self.failures.is_empty() {
                None
            } else {
                Some(0)
            })
            .map(|i| self.failures.swap_remove(i).1);
        match failure {
            Some(f) => Err(JobError::Failed(Box::new(f))),
            None if self.cancel_requested => Err(JobError::Cancelled),
            None => Ok(JobResult {
                name: self.job.to_string(),
                duration: self.metrics.elapsed(),
                metrics: self.metrics.snapshot(),
            }),
        }
    }

    /// After a subtask ended: restart regions that stopped, or end the job when nothing runs.
    fn settle(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.result.is_none() {
            return;
        }
        if !self.cancelling && !self.cancel_requested {
            let stopped: Vec<usize> = self
                .restarting
                .iter()
                .copied()
                .filter(|g| !self.awaiting_redeploy.contains(g) && !self.region_live(*g))
                .collect();
            for g in stopped {
                if self.decide_restart(g, myself) {
                    self.awaiting_redeploy.insert(g);
                } else {
                    // No more restarts: the job fails with the root cause.
                    self.restarting.clear();
                    self.awaiting_redeploy.clear();
                    self.begin_cancel(myself);
                    break;
                }
            }
        }
        if !self.children.is_empty() || (!self.restarting.is_empty() && !self.cancelling) {
            return;
        }
        let mut outcome = self.outcome();
        if self.stop_after_savepoint.is_some() && matches!(outcome, Err(JobError::Cancelled)) {
            outcome = Ok(JobResult {
                name: self.job.to_string(),
                duration: self.metrics.elapsed(),
                metrics: self.metrics.snapshot(),
            });
        }
        self.finish(myself, outcome);
    }

    fn finish(&mut self, myself: &ActorRef<SupervisorMsg>, outcome: Result<JobResult, JobError>) {
        if let Some(tx) = self.result.take() {
            match &outcome {
                Ok(r) => info!(job = %self.job, duration = ?r.duration, "job finished"),
                Err(e) => info!(job = %self.job, "job ended: {e}"),
            }
            for s in self.metrics.snapshot().subtasks {
                debug!(target: "actorflow::metrics", job = %self.job, "final: {s}");
            }
            // The job's result waits for the coordinator: first for what the subtasks sent it
            // before they ended (an acknowledgement, a final state: the job's final checkpoint
            // is published), then for it to stop, so nothing writes the store, or reports a
            // checkpoint, after `execute` returned. (Its stop port is taken by the first
            // `stop`, so this is the only place that stops it once the job has a result.)
            let coordinator = self.recovery.as_ref().map(|r| r.coordinator.clone());
            let observer = self.metrics.observer.clone();
            tokio::spawn(async move {
                if let Some(c) = coordinator {
                    let _ = c.call(CoordinatorMsg::Drain, None).await;
                    c.stop(None);
                    let _ = c.wait(None).await;
                }
                observer.set_status(match &outcome {
                    Ok(_) => JobStatus::Finished,
                    Err(JobError::Cancelled) => JobStatus::Canceled,
                    Err(_) => JobStatus::Failed,
                });
                let _ = tx.send(outcome);
            });
        }
        myself.stop(None);
    }
}

impl Actor for JobSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let generations = args.recovery.as_ref().map_or_else(
            || vec![0],
            |r| {
                r.regions
                    .generations
                    .iter()
                    .map(|g| g.load(Ordering::SeqCst))
                    .collect()
            },
        );
        if let Some(r) = &args.recovery {
            let _ = r.coordinator.cast(CoordinatorMsg::Attach(myself.clone()));
        }
        let mut state = SupervisorState {
            job: args.job,
            children: HashMap::new(),
            cells: Vec::new(),
            info: Vec::new(),
            priority: Vec::new(),
            failures: Vec::new(),
            cancelling: false,
            cancel_requested: false,
            restarting: BTreeSet::new(),
            awaiting_redeploy: BTreeSet::new(),
            result: Some(args.result),
            metrics: args.metrics,
            cancel_timeout: args.cancel_timeout,
            metrics_interval: args.metrics_interval,
            ticker: None,
            recovery: args.recovery,
            listener: args.listener,
            generations,
            started: tokio::time::Instant::now(),
            stop_after_savepoint: None,
        };
        state.spawn_children(&myself, args.deployment).await?;
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(every) = state.metrics_interval {
            state.ticker = Some(ractor::time::send_interval(
                every,
                myself.get_cell(),
                || SupervisorMsg::LogMetrics,
            ));
        }
        info!(job = %state.job, subtasks = state.cells.len(), "job running");
        state.metrics.observer.set_status(JobStatus::Running);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        // Stopped without a result (`finish` stops the coordinator itself, after draining it).
        if state.result.is_some()
            && let Some(r) = &state.recovery
        {
            r.coordinator.stop(None);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Cancel => {
                if !state.cancel_requested {
                    info!(job = %state.job, "cancel requested");
                    state.metrics.observer.set_status(JobStatus::Cancelling);
                    state.cancel_requested = true;
                    state.restarting.clear();
                    state.awaiting_redeploy.clear();
                    state.begin_cancel(&myself);
                    state.settle(&myself);
                }
            }
            SupervisorMsg::CancelTimeout { region, generation } => {
                let due = match region {
                    None => state.cancelling,
                    Some(g) => {
                        state.restarting.contains(&g)
                            && state.generations.get(g).map(|v| v + 1) == Some(generation)
                    }
                };
                if due {
                    for (i, cell) in state.cells.iter().enumerate() {
                        if let Some(cell) = cell
                            && region.is_none_or(|g| state.info[i].region == g)
                        {
                            warn!(job = %state.job, vertex = %state.info[i].vertex, index = state.info[i].index,
                                "subtask did not stop within the cancel timeout; killing it");
                            cell.kill();
                        }
                    }
                }
            }
            SupervisorMsg::LogMetrics => {
                for s in state.metrics.snapshot().subtasks {
                    info!(target: "actorflow::metrics", job = %state.job, "{s}");
                }
            }
            SupervisorMsg::CheckpointFailure(why) => {
                if !state.cancelling {
                    state.failures.push((
                        None,
                        SubtaskFailure {
                            operator: OperatorLabel::new(
                                NodeId(usize::MAX),
                                "checkpoint coordinator",
                            ),
                            vertex: "checkpoint coordinator".into(),
                            subtask_index: 0,
                            parallelism: 1,
                            cause: FailureCause::Internal(why),
                        },
                    ));
                    state.on_failure(None, &myself);
                    state.settle(&myself);
                }
            }
            SupervisorMsg::Redeploy(region) => {
                if state.cancel_requested || state.cancelling {
                    state.settle(&myself);
                } else if let Err(e) = state.redeploy(region, &myself).await {
                    error!(job = %state.job, "restart failed: {e}");
                    state.finish(&myself, Err(e));
                }
            }
            SupervisorMsg::Savepoint { stop, reply } => match &state.recovery {
                // Waiting for the savepoint on a task of its own: the supervisor keeps
                // handling failures meanwhile, and several requests reach the coordinator,
                // which queues them behind a pending checkpoint.
                Some(r) => {
                    let coordinator = r.coordinator.clone();
                    let supervisor = myself.clone();
                    tokio::spawn(async move {
                        let result = ractor::call!(coordinator, |reply| {
                            CoordinatorMsg::Savepoint { stop, reply }
                        })
                        .unwrap_or_else(|e| Err(format!("coordinator gone: {e}")));
                        if stop && let Ok(id) = result {
                            let _ = supervisor.cast(SupervisorMsg::StopAfterSavepoint(id));
                        }
                        let _ = reply.send(result);
                    });
                }
                None => {
                    let _ = reply.send(Err("the job does not checkpoint".into()));
                }
            },
            SupervisorMsg::StopAfterSavepoint(id) => {
                info!(job = %state.job, savepoint = %id, "stopping with a savepoint");
                state.stop_after_savepoint = Some(id);
                state.cancel_requested = true;
                state.begin_cancel(&myself);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(i) = state.children.remove(&cell.get_id()) {
                    state.cells[i] = None;
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(i) = state.children.remove(&cell.get_id()) {
                    state.cells[i] = None;
                    let failure = match err.downcast::<SubtaskFailure>() {
                        Ok(f) => *f,
                        Err(other) => {
                            // A panic outside operator code, caught by ractor.
                            let c = &state.info[i];
                            if let Some(m) = state.metrics.subtask(i) {
                                m.set_status(SubtaskStatus::Failed);
                            }
                            SubtaskFailure {
                                operator: c.head.clone(),
                                vertex: c.vertex.clone(),
                                subtask_index: c.index,
                                parallelism: c.parallelism,
                                cause: FailureCause::Internal(other.to_string()),
                            }
                        }
                    };
                    if failure.cause.is_secondary() {
                        warn!(job = %state.job, "{failure}");
                    } else {
                        error!(job = %state.job, "{failure}");
                    }
                    let region = state.info[i].region;
                    state.failures.push((Some(region), failure));
                    state.on_failure(Some(region), &myself);
                }
            }
            _ => {}
        }
        state.settle(&myself);
        Ok(())
    }
}
