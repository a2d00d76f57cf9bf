//! The operator model.
//!
//! [`Operator`] is the typed trait an operator implements: one required method,
//! [`process_batch`](Operator::process_batch), and lifecycle hooks with defaults. The runtime
//! drives operators through [`ErasedOperator`], the object-safe form that works on type-erased
//! [`DataBatch`]es; [`erase`] turns one into the other.

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Collector, Data, DataBatch, Emission, TypeMismatch};
use crate::dataplane::message::WatermarkStatus;
use crate::error::UserError;
use crate::state::keygroup::{KeyGroupRange, key_group_range_for_subtask};
use crate::time::clock::ProcessingClock;
use crate::types::Timestamp;
use crate::types::{CheckpointId, NodeId, Watermark};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who and where an operator instance is.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The operator's id in the stream graph.
    pub operator_id: NodeId,
    /// The operator's name.
    pub operator_name: Arc<str>,
    /// The operator's stable id, if set with `uid(...)`.
    pub uid: Option<Arc<str>>,
    /// This instance's index, from 0.
    pub subtask_index: usize,
    /// How many instances run.
    pub parallelism: u32,
    /// The operator's max parallelism: its number of key groups.
    pub max_parallelism: u32,
    /// Streaming or batch.
    pub runtime_mode: crate::types::RuntimeMode,
    /// The job's processing-time clock.
    pub clock: ProcessingClock,
    /// How often periodic watermark generators emit (the job's setting).
    pub auto_watermark_interval: std::time::Duration,
    /// Counters the operator updates (shown in the subtask's metrics).
    pub counters: OperatorCounters,
    /// The attempt this instance runs in; checked before a transactional sink commits.
    pub generation: Generation,
    /// True if the job takes checkpoints (a transactional sink then commits on checkpoint
    /// completion instead of at end of input).
    pub checkpointing: bool,
    /// The checkpoint (or savepoint) this attempt of the job was deployed from; `None` for a
    /// fresh start (Flink's `isRestored()`). A sink that finds output of an earlier attempt
    /// on a fresh start knows it would add to it.
    pub restored_from: Option<CheckpointId>,
    /// Wakes this subtask when an operator's asynchronous work completes (the Async I/O
    /// operator's requests): make the result visible to [`Operator::has_more`] first, then
    /// call `notify_one`. The runtime waits on it beside its inputs and then lets the chain
    /// [`resume`](Operator::resume). Shared by every operator of the subtask.
    pub wakeup: Arc<tokio::sync::Notify>,
}

/// The generation (restart attempt) of a running subtask, and the job's current one: a
/// subtask from before a restart is stale and must not commit.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::operator::Generation;
/// let g = Generation::new(3, std::sync::Arc::new(3.into()));
/// assert!(g.is_current());
/// g.current().store(4, std::sync::atomic::Ordering::SeqCst);
/// assert!(!g.is_current());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Generation {
    mine: u64,
    current: Arc<std::sync::atomic::AtomicU64>,
}

impl Generation {
    /// Generation `mine` of a job whose current generation is `current`.
    pub fn new(mine: u64, current: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Generation { mine, current }
    }

    /// This instance's generation.
    pub fn get(&self) -> u64 {
        self.mine
    }

    /// The job's current generation (bumped by the supervisor on every restart).
    pub fn current(&self) -> &std::sync::atomic::AtomicU64 {
        &self.current
    }

    /// True if no restart happened since this instance was deployed.
    pub fn is_current(&self) -> bool {
        self.current.load(std::sync::atomic::Ordering::SeqCst) == self.mine
    }

    /// `Ok` if this instance may still commit.
    ///
    /// # Errors
    ///
    /// A message naming both generations if the job restarted since this instance was
    /// deployed: a stale subtask must not commit.
    pub fn ensure_current(&self) -> Result<(), UserError> {
        let current = self.current.load(std::sync::atomic::Ordering::SeqCst);
        if current == self.mine {
            Ok(())
        } else {
            Err(format!(
                "refusing to commit: this subtask runs generation {} but the job restarted (now {current})",
                self.mine
            )
            .into())
        }
    }
}

impl TaskInfo {
    /// Describes subtask `subtask_index` of `parallelism` of a standalone operator (for
    /// harness tests and custom runners): streaming mode, the system clock, 200 ms
    /// watermark interval.
    pub fn standalone(
        operator_name: &str,
        subtask_index: usize,
        parallelism: u32,
        max_parallelism: u32,
    ) -> Self {
        TaskInfo {
            operator_id: NodeId(0),
            operator_name: operator_name.into(),
            uid: None,
            subtask_index,
            parallelism,
            max_parallelism,
            runtime_mode: crate::types::RuntimeMode::Streaming,
            clock: ProcessingClock::system(),
            auto_watermark_interval: std::time::Duration::from_millis(200),
            counters: Default::default(),
            generation: Generation::default(),
            checkpointing: false,
            restored_from: None,
            wakeup: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The key groups this instance owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        key_group_range_for_subtask(self.max_parallelism, self.parallelism, self.subtask_index)
    }
}

/// A typed stream operator with one input.
///
/// Implement [`process_batch`](Self::process_batch); every lifecycle hook has a default.
/// The runtime calls the methods of one instance from one task, never concurrently.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::{Batch, Collector, Operator, UserError};
/// struct Doubler;
/// impl Operator for Doubler {
///     type In = u64;
///     type Out = u64;
///     fn process_batch(&mut self, batch: Batch<u64>, out: &mut Collector<u64>) -> Result<(), UserError> {
///         for (v, ts) in batch.into_iter_timestamped() {
///             out.set_timestamp(ts);
///             out.collect(v * 2);
///         }
///         Ok(())
///     }
/// }
/// let mut op = Doubler;
/// let mut out = Collector::new();
/// op.process_batch(Batch::from_values(vec![1, 2]), &mut out).unwrap();
/// assert_eq!(out.take().into_values(), vec![2, 4]);
/// ```
pub trait Operator: Send + 'static {
    /// Input record type.
    type In: Data;
    /// Output record type.
    type Out: Data;

    /// Processes a batch of input records, emitting into `out`.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask; the job reports it with the operator's name.
    fn process_batch(
        &mut self,
        batch: Batch<Self::In>,
        out: &mut Collector<Self::Out>,
    ) -> Result<(), UserError>;

    /// Called once before the first record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }

    /// Called when the combined input watermark advances. Event-time timers due at
    /// `watermark` fire here.
    ///
    /// The watermark is forwarded downstream after this returns, unless
    /// [`forwards_watermarks`](Self::forwards_watermarks) is false.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector<Self::Out>,
    ) -> Result<(), UserError> {
        let _ = (watermark, out);
        Ok(())
    }

    /// Called when the combined input becomes idle or active again; forwarded downstream
    /// after this returns unless [`forwards_watermarks`](Self::forwards_watermarks) is false.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_status(
        &mut self,
        status: WatermarkStatus,
        out: &mut Collector<Self::Out>,
    ) -> Result<(), UserError> {
        let _ = (status, out);
        Ok(())
    }

    /// False for operators that generate their own watermarks (with
    /// [`Collector::emit_watermark`]) instead of forwarding their input's.
    fn forwards_watermarks(&self) -> bool {
        true
    }

    /// The processing time at which [`on_processing_time`](Self::on_processing_time) should
    /// next be called, if any. Asked after every call into the operator.
    fn next_processing_time(&self) -> Option<Timestamp> {
        None
    }

    /// How many keys hold keyed state in this subtask, if the operator keeps keyed state and
    /// can tell cheaply (a table's length). Asked once per input batch, for the metrics.
    fn key_count(&self) -> Option<usize> {
        None
    }

    /// Called when processing time reached [`next_processing_time`](Self::next_processing_time):
    /// processing-time timers fire here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn on_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Collector<Self::Out>,
    ) -> Result<(), UserError> {
        let _ = (now, out);
        Ok(())
    }

    /// True while the last call left work to do in further chunks — firing many timers at
    /// one watermark, say. The runtime then drains the output (waiting for room downstream),
    /// looks at its priority lane, and calls [`resume`](Self::resume), before it hands the
    /// operator anything else; a watermark is forwarded once its work is done.
    fn has_more(&self) -> bool {
        false
    }

    /// Does the next chunk of the work [`has_more`](Self::has_more) announced.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn resume(&mut self, out: &mut Collector<Self::Out>) -> Result<(), UserError> {
        let _ = out;
        Ok(())
    }

    /// True while the operator waits for asynchronous work and must not be handed more
    /// input (the Async I/O operator with `capacity` requests in flight, or finishing with
    /// requests in flight). The runtime then stops reading its inputs, waits on
    /// [`TaskInfo::wakeup`] (taking only cancellation meanwhile) and calls
    /// [`resume`](Self::resume) once [`has_more`](Self::has_more) says results are there.
    /// End of input is passed on to chained operators only once this is false.
    fn is_blocked(&self) -> bool {
        false
    }

    /// Called once after the last input record (end of input), before end of input is
    /// forwarded downstream.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn finish(&mut self, out: &mut Collector<Self::Out>) -> Result<(), UserError> {
        let _ = out;
        Ok(())
    }

    /// Called once when the subtask ends — after [`finish`](Self::finish) at the end of
    /// input, or when it is cancelled or fails (Flink's `close`): release clients and
    /// connections here. Not called if [`open`](Self::open) was never called.
    ///
    /// # Errors
    ///
    /// An error fails a subtask that was finishing normally; after a failure or a
    /// cancellation it is only logged.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }

    /// Writes this instance's state into a checkpoint (Flink's `snapshotState`): keyed state
    /// and timers per key group, list items, union items. Called when the checkpoint's barrier
    /// is aligned (or, unaligned, when the first one arrives), between two calls of the other
    /// methods; the state must be what the records before the barrier produced.
    ///
    /// The default writes nothing: right for stateless operators.
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint (the job keeps running).
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        let _ = (checkpoint, state);
        Ok(())
    }

    /// Restores the state a checkpoint holds for this instance (after [`open`](Self::open),
    /// before any record). After a change of parallelism the instance gets the key groups of
    /// its range and its share of the list items.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask (and the restart).
    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let _ = restored;
        Ok(())
    }

    /// Checkpoint `checkpoint` completed: every subtask's state of it is stored.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), UserError> {
        let _ = checkpoint;
        Ok(())
    }
}

/// Why an erased operator call failed.
#[derive(Debug)]
pub enum OperatorFault {
    /// The user code returned an error.
    User(UserError),
    /// A batch of the wrong type arrived (a wiring bug).
    Type(TypeMismatch),
}

/// The object-safe form of an operator, as the runtime drives it. Implement [`Operator`]
/// and call [`erase`] rather than implementing this directly.
///
/// Every call leaves what the operator emitted inside it; the runtime collects it with
/// [`take_emissions`](Self::take_emissions) right after.
pub trait ErasedOperator: Send {
    /// See [`Operator::open`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError>;
    /// Processes a batch from logical input `input`.
    ///
    /// # Errors
    ///
    /// The operator's error, or a type mismatch.
    fn process(&mut self, input: usize, batch: DataBatch) -> Result<(), OperatorFault>;
    /// See [`Operator::process_watermark`]; also emits the watermark if the operator
    /// forwards watermarks.
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn process_watermark(&mut self, watermark: Watermark) -> Result<(), OperatorFault>;
    /// See [`Operator::process_status`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn process_status(&mut self, status: WatermarkStatus) -> Result<(), OperatorFault>;
    /// See [`Operator::next_processing_time`].
    fn next_processing_time(&self) -> Option<Timestamp>;
    /// See [`Operator::key_count`].
    fn key_count(&self) -> Option<usize>;
    /// See [`Operator::on_processing_time`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn on_processing_time(&mut self, now: Timestamp) -> Result<(), OperatorFault>;
    /// See [`Operator::finish`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn finish(&mut self) -> Result<(), OperatorFault>;
    /// See [`Operator::close`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn close(&mut self) -> Result<(), UserError>;
    /// See [`Operator::has_more`].
    fn has_more(&self) -> bool;
    /// See [`Operator::is_blocked`].
    fn is_blocked(&self) -> bool;
    /// See [`Operator::resume`]; forwards the held-back watermark when the work is done.
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn resume(&mut self) -> Result<(), OperatorFault>;
    /// Moves what the last calls emitted, in order, to `into`.
    fn take_emissions(&mut self, into: &mut Vec<Emission>);
    /// See [`Operator::snapshot_state`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError>;
    /// See [`Operator::restore_state`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError>;
    /// See [`Operator::notify_checkpoint_complete`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), UserError>;
    /// Reads a batch of logical input `input` written by [`DataBatch::encode`] (in-flight data
    /// of an unaligned checkpoint, replayed on restore).
    ///
    /// # Errors
    ///
    /// If the bytes are not a batch of the input's type.
    fn decode_input(&self, input: usize, bytes: &[u8]) -> Result<DataBatch, String>;
}

struct Erased<O: Operator> {
    op: O,
    out: Collector<O::Out>,
    /// A watermark whose work (timers) is not finished: forwarded when it is.
    held: Option<Watermark>,
}

impl<O: Operator> ErasedOperator for Erased<O> {
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.op.open(info)
    }

    fn process(&mut self, _input: usize, batch: DataBatch) -> Result<(), OperatorFault> {
        let batch = batch.downcast::<O::In>().map_err(OperatorFault::Type)?;
        self.op
            .process_batch(batch, &mut self.out)
            .map_err(OperatorFault::User)
    }

    fn process_watermark(&mut self, watermark: Watermark) -> Result<(), OperatorFault> {
        self.out.set_timestamp(None);
        self.op
            .process_watermark(watermark, &mut self.out)
            .map_err(OperatorFault::User)?;
        if self.op.has_more() {
            self.held = Some(watermark);
        } else if self.op.forwards_watermarks() {
            self.out.emit_watermark(watermark);
        }
        Ok(())
    }

    fn has_more(&self) -> bool {
        self.op.has_more()
    }

    fn is_blocked(&self) -> bool {
        self.op.is_blocked()
    }

    fn close(&mut self) -> Result<(), UserError> {
        self.op.close()
    }

    fn resume(&mut self) -> Result<(), OperatorFault> {
        self.out.set_timestamp(None);
        self.op.resume(&mut self.out).map_err(OperatorFault::User)?;
        if !self.op.has_more()
            && let Some(wm) = self.held.take()
            && self.op.forwards_watermarks()
        {
            self.out.emit_watermark(wm);
        }
        Ok(())
    }

    fn process_status(&mut self, status: WatermarkStatus) -> Result<(), OperatorFault> {
        self.out.set_timestamp(None);
        self.op
            .process_status(status, &mut self.out)
            .map_err(OperatorFault::User)?;
        if self.op.forwards_watermarks() {
            self.out.emit_status(status);
        }
        Ok(())
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.op.next_processing_time()
    }

    fn key_count(&self) -> Option<usize> {
        self.op.key_count()
    }

    fn on_processing_time(&mut self, now: Timestamp) -> Result<(), OperatorFault> {
        self.out.set_timestamp(None);
        self.op
            .on_processing_time(now, &mut self.out)
            .map_err(OperatorFault::User)
    }

    fn finish(&mut self) -> Result<(), OperatorFault> {
        self.out.set_timestamp(None);
        self.op.finish(&mut self.out).map_err(OperatorFault::User)
    }

    fn take_emissions(&mut self, into: &mut Vec<Emission>) {
        self.out.take_emissions(into);
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        self.op.snapshot_state(checkpoint, state)
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        self.op.restore_state(restored)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), UserError> {
        self.op.notify_checkpoint_complete(checkpoint)
    }

    fn decode_input(&self, _input: usize, bytes: &[u8]) -> Result<DataBatch, String> {
        DataBatch::decode::<O::In>(bytes)
    }
}

/// Turns a typed operator into the form the runtime drives.
pub fn erase<O: Operator>(op: O) -> Box<dyn ErasedOperator> {
    Box::new(Erased {
        op,
        out: Collector::new(),
        held: None,
    })
}

/// Creates one operator instance per subtask (and again on every restart).
pub trait OperatorFactory: Send + Sync {
    /// A fresh instance for the subtask described by `info`.
    fn create(&self, info: &TaskInfo) -> Box<dyn ErasedOperator>;
}

impl<F> OperatorFactory for F
where
    F: Fn(&TaskInfo) -> Box<dyn ErasedOperator> + Send + Sync,
{
    fn create(&self, info: &TaskInfo) -> Box<dyn ErasedOperator> {
        self(info)
    }
}

/// Counters that operators of one subtask update (Flink's operator metrics), shared by the
/// operators of its chain and read into
/// [`SubtaskMetricsSnapshot`](crate::runtime::metrics::SubtaskMetricsSnapshot).
///
/// Gauges are named values a source or operator publishes now and then (not per record):
/// readers sample them with the other metrics.
#[derive(Debug, Clone, Default)]
pub struct OperatorCounters {
    late_records_dropped: Arc<AtomicU64>,
    gauges: Arc<std::sync::Mutex<std::collections::BTreeMap<String, i64>>>,
}

impl OperatorCounters {
    /// Counts records a window operator dropped as late (Flink's `numLateRecordsDropped`).
    pub fn add_late_records_dropped(&self, n: u64) {
        self.late_records_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Records dropped as late so far.
    pub fn late_records_dropped(&self) -> u64 {
        self.late_records_dropped.load(Ordering::Relaxed)
    }

    /// Sets the gauge `name` (Flink's metric identifiers, for example
    /// `KafkaSourceReader.topic.t.partition.0.currentOffset`). Call it now and then, not per
    /// record.
    pub fn set_gauge(&self, name: &str, value: i64) {
        let mut g = self
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.get_mut(name) {
            Some(v) => *v = value,
            None => {
                g.insert(name.to_string(), value);
            }
        }
    }

    /// Removes the gauge `name` (a partition no longer read).
    pub fn remove_gauge(&self, name: &str) {
        self.gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    /// Every gauge, sorted by name.
    pub fn gauges(&self) -> Vec<(String, i64)> {
        self.gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}
