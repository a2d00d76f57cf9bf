//! What a job tells the outside world about itself, beyond per-subtask counters: its id and
//! plan, its status with the time of every transition, the statistics of its checkpoints, and
//! a live stream of [`JobUpdate`]s. The REST API and the dashboard read it; programs can too
//! ([`JobControl::observer`](crate::runtime::job::JobControl::observer)).
//!
//! Everything here changes a few times per checkpoint or failure, never per record: it is kept
//! under short locks that the supervisor and the checkpoint coordinator take, and readers
//! copy out what they need.

use crate::checkpoint::types::JobEvent;
use crate::dataplane::message::CheckpointKind;
use crate::dataplane::partition::Partitioning;
use crate::runtime::graph::StreamGraph;
use crate::runtime::metrics::ExceptionRecord;
use crate::runtime::plan::ExecutionPlan;
use crate::types::CheckpointId;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// How many checkpoints a job's history keeps (Flink's `web.checkpoints.history` default).
pub const CHECKPOINT_HISTORY: usize = 10;

/// How many completed checkpoints the duration and size summaries cover (the newest).
const SUMMARY_WINDOW: usize = 1000;

/// How many updates a slow reader of [`JobObserver::subscribe`] may fall behind before it
/// misses some (it is told how many).
const UPDATE_BUFFER: usize = 1024;

/// A job's id: 16 random bytes shown as 32 hex digits, like Flink's `JobID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// A new id from the clock, the process id and a counter (unique within a process and
    /// very likely across processes; not a secret).
    pub fn generate() -> JobId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let a = splitmix(now ^ u64::from(std::process::id()).rotate_left(32));
        let b = splitmix(a ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        JobId(bytes)
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    ///
    /// A message if `s` is not exactly 32 hex digits.
    pub fn parse(s: &str) -> Result<JobId, String> {
        parse_hex16(s).map(JobId)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The id of a job vertex as the REST API shows it: 32 hex digits, like Flink's
/// `JobVertexID`, derived from the job id and the vertex's index so that it is stable for the
/// life of the job.
pub fn vertex_id(job: JobId, vertex: usize) -> String {
    let a = splitmix(u64::from_be_bytes(job.0[..8].try_into().unwrap_or([0; 8])) ^ vertex as u64);
    let b = splitmix(u64::from_be_bytes(job.0[8..].try_into().unwrap_or([0; 8])) ^ a);
    format!("{a:016x}{b:016x}")
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn parse_hex16(s: &str) -> Result<[u8; 16], String> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not an id of 32 hex digits"));
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("{s:?} is not an id of 32 hex digits: {e}"))?;
    }
    Ok(out)
}

/// A job's status, with Flink's names ([`as_str`](Self::as_str)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobStatus {
    /// Deployed, not yet running.
    Created,
    /// Running.
    Running,
    /// A region failed and is being restarted.
    Restarting,
    /// Failed for good.
    Failed,
    /// Being cancelled.
    Cancelling,
    /// Cancelled.
    Canceled,
    /// Ended successfully (end of input, or stopped with a savepoint).
    Finished,
}

impl JobStatus {
    /// Flink's name: `CREATED`, `RUNNING`, `RESTARTING`, `FAILED`, `CANCELLING`, `CANCELED`,
    /// `FINISHED`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
        }
    }

    /// True once the job can no longer change (Flink's globally terminal states).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Finished
        )
    }

    /// Every status, in the order of Flink's `timestamps` object.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Restarting,
        JobStatus::Failed,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
    ];
}

/// One job vertex (operator chain) as the outside world sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VertexInfo {
    /// Its index in the plan (the runtime's vertex id).
    pub index: usize,
    /// The REST id: 32 hex digits ([`vertex_id`]).
    pub id: String,
    /// The operator names joined with ` -> `.
    pub name: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Its max parallelism (key groups).
    pub max_parallelism: u32,
    /// The operators of the chain, head first.
    pub operators: Vec<String>,
    /// The edges into it.
    pub inputs: Vec<EdgeInfo>,
}

/// An edge between two job vertices.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EdgeInfo {
    /// The upstream vertex's index.
    pub from: usize,
    /// Flink's `ship_strategy` name: `FORWARD`, `REBALANCE`, `RESCALE`, `SHUFFLE`,
    /// `BROADCAST`, `GLOBAL`, `HASH`, `CUSTOM`.
    pub ship_strategy: &'static str,
    /// Which input of the downstream operator it feeds (0 for one-input operators).
    pub input: usize,
}

fn ship_strategy(p: &Partitioning) -> &'static str {
    match p {
        Partitioning::Forward => "FORWARD",
        Partitioning::Rebalance => "REBALANCE",
        Partitioning::Rescale => "RESCALE",
        Partitioning::Shuffle => "SHUFFLE",
        Partitioning::Broadcast => "BROADCAST",
        Partitioning::Global => "GLOBAL",
        Partitioning::Hash => "HASH",
        Partitioning::Custom => "CUSTOM",
    }
}

/// The job graph: its vertices in plan order (sources first).
pub fn vertices_of(job: JobId, graph: &StreamGraph, plan: &ExecutionPlan) -> Vec<VertexInfo> {
    plan.vertices
        .iter()
        .map(|v| VertexInfo {
            index: v.id.0,
            id: vertex_id(job, v.id.0),
            name: v.name.clone(),
            parallelism: v.parallelism,
            max_parallelism: plan.max_parallelism[v.head.0],
            operators: v
                .nodes
                .iter()
                .map(|n| graph.nodes[n.0].name.to_string())
                .collect(),
            inputs: v
                .inputs
                .iter()
                .map(|e| {
                    let edge = &graph.edges[e.0];
                    EdgeInfo {
                        from: plan.vertex_of[edge.source.0].0,
                        ship_strategy: ship_strategy(&plan.partitioning[e.0]),
                        input: edge.input,
                    }
                })
                .collect(),
        })
        .collect()
}

/// How the job checkpoints, for `GET /jobs/{id}/checkpoints/config`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckpointConfigInfo {
    /// `EXACTLY_ONCE` or `AT_LEAST_ONCE`.
    pub mode: &'static str,
    /// The interval, in ms.
    pub interval_ms: u64,
    /// The timeout, in ms.
    pub timeout_ms: u64,
    /// The minimum pause between checkpoints, in ms.
    pub min_pause_ms: u64,
    /// At most this many at once.
    pub max_concurrent: u32,
    /// Unaligned checkpoints are on.
    pub unaligned: bool,
    /// An aligned checkpoint turns unaligned after this long, in ms (0: never).
    pub aligned_timeout_ms: u64,
    /// Failed checkpoints tolerated in a row.
    pub tolerable_failed: u32,
    /// Completed checkpoints kept.
    pub retained: usize,
    /// Incremental keyed state.
    pub incremental: bool,
    /// Where checkpoints are stored.
    pub store: String,
}

/// The status of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CheckpointStatus {
    /// Triggered, not every subtask acknowledged yet.
    InProgress,
    /// Stored and published.
    Completed,
    /// Given up.
    Failed,
}

impl CheckpointStatus {
    /// Flink's name: `IN_PROGRESS`, `COMPLETED`, `FAILED`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::InProgress => "IN_PROGRESS",
            CheckpointStatus::Completed => "COMPLETED",
            CheckpointStatus::Failed => "FAILED",
        }
    }
}

/// One subtask's part in one checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubtaskCheckpointStats {
    /// The vertex index.
    pub vertex: usize,
    /// The subtask index.
    pub subtask: usize,
    /// When the coordinator had its state, in ms since the Unix epoch.
    pub ack_timestamp_ms: u64,
    /// First barrier to snapshot, in ms.
    pub alignment_ms: u64,
    /// The pause at the barrier, in ms.
    pub sync_ms: u64,
    /// Encoding off the subtask, in ms.
    pub async_ms: u64,
    /// Bytes of state this checkpoint stored for it (incremental: what it wrote).
    pub state_size: u64,
    /// Bytes of in-flight data it persisted (unaligned checkpoints).
    pub in_flight_bytes: u64,
    /// It took the checkpoint unaligned.
    pub unaligned: bool,
}

/// One checkpoint, as the history shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// The final checkpoint after end of input.
    pub is_final: bool,
    /// Status.
    pub status: CheckpointStatus,
    /// When it was triggered, in ms since the Unix epoch.
    pub trigger_timestamp_ms: u64,
    /// The newest acknowledgement, in ms since the Unix epoch (0 before the first).
    pub latest_ack_timestamp_ms: u64,
    /// Trigger to completion (or to now while in progress, to failure when failed), in ms.
    pub end_to_end_duration_ms: u64,
    /// The checkpoint's full size (bytes written plus bytes shared with earlier ones).
    pub state_size: u64,
    /// Bytes this checkpoint wrote (Flink's `checkpointed_size`).
    pub checkpointed_size: u64,
    /// Persisted in-flight data, all subtasks.
    pub in_flight_bytes: u64,
    /// The longest alignment, in ms.
    pub alignment_ms: u64,
    /// Any subtask took it unaligned.
    pub unaligned: bool,
    /// Subtasks that acknowledged.
    pub num_acknowledged_subtasks: usize,
    /// Subtasks that must acknowledge.
    pub num_subtasks: usize,
    /// Why it failed.
    pub failure_message: Option<String>,
    /// The acknowledgements, in arrival order.
    pub subtasks: Vec<SubtaskCheckpointStats>,
}

impl CheckpointStats {
    /// A checkpoint triggered at `trigger_ms` that `subtasks` must acknowledge, nothing
    /// acknowledged yet.
    fn new(id: CheckpointId, kind: CheckpointKind, trigger_ms: u64, subtasks: usize) -> Self {
        CheckpointStats {
            id: id.0,
            kind,
            is_final: false,
            status: CheckpointStatus::InProgress,
            trigger_timestamp_ms: trigger_ms,
            latest_ack_timestamp_ms: 0,
            end_to_end_duration_ms: 0,
            state_size: 0,
            checkpointed_size: 0,
            in_flight_bytes: 0,
            alignment_ms: 0,
            unaligned: false,
            num_acknowledged_subtasks: 0,
            num_subtasks: subtasks,
            failure_message: None,
            subtasks: Vec::new(),
        }
    }
}

/// Count, minimum, maximum, average and percentiles of one quantity over completed
/// checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Summary {
    /// Values counted.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
    /// Mean, rounded down.
    pub avg: u64,
    /// Median (nearest rank).
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

impl Summary {
    fn of(values: &VecDeque<u64>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v: Vec<u64> = values.iter().copied().collect();
        v.sort_unstable();
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary {
            count: v.len() as u64,
            min: v[0],
            max: v[v.len() - 1],
            avg: v.iter().sum::<u64>() / v.len() as u64,
            p50: rank(0.5),
            p90: rank(0.9),
            p95: rank(0.95),
            p99: rank(0.99),
            p999: rank(0.999),
        }
    }
}

/// The checkpoint statistics of a job (Flink's `GET /jobs/{id}/checkpoints`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct CheckpointOverview {
    /// Checkpoints and savepoints triggered.
    pub triggered: u64,
    /// In progress now.
    pub in_progress: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Restores (at start with a restore, and every restart from a checkpoint).
    pub restored: u64,
    /// End-to-end durations of completed checkpoints, ms.
    pub end_to_end_duration: Summary,
    /// Full sizes of completed checkpoints, bytes.
    pub state_size: Summary,
    /// Bytes written by completed checkpoints.
    pub checkpointed_size: Summary,
    /// Longest alignment of completed checkpoints, ms.
    pub alignment: Summary,
    /// Persisted in-flight bytes of completed checkpoints.
    pub in_flight_bytes: Summary,
    /// The newest completed checkpoint (not savepoint).
    pub latest_completed: Option<CheckpointStats>,
    /// The newest completed savepoint.
    pub latest_savepoint: Option<CheckpointStats>,
    /// The newest failed one.
    pub latest_failed: Option<CheckpointStats>,
    /// The newest restore: the checkpoint id (`None`: a restart from scratch) and when.
    pub latest_restored: Option<RestoreStats>,
    /// The newest [`CHECKPOINT_HISTORY`] checkpoints, newest first.
    pub history: Vec<CheckpointStats>,
}

/// A restore of the job.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RestoreStats {
    /// The checkpoint restored, `None` for a restart from scratch.
    pub id: Option<u64>,
    /// When, in ms since the Unix epoch.
    pub restore_timestamp_ms: u64,
}

/// A change of the job, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    /// When, in ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// What.
    pub kind: JobUpdateKind,
}

/// What changed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdateKind {
    /// The job's status changed.
    Status(JobStatus),
    /// A checkpoint or savepoint was triggered.
    CheckpointTriggered {
        /// Its id.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
    },
    /// A failure the supervisor handled.
    Exception(ExceptionRecord),
    /// A checkpoint completed or was aborted, a region restarted or was restored.
    Event(JobEvent),
}

#[derive(Debug, Default)]
struct State {
    status: Vec<(JobStatus, u64)>,
    checkpoints: VecDeque<CheckpointStats>,
    overview: CheckpointOverview,
    durations: VecDeque<u64>,
    sizes: VecDeque<u64>,
    written: VecDeque<u64>,
    alignments: VecDeque<u64>,
    in_flight: VecDeque<u64>,
    end_ms: Option<u64>,
}

/// A job's status, plan and checkpoint statistics, and its stream of updates.
#[derive(Debug)]
pub struct JobObserver {
    id: JobId,
    name: String,
    start_ms: u64,
    vertices: Vec<VertexInfo>,
    checkpoint_config: Option<CheckpointConfigInfo>,
    state: Mutex<State>,
    updates: broadcast::Sender<JobUpdate>,
}

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn push_bounded(v: &mut VecDeque<u64>, x: u64) {
    if v.len() == SUMMARY_WINDOW {
        v.pop_front();
    }
    v.push_back(x);
}

impl JobObserver {
    /// The observer of a job that is being deployed now.
    pub fn new(
        id: JobId,
        name: &str,
        vertices: Vec<VertexInfo>,
        checkpoint_config: Option<CheckpointConfigInfo>,
    ) -> Self {
        let now = wall_ms();
        let (updates, _) = broadcast::channel(UPDATE_BUFFER);
        JobObserver {
            id,
            name: name.to_string(),
            start_ms: now,
            vertices,
            checkpoint_config,
            state: Mutex::new(State {
                status: vec![(JobStatus::Created, now)],
                ..State::default()
            }),
            updates,
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it was submitted, in ms since the Unix epoch.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// When it reached a terminal status, if it did.
    pub fn end_ms(&self) -> Option<u64> {
        self.lock().end_ms
    }

    /// The job vertices.
    pub fn vertices(&self) -> &[VertexInfo] {
        &self.vertices
    }

    /// The vertex with this REST id.
    pub fn vertex(&self, id: &str) -> Option<&VertexInfo> {
        self.vertices.iter().find(|v| v.id == id)
    }

    /// How it checkpoints (`None`: it does not).
    pub fn checkpoint_config(&self) -> Option<&CheckpointConfigInfo> {
        self.checkpoint_config.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: still readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, kind: JobUpdateKind) {
        // No receivers is fine: nobody watches.
        let _ = self.updates.send(JobUpdate {
            timestamp_ms: wall_ms(),
            kind,
        });
    }

    /// The current status.
    pub fn status(&self) -> JobStatus {
        self.lock()
            .status
            .last()
            .map_or(JobStatus::Created, |s| s.0)
    }

    /// Every transition so far, oldest first, with its time (ms since the Unix epoch).
    pub fn status_history(&self) -> Vec<(JobStatus, u64)> {
        self.lock().status.clone()
    }

    /// Records a status change (ignored once the status is terminal, or if unchanged).
    pub(crate) fn set_status(&self, status: JobStatus) {
        {
            let mut s = self.lock();
            let current = s.status.last().map(|s| s.0);
            if current == Some(status) || current.is_some_and(JobStatus::is_terminal) {
                return;
            }
            let now = wall_ms();
            s.status.push((status, now));
            if status.is_terminal() {
                s.end_ms = Some(now);
                // Whatever was still in progress will not complete now.
                for c in s.checkpoints.iter_mut() {
                    if c.status == CheckpointStatus::InProgress {
                        c.status = CheckpointStatus::Failed;
                        c.failure_message = Some(format!("the job is {}", status.as_str()));
                    }
                }
                s.overview.in_progress = 0;
            }
        }
        self.send(JobUpdateKind::Status(status));
    }

    /// Records a failure the supervisor handled.
    pub(crate) fn exception(&self, record: &ExceptionRecord) {
        self.send(JobUpdateKind::Exception(record.clone()));
    }

    /// The coordinator triggered checkpoint `id`, which `subtasks` must acknowledge.
    pub(crate) fn checkpoint_triggered(
        &self,
        id: CheckpointId,
        kind: CheckpointKind,
        subtasks: usize,
    ) {
        {
            let mut s = self.lock();
            s.overview.triggered += 1;
            s.overview.in_progress += 1;
            if s.checkpoints.len() == CHECKPOINT_HISTORY {
                s.checkpoints.pop_back();
            }
            s.checkpoints
                .push_front(CheckpointStats::new(id, kind, wall_ms(), subtasks));
        }
        self.send(JobUpdateKind::CheckpointTriggered { id, kind });
    }

    /// A subtask's acknowledgement of checkpoint `id` was stored.
    pub(crate) fn checkpoint_acknowledged(&self, id: CheckpointId, ack: SubtaskCheckpointStats) {
        let mut s = self.lock();
        if let Some(c) = s.checkpoints.iter_mut().find(|c| c.id == id.0) {
            c.latest_ack_timestamp_ms = ack.ack_timestamp_ms;
            c.num_acknowledged_subtasks += 1;
            c.unaligned |= ack.unaligned;
            c.alignment_ms = c.alignment_ms.max(ack.alignment_ms);
            c.in_flight_bytes += ack.in_flight_bytes;
            c.subtasks.push(ack);
        }
    }

    /// Records a checkpoint event (completion, abort, restart, restore) and passes it on.
    pub(crate) fn event(&self, event: &JobEvent) {
        {
            let mut guard = self.lock();
            let s: &mut State = &mut guard;
            match event {
                JobEvent::CheckpointCompleted {
                    id,
                    kind,
                    unaligned,
                    duration_ms,
                    alignment_ms,
                    bytes,
                    shared_bytes,
                    is_final,
                    ..
                } => {
                    s.overview.completed += 1;
                    let index = s.checkpoints.iter().position(|c| c.id == id.0);
                    let pending = index
                        .is_some_and(|i| s.checkpoints[i].status == CheckpointStatus::InProgress);
                    let index = match index {
                        Some(i) => i,
                        None => {
                            // The final checkpoint is not triggered: it is made of final
                            // states.
                            if s.checkpoints.len() == CHECKPOINT_HISTORY {
                                s.checkpoints.pop_back();
                            }
                            let now = wall_ms();
                            let mut c = CheckpointStats::new(
                                *id,
                                *kind,
                                now.saturating_sub(*duration_ms),
                                0,
                            );
                            c.latest_ack_timestamp_ms = now;
                            s.checkpoints.push_front(c);
                            0
                        }
                    };
                    let c = &mut s.checkpoints[index];
                    c.status = CheckpointStatus::Completed;
                    c.is_final = *is_final;
                    c.unaligned |= *unaligned;
                    c.end_to_end_duration_ms = *duration_ms;
                    c.alignment_ms = c.alignment_ms.max(*alignment_ms);
                    c.state_size = bytes + shared_bytes;
                    c.checkpointed_size = *bytes;
                    let done = c.clone();
                    if pending {
                        s.overview.in_progress = s.overview.in_progress.saturating_sub(1);
                    }
                    push_bounded(&mut s.durations, done.end_to_end_duration_ms);
                    push_bounded(&mut s.sizes, done.state_size);
                    push_bounded(&mut s.written, done.checkpointed_size);
                    push_bounded(&mut s.alignments, done.alignment_ms);
                    push_bounded(&mut s.in_flight, done.in_flight_bytes);
                    if done.kind == CheckpointKind::Savepoint {
                        s.overview.latest_savepoint = Some(done);
                    } else {
                        s.overview.latest_completed = Some(done);
                    }
                }
                JobEvent::CheckpointAborted { id, reason } => {
                    s.overview.failed += 1;
                    if let Some(c) = s.checkpoints.iter_mut().find(|c| c.id == id.0) {
                        if c.status == CheckpointStatus::InProgress {
                            s.overview.in_progress = s.overview.in_progress.saturating_sub(1);
                        }
                        c.status = CheckpointStatus::Failed;
                        c.end_to_end_duration_ms = wall_ms().saturating_sub(c.trigger_timestamp_ms);
                        c.failure_message = Some(reason.clone());
                        let failed = c.clone();
                        s.overview.latest_failed = Some(failed);
                    }
                }
                JobEvent::Restart { .. } => {}
                JobEvent::Restored { checkpoint, .. } => {
                    if checkpoint.is_some() {
                        s.overview.restored += 1;
                    }
                    s.overview.latest_restored = Some(RestoreStats {
                        id: checkpoint.map(|c| c.0),
                        restore_timestamp_ms: wall_ms(),
                    });
                }
            }
        }
        self.send(JobUpdateKind::Event(event.clone()));
    }

    /// The checkpoint statistics now.
    pub fn checkpoints(&self) -> CheckpointOverview {
        let s = self.lock();
        let now = wall_ms();
        let mut o = s.overview.clone();
        o.history = s
            .checkpoints
            .iter()
            .cloned()
            .map(|mut c| {
                if c.status == CheckpointStatus::InProgress {
                    c.end_to_end_duration_ms = now.saturating_sub(c.trigger_timestamp_ms);
                }
                c
            })
            .collect();
        o.end_to_end_duration = Summary::of(&s.durations);
        o.state_size = Summary::of(&s.sizes);
        o.checkpointed_size = Summary::of(&s.written);
        o.alignment = Summary::of(&s.alignments);
        o.in_flight_bytes = Summary::of(&s.in_flight);
        o
    }

    /// One checkpoint of the history, by id.
    pub fn checkpoint(&self, id: u64) -> Option<CheckpointStats> {
        self.checkpoints().history.into_iter().find(|c| c.id == id)
    }

    /// A live stream of updates from now on. A reader that falls more than 1 024 updates
    /// behind misses the oldest ones (its next `recv` says how many).
    pub fn subscribe(&self) -> broadcast::Receiver<JobUpdate> {
        self.updates.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observer() -> JobObserver {
        JobObserver::new(JobId([7; 16]), "job", Vec::new(), None)
    }

    #[test]
    fn job_ids_are_32_hex_digits_and_parse_back() {
        let id = JobId::generate();
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(JobId::parse(&s), Ok(id));
        assert!(JobId::parse("abc").is_err());
        assert!(JobId::parse(&"g".repeat(32)).is_err());
        assert_ne!(JobId::generate(), JobId::generate());
        assert_eq!(vertex_id(id, 1), vertex_id(id, 1));
        assert_ne!(vertex_id(id, 1), vertex_id(id, 2));
        assert_eq!(vertex_id(id, 0).len(), 32);
    }

    #[test]
    fn status_transitions_are_recorded_until_a_terminal_one() {
        let o = observer();
        let mut rx = o.subscribe();
        o.set_status(JobStatus::Running);
        o.set_status(JobStatus::Running);
        o.set_status(JobStatus::Restarting);
        o.set_status(JobStatus::Running);
        o.set_status(JobStatus::Finished);
        o.set_status(JobStatus::Failed);
        let h: Vec<_> = o.status_history().into_iter().map(|s| s.0).collect();
        use JobStatus::*;
        assert_eq!(h, vec![Created, Running, Restarting, Running, Finished]);
        assert_eq!(o.status(), Finished);
        assert!(o.end_ms().is_some());
        let mut seen = Vec::new();
        while let Ok(u) = rx.try_recv() {
            seen.push(u.kind);
        }
        assert_eq!(
            seen,
            vec![
                JobUpdateKind::Status(Running),
                JobUpdateKind::Status(Restarting),
                JobUpdateKind::Status(Running),
                JobUpdateKind::Status(Finished),
            ]
        );
    }

    fn ack(subtask: usize, size: u64) -> SubtaskCheckpointStats {
        SubtaskCheckpointStats {
            vertex: 0,
            subtask,
            ack_timestamp_ms: 5,
            alignment_ms: subtask as u64,
            sync_ms: 1,
            async_ms: 2,
            state_size: size,
            in_flight_bytes: 10,
            unaligned: false,
        }
    }

    fn completed(id: u64, bytes: u64, shared: u64) -> JobEvent {
        JobEvent::CheckpointCompleted {
            id: CheckpointId(id),
            kind: CheckpointKind::Checkpoint,
            unaligned: false,
            duration_ms: id * 10,
            alignment_ms: 3,
            sync_ms: 1,
            async_ms: 2,
            bytes,
            shared_bytes: shared,
            is_final: false,
        }
    }

    #[test]
    fn checkpoint_statistics_follow_triggers_acks_completions_and_aborts() {
        let o = observer();
        o.checkpoint_triggered(CheckpointId(1), CheckpointKind::Checkpoint, 2);
        assert_eq!(o.checkpoints().in_progress, 1);
        assert_eq!(
            o.checkpoint(1).map(|c| c.status),
            Some(CheckpointStatus::InProgress)
        );
        o.checkpoint_acknowledged(CheckpointId(1), ack(0, 100));
        o.checkpoint_acknowledged(CheckpointId(1), ack(1, 50));
        o.event(&completed(1, 150, 20));
        o.checkpoint_triggered(CheckpointId(2), CheckpointKind::Savepoint, 2);
        o.event(&JobEvent::CheckpointAborted {
            id: CheckpointId(2),
            reason: "timeout".into(),
        });
        o.checkpoint_triggered(CheckpointId(3), CheckpointKind::Checkpoint, 2);
        o.event(&completed(3, 30, 150));
        let v = o.checkpoints();
        assert_eq!(
            (v.triggered, v.in_progress, v.completed, v.failed),
            (3, 0, 2, 1)
        );
        assert_eq!(
            v.history.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        let one = o.checkpoint(1).expect("checkpoint 1 in the history");
        assert_eq!(one.status, CheckpointStatus::Completed);
        assert_eq!(one.num_acknowledged_subtasks, 2);
        assert_eq!((one.state_size, one.checkpointed_size), (170, 150));
        assert_eq!(one.in_flight_bytes, 20);
        assert_eq!(one.alignment_ms, 3);
        assert_eq!(one.end_to_end_duration_ms, 10);
        let failed = v.latest_failed.expect("a failed checkpoint");
        assert_eq!(
            (failed.id, failed.failure_message.as_deref()),
            (2, Some("timeout"))
        );
        assert_eq!(v.latest_completed.map(|c| c.id), Some(3));
        assert_eq!(v.latest_savepoint, None);
        assert_eq!(
            v.end_to_end_duration,
            Summary {
                count: 2,
                min: 10,
                max: 30,
                avg: 20,
                p50: 10,
                p90: 30,
                p95: 30,
                p99: 30,
                p999: 30
            }
        );
        assert_eq!(v.state_size.max, 180);
    }

    #[test]
    fn the_history_keeps_the_newest_and_a_terminal_status_fails_what_is_pending() {
        let o = observer();
        for id in 1..=15 {
            o.checkpoint_triggered(CheckpointId(id), CheckpointKind::Checkpoint, 1);
            if id < 15 {
                o.event(&completed(id, 1, 0));
            }
        }
        let v = o.checkpoints();
        assert_eq!(v.history.len(), CHECKPOINT_HISTORY);
        assert_eq!(v.history[0].id, 15);
        assert_eq!(v.end_to_end_duration.count, 14);
        o.set_status(JobStatus::Canceled);
        let v = o.checkpoints();
        assert_eq!(v.in_progress, 0);
        assert_eq!(v.history[0].status, CheckpointStatus::Failed);
    }
}
