//! Rolling `reduce` on a keyed stream, and the rolling aggregations (`sum`, `min`, `max`,
//! `min_by`, `max_by`) built on it.
//!
//! In streaming mode every input record updates its key's value and emits it. In batch mode
//! (Flink's `BatchGroupedReduceOperator`) nothing is emitted until end of input; then each
//! key's final value is emitted once, with timestamp `Timestamp::MAX`.

use crate::checkpoint::types::KeyedSnapshot;
use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::{Operator, TaskInfo};
use crate::operators::rich::{FunctionState, ReduceFunction};
use crate::state::key::KeySelector;
use crate::state::table::KeyedTable;
use crate::types::RuntimeMode;
use crate::types::Timestamp;
use std::marker::PhantomData;

/// Keeps one value per key, folds every record into it with `reduce(accumulated, record)`,
/// and emits the new value.
pub struct KeyedReduceOperator<T, S: KeySelector<T>, R> {
    key: S,
    reduce: R,
    table: Option<KeyedTable<S::Key, Option<T>>>,
    emit_updates: bool,
    max_parallelism: u32,
    index: usize,
    incremental: crate::checkpoint::incremental::Incremental,
    _types: PhantomData<fn(T)>,
}

impl<T, S: KeySelector<T>, R> KeyedReduceOperator<T, S, R> {
    /// A rolling reduce keyed by `key`.
    pub fn new(key: S, reduce: R) -> Self {
        KeyedReduceOperator {
            key,
            reduce,
            table: None,
            emit_updates: true,
            max_parallelism: 128,
            index: 0,
            incremental: Default::default(),
            _types: PhantomData,
        }
    }
}

/// What a keyed reduce folds with: a closure `FnMut(T, T) -> T`, or a rich
/// [`ReduceFunction`] in [`RichReduce`] (with `open`, `close` and function state).
pub trait Reducer<T>: Send + 'static {
    /// Folds `value` into `acc`.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn reduce(&mut self, acc: T, value: T) -> Result<T, UserError>;
    /// See [`RichFunction::open`](crate::operators::rich::RichFunction::open).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }
    /// See [`RichFunction::close`](crate::operators::rich::RichFunction::close).
    ///
    /// # Errors
    ///
    /// Any error fails a subtask that was finishing normally.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }
    /// The function's own (non-keyed) state, if any.
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint.
    fn snapshot(
        &mut self,
        id: crate::types::CheckpointId,
        state: &mut FunctionState,
    ) -> Result<(), UserError> {
        let _ = (id, state);
        Ok(())
    }
    /// Restores what [`snapshot`](Self::snapshot) wrote.
    ///
    /// # Errors
    ///
    /// Any error fails the restore.
    fn restore(&mut self, state: &FunctionState) -> Result<(), UserError> {
        let _ = state;
        Ok(())
    }
}

impl<T, F: FnMut(T, T) -> T + Send + 'static> Reducer<T> for F {
    #[inline]
    fn reduce(&mut self, acc: T, value: T) -> Result<T, UserError> {
        Ok(self(acc, value))
    }
}

/// A rich [`ReduceFunction`] as a [`Reducer`] (Flink's `RichReduceFunction` on a keyed
/// stream).
#[derive(Debug, Clone)]
pub struct RichReduce<F>(pub F);

impl<T, F: ReduceFunction<T>> Reducer<T> for RichReduce<F> {
    fn reduce(&mut self, acc: T, value: T) -> Result<T, UserError> {
        self.0.reduce(acc, value)
    }
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.0.open(info)
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.0.close()
    }
    fn snapshot(
        &mut self,
        id: crate::types::CheckpointId,
        state: &mut FunctionState,
    ) -> Result<(), UserError> {
        self.0.snapshot_state(id, state)
    }
    fn restore(&mut self, state: &FunctionState) -> Result<(), UserError> {
        self.0.restore_state(state)
    }
}

impl<T, S, R> Operator for KeyedReduceOperator<T, S, R>
where
    T: Data,
    S: KeySelector<T>,
    R: Reducer<T>,
{
    type In = T;
    type Out = T;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.table = Some(KeyedTable::new(
            info.max_parallelism,
            info.key_group_range(),
        ));
        self.emit_updates = info.runtime_mode == RuntimeMode::Streaming;
        self.max_parallelism = info.max_parallelism;
        self.index = info.subtask_index;
        self.reduce.open(info)
    }

    fn close(&mut self) -> Result<(), UserError> {
        self.reduce.close()
    }

    fn key_count(&self) -> Option<usize> {
        self.table.as_ref().map(KeyedTable::len)
    }

    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) -> Result<(), UserError> {
        let table = self
            .table
            .as_mut()
            .ok_or("keyed reduce called before open()")?;
        if !self.emit_updates {
            for v in batch {
                let slot = self
                    .key
                    .with_key(&v, |k| table.get_or_insert_with(k, || None))?;
                *slot = Some(match slot.take() {
                    None => v,
                    Some(acc) => self.reduce.reduce(acc, v)?,
                });
            }
            return Ok(());
        }
        out.reserve(batch.len());
        for (v, ts) in batch.into_iter_timestamped() {
            let slot = self
                .key
                .with_key(&v, |k| table.get_or_insert_with(k, || None))?;
            let updated = match slot.take() {
                None => v,
                Some(acc) => self.reduce.reduce(acc, v)?,
            };
            out.set_timestamp(ts);
            out.collect(updated.clone());
            *slot = Some(updated);
        }
        Ok(())
    }

    /// Each key's current value, per key group.
    fn snapshot_state(
        &mut self,
        id: crate::types::CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        let mut fs = FunctionState::wrap(std::mem::take(state), self.index);
        self.reduce.snapshot(id, &mut fs)?;
        *state = fs.into_inner();
        let table = self
            .table
            .as_mut()
            .ok_or("keyed reduce snapshot before open()")?;
        let (plan, changes) = self.incremental.plan_table(id, state.context(), table);
        // Shared now, encoded off the subtask.
        let frozen = table.freeze();
        // Each key once per group, as `KeyedSnapshot` writes it (`Vec<(K, T)>`), without
        // building one; incremental: as a base chunk of that form, or a delta of the changed
        // keys.
        state.put_parts_later(move || {
            use crate::checkpoint::incremental::{GroupWrite, table_groups};
            let (written, unchanged) = table_groups(
                &frozen,
                &changes,
                &plan,
                Option::is_some,
                |v: &Option<T>| v.as_ref().ok_or_else(|| "a key without a value".into()),
            )?;
            let (whole, chunks): (Vec<_>, Vec<_>) = written
                .into_iter()
                .partition(|(_, write, _)| *write == GroupWrite::Whole);
            let whole = whole
                .into_iter()
                .map(|(kg, _, bytes)| (kg, bytes))
                .collect();
            plan.finish(whole, chunks, unchanged)
        });
        Ok(())
    }

    fn restore_state(
        &mut self,
        restored: crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        // The function's lists only; the keyed groups are read below.
        let mut lists = crate::checkpoint::types::OperatorState::default();
        lists.items = restored.state.items.clone();
        lists.union = restored.state.union.clone();
        self.reduce
            .restore(&FunctionState::wrap(lists, self.index))?;
        restored.state.check_resolved()?;
        let mut keys = KeyedSnapshot::<S::Key, T>::read(&restored.state)?;
        for (kg, layers) in &restored.state.layers {
            keys.extend(crate::checkpoint::incremental::merge_chain::<S::Key, T>(
                *kg, layers,
            )?);
        }
        self.incremental.reset();
        let table = self
            .table
            .as_mut()
            .ok_or("keyed reduce restored before open()")?;
        for (key, value) in keys {
            *table
                .get_or_insert_with(&key, || None)
                .map_err(|e| format!("restoring a keyed reduce: {e}"))? = Some(value);
        }
        Ok(())
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: crate::types::CheckpointId,
    ) -> Result<(), UserError> {
        self.incremental.confirm(checkpoint);
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector<T>) -> Result<(), UserError> {
        if self.emit_updates {
            return Ok(());
        }
        if let Some(table) = self.table.take() {
            out.reserve(table.len());
            for value in table.into_values().flatten() {
                out.collect_with_timestamp(value, Timestamp::MAX);
            }
        }
        Ok(())
    }
}
