//! Newtypes for the units the runtime passes around, so that a checkpoint id can never be
//! confused with a key group or a subtask index.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Event time in milliseconds since the Unix epoch, as in Flink (`long` timestamps).
///
/// Negative values are valid event times.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The smallest representable time.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The largest representable time.
    pub const MAX: Timestamp = Timestamp(i64::MAX);
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A watermark: the assertion that no more records with a timestamp `<=` this value will arrive.
///
/// `Watermark::MAX` ends event time: a bounded input sends it before end of input, and it fires
/// every pending event-time timer and window downstream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Watermark(pub i64);

impl Watermark {
    /// No watermark seen yet (Flink's `Long.MIN_VALUE`).
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// End of event time (Flink's `Watermark.MAX_WATERMARK`).
    pub const MAX: Watermark = Watermark(i64::MAX);
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Watermark::MIN => f.write_str("MIN"),
            Watermark::MAX => f.write_str("MAX"),
            Watermark(v) => v.fmt(f),
        }
    }
}

/// Identifies one checkpoint or savepoint; ids only increase within a job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// Stands for the final checkpoint a bounded job takes after end of input, whatever its
    /// number: a sink's last transaction is tagged with it.
    pub const FINAL: CheckpointId = CheckpointId(u64::MAX);
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A key group: the unit in which keyed state is partitioned, snapshotted and redistributed.
/// There are `max_parallelism` key groups, numbered from 0.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyGroup(pub u32);

impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies an operator (a node of the stream graph) within one job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies an edge of the stream graph within one job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EdgeId(pub usize);

/// Identifies a job vertex: a chain of operators that runs as one subtask per parallel instance.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VertexId(pub usize);

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a stream's records must be: cloneable (a stream can feed several operators, and the
/// broadcast partitioner copies records), sendable between subtasks, and serializable (state,
/// snapshots and in-flight data of unaligned checkpoints hold records).
///
/// Implemented automatically for every type with these properties.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::Data;
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Click { user: String, ts: i64 }
/// fn assert_data<T: Data>() {}
/// assert_data::<Click>();
/// assert_data::<(String, u64)>();
/// ```
pub trait Data: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> Data for T {}

/// How a job treats its input (Flink's `RuntimeExecutionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeMode {
    /// Unbounded processing: results are updated as records arrive (rolling aggregations emit
    /// every update).
    #[default]
    Streaming,
    /// Bounded processing, as Flink's `BATCH` mode: every source must be bounded, and keyed
    /// rolling aggregations emit only their final value per key, at end of input.
    Batch,
}

/// Whether a channel currently produces watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatermarkStatus {
    /// The channel produces watermarks and counts towards the combined minimum.
    Active,
    /// The channel has no data for a while and is left out of the combined minimum.
    Idle,
}
