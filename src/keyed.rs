//! [`KeyedStream`]: a stream partitioned by key, with rolling aggregations and keyed process
//! functions.
//!
//! Rolling aggregations emit the updated value for every input record, as Flink's streaming
//! mode does. `sum`, `min` and `max` change one field of the first record seen for the key and
//! keep its other fields; `min_by` and `max_by` keep the whole record holding the extreme (the
//! first one on ties).

use crate::datastream::DataStream;
use crate::window::{NoEvictor, WindowedStream, WithEvictor};
use actorflow_runtime::operators::operator::{TaskInfo, erase};
use actorflow_runtime::operators::{
    KeyedContext, KeyedProcessFunction, KeyedProcessOperator, KeyedReduceOperator, OpenContext,
};
use actorflow_runtime::state::key::KeySelector;
use actorflow_runtime::time::window::{
    AssignerDefault, CountEvictor, CountTrigger, GlobalWindows, PurgingTrigger, WindowAssigner,
};
use actorflow_runtime::{Collector, Data, UserError};
use std::cmp::Ordering;
use std::ops::AddAssign;
use std::panic::Location;
use std::sync::Arc;

/// A [`DataStream`] partitioned by the key that selector `S` extracts (Flink's
/// `KeyedStream`). Made by [`DataStream::key_by`] or [`DataStream::key_by_ref`].
pub struct KeyedStream<T, S> {
    stream: DataStream<T>,
    key: S,
}

impl<T, S: Clone> Clone for KeyedStream<T, S> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }
}

impl<T, S> std::fmt::Debug for KeyedStream<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream")
            .field("selector", &std::any::type_name::<S>())
            .finish()
    }
}

impl<T, S> KeyedStream<T, S>
where
    T: Data,
    S: KeySelector<T>,
{
    pub(crate) fn new(stream: DataStream<T>, key: S) -> Self {
        KeyedStream { stream, key }
    }

    /// The hash-partitioned stream under the keys.
    pub(crate) fn stream(&self) -> &DataStream<T> {
        &self.stream
    }

    /// The key selector.
    pub(crate) fn selector(&self) -> &S {
        &self.key
    }

    /// The interval join with another keyed stream (Flink's `intervalJoin`): see
    /// [`crate::joins`].
    pub fn interval_join<B: Data, S2: KeySelector<B, Key = S::Key>>(
        &self,
        other: &KeyedStream<B, S2>,
    ) -> crate::joins::IntervalJoinBuilder<T, B, S, S2> {
        crate::joins::IntervalJoinBuilder::new(self.connect(other))
    }

    /// Connects another keyed stream with the same key type: records of both with the same
    /// key meet in the same subtask, with shared keyed state and timers (Flink's
    /// `keyBy(..).connect(keyBy(..))`). See [`crate::connected`].
    pub fn connect<B: Data, S2: KeySelector<B, Key = S::Key>>(
        &self,
        other: &KeyedStream<B, S2>,
    ) -> crate::connected::ConnectedKeyedStreams<T, B, S, S2> {
        crate::connected::ConnectedKeyedStreams::new(self.clone(), other.clone())
    }

    /// Connects a broadcast stream: its records reach every subtask, where a
    /// [`KeyedBroadcastProcessFunction`](actorflow_runtime::operators::KeyedBroadcastProcessFunction)
    /// keeps them in broadcast state (Flink's `keyBy(..).connect(BroadcastStream)`); see
    /// [`crate::broadcast`].
    pub fn connect_broadcast<B: Data>(
        &self,
        broadcast: &crate::broadcast::BroadcastStream<B>,
    ) -> crate::broadcast::KeyedBroadcastConnectedStream<T, B, S> {
        crate::broadcast::KeyedBroadcastConnectedStream::new(self.clone(), broadcast.clone())
    }

    /// Splits each key's records into windows (Flink's `window`).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::window::SlidingWindows;
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1_u8, 0_i64), (1, 5), (1, 12)])
    ///         .assign_timestamps_and_watermarks(
    ///             WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(u8, i64), _| e.1),
    ///         )
    ///         .key_by(|e| e.0)
    ///         .window(SlidingWindows::event_time(10, 5).unwrap())
    ///         .process(|_k: &u8, ctx: &mut WindowContext<TimeWindow>, input: Vec<(u8, i64)>, out: &mut Collector<(i64, usize)>| {
    ///             out.collect((ctx.window().start, input.len()));
    ///             Ok(())
    ///         })
    /// });
    /// assert_eq!(out, vec![(-5, 1), (0, 2), (5, 2), (10, 1)]);
    /// ```
    pub fn window<A: WindowAssigner<T>>(
        &self,
        assigner: A,
    ) -> WindowedStream<T, S, A, AssignerDefault, NoEvictor> {
        WindowedStream::new(self.stream.clone(), self.key.clone(), assigner, false)
    }

    /// Windows of `size` records per key, fired and purged when full (Flink's `countWindow`).
    pub fn count_window(
        &self,
        size: u64,
    ) -> WindowedStream<T, S, GlobalWindows, PurgingTrigger<CountTrigger>, NoEvictor> {
        self.window(GlobalWindows::create())
            .trigger(PurgingTrigger::of(CountTrigger::of(size)))
    }

    /// Windows of the last `size` records per key, fired every `slide` records (Flink's
    /// `countWindow(size, slide)`).
    pub fn count_window_sliding(
        &self,
        size: u64,
        slide: u64,
    ) -> WindowedStream<T, S, GlobalWindows, CountTrigger, WithEvictor<CountEvictor>> {
        self.window(GlobalWindows::create())
            .evictor(CountEvictor::of(
                usize::try_from(size).unwrap_or(usize::MAX),
            ))
            .trigger(CountTrigger::of(slide))
    }

    /// The underlying (hash-partitioned) stream.
    pub fn as_stream(&self) -> &DataStream<T> {
        &self.stream
    }

    fn rolling<R>(
        &self,
        name: &str,
        reduce: R,
        location: &'static Location<'static>,
    ) -> DataStream<T>
    where
        R: actorflow_runtime::operators::keyed_reduce::Reducer<T> + Clone + Sync,
    {
        let key = self.key.clone();
        let factory = Arc::new(move |_: &TaskInfo| {
            erase(KeyedReduceOperator::<T, S, R>::new(
                key.clone(),
                reduce.clone(),
            ))
        });
        self.stream.add_operator(name, factory, location)
    }

    /// Folds every record into its key's value with `reduce(accumulated, record)` and emits
    /// the result (Flink's rolling `reduce`).
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1u8, 2u64), (1, 5), (2, 1)])
    ///         .key_by(|(k, _)| *k)
    ///         .reduce(|a, b| (a.0, a.1.max(b.1)))
    /// });
    /// assert_eq!(out, vec![(1, 2), (1, 5), (2, 1)]);
    /// ```
    #[track_caller]
    pub fn reduce<R>(&self, reduce: R) -> DataStream<T>
    where
        R: FnMut(T, T) -> T + Clone + Send + Sync + 'static,
    {
        self.rolling("Keyed Reduce", reduce, Location::caller())
    }

    /// A rolling reduce with a rich function (Flink's `RichReduceFunction` after `keyBy`):
    /// [`reduce`](Self::reduce) plus `open`, `close` and the function's own state (see
    /// [`RichFunction`](actorflow_runtime::operators::rich::RichFunction)).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::rich::{ReduceFunction, RichFunction};
    /// /// Keeps the larger record; learns a cap in `open`.
    /// #[derive(Clone, Default)]
    /// struct CappedMax { cap: u64 }
    /// impl RichFunction for CappedMax {
    ///     fn open(&mut self, _: &TaskInfo) -> Result<(), UserError> {
    ///         self.cap = 10;
    ///         Ok(())
    ///     }
    /// }
    /// impl ReduceFunction<(u32, u64)> for CappedMax {
    ///     fn reduce(&mut self, a: (u32, u64), b: (u32, u64)) -> Result<(u32, u64), UserError> {
    ///         Ok((a.0, a.1.max(b.1).min(self.cap)))
    ///     }
    /// }
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1u32, 3u64), (1, 50), (2, 4)])
    ///         .key_by(|r: &(u32, u64)| r.0)
    ///         .rich_reduce(CappedMax::default())
    /// });
    /// assert_eq!(out, vec![(1, 3), (1, 10), (2, 4)]);
    /// ```
    #[track_caller]
    pub fn rich_reduce<R>(&self, reduce: R) -> DataStream<T>
    where
        R: actorflow_runtime::operators::rich::ReduceFunction<T> + Clone + Sync,
    {
        self.rolling(
            "Keyed Reduce",
            actorflow_runtime::operators::keyed_reduce::RichReduce(reduce),
            Location::caller(),
        )
    }

    /// Rolling sum of the field `field` selects; other fields come from the key's first
    /// record (Flink's `sum(field)`).
    ///
    /// `field` returns a **mutable reference** to the field (`|r| &mut r.1`), because the sum
    /// is written into that field of the record that is emitted; `sum`, `min` and `max` all
    /// work this way. [`min_by`](Self::min_by) / [`max_by`](Self::max_by) instead choose a
    /// whole record and take the field's **value** (`|r| r.1`).
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1u32, 1u64), (1, 2), (2, 5)])
    ///         .key_by(|r: &(u32, u64)| r.0)
    ///         .sum(|r| &mut r.1)
    /// });
    /// assert_eq!(out, vec![(1, 1), (1, 3), (2, 5)]);
    /// ```
    #[track_caller]
    pub fn sum<N, A>(&self, field: A) -> DataStream<T>
    where
        N: AddAssign + Clone + 'static,
        A: for<'a> Fn(&'a mut T) -> &'a mut N + Clone + Send + Sync + 'static,
    {
        let reduce = move |mut acc: T, mut v: T| {
            let add = field(&mut v).clone();
            *field(&mut acc) += add;
            acc
        };
        self.rolling("Keyed Aggregation", reduce, Location::caller())
    }

    /// Rolling minimum of a field; other fields come from the key's first record.
    #[track_caller]
    pub fn min<N, A>(&self, field: A) -> DataStream<T>
    where
        N: PartialOrd + Clone + 'static,
        A: for<'a> Fn(&'a mut T) -> &'a mut N + Clone + Send + Sync + 'static,
    {
        self.rolling(
            "Keyed Aggregation",
            replace_field_if(field, Ordering::Less),
            Location::caller(),
        )
    }

    /// Rolling maximum of a field; other fields come from the key's first record.
    #[track_caller]
    pub fn max<N, A>(&self, field: A) -> DataStream<T>
    where
        N: PartialOrd + Clone + 'static,
        A: for<'a> Fn(&'a mut T) -> &'a mut N + Clone + Send + Sync + 'static,
    {
        self.rolling(
            "Keyed Aggregation",
            replace_field_if(field, Ordering::Greater),
            Location::caller(),
        )
    }

    /// The record with the smallest value of `by` so far (the earliest on ties). `by` returns
    /// the field's value (`|r| r.1`): the record is kept whole, nothing is written (unlike
    /// [`min`](Self::min), whose accessor returns `&mut`).
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1u32, 3u64, 'x'), (1, 1, 'y'), (1, 2, 'z')])
    ///         .key_by(|r: &(u32, u64, char)| r.0)
    ///         .min_by(|r| r.1)
    /// });
    /// assert_eq!(out, vec![(1, 3, 'x'), (1, 1, 'y'), (1, 1, 'y')]);
    /// ```
    #[track_caller]
    pub fn min_by<N, B>(&self, by: B) -> DataStream<T>
    where
        N: PartialOrd + 'static,
        B: Fn(&T) -> N + Clone + Send + Sync + 'static,
    {
        self.rolling(
            "Keyed Aggregation",
            keep_record_if(by, Ordering::Less),
            Location::caller(),
        )
    }

    /// The record with the largest value of `by` so far (the earliest on ties).
    #[track_caller]
    pub fn max_by<N, B>(&self, by: B) -> DataStream<T>
    where
        N: PartialOrd + 'static,
        B: Fn(&T) -> N + Clone + Send + Sync + 'static,
    {
        self.rolling(
            "Keyed Aggregation",
            keep_record_if(by, Ordering::Greater),
            Location::caller(),
        )
    }

    /// Runs a [`KeyedProcessFunction`] on every record (Flink's `process` on a keyed stream):
    /// with keyed state declared in its `open`, event- and processing-time timers through the
    /// context, `on_timer`, and side outputs through the collector. See `docs/state.md` and the
    /// `timers` example.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::keyed_state::ValueState;
    /// use actorflow::operators::OpenContext;
    /// /// Emits each key's first record only.
    /// #[derive(Clone, Default)]
    /// struct First { seen: Option<ValueState<bool>> }
    /// impl KeyedProcessFunction<char, (char, u32), (char, u32)> for First {
    ///     fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
    ///         self.seen = Some(ctx.state.value_state("seen", None)?);
    ///         Ok(())
    ///     }
    ///     fn process_element(&mut self, r: (char, u32), ctx: &mut KeyedContext<'_, char>, out: &mut Collector<(char, u32)>) -> Result<(), UserError> {
    ///         let seen = self.seen.as_ref().ok_or("not open")?;
    ///         if seen.value(ctx.state())?.is_none() {
    ///             seen.update(ctx.state(), true)?;
    ///             out.collect(r);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![('a', 1), ('b', 2), ('a', 3)]).key_by(|r| r.0).process(First::default())
    /// });
    /// assert_eq!(out, vec![('a', 1), ('b', 2)]);
    /// ```
    #[track_caller]
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: KeyedProcessFunction<S::Key, T, O> + Clone + Sync,
    {
        self.keyed_function("Keyed Process", function)
    }

    /// Applies a custom [`Operator`](actorflow_runtime::Operator) to the keyed stream (Flink's
    /// `KeyedStream.transform`): records reach it partitioned by key — every record of a key
    /// at the same subtask, whose `TaskInfo::key_group_range` says which key groups it owns —
    /// so it can keep its own per-key state (for instance a
    /// [`KeyedTable`](actorflow_runtime::state::table::KeyedTable)) and snapshot it per key
    /// group for rescaling. See [`DataStream::transform`].
    #[track_caller]
    pub fn transform<Op, F>(&self, name: &str, factory: F) -> DataStream<Op::Out>
    where
        Op: actorflow_runtime::Operator<In = T>,
        F: Fn(&TaskInfo) -> Op + Send + Sync + 'static,
    {
        let factory = Arc::new(move |info: &TaskInfo| erase(factory(info)));
        self.stream.add_operator(name, factory, Location::caller())
    }

    /// Maps every record, with access to keyed state (Flink's `keyBy(..).map(..)`): a closure
    /// `|value| ..`, or a [`KeyedMapFunction`] that declares state in `open`. Records keep
    /// their timestamps; the result is not keyed any more.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1u8, 10), (2, 20)]).key_by(|r: &(u8, i32)| r.0).map(|r: (u8, i32)| r.1 + 1)
    /// });
    /// assert_eq!(out, vec![11, 21]);
    /// ```
    #[track_caller]
    pub fn map<O, M>(&self, function: M) -> DataStream<O>
    where
        O: Data,
        M: KeyedMapFunction<S::Key, T, O> + Clone + Sync,
    {
        self.keyed_function("Map", Keyed::<M, MapKind>::new(function))
    }

    /// Emits any number of records per record, with access to keyed state (Flink's
    /// `keyBy(..).flatMap(new RichFlatMapFunction ..)`): a closure `|value, out| ..`, or a
    /// [`KeyedFlatMapFunction`].
    ///
    /// # Examples
    ///
    /// Flink's `CountWindowAverage`: the average of every two values of a key.
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::keyed_state::ValueState;
    /// use actorflow::operators::OpenContext;
    /// use actorflow::KeyedFlatMapFunction;
    ///
    /// #[derive(Clone, Default)]
    /// struct CountWindowAverage(Option<ValueState<(u64, u64)>>);
    ///
    /// impl KeyedFlatMapFunction<u64, (u64, u64), (u64, u64)> for CountWindowAverage {
    ///     fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
    ///         self.0 = Some(ctx.state.value_state("average", None)?);
    ///         Ok(())
    ///     }
    ///     fn flat_map(
    ///         &mut self,
    ///         (key, value): (u64, u64),
    ///         ctx: &mut KeyedContext<'_, u64>,
    ///         out: &mut Collector<(u64, u64)>,
    ///     ) -> Result<(), UserError> {
    ///         let sum = self.0.as_ref().ok_or("not open")?;
    ///         let (count, total) = sum.value(ctx.state())?.unwrap_or((0, 0));
    ///         let (count, total) = (count + 1, total + value);
    ///         if count >= 2 {
    ///             out.collect((key, total / count));
    ///             sum.clear(ctx.state());
    ///         } else {
    ///             sum.update(ctx.state(), (count, total))?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![(1u64, 3u64), (1, 5), (1, 7), (1, 4), (1, 2)])
    ///         .key_by(|r: &(u64, u64)| r.0)
    ///         .flat_map(CountWindowAverage::default())
    /// });
    /// assert_eq!(out, vec![(1, 4), (1, 5)]);
    /// ```
    #[track_caller]
    pub fn flat_map<O, M>(&self, function: M) -> DataStream<O>
    where
        O: Data,
        M: KeyedFlatMapFunction<S::Key, T, O> + Clone + Sync,
    {
        self.keyed_function("FlatMap", Keyed::<M, FlatMapKind>::new(function))
    }

    /// Keeps the records `function` accepts, with access to keyed state: a closure
    /// `|value| ..`, or a [`KeyedFilterFunction`]. The result is not keyed any more.
    #[track_caller]
    pub fn filter<M>(&self, function: M) -> DataStream<T>
    where
        M: KeyedFilterFunction<S::Key, T> + Clone + Sync,
    {
        self.keyed_function("Filter", Keyed::<M, FilterKind>::new(function))
    }

    #[track_caller]
    fn keyed_function<O, P>(&self, name: &str, function: P) -> DataStream<O>
    where
        O: Data,
        P: KeyedProcessFunction<S::Key, T, O> + Clone + Sync,
    {
        let key = self.key.clone();
        let factory = Arc::new(move |_: &TaskInfo| {
            erase(KeyedProcessOperator::<T, O, S, P>::new(
                key.clone(),
                function.clone(),
            ))
        });
        self.stream.add_operator(name, factory, Location::caller())
    }

    /// [`process`](Self::process) with a closure; its argument types are inferred.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_iter(["apple", "avocado", "banana"].map(String::from))
    ///         .key_by(|w| w.as_bytes()[0])
    ///         .process_fn(|w, ctx, out| {
    ///             out.collect(format!("{}:{w}", *ctx.current_key() as char));
    ///             Ok(())
    ///         })
    /// });
    /// assert_eq!(out, vec!["a:apple", "a:avocado", "b:banana"]);
    /// ```
    #[track_caller]
    pub fn process_fn<O, P>(&self, f: P) -> DataStream<O>
    where
        O: Data,
        P: FnMut(T, &mut KeyedContext<'_, S::Key>, &mut Collector<O>) -> Result<(), UserError>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        self.process(f)
    }
}

/// `acc` with its field replaced by the record's when the record's compares as `wanted`.
fn replace_field_if<T, N, A>(field: A, wanted: Ordering) -> impl FnMut(T, T) -> T + Clone
where
    N: PartialOrd + Clone,
    A: for<'a> Fn(&'a mut T) -> &'a mut N + Clone,
{
    move |mut acc: T, mut v: T| {
        let candidate = field(&mut v).clone();
        let current = field(&mut acc);
        if candidate.partial_cmp(current) == Some(wanted) {
            *current = candidate;
        }
        acc
    }
}

/// The record if its `by` compares as `wanted` against the accumulated one's, else the
/// accumulated record.
fn keep_record_if<T, N, B>(by: B, wanted: Ordering) -> impl FnMut(T, T) -> T + Clone
where
    N: PartialOrd,
    B: Fn(&T) -> N + Clone,
{
    move |acc: T, v: T| {
        if by(&v).partial_cmp(&by(&acc)) == Some(wanted) {
            v
        } else {
            acc
        }
    }
}

/// A keyed map with access to keyed state (Flink's `keyBy(..).map(new RichMapFunction ..)`):
/// declare state in [`open`](Self::open), read and write it for the current key in
/// [`map`](Self::map). A closure `|value| ..` is one too (without state).
pub trait KeyedMapFunction<K, I, O>: Send + 'static {
    /// Called once per subtask before the first record: declare keyed state here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let _ = ctx;
        Ok(())
    }

    /// Maps one record of the current key (`ctx.current_key()`).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn map(&mut self, value: I, ctx: &mut KeyedContext<'_, K>) -> Result<O, UserError>;

    /// Called once when the subtask ends, is cancelled or fails (Flink's `close`).
    ///
    /// # Errors
    ///
    /// An error fails a subtask that was finishing normally.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }
}

impl<K, I, O, F: FnMut(I) -> O + Send + 'static> KeyedMapFunction<K, I, O> for F {
    fn map(&mut self, value: I, _: &mut KeyedContext<'_, K>) -> Result<O, UserError> {
        Ok(self(value))
    }
}

/// A keyed flat map with access to keyed state (Flink's `RichFlatMapFunction` after `keyBy`,
/// as in its `CountWindowAverage` example). A closure `|value, out| ..` is one too.
pub trait KeyedFlatMapFunction<K, I, O>: Send + 'static {
    /// Called once per subtask before the first record: declare keyed state here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let _ = ctx;
        Ok(())
    }

    /// Emits any number of records for one record of the current key.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn flat_map(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Called once when the subtask ends, is cancelled or fails (Flink's `close`).
    ///
    /// # Errors
    ///
    /// An error fails a subtask that was finishing normally.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }
}

impl<K, I, O, F: FnMut(I, &mut Collector<O>) + Send + 'static> KeyedFlatMapFunction<K, I, O> for F {
    fn flat_map(
        &mut self,
        value: I,
        _: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(value, out);
        Ok(())
    }
}

/// A keyed filter with access to keyed state (for example "drop repeats of the last value
/// seen for this key"). A closure `|value| ..` is one too.
pub trait KeyedFilterFunction<K, I>: Send + 'static {
    /// Called once per subtask before the first record: declare keyed state here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let _ = ctx;
        Ok(())
    }

    /// True to keep the record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn filter(&mut self, value: &I, ctx: &mut KeyedContext<'_, K>) -> Result<bool, UserError>;

    /// Called once when the subtask ends, is cancelled or fails (Flink's `close`).
    ///
    /// # Errors
    ///
    /// An error fails a subtask that was finishing normally.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }
}

impl<K, I, F: FnMut(&I) -> bool + Send + 'static> KeyedFilterFunction<K, I> for F {
    fn filter(&mut self, value: &I, _: &mut KeyedContext<'_, K>) -> Result<bool, UserError> {
        Ok(self(value))
    }
}

/// Runs a keyed map, flat map or filter as a keyed process function.
#[derive(Clone)]
struct Keyed<F, M> {
    function: F,
    _kind: std::marker::PhantomData<fn() -> M>,
}

impl<F, M> Keyed<F, M> {
    fn new(function: F) -> Self {
        Keyed {
            function,
            _kind: std::marker::PhantomData,
        }
    }
}

#[derive(Clone)]
struct MapKind;
#[derive(Clone)]
struct FlatMapKind;
#[derive(Clone)]
struct FilterKind;

impl<K, I, O, F: KeyedMapFunction<K, I, O>> KeyedProcessFunction<K, I, O> for Keyed<F, MapKind> {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.function.open(ctx)
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        out.collect(self.function.map(value, ctx)?);
        Ok(())
    }
}

impl<K, I, O, F: KeyedFlatMapFunction<K, I, O>> KeyedProcessFunction<K, I, O>
    for Keyed<F, FlatMapKind>
{
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.function.open(ctx)
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.function.flat_map(value, ctx, out)
    }
}

impl<K, I, F: KeyedFilterFunction<K, I>> KeyedProcessFunction<K, I, I> for Keyed<F, FilterKind> {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.function.open(ctx)
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<I>,
    ) -> Result<(), UserError> {
        if self.function.filter(&value, ctx)? {
            out.collect(value);
        }
        Ok(())
    }
}
