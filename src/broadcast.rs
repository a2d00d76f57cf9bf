//! Broadcast state (Flink's broadcast state pattern): `rules.broadcast_with(&DESCRIPTOR)`
//! makes a [`BroadcastStream`]; `events.connect_broadcast(&rules)` (or
//! `events.key_by(..).connect_broadcast(&rules)`) connects it to the stream it controls, and
//! `.process(..)` runs a [`BroadcastProcessFunction`] (or a
//! [`KeyedBroadcastProcessFunction`]).
//!
//! Every record of the broadcast stream reaches every subtask of the operator, which keeps it
//! in **broadcast state**: named maps, declared by [`BroadcastStateDescriptor`]s, equal on
//! every subtask. The element side reads them ([`ReadOnlyBroadcastState`]); the broadcast side
//! writes them and, keyed, can visit every key's state
//! ([`KeyedBroadcastContext::apply_to_keyed_state`]). Each subtask checkpoints its copy and
//! gets it back on restore, at any parallelism.
//!
//! As in Flink, the operator's watermark is the minimum of both inputs': a broadcast stream
//! without watermarks holds event time back until it ends (give it timestamps and
//! watermarks, or mark its source idle).
//!
//! # Examples
//!
//! ```
//! use actorflow::prelude::*;
//! use actorflow::broadcast::{KeyedBroadcastContext, ReadOnlyBroadcastState};
//!
//! const LIMITS: BroadcastStateDescriptor<String, u32> = BroadcastStateDescriptor::new("limits");
//!
//! #[derive(Clone)]
//! struct CheckLimits;
//! impl KeyedBroadcastProcessFunction<String, (String, u32), (String, u32), String> for CheckLimits {
//!     fn process_element(&mut self, (key, v): (String, u32), _: &mut KeyedContext<'_, String>,
//!                        limits: ReadOnlyBroadcastState<'_>, out: &mut Collector<String>) -> Result<(), UserError> {
//!         if let Some(limit) = limits.get(&LIMITS, &key)? {
//!             if v > *limit {
//!                 out.collect(format!("{key}: {v} > {limit}"));
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn process_broadcast_element(&mut self, (key, limit): (String, u32), ctx: &mut KeyedBroadcastContext<'_, String>,
//!                                  out: &mut Collector<String>) -> Result<(), UserError> {
//!         out.collect(format!("subtask {} knows {key} <= {limit}", ctx.task().subtask_index));
//!         ctx.broadcast_state().put(&LIMITS, key, limit)?;
//!         Ok(())
//!     }
//! }
//!
//! let env = StreamExecutionEnvironment::new();
//! env.set_parallelism(2);
//! let limits = env.from_collection(vec![("a".to_string(), 10u32)]).broadcast_with(&LIMITS);
//! let events = env.from_collection(vec![("a".to_string(), 12u32), ("b".to_string(), 3)]);
//! let out = events.key_by(|e: &(String, u32)| e.0.clone())
//!     .connect_broadcast(&limits)
//!     .process(CheckLimits)
//!     .collect();
//! env.execute_blocking("limits").unwrap();
//! let mut known: Vec<String> = out.take().into_iter().filter(|l| l.contains("knows")).collect();
//! known.sort();
//! // Every subtask got the rule. Whether "a: 12 > 10" is reported depends on which input
//! // arrives first: the `broadcast_rules` example shows the event-time way that does not.
//! assert_eq!(known, vec!["subtask 0 knows a <= 10", "subtask 1 knows a <= 10"]);
//! ```

use crate::connected::two_input;
use crate::datastream::DataStream;
use crate::keyed::KeyedStream;
use actorflow_runtime::Data;
use actorflow_runtime::operators::operator::{TaskInfo, erase};
use actorflow_runtime::operators::{
    BroadcastKey, BroadcastProcessFunction, BroadcastProcessOperator, BroadcastStateDescriptor,
    BroadcastValue, KeyedBroadcastProcessFunction, KeyedBroadcastProcessOperator, StateSpec,
};
use actorflow_runtime::state::key::KeySelector;
use std::panic::Location;

pub use actorflow_runtime::operators::{
    BroadcastContext, BroadcastState, KeyedBroadcastContext, ReadOnlyBroadcastState,
};

/// A stream whose records go to every subtask of the operator it is connected to, together
/// with the broadcast state maps they update (Flink's `BroadcastStream`). Made by
/// [`DataStream::broadcast_with`].
#[derive(Debug, Clone)]
pub struct BroadcastStream<T> {
    stream: DataStream<T>,
    specs: Vec<StateSpec>,
}

impl<T: Data> BroadcastStream<T> {
    pub(crate) fn new(stream: DataStream<T>, specs: Vec<StateSpec>) -> Self {
        BroadcastStream { stream, specs }
    }

    /// Declares one more broadcast state map (Flink's `broadcast(d1, d2, ..)`).
    pub fn with_state<K: BroadcastKey, V: BroadcastValue>(
        mut self,
        descriptor: &BroadcastStateDescriptor<K, V>,
    ) -> Self {
        self.specs.push(descriptor.spec());
        self
    }

    /// The broadcast state maps declared.
    pub fn states(&self) -> Vec<&'static str> {
        self.specs.iter().map(StateSpec::name).collect()
    }
}

/// A non-keyed stream connected to a [`BroadcastStream`] (Flink's `BroadcastConnectedStream`).
#[derive(Debug, Clone)]
pub struct BroadcastConnectedStream<E, B> {
    elements: DataStream<E>,
    broadcast: BroadcastStream<B>,
}

impl<E: Data, B: Data> BroadcastConnectedStream<E, B> {
    pub(crate) fn new(elements: DataStream<E>, broadcast: BroadcastStream<B>) -> Self {
        BroadcastConnectedStream {
            elements,
            broadcast,
        }
    }

    /// Runs a [`BroadcastProcessFunction`].
    #[track_caller]
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: BroadcastProcessFunction<E, B, O> + Clone + Sync,
    {
        let specs = self.broadcast.specs.clone();
        let make = move |_: &TaskInfo| {
            erase(BroadcastProcessOperator::<E, B, O, _>::new(
                function.clone(),
                &specs,
            ))
        };
        two_input::<E, B, O>(
            &self.elements,
            &self.broadcast.stream,
            &self.broadcast.stream.ports,
            "Broadcast-Process",
            make,
            Location::caller(),
        )
    }
}

/// A keyed stream connected to a [`BroadcastStream`] (Flink's `BroadcastConnectedStream` of
/// a `KeyedStream`).
#[derive(Debug, Clone)]
pub struct KeyedBroadcastConnectedStream<E, B, S> {
    elements: KeyedStream<E, S>,
    broadcast: BroadcastStream<B>,
}

impl<E: Data, B: Data, S: KeySelector<E>> KeyedBroadcastConnectedStream<E, B, S> {
    pub(crate) fn new(elements: KeyedStream<E, S>, broadcast: BroadcastStream<B>) -> Self {
        KeyedBroadcastConnectedStream {
            elements,
            broadcast,
        }
    }

    /// Runs a [`KeyedBroadcastProcessFunction`]: keyed state and timers on the element side,
    /// broadcast state on both.
    #[track_caller]
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: KeyedBroadcastProcessFunction<S::Key, E, B, O> + Clone + Sync,
    {
        let specs = self.broadcast.specs.clone();
        let key = self.elements.selector().clone();
        let make = move |_: &TaskInfo| {
            erase(KeyedBroadcastProcessOperator::<E, B, O, _, _>::new(
                key.clone(),
                function.clone(),
                &specs,
            ))
        };
        two_input::<E, B, O>(
            self.elements.stream(),
            &self.broadcast.stream,
            &self.broadcast.stream.ports,
            "Keyed-Broadcast-Process",
            make,
            Location::caller(),
        )
    }
}
