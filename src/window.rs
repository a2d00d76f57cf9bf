//! Windowed streams: [`KeyedStream::window`](crate::KeyedStream::window) and
//! [`DataStream::window_all`](crate::DataStream::window_all) give a [`WindowedStream`], which
//! is configured (trigger, evictor, allowed lateness, late side output) and then evaluated with
//! `reduce`, `aggregate` or `process` (Flink's `WindowedStream` / `AllWindowedStream`).
//!
//! The runtime part is [`WindowOperator`]; the assigners, triggers and evictors are in
//! [`actorflow_runtime::time::window`].

use crate::datastream::DataStream;
use actorflow_runtime::operators::operator::{TaskInfo, erase};
use actorflow_runtime::operators::{
    AggregateAgg, EvictingAgg, ListAgg, PassThrough, ReduceAgg, WindowAgg, WindowOperator,
    WindowSettings,
};
pub use actorflow_runtime::operators::{
    AggregateFunction, StateBag, WindowContext, WindowFunction,
};
use actorflow_runtime::state::key::KeySelector;
pub use actorflow_runtime::time::window::*;
use actorflow_runtime::{Data, OutputTag};
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

/// No evictor (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvictor;

/// An evictor set with [`WindowedStream::evictor`].
#[derive(Debug, Clone, Copy)]
pub struct WithEvictor<E>(pub E);

/// Whether a windowed stream has an evictor; decides how window contents are stored.
pub trait EvictorChoice<T, W>: Clone + Send + Sync + 'static {
    /// The contents kind for aggregation `A`.
    type Agg<A: WindowAgg<T, W> + Clone + Send + Sync>: WindowAgg<T, W, Out = A::Out>;
    /// Wraps the aggregation.
    fn wrap<A: WindowAgg<T, W> + Clone + Send + Sync>(&self, inner: A) -> Self::Agg<A>;
}

impl<T, W> EvictorChoice<T, W> for NoEvictor {
    type Agg<A: WindowAgg<T, W> + Clone + Send + Sync> = A;
    fn wrap<A: WindowAgg<T, W> + Clone + Send + Sync>(&self, inner: A) -> A {
        inner
    }
}

impl<T: Data, W: 'static, E: Evictor<T, W>> EvictorChoice<T, W> for WithEvictor<E> {
    type Agg<A: WindowAgg<T, W> + Clone + Send + Sync> = EvictingAgg<E, A>;
    fn wrap<A: WindowAgg<T, W> + Clone + Send + Sync>(&self, inner: A) -> EvictingAgg<E, A> {
        EvictingAgg {
            evictor: self.0.clone(),
            inner,
        }
    }
}

/// A keyed stream split into windows by assigner `A`, with trigger `Tr` and evictor choice `E`
/// (Flink's `WindowedStream`; `window_all` gives one with a single unit key).
pub struct WindowedStream<T, S, A, Tr, E> {
    stream: DataStream<T>,
    key: S,
    assigner: A,
    trigger: Tr,
    evictor: E,
    settings: WindowSettings<T>,
    all: bool,
}

impl<T, S, A: std::fmt::Debug, Tr, E> std::fmt::Debug for WindowedStream<T, S, A, Tr, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("assigner", &self.assigner)
            .field("allowed_lateness", &self.settings.allowed_lateness)
            .field("all", &self.all)
            .finish()
    }
}

/// The key of `window_all`: every record has the unit key.
pub type UnitKey<T> = actorflow_runtime::state::key::OwnedKey<fn(&T) -> (), ()>;

impl<T, S, A> WindowedStream<T, S, A, AssignerDefault, NoEvictor>
where
    T: Data,
    S: KeySelector<T>,
    A: WindowAssigner<T>,
{
    pub(crate) fn new(stream: DataStream<T>, key: S, assigner: A, all: bool) -> Self {
        let trigger = AssignerDefault(assigner.default_trigger());
        WindowedStream {
            stream,
            key,
            assigner,
            trigger,
            evictor: NoEvictor,
            settings: WindowSettings::default(),
            all,
        }
    }
}

impl<T, S, A, Tr, E> WindowedStream<T, S, A, Tr, E>
where
    T: Data,
    S: KeySelector<T>,
    A: WindowAssigner<T>,
    Tr: Trigger<T, A::W>,
    E: EvictorChoice<T, A::W>,
{
    /// Replaces the assigner's default trigger (Flink's `trigger`).
    pub fn trigger<Tr2: Trigger<T, A::W>>(self, trigger: Tr2) -> WindowedStream<T, S, A, Tr2, E> {
        WindowedStream {
            stream: self.stream,
            key: self.key,
            assigner: self.assigner,
            trigger,
            evictor: self.evictor,
            settings: self.settings,
            all: self.all,
        }
    }

    /// Removes records before and/or after the window function (Flink's `evictor`). Windows
    /// then keep every record, and the aggregation runs over what remains at each firing.
    pub fn evictor<Ev: Evictor<T, A::W>>(
        self,
        evictor: Ev,
    ) -> WindowedStream<T, S, A, Tr, WithEvictor<Ev>> {
        WindowedStream {
            stream: self.stream,
            key: self.key,
            assigner: self.assigner,
            trigger: self.trigger,
            evictor: WithEvictor(evictor),
            settings: self.settings,
            all: self.all,
        }
    }

    /// Keeps windows for `lateness` after they fired: a late record within it is added and
    /// fires the window again (Flink's `allowedLateness`; event time only).
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.settings.allowed_lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// [`allowed_lateness`](Self::allowed_lateness) in milliseconds.
    pub fn allowed_lateness_ms(mut self, lateness: i64) -> Self {
        self.settings.allowed_lateness = lateness.max(0);
        self
    }

    /// Sends records too late for all their windows to the side output `tag` instead of
    /// dropping them (Flink's `sideOutputLateData`); read it with
    /// [`DataStream::get_side_output`].
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.settings.late_output = Some(tag.clone());
        self
    }

    fn build<Ag, F, O>(
        &self,
        name: &str,
        agg: Ag,
        function: F,
        location: &'static Location<'static>,
    ) -> DataStream<O>
    where
        O: Data,
        Ag: WindowAgg<T, A::W> + Clone + Send + Sync,
        F: WindowFunction<S::Key, Ag::Out, O, A::W> + Clone + Sync,
    {
        let key = self.key.clone();
        let assigner = self.assigner.clone();
        let trigger = self.trigger.clone();
        let evictor = self.evictor.clone();
        let settings = self.settings.clone();
        let factory = Arc::new(move |_: &TaskInfo| {
            erase(WindowOperator::<T, S, A, Tr, E::Agg<Ag>, F, O>::new(
                key.clone(),
                assigner.clone(),
                trigger.clone(),
                evictor.wrap(agg.clone()),
                function.clone(),
                settings.clone(),
            ))
        });
        let out = self.stream.add_operator(name, factory, location);
        if self.all
            && let Some(node) = out.node
            && let Some(n) = out.env.lock().graph.node_mut(node)
        {
            n.parallelism = Some(1);
            n.max_parallelism = Some(1);
            n.non_parallel = true;
        }
        out
    }

    /// Reduces each window incrementally with `reduce(accumulated, record)` and emits the
    /// result when the window fires, with timestamp `window.max_timestamp()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::window::TumblingWindows;
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![('a', 1_i64, 1_u64), ('a', 4, 2), ('a', 12, 5)])
    ///         .assign_timestamps_and_watermarks(
    ///             WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(char, i64, u64), _| e.1),
    ///         )
    ///         .key_by(|e| e.0)
    ///         .window(TumblingWindows::event_time(10).unwrap())
    ///         .reduce(|a, b| (a.0, a.1, a.2 + b.2))
    /// });
    /// assert_eq!(out, vec![('a', 1, 3), ('a', 12, 5)]);
    /// ```
    #[track_caller]
    pub fn reduce<F>(&self, reduce: F) -> DataStream<T>
    where
        F: FnMut(T, T) -> T + Clone + Send + Sync + 'static,
    {
        self.build(
            "Window(Reduce)",
            ReduceAgg(reduce),
            PassThrough,
            Location::caller(),
        )
    }

    /// Reduces incrementally, then hands the reduced value to `function` with the window's
    /// context (Flink's `reduce(ReduceFunction, ProcessWindowFunction)`).
    #[track_caller]
    pub fn reduce_with<F, P, O>(&self, reduce: F, function: P) -> DataStream<O>
    where
        O: Data,
        F: FnMut(T, T) -> T + Clone + Send + Sync + 'static,
        P: WindowFunction<S::Key, T, O, A::W> + Clone + Sync,
    {
        self.build(
            "Window(Reduce)",
            ReduceAgg(reduce),
            function,
            Location::caller(),
        )
    }

    /// Aggregates each window incrementally with an [`AggregateFunction`] and emits its
    /// result (Flink's `aggregate`).
    #[track_caller]
    pub fn aggregate<G>(&self, aggregate: G) -> DataStream<G::Out>
    where
        G: AggregateFunction<T>,
        G::Out: Data,
    {
        self.build(
            "Window(Aggregate)",
            AggregateAgg(aggregate),
            PassThrough,
            Location::caller(),
        )
    }

    /// Aggregates incrementally, then hands the result to `function` with the window's
    /// context (Flink's `aggregate(AggregateFunction, ProcessWindowFunction)`).
    #[track_caller]
    pub fn aggregate_with<G, P, O>(&self, aggregate: G, function: P) -> DataStream<O>
    where
        O: Data,
        G: AggregateFunction<T>,
        P: WindowFunction<S::Key, G::Out, O, A::W> + Clone + Sync,
    {
        self.build(
            "Window(Aggregate)",
            AggregateAgg(aggregate),
            function,
            Location::caller(),
        )
    }

    /// Keeps every record of a window and hands them all to `function` when it fires (Flink's
    /// `process(ProcessWindowFunction)`).
    #[track_caller]
    pub fn process<P, O>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: WindowFunction<S::Key, Vec<T>, O, A::W> + Clone + Sync,
    {
        self.build("Window(Process)", ListAgg, function, Location::caller())
    }

    /// [`process`](Self::process) under another operator name.
    #[track_caller]
    pub(crate) fn process_named<P, O>(&self, name: &str, function: P) -> DataStream<O>
    where
        O: Data,
        P: WindowFunction<S::Key, Vec<T>, O, A::W> + Clone + Sync,
    {
        self.build(name, ListAgg, function, Location::caller())
    }
}
