//! [`DataStream`]: a stream of records of one type, and the transformations on it.

use crate::env::{EnvState, StreamExecutionEnvironment};
use crate::keyed::KeyedStream;
use crate::sinks::{CollectSink, Collected, DiscardSink, PrintSink, TextFileSink, WriteMode};
use crate::window::{NoEvictor, UnitKey, WindowedStream};
use actorflow_runtime::OutputTag;
use actorflow_runtime::dataplane::partition::{
    CustomSelector, HashSelector, Partitioning, TypedWriterFactory, WriterFactory,
};
use actorflow_runtime::error::BuildError;
use actorflow_runtime::operators::TimestampsAndWatermarksOperator;
use actorflow_runtime::operators::operator::{OperatorFactory, TaskInfo, erase};
use actorflow_runtime::operators::rich::{AsFilter, AsFlatMap, AsMap, RichOperator};
use actorflow_runtime::operators::sink::{ErasedSink, SinkFactory, erase_sink};
use actorflow_runtime::operators::{
    Context, FilterOperator, FlatMapOperator, MapOperator, ProcessFunction, ProcessOperator,
};
use actorflow_runtime::runtime::graph::{ChainingStrategy, NodeKind, StreamNode};
use actorflow_runtime::state::key::{Key, KeySelector, OwnedKey, RefKey};
use actorflow_runtime::time::watermark::WatermarkStrategy;
use actorflow_runtime::time::window::{AssignerDefault, WindowAssigner};
use actorflow_runtime::{Collector, Data, NodeId, Sink, UserError};
use std::fmt::{Debug, Display};
use std::marker::PhantomData;
use std::panic::Location;
use std::path::PathBuf;
use std::sync::Arc;

/// One way into a downstream operator: a node's output, with the partitioning chosen for it.
#[derive(Clone)]
pub(crate) struct Port {
    pub(crate) node: NodeId,
    pub(crate) partitioning: Option<Partitioning>,
    pub(crate) writer: Arc<dyn WriterFactory>,
    /// The side output of `node` this port reads; `None` for its main output.
    pub(crate) tag: Option<Arc<str>>,
}

/// A stream of records of type `T` (Flink's `DataStream`).
///
/// Transformations take `&self`, so one stream can feed several operators (each gets every
/// record). Settings such as [`set_parallelism`](Self::set_parallelism) apply to the operator
/// that produced the stream.
pub struct DataStream<T> {
    pub(crate) env: StreamExecutionEnvironment,
    pub(crate) ports: Vec<Port>,
    pub(crate) node: Option<NodeId>,
    pub(crate) generation: u64,
    _records: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            ports: self.ports.clone(),
            node: self.node,
            generation: self.generation,
            _records: PhantomData,
        }
    }
}

impl<T> Debug for DataStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream")
            .field("node", &self.node)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

fn unit_key<T>(_: &T) {}

fn operator_factory<F>(f: F) -> Arc<dyn OperatorFactory>
where
    F: Fn(&TaskInfo) -> Box<dyn actorflow_runtime::operators::operator::ErasedOperator>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

struct SinkAdapter<F>(F);

impl<S: Sink, F: Fn(&TaskInfo) -> Result<S, String> + Send + Sync> SinkFactory for SinkAdapter<F> {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn ErasedSink>, String> {
        (self.0)(info).map(erase_sink)
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(
        env: StreamExecutionEnvironment,
        ports: Vec<Port>,
        node: Option<NodeId>,
        generation: u64,
    ) -> Self {
        DataStream {
            env,
            ports,
            node,
            generation,
            _records: PhantomData,
        }
    }

    /// The environment this stream belongs to.
    pub fn env(&self) -> &StreamExecutionEnvironment {
        &self.env
    }

    /// Checks that the stream can still be used, recording an error at `location` if not.
    fn usable(&self, st: &mut EnvState, location: &'static Location<'static>) -> bool {
        if st.generation != self.generation {
            st.errors.push(BuildError::Api {
                message: "this stream belongs to a pipeline that was already executed; \
                          build a new pipeline after execute()"
                    .into(),
                location,
            });
            return false;
        }
        true
    }

    /// Adds a node fed by this stream's ports and returns the stream of its output.
    pub(crate) fn add_node(
        &self,
        name: &str,
        kind: NodeKind,
        location: &'static Location<'static>,
    ) -> Option<NodeId> {
        let mut st = self.env.lock();
        if !self.usable(&mut st, location) {
            return None;
        }
        let node = st.graph.add_node(name, kind, Some(location));
        for port in &self.ports {
            let edge =
                st.graph
                    .add_edge(port.node, node, 0, port.partitioning, port.writer.clone());
            if let Some(e) = st.graph.edges.get_mut(edge.0) {
                e.output_tag = port.tag.clone();
            }
        }
        Some(node)
    }

    /// Adds a node fed by this stream on input 0 and by `others` on inputs 1, 2, ...
    pub(crate) fn add_multi_input_node(
        &self,
        others: &[&[Port]],
        name: &str,
        kind: NodeKind,
        location: &'static Location<'static>,
    ) -> Option<NodeId> {
        let inputs: Vec<&[Port]> = std::iter::once(self.ports.as_slice())
            .chain(others.iter().copied())
            .collect();
        add_node_with_inputs(&self.env, self.generation, &inputs, name, kind, location)
    }
}

/// Adds a node whose logical input `i` is fed by the ports `inputs[i]` (of streams built in
/// pipeline `generation`).
pub(crate) fn add_node_with_inputs(
    env: &StreamExecutionEnvironment,
    generation: u64,
    inputs: &[&[Port]],
    name: &str,
    kind: NodeKind,
    location: &'static Location<'static>,
) -> Option<NodeId> {
    let mut st = env.lock();
    if st.generation != generation {
        st.errors.push(BuildError::Api {
            message: "this stream belongs to a pipeline that was already executed; \
                          build a new pipeline after execute()"
                .into(),
            location,
        });
        return None;
    }
    let node = st.graph.add_node(name, kind, Some(location));
    for (input, ports) in inputs.iter().enumerate() {
        for port in ports.iter() {
            let edge = st.graph.add_edge(
                port.node,
                node,
                input,
                port.partitioning,
                port.writer.clone(),
            );
            if let Some(e) = st.graph.edges.get_mut(edge.0) {
                e.output_tag = port.tag.clone();
            }
        }
    }
    Some(node)
}

impl<T: Data> DataStream<T> {
    pub(crate) fn add_operator<O: Data>(
        &self,
        name: &str,
        factory: Arc<dyn OperatorFactory>,
        location: &'static Location<'static>,
    ) -> DataStream<O> {
        let node = self.add_node(name, NodeKind::Operator(factory), location);
        match node {
            Some(node) => self.env.stream_of(node, self.generation),
            None => DataStream::new(self.env.clone(), Vec::new(), None, self.generation),
        }
    }

    /// Applies a custom [`Operator`](actorflow_runtime::Operator) (Flink's `transform` with a
    /// `OneInputStreamOperator`): `factory` builds one instance per subtask, given its
    /// [`TaskInfo`]. The operator sees batches of records with their timestamps, watermarks
    /// (and may hold them back or emit its own), processing-time callbacks, end of input, and
    /// checkpoints (`snapshot_state` / `restore_state`, so its state survives restarts and
    /// rescaling). Give it a stable [`uid`](DataStream::uid) if it keeps state.
    ///
    /// # Examples
    ///
    /// An operator that holds records until the watermark passes them, then emits them in
    /// timestamp order:
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::actorflow_runtime::{Batch, Operator, Timestamp, Watermark};
    ///
    /// #[derive(Default)]
    /// struct SortByTime(Vec<(i64, u64)>);
    ///
    /// impl Operator for SortByTime {
    ///     type In = u64;
    ///     type Out = u64;
    ///     fn process_batch(&mut self, batch: Batch<u64>, _: &mut Collector<u64>) -> Result<(), UserError> {
    ///         for (v, ts) in batch.into_iter_timestamped() {
    ///             self.0.push((ts.map_or(0, |t| t.0), v));
    ///         }
    ///         Ok(())
    ///     }
    ///     fn process_watermark(&mut self, wm: Watermark, out: &mut Collector<u64>) -> Result<(), UserError> {
    ///         self.0.sort();
    ///         let due = self.0.partition_point(|(ts, _)| *ts <= wm.0);
    ///         for (ts, v) in self.0.drain(..due) {
    ///             out.set_timestamp(Some(Timestamp(ts)));
    ///             out.collect(v);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![3u64, 1, 2])
    ///         .assign_timestamps_and_watermarks(
    ///             WatermarkStrategy::for_bounded_out_of_orderness(std::time::Duration::from_millis(5))
    ///                 .with_timestamp_assigner(|v: &u64, _| *v as i64),
    ///         )
    ///         .transform("sort by time", |_| SortByTime::default())
    /// });
    /// assert_eq!(out, vec![1, 2, 3]);
    /// ```
    #[track_caller]
    pub fn transform<Op, F>(&self, name: &str, factory: F) -> DataStream<Op::Out>
    where
        Op: actorflow_runtime::Operator<In = T>,
        F: Fn(&TaskInfo) -> Op + Send + Sync + 'static,
    {
        let factory = operator_factory(move |info: &TaskInfo| erase(factory(info)));
        self.add_operator(name, factory, Location::caller())
    }

    /// Applies `f` to every record (Flink's `map`).
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| env.from_collection(vec![1, 2, 3]).map(|x| x * 10));
    /// assert_eq!(out, vec![10, 20, 30]);
    /// ```
    #[track_caller]
    pub fn map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: FnMut(T) -> O + Clone + Send + Sync + 'static,
    {
        let factory =
            operator_factory(move |_: &TaskInfo| erase(MapOperator::<T, O, F>::new(f.clone())));
        self.add_operator("Map", factory, Location::caller())
    }

    /// Applies a rich map function: `map` plus `open` / `close` and checkpointed
    /// non-keyed state (Flink's `RichMapFunction` with `CheckpointedFunction`; see
    /// [`RichFunction`](actorflow_runtime::operators::rich::RichFunction)).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::rich::{MapFunction, RichFunction};
    /// /// Tags every record with its subtask, learnt in `open`.
    /// #[derive(Clone, Default)]
    /// struct Tag { subtask: usize }
    /// impl RichFunction for Tag {
    ///     fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
    ///         self.subtask = info.subtask_index;
    ///         Ok(())
    ///     }
    /// }
    /// impl MapFunction<u64, (usize, u64)> for Tag {
    ///     fn map(&mut self, v: u64) -> Result<(usize, u64), UserError> {
    ///         Ok((self.subtask, v))
    ///     }
    /// }
    /// let out = actorflow::testing::example(|env| env.from_sequence(1, 2).rich_map(Tag::default()));
    /// assert_eq!(out, vec![(0, 1), (0, 2)]);
    /// ```
    #[track_caller]
    pub fn rich_map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: actorflow_runtime::operators::rich::MapFunction<T, O> + Clone + Sync,
    {
        let factory = operator_factory(move |_: &TaskInfo| {
            erase(RichOperator::<T, O, F, AsMap>::new(f.clone()))
        });
        self.add_operator("Map", factory, Location::caller())
    }

    /// Applies a rich filter function (Flink's `RichFilterFunction`); see
    /// [`rich_map`](Self::rich_map).
    #[track_caller]
    pub fn rich_filter<F>(&self, f: F) -> DataStream<T>
    where
        F: actorflow_runtime::operators::rich::FilterFunction<T> + Clone + Sync,
    {
        let factory = operator_factory(move |_: &TaskInfo| {
            erase(RichOperator::<T, T, F, AsFilter>::new(f.clone()))
        });
        self.add_operator("Filter", factory, Location::caller())
    }

    /// Applies a rich flat-map function (Flink's `RichFlatMapFunction`), which may also emit
    /// at the end of input; see [`rich_map`](Self::rich_map) and, for checkpointed state,
    /// [`FlatMapFunction`](actorflow_runtime::operators::rich::FlatMapFunction)'s example.
    #[track_caller]
    pub fn rich_flat_map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: actorflow_runtime::operators::rich::FlatMapFunction<T, O> + Clone + Sync,
    {
        let factory = operator_factory(move |_: &TaskInfo| {
            erase(RichOperator::<T, O, F, AsFlatMap>::new(f.clone()))
        });
        self.add_operator("Flat Map", factory, Location::caller())
    }

    /// Keeps the records for which `f` returns true (Flink's `filter`).
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| env.from_sequence(1, 6).filter(|x| x % 2 == 0));
    /// assert_eq!(out, vec![2, 4, 6]);
    /// ```
    #[track_caller]
    pub fn filter<F>(&self, f: F) -> DataStream<T>
    where
        F: FnMut(&T) -> bool + Clone + Send + Sync + 'static,
    {
        let factory =
            operator_factory(move |_: &TaskInfo| erase(FilterOperator::<T, F>::new(f.clone())));
        self.add_operator("Filter", factory, Location::caller())
    }

    /// Emits any number of records per input record (Flink's `flatMap`).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec!["to be".to_string()])
    ///         .flat_map(|line: String, out: &mut Collector<String>| {
    ///             for w in line.split_ascii_whitespace() {
    ///                 out.collect(w.to_string());
    ///             }
    ///         })
    /// });
    /// assert_eq!(out, vec!["to", "be"]);
    /// ```
    #[track_caller]
    pub fn flat_map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: FnMut(T, &mut Collector<O>) + Clone + Send + Sync + 'static,
    {
        let factory =
            operator_factory(move |_: &TaskInfo| erase(FlatMapOperator::<T, O, F>::new(f.clone())));
        self.add_operator("Flat Map", factory, Location::caller())
    }

    /// Runs a [`ProcessFunction`] on every record (Flink's `process`).
    #[track_caller]
    pub fn process<O, P>(&self, function: P) -> DataStream<O>
    where
        O: Data,
        P: ProcessFunction<T, O> + Clone + Sync,
    {
        let factory = operator_factory(move |_: &TaskInfo| {
            erase(ProcessOperator::<T, O, P>::new(function.clone()))
        });
        self.add_operator("Process", factory, Location::caller())
    }

    /// [`process`](Self::process) with a closure; its argument types are inferred.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![3u32, 4]).process_fn(|v, ctx, out| {
    ///         out.collect(format!("{v} on subtask {}", ctx.task().subtask_index));
    ///         Ok(())
    ///     })
    /// });
    /// assert_eq!(out, vec!["3 on subtask 0", "4 on subtask 0"]);
    /// ```
    #[track_caller]
    pub fn process_fn<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: FnMut(T, &mut Context<'_>, &mut Collector<O>) -> Result<(), UserError>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        self.process(f)
    }

    /// Merges this stream with another of the same type (Flink's `union`). Records keep their
    /// order per input; between inputs, order is not defined.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![1, 2]).union(&env.from_collection(vec![3]))
    /// });
    /// out.sort();
    /// assert_eq!(out, vec![1, 2, 3]);
    /// ```
    pub fn union(&self, other: &DataStream<T>) -> DataStream<T> {
        self.union_all([other])
    }

    /// Connects a stream of another type: the two feed one two-input operator (Flink's
    /// `connect`); see [`crate::connected`].
    pub fn connect<B: Data>(
        &self,
        other: &DataStream<B>,
    ) -> crate::connected::ConnectedStreams<T, B> {
        crate::connected::ConnectedStreams::new(self.clone(), other.clone())
    }

    /// Broadcasts this stream with the broadcast state map `descriptor` (Flink's
    /// `broadcast(MapStateDescriptor)`): connect it to another stream with
    /// [`connect_broadcast`](Self::connect_broadcast); see [`crate::broadcast`]. Declare more
    /// maps with [`BroadcastStream::with_state`](crate::broadcast::BroadcastStream::with_state).
    pub fn broadcast_with<K, V>(
        &self,
        descriptor: &actorflow_runtime::operators::BroadcastStateDescriptor<K, V>,
    ) -> crate::broadcast::BroadcastStream<T>
    where
        K: actorflow_runtime::operators::BroadcastKey,
        V: actorflow_runtime::operators::BroadcastValue,
    {
        crate::broadcast::BroadcastStream::new(self.broadcast(), vec![descriptor.spec()])
    }

    /// Connects a broadcast stream: every subtask of the operator gets all its records (Flink's
    /// `connect(BroadcastStream)`); see [`crate::broadcast`].
    pub fn connect_broadcast<B: Data>(
        &self,
        broadcast: &crate::broadcast::BroadcastStream<B>,
    ) -> crate::broadcast::BroadcastConnectedStream<T, B> {
        crate::broadcast::BroadcastConnectedStream::new(self.clone(), broadcast.clone())
    }

    /// Joins with another stream per key and window (Flink's `join`):
    /// `.where_(k1).equal_to(k2).window(assigner).apply(f)`; see [`crate::window_join`].
    pub fn join<B: Data>(
        &self,
        other: &DataStream<B>,
    ) -> crate::window_join::JoinedStreams<T, B, crate::window_join::Join> {
        crate::window_join::JoinedStreams::new(self.clone(), other.clone())
    }

    /// Co-groups with another stream per key and window (Flink's `coGroup`):
    /// `.where_(k1).equal_to(k2).window(assigner).apply(f)`; see [`crate::window_join`].
    pub fn co_group<B: Data>(
        &self,
        other: &DataStream<B>,
    ) -> crate::window_join::CoGroupedStreams<T, B> {
        crate::window_join::JoinedStreams::new(self.clone(), other.clone())
    }

    /// Merges this stream with several others of the same type.
    #[track_caller]
    pub fn union_all<'a>(
        &self,
        others: impl IntoIterator<Item = &'a DataStream<T>>,
    ) -> DataStream<T> {
        let mut ports = self.ports.clone();
        for other in others {
            if other.env.id != self.env.id {
                self.env.lock().errors.push(BuildError::Api {
                    message: "union of streams from different environments".into(),
                    location: Location::caller(),
                });
                continue;
            }
            ports.extend(other.ports.iter().cloned());
        }
        DataStream::new(self.env.clone(), ports, None, self.generation)
    }

    fn repartitioned(&self, partitioning: Partitioning, writer: Arc<dyn WriterFactory>) -> Self {
        let ports = self
            .ports
            .iter()
            .map(|p| Port {
                node: p.node,
                partitioning: Some(partitioning),
                writer: writer.clone(),
                tag: p.tag.clone(),
            })
            .collect();
        DataStream::new(self.env.clone(), ports, None, self.generation)
    }

    fn basic(&self, partitioning: Partitioning) -> Self {
        self.repartitioned(partitioning, Arc::new(TypedWriterFactory::<T, _>::basic()))
    }

    /// Sends each record to the downstream subtask of the same index; parallelism must not
    /// change (Flink's `forward`). Such edges are chained when possible.
    pub fn forward(&self) -> Self {
        self.basic(Partitioning::Forward)
    }

    /// Round robin over all downstream subtasks (Flink's `rebalance`).
    pub fn rebalance(&self) -> Self {
        self.basic(Partitioning::Rebalance)
    }

    /// Round robin over a local subset of downstream subtasks (Flink's `rescale`).
    pub fn rescale(&self) -> Self {
        self.basic(Partitioning::Rescale)
    }

    /// A random downstream subtask per record (Flink's `shuffle`).
    pub fn shuffle(&self) -> Self {
        self.basic(Partitioning::Shuffle)
    }

    /// Every record to every downstream subtask (Flink's `broadcast()` partitioning).
    pub fn broadcast(&self) -> Self {
        self.basic(Partitioning::Broadcast)
    }

    /// Every record to the first downstream subtask (Flink's `global`).
    pub fn global(&self) -> Self {
        self.basic(Partitioning::Global)
    }

    /// Routes each record to `partitioner(&key(record), number_of_subtasks)` (Flink's
    /// `partitionCustom`). A result out of range fails the job naming the operator.
    pub fn partition_custom<K, P, F>(&self, partitioner: P, key: F) -> Self
    where
        K: 'static,
        P: Fn(&K, usize) -> usize + Clone + Send + Sync + 'static,
        F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        let writer = TypedWriterFactory::<T, _>::new(CustomSelector::new(key, partitioner));
        self.repartitioned(Partitioning::Custom, Arc::new(writer))
    }

    /// Stamps records with event time and generates watermarks (Flink's
    /// `assignTimestampsAndWatermarks`). Watermarks from upstream are replaced by this
    /// strategy's, except the final maximum watermark of a bounded input.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use std::time::Duration;
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![('a', 1_000_i64), ('b', 500)])
    ///         .assign_timestamps_and_watermarks(
    ///             WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(1))
    ///                 .with_timestamp_assigner(|e: &(char, i64), _| e.1),
    ///         )
    ///         .process(|_: (char, i64), ctx: &mut Context, out: &mut Collector<i64>| {
    ///             out.collect(ctx.timestamp().map_or(-1, |t| t.0));
    ///             Ok(())
    ///         })
    /// });
    /// assert_eq!(out, vec![1_000, 500]);
    /// ```
    #[track_caller]
    pub fn assign_timestamps_and_watermarks(
        &self,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let factory = operator_factory(move |_: &TaskInfo| {
            erase(TimestampsAndWatermarksOperator::new(strategy.clone()))
        });
        self.add_operator("Timestamps/Watermarks", factory, Location::caller())
    }

    /// The records the operator producing this stream emitted to side output `tag` (Flink's
    /// `getSideOutput`), for example a window's late records.
    #[track_caller]
    pub fn get_side_output<X: Data>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        match self.node {
            Some(node) => DataStream::new(
                self.env.clone(),
                vec![Port {
                    node,
                    partitioning: None,
                    writer: Arc::new(TypedWriterFactory::<X, _>::basic()),
                    tag: Some(tag.id().clone()),
                }],
                Some(node),
                self.generation,
            ),
            None => {
                self.env.lock().errors.push(BuildError::Api {
                    message: "get_side_output needs the output of an operator, not a union or \
                              a repartitioned stream"
                        .into(),
                    location: Location::caller(),
                });
                DataStream::new(self.env.clone(), Vec::new(), None, self.generation)
            }
        }
    }

    /// Windows over the whole stream, evaluated by one subtask (Flink's `windowAll`). The
    /// window function sees the unit key `&()`.
    pub fn window_all<A: WindowAssigner<T>>(
        &self,
        assigner: A,
    ) -> WindowedStream<T, UnitKey<T>, A, AssignerDefault, NoEvictor> {
        let key: UnitKey<T> = OwnedKey::new(unit_key::<T> as fn(&T));
        WindowedStream::new(self.global(), key, assigner, true)
    }

    /// Partitions the stream by key (Flink's `keyBy`): every record with the same key goes to
    /// the same subtask, through key groups.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![('a', 1u64), ('b', 2), ('a', 3)])
    ///         .key_by(|(k, _)| *k)
    ///         .sum(|(_, v)| v)
    /// });
    /// assert_eq!(out, vec![('a', 1), ('b', 2), ('a', 4)]);
    /// ```
    pub fn key_by<K, F>(&self, key: F) -> KeyedStream<T, OwnedKey<F, K>>
    where
        K: Key,
        F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        self.keyed(OwnedKey::new(key))
    }

    /// Like [`key_by`](Self::key_by), with a selector that borrows the key from the record
    /// (`|r| &r.0`), as Java's `keyBy(t -> t.f0)` does. The key is never copied per record —
    /// only when a new key enters state — which matters for `String` keys.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec![("x".to_string(), 1u64), ("x".to_string(), 2)])
    ///         .key_by_ref(|(k, _)| k)
    ///         .sum(|(_, v)| v)
    /// });
    /// assert_eq!(out, vec![("x".to_string(), 1), ("x".to_string(), 3)]);
    /// ```
    pub fn key_by_ref<K, F>(&self, key: F) -> KeyedStream<T, RefKey<F, K>>
    where
        K: Key,
        F: for<'a> Fn(&'a T) -> &'a K + Clone + Send + Sync + 'static,
    {
        self.keyed(RefKey::new(key))
    }

    pub(crate) fn keyed<S: KeySelector<T>>(&self, key: S) -> KeyedStream<T, S> {
        let writer = TypedWriterFactory::<T, _>::new(HashSelector::new(key.clone()));
        KeyedStream::new(
            self.repartitioned(Partitioning::Hash, Arc::new(writer)),
            key,
        )
    }

    /// Adds a sink built per subtask by `factory` (Flink's `addSink`/`sinkTo`).
    #[track_caller]
    pub fn add_sink<S, F>(&self, name: &str, factory: F) -> DataStreamSink
    where
        S: Sink<Input = T>,
        F: Fn(&TaskInfo) -> Result<S, String> + Send + Sync + 'static,
    {
        let location = Location::caller();
        let node = self.add_node(
            name,
            NodeKind::Sink(Arc::new(SinkAdapter(factory))),
            location,
        );
        DataStreamSink {
            env: self.env.clone(),
            node,
            generation: self.generation,
        }
    }

    /// Collects every record into a shared vector, readable after (or during) the run. For
    /// tests and small results.
    #[track_caller]
    pub fn collect(&self) -> Collected<T> {
        let collected = Collected::new();
        let handle = collected.clone();
        self.add_sink("Collect", move |info: &TaskInfo| {
            Ok(CollectSink::new(handle.clone(), info))
        });
        collected
    }

    /// Prints every record to standard output with `{:?}`, prefixed `N> ` by the 1-based
    /// subtask index when the sink runs in parallel (Flink's `print`).
    ///
    /// `{:?}` is Rust's `Debug`: a `String` prints quoted (`"hello"`), and tuples and structs
    /// print without a `Display` implementation. For Flink's `toString` output of strings
    /// (`hello`) use [`print_display`](Self::print_display).
    #[track_caller]
    pub fn print(&self) -> DataStreamSink
    where
        T: Debug,
    {
        self.add_sink("Print to Std. Out", |info: &TaskInfo| {
            Ok(PrintSink::<T>::new(None, info))
        })
    }

    /// Prints every record with `{}` (`Display`, as Flink's `print` calls `toString`): strings
    /// as they are, without quotes. Prefixed as [`print`](Self::print).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// # fn main() -> Result<(), JobError> {
    /// let env = StreamExecutionEnvironment::new();
    /// env.set_parallelism(1);
    /// env.from_collection(vec!["hello".to_string()]).print_display(); // prints: hello
    /// env.execute_blocking("print")?;
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    pub fn print_display(&self) -> DataStreamSink
    where
        T: Display,
    {
        self.add_sink("Print to Std. Out", |info: &TaskInfo| {
            Ok(PrintSink::<T>::display(None, info))
        })
    }

    /// Like [`print`](Self::print), with an identifier before the subtask index
    /// (`id:N> record`).
    #[track_caller]
    pub fn print_with_identifier(&self, identifier: &str) -> DataStreamSink
    where
        T: Debug,
    {
        let id = identifier.to_string();
        self.add_sink("Print to Std. Out", move |info: &TaskInfo| {
            Ok(PrintSink::<T>::new(Some(id.clone()), info))
        })
    }

    /// Writes every record's `Display` form as one line (Flink's `writeAsText`). With sink
    /// parallelism 1, `path` is the file; above 1, `path` is a directory holding files
    /// `1`, `2`, … one per subtask. An existing output fails the job before it starts unless
    /// `mode` is [`WriteMode::Overwrite`].
    ///
    /// It writes plainly, so it cannot be exactly once: with checkpointing on, a restart
    /// would rewrite the file (losing what was written) or refuse it. A job with
    /// checkpointing therefore refuses to start with this sink, naming the exactly-once one:
    /// `add_sink(name, |_| Ok(TwoPhaseCommit::new(FileSink::new(dir))))` from
    /// [`transactional`](crate::transactional).
    #[track_caller]
    pub fn write_as_text(&self, path: impl Into<PathBuf>, mode: WriteMode) -> DataStreamSink
    where
        T: Display,
    {
        let path = path.into();
        self.add_sink("Text File Sink", move |info: &TaskInfo| {
            TextFileSink::<T>::create(&path, mode, info)
        })
    }

    /// Drops every record (Flink's `DiscardingSink`), for benchmarks.
    #[track_caller]
    pub fn discard(&self) -> DataStreamSink {
        self.add_sink("Discard", |_: &TaskInfo| Ok(DiscardSink::<T>::new()))
    }
}

fn with_node(
    env: &StreamExecutionEnvironment,
    node: Option<NodeId>,
    what: &str,
    location: &'static Location<'static>,
    f: impl FnOnce(&mut StreamNode),
) {
    let mut st = env.lock();
    match node.and_then(|n| st.graph.node_mut(n)) {
        Some(n) => f(n),
        None => st.errors.push(BuildError::Api {
            message: format!(
                "{what} needs an operator: this stream comes from union() or a partitioning \
                 method (or its pipeline was already executed); set it on the operator before"
            ),
            location,
        }),
    }
}

/// The settings of the operator behind a stream or sink. For a [`DataStream`], they apply to
/// the operator that produced it.
macro_rules! operator_settings {
    (impl [$($gen:tt)*] $ty:ty) => {
        impl<$($gen)*> $ty {
            /// Sets how many parallel instances the operator runs (at least 1).
            #[track_caller]
            pub fn set_parallelism(self, parallelism: u32) -> Self {
                with_node(&self.env, self.node, "set_parallelism", Location::caller(), |n| {
                    n.parallelism = Some(parallelism)
                });
                self
            }

            /// Sets the operator's max parallelism (number of key groups, 1..=32768).
            #[track_caller]
            pub fn set_max_parallelism(self, max_parallelism: u32) -> Self {
                with_node(&self.env, self.node, "set_max_parallelism", Location::caller(), |n| {
                    n.max_parallelism = Some(max_parallelism)
                });
                self
            }

            /// Names the operator (in plans, metrics and errors).
            #[track_caller]
            pub fn name(self, name: &str) -> Self {
                with_node(&self.env, self.node, "name", Location::caller(), |n| {
                    n.name = name.into()
                });
                self
            }

            /// Gives the operator a stable id, unique in the job, used to match its state
            /// across job versions.
            #[track_caller]
            pub fn uid(self, uid: &str) -> Self {
                with_node(&self.env, self.node, "uid", Location::caller(), |n| {
                    n.uid = Some(uid.into())
                });
                self
            }

            /// Never chains the operator with its neighbours.
            #[track_caller]
            pub fn disable_chaining(self) -> Self {
                with_node(&self.env, self.node, "disable_chaining", Location::caller(), |n| {
                    n.chaining = ChainingStrategy::Never
                });
                self
            }

            /// Starts a new chain at this operator: it is not chained to its predecessor.
            #[track_caller]
            pub fn start_new_chain(self) -> Self {
                with_node(&self.env, self.node, "start_new_chain", Location::caller(), |n| {
                    n.chaining = ChainingStrategy::Head
                });
                self
            }
        }
    };
}

operator_settings!(impl [T: Data] DataStream<T>);
operator_settings!(impl [] DataStreamSink);

/// The sink end of a stream, for setting the sink's parallelism, name and so on.
#[derive(Clone)]
pub struct DataStreamSink {
    env: StreamExecutionEnvironment,
    node: Option<NodeId>,
    generation: u64,
}

impl DataStreamSink {
    /// The records the sink emitted to side output `tag` (see
    /// [`Sink::side_outputs`]), for example the rows a database
    /// refused. They travel in order with the sink's input: what the sink set aside before a
    /// checkpoint's barrier reaches the stream before that barrier, so a transactional sink's
    /// side output is exactly once when it ends in an exactly-once sink. The stream leaves
    /// the sink's subtask through the network (it is never chained to the sink).
    ///
    /// A sink that emits to a tag nobody reads fails: its records would be lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::SideOutputs;
    /// /// Accepts even numbers, refuses the odd ones.
    /// struct Evens {
    ///     refused: OutputTag<u64>,
    ///     side: SideOutputs,
    /// }
    /// impl Sink for Evens {
    ///     type Input = u64;
    ///     async fn write_batch(&mut self, batch: Batch<u64>) -> Result<(), UserError> {
    ///         for v in batch.values().iter().filter(|v| *v % 2 == 1) {
    ///             self.side.output(&self.refused, *v);
    ///         }
    ///         Ok(())
    ///     }
    ///     fn side_outputs(&mut self) -> Option<&mut SideOutputs> {
    ///         Some(&mut self.side)
    ///     }
    /// }
    /// let refused: OutputTag<u64> = OutputTag::new("refused");
    /// let tag = refused.clone();
    /// let out = actorflow::testing::example(move |env| {
    ///     let sink = env.from_collection(vec![1u64, 2, 3, 4]).add_sink("evens", move |_: &TaskInfo| {
    ///         Ok(Evens { refused: tag.clone(), side: SideOutputs::new() })
    ///     });
    ///     sink.get_side_output(&refused)
    /// });
    /// assert_eq!(out, vec![1, 3]);
    /// ```
    #[track_caller]
    pub fn get_side_output<X: Data>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        let ports = match self.node {
            Some(node) => vec![Port {
                node,
                partitioning: None,
                writer: Arc::new(TypedWriterFactory::<X, _>::basic()),
                tag: Some(tag.id().clone()),
            }],
            None => {
                self.env.lock().errors.push(BuildError::Api {
                    message: "get_side_output on a sink that was not added (its stream \
                              belongs to a pipeline already executed)"
                        .into(),
                    location: Location::caller(),
                });
                Vec::new()
            }
        };
        // The stream's settings (name, parallelism) apply to operators added after it.
        DataStream::new(self.env.clone(), ports, None, self.generation)
    }
}

impl Debug for DataStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStreamSink")
            .field("node", &self.node)
            .finish()
    }
}
