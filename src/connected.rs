//! Two connected streams of different types (Flink's `ConnectedStreams`): `a.connect(&b)`,
//! then a co-map, a co-flat-map or a [`CoProcessFunction`]; on keyed streams
//! (`a.key_by(..).connect(&b.key_by(..))`) a [`KeyedCoProcessFunction`] whose records of both
//! inputs share the keyed state and timers of their key.
//!
//! The operator's watermark is the minimum of both inputs' (Flink's rule); checkpoint
//! barriers align over the lanes of both inputs.

use crate::datastream::{DataStream, Port};
use crate::keyed::KeyedStream;
use actorflow_runtime::error::BuildError;
use actorflow_runtime::operators::operator::{ErasedOperator, OperatorFactory, TaskInfo, erase};
use actorflow_runtime::operators::{
    CoKey, CoProcessAdapter, CoProcessFunction, CoRecord, Context, KeyedCoProcessAdapter,
    KeyedCoProcessFunction, KeyedProcessOperator, ProcessOperator, erase_two_input,
};
use actorflow_runtime::runtime::graph::NodeKind;
use actorflow_runtime::state::key::KeySelector;
use actorflow_runtime::{Collector, Data, UserError};
use std::panic::Location;
use std::sync::Arc;

/// Two streams connected into one two-input operator. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ConnectedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

/// Adds a two-input operator over `first` and (read through `second_ports`) `second`.
pub(crate) fn two_input<A: Data, B: Data, O: Data>(
    first: &DataStream<A>,
    second: &DataStream<B>,
    second_ports: &[Port],
    name: &str,
    make: impl Fn(&TaskInfo) -> Box<dyn ErasedOperator> + Send + Sync + 'static,
    location: &'static Location<'static>,
) -> DataStream<O> {
    if first.env.id != second.env.id {
        first.env.lock().errors.push(BuildError::Api {
            message: "connect of streams from different environments".into(),
            location,
        });
    }
    let factory: Arc<dyn OperatorFactory> =
        Arc::new(move |info: &TaskInfo| erase_two_input::<A, B>(make(info)));
    match first.add_multi_input_node(&[second_ports], name, NodeKind::Operator(factory), location) {
        Some(node) => first.env.stream_of(node, first.generation),
        None => DataStream::new(first.env.clone(), Vec::new(), None, first.generation),
    }
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    pub(crate) fn new(first: DataStream<A>, second: DataStream<B>) -> Self {
        ConnectedStreams { first, second }
    }

    /// Runs a [`CoProcessFunction`]: `process_element1` for records of the first stream,
    /// `process_element2` for the second's (Flink's `CoProcessFunction`).
    #[track_caller]
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: CoProcessFunction<A, B, O> + Clone + Sync,
    {
        let make = move |_: &TaskInfo| {
            erase(ProcessOperator::<CoRecord<A, B>, O, _>::new(
                CoProcessAdapter::new(function.clone()),
            ))
        };
        two_input(
            &self.first,
            &self.second,
            &self.second.ports,
            "Co-Process",
            make,
            Location::caller(),
        )
    }

    /// A map with one function per input (Flink's `CoMapFunction`).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut out = actorflow::testing::example(|env| {
    ///     let numbers = env.from_collection(vec![1u32, 2]);
    ///     let words = env.from_collection(vec!["three".to_string()]);
    ///     numbers.connect(&words).map(|n| n.to_string(), |w| w.to_uppercase())
    /// });
    /// out.sort();
    /// assert_eq!(out, vec!["1", "2", "THREE"]);
    /// ```
    #[track_caller]
    pub fn map<O, F1, F2>(&self, mut f1: F1, mut f2: F2) -> DataStream<O>
    where
        O: Data,
        F1: FnMut(A) -> O + Clone + Send + Sync + 'static,
        F2: FnMut(B) -> O + Clone + Send + Sync + 'static,
    {
        self.flat_map(
            move |a, out: &mut Collector<O>| out.collect(f1(a)),
            move |b, out: &mut Collector<O>| out.collect(f2(b)),
        )
    }

    /// A flat map with one function per input (Flink's `CoFlatMapFunction`).
    #[track_caller]
    pub fn flat_map<O, F1, F2>(&self, f1: F1, f2: F2) -> DataStream<O>
    where
        O: Data,
        F1: FnMut(A, &mut Collector<O>) + Clone + Send + Sync + 'static,
        F2: FnMut(B, &mut Collector<O>) + Clone + Send + Sync + 'static,
    {
        #[derive(Clone)]
        struct CoFlatMap<F1, F2>(F1, F2);
        impl<A, B, O, F1, F2> CoProcessFunction<A, B, O> for CoFlatMap<F1, F2>
        where
            F1: FnMut(A, &mut Collector<O>) + Send + 'static,
            F2: FnMut(B, &mut Collector<O>) + Send + 'static,
        {
            fn process_element1(
                &mut self,
                a: A,
                _: &mut Context<'_>,
                out: &mut Collector<O>,
            ) -> Result<(), UserError> {
                (self.0)(a, out);
                Ok(())
            }
            fn process_element2(
                &mut self,
                b: B,
                _: &mut Context<'_>,
                out: &mut Collector<O>,
            ) -> Result<(), UserError> {
                (self.1)(b, out);
                Ok(())
            }
        }
        self.process(CoFlatMap(f1, f2))
    }

    /// Keys both inputs (each by its own selector, to the same key type) for a
    /// [`KeyedCoProcessFunction`] (Flink's `connect(..).keyBy(k1, k2)`).
    #[track_caller]
    pub fn key_by<K, F1, F2>(
        &self,
        k1: F1,
        k2: F2,
    ) -> ConnectedKeyedStreams<
        A,
        B,
        actorflow_runtime::state::key::OwnedKey<F1, K>,
        actorflow_runtime::state::key::OwnedKey<F2, K>,
    >
    where
        K: actorflow_runtime::state::key::Key,
        F1: Fn(&A) -> K + Clone + Send + Sync + 'static,
        F2: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        ConnectedKeyedStreams::new(self.first.key_by(k1), self.second.key_by(k2))
    }
}

/// Two keyed streams with the same key type, connected. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ConnectedKeyedStreams<A, B, S1, S2> {
    first: KeyedStream<A, S1>,
    second: KeyedStream<B, S2>,
}

impl<A, B, S1, S2> ConnectedKeyedStreams<A, B, S1, S2>
where
    A: Data,
    B: Data,
    S1: KeySelector<A>,
    S2: KeySelector<B, Key = S1::Key>,
{
    pub(crate) fn new(first: KeyedStream<A, S1>, second: KeyedStream<B, S2>) -> Self {
        ConnectedKeyedStreams { first, second }
    }

    /// Runs a [`KeyedCoProcessFunction`] (Flink's `KeyedCoProcessFunction`): keyed state and
    /// timers registered in `open` are shared by both inputs' records of a key.
    #[track_caller]
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: KeyedCoProcessFunction<S1::Key, A, B, O> + Clone + Sync,
    {
        self.process_at("Keyed Co-Process", function, Location::caller())
    }

    pub(crate) fn env(&self) -> &crate::StreamExecutionEnvironment {
        self.first.stream().env()
    }

    /// [`process`](Self::process) with the operator's name and the caller's location.
    pub(crate) fn process_at<O, P>(
        &self,
        name: &str,
        function: P,
        location: &'static Location<'static>,
    ) -> DataStream<O>
    where
        O: Data,
        P: KeyedCoProcessFunction<S1::Key, A, B, O> + Clone + Sync,
    {
        let key = CoKey::new(
            self.first.selector().clone(),
            self.second.selector().clone(),
        );
        let make = move |_: &TaskInfo| {
            erase(KeyedProcessOperator::<CoRecord<A, B>, O, _, _>::new(
                key.clone(),
                KeyedCoProcessAdapter::new(function.clone()),
            ))
        };
        two_input(
            self.first.stream(),
            self.second.stream(),
            &self.second.stream().ports,
            name,
            make,
            location,
        )
    }
}
