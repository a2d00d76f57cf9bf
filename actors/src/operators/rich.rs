//! Rich functions (Flink's `RichMapFunction`, `RichFilterFunction`, `RichFlatMapFunction`,
//! with `CheckpointedFunction`): user functions with a lifecycle — `open` with the task's
//! description, `close` when the subtask ends — and checkpointed non-keyed state, as named
//! lists that are redistributed when the job restores at another parallelism.
//!
//! A function implements [`RichFunction`] (the hooks, all with defaults) and one of
//! [`MapFunction`], [`FilterFunction`], [`FlatMapFunction`], [`ReduceFunction`] (a rolling
//! keyed reduce). Windowed `reduce` / `aggregate` functions cannot be rich (nor can they in
//! Flink); their post-processing `WindowFunction` has `open` / `close`. Closures stay the short form:
//! `map(|x| ..)` needs none of this.
//!
//! **State.** [`RichFunction::snapshot_state`] writes the function's state into a
//! [`FunctionState`] at every checkpoint (Flink's `snapshotState`);
//! [`RichFunction::restore_state`] reads it back after `open` when the job restores (Flink's
//! `initializeState` with `isRestored()`). A *list* (`put_list` / `list`, Flink's
//! `getListState`) is split evenly over the new subtasks: every item goes to exactly one. A
//! *union list* (`put_union_list` / `union_list`, Flink's `getUnionListState`) is given whole
//! to every subtask. After a change of parallelism, even split works on all lists of the
//! operator together (each item still goes to exactly one subtask; a single list's share may
//! differ by more than one item between subtasks).

use crate::checkpoint::types::{OperatorState, RestoredState, decode, encode};
use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::{Operator, TaskInfo};
use crate::types::CheckpointId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// The non-keyed state of a rich function in one checkpoint: named lists and union lists.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::rich::FunctionState;
/// let mut s = FunctionState::default();
/// s.put_list("buffer", vec![1u64, 2]).unwrap();
/// s.put_union_list("seen-max", vec![7u64]).unwrap();
/// assert_eq!(s.list::<u64>("buffer").unwrap(), vec![1, 2]);
/// assert_eq!(s.union_list::<u64>("seen-max").unwrap(), vec![7]);
/// assert!(s.list::<u64>("other").unwrap().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FunctionState {
    state: OperatorState,
    index: usize,
}

impl FunctionState {
    /// Wraps an operator's checkpoint state for the function of subtask `index`.
    pub(crate) fn wrap(state: OperatorState, index: usize) -> Self {
        FunctionState { state, index }
    }

    /// The operator's checkpoint state.
    pub(crate) fn into_inner(self) -> OperatorState {
        self.state
    }

    /// Stores `items` as list `name` (this subtask's part of it).
    ///
    /// # Errors
    ///
    /// If an item cannot be serialized.
    pub fn put_list<T: Serialize>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
    ) -> Result<(), UserError> {
        for item in items {
            self.state.push_item(&(name, encode(&item)?))?;
        }
        Ok(())
    }

    /// Stores `items` as this subtask's part of union list `name`.
    ///
    /// # Errors
    ///
    /// If an item cannot be serialized.
    pub fn put_union_list<T: Serialize>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
    ) -> Result<(), UserError> {
        for item in items {
            self.state.push_union(self.index, &(name, encode(&item)?))?;
        }
        Ok(())
    }

    /// The items of list `name` this subtask got back (empty if none).
    ///
    /// # Errors
    ///
    /// If an item of that name does not hold a `T`.
    pub fn list<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>, UserError> {
        let items: Vec<(String, Vec<u8>)> = self.state.items()?;
        items
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, b)| decode(&b))
            .collect()
    }

    /// Every subtask's items of union list `name`, in subtask order.
    ///
    /// # Errors
    ///
    /// If an item of that name does not hold a `T`.
    pub fn union_list<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>, UserError> {
        let mut items: Vec<(usize, (String, Vec<u8>))> = self.state.union_items()?;
        items.sort_by_key(|(i, _)| *i);
        items
            .into_iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(_, (_, b))| decode(&b))
            .collect()
    }
}

/// The lifecycle and checkpoint hooks of a rich function; every one has a default.
pub trait RichFunction: Send + 'static {
    /// Called once per subtask before the first record (Flink's `open`): connect, read
    /// configuration, look at [`TaskInfo`] (subtask index, parallelism, counters).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }

    /// Called once when the subtask ends, is cancelled or fails (Flink's `close`).
    ///
    /// # Errors
    ///
    /// An error fails a subtask that was finishing normally.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }

    /// Writes the function's state for checkpoint `checkpoint` (Flink's
    /// `CheckpointedFunction.snapshotState`). The default writes nothing.
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut FunctionState,
    ) -> Result<(), UserError> {
        let _ = (checkpoint, state);
        Ok(())
    }

    /// Reads the state back when the job restores, after `open` and before any record
    /// (Flink's `initializeState` when `isRestored()`).
    ///
    /// # Errors
    ///
    /// Any error fails the restore.
    fn restore_state(&mut self, state: &FunctionState) -> Result<(), UserError> {
        let _ = state;
        Ok(())
    }
}

/// One output per input (Flink's `RichMapFunction`).
pub trait MapFunction<I, O>: RichFunction {
    /// Maps one record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn map(&mut self, value: I) -> Result<O, UserError>;
}

/// Folds two records of one key into one (Flink's `RichReduceFunction` on a keyed stream;
/// `KeyedStream::rich_reduce`).
pub trait ReduceFunction<T>: RichFunction {
    /// Folds `value` into `acc`.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn reduce(&mut self, acc: T, value: T) -> Result<T, UserError>;
}

/// Keeps the records it accepts (Flink's `RichFilterFunction`).
pub trait FilterFunction<T>: RichFunction {
    /// True to keep `value`.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn filter(&mut self, value: &T) -> Result<bool, UserError>;
}

/// Any number of outputs per input (Flink's `RichFlatMapFunction`).
///
/// # Examples
///
/// Flink's `BufferingSink` pattern: records are held back and emitted ten at a time; the
/// held records are list state, so a restart neither loses nor repeats them.
///
/// ```
/// use actorflow_runtime::operators::rich::{FlatMapFunction, FunctionState, RichFunction};
/// use actorflow_runtime::{CheckpointId, Collector, UserError};
/// #[derive(Clone, Default)]
/// struct Buffering { held: Vec<u64> }
/// impl RichFunction for Buffering {
///     fn snapshot_state(&mut self, _: CheckpointId, s: &mut FunctionState) -> Result<(), UserError> {
///         s.put_list("held", self.held.iter().copied())
///     }
///     fn restore_state(&mut self, s: &FunctionState) -> Result<(), UserError> {
///         self.held = s.list("held")?;
///         Ok(())
///     }
/// }
/// impl FlatMapFunction<u64, Vec<u64>> for Buffering {
///     fn flat_map(&mut self, v: u64, out: &mut Collector<Vec<u64>>) -> Result<(), UserError> {
///         self.held.push(v);
///         if self.held.len() == 10 {
///             out.collect(std::mem::take(&mut self.held));
///         }
///         Ok(())
///     }
///     fn finish(&mut self, out: &mut Collector<Vec<u64>>) -> Result<(), UserError> {
///         if !self.held.is_empty() {
///             out.collect(std::mem::take(&mut self.held));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait FlatMapFunction<I, O>: RichFunction {
    /// Handles one record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn flat_map(&mut self, value: I, out: &mut Collector<O>) -> Result<(), UserError>;

    /// Called once at the end of input, before `close` (emit what is still held).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let _ = out;
        Ok(())
    }
}

/// Which rich function a [`RichOperator`] applies.
#[derive(Debug, Clone, Copy)]
pub struct AsMap;
/// See [`AsMap`].
#[derive(Debug, Clone, Copy)]
pub struct AsFilter;
/// See [`AsMap`].
#[derive(Debug, Clone, Copy)]
pub struct AsFlatMap;

/// Runs a rich function of kind `K` ([`AsMap`], [`AsFilter`], [`AsFlatMap`]) with its hooks.
pub struct RichOperator<I, O, F, K> {
    function: F,
    index: usize,
    _types: PhantomData<fn(I, K) -> O>,
}

impl<I, O, F, K> RichOperator<I, O, F, K> {
    /// An operator running `function`.
    pub fn new(function: F) -> Self {
        RichOperator {
            function,
            index: 0,
            _types: PhantomData,
        }
    }
}

/// How a rich function of one kind handles a batch and the end of input.
pub trait RichKind<I, O, F>: Send + 'static {
    /// Applies `f` to every record of `batch`.
    ///
    /// # Errors
    ///
    /// The function's error.
    fn apply(f: &mut F, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError>;
    /// End of input.
    ///
    /// # Errors
    ///
    /// The function's error.
    fn finish(f: &mut F, out: &mut Collector<O>) -> Result<(), UserError> {
        let _ = (f, out);
        Ok(())
    }
}

impl<I, O, F: MapFunction<I, O>> RichKind<I, O, F> for AsMap {
    fn apply(f: &mut F, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            out.collect(f.map(v)?);
        }
        Ok(())
    }
}

impl<T, F: FilterFunction<T>> RichKind<T, T, F> for AsFilter {
    fn apply(f: &mut F, batch: Batch<T>, out: &mut Collector<T>) -> Result<(), UserError> {
        for (v, ts) in batch.into_iter_timestamped() {
            if f.filter(&v)? {
                out.set_timestamp(ts);
                out.collect(v);
            }
        }
        Ok(())
    }
}

impl<I, O, F: FlatMapFunction<I, O>> RichKind<I, O, F> for AsFlatMap {
    fn apply(f: &mut F, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            f.flat_map(v, out)?;
        }
        Ok(())
    }
    fn finish(f: &mut F, out: &mut Collector<O>) -> Result<(), UserError> {
        f.finish(out)
    }
}

impl<I, O, F, K> Operator for RichOperator<I, O, F, K>
where
    I: Data,
    O: Data,
    F: RichFunction,
    K: RichKind<I, O, F>,
{
    type In = I;
    type Out = O;

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        K::apply(&mut self.function, batch, out)
    }

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.index = info.subtask_index;
        self.function.open(info)
    }

    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }

    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        out.set_timestamp(None);
        K::finish(&mut self.function, out)
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        let mut fs = FunctionState::wrap(std::mem::take(state), self.index);
        self.function.snapshot_state(checkpoint, &mut fs)?;
        *state = fs.into_inner();
        Ok(())
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        self.function
            .restore_state(&FunctionState::wrap(restored.state, self.index))
    }
}
