//! Per-subtask metrics, readable while the job runs.
//!
//! Each subtask updates a few atomics once per batch (never per record). A
//! [`JobMetricsSnapshot`] reads them all; two snapshots give rates and the busy /
//! backpressured / idle shares of wall time (Flink's `busyTimeMsPerSecond`,
//! `backPressuredTimeMsPerSecond`, `idleTimeMsPerSecond`).
//!
//! * **busy**: processing records, watermarks and barriers, or waiting for a sink's write;
//! * **backpressured**: waiting for room in a downstream lane;
//! * **idle**: waiting for input.

use crate::dataplane::lane::{LaneFill, LaneProbe};
pub use crate::operators::operator::OperatorCounters;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Lifecycle state of a subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubtaskStatus {
    /// Created, not yet running.
    Created,
    /// Running.
    Running,
    /// Finished its input.
    Finished,
    /// Stopped by cancellation.
    Cancelled,
    /// Failed.
    Failed,
}

impl SubtaskStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => SubtaskStatus::Running,
            2 => SubtaskStatus::Finished,
            3 => SubtaskStatus::Cancelled,
            4 => SubtaskStatus::Failed,
            _ => SubtaskStatus::Created,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            SubtaskStatus::Created => 0,
            SubtaskStatus::Running => 1,
            SubtaskStatus::Finished => 2,
            SubtaskStatus::Cancelled => 3,
            SubtaskStatus::Failed => 4,
        }
    }
}

/// Where an input channel (lane) of a subtask comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelSource {
    /// The upstream vertex's index.
    pub vertex: usize,
    /// The upstream subtask's index.
    pub subtask: usize,
}

/// An output lane of a subtask, for its fill.
#[derive(Debug, Clone)]
pub(crate) struct OutputLaneProbe {
    pub(crate) vertex: usize,
    pub(crate) subtask: usize,
    pub(crate) probe: LaneProbe,
}

/// The live watermark state of one input channel.
#[derive(Debug)]
struct ChannelProbe {
    source: ChannelSource,
    watermark: AtomicI64,
    /// 0 active, 1 idle, 2 ended.
    state: AtomicU8,
}

/// One input channel's watermark state at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelSnapshot {
    /// Where it comes from.
    pub source: ChannelSource,
    /// The newest watermark it delivered, `None` before the first.
    pub watermark: Option<i64>,
    /// It announced idleness (it is left out of the minimum).
    pub idle: bool,
    /// It ended (it no longer holds event time back).
    pub ended: bool,
}

/// One output lane's fill at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputLaneSnapshot {
    /// The downstream vertex's index.
    pub vertex: usize,
    /// The downstream subtask's index.
    pub subtask: usize,
    /// How full the lane is.
    pub fill: LaneFill,
}

/// What a subtask is doing, for time accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Busy = 0,
    Backpressured = 1,
    Idle = 2,
}

/// The live counters of one subtask.
///
/// Time is accounted by phase: the subtask says when it enters a phase, which closes the
/// previous one; a snapshot adds the time spent so far in the current phase, so a subtask that
/// has been blocked for a minute shows a minute of backpressure *now*, not when it unblocks.
#[derive(Debug)]
pub struct SubtaskMetrics {
    vertex: Arc<str>,
    subtask_index: usize,
    parallelism: u32,
    pub(crate) records_in: AtomicU64,
    pub(crate) records_out: Arc<AtomicU64>,
    busy_ns: AtomicU64,
    backpressured_ns: AtomicU64,
    idle_ns: AtomicU64,
    /// The combined watermark of the input lanes (the valve's output).
    input_watermark: AtomicI64,
    /// The newest watermark that left the chain (to a network tail or a sink), shared with
    /// the tails, which update it once per watermark.
    pub(crate) output_watermark: Arc<AtomicI64>,
    status: AtomicU8,
    /// Keys with keyed state in the chain's operators; `u64::MAX`: none keeps keyed state.
    keys: AtomicU64,
    lanes: Vec<LaneProbe>,
    channels: Vec<ChannelProbe>,
    outputs: Vec<OutputLaneProbe>,
    counters: OperatorCounters,
    epoch: Instant,
    phase: AtomicU8,
    /// Nanoseconds from `epoch` to when the current phase began; `u64::MAX` when no phase is
    /// open (before start, after the end).
    phase_since: AtomicU64,
}

impl SubtaskMetrics {
    pub(crate) fn new(
        vertex: Arc<str>,
        subtask_index: usize,
        parallelism: u32,
        records_out: Arc<AtomicU64>,
        output_watermark: Arc<AtomicI64>,
        lanes: Vec<LaneProbe>,
        counters: OperatorCounters,
    ) -> Self {
        SubtaskMetrics {
            vertex,
            subtask_index,
            parallelism,
            records_in: AtomicU64::new(0),
            records_out,
            busy_ns: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            input_watermark: AtomicI64::new(i64::MIN),
            output_watermark,
            status: AtomicU8::new(0),
            keys: AtomicU64::new(u64::MAX),
            lanes,
            channels: Vec::new(),
            outputs: Vec::new(),
            counters,
            epoch: Instant::now(),
            phase: AtomicU8::new(0),
            phase_since: AtomicU64::new(u64::MAX),
        }
    }

    /// Where each input lane comes from (in lane order) and the output lanes.
    pub(crate) fn with_lanes(
        mut self,
        sources: Vec<ChannelSource>,
        outputs: Vec<OutputLaneProbe>,
    ) -> Self {
        self.channels = sources
            .into_iter()
            .map(|source| ChannelProbe {
                source,
                watermark: AtomicI64::new(i64::MIN),
                state: AtomicU8::new(0),
            })
            .collect();
        self.outputs = outputs;
        self
    }

    /// Records input channel `lane`'s watermark and status (once per watermark or status
    /// message, not per record).
    pub(crate) fn set_channel(&self, lane: usize, watermark: i64, idle: bool, ended: bool) {
        if let Some(c) = self.channels.get(lane) {
            c.watermark.store(watermark, Ordering::Relaxed);
            let state = if ended { 2 } else { u8::from(idle) };
            c.state.store(state, Ordering::Relaxed);
        }
    }

    fn counter(&self, phase: Phase) -> &AtomicU64 {
        match phase {
            Phase::Busy => &self.busy_ns,
            Phase::Backpressured => &self.backpressured_ns,
            Phase::Idle => &self.idle_ns,
        }
    }

    fn current_phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Backpressured,
            2 => Phase::Idle,
            _ => Phase::Busy,
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64
    }

    /// Closes the current phase (adding its time) and opens `phase`, or none.
    pub(crate) fn enter(&self, phase: Option<Phase>) {
        let now = self.now_ns();
        let since = self.phase_since.load(Ordering::Relaxed);
        if since != u64::MAX {
            self.counter(self.current_phase())
                .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
        }
        match phase {
            Some(p) => {
                self.phase.store(p as u8, Ordering::Relaxed);
                self.phase_since.store(now, Ordering::Relaxed);
            }
            None => self.phase_since.store(u64::MAX, Ordering::Relaxed),
        }
    }

    /// A counter's total, including the open phase if it is this one.
    fn total(&self, phase: Phase) -> Duration {
        let mut ns = self.counter(phase).load(Ordering::Relaxed);
        let since = self.phase_since.load(Ordering::Relaxed);
        if since != u64::MAX && self.current_phase() == phase {
            ns = ns.saturating_add(self.now_ns().saturating_sub(since));
        }
        Duration::from_nanos(ns)
    }

    pub(crate) fn set_status(&self, status: SubtaskStatus) {
        self.status.store(status.to_u8(), Ordering::Relaxed);
    }

    pub(crate) fn status(&self) -> SubtaskStatus {
        SubtaskStatus::from_u8(self.status.load(Ordering::Relaxed))
    }

    /// Publishes the chain's key count (once per input batch).
    pub(crate) fn set_keys(&self, keys: Option<usize>) {
        let v = keys.map_or(u64::MAX, |k| k as u64);
        self.keys.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_input_watermark(&self, wm: i64) {
        self.input_watermark.store(wm, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Ordering::Relaxed);
    }

    /// A consistent-enough reading of every counter.
    pub fn snapshot(&self) -> SubtaskMetricsSnapshot {
        let set = |wm: i64| (wm != i64::MIN).then_some(wm);
        SubtaskMetricsSnapshot {
            vertex: self.vertex.to_string(),
            subtask_index: self.subtask_index,
            parallelism: self.parallelism,
            status: self.status(),
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            busy: self.total(Phase::Busy),
            backpressured: self.total(Phase::Backpressured),
            idle: self.total(Phase::Idle),
            input_lanes: self.lanes.iter().map(LaneProbe::fill).collect(),
            input_watermark: set(self.input_watermark.load(Ordering::Relaxed)),
            output_watermark: set(self.output_watermark.load(Ordering::Relaxed)),
            late_records_dropped: self.counters.late_records_dropped(),
            gauges: self.counters.gauges(),
            keyed_state_keys: match self.keys.load(Ordering::Relaxed) {
                u64::MAX => None,
                k => Some(k),
            },
            input_channels: self
                .channels
                .iter()
                .map(|c| {
                    let state = c.state.load(Ordering::Relaxed);
                    ChannelSnapshot {
                        source: c.source,
                        watermark: set(c.watermark.load(Ordering::Relaxed)),
                        idle: state == 1,
                        ended: state == 2,
                    }
                })
                .collect(),
            output_lanes: self
                .outputs
                .iter()
                .map(|o| OutputLaneSnapshot {
                    vertex: o.vertex,
                    subtask: o.subtask,
                    fill: o.probe.fill(),
                })
                .collect(),
        }
    }
}

/// One subtask's counters at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubtaskMetricsSnapshot {
    /// The job vertex (chain) name.
    pub vertex: String,
    /// Subtask index, from 0.
    pub subtask_index: usize,
    /// Parallelism of the vertex.
    pub parallelism: u32,
    /// Lifecycle state.
    pub status: SubtaskStatus,
    /// Records taken from the input lanes (for sources: 0, as in Flink).
    pub records_in: u64,
    /// Records sent into downstream lanes (sinks: 0).
    pub records_out: u64,
    /// Total time busy.
    pub busy: Duration,
    /// Total time waiting for room downstream.
    pub backpressured: Duration,
    /// Total time waiting for input.
    pub idle: Duration,
    /// Fill of each input lane, in lane order.
    pub input_lanes: Vec<LaneFill>,
    /// The combined watermark of the input channels (Flink's `currentInputWatermark`): the
    /// minimum over active channels, `None` before every channel sent one (and for sources,
    /// which have no input).
    pub input_watermark: Option<i64>,
    /// The newest watermark the subtask emitted downstream (Flink's `currentOutputWatermark`),
    /// after its chain: for a chain with a watermark generator this is the generated one,
    /// while its input watermark may be `None`. `None` before the first.
    pub output_watermark: Option<i64>,
    /// Records dropped as too late by window operators in this subtask (records sent to a
    /// late side output are not counted).
    pub late_records_dropped: u64,
    /// Gauges the subtask's operators and source publish, by name (a Kafka source's offsets
    /// and lag per partition, for example), sorted by name.
    #[serde(default)]
    pub gauges: Vec<(String, i64)>,
    /// Keys that hold keyed state in the subtask's operators (windows, keyed process, rolling
    /// reduce), as of the last input batch; `None` if none keeps keyed state.
    pub keyed_state_keys: Option<u64>,
    /// Every input channel's watermark and status, in lane order (as `input_lanes`).
    pub input_channels: Vec<ChannelSnapshot>,
    /// Fill of every output lane (to the downstream subtasks).
    pub output_lanes: Vec<OutputLaneSnapshot>,
}

/// Every subtask's counters at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobMetricsSnapshot {
    /// Time since the job started.
    pub elapsed: Duration,
    /// One entry per subtask, by vertex then subtask index (the current attempt's).
    pub subtasks: Vec<SubtaskMetricsSnapshot>,
    /// Restarts so far (of any pipelined region).
    pub restarts: u32,
    /// The failures the supervisor handled, oldest first (the newest
    /// [`EXCEPTION_HISTORY`] are kept): Flink's exception history.
    pub exceptions: Vec<ExceptionRecord>,
}

/// How many failures a job's exception history keeps (Flink's
/// `web.exception-history-size` default is 16).
pub const EXCEPTION_HISTORY: usize = 32;

/// One failure the supervisor handled, and what it did about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExceptionRecord {
    /// When the supervisor decided, in ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The failed operator's name.
    pub operator: String,
    /// Its job vertex (chain).
    pub vertex: String,
    /// The failed subtask's index, from 0.
    pub subtask_index: usize,
    /// The root cause, as the job error would print it.
    pub cause: String,
    /// The pipelined region that failed (0 for a connected job).
    pub region: usize,
    /// What the supervisor did.
    pub action: RecoveryAction,
}

/// What the supervisor did about a failure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RecoveryAction {
    /// The region was restarted (restart attempt `attempt`), after `delay_ms`, from the
    /// newest completed checkpoint (`None`: from scratch).
    RegionRestarted {
        /// The restart strategy's attempt number.
        attempt: u32,
        /// The delay before the redeployment.
        delay_ms: u64,
        /// The checkpoint the region restarts from.
        from_checkpoint: Option<u64>,
    },
    /// A further failure of the same incident, handled by the restart already decided.
    SameIncident,
    /// No more restarts (or no checkpointing): the job failed with this cause.
    JobFailed {
        /// Why the restart strategy gave up, or that the job does not restart.
        reason: String,
    },
}

impl fmt::Display for ExceptionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.cause)?;
        match &self.action {
            RecoveryAction::RegionRestarted {
                attempt,
                delay_ms,
                from_checkpoint,
            } => match from_checkpoint {
                Some(id) => write!(
                    f,
                    "-> restart {attempt} after {delay_ms} ms from checkpoint {id}"
                ),
                None => write!(f, "-> restart {attempt} after {delay_ms} ms from scratch"),
            },
            RecoveryAction::SameIncident => write!(f, "-> part of the restart in progress"),
            RecoveryAction::JobFailed { reason } => write!(f, "-> job failed: {reason}"),
        }
    }
}

/// Rates between two snapshots of one subtask.
#[derive(Debug, Clone, PartialEq)]
pub struct SubtaskRates {
    /// The job vertex (chain) name.
    pub vertex: String,
    /// Subtask index.
    pub subtask_index: usize,
    /// Records in per second.
    pub records_in_per_sec: f64,
    /// Records out per second.
    pub records_out_per_sec: f64,
    /// Share of the interval spent busy, in milliseconds per second.
    pub busy_ms_per_sec: f64,
    /// Share spent backpressured, in milliseconds per second.
    pub backpressured_ms_per_sec: f64,
    /// Share spent idle, in milliseconds per second.
    pub idle_ms_per_sec: f64,
}

impl JobMetricsSnapshot {
    /// The subtasks whose vertex name contains `name`.
    pub fn vertex<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SubtaskMetricsSnapshot> {
        self.subtasks
            .iter()
            .filter(move |s| s.vertex.contains(name))
    }

    /// Rates per subtask between `earlier` and this snapshot.
    pub fn rates_since(&self, earlier: &JobMetricsSnapshot) -> Vec<SubtaskRates> {
        let secs = self
            .elapsed
            .saturating_sub(earlier.elapsed)
            .as_secs_f64()
            .max(1e-9);
        self.subtasks
            .iter()
            .zip(&earlier.subtasks)
            .map(|(now, then)| {
                let ms = |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() * 1e3 / secs;
                SubtaskRates {
                    vertex: now.vertex.clone(),
                    subtask_index: now.subtask_index,
                    records_in_per_sec: now.records_in.saturating_sub(then.records_in) as f64
                        / secs,
                    records_out_per_sec: now.records_out.saturating_sub(then.records_out) as f64
                        / secs,
                    busy_ms_per_sec: ms(now.busy, then.busy),
                    backpressured_ms_per_sec: ms(now.backpressured, then.backpressured),
                    idle_ms_per_sec: ms(now.idle, then.idle),
                }
            })
            .collect()
    }
}

impl fmt::Display for SubtaskMetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}/{}) {:?}: in={} out={} busy={:.1?} backpressured={:.1?} idle={:.1?}",
            self.vertex,
            self.subtask_index + 1,
            self.parallelism,
            self.status,
            self.records_in,
            self.records_out,
            self.busy,
            self.backpressured,
            self.idle
        )?;
        if !self.input_lanes.is_empty() {
            f.write_str(" lanes=[")?;
            for (i, l) in self.input_lanes.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{}/{}", l.queued, l.capacity)?;
            }
            f.write_str("]")?;
        }
        if let Some(wm) = self.input_watermark {
            write!(f, " input_watermark={wm}")?;
        }
        if let Some(wm) = self.output_watermark {
            write!(f, " output_watermark={wm}")?;
        }
        if self.late_records_dropped > 0 {
            write!(f, " late_dropped={}", self.late_records_dropped)?;
        }
        Ok(())
    }
}

impl fmt::Display for JobMetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.restarts > 0 {
            writeln!(f, "restarts: {}", self.restarts)?;
        }
        for e in &self.exceptions {
            writeln!(f, "exception: {e}")?;
        }
        for s in &self.subtasks {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}
