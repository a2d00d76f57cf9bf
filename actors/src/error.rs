//! Errors: [`BuildError`] for a pipeline that cannot run, [`JobError`] for a job that did not
//! finish, [`SubtaskFailure`] for what failed where.

use crate::types::NodeId;
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

/// The error type user functions return: any error, boxed.
pub type UserError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Names an operator in messages: its name, id, and where the pipeline code created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorLabel {
    /// The operator's id in the stream graph.
    pub id: NodeId,
    /// The operator's name (set with `name(...)`, or a default such as `Map`).
    pub name: Arc<str>,
    /// Where in the user's code the operator was added.
    pub location: Option<&'static Location<'static>>,
}

impl OperatorLabel {
    /// A label without a source location.
    pub fn new(id: NodeId, name: impl Into<Arc<str>>) -> Self {
        OperatorLabel {
            id,
            name: name.into(),
            location: None,
        }
    }
}

impl fmt::Display for OperatorLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operator '{}' (id {}", self.name, self.id)?;
        if let Some(loc) = self.location {
            write!(
                f,
                ", defined at {}:{}:{}",
                loc.file(),
                loc.line(),
                loc.column()
            )?;
        }
        f.write_str(")")
    }
}

/// The pipeline cannot run as built. Every variant names what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Nothing was added to the environment.
    #[error("the pipeline is empty: add a source, transformations and a sink before executing")]
    EmptyPipeline,
    /// An operator's parallelism is zero.
    #[error("{operator}: parallelism must be at least 1, got {value}")]
    InvalidParallelism {
        /// The operator.
        operator: OperatorLabel,
        /// The value given.
        value: u32,
    },
    /// An operator's max parallelism is outside `1..=32768`.
    #[error("{operator}: max parallelism must be in 1..=32768, got {value}")]
    InvalidMaxParallelism {
        /// The operator.
        operator: OperatorLabel,
        /// The value given.
        value: u32,
    },
    /// An operator's max parallelism is below its parallelism.
    #[error(
        "{operator}: max parallelism {max_parallelism} is below its parallelism {parallelism}; \
         raise the max parallelism (it fixes the number of key groups) or lower the parallelism"
    )]
    MaxParallelismBelowParallelism {
        /// The operator.
        operator: OperatorLabel,
        /// Its parallelism.
        parallelism: u32,
        /// Its max parallelism.
        max_parallelism: u32,
    },
    /// An operator's output reaches no sink.
    #[error(
        "{operator} has no path to a sink: its output is never consumed; add a sink or remove it"
    )]
    NoPathToSink {
        /// The operator.
        operator: OperatorLabel,
    },
    /// A forward edge joins operators of different parallelism.
    #[error(
        "forward partitioning from {from} (parallelism {from_parallelism}) to {to} \
         (parallelism {to_parallelism}) needs equal parallelism; use rebalance() or rescale()"
    )]
    ForwardParallelismMismatch {
        /// Upstream operator.
        from: OperatorLabel,
        /// Its parallelism.
        from_parallelism: u32,
        /// Downstream operator.
        to: OperatorLabel,
        /// Its parallelism.
        to_parallelism: u32,
    },
    /// A source that cannot run in parallel was given parallelism above its limit.
    #[error("{operator} supports parallelism at most {max}, got {parallelism}")]
    SourceParallelism {
        /// The source.
        operator: OperatorLabel,
        /// The parallelism requested.
        parallelism: u32,
        /// The source's limit.
        max: u32,
    },
    /// A non-parallel operator (`window_all`, as Flink's `windowAll`) was given a parallelism
    /// above 1.
    #[error(
        "{operator} is non-parallel (window_all gathers every record in one subtask, as \
         Flink's windowAll) and runs at parallelism 1, got {parallelism}; key the stream with \
         key_by(..).window(..) to run windows in parallel"
    )]
    NonParallelOperator {
        /// The operator.
        operator: OperatorLabel,
        /// The parallelism requested.
        parallelism: u32,
    },
    /// Batch mode with a source that never ends.
    #[error(
        "{operator} is unbounded, but batch mode needs every source to be bounded (a source \
         closure is unbounded unless declared with SourceFn::new(f).bounded())"
    )]
    UnboundedSourceInBatchMode {
        /// The source.
        operator: OperatorLabel,
    },
    /// Two operators share a uid.
    #[error("uid '{uid}' is used by both {first} and {second}; uids must be unique within a job")]
    DuplicateUid {
        /// The uid.
        uid: String,
        /// First operator with it.
        first: OperatorLabel,
        /// Second operator with it.
        second: OperatorLabel,
    },
    /// A source or sink could not be set up (e.g. a missing input file).
    #[error("{operator}: {message}")]
    Setup {
        /// The source or sink.
        operator: OperatorLabel,
        /// What went wrong.
        message: String,
    },
    /// An environment setting is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The requested restore cannot be done: there is nothing to restore, or the store is
    /// damaged. The message says what was found and how to go on; the job never falls back
    /// to a fresh start by itself.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// The pipeline-building API was misused.
    #[error("{message} (at {}:{}:{})", location.file(), location.line(), location.column())]
    Api {
        /// What was wrong.
        message: String,
        /// Where the call was made.
        location: &'static Location<'static>,
    },
}

/// Why a subtask failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FailureCause {
    /// A user function panicked; the panic message.
    Panic(String),
    /// A user function returned an error.
    Error(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// A peer subtask disappeared (it failed or was cancelled first). Never the root cause
    /// when another failure is known.
    PeerGone,
    /// The runtime itself hit an unexpected state.
    Internal(String),
}

impl FailureCause {
    /// True for a failure that happened because another subtask failed first.
    pub fn is_secondary(&self) -> bool {
        matches!(self, FailureCause::PeerGone)
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Panic(msg) => write!(f, "panicked: {msg}"),
            FailureCause::Error(e) => write!(f, "{e}"),
            FailureCause::PeerGone => f.write_str("a connected subtask went away"),
            FailureCause::Internal(msg) => write!(f, "internal error: {msg}"),
        }
    }
}

/// A subtask failed: which operator, which parallel instance, and why.
#[derive(Debug, Clone)]
pub struct SubtaskFailure {
    /// The operator whose code failed (within the subtask's chain).
    pub operator: OperatorLabel,
    /// The name of the subtask's chain (job vertex), e.g. `Source: numbers -> Map`.
    pub vertex: Arc<str>,
    /// The failed subtask's index, from 0.
    pub subtask_index: usize,
    /// The parallelism of the job vertex.
    pub parallelism: u32,
    /// What happened.
    pub cause: FailureCause,
}

impl fmt::Display for SubtaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed in subtask {} ({}/{}) of '{}': {}",
            self.operator,
            self.subtask_index,
            self.subtask_index + 1,
            self.parallelism,
            self.vertex,
            self.cause
        )
    }
}

impl std::error::Error for SubtaskFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            FailureCause::Error(e) => Some(e.as_ref() as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

/// A job did not finish successfully.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job could not start (an invalid pipeline, or a restore that cannot be done);
    /// nothing ran.
    #[error("job not started: {0}")]
    Build(#[from] BuildError),
    /// A subtask failed; the job was stopped. The root cause, if several subtasks failed.
    #[error("job failed: {0}")]
    Failed(Box<SubtaskFailure>),
    /// The job was cancelled.
    #[error("the job was cancelled")]
    Cancelled,
    /// The runtime could not start or supervise the job.
    #[error("internal error: {0}")]
    Internal(String),
}

impl JobError {
    /// The subtask failure, if that is what ended the job.
    pub fn failure(&self) -> Option<&SubtaskFailure> {
        match self {
            JobError::Failed(f) => Some(f),
            _ => None,
        }
    }
}

/// Turns a panic payload into its message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
