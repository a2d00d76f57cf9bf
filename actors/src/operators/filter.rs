//! `filter`: keeps the records for which a predicate holds.

use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::Operator;
use std::marker::PhantomData;

/// Keeps records for which `f` returns true.
pub struct FilterOperator<T, F> {
    f: F,
    _types: PhantomData<fn(T)>,
}

impl<T, F> FilterOperator<T, F> {
    /// A filter with predicate `f`.
    pub fn new(f: F) -> Self {
        FilterOperator {
            f,
            _types: PhantomData,
        }
    }
}

impl<T: Data, F: FnMut(&T) -> bool + Send + 'static> Operator for FilterOperator<T, F> {
    type In = T;
    type Out = T;

    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) -> Result<(), UserError> {
        let (mut values, stamps) = batch.into_parts();
        match stamps {
            None => {
                values.retain(|v| (self.f)(v));
                out.collect_batch(Batch::from_values(values));
            }
            Some(stamps) => {
                for (v, ts) in values.into_iter().zip(stamps) {
                    if (self.f)(&v) {
                        out.collect_with_timestamp(v, ts);
                    }
                }
            }
        }
        Ok(())
    }
}
