//! Sources: where records enter a job.
//!
//! A [`Source`] is pulled by its subtask: [`Source::next_batch`] emits up to about one batch of
//! records and says whether more may come. Between calls the subtask checks its priority lane
//! and its output buffers, so sources need no threads or callbacks of their own.

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Collector, Data, Emission};
use crate::dataplane::partition::BoxFuture;
use crate::error::UserError;
use crate::operators::operator::TaskInfo;
use crate::types::CheckpointId;
use std::future::Future;

/// What a source says after a call to [`Source::next_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// Call again: more records may come.
    More,
    /// The input is exhausted (a bounded source); the subtask sends end of input downstream.
    End,
}

/// A source of records: one instance per source subtask.
///
/// # Cancel safety
///
/// The future returned by [`next_batch`](Self::next_batch) may be dropped before it completes
/// (when a priority message or the buffer timeout needs the subtask). Records already emitted
/// into `out` are kept and sent; the source must not lose records it had read but not yet
/// emitted. Waiting on tokio I/O with `read`/`read_buf` or on a timer is cancel-safe.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::{Collector, Source, SourceStatus, UserError};
/// /// Counts down from `n` to 1.
/// struct Countdown(u64);
/// impl Source for Countdown {
///     type Output = u64;
///     async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
///         for _ in 0..1024 {
///             if self.0 == 0 {
///                 return Ok(SourceStatus::End);
///             }
///             out.collect(self.0);
///             self.0 -= 1;
///         }
///         Ok(SourceStatus::More)
///     }
/// }
/// ```
pub trait Source: Send + 'static {
    /// The records this source produces.
    type Output: Data;

    /// Emits the next records into `out` (about one batch; fewer is fine, and none while
    /// waiting for input is fine too).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask; the job reports it with the source's name.
    fn next_batch(
        &mut self,
        out: &mut Collector<Self::Output>,
    ) -> impl Future<Output = Result<SourceStatus, UserError>> + Send;

    /// Called once before the first [`next_batch`](Self::next_batch).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> impl Future<Output = Result<(), UserError>> + Send {
        let _ = info;
        async { Ok(()) }
    }

    /// Writes the source's position into a checkpoint, as list items (one per split: a file and
    /// its byte offset, a range of a collection), so a restore at another parallelism can
    /// spread them. Called between two calls of [`next_batch`](Self::next_batch): the position
    /// is just after the last record emitted.
    ///
    /// The default writes nothing: the source restarts from its beginning (or, for a source
    /// that cannot replay, such as a socket, goes on from where the new connection is: at
    /// most once).
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        let _ = (checkpoint, state);
        Ok(())
    }

    /// Takes the position from a checkpoint (after [`open`](Self::open), before the first
    /// [`next_batch`](Self::next_batch)).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let _ = restored;
        Ok(())
    }

    /// Checkpoint `checkpoint` (or an older one this one subsumes) completed: the position
    /// this source wrote into it is durable, and the external system may be told (a Kafka
    /// consumer group's offsets, a replication slot's confirmed position). Called between
    /// two calls of [`next_batch`](Self::next_batch).
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

    /// True if the source tells an external system about completed checkpoints (see
    /// [`notify_checkpoint_complete`](Self::notify_checkpoint_complete)): after it ends, its
    /// subtask then waits for the job's final checkpoint and hands it that one too.
    fn notifies_external_system(&self) -> bool {
        false
    }

    /// False while the source cannot record a position it could resume from — reading an
    /// initial snapshot of a database that a restart could not continue, for example. A
    /// checkpoint triggered meanwhile **waits** (the source keeps running, and its barrier
    /// leaves right after the batch that makes it ready), instead of being declined; like any
    /// checkpoint it is aborted if the checkpoint timeout passes first; if the source ends
    /// before it is ready, its final state stands in for the waiting checkpoints. Asked
    /// between two calls of [`next_batch`](Self::next_batch).
    fn is_ready_for_checkpoint(&self) -> bool {
        true
    }
}

/// The object-safe form of a source. Implement [`Source`] and use [`erase_source`].
pub trait ErasedSource: Send {
    /// See [`Source::open`].
    fn open<'a>(&'a mut self, info: &'a TaskInfo) -> BoxFuture<'a, Result<(), UserError>>;
    /// See [`Source::next_batch`]; returns what was emitted (records, and any watermarks or
    /// statuses the source emitted itself, in order) and the status.
    fn next_batch(&mut self) -> BoxFuture<'_, Result<(Vec<Emission>, SourceStatus), UserError>>;
    /// Takes what a call whose future was dropped before completing emitted.
    fn take_leftover(&mut self) -> Vec<Emission>;
    /// See [`Source::snapshot_state`].
    ///
    /// # Errors
    ///
    /// The source's error.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError>;
    /// See [`Source::restore_state`].
    ///
    /// # Errors
    ///
    /// The source's error.
    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError>;
    /// See [`Source::notify_checkpoint_complete`].
    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, Result<(), UserError>>;
    /// See [`Source::notifies_external_system`].
    fn notifies_external_system(&self) -> bool;
    /// See [`Source::is_ready_for_checkpoint`].
    fn is_ready_for_checkpoint(&self) -> bool;
}

struct ErasedSourceImpl<S: Source> {
    source: S,
    out: Collector<S::Output>,
}

impl<S: Source> ErasedSourceImpl<S> {
    fn emitted(&mut self) -> Vec<Emission> {
        let mut out = Vec::new();
        if !self.out.is_idle() {
            self.out.take_emissions(&mut out);
        }
        out
    }
}

impl<S: Source> ErasedSource for ErasedSourceImpl<S> {
    fn open<'a>(&'a mut self, info: &'a TaskInfo) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(self.source.open(info))
    }

    fn next_batch(&mut self) -> BoxFuture<'_, Result<(Vec<Emission>, SourceStatus), UserError>> {
        Box::pin(async move {
            let status = self.source.next_batch(&mut self.out).await?;
            Ok((self.emitted(), status))
        })
    }

    fn take_leftover(&mut self) -> Vec<Emission> {
        self.emitted()
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        self.source.snapshot_state(checkpoint, state)
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        self.source.restore_state(restored)
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(self.source.notify_checkpoint_complete(checkpoint))
    }

    fn notifies_external_system(&self) -> bool {
        self.source.notifies_external_system()
    }

    fn is_ready_for_checkpoint(&self) -> bool {
        self.source.is_ready_for_checkpoint()
    }
}

/// Turns a typed source into the form the runtime drives.
pub fn erase_source<S: Source>(source: S) -> Box<dyn ErasedSource> {
    Box::new(ErasedSourceImpl {
        source,
        out: Collector::new(),
    })
}

/// Creates one source instance per source subtask.
pub trait SourceFactory: Send + Sync {
    /// A fresh instance for the subtask described by `info`.
    ///
    /// # Errors
    ///
    /// A message saying why the source cannot be set up (for example, a missing file); the job
    /// does not start.
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn ErasedSource>, String>;

    /// The highest parallelism this source supports (`Some(1)` for a non-parallel source).
    fn max_parallelism(&self) -> Option<u32> {
        None
    }

    /// False for a source that never ends by itself (a socket); batch mode refuses those.
    fn is_bounded(&self) -> bool {
        true
    }
}
