//! The window join and co-group of two streams (Flink's `JoinedStreams` and
//! `CoGroupedStreams`):
//!
//! ```text
//! a.join(&b).where_(key_a).equal_to(key_b).window(assigner).apply(|a, b| ..)
//! a.co_group(&b).where_(key_a).equal_to(key_b).window(assigner).apply(|as_, bs, out| ..)
//! ```
//!
//! Records of both streams with equal keys that fall into the same window meet when the
//! window fires: the join calls its function for every pair (an inner join: a window with
//! records of one side only gives nothing), the co-group once per key and window with all
//! records of each side (either list may be empty), so outer joins and anti-joins are
//! co-groups. Any window assigner works — tumbling, sliding, session (merging), global with a
//! trigger — with the usual `trigger`, `evictor` and `allowed_lateness`.
//!
//! Built as Flink builds it: both inputs are tagged ([`CoRecord`]), unioned, keyed by the key
//! of either side and windowed; the window keeps all records until it fires. Outputs carry the
//! window's `max_timestamp()`. For how this compares with the interval join and the N-input
//! operator, see `docs/joins.md`.
//!
//! # Examples
//!
//! ```
//! use actorflow::prelude::*;
//! use actorflow::window::TumblingWindows;
//!
//! let env = StreamExecutionEnvironment::new();
//! let stamped = |v: Vec<(char, i64)>| {
//!     env.from_collection(v).assign_timestamps_and_watermarks(
//!         WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(char, i64), _| e.1),
//!     )
//! };
//! let orders = stamped(vec![('a', 1), ('b', 2), ('a', 12)]);
//! let payments = stamped(vec![('a', 5), ('a', 8), ('b', 15)]);
//! let joined = orders
//!     .join(&payments)
//!     .where_(|o: &(char, i64)| o.0)
//!     .equal_to(|p: &(char, i64)| p.0)
//!     .window(TumblingWindows::event_time(10).unwrap())
//!     .apply(|o: (char, i64), p: (char, i64)| format!("{}: {} with {}", o.0, o.1, p.1))
//!     .collect();
//! env.execute_blocking("window join").unwrap();
//! let mut out = joined.take();
//! out.sort();
//! // 'b' at 2 and 15 are in different windows; 'a' at 12 has no payment in [10, 20).
//! assert_eq!(out, vec!["a: 1 with 5", "a: 1 with 8"]);
//! ```

use crate::datastream::DataStream;
use crate::window::{EvictorChoice, NoEvictor, WindowedStream, WithEvictor};
use actorflow_runtime::operators::{CoKey, CoRecord, WindowContext, WindowFunction};
use actorflow_runtime::state::key::{Key, OwnedKey};
use actorflow_runtime::time::window::{AssignerDefault, Evictor, Trigger, WindowAssigner};
use actorflow_runtime::{Collector, Data, UserError};
use std::marker::PhantomData;
use std::time::Duration;

/// Marks a [`JoinedStreams`] that joins (every pair).
#[derive(Debug, Clone, Copy)]
pub enum Join {}

/// Marks a [`JoinedStreams`] that co-groups (both sides' lists per key and window).
#[derive(Debug, Clone, Copy)]
pub enum CoGroup {}

/// `a.co_group(&b)`: see the [module docs](self).
pub type CoGroupedStreams<A, B> = JoinedStreams<A, B, CoGroup>;

/// `a.join(&b)` (or, with `M` = [`CoGroup`], `a.co_group(&b)`), waiting for its keys and
/// window. See the [module docs](self).
#[derive(Debug)]
pub struct JoinedStreams<A, B, M> {
    first: DataStream<A>,
    second: DataStream<B>,
    _mode: PhantomData<M>,
}

impl<A: Data, B: Data, M> JoinedStreams<A, B, M> {
    pub(crate) fn new(first: DataStream<A>, second: DataStream<B>) -> Self {
        JoinedStreams {
            first,
            second,
            _mode: PhantomData,
        }
    }

    /// The key of the first stream's records (Flink's `where`).
    pub fn where_<K, F1>(self, key: F1) -> JoinWhere<A, B, M, K, F1>
    where
        K: Key,
        F1: Fn(&A) -> K + Clone + Send + Sync + 'static,
    {
        JoinWhere {
            streams: self,
            key,
            _key: PhantomData,
        }
    }
}

/// A join or co-group with the first stream's key, waiting for the second's.
pub struct JoinWhere<A, B, M, K, F1> {
    streams: JoinedStreams<A, B, M>,
    key: F1,
    _key: PhantomData<fn() -> K>,
}

impl<A, B, M, K, F1> std::fmt::Debug for JoinWhere<A, B, M, K, F1> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinWhere").finish_non_exhaustive()
    }
}

/// The key selector of the tagged, unioned input.
type TaggedKey<F1, F2, K> = CoKey<OwnedKey<F1, K>, OwnedKey<F2, K>>;

impl<A, B, M, K, F1> JoinWhere<A, B, M, K, F1>
where
    A: Data,
    B: Data,
    K: Key,
    F1: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    /// The key of the second stream's records, of the same type (Flink's `equalTo`).
    pub fn equal_to<F2>(self, key: F2) -> JoinEqualTo<A, B, M, K, F1, F2>
    where
        F2: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        JoinEqualTo {
            streams: self.streams,
            key: CoKey::new(OwnedKey::new(self.key), OwnedKey::new(key)),
        }
    }
}

/// A join or co-group with both keys, waiting for its window.
pub struct JoinEqualTo<A, B, M, K, F1, F2> {
    streams: JoinedStreams<A, B, M>,
    key: TaggedKey<F1, F2, K>,
}

impl<A, B, M, K, F1, F2> std::fmt::Debug for JoinEqualTo<A, B, M, K, F1, F2> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinEqualTo").finish_non_exhaustive()
    }
}

impl<A, B, M, K, F1, F2> JoinEqualTo<A, B, M, K, F1, F2>
where
    A: Data,
    B: Data,
    K: Key,
    F1: Fn(&A) -> K + Clone + Send + Sync + 'static,
    F2: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Windows both streams with `assigner` (Flink's `window`): tumbling, sliding, session,
    /// global (give it a trigger).
    #[track_caller]
    pub fn window<W>(
        self,
        assigner: W,
    ) -> WithWindow<A, B, M, TaggedKey<F1, F2, K>, W, AssignerDefault, NoEvictor>
    where
        W: WindowAssigner<CoRecord<A, B>>,
    {
        let first = self.streams.first.map(CoRecord::<A, B>::First);
        let second = self.streams.second.map(CoRecord::<A, B>::Second);
        let tagged = first.union(&second);
        WithWindow {
            windowed: tagged.keyed(self.key).window(assigner),
            _mode: PhantomData,
        }
    }
}

/// A windowed join or co-group: set the trigger, evictor or allowed lateness, then `apply`.
pub struct WithWindow<A, B, M, S, W, Tr, E> {
    windowed: WindowedStream<CoRecord<A, B>, S, W, Tr, E>,
    _mode: PhantomData<M>,
}

impl<A, B, M, S, W: std::fmt::Debug, Tr, E> std::fmt::Debug for WithWindow<A, B, M, S, W, Tr, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithWindow")
            .field("windowed", &self.windowed)
            .finish()
    }
}

impl<A, B, M, S, W, Tr, E> WithWindow<A, B, M, S, W, Tr, E>
where
    A: Data,
    B: Data,
    S: actorflow_runtime::state::key::KeySelector<CoRecord<A, B>>,
    W: WindowAssigner<CoRecord<A, B>>,
    Tr: Trigger<CoRecord<A, B>, W::W>,
    E: EvictorChoice<CoRecord<A, B>, W::W>,
{
    /// Replaces the assigner's default trigger (Flink's `trigger`).
    pub fn trigger<Tr2: Trigger<CoRecord<A, B>, W::W>>(
        self,
        trigger: Tr2,
    ) -> WithWindow<A, B, M, S, W, Tr2, E> {
        WithWindow {
            windowed: self.windowed.trigger(trigger),
            _mode: PhantomData,
        }
    }

    /// Removes records before and/or after the function (Flink's `evictor`).
    pub fn evictor<Ev: Evictor<CoRecord<A, B>, W::W>>(
        self,
        evictor: Ev,
    ) -> WithWindow<A, B, M, S, W, Tr, WithEvictor<Ev>> {
        WithWindow {
            windowed: self.windowed.evictor(evictor),
            _mode: PhantomData,
        }
    }

    /// Keeps windows for `lateness` after they fired; a late record within it fires the
    /// window again with all its records (Flink's `allowedLateness`).
    pub fn allowed_lateness(self, lateness: Duration) -> Self {
        WithWindow {
            windowed: self.windowed.allowed_lateness(lateness),
            _mode: PhantomData,
        }
    }
}

impl<A, B, S, W, Tr, E> WithWindow<A, B, Join, S, W, Tr, E>
where
    A: Data,
    B: Data,
    S: actorflow_runtime::state::key::KeySelector<CoRecord<A, B>>,
    W: WindowAssigner<CoRecord<A, B>>,
    Tr: Trigger<CoRecord<A, B>, W::W>,
    E: EvictorChoice<CoRecord<A, B>, W::W>,
{
    /// Calls `f` for every pair of a first-stream and a second-stream record with equal keys
    /// in the same window, when it fires (Flink's `apply(JoinFunction)`).
    #[track_caller]
    pub fn apply<O, F>(&self, mut f: F) -> DataStream<O>
    where
        O: Data,
        F: FnMut(A, B) -> O + Clone + Send + Sync + 'static,
    {
        self.flat_apply(move |a, b, out: &mut Collector<O>| {
            out.collect(f(a, b));
            Ok(())
        })
    }

    /// Like [`apply`](Self::apply), emitting any number of records per pair (Flink's
    /// `apply(FlatJoinFunction)`).
    #[track_caller]
    pub fn flat_apply<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: FnMut(A, B, &mut Collector<O>) -> Result<(), UserError> + Clone + Send + Sync + 'static,
    {
        self.windowed.process_named(
            "Window(Join)",
            Tagged {
                function: JoinPairs(f),
                _types: PhantomData,
            },
        )
    }
}

impl<A, B, S, W, Tr, E> WithWindow<A, B, CoGroup, S, W, Tr, E>
where
    A: Data,
    B: Data,
    S: actorflow_runtime::state::key::KeySelector<CoRecord<A, B>>,
    W: WindowAssigner<CoRecord<A, B>>,
    Tr: Trigger<CoRecord<A, B>, W::W>,
    E: EvictorChoice<CoRecord<A, B>, W::W>,
{
    /// Calls `f` once per key and window with the first stream's and the second stream's
    /// records (in arrival order; either may be empty), when the window fires (Flink's
    /// `apply(CoGroupFunction)`).
    #[track_caller]
    pub fn apply<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: FnMut(Vec<A>, Vec<B>, &mut Collector<O>) -> Result<(), UserError>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        self.windowed.process_named(
            "Window(CoGroup)",
            Tagged {
                function: f,
                _types: PhantomData,
            },
        )
    }
}

/// The join as a co-group: every pair, first stream outer.
#[derive(Clone)]
struct JoinPairs<F>(F);

/// What runs on the split lists of one window.
trait OnLists<A, B, O>: Send + 'static {
    fn call(&mut self, a: Vec<A>, b: Vec<B>, out: &mut Collector<O>) -> Result<(), UserError>;
}

impl<A: Data, B: Data, O, F> OnLists<A, B, O> for JoinPairs<F>
where
    F: FnMut(A, B, &mut Collector<O>) -> Result<(), UserError> + Send + 'static,
{
    fn call(&mut self, a: Vec<A>, b: Vec<B>, out: &mut Collector<O>) -> Result<(), UserError> {
        for x in &a {
            for y in &b {
                (self.0)(x.clone(), y.clone(), out)?;
            }
        }
        Ok(())
    }
}

impl<A, B, O, F> OnLists<A, B, O> for F
where
    F: FnMut(Vec<A>, Vec<B>, &mut Collector<O>) -> Result<(), UserError> + Send + 'static,
{
    fn call(&mut self, a: Vec<A>, b: Vec<B>, out: &mut Collector<O>) -> Result<(), UserError> {
        self(a, b, out)
    }
}

/// The window function of the tagged union: splits a window's records by side.
struct Tagged<F, A, B> {
    function: F,
    _types: PhantomData<fn(A, B)>,
}

impl<F: Clone, A, B> Clone for Tagged<F, A, B> {
    fn clone(&self) -> Self {
        Tagged {
            function: self.function.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, W, A, B, O, F> WindowFunction<K, Vec<CoRecord<A, B>>, O, W> for Tagged<F, A, B>
where
    A: Data,
    B: Data,
    F: OnLists<A, B, O>,
{
    fn process(
        &mut self,
        _: &K,
        _: &mut WindowContext<'_, W>,
        input: Vec<CoRecord<A, B>>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for r in input {
            match r {
                CoRecord::First(a) => first.push(a),
                CoRecord::Second(b) => second.push(b),
            }
        }
        self.function.call(first, second, out)
    }
}
