//! The native N-input keyed operator: any number of inputs of different types feed **one**
//! operator (not a cascade of two-input joins), keyed by one key type, with keyed state and
//! timers shared by all inputs. Watermarks are merged over all inputs' lanes by the subtask's
//! valve (minimum, idleness, no regression) and checkpoint barriers align over all of them.
//!
//! Each input `i` has a type `Xi`, a key function `Fn(&Xi) -> K` (also used to partition it)
//! and a conversion `Fn(Xi) -> U` into the operator's one record type `U` (an enum with one
//! variant per input, typically). [`erase_multi_input`] turns each input's batches into
//! batches of `(K, U)`, so the operator is a [`KeyedProcessOperator`](super::KeyedProcessOperator)
//! over `(K, U)` running a [`MultiInputFunction`].

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Collector, Data, DataBatch, Emission};
use crate::dataplane::message::WatermarkStatus;
use crate::error::UserError;
use crate::operators::operator::{ErasedOperator, OperatorFault, TaskInfo};
use crate::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use crate::state::key::Key;
use crate::types::{CheckpointId, Timestamp, Watermark};
use std::marker::PhantomData;
use std::sync::Arc;

/// Converts one input's batch into a batch of the operator's `(K, U)`.
type Convert = dyn Fn(DataBatch) -> Result<DataBatch, OperatorFault> + Send + Sync;
/// Decodes one input's in-flight bytes into a batch of that input's records.
type Decode = dyn Fn(&[u8]) -> Result<DataBatch, String> + Send + Sync;

/// One input of a multi-input operator, type-erased: converts that input's batches into
/// batches of the operator's `(K, U)`, and decodes its in-flight bytes (unaligned
/// checkpoints) into batches of the input's own type.
#[derive(Clone)]
pub struct InputAdapter {
    convert: Arc<Convert>,
    decode: Arc<Decode>,
}

impl std::fmt::Debug for InputAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputAdapter")
    }
}

impl InputAdapter {
    /// An input of records `X`, keyed by `key`, converted by `into`: the operator reads
    /// `(K, U)`.
    pub fn new<X, K, U>(
        key: impl Fn(&X) -> K + Send + Sync + 'static,
        into: impl Fn(X) -> U + Send + Sync + 'static,
    ) -> Self
    where
        X: Data,
        K: Key,
        U: Data,
    {
        Self::map(move |x: X| (key(&x), into(x)))
    }

    /// An input of records `X`, each turned into the operator's record by `f` (timestamps
    /// kept).
    pub fn map<X: Data, Y: Data>(f: impl Fn(X) -> Y + Send + Sync + 'static) -> Self {
        let convert = Arc::new(
            move |batch: DataBatch| -> Result<DataBatch, OperatorFault> {
                let (values, timestamps) = batch
                    .downcast::<X>()
                    .map_err(OperatorFault::Type)?
                    .into_parts();
                let values: Vec<Y> = values.into_iter().map(&f).collect();
                Batch::from_parts(values, timestamps)
                    .map(DataBatch::new)
                    .ok_or_else(|| {
                        OperatorFault::User("a batch's timestamps do not match its values".into())
                    })
            },
        );
        // In-flight bytes decode to what the input's lanes carry; replay then goes through
        // `process`, which converts.
        let decode = Arc::new(|bytes: &[u8]| DataBatch::decode::<X>(bytes));
        InputAdapter { convert, decode }
    }
}

/// Runs an operator over the adapters' common record type as an operator with one input per
/// adapter (logical input `i` uses `inputs[i]`).
pub fn erase_multi_input(
    inner: Box<dyn ErasedOperator>,
    inputs: Vec<InputAdapter>,
) -> Box<dyn ErasedOperator> {
    Box::new(MultiInputs { inner, inputs })
}

struct MultiInputs {
    inner: Box<dyn ErasedOperator>,
    inputs: Vec<InputAdapter>,
}

impl MultiInputs {
    fn input(&self, input: usize) -> Result<&InputAdapter, String> {
        self.inputs.get(input).ok_or_else(|| {
            format!(
                "a batch for input {input} of an operator with {} inputs",
                self.inputs.len()
            )
        })
    }
}

impl ErasedOperator for MultiInputs {
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.inner.open(info)
    }
    fn process(&mut self, input: usize, batch: DataBatch) -> Result<(), OperatorFault> {
        let adapter = self
            .input(input)
            .map_err(|e| OperatorFault::User(e.into()))?;
        let converted = (adapter.convert)(batch)?;
        self.inner.process(0, converted)
    }
    fn process_watermark(&mut self, watermark: Watermark) -> Result<(), OperatorFault> {
        self.inner.process_watermark(watermark)
    }
    fn process_status(&mut self, status: WatermarkStatus) -> Result<(), OperatorFault> {
        self.inner.process_status(status)
    }
    fn next_processing_time(&self) -> Option<Timestamp> {
        self.inner.next_processing_time()
    }
    fn key_count(&self) -> Option<usize> {
        self.inner.key_count()
    }
    fn on_processing_time(&mut self, now: Timestamp) -> Result<(), OperatorFault> {
        self.inner.on_processing_time(now)
    }
    fn finish(&mut self) -> Result<(), OperatorFault> {
        self.inner.finish()
    }
    fn has_more(&self) -> bool {
        self.inner.has_more()
    }
    fn is_blocked(&self) -> bool {
        self.inner.is_blocked()
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.inner.close()
    }
    fn resume(&mut self) -> Result<(), OperatorFault> {
        self.inner.resume()
    }
    fn take_emissions(&mut self, into: &mut Vec<Emission>) {
        self.inner.take_emissions(into);
    }
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        self.inner.snapshot_state(checkpoint, state)
    }
    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        self.inner.restore_state(restored)
    }
    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), UserError> {
        self.inner.notify_checkpoint_complete(checkpoint)
    }
    fn decode_input(&self, input: usize, bytes: &[u8]) -> Result<DataBatch, String> {
        (self.input(input)?.decode)(bytes)
    }
}

/// The function of an N-input keyed operator: records of every input, converted to `U`, with
/// the keyed state and timers of their key.
pub trait MultiInputFunction<K, U, O>: Send + 'static {
    /// Processes one record (of whichever input; `U` says which).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: U,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// A timer of the current key fired.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let _ = (time, ctx, out);
        Ok(())
    }

    /// Called once before the first record: register keyed state here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let _ = ctx;
        Ok(())
    }
}

/// Runs a [`MultiInputFunction`] as a [`KeyedProcessFunction`] over `(K, U)`.
#[derive(Clone)]
pub struct MultiInputAdapter<P, U> {
    function: P,
    _types: PhantomData<fn(U)>,
}

impl<P, U> MultiInputAdapter<P, U> {
    /// Wraps `function`.
    pub fn new(function: P) -> Self {
        MultiInputAdapter {
            function,
            _types: PhantomData,
        }
    }
}

impl<K, U, O, P> KeyedProcessFunction<K, (K, U), O> for MultiInputAdapter<P, U>
where
    K: 'static,
    U: 'static,
    P: MultiInputFunction<K, U, O>,
{
    fn process_element(
        &mut self,
        (_, value): (K, U),
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.function.process_element(value, ctx, out)
    }
    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.function.on_timer(time, ctx, out)
    }
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.function.open(ctx)
    }
}

/// A record of one of three inputs (the `U` of a three-input operator).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Three<A, B, C> {
    /// From the first input.
    A(A),
    /// From the second input.
    B(B),
    /// From the third input.
    C(C),
}

/// The records of one key and window in a [`ThreeWayWindowJoin`].
type Buckets<A, B, C> = (Vec<A>, Vec<B>, Vec<C>);

/// The inner join of three keyed inputs per tumbling event-time window, on the N-input
/// operator: every combination `(a, b, c)` of one record of each input with the key, in the
/// same window, is passed to the join function when the window ends (the watermark passes
/// its last millisecond). Records are buffered per key and window until then; a record whose
/// window has already fired is late and dropped.
#[derive(Clone)]
pub struct ThreeWayWindowJoin<A, B, C, F> {
    size: i64,
    function: F,
    buckets: Option<crate::state::keyed_state::MapState<i64, Buckets<A, B, C>>>,
}

impl<A, B, C, F> ThreeWayWindowJoin<A, B, C, F> {
    /// Tumbling windows of `size_ms` (aligned to the epoch), `function` per combination.
    ///
    /// # Errors
    ///
    /// If `size_ms` is not positive.
    pub fn new(size_ms: i64, function: F) -> Result<Self, UserError> {
        if size_ms <= 0 {
            return Err(format!("the window size must be positive, got {size_ms} ms").into());
        }
        Ok(ThreeWayWindowJoin {
            size: size_ms,
            function,
            buckets: None,
        })
    }
}

impl<K, A, B, C, O, F> MultiInputFunction<K, Three<A, B, C>, O> for ThreeWayWindowJoin<A, B, C, F>
where
    K: Key,
    A: crate::state::keyed_state::StateValue,
    B: crate::state::keyed_state::StateValue,
    C: crate::state::keyed_state::StateValue,
    O: 'static,
    F: FnMut(&K, i64, &A, &B, &C, &mut Collector<O>) -> Result<(), UserError> + Send + 'static,
{
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.buckets = Some(ctx.state.map_state("three-way-join", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        value: Three<A, B, C>,
        ctx: &mut KeyedContext<'_, K>,
        _: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let ts = ctx
            .timestamp()
            .ok_or(
                "a window join needs event timestamps; assign timestamps and watermarks upstream",
            )?
            .0;
        let start = ts - ts.rem_euclid(self.size);
        let last = start.saturating_add(self.size - 1);
        let watermark = ctx.current_watermark();
        if watermark != Watermark::MIN && last <= watermark.0 {
            return Ok(()); // its window already fired: late
        }
        let buckets = self
            .buckets
            .as_ref()
            .ok_or("three-way join used before open()")?;
        buckets.modify(ctx.state(), start, |(a, b, c)| match value {
            Three::A(x) => a.push(x),
            Three::B(x) => b.push(x),
            Three::C(x) => c.push(x),
        })?;
        ctx.register_event_time_timer(Timestamp(last));
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let start = time.0 - (self.size - 1);
        let buckets = self
            .buckets
            .as_ref()
            .ok_or("three-way join used before open()")?;
        let Some((a, b, c)) = buckets.take(ctx.state(), &start)? else {
            return Ok(());
        };
        let key = ctx.current_key().clone();
        out.set_timestamp(Some(time));
        for x in &a {
            for y in &b {
                for z in &c {
                    (self.function)(&key, start, x, y, z, out)?;
                }
            }
        }
        Ok(())
    }
}
