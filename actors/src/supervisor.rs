//! The actors: one [`SubtaskActor`] per subtask, supervised by one [`JobSupervisor`].
//!
//! The supervisor spawns every subtask actor linked to itself, so ractor reports each one's end
//! as a supervision event: `ActorTerminated` when it finished (or stopped on cancellation),
//! `ActorFailed` with the [`SubtaskFailure`] when user code returned an error or panicked.
//! On the first failure, or on a cancel request, it sends `Cancel` on every subtask's priority
//! lane; subtasks still running after the cancel timeout are killed. When every subtask has
//! ended it reports the job's result: success, the root-cause failure, or cancellation.
//! (Restarting failed regions from checkpoints is a later step.)

use crate::deploy::Deployment;
use crate::error::{FailureCause, JobError, OperatorLabel, SubtaskFailure};
use crate::job::{JobMetrics, JobResult};
use crate::lane::LaneSender;
use crate::message::PriorityMessage;
use crate::metrics::SubtaskStatus;
use crate::subtask::Subtask;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
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

impl Actor for SubtaskActor {
    type Msg = SubtaskCommand;
    type State = Option<Subtask>;
    type Arguments = Subtask;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Subtask,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Some(args))
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
                let Some(subtask) = state.take() else {
                    return Ok(());
                };
                let span = subtask.span();
                match subtask.run().instrument(span).await {
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

/// Requests to the job supervisor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SupervisorMsg {
    /// Cancel the job.
    Cancel,
    /// The grace period after a cancel ran out: kill what still runs.
    CancelTimeout,
    /// Log every subtask's metrics.
    LogMetrics,
}

struct ChildInfo {
    vertex: Arc<str>,
    index: usize,
    parallelism: u32,
    head: OperatorLabel,
}

pub(crate) struct SupervisorArgs {
    pub(crate) job: Arc<str>,
    pub(crate) deployment: Deployment,
    pub(crate) result: oneshot::Sender<Result<JobResult, JobError>>,
    pub(crate) metrics: Arc<JobMetrics>,
    pub(crate) cancel_timeout: Duration,
    pub(crate) metrics_interval: Option<Duration>,
}

pub(crate) struct SupervisorState {
    job: Arc<str>,
    children: HashMap<ActorId, usize>,
    cells: Vec<Option<ActorCell>>,
    info: Vec<ChildInfo>,
    priority: Vec<LaneSender<PriorityMessage>>,
    failures: Vec<SubtaskFailure>,
    cancelling: bool,
    cancel_requested: bool,
    result: Option<oneshot::Sender<Result<JobResult, JobError>>>,
    metrics: Arc<JobMetrics>,
    cancel_timeout: Duration,
    metrics_interval: Option<Duration>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// Supervises the subtasks of one job.
pub(crate) struct JobSupervisor;

impl SupervisorState {
    fn begin_cancel(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.cancelling {
            return;
        }
        self.cancelling = true;
        for (i, p) in self.priority.iter().enumerate() {
            if self.cells[i].is_some() && p.try_send(PriorityMessage::Cancel).is_err() {
                warn!(job = %self.job, subtask = i, "priority lane full; the subtask will be killed after the cancel timeout");
            }
        }
        ractor::time::send_after(self.cancel_timeout, myself.get_cell(), || {
            SupervisorMsg::CancelTimeout
        });
    }

    fn outcome(&mut self) -> Result<JobResult, JobError> {
        let failure = self
            .failures
            .iter()
            .position(|f| !f.cause.is_secondary())
            .or(if self.cancel_requested || self.failures.is_empty() {
                None
            } else {
                Some(0)
            })
            .map(|i| self.failures.swap_remove(i));
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
        let Deployment {
            subtasks, priority, ..
        } = args.deployment;
        let mut state = SupervisorState {
            job: args.job,
            children: HashMap::new(),
            cells: Vec::with_capacity(subtasks.len()),
            info: Vec::with_capacity(subtasks.len()),
            priority,
            failures: Vec::new(),
            cancelling: false,
            cancel_requested: false,
            result: Some(args.result),
            metrics: args.metrics,
            cancel_timeout: args.cancel_timeout,
            metrics_interval: args.metrics_interval,
            ticker: None,
        };
        for (i, subtask) in subtasks.into_iter().enumerate() {
            state.info.push(ChildInfo {
                vertex: subtask.vertex.clone(),
                index: subtask.index,
                parallelism: subtask.parallelism,
                head: subtask.head_label.clone(),
            });
            let (actor, _) =
                Actor::spawn_linked(None, SubtaskActor, subtask, myself.get_cell()).await?;
            state.children.insert(actor.get_id(), i);
            state.cells.push(Some(actor.get_cell()));
        }
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
                if !state.cancelling {
                    info!(job = %state.job, "cancel requested");
                    state.cancel_requested = true;
                    state.begin_cancel(&myself);
                }
            }
            SupervisorMsg::CancelTimeout => {
                for (i, cell) in state.cells.iter().enumerate() {
                    if let Some(cell) = cell {
                        warn!(job = %state.job, vertex = %state.info[i].vertex, index = state.info[i].index,
                            "subtask did not stop within the cancel timeout; killing it");
                        cell.kill();
                    }
                }
            }
            SupervisorMsg::LogMetrics => {
                for s in state.metrics.snapshot().subtasks {
                    info!(target: "actorflow::metrics", job = %state.job, "{s}");
                }
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
                    state.failures.push(failure);
                    state.begin_cancel(&myself);
                }
            }
            _ => {}
        }
        if state.children.is_empty()
            && let Some(tx) = state.result.take()
        {
            let outcome = state.outcome();
            match &outcome {
                Ok(r) => info!(job = %state.job, duration = ?r.duration, "job finished"),
                Err(e) => info!(job = %state.job, "job ended: {e}"),
            }
            for s in state.metrics.snapshot().subtasks {
                debug!(target: "actorflow::metrics", job = %state.job, "final: {s}");
            }
            let _ = tx.send(outcome);
            myself.stop(None);
        }
        Ok(())
    }
}
