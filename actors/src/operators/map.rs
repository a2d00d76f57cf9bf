//! `map`: one output record per input record.

use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::Operator;
use std::marker::PhantomData;

/// Applies `f` to every record; timestamps pass through unchanged.
pub struct MapOperator<I, O, F> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, F> MapOperator<I, O, F> {
    /// A map operator applying `f`.
    pub fn new(f: F) -> Self {
        MapOperator {
            f,
            _types: PhantomData,
        }
    }
}

impl<I: Data, O: Data, F: FnMut(I) -> O + Send + 'static> Operator for MapOperator<I, O, F> {
    type In = I;
    type Out = O;

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        let (values, stamps) = batch.into_parts();
        let mapped: Vec<O> = values.into_iter().map(&mut self.f).collect();
        // One output per input, so the lengths match; never drop a batch silently if not.
        let batch = Batch::from_parts(mapped, stamps)
            .ok_or("map produced a batch whose timestamps do not match its records")?;
        out.collect_batch(batch);
        Ok(())
    }
}
