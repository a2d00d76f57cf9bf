//! The operator model.
//!
//! [`Operator`] is the typed trait an operator implements: one required method,
//! [`process_batch`](Operator::process_batch), and lifecycle hooks with defaults. The runtime
//! drives operators through [`ErasedOperator`], the object-safe form that works on type-erased
//! [`DataBatch`]es; [`erase`] turns one into the other.

use crate::data::{Batch, Collector, Data, DataBatch, TypeMismatch};
use crate::error::UserError;
use crate::keygroup::{KeyGroupRange, key_group_range_for_subtask};
use crate::types::{NodeId, Watermark};
use std::sync::Arc;

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
    pub runtime_mode: crate::config::RuntimeMode,
}

impl TaskInfo {
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

    /// Called when the combined input watermark advances, before it is forwarded downstream.
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
pub trait ErasedOperator: Send {
    /// See [`Operator::open`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError>;
    /// Processes a batch from logical input `input`; returns what was emitted, if anything.
    ///
    /// # Errors
    ///
    /// The operator's error, or a type mismatch.
    fn process(
        &mut self,
        input: usize,
        batch: DataBatch,
    ) -> Result<Option<DataBatch>, OperatorFault>;
    /// See [`Operator::process_watermark`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn process_watermark(
        &mut self,
        watermark: Watermark,
    ) -> Result<Option<DataBatch>, OperatorFault>;
    /// See [`Operator::finish`].
    ///
    /// # Errors
    ///
    /// The operator's error.
    fn finish(&mut self) -> Result<Option<DataBatch>, OperatorFault>;
}

struct Erased<O: Operator> {
    op: O,
    out: Collector<O::Out>,
}

impl<O: Operator> Erased<O> {
    fn emitted(&mut self) -> Option<DataBatch> {
        if self.out.is_empty() {
            None
        } else {
            Some(DataBatch::new(self.out.take()))
        }
    }
}

impl<O: Operator> ErasedOperator for Erased<O> {
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.op.open(info)
    }

    fn process(
        &mut self,
        _input: usize,
        batch: DataBatch,
    ) -> Result<Option<DataBatch>, OperatorFault> {
        let batch = batch.downcast::<O::In>().map_err(OperatorFault::Type)?;
        self.op
            .process_batch(batch, &mut self.out)
            .map_err(OperatorFault::User)?;
        Ok(self.emitted())
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
    ) -> Result<Option<DataBatch>, OperatorFault> {
        self.out.set_timestamp(None);
        self.op
            .process_watermark(watermark, &mut self.out)
            .map_err(OperatorFault::User)?;
        Ok(self.emitted())
    }

    fn finish(&mut self) -> Result<Option<DataBatch>, OperatorFault> {
        self.out.set_timestamp(None);
        self.op.finish(&mut self.out).map_err(OperatorFault::User)?;
        Ok(self.emitted())
    }
}

/// Turns a typed operator into the form the runtime drives.
pub fn erase<O: Operator>(op: O) -> Box<dyn ErasedOperator> {
    Box::new(Erased {
        op,
        out: Collector::new(),
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
