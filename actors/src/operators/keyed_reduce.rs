//! Rolling `reduce` on a keyed stream, and the rolling aggregations (`sum`, `min`, `max`,
//! `min_by`, `max_by`) built on it. Every input record updates its key's value and emits it,
//! as in Flink's streaming mode.

use crate::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operator::{Operator, TaskInfo};
use crate::state::KeyedTable;
use std::hash::Hash;
use std::marker::PhantomData;

/// Keeps one value per key, folds every record into it with `reduce(accumulated, record)`,
/// and emits the new value.
pub struct KeyedReduceOperator<T, K, KF, R> {
    key: KF,
    reduce: R,
    table: Option<KeyedTable<K, Option<T>>>,
    _types: PhantomData<fn(T)>,
}

impl<T, K, KF, R> KeyedReduceOperator<T, K, KF, R> {
    /// A rolling reduce keyed by `key`.
    pub fn new(key: KF, reduce: R) -> Self {
        KeyedReduceOperator {
            key,
            reduce,
            table: None,
            _types: PhantomData,
        }
    }
}

impl<T, K, KF, R> Operator for KeyedReduceOperator<T, K, KF, R>
where
    T: Data,
    K: Hash + Eq + Send + 'static,
    KF: Fn(&T) -> K + Send + 'static,
    R: FnMut(T, T) -> T + Send + 'static,
{
    type In = T;
    type Out = T;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.table = Some(KeyedTable::new(
            info.max_parallelism,
            info.key_group_range(),
        ));
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) -> Result<(), UserError> {
        let table = self
            .table
            .as_mut()
            .ok_or("keyed reduce called before open()")?;
        out.reserve(batch.len());
        for (v, ts) in batch.into_iter_timestamped() {
            let slot = table.get_or_insert_with((self.key)(&v), || None)?;
            let updated = match slot.take() {
                None => v,
                Some(acc) => (self.reduce)(acc, v),
            };
            out.set_timestamp(ts);
            out.collect(updated.clone());
            *slot = Some(updated);
        }
        Ok(())
    }
}
