//! Sinks: where records leave a job.
//!
//! A [`Sink`] receives batches asynchronously: a slow sink makes its subtask busy, and the
//! bounded lanes carry that backpressure to the sources.

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Data, DataBatch, Emission, SideOutputs};
use crate::dataplane::partition::BoxFuture;
use crate::error::UserError;
use crate::operators::operator::{OperatorFault, TaskInfo};
use crate::types::CheckpointId;
use std::future::Future;

/// A sink: one instance per sink subtask.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::{Batch, Sink, UserError};
/// /// Counts what it receives.
/// struct Count(u64);
/// impl Sink for Count {
///     type Input = String;
///     async fn write_batch(&mut self, batch: Batch<String>) -> Result<(), UserError> {
///         self.0 += batch.len() as u64;
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send + 'static {
    /// The records this sink takes.
    type Input: Data;

    /// Writes a batch. The subtask waits for the future before taking more input.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask; the job reports it with the sink's name.
    fn write_batch(
        &mut self,
        batch: Batch<Self::Input>,
    ) -> impl Future<Output = Result<(), UserError>> + Send;

    /// Called once before the first batch.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> impl Future<Output = Result<(), UserError>> + Send {
        let _ = info;
        async { Ok(()) }
    }

    /// Called once at end of input, after the last batch: flush and close.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn finish(&mut self) -> impl Future<Output = Result<(), UserError>> + Send {
        async { Ok(()) }
    }

    /// A checkpoint's barrier reached the sink: everything written before it belongs to the
    /// checkpoint. A transactional sink pre-commits here and records the pending transaction
    /// as a list item; the default writes nothing.
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> impl Future<Output = Result<(), UserError>> + Send {
        let _ = (checkpoint, state);
        async { Ok(()) }
    }

    /// Takes the sink's state from a checkpoint (after [`open`](Self::open)): a transactional
    /// sink commits the pending transactions it finds (commits are idempotent) and aborts
    /// leftovers of the failed attempt.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn restore_state(
        &mut self,
        restored: RestoredState,
    ) -> impl Future<Output = Result<(), UserError>> + Send {
        let _ = restored;
        async { Ok(()) }
    }

    /// Checkpoint `checkpoint` completed: commit what was pre-committed up to it.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> impl Future<Output = Result<(), UserError>> + Send {
        let _ = checkpoint;
        async { Ok(()) }
    }

    /// True if the sink holds transactions that only a completed checkpoint commits: at end of
    /// input its subtask then waits for the job's final checkpoint before it ends.
    fn is_transactional(&self) -> bool {
        false
    }

    /// Where the sink puts side-output records (records an external system refused, for
    /// example), if it has any: the runtime takes them after every call into the sink and
    /// sends them to the streams of `DataStreamSink::get_side_output`, in order with the
    /// sink's input — records set aside before a checkpoint's barrier travel before that
    /// barrier, so a transactional sink's side output is exactly once too.
    ///
    /// A sink's side output must be read: records for a tag nobody reads fail the subtask
    /// (they would be lost), as do records emitted after [`finish`](Self::finish) has
    /// returned (the side output has ended).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow_runtime::{Batch, OutputTag, SideOutputs, Sink, UserError};
    /// /// Keeps even numbers, sets the odd ones aside.
    /// struct Evens {
    ///     odd: OutputTag<u64>,
    ///     side: SideOutputs,
    /// }
    /// impl Sink for Evens {
    ///     type Input = u64;
    ///     async fn write_batch(&mut self, batch: Batch<u64>) -> Result<(), UserError> {
    ///         for v in batch.values() {
    ///             if v % 2 == 1 {
    ///                 self.side.output(&self.odd, *v);
    ///             }
    ///         }
    ///         Ok(())
    ///     }
    ///     fn side_outputs(&mut self) -> Option<&mut SideOutputs> {
    ///         Some(&mut self.side)
    ///     }
    /// }
    /// ```
    fn side_outputs(&mut self) -> Option<&mut SideOutputs> {
        None
    }
}

/// The object-safe form of a sink. Implement [`Sink`] and use [`erase_sink`].
pub trait ErasedSink: Send {
    /// See [`Sink::open`].
    fn open<'a>(&'a mut self, info: &'a TaskInfo) -> BoxFuture<'a, Result<(), UserError>>;
    /// See [`Sink::write_batch`].
    fn write(&mut self, batch: DataBatch) -> BoxFuture<'_, Result<(), OperatorFault>>;
    /// See [`Sink::finish`].
    fn finish(&mut self) -> BoxFuture<'_, Result<(), UserError>>;
    /// See [`Sink::snapshot_state`].
    fn snapshot_state<'a>(
        &'a mut self,
        checkpoint: CheckpointId,
        state: &'a mut OperatorState,
    ) -> BoxFuture<'a, Result<(), UserError>>;
    /// See [`Sink::restore_state`].
    fn restore_state(&mut self, restored: RestoredState) -> BoxFuture<'_, Result<(), UserError>>;
    /// See [`Sink::notify_checkpoint_complete`].
    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, Result<(), UserError>>;
    /// See [`Sink::is_transactional`].
    fn is_transactional(&self) -> bool;
    /// Moves the side-output records of [`Sink::side_outputs`] into `into`.
    fn take_side_outputs(&mut self, into: &mut Vec<Emission>);
}

struct ErasedSinkImpl<S>(S);

impl<S: Sink> ErasedSink for ErasedSinkImpl<S> {
    fn open<'a>(&'a mut self, info: &'a TaskInfo) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(self.0.open(info))
    }

    fn write(&mut self, batch: DataBatch) -> BoxFuture<'_, Result<(), OperatorFault>> {
        Box::pin(async move {
            let batch = batch.downcast::<S::Input>().map_err(OperatorFault::Type)?;
            self.0.write_batch(batch).await.map_err(OperatorFault::User)
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(self.0.finish())
    }

    fn snapshot_state<'a>(
        &'a mut self,
        checkpoint: CheckpointId,
        state: &'a mut OperatorState,
    ) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(self.0.snapshot_state(checkpoint, state))
    }

    fn restore_state(&mut self, restored: RestoredState) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(self.0.restore_state(restored))
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(self.0.notify_checkpoint_complete(checkpoint))
    }

    fn is_transactional(&self) -> bool {
        self.0.is_transactional()
    }

    fn take_side_outputs(&mut self, into: &mut Vec<Emission>) {
        if let Some(side) = self.0.side_outputs()
            && !side.is_empty()
        {
            side.take_emissions(into);
        }
    }
}

/// Turns a typed sink into the form the runtime drives.
pub fn erase_sink<S: Sink>(sink: S) -> Box<dyn ErasedSink> {
    Box::new(ErasedSinkImpl(sink))
}

/// Creates one sink instance per sink subtask.
pub trait SinkFactory: Send + Sync {
    /// A fresh instance for the subtask described by `info`.
    ///
    /// # Errors
    ///
    /// A message saying why the sink cannot be set up (e.g. the output file exists); the job
    /// does not start.
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn ErasedSink>, String>;
}
