//! Checkpoints: what a snapshot holds, how barriers align, the coordinator's decisions, where
//! snapshots are stored, and how a job restarts.
//!
//! * [`types`] — what operators write into a checkpoint ([`OperatorState`](types::OperatorState),
//!   [`KeyedSnapshot`](types::KeyedSnapshot)) and get back ([`RestoredState`](types::RestoredState)),
//!   the checkpoint configuration and job events.
//! * [`barrier`] — aligning barriers over a subtask's input lanes, pure.
//! * [`coordinator`] — the checkpoint coordinator's decisions (trigger, complete, abort, subsume,
//!   fail), pure: plain functions over plain state.
//! * `capture` (crate-internal) — what one subtask contributes to a checkpoint (operator entries, in-flight
//!   data of unaligned checkpoints) and what it is handed back on restore.
//! * [`snapshot`] — the `SnapshotStore` trait, in memory and in sled.
//! * [`incremental`] — incremental checkpoints of keyed state: chains of base and delta
//!   chunks per key group, shared between checkpoints.
//! * [`restart`] — restart strategies as plain decisions over failures.
//! * [`fault`] — fault plans for failure-injection tests and demos.
//!
//! **May import:** [`time`](crate::time), [`dataplane`](crate::dataplane),
//! [`state`](crate::state), [`types`](crate::types), [`error`](crate::error). The actor that
//! applies the coordinator's decisions lives in [`runtime`](crate::runtime), above; the
//! two-phase-commit sink adapter lives with the other sinks in [`operators`](crate::operators).

pub mod barrier;
pub(crate) mod bytes;
pub(crate) mod capture;
pub mod coordinator;
pub mod fault;
pub mod incremental;
pub mod restart;
pub mod snapshot;
pub mod types;
