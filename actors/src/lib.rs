//! # actorflow-runtime
//!
//! The runtime under [`actorflow`](https://docs.rs/actorflow): every operator subtask is an
//! actor with a bounded, batched mailbox. Users normally import `actorflow`, which builds the
//! [`StreamGraph`] this crate runs. This crate never depends on the user API.
//!
//! ## A tour, bottom up
//!
//! * [`types`] — newtypes for units: [`Timestamp`], [`Watermark`], [`CheckpointId`],
//!   [`KeyGroup`], [`NodeId`].
//! * [`data`] — [`Batch`] (records plus optional timestamps), its type-erased form
//!   [`DataBatch`], and the [`Collector`] user functions emit into — records, side outputs
//!   ([`OutputTag`]) and, for watermark generators, watermarks, in order ([`Emission`]).
//! * [`message`] — the in-band [`StreamMessage`] (data, watermark, status, barrier, end of
//!   input) and the [`PriorityMessage`] that overtakes data.
//! * [`lane`] — the bounded lane: capacity in records, `send` waits, `try_send` hands the
//!   message back. This is where backpressure happens.
//! * [`gate`] — a subtask's mailbox: one lane per input channel plus a priority lane; lanes can
//!   be blocked (barrier alignment) and the priority lane is always read first.
//! * [`keygroup`] — Flink's key-group arithmetic and a stable key hash.
//! * [`partition`] — partitioners and the [`RecordWriter`](partition::RecordWriter) that cuts
//!   output into batches per downstream channel.
//! * [`operator`], [`source`], [`sink`], [`operators`] — the [`Operator`], [`Source`] and
//!   [`Sink`] traits and the built-in operators.
//! * [`state`] — keyed tables laid out by key group; [`keyed_state`] — value, list, map,
//!   reducing and aggregating state per key, with TTL.
//! * [`clock`], [`timer`] — processing time (on tokio's clock, pausable) and deduplicated timer
//!   queues.
//! * [`watermark`], [`window`] — watermark strategies; window types, assigners, triggers and
//!   evictors with Flink's arithmetic. Their operators are in [`operators`]
//!   ([`TimestampsAndWatermarksOperator`](operators::TimestampsAndWatermarksOperator),
//!   [`WindowOperator`](operators::WindowOperator)).
//! * [`operator_state`] — operator (non-keyed) list state for sources and sinks, and its
//!   redistribution on a change of parallelism.
//! * [`coordinator`] — the checkpoint coordinator's decisions (trigger, complete, abort,
//!   subsume, discard, fail), pure; the actor applying them comes with checkpoints.
//! * [`snapshot`] — the `SnapshotStore` trait (blobs first, checksummed and versioned manifest
//!   last), in memory and in sled, and the fallback to the last checkpoint that verifies.
//! * [`restart`] — restart strategies (none, fixed delay, failure rate, exponential backoff
//!   with jitter) as plain decisions over failures.
//! * [`harness`] — drive one operator by hand in tests.
//! * [`valve`], [`barrier`] — pure logic: combining watermarks of several inputs, aligning
//!   checkpoint barriers.
//! * [`graph`], [`plan`], [`config`] — the stream graph, its validation and chaining into job
//!   vertices.
//! * [`job`] — [`submit`] a graph; follow it with a [`JobHandle`]; read [`metrics`].
//!
//! Internally, `deploy` creates the lanes and operator instances, `subtask` runs one chain
//! instance's loop, `chain` passes batches between chained operators, and `supervisor` holds
//! the ractor actors: one actor per subtask, all linked to a job supervisor that turns a
//! failure into cancellation of the rest and a [`JobError`] naming the operator.

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod barrier;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod data;
pub mod error;
pub mod fault;
pub mod gate;
pub mod graph;
pub mod harness;
pub mod job;
pub mod key;
pub mod keyed_state;
pub mod keygroup;
pub mod lane;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod operator_state;
pub mod operators;
pub mod partition;
pub mod plan;
pub mod restart;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod timer;
pub mod transactional;
pub mod types;
pub mod valve;
pub mod watermark;
pub mod window;

mod chain;
mod checkpointing;
mod deploy;
mod subtask;
mod supervisor;

pub use config::{JobConfig, RuntimeMode};
pub use data::{Batch, Collector, Data, DataBatch, Emission, OutputTag};
pub use error::{BuildError, FailureCause, JobError, OperatorLabel, SubtaskFailure, UserError};
pub use graph::{ChainingStrategy, NodeKind, StreamGraph};
pub use job::{JobControl, JobHandle, JobResult, submit};
pub use message::{
    BarrierAlignment, CheckpointBarrier, CheckpointKind, PriorityMessage, StreamMessage,
    WatermarkStatus,
};
pub use metrics::{JobMetricsSnapshot, SubtaskMetricsSnapshot, SubtaskRates, SubtaskStatus};
pub use operator::{Operator, TaskInfo};
pub use partition::Partitioning;
pub use sink::Sink;
pub use source::{Source, SourceStatus};
pub use types::{CheckpointId, KeyGroup, NodeId, Timestamp, Watermark};
