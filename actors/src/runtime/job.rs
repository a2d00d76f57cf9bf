//! Submitting a job and following it: [`submit`], [`JobHandle`], [`JobResult`].

use crate::checkpoint::capture::RestorePlan;
use crate::checkpoint::coordinator::CheckpointingMode;
use crate::checkpoint::fault::FaultPlan;
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::snapshot::{Snapshot, SnapshotStore, StoreError, newest_completed};
use crate::checkpoint::types::{CheckpointConfig, JobEvent, JobListener, RestoreFrom};
use crate::dataplane::message::CheckpointKind;
use crate::error::BuildError;
use crate::error::JobError;
use crate::runtime::config::JobConfig;
use crate::runtime::control::{CoordinatorMsg, SupervisorMsg};
use crate::runtime::coordinator_actor::{CoordinatorActor, CoordinatorArgs};
use crate::runtime::deploy::{DeployContext, Deployment, Regions, deploy};
use crate::runtime::graph::StreamGraph;
use crate::runtime::metrics::JobMetricsSnapshot;
use crate::runtime::observer::{CheckpointConfigInfo, JobId, JobObserver, vertices_of};
use crate::runtime::plan::{ExecutionPlan, plan};
use crate::runtime::result::{JobMetrics, JobResult};
use crate::runtime::supervisor::Recovery;
use crate::runtime::supervisor::{JobSupervisor, SupervisorArgs};
use crate::time::clock::ProcessingClock;
use crate::types::CheckpointId;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// A cloneable handle that reads metrics of, and cancels, a running job.
#[derive(Debug, Clone)]
pub struct JobControl {
    supervisor: ActorRef<SupervisorMsg>,
    metrics: Arc<JobMetrics>,
}

impl JobControl {
    /// The job's id, plan, status history, checkpoint statistics and live updates.
    pub fn observer(&self) -> &Arc<JobObserver> {
        &self.metrics.observer
    }

    /// Every subtask's metrics now.
    pub fn metrics(&self) -> JobMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Asks the job to stop. Subtasks take the request ahead of queued data; the job then
    /// ends with [`JobError::Cancelled`]. Does nothing if the job already ended.
    pub fn cancel(&self) {
        let _ = self.supervisor.cast(SupervisorMsg::Cancel);
    }

    /// Triggers a savepoint (an aligned checkpoint of kind savepoint) and waits until it is
    /// stored.
    ///
    /// # Errors
    ///
    /// A message if the job does not checkpoint, another checkpoint is pending, or the
    /// savepoint was aborted.
    pub async fn trigger_savepoint(&self) -> Result<CheckpointId, String> {
        self.savepoint(false).await
    }

    /// Takes a savepoint, then stops the job (it ends successfully).
    ///
    /// # Errors
    ///
    /// As [`trigger_savepoint`](Self::trigger_savepoint); the job keeps running then.
    pub async fn stop_with_savepoint(&self) -> Result<CheckpointId, String> {
        self.savepoint(true).await
    }

    async fn savepoint(&self, stop: bool) -> Result<CheckpointId, String> {
        ractor::call!(self.supervisor, |reply| SupervisorMsg::Savepoint {
            stop,
            reply
        })
        .unwrap_or_else(|e| Err(format!("the job is not running: {e}")))
    }
}

/// A running job.
#[derive(Debug)]
pub struct JobHandle {
    name: Arc<str>,
    plan: String,
    control: JobControl,
    result: oneshot::Receiver<Result<JobResult, JobError>>,
}

impl JobHandle {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job vertices (operator chains), their parallelism and inputs, one per line.
    pub fn plan(&self) -> &str {
        &self.plan
    }

    /// Every subtask's metrics now.
    pub fn metrics(&self) -> JobMetricsSnapshot {
        self.control.metrics()
    }

    /// The job's id, plan, status history, checkpoint statistics and live updates.
    pub fn observer(&self) -> &Arc<JobObserver> {
        self.control.observer()
    }

    /// Asks the job to stop (see [`JobControl::cancel`]).
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// A cloneable handle for metrics and cancellation from elsewhere.
    pub fn control(&self) -> JobControl {
        self.control.clone()
    }

    /// Waits for the job to end.
    ///
    /// # Errors
    ///
    /// [`JobError::Failed`] with the root cause if a subtask failed, [`JobError::Cancelled`]
    /// if it was cancelled.
    pub async fn join(self) -> Result<JobResult, JobError> {
        self.result.await.unwrap_or_else(|_| {
            Err(JobError::Internal(
                "the job supervisor stopped without reporting a result".into(),
            ))
        })
    }
}

/// Plans, deploys and starts a job on the current tokio runtime.
///
/// # Errors
///
/// [`JobError::Build`] if the pipeline is invalid or a source or sink cannot be set up;
/// nothing runs then. [`JobError::Internal`] if the supervisor cannot start.
pub async fn submit(
    name: &str,
    graph: &StreamGraph,
    config: &JobConfig,
) -> Result<JobHandle, JobError> {
    submit_with_faults(name, graph, config, None).await
}

/// [`submit`] with failure injection (tests, the chaos runner, demos).
///
/// # Errors
///
/// As [`submit`]; also if the checkpoint to restore cannot be read or placed.
pub async fn submit_with_faults(
    name: &str,
    graph: &StreamGraph,
    config: &JobConfig,
    faults: Option<FaultPlan>,
) -> Result<JobHandle, JobError> {
    let plan = plan(graph, config)?;
    let clock = processing_clock(config);
    let name: Arc<str> = name.into();
    let id = JobId::generate();
    let observer = Arc::new(JobObserver::new(
        id,
        &name,
        vertices_of(id, graph, &plan),
        config.checkpointing.as_ref().map(checkpoint_config_info),
    ));
    let listener = config.listener.as_ref().map(|l| l.0.clone());
    let (deployment, recovery) = match &config.checkpointing {
        None => {
            let ctx = DeployContext::default();
            (deploy(graph, &plan, config, clock.clone(), &ctx)?, None)
        }
        Some(ck) => {
            let job = Checkpointed {
                name: &name,
                graph,
                plan: &plan,
                config,
                ck,
                clock: clock.clone(),
                listener: listener.as_ref(),
                faults: faults.as_ref(),
                observer: &observer,
            };
            let (deployment, recovery) = job.deploy().await?;
            (deployment, Some(recovery))
        }
    };
    let description = plan.describe(graph);
    info!(job = %name, "submitting job:\n{description}");
    let metrics = Arc::new(JobMetrics::new(deployment.metrics.clone(), observer));
    let (tx, rx) = oneshot::channel();
    let (supervisor, _) = Actor::spawn(
        None,
        JobSupervisor,
        SupervisorArgs {
            job: name.clone(),
            deployment,
            result: tx,
            metrics: metrics.clone(),
            cancel_timeout: config.cancel_timeout,
            metrics_interval: config.metrics_interval,
            recovery,
            listener,
        },
    )
    .await
    .map_err(|e| JobError::Internal(format!("could not start the job supervisor: {e}")))?;
    Ok(JobHandle {
        name,
        plan: description,
        control: JobControl {
            supervisor,
            metrics,
        },
        result: rx,
    })
}

/// How `ck` checkpoints, as the REST API shows it.
fn checkpoint_config_info(ck: &CheckpointConfig) -> CheckpointConfigInfo {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let s = &ck.settings;
    CheckpointConfigInfo {
        mode: match s.mode {
            CheckpointingMode::ExactlyOnce => "EXACTLY_ONCE",
            CheckpointingMode::AtLeastOnce => "AT_LEAST_ONCE",
        },
        interval_ms: ms(s.interval),
        timeout_ms: ms(s.timeout),
        min_pause_ms: ms(s.min_pause),
        max_concurrent: u32::try_from(s.max_concurrent).unwrap_or(u32::MAX),
        unaligned: s.unaligned,
        aligned_timeout_ms: s.aligned_timeout.map_or(0, ms),
        tolerable_failed: s.tolerable_failures,
        retained: s.retained,
        incremental: s.incremental,
        store: ck.store.location(),
    }
}

/// The job's processing-time clock: the system's, or a fixed origin for tests.
fn processing_clock(config: &JobConfig) -> ProcessingClock {
    match config.processing_time_origin {
        Some(ms) => ProcessingClock::starting_at(crate::types::Timestamp(ms)),
        None => ProcessingClock::system(),
    }
}

/// The first deployment of a job with checkpointing.
struct Checkpointed<'a> {
    name: &'a Arc<str>,
    graph: &'a StreamGraph,
    plan: &'a ExecutionPlan,
    config: &'a JobConfig,
    ck: &'a CheckpointConfig,
    clock: ProcessingClock,
    listener: Option<&'a JobListener>,
    faults: Option<&'a FaultPlan>,
    observer: &'a Arc<JobObserver>,
}

impl Checkpointed<'_> {
    /// Chooses the checkpoint to restore, starts the coordinator, deploys every subtask with
    /// its share of the restored state, and returns what the supervisor needs to restart
    /// regions later.
    async fn deploy(&self) -> Result<(Deployment, Recovery), JobError> {
        let snapshot = self.snapshot_to_restore()?;
        let restore = snapshot.as_ref().map(RestorePlan::new).transpose()?;
        let restored = snapshot.as_ref().map(|s| (s.manifest.id, s.manifest.kind));
        let coordinator = self.start_coordinator(restored).await?;
        let regions = Regions::new(self.graph, self.plan);
        let ctx = DeployContext {
            restore: restore.as_ref(),
            coordinator: Some(coordinator.clone()),
            regions: Some(&regions),
            only: None,
            faults: self.faults,
        };
        let deployed = deploy(self.graph, self.plan, self.config, self.clock.clone(), &ctx)
            .and_then(|d| {
                if let Some(r) = &restore {
                    r.check_all_placed(self.ck.allow_non_restored_state)?;
                }
                Ok(d)
            });
        let deployment = match deployed {
            Ok(d) => d,
            Err(e) => {
                coordinator.stop(None);
                return Err(e.into());
            }
        };
        if let Some(r) = &restore {
            info!(job = %self.name, checkpoint = %r.checkpoint, "restoring");
        }
        let restored = JobEvent::Restored {
            checkpoint: restore.as_ref().map(|r| r.checkpoint),
            generation: 0,
        };
        if restore.is_some() {
            self.observer.event(&restored);
        }
        if let Some(l) = self.listener {
            l(&restored);
        }
        let recovery = Recovery {
            graph: self.graph.clone(),
            plan: self.plan.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            coordinator,
            store: self.ck.store.clone(),
            tracker: RestartTracker::new(self.ck.restart.clone()),
            faults: self.faults.cloned(),
            regions,
        };
        Ok((deployment, recovery))
    }

    /// The stored checkpoint or savepoint the configuration asks to restore, if any. Never a
    /// silent fresh start: a restore that finds nothing, or a damaged store, is an error
    /// (except [`RestoreFrom::LatestOrFresh`] on a store that never completed a checkpoint).
    fn snapshot_to_restore(&self) -> Result<Option<Snapshot>, JobError> {
        let ck = self.ck;
        let restore_error = |e: StoreError| JobError::Build(BuildError::Restore(e.to_string()));
        // The newest completed checkpoint of `store`, or an error: never a fresh start.
        let latest = |store: &dyn SnapshotStore| match newest_completed(store) {
            Ok(Some(s)) => Ok(Some(s)),
            Ok(None) => Err(JobError::Build(BuildError::Restore(format!(
                "the checkpoint store {} holds no completed checkpoint. Run the job without a \
                 restore to start it fresh, or restore with RestoreFrom::LatestOrFresh \
                 (`--restore latest-or-fresh`) to start fresh when a store never completed \
                 a checkpoint",
                store.location()
            )))),
            Err(e) => Err(restore_error(e)),
        };
        match &ck.restore {
            None => Ok(None),
            Some(RestoreFrom::Latest) => latest(ck.store.as_ref()),
            Some(RestoreFrom::LatestOrFresh) => {
                let s = newest_completed(ck.store.as_ref()).map_err(restore_error)?;
                if s.is_none() {
                    warn!(
                        job = %self.name,
                        store = %ck.store.location(),
                        "the checkpoint store never completed a checkpoint: starting from scratch"
                    );
                }
                Ok(s)
            }
            Some(RestoreFrom::Checkpoint(id)) => {
                let s = ck.store.load(*id).map_err(restore_error)?;
                if let Ok(Some(head)) = ck.store.head()
                    && head.id > *id
                {
                    warn!(
                        job = %self.name,
                        restoring = %id,
                        newest_completed = %head.id,
                        "restoring checkpoint {id}, older than the newest completed checkpoint {}: output that sinks committed after checkpoint {id} may be produced again",
                        head.id
                    );
                }
                Ok(Some(s))
            }
            Some(RestoreFrom::Store(store)) => latest(store.as_ref()),
        }
    }

    /// Starts the checkpoint coordinator actor for every subtask of the plan; its ids continue
    /// after the newest checkpoint already in the store.
    async fn start_coordinator(
        &self,
        restored: Option<(CheckpointId, CheckpointKind)>,
    ) -> Result<ActorRef<CoordinatorMsg>, JobError> {
        let tasks: Vec<_> = self
            .plan
            .vertices
            .iter()
            .flat_map(|v| (0..v.parallelism as usize).map(move |i| (v.id.0, i)))
            .collect();
        let newest_in_store = self
            .ck
            .store
            .list()
            .map_err(|e| JobError::Internal(format!("cannot read the checkpoint store: {e}")))?
            .into_iter()
            .max();
        let (coordinator, _) = Actor::spawn(
            None,
            CoordinatorActor,
            CoordinatorArgs {
                job: self.name.clone(),
                settings: self.ck.settings.clone(),
                store: self.ck.store.clone(),
                tasks,
                restored,
                newest_in_store,
                listener: self.listener.cloned(),
                observer: self.observer.clone(),
            },
        )
        .await
        .map_err(|e| {
            JobError::Internal(format!("could not start the checkpoint coordinator: {e}"))
        })?;
        Ok(coordinator)
    }
}
