//! Submitting a job and following it: [`submit`], [`JobHandle`], [`JobResult`].

use crate::clock::ProcessingClock;
use crate::config::JobConfig;
use crate::deploy::deploy;
use crate::error::JobError;
use crate::graph::StreamGraph;
use crate::metrics::{JobMetricsSnapshot, SubtaskMetrics};
use crate::plan::plan;
use crate::supervisor::{JobSupervisor, SupervisorArgs, SupervisorMsg};
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

/// The live metrics of a job's subtasks.
#[derive(Debug)]
pub(crate) struct JobMetrics {
    started: Instant,
    subtasks: Vec<Arc<SubtaskMetrics>>,
}

impl JobMetrics {
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn subtask(&self, i: usize) -> Option<&SubtaskMetrics> {
        self.subtasks.get(i).map(Arc::as_ref)
    }

    pub(crate) fn snapshot(&self) -> JobMetricsSnapshot {
        JobMetricsSnapshot {
            elapsed: self.started.elapsed(),
            subtasks: self.subtasks.iter().map(|m| m.snapshot()).collect(),
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
    let plan = plan(graph, config)?;
    let clock = match config.processing_time_origin {
        Some(ms) => ProcessingClock::starting_at(crate::types::Timestamp(ms)),
        None => ProcessingClock::system(),
    };
    let deployment = deploy(graph, &plan, config, clock)?;
    let description = plan.describe(graph);
    info!(job = name, "submitting job:\n{description}");
    let metrics = Arc::new(JobMetrics {
        started: Instant::now(),
        subtasks: deployment.metrics.clone(),
    });
    let (tx, rx) = oneshot::channel();
    let name: Arc<str> = name.into();
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
