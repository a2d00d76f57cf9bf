//! The native N-input keyed operator (see `actorflow_runtime::operators::multi_input`): any
//! number of streams of different types, each keyed to the same key type and converted into
//! one record type `U`, feed **one** operator with shared keyed state and timers — no cascade
//! of two-input joins. Its watermark is the minimum over every input (idle inputs excluded),
//! and checkpoint barriers align over all of them.
//!
//! ```
//! use actorflow::multi_input::MultiInput;
//! use actorflow::operators::{KeyedContext, MultiInputFunction, Three};
//! use actorflow::prelude::*;
//!
//! /// Counts records per key over three inputs of different types.
//! #[derive(Clone)]
//! struct Count;
//! impl MultiInputFunction<u8, Three<u8, String, bool>, String> for Count {
//!     fn process_element(
//!         &mut self,
//!         v: Three<u8, String, bool>,
//!         ctx: &mut KeyedContext<'_, u8>,
//!         out: &mut Collector<String>,
//!     ) -> Result<(), UserError> {
//!         let which = match v { Three::A(_) => "a", Three::B(_) => "b", Three::C(_) => "c" };
//!         out.collect(format!("{} from {which}", ctx.current_key()));
//!         Ok(())
//!     }
//! }
//!
//! let mut out = actorflow::testing::example(|env| {
//!     let a = env.from_collection(vec![1u8]);
//!     let b = env.from_collection(vec!["x".to_string()]);
//!     let c = env.from_collection(vec![true]);
//!     MultiInput::new(env)
//!         .input(&a, |a: &u8| *a, Three::A)
//!         .input(&b, |_: &String| 1u8, Three::B)
//!         .input(&c, |_: &bool| 2u8, Three::C)
//!         .process("count", Count)
//! });
//! out.sort();
//! assert_eq!(out, vec!["1 from a", "1 from b", "2 from c"]);
//! ```

use crate::datastream::{DataStream, Port, add_node_with_inputs};
use crate::env::StreamExecutionEnvironment;
use actorflow_runtime::Data;
use actorflow_runtime::error::BuildError;
use actorflow_runtime::operators::operator::{OperatorFactory, TaskInfo, erase};
use actorflow_runtime::operators::{
    InputAdapter, KeyedProcessOperator, MultiInputAdapter, MultiInputFunction, erase_multi_input,
};
use actorflow_runtime::runtime::graph::NodeKind;
use actorflow_runtime::state::key::{Key, KeySelector};
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

/// Builds an N-input keyed operator: add inputs, then [`process`](Self::process).
pub struct MultiInput<K, U> {
    env: StreamExecutionEnvironment,
    generation: Option<u64>,
    inputs: Vec<(Vec<Port>, InputAdapter)>,
    _types: PhantomData<fn(K) -> U>,
}

impl<K, U> std::fmt::Debug for MultiInput<K, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiInput")
            .field("inputs", &self.inputs.len())
            .finish()
    }
}

impl<K: Key, U: Data> MultiInput<K, U> {
    /// An operator of `env`'s job, without inputs yet.
    pub fn new(env: &StreamExecutionEnvironment) -> Self {
        MultiInput {
            env: env.clone(),
            generation: None,
            inputs: Vec::new(),
            _types: PhantomData,
        }
    }

    /// Adds `stream` as the next input (input 0, 1, 2, ... in call order): partitioned by
    /// `key`, its records converted by `into`.
    #[track_caller]
    pub fn input<X, F, I>(mut self, stream: &DataStream<X>, key: F, into: I) -> Self
    where
        X: Data,
        F: Fn(&X) -> K + Clone + Send + Sync + 'static,
        I: Fn(X) -> U + Send + Sync + 'static,
    {
        if stream.env.id != self.env.id {
            self.env.lock().errors.push(BuildError::Api {
                message: "a multi-input operator over streams from different environments".into(),
                location: Location::caller(),
            });
        }
        self.generation.get_or_insert(stream.generation);
        let ports = stream.key_by(key.clone()).stream().ports.clone();
        self.inputs.push((ports, InputAdapter::new(key, into)));
        self
    }

    /// Runs `function` on the records of every input (named `name` in the job graph).
    #[track_caller]
    pub fn process<O, P>(self, name: &str, function: P) -> DataStream<O>
    where
        O: Data,
        P: MultiInputFunction<K, U, O> + Clone + Sync,
    {
        let location = Location::caller();
        let env = self.env;
        let Some(generation) = self.generation else {
            env.lock().errors.push(BuildError::Api {
                message: "a multi-input operator needs at least one input".into(),
                location,
            });
            let generation = env.lock().generation;
            return DataStream::new(env.clone(), Vec::new(), None, generation);
        };
        let adapters: Vec<InputAdapter> = self.inputs.iter().map(|(_, a)| a.clone()).collect();
        let factory: Arc<dyn OperatorFactory> = Arc::new(move |_: &TaskInfo| {
            erase_multi_input(
                erase(KeyedProcessOperator::<(K, U), O, _, _>::new(
                    PairKey::<K, U>(PhantomData),
                    MultiInputAdapter::new(function.clone()),
                )),
                adapters.clone(),
            )
        });
        let ports: Vec<&[Port]> = self.inputs.iter().map(|(p, _)| p.as_slice()).collect();
        match add_node_with_inputs(
            &env,
            generation,
            &ports,
            name,
            NodeKind::Operator(factory),
            location,
        ) {
            Some(node) => env.stream_of(node, generation),
            None => DataStream::new(env.clone(), Vec::new(), None, generation),
        }
    }
}

/// The key of a `(K, U)` record: its first half.
struct PairKey<K, U>(PhantomData<fn(&K, &U)>);

impl<K, U> Clone for PairKey<K, U> {
    fn clone(&self) -> Self {
        PairKey(PhantomData)
    }
}

impl<K: Key, U: 'static> KeySelector<(K, U)> for PairKey<K, U> {
    type Key = K;
    fn with_key<R>(&self, record: &(K, U), f: impl FnOnce(&K) -> R) -> R {
        f(&record.0)
    }
    fn key(&self, record: &(K, U)) -> K {
        record.0.clone()
    }
}
