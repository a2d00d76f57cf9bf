//! Job configuration: the settings of an execution environment that the runtime uses.

use crate::error::BuildError;
use crate::state::keygroup::UPPER_BOUND_MAX_PARALLELISM;
use std::time::Duration;

pub use crate::types::RuntimeMode;

/// How a job runs. Every field has a Flink-like default.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Parallelism of operators that do not set their own (default: the number of CPUs).
    pub default_parallelism: u32,
    /// Max parallelism (number of key groups) of operators that do not set their own; `None`
    /// derives it from each operator's parallelism as Flink does.
    pub max_parallelism: Option<u32>,
    /// How long a partially filled output batch may wait before it is sent (Flink's buffer
    /// timeout, default 100 ms). Zero sends after every processed input batch.
    pub buffer_timeout: Duration,
    /// Records per batch on the data path (default 1024).
    pub batch_size: usize,
    /// Capacity of each input lane, in records (default 16384: sixteen full batches, about half
    /// a millisecond of data at tens of millions of records per second). It must hold at least
    /// one full batch. Less slack lets a consumer run dry while its producer is being woken
    /// (measured in `docs/BENCHMARKS.md`).
    pub lane_capacity: usize,
    /// Capacity of each subtask's priority lane, in messages (default 64).
    pub priority_lane_capacity: usize,
    /// Whether operators joined by forward edges of equal parallelism are chained (default
    /// true).
    pub chaining: bool,
    /// After a cancellation or failure, how long subtasks get to stop before their actors are
    /// killed (default 10 s).
    pub cancel_timeout: Duration,
    /// Log every subtask's metrics through `tracing` at this interval (default: off).
    pub metrics_interval: Option<Duration>,
    /// Streaming (default) or batch.
    pub runtime_mode: RuntimeMode,
    /// How often periodic watermark generators are asked for a watermark (Flink's
    /// `autoWatermarkInterval`, 200 ms by default; zero disables periodic watermarks).
    pub auto_watermark_interval: Duration,
    /// Processing time (ms) at the job's start; `None` reads the wall clock. Tests set it,
    /// with tokio's paused clock, to make processing-time windows and timers deterministic.
    pub processing_time_origin: Option<i64>,
    /// Checkpointing, restarts and restore (default: off; a failure then fails the job).
    pub checkpointing: Option<crate::checkpoint::types::CheckpointConfig>,
    /// Told about checkpoints and restarts.
    pub listener: Option<ListenerRef>,
}

/// A [`JobListener`](crate::checkpoint::types::JobListener) in a [`JobConfig`].
#[derive(Clone)]
pub struct ListenerRef(pub crate::checkpoint::types::JobListener);

impl std::fmt::Debug for ListenerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobListener")
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            default_parallelism: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            max_parallelism: None,
            buffer_timeout: Duration::from_millis(100),
            batch_size: 1024,
            lane_capacity: 16 * 1024,
            priority_lane_capacity: 64,
            chaining: true,
            cancel_timeout: Duration::from_secs(10),
            metrics_interval: None,
            auto_watermark_interval: Duration::from_millis(200),
            processing_time_origin: None,
            runtime_mode: RuntimeMode::Streaming,
            checkpointing: None,
            listener: None,
        }
    }
}

impl JobConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidConfig`] naming the setting and the allowed range.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: String| Err(BuildError::InvalidConfig(m));
        if self.default_parallelism == 0 {
            return bad("parallelism must be at least 1, got 0".into());
        }
        if let Some(m) = self.max_parallelism
            && !(1..=UPPER_BOUND_MAX_PARALLELISM).contains(&m)
        {
            return bad(format!("max parallelism must be in 1..=32768, got {m}"));
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1 record, got 0".into());
        }
        if self.lane_capacity < self.batch_size {
            return bad(format!(
                "lane capacity ({} records) must hold at least one batch ({} records)",
                self.lane_capacity, self.batch_size
            ));
        }
        if self.priority_lane_capacity == 0 {
            return bad("priority lane capacity must be at least 1, got 0".into());
        }
        Ok(())
    }
}
