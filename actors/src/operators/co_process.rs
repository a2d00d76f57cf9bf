//! Two-input operators: `connect` of two streams of different types (Flink's
//! `ConnectedStreams`), with co-map, co-flat-map, [`CoProcessFunction`] and, on keyed streams,
//! [`KeyedCoProcessFunction`] (both inputs share the keyed state and timers of a key).
//!
//! The runtime already feeds an operator batches tagged with their logical input (0 or 1).
//! [`erase_two_input`] turns the two inputs' batches into batches of one type,
//! [`CoRecord`]`<A, B>`, so a two-input operator is an ordinary one-input operator over
//! `CoRecord`: keyed state, timers, watermarks (the minimum over both inputs, by the subtask's
//! valve), checkpoints and barrier alignment over all lanes come with it.

use crate::dataplane::data::{Collector, Data};
use crate::error::UserError;
use crate::operators::multi_input::{InputAdapter, erase_multi_input};
use crate::operators::operator::{ErasedOperator, TaskInfo};
use crate::operators::{Context, KeyedContext, KeyedProcessFunction, OpenContext, ProcessFunction};
use crate::state::key::KeySelector;
use crate::types::Timestamp;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// A record of one of the two inputs of a connected stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoRecord<A, B> {
    /// From the first input (`a` in `a.connect(b)`).
    First(A),
    /// From the second input.
    Second(B),
}

/// Runs an operator over [`CoRecord`]`<A, B>` as a two-input operator: input 0 carries `A`,
/// input 1 carries `B` (a two-input case of
/// [`erase_multi_input`]).
pub fn erase_two_input<A: Data, B: Data>(
    inner: Box<dyn ErasedOperator>,
) -> Box<dyn ErasedOperator> {
    erase_multi_input(
        inner,
        vec![
            InputAdapter::map(CoRecord::<A, B>::First),
            InputAdapter::map(CoRecord::<A, B>::Second),
        ],
    )
}

/// A function over two connected streams (Flink's `CoProcessFunction`): one method per
/// input, the same instance (and fields) for both.
pub trait CoProcessFunction<A, B, O>: Send + 'static {
    /// Processes a record of the first input.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element1(
        &mut self,
        value: A,
        ctx: &mut Context<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Processes a record of the second input.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element2(
        &mut self,
        value: B,
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

/// Runs a [`CoProcessFunction`] as a [`ProcessFunction`] over [`CoRecord`]s.
#[derive(Clone)]
pub struct CoProcessAdapter<P, A, B> {
    function: P,
    _types: PhantomData<fn(A, B)>,
}

impl<P, A, B> CoProcessAdapter<P, A, B> {
    /// Wraps `function`.
    pub fn new(function: P) -> Self {
        CoProcessAdapter {
            function,
            _types: PhantomData,
        }
    }
}

impl<A, B, O, P> ProcessFunction<CoRecord<A, B>, O> for CoProcessAdapter<P, A, B>
where
    A: 'static,
    B: 'static,
    P: CoProcessFunction<A, B, O>,
{
    fn process_element(
        &mut self,
        value: CoRecord<A, B>,
        ctx: &mut Context<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        match value {
            CoRecord::First(a) => self.function.process_element1(a, ctx, out),
            CoRecord::Second(b) => self.function.process_element2(b, ctx, out),
        }
    }
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.function.open(info)
    }
}

/// A function over two connected keyed streams (Flink's `KeyedCoProcessFunction`): records
/// of both inputs with the same key see the same keyed state and timers.
pub trait KeyedCoProcessFunction<K, A, B, O>: Send + 'static {
    /// Processes a record of the first input.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element1(
        &mut self,
        value: A,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Processes a record of the second input.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element2(
        &mut self,
        value: B,
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

/// Runs a [`KeyedCoProcessFunction`] as a [`KeyedProcessFunction`] over [`CoRecord`]s.
#[derive(Clone)]
pub struct KeyedCoProcessAdapter<P, A, B> {
    function: P,
    _types: PhantomData<fn(A, B)>,
}

impl<P, A, B> KeyedCoProcessAdapter<P, A, B> {
    /// Wraps `function`.
    pub fn new(function: P) -> Self {
        KeyedCoProcessAdapter {
            function,
            _types: PhantomData,
        }
    }
}

impl<K, A, B, O, P> KeyedProcessFunction<K, CoRecord<A, B>, O> for KeyedCoProcessAdapter<P, A, B>
where
    A: 'static,
    B: 'static,
    P: KeyedCoProcessFunction<K, A, B, O>,
{
    fn process_element(
        &mut self,
        value: CoRecord<A, B>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        match value {
            CoRecord::First(a) => self.function.process_element1(a, ctx, out),
            CoRecord::Second(b) => self.function.process_element2(b, ctx, out),
        }
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

/// The key of a [`CoRecord`]: each input's own selector, both giving the same key type.
pub struct CoKey<S1, S2> {
    first: S1,
    second: S2,
}

impl<S1, S2> CoKey<S1, S2> {
    /// Keys the first input with `first`, the second with `second`.
    pub fn new(first: S1, second: S2) -> Self {
        CoKey { first, second }
    }
}

impl<S1: Clone, S2: Clone> Clone for CoKey<S1, S2> {
    fn clone(&self) -> Self {
        CoKey::new(self.first.clone(), self.second.clone())
    }
}

impl<A, B, S1, S2> KeySelector<CoRecord<A, B>> for CoKey<S1, S2>
where
    S1: KeySelector<A>,
    S2: KeySelector<B, Key = S1::Key>,
{
    type Key = S1::Key;

    fn with_key<R>(&self, record: &CoRecord<A, B>, f: impl FnOnce(&Self::Key) -> R) -> R {
        match record {
            CoRecord::First(a) => self.first.with_key(a, f),
            CoRecord::Second(b) => self.second.with_key(b, f),
        }
    }

    fn key(&self, record: &CoRecord<A, B>) -> Self::Key {
        match record {
            CoRecord::First(a) => self.first.key(a),
            CoRecord::Second(b) => self.second.key(b),
        }
    }
}
