//! `flat_map`: any number of output records per input record.

use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::Operator;
use std::marker::PhantomData;

/// Calls `f(record, collector)` for every record; outputs inherit the input's timestamp.
pub struct FlatMapOperator<I, O, F> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, F> FlatMapOperator<I, O, F> {
    /// A flat-map operator calling `f`.
    pub fn new(f: F) -> Self {
        FlatMapOperator {
            f,
            _types: PhantomData,
        }
    }
}

impl<I, O, F> Operator for FlatMapOperator<I, O, F>
where
    I: Data,
    O: Data,
    F: FnMut(I, &mut Collector<O>) + Send + 'static,
{
    type In = I;
    type Out = O;

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        let (values, stamps) = batch.into_parts();
        match stamps {
            None => {
                out.set_timestamp(None);
                for v in values {
                    (self.f)(v, out);
                }
            }
            Some(stamps) => {
                for (v, ts) in values.into_iter().zip(stamps) {
                    out.set_timestamp(Some(ts));
                    (self.f)(v, out);
                }
            }
        }
        Ok(())
    }
}
