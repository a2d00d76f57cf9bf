//! State: keys, key groups and the state operators keep.
//!
//! * [`keygroup`] — Flink's key-group arithmetic (max parallelism, ranges) and a stable hash.
//! * [`key`] — the key types keyed streams carry.
//! * [`table`] — keyed tables laid out per key group.
//! * [`keyed_state`] — value, list, map, reducing and aggregating state per key, with TTL.
//! * [`operator_state`] — operator (non-keyed) list state and its redistribution on a change
//!   of parallelism.
//!
//! **May import:** [`types`](crate::types) and [`error`](crate::error) only: this is the
//! lowest layer above the ground, so the data plane can hash keys without knowing operators.

pub mod key;
pub mod keyed_state;
pub mod keygroup;
pub mod operator_state;
pub mod table;
