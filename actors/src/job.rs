//! Submitting a job and following it: [`submit`], [`JobHandle`], [`JobResult`].

use crate::checkpoint::{JobEvent, RestoreFrom};
use crate::checkpointing::{CoordinatorActor, CoordinatorArgs, RestorePlan};
use crate::clock::ProcessingClock;
use crate::config::JobConfig;
use crate::deploy::{DeployContext, Regions, deploy};
use crate::error::BuildError;
use crate::error::JobError;
use crate::fault::FaultPlan;
use crate::graph::StreamGraph;
use crate::metrics::{JobMetricsSnapshot, SubtaskMetrics};
use crate::plan::plan;
use crate::restart::RestartTracker;
use crate::snapshot::latest_valid;
use crate::supervisor::Recovery;
use crate::supervisor::{JobSupervisor, SupervisorArgs, SupervisorMsg};
use crate::types::CheckpointId;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

/// The live metrics of a job's subtasks (replaced on every restart).
#[derive(Debug)]
pub(crate) struct JobMetrics {
    started: Instant,
    subtasks: std::sync::RwLock<Vec<Arc<SubtaskMetrics>>>,
    pub(crate) restarts: std::sync::atomic::AtomicU32,
}

impl JobMetrics {
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn subtask(&self, i: usize) -> Option<Arc<SubtaskMetrics>> {
        self.subtasks.read().ok().and_then(|s| s.get(i).cloned())
    }

    pub(crate) fn replace(&self, subtasks: Vec<Arc<SubtaskMetrics>>) {
        if let Ok(mut s) = self.subtasks.write() {
            *s = subtasks;
        }
    }

    /// Replaces the metrics of subtask slot `i` (a restarted region's subtask).
    pub(crate) fn replace_at(&self, i: usize, metrics: Arc<SubtaskMetrics>) {
        if let Ok(mut s) = self.subtasks.write()
            && let Some(slot) = s.get_mut(i)
        {
            *slot = metrics;
        }
    }

    pub(crate) fn snapshot(&self) -> JobMetricsSnapshot {
        JobMetricsSnapshot {
            elapsed: self.started.elapsed(),
            subtasks: self
                .subtasks
                .read()
                .map(|s| s.iter().map(|m| m.snapshot()).collect())
                .unwrap_or_default(),
            restarts: self.restarts.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// What a successful job reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Wall time from start to end.
    pub duration: Duration,
    /// Every subtask's final metrics.
    pub metrics: JobMetricsSnapshot,
}

/// A cloneable handle that reads metrics of, and cancels, a running job.
#[derive(Debug, Clone)]
pub struct JobControl {
    supervisor: ActorRef<SupervisorMsg>,
    metrics: Arc<JobMetrics>,
}

impl JobControl {
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
    let clock = match config.processing_time_origin {
        Some(ms) => ProcessingClock::starting_at(crate::types::Timestamp(ms)),
        None => ProcessingClock::system(),
    };
    let name: Arc<str> = name.into();
    let listener = config.listener.as_ref().map(|l| l.0.clone());
    let mut recovery = None;
    let deployment = match &config.checkpointing {
        None => deploy(
            graph,
            &plan,
            config,
            clock.clone(),
            &DeployContext::default(),
        )?,
        Some(ck) => {
            let snapshot = match &ck.restore {
                None => None,
                Some(RestoreFrom::Latest) => latest_valid(ck.store.as_ref()).map_err(|e| {
                    JobError::Internal(format!("cannot read the checkpoint store: {e}"))
                })?,
                Some(RestoreFrom::Checkpoint(id)) => Some(ck.store.load(*id).map_err(|e| {
                    JobError::Build(BuildError::InvalidConfig(format!(
                        "cannot restore checkpoint {id}: {e}"
                    )))
                })?),
                Some(RestoreFrom::Store(store)) => Some(
                    latest_valid(store.as_ref())
                        .map_err(|e| {
                            JobError::Internal(format!("cannot read the savepoint store: {e}"))
                        })?
                        .ok_or_else(|| {
                            JobError::Build(BuildError::InvalidConfig(
                                "the savepoint store holds no valid savepoint or checkpoint".into(),
                            ))
                        })?,
                ),
            };
            if matches!(ck.restore, Some(RestoreFrom::Latest)) && snapshot.is_none() {
                info!(job = %name, "no checkpoint to restore: starting from scratch");
            }
            let restore = snapshot.as_ref().map(RestorePlan::new).transpose()?;
            let regions = Regions::new(graph, &plan);
            let tasks: Vec<_> = plan
                .vertices
                .iter()
                .flat_map(|v| (0..v.parallelism as usize).map(move |i| (v.id.0, i)))
                .collect();
            let (coordinator, _) = Actor::spawn(
                None,
                CoordinatorActor,
                CoordinatorArgs {
                    job: name.clone(),
                    settings: ck.settings.clone(),
                    store: ck.store.clone(),
                    tasks,
                    restored: snapshot.as_ref().map(|s| (s.manifest.id, s.manifest.kind)),
                    newest_in_store: ck
                        .store
                        .list()
                        .map_err(|e| {
                            JobError::Internal(format!("cannot read the checkpoint store: {e}"))
                        })?
                        .into_iter()
                        .max(),
                    listener: listener.clone(),
                },
            )
            .await
            .map_err(|e| {
                JobError::Internal(format!("could not start the checkpoint coordinator: {e}"))
            })?;
            let ctx = DeployContext {
                restore: restore.as_ref(),
                coordinator: Some(coordinator.clone()),
                regions: Some(&regions),
                only: None,
                faults: faults.as_ref(),
            };
            let deployed = deploy(graph, &plan, config, clock.clone(), &ctx).and_then(|d| {
                if let Some(r) = &restore {
                    r.check_all_placed(ck.allow_non_restored_state)?;
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
                info!(job = %name, checkpoint = %r.checkpoint, "restoring");
            }
            if let Some(l) = &listener {
                l(&JobEvent::Restored {
                    checkpoint: restore.as_ref().map(|r| r.checkpoint),
                    generation: 0,
                });
            }
            recovery = Some(Recovery {
                graph: graph.clone(),
                plan: plan.clone(),
                config: config.clone(),
                clock: clock.clone(),
                coordinator,
                store: ck.store.clone(),
                tracker: RestartTracker::new(ck.restart.clone()),
                faults: faults.clone(),
                regions,
            });
            deployment
        }
    };
    let description = plan.describe(graph);
    info!(job = %name, "submitting job:\n{description}");
    let metrics = Arc::new(JobMetrics {
        started: Instant::now(),
        subtasks: std::sync::RwLock::new(deployment.metrics.clone()),
        restarts: Default::default(),
    });
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
