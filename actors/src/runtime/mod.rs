//! The runtime: turning a stream graph into running actors and watching them.
//!
//! * [`graph`], [`plan`], [`config`] — the stream graph users build, its validation and chaining
//!   into job vertices and subtasks, and the job configuration.
//! * [`job`] — [`submit`](job::submit) a graph; follow it with a [`JobHandle`](job::JobHandle).
//! * [`metrics`] — per-subtask counters and their snapshots.
//! * [`observer`] — the job's id, plan, status history, checkpoint statistics and live
//!   updates, for the REST API and dashboard.
//! * Internal: `deploy` creates lanes and operator instances; `subtask` runs one chain
//!   instance's loop (the record path; its checkpoint side, with unaligned recording, in
//!   `subtask::checkpoint`);
//!   `chain` passes batches between chained operators; `supervisor` holds the ractor actors
//!   (one per subtask, linked to the job supervisor) and restarts failed regions;
//!   `coordinator_actor` applies the pure coordinator's decisions; `control` is the message
//!   type the supervisor and the coordinator actor share; `result` what a finished job returns.
//!
//! **May import:** every layer below — [`operators`](crate::operators),
//! [`checkpoint`](crate::checkpoint), [`time`](crate::time), [`dataplane`](crate::dataplane),
//! [`state`](crate::state) and the ground. Nothing imports it except the crate root's
//! re-exports.

pub(crate) mod chain;
pub mod config;
pub(crate) mod control;
pub(crate) mod coordinator_actor;
pub(crate) mod deploy;
pub mod graph;
pub mod job;
pub mod metrics;
pub mod observer;
pub mod plan;
pub mod result;
pub(crate) mod subtask;
pub(crate) mod supervisor;
