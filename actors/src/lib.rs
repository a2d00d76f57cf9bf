//! # actorflow-runtime
//!
//! The runtime under [`actorflow`](https://docs.rs/actorflow): every operator subtask is an
//! actor with a bounded, batched mailbox. Users normally import `actorflow`, which builds the
//! [`StreamGraph`] this crate runs. This crate never depends on the user API.
//!
//! ## A tour, bottom up
//!
//! One folder per layer; each imports only the layers below it (`scripts/check-layers.py`
//! checks this in CI, and each folder's doc says what it may import).
//!
//! * **The ground**: [`types`] — newtypes for units ([`Timestamp`], [`Watermark`],
//!   [`CheckpointId`], [`KeyGroup`], [`NodeId`]), the [`Data`] bound on records,
//!   [`RuntimeMode`] and [`WatermarkStatus`]; [`error`] — build, user and job errors.
//! * [`state`] — Flink's key-group arithmetic and a stable key hash
//!   ([`keygroup`](state::keygroup)), keyed tables laid out by key group
//!   ([`table`](state::table)), value, list, map, reducing and aggregating state per key with
//!   TTL ([`keyed_state`](state::keyed_state)), and operator list state with its
//!   redistribution on a change of parallelism ([`operator_state`](state::operator_state)).
//! * [`dataplane`] — [`Batch`] and its type-erased form [`DataBatch`], the [`Collector`] user
//!   functions emit into (records, side outputs ([`OutputTag`]) and watermarks, in order:
//!   [`Emission`]); the in-band [`StreamMessage`] and the [`PriorityMessage`] that overtakes
//!   data; the bounded [`lane`](dataplane::lane) (capacity in records, `send` waits,
//!   `try_send` hands the message back: where backpressure happens); a subtask's
//!   [`gate`](dataplane::gate) (one lane per input channel plus a priority lane, lanes blocked
//!   during alignment); [`partition`](dataplane::partition)ers and the record writer that cuts
//!   output into batches per channel.
//! * [`time`] — processing time on tokio's clock ([`clock`](time::clock)), deduplicated timer
//!   queues ([`timer`](time::timer)), watermark strategies ([`watermark`](time::watermark)),
//!   the [`valve`](time::valve) combining the watermarks of several inputs, and windows with
//!   Flink's arithmetic ([`window`](time::window)).
//! * [`checkpoint`] — what a snapshot holds ([`types`](checkpoint::types)), barrier alignment
//!   ([`barrier`](checkpoint::barrier)) and the coordinator's decisions
//!   ([`coordinator`](checkpoint::coordinator)), both pure; the
//!   [`snapshot`](checkpoint::snapshot) store trait (in memory and in sled; checksummed,
//!   versioned, manifest last); restart strategies ([`restart`](checkpoint::restart)) as plain
//!   decisions; fault plans ([`fault`](checkpoint::fault)).
//! * [`operators`] — the [`Operator`], [`Source`] and [`Sink`] traits, two-phase-commit sinks
//!   ([`transactional`](operators::transactional)), the test
//!   [`harness`](operators::harness), and one file per built-in operator
//!   ([`TimestampsAndWatermarksOperator`](operators::TimestampsAndWatermarksOperator),
//!   [`WindowOperator`](operators::WindowOperator), …).
//! * [`runtime`] — the stream [`graph`](runtime::graph), its validation and chaining into job
//!   vertices ([`plan`](runtime::plan)), [`config`](runtime::config); [`submit`] a graph and
//!   follow it with a [`JobHandle`]; read [`metrics`](runtime::metrics).
//!
//! Internally, `runtime::deploy` creates the lanes and operator instances, `runtime::subtask`
//! runs one chain instance's loop, `runtime::chain` passes batches between chained operators,
//! and `runtime::supervisor` holds the ractor actors: one actor per subtask, all linked to a
//! job supervisor that turns a failure into cancellation of the rest and a [`JobError`] naming
//! the operator; `runtime::coordinator_actor` applies the checkpoint coordinator's decisions.

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checkpoint;
pub mod dataplane;
pub mod error;
pub mod operators;
pub mod runtime;
pub mod state;
pub mod time;
pub mod types;

pub use dataplane::data::{Batch, Collector, Data, DataBatch, Emission, OutputTag, SideOutputs};
pub use dataplane::message::{
    BarrierAlignment, CheckpointBarrier, CheckpointKind, PriorityMessage, StreamMessage,
    WatermarkStatus,
};
pub use dataplane::partition::Partitioning;
pub use error::{BuildError, FailureCause, JobError, OperatorLabel, SubtaskFailure, UserError};
pub use operators::operator::{Operator, TaskInfo};
pub use operators::sink::Sink;
pub use operators::source::{Source, SourceStatus};
pub use runtime::config::{JobConfig, RuntimeMode};
pub use runtime::graph::{ChainingStrategy, NodeKind, StreamGraph};
pub use runtime::job::{JobControl, JobHandle, submit};
pub use runtime::metrics::{
    ChannelSnapshot, ChannelSource, ExceptionRecord, JobMetricsSnapshot, OutputLaneSnapshot,
    RecoveryAction, SubtaskMetricsSnapshot, SubtaskRates, SubtaskStatus,
};
pub use runtime::observer::{JobId, JobObserver, JobStatus, JobUpdate, JobUpdateKind};
pub use runtime::result::JobResult;
pub use types::{CheckpointId, KeyGroup, NodeId, Timestamp, Watermark};
