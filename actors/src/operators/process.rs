//! `process`: the general per-record function with a context (Flink's `ProcessFunction` and
//! `KeyedProcessFunction`).

use crate::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::key::KeySelector;
use crate::operator::{Operator, TaskInfo};
use crate::types::{Timestamp, Watermark};
use std::marker::PhantomData;

/// What a [`ProcessFunction`] can see about the record being processed.
#[derive(Debug)]
pub struct Context<'a> {
    timestamp: Option<Timestamp>,
    watermark: Watermark,
    info: &'a TaskInfo,
}

impl Context<'_> {
    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.watermark
    }

    /// This operator instance.
    pub fn task(&self) -> &TaskInfo {
        self.info
    }
}

/// A function called for every record, with a [`Context`] and a [`Collector`].
///
/// Implemented for closures `FnMut(I, &mut Context, &mut Collector<O>) -> Result<(), UserError>`.
pub trait ProcessFunction<I, O>: Send + 'static {
    /// Processes one record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut Context<'_>,
        out: &mut Collector<O>,
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
}

impl<I, O, F> ProcessFunction<I, O> for F
where
    F: FnMut(I, &mut Context<'_>, &mut Collector<O>) -> Result<(), UserError> + Send + 'static,
{
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut Context<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(value, ctx, out)
    }
}

fn missing_open() -> UserError {
    "process function called before open()".into()
}

/// Runs a [`ProcessFunction`].
pub struct ProcessOperator<I, O, P> {
    function: P,
    info: Option<TaskInfo>,
    watermark: Watermark,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, P> ProcessOperator<I, O, P> {
    /// An operator running `function`.
    pub fn new(function: P) -> Self {
        ProcessOperator {
            function,
            info: None,
            watermark: Watermark::MIN,
            _types: PhantomData,
        }
    }
}

impl<I: Data, O: Data, P: ProcessFunction<I, O>> Operator for ProcessOperator<I, O, P> {
    type In = I;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.info = Some(info.clone());
        self.function.open(info)
    }

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            let mut ctx = Context {
                timestamp: ts,
                watermark: self.watermark,
                info,
            };
            self.function.process_element(v, &mut ctx, out)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, wm: Watermark, _: &mut Collector<O>) -> Result<(), UserError> {
        self.watermark = wm;
        Ok(())
    }
}

/// What a [`KeyedProcessFunction`] can see: the [`Context`] plus the current key.
#[derive(Debug)]
pub struct KeyedContext<'a, K> {
    base: Context<'a>,
    key: &'a K,
}

impl<K> KeyedContext<'_, K> {
    /// The key of the record being processed.
    pub fn current_key(&self) -> &K {
        self.key
    }

    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.base.timestamp
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.base.watermark
    }

    /// This operator instance.
    pub fn task(&self) -> &TaskInfo {
        self.base.info
    }
}

/// A function called for every record of a keyed stream.
///
/// Implemented for closures `FnMut(I, &mut KeyedContext<K>, &mut Collector<O>) -> Result<(), UserError>`.
pub trait KeyedProcessFunction<K, I, O>: Send + 'static {
    /// Processes one record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
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
}

impl<K, I, O, F> KeyedProcessFunction<K, I, O> for F
where
    F: FnMut(I, &mut KeyedContext<'_, K>, &mut Collector<O>) -> Result<(), UserError>
        + Send
        + 'static,
{
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(value, ctx, out)
    }
}

/// Runs a [`KeyedProcessFunction`]; `key` extracts each record's key.
pub struct KeyedProcessOperator<I, O, S, P> {
    key: S,
    function: P,
    info: Option<TaskInfo>,
    watermark: Watermark,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, S, P> KeyedProcessOperator<I, O, S, P> {
    /// An operator running `function` on records keyed by `key`.
    pub fn new(key: S, function: P) -> Self {
        KeyedProcessOperator {
            key,
            function,
            info: None,
            watermark: Watermark::MIN,
            _types: PhantomData,
        }
    }
}

impl<I, O, S, P> Operator for KeyedProcessOperator<I, O, S, P>
where
    I: Data,
    O: Data,
    S: KeySelector<I>,
    P: KeyedProcessFunction<S::Key, I, O>,
{
    type In = I;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.info = Some(info.clone());
        self.function.open(info)
    }

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            let key = self.key.key(&v);
            let mut ctx = KeyedContext {
                base: Context {
                    timestamp: ts,
                    watermark: self.watermark,
                    info,
                },
                key: &key,
            };
            self.function.process_element(v, &mut ctx, out)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, wm: Watermark, _: &mut Collector<O>) -> Result<(), UserError> {
        self.watermark = wm;
        Ok(())
    }
}
