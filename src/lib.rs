//! # actorflow
//!
//! Apache Flink's DataStream model in Rust, on a runtime where **every operator subtask is an
//! actor with a bounded mailbox**. Records travel in batches over bounded lanes; a full lane
//! makes its sender wait, so backpressure reaches the sources and memory stays bounded.
//!
//! ```
//! use actorflow::prelude::*;
//!
//! # fn main() -> Result<(), JobError> {
//! let env = StreamExecutionEnvironment::new();
//! env.set_parallelism(2);
//! let counts = env
//!     .from_collection(vec!["to be or not to be".to_string()])
//!     .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
//!         for w in line.split_ascii_whitespace() {
//!             out.collect((w.to_string(), 1));
//!         }
//!     })
//!     .key_by(|(word, _)| word.clone())
//!     .sum(|(_, n)| n)
//!     .collect();
//! env.execute_blocking("word count")?;
//! // Rolling sums: the last update per word is its count.
//! let updates = counts.take();
//! assert_eq!(updates.iter().filter(|(w, _)| w == "be").map(|(_, n)| *n).max(), Some(2));
//! # Ok(())
//! # }
//! ```
//!
//! ## A tour
//!
//! * [`env`](mod@env) — [`StreamExecutionEnvironment`]: settings (parallelism, max parallelism, buffer
//!   timeout, lane capacity, chaining), the built-in sources, and `execute`.
//! * [`datastream`] — [`DataStream`]: `map`, `filter`, `flat_map`, `process`, `union`, the
//!   partitioning methods, per-operator settings, and sinks.
//! * [`keyed`] — [`KeyedStream`]: rolling `reduce`, `sum`, `min`, `max`, `min_by`, `max_by`,
//!   keyed `process` (with [`keyed_state`] and timers), `window`, `count_window`.
//! * [`window`] — [`WindowedStream`](window::WindowedStream): trigger, evictor, allowed
//!   lateness, late side output, then `reduce` / `aggregate` / `process`; and the assigners,
//!   triggers and evictors. `DataStream::window_all` windows a whole stream.
//! * [`watermark`] — [`WatermarkStrategy`](watermark::WatermarkStrategy) for
//!   `assign_timestamps_and_watermarks`: bounded out-of-orderness, monotonous, custom
//!   generators, periodic or punctuated emission, idleness.
//! * [`keyed_state`], [`timer`], [`clock`] — keyed state with TTL, timer queues, processing time
//!   (all from the runtime crate).
//! * [`sources`], [`sinks`] — the built-in connectors (collections, sequences, generators,
//!   text files, sockets; collect, print, text files, discard).
//! * [`connected`], [`joins`], [`window_join`], [`multi_input`], [`broadcast`] — operators with several
//!   inputs: `connect` (co-map, co-flat-map, co-process, keyed co-process), the interval join,
//!   the window join and co-group, the native N-input keyed operator with a three-way window
//!   join, and broadcast state (`docs/joins.md`).
//! * Checkpoints and recovery (`docs/checkpointing.md`, `docs/recovery.md`):
//!   `StreamExecutionEnvironment::enable_checkpointing` and friends configure them;
//!   [`checkpoint`] holds the configuration, the state hooks' types ([`checkpoint::OperatorState`])
//!   and the job events; [`snapshot`] the stores (sled, memory); [`restart`] the restart
//!   strategies; [`transactional`] the two-phase-commit sinks (exactly-once files);
//!   [`fault`] failure injection for tests and demos.
//! * [`async_io`] — talking to services: Async I/O ([`async_io::AsyncDataStream`], ordered or
//!   unordered, capacity, timeout, retries, checkpointed requests in flight) and
//!   `map_blocking` for code that can only block (`docs/async-io.md`).
//! * [`observer`] — a job's id, plan, status history, checkpoint statistics and live updates
//!   (`JobHandle::observer`).
//! * `web` (cargo feature `web`) — the REST API with Flink's paths, Prometheus metrics, the
//!   live event stream and the dashboard, on actix-web (`docs/web.md`).
//! * `postgres` (cargo feature `postgres`) — `PostgresSink`: exactly-once rows into PostgreSQL
//!   by two-phase commit, or idempotent upserts; `PostgresCdcSource`: a table's changes from
//!   a logical replication slot, exactly once (`docs/connectors.md`).
//! * `kafka` (cargo feature `kafka`) — `KafkaSource`: partitions as splits, exactly-once
//!   offsets in the checkpoint, per-partition watermarks and idleness, partition discovery,
//!   bounded mode; `KafkaSink`: at least once (`docs/connectors.md`).
//! * [`nexmark`] — the Nexmark benchmark: its generator as a parallel, replayable source and
//!   the queries as actorflow programs (the `nexmark` example runs them; `docs/nexmark.md`).
//! * [`testing`] — a helper that runs a small pipeline and returns its output, used by the
//!   examples in these docs.
//!
//! Record types implement [`Data`]: `Clone + Send + Serialize + DeserializeOwned + 'static`
//! (snapshots hold records), so records own their data — `String`, not `&str`.
//!
//! Everything here builds a stream graph for the runtime crate, [`actorflow_runtime`] (the
//! `actors/` directory), which plans it into chained subtasks and runs each as an actor. The
//! runtime never depends on this crate.

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod async_io;
pub mod broadcast;
pub mod connected;
pub mod datastream;
pub mod env;
pub mod joins;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod keyed;
pub mod multi_input;
pub mod nexmark;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sinks;
pub mod sources;
pub mod testing;
#[cfg(feature = "web")]
pub mod web;
pub mod window;
pub mod window_join;

pub use actorflow_runtime;
pub use actorflow_runtime::checkpoint::coordinator::{CheckpointSettings, CheckpointingMode};
pub use actorflow_runtime::checkpoint::types as checkpoint;
pub use actorflow_runtime::checkpoint::{fault, restart, snapshot};
pub use actorflow_runtime::operators::rich;
pub use actorflow_runtime::operators::{self, transactional};
pub use actorflow_runtime::operators::{
    Context, KeyedContext, KeyedProcessFunction, ProcessFunction,
};
pub use actorflow_runtime::runtime::observer;
pub use actorflow_runtime::state::keyed_state;
pub use actorflow_runtime::time::{clock, timer, watermark};
pub use actorflow_runtime::{
    Batch, BuildError, Collector, Data, FailureCause, JobConfig, JobControl, JobError, JobHandle,
    JobMetricsSnapshot, JobResult, Operator, Partitioning, RuntimeMode, SideOutputs, Sink, Source,
    SourceStatus, SubtaskFailure, SubtaskMetricsSnapshot, SubtaskStatus, TaskInfo, Timestamp,
    UserError, Watermark,
};
pub use datastream::{DataStream, DataStreamSink};
pub use env::{ParallelSource, SourceFn, StreamExecutionEnvironment};
pub use keyed::{KeyedFilterFunction, KeyedFlatMapFunction, KeyedMapFunction, KeyedStream};
pub use sinks::{Collected, WriteMode};
pub use sources::{GeneratorSource, TextFileOptions, Utf8Policy};

/// The README's code, compiled and run as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The joins page's code, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/joins.md")]
struct JoinsDoctests;

/// The checkpointing page's code, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/checkpointing.md")]
struct CheckpointingDoctests;

/// The Async I/O page's code, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/async-io.md")]
struct AsyncIoDoctests;

/// The connector guide's code, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/connectors-guide.md")]
struct ConnectorsGuideDoctests;

/// The connectors page's code (PostgreSQL and Kafka), compiled as doc tests.
#[cfg(all(doctest, feature = "postgres", feature = "kafka"))]
#[doc = include_str!("../docs/connectors.md")]
struct ConnectorsDoctests;

/// The Nexmark page's code, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/nexmark.md")]
struct NexmarkDoctests;

/// The names most pipelines need: `use actorflow::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Batch, Collected, Collector, Context, Data, DataStream, GeneratorSource, JobError,
        JobResult, KeyedContext, KeyedFilterFunction, KeyedFlatMapFunction, KeyedMapFunction,
        KeyedProcessFunction, KeyedStream, ParallelSource, ProcessFunction, RuntimeMode, Sink,
        Source, SourceStatus, StreamExecutionEnvironment, TaskInfo, TextFileOptions, Timestamp,
        UserError, Utf8Policy, WriteMode,
    };
    pub use actorflow_runtime::operators::{
        AggregateFunction, BroadcastProcessFunction, BroadcastStateDescriptor, CoProcessFunction,
        KeyedBroadcastProcessFunction, KeyedCoProcessFunction, ProcessJoinFunction, WindowContext,
        WindowFunction,
    };
    pub use actorflow_runtime::time::watermark::WatermarkStrategy;
    pub use actorflow_runtime::time::window::{GlobalWindow, TimeWindow};
    pub use actorflow_runtime::{OutputTag, Watermark};
}
