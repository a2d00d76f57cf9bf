//! The checkpoint coordinator's decisions, as plain functions over plain state (Arroyo's
//! `arroyo-state-protocol`, Flink's `CheckpointCoordinator`).
//!
//! [`CheckpointCoordinator`] knows the subtasks that must acknowledge every checkpoint and the
//! settings; it is told the time and the events (a tick, an acknowledgement, a decline, a
//! savepoint request) and answers with [`Decision`]s: trigger a checkpoint, complete one (publish
//! its manifest, then notify the sinks), abort one, discard old ones, fail the job. It performs
//! no I/O and reads no clock, so every rule is tested without actors, disks or sleeping. The
//! coordinator actor (a later step) applies the decisions.
//!
//! Rules (Flink's):
//! * a checkpoint is triggered every `interval`, but never sooner than `min_pause` after the last
//!   completion, and never while `max_concurrent` checkpoints are pending (one, by default; an
//!   unaligned checkpoint is always the only one);
//! * a checkpoint completes when every subtask acknowledged it; it then **subsumes** every older
//!   pending checkpoint (they are aborted) and completed checkpoints beyond `retained` are
//!   discarded;
//! * a checkpoint is aborted when a subtask declines it or when it is not complete after
//!   `timeout`; more than `tolerable_failures` consecutive failures fail the job;
//! * checkpoint ids only increase;
//! * checkpoints go on after some subtasks finished (Flink's FLIP-147): a finished subtask is
//!   no longer waited for, and its final state stands in for its acknowledgement of every
//!   checkpoint it had not acknowledged yet; periodic checkpoints stop only once no source
//!   runs any more (nothing could inject a barrier), until the job's final checkpoint.

use crate::dataplane::message::{BarrierAlignment, CheckpointKind};
use crate::types::CheckpointId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Exactly-once or at-least-once checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointingMode {
    /// Barriers are aligned (or unaligned): every record is in exactly one checkpoint.
    #[default]
    ExactlyOnce,
    /// Barriers are only counted: after a restore some records are processed again.
    AtLeastOnce,
}

/// Checkpoint settings (Flink's `CheckpointConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSettings {
    /// Time between two checkpoint triggers.
    pub interval: Duration,
    /// Exactly-once or at-least-once.
    pub mode: CheckpointingMode,
    /// Unaligned barriers (exactly-once only).
    pub unaligned: bool,
    /// An aligned checkpoint still aligning after this long turns unaligned (exactly-once
    /// only); `None` never.
    pub aligned_timeout: Option<Duration>,
    /// A checkpoint not complete after this long is aborted.
    pub timeout: Duration,
    /// The least time between a completion and the next trigger.
    pub min_pause: Duration,
    /// Checkpoints pending at once (Flink's `maxConcurrentCheckpoints`, default 1).
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated before the job fails (default 0).
    pub tolerable_failures: u32,
    /// Completed checkpoints kept (default 1).
    pub retained: usize,
    /// Incremental checkpoints of keyed state (Flink's `execution.checkpointing.incremental`,
    /// default off): each checkpoint writes only the key groups, and within them the keys,
    /// that changed since the last one; the rest is shared with earlier checkpoints. See
    /// [`incremental`](crate::checkpoint::incremental). Savepoints are always whole.
    pub incremental: bool,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            interval: Duration::from_secs(10),
            mode: CheckpointingMode::ExactlyOnce,
            unaligned: false,
            aligned_timeout: None,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 1,
            incremental: false,
        }
    }
}

/// Identifies a subtask that acknowledges checkpoints: (job vertex, subtask index).
pub type TaskRef = (usize, usize);

/// Why a checkpoint was aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    /// Not complete within the timeout.
    Timeout,
    /// A subtask declined it (with its reason).
    Declined {
        /// The subtask.
        task: TaskRef,
        /// What it said.
        reason: String,
    },
    /// A newer checkpoint completed first.
    Subsumed(CheckpointId),
    /// The job (or its region) restarted while it was pending.
    Restart,
    /// Every subtask acknowledged, but the store could not publish it (its error).
    NotStored(String),
}

/// What the coordinator decided; applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Inject barriers for a new checkpoint or savepoint at the sources.
    Trigger {
        /// Its id.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// How subtasks align its barriers.
        alignment: BarrierAlignment,
    },
    /// Every subtask acknowledged: publish the manifest atomically, then notify completion
    /// (two-phase-commit sinks commit). The caller reports the outcome with
    /// [`CheckpointCoordinator::published`] or [`CheckpointCoordinator::publish_failed`]:
    /// only a published checkpoint counts as completed (resets the failure count, may
    /// discard older ones).
    Complete {
        /// The checkpoint.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
    },
    /// Give up a pending checkpoint: cancel markers go out so nobody keeps aligning.
    Abort {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: AbortReason,
    },
    /// Delete these completed checkpoints from the store (beyond the retained number).
    Discard(Vec<CheckpointId>),
    /// Too many consecutive failures: fail the job.
    FailJob(String),
    /// The oldest queued savepoint request cannot be served (the job failed, or its sources
    /// finished): answer it with this reason.
    RefuseSavepoint(String),
}

/// What became of a savepoint request ([`CheckpointCoordinator::request_savepoint`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SavepointRequest {
    /// Triggered now.
    Triggered(Decision),
    /// A checkpoint is pending: the savepoint starts as soon as the pending-checkpoint limit
    /// allows, ahead of periodic checkpoints (as Flink queues it). Its trigger (or a
    /// [`Decision::RefuseSavepoint`]) comes out of a later call, in request order.
    Queued,
    /// It cannot be taken, for this reason.
    Refused(String),
}

#[derive(Debug, Clone)]
struct Pending {
    kind: CheckpointKind,
    started_ms: u64,
    waiting: BTreeSet<TaskRef>,
}

/// The coordinator's state; time is milliseconds on any monotonic clock the caller chooses.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::checkpoint::coordinator::{CheckpointCoordinator, CheckpointSettings, Decision};
/// use std::time::Duration;
/// let settings = CheckpointSettings { interval: Duration::from_millis(100), ..Default::default() };
/// let mut c = CheckpointCoordinator::new(settings, vec![(0, 0), (1, 0)], 0);
/// assert!(c.tick(50).is_empty());
/// let id = match c.tick(100).as_slice() {
///     [Decision::Trigger { id, .. }] => *id,
///     other => panic!("{other:?}"),
/// };
/// assert!(c.acknowledge(id, (0, 0), 120).is_empty());
/// assert!(matches!(c.acknowledge(id, (1, 0), 130).as_slice(), [Decision::Complete { .. }]));
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointCoordinator {
    settings: CheckpointSettings,
    tasks: BTreeSet<TaskRef>,
    next_id: u64,
    pending: BTreeMap<CheckpointId, Pending>,
    completed: VecDeque<CheckpointId>,
    last_trigger_ms: u64,
    last_completion_ms: Option<u64>,
    consecutive_failures: u32,
    failed: bool,
    /// Subtasks that reached end of input: not waited for; the caller stores their final
    /// state in every checkpoint they did not acknowledge themselves.
    finished: BTreeSet<TaskRef>,
    /// Some source still runs (a periodic checkpoint can be injected).
    sources_running: bool,
    /// Savepoint requests waiting for a pending checkpoint to end.
    queued_savepoints: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CheckpointCoordinator {
    /// A coordinator for a job whose subtasks `tasks` acknowledge every checkpoint, started at
    /// `now_ms`. Ids continue after `last_id` (0 for a fresh job; a restored job continues
    /// after its checkpoint's id).
    pub fn new(settings: CheckpointSettings, tasks: Vec<TaskRef>, now_ms: u64) -> Self {
        CheckpointCoordinator {
            settings,
            tasks: tasks.into_iter().collect(),
            next_id: 1,
            pending: BTreeMap::new(),
            completed: VecDeque::new(),
            last_trigger_ms: now_ms,
            last_completion_ms: None,
            consecutive_failures: 0,
            failed: false,
            finished: BTreeSet::new(),
            sources_running: true,
            queued_savepoints: 0,
        }
    }

    /// Starts ids after `newest`, the newest checkpoint already in the store (of an earlier
    /// run), so a fresh job never overwrites an old checkpoint and "latest" stays its own.
    pub fn ids_after(mut self, newest: CheckpointId) -> Self {
        self.next_id = self.next_id.max(newest.0.saturating_add(1));
        self
    }

    /// Continues ids after `last` (after a restore), so ids only increase across restarts.
    /// A restored checkpoint is retained and later discarded like the job's own; a restored
    /// savepoint is left alone.
    pub fn continue_after(mut self, last: CheckpointId, kind: CheckpointKind) -> Self {
        self.next_id = self.next_id.max(last.0.saturating_add(1));
        if kind == CheckpointKind::Checkpoint {
            self.completed.push_back(last);
        }
        self
    }

    /// The settings.
    pub fn settings(&self) -> &CheckpointSettings {
        &self.settings
    }

    /// Ids of the pending checkpoints, oldest first.
    pub fn pending(&self) -> Vec<CheckpointId> {
        self.pending.keys().copied().collect()
    }

    /// The retained completed checkpoints, oldest first.
    pub fn completed(&self) -> Vec<CheckpointId> {
        self.completed.iter().copied().collect()
    }

    fn alignment(&self, kind: CheckpointKind) -> BarrierAlignment {
        match (self.settings.mode, kind) {
            (_, CheckpointKind::Savepoint) => BarrierAlignment::Aligned,
            (CheckpointingMode::AtLeastOnce, _) => BarrierAlignment::AtLeastOnce,
            (CheckpointingMode::ExactlyOnce, _) if self.settings.unaligned => {
                BarrierAlignment::Unaligned
            }
            (CheckpointingMode::ExactlyOnce, _) => BarrierAlignment::Aligned,
        }
    }

    /// When the next trigger is allowed, if nothing is in the way.
    fn next_trigger_ms(&self) -> u64 {
        let by_interval = self
            .last_trigger_ms
            .saturating_add(ms(self.settings.interval));
        let by_pause = self
            .last_completion_ms
            .map_or(0, |c| c.saturating_add(ms(self.settings.min_pause)));
        by_interval.max(by_pause)
    }

    fn may_trigger(&self) -> bool {
        self.trigger_impossible().is_none() && self.below_pending_limit()
    }

    /// Room for one more pending checkpoint (one unaligned checkpoint at a time).
    fn below_pending_limit(&self) -> bool {
        let limit = if self.settings.unaligned {
            1
        } else {
            self.settings.max_concurrent.max(1)
        };
        self.pending.len() < limit
    }

    /// Why no checkpoint or savepoint can be triggered at all any more, if so.
    fn trigger_impossible(&self) -> Option<&'static str> {
        if self.failed {
            Some("the job's checkpoints failed too often; it is failing")
        } else if !self.sources_running || self.running().next().is_none() {
            Some("the job's sources finished; a savepoint needs running sources")
        } else {
            None
        }
    }

    /// The earliest time [`tick`](Self::tick) has something to do: a trigger or a timeout.
    pub fn next_wakeup(&self) -> Option<u64> {
        let timeout = self
            .pending
            .values()
            .map(|p| p.started_ms.saturating_add(ms(self.settings.timeout)))
            .min();
        let trigger = if self.queued_savepoints > 0
            && (self.below_pending_limit() || self.trigger_impossible().is_some())
        {
            // A queued savepoint can start (or must be refused): at once.
            Some(0)
        } else {
            self.may_trigger().then(|| self.next_trigger_ms())
        };
        match (timeout, trigger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The subtasks a new checkpoint waits for: those not finished.
    fn running(&self) -> impl Iterator<Item = &TaskRef> {
        self.tasks.iter().filter(|t| !self.finished.contains(t))
    }

    /// The subtasks that finished (their final state stands in for their acknowledgement).
    pub fn finished(&self) -> &BTreeSet<TaskRef> {
        &self.finished
    }

    fn start(&mut self, kind: CheckpointKind, now_ms: u64) -> Decision {
        let id = CheckpointId(self.next_id);
        self.next_id += 1;
        self.last_trigger_ms = now_ms;
        self.pending.insert(
            id,
            Pending {
                kind,
                started_ms: now_ms,
                waiting: self.running().copied().collect(),
            },
        );
        Decision::Trigger {
            id,
            kind,
            alignment: self.alignment(kind),
        }
    }

    fn fail(&mut self, id: CheckpointId, reason: AbortReason, out: &mut Vec<Decision>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        out.push(Decision::Abort { id, reason });
        // A failed savepoint does not count against periodic checkpoints (as in Flink).
        if p.kind == CheckpointKind::Checkpoint {
            self.count_failure(id, out);
        }
    }

    /// Time passed: abort timed-out checkpoints, trigger a new one if due.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        let timeout = ms(self.settings.timeout);
        let expired: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms >= p.started_ms.saturating_add(timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.fail(id, AbortReason::Timeout, &mut out);
        }
        self.serve_queued_savepoints(now_ms, &mut out);
        if self.may_trigger() && now_ms >= self.next_trigger_ms() {
            out.push(self.start(CheckpointKind::Checkpoint, now_ms));
        }
        out
    }

    /// A savepoint was requested: triggered at once, aligned, whatever the interval and the
    /// minimum pause; queued while a checkpoint is pending (or while the job restarts:
    /// `restarting`), refused when the job failed or its sources finished.
    pub fn request_savepoint(&mut self, now_ms: u64, restarting: bool) -> SavepointRequest {
        if let Some(why) = self.trigger_impossible() {
            return SavepointRequest::Refused(why.into());
        }
        if restarting || self.queued_savepoints > 0 || !self.below_pending_limit() {
            self.queued_savepoints += 1;
            return SavepointRequest::Queued;
        }
        SavepointRequest::Triggered(self.start(CheckpointKind::Savepoint, now_ms))
    }

    /// Savepoint requests queued behind a pending checkpoint.
    pub fn queued_savepoints(&self) -> usize {
        self.queued_savepoints
    }

    /// Starts the oldest queued savepoint if it may start now, or refuses every queued one
    /// if none ever can.
    fn serve_queued_savepoints(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        if self.queued_savepoints == 0 {
            return;
        }
        if let Some(why) = self.trigger_impossible() {
            for _ in 0..std::mem::take(&mut self.queued_savepoints) {
                out.push(Decision::RefuseSavepoint(why.into()));
            }
        } else if self.below_pending_limit() {
            self.queued_savepoints -= 1;
            out.push(self.start(CheckpointKind::Savepoint, now_ms));
        }
    }

    /// Subtask `task` snapshotted checkpoint `id`. Completes it when it was the last one.
    pub fn acknowledge(&mut self, id: CheckpointId, task: TaskRef, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        let Some(p) = self.pending.get_mut(&id) else {
            return out; // aborted, subsumed or unknown: a late acknowledgement
        };
        p.waiting.remove(&task);
        if p.waiting.is_empty() {
            self.complete(id, &mut out);
        }
        self.serve_queued_savepoints(now_ms, &mut out);
        out
    }

    /// Publishes pending checkpoint `id`, which nobody is waited for any more.
    fn complete(&mut self, id: CheckpointId, out: &mut Vec<Decision>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let kind = p.kind;
        out.push(Decision::Complete { id, kind });
        // A completed checkpoint subsumes every older pending one.
        let older: Vec<CheckpointId> = self.pending.range(..id).map(|(i, _)| *i).collect();
        for old in older {
            self.pending.remove(&old);
            out.push(Decision::Abort {
                id: old,
                reason: AbortReason::Subsumed(id),
            });
        }
        // Completed only once published (`published`): a checkpoint the store refused must
        // neither reset the failure count nor push a good one out of retention.
    }

    /// Checkpoint `id`, decided complete, is stored durably: it counts as completed (the
    /// failure count resets, the minimum pause starts) and older checkpoints beyond the
    /// retained number are discarded.
    pub fn published(
        &mut self,
        id: CheckpointId,
        kind: CheckpointKind,
        now_ms: u64,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        self.consecutive_failures = 0;
        self.last_completion_ms = Some(now_ms);
        if kind == CheckpointKind::Savepoint {
            // Savepoints belong to the user: never discarded by retention (as in Flink).
            return out;
        }
        self.completed.push_back(id);
        let keep = self.settings.retained.max(1);
        let mut discard = Vec::new();
        while self.completed.len() > keep {
            if let Some(old) = self.completed.pop_front() {
                discard.push(old);
            }
        }
        if !discard.is_empty() {
            out.push(Decision::Discard(discard));
        }
        out
    }

    /// Checkpoint `id`, decided complete, could not be stored: it is aborted and counts as
    /// a failed checkpoint (a savepoint does not count), which fails the job beyond the
    /// tolerated number. Nothing is discarded: the last published checkpoint stays.
    pub fn publish_failed(
        &mut self,
        id: CheckpointId,
        kind: CheckpointKind,
        error: &str,
    ) -> Vec<Decision> {
        let mut out = vec![Decision::Abort {
            id,
            reason: AbortReason::NotStored(error.to_string()),
        }];
        if kind == CheckpointKind::Checkpoint {
            self.count_failure(id, &mut out);
        }
        out
    }

    fn count_failure(&mut self, id: CheckpointId, out: &mut Vec<Decision>) {
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.settings.tolerable_failures && !self.failed {
            self.failed = true;
            out.push(Decision::FailJob(format!(
                "{} consecutive checkpoints failed (tolerable: {}); the last: {id}",
                self.consecutive_failures, self.settings.tolerable_failures
            )));
        }
    }

    /// Subtask `task` could not snapshot checkpoint `id`.
    pub fn decline(&mut self, id: CheckpointId, task: TaskRef, reason: &str) -> Vec<Decision> {
        let mut out = Vec::new();
        self.fail(
            id,
            AbortReason::Declined {
                task,
                reason: reason.to_string(),
            },
            &mut out,
        );
        out
    }

    /// Subtask `task` reached end of input and handed over its final state. It is not waited
    /// for any more: its final state stands in for its acknowledgement of every pending
    /// checkpoint (consistent, because it saw no barrier of those before its inputs ended, so
    /// everything it did precedes them), which may complete them.
    pub fn task_finished(&mut self, task: TaskRef, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        if !self.tasks.contains(&task) || !self.finished.insert(task) {
            return out;
        }
        let ids: Vec<CheckpointId> = self.pending.keys().copied().collect();
        for id in ids {
            let done = self.pending.get_mut(&id).is_some_and(|p| {
                p.waiting.remove(&task);
                p.waiting.is_empty()
            });
            if done {
                self.complete(id, &mut out);
            }
        }
        self.serve_queued_savepoints(now_ms, &mut out);
        out
    }

    /// These subtasks run again (their region was deployed again after a failure): they are
    /// waited for again.
    pub fn tasks_running(&mut self, tasks: impl IntoIterator<Item = TaskRef>) {
        for t in tasks {
            self.finished.remove(&t);
        }
        // The failover that too many failed checkpoints asked for happened: checkpoints go
        // on, counting failures afresh (else a job failed over once by its checkpoints would
        // never checkpoint again).
        self.failed = false;
        self.consecutive_failures = 0;
    }

    /// Whether some source still runs: without one no barrier can be injected, so periodic
    /// checkpoints (and savepoints) wait, until the job's final checkpoint.
    pub fn set_sources_running(&mut self, running: bool) {
        self.sources_running = running;
    }

    /// Whether every subtask finished (time for the final checkpoint).
    pub fn all_finished(&self) -> bool {
        self.running().next().is_none()
    }

    /// Every subtask finished: the id of the job's final checkpoint, which holds their final
    /// state (a sink's last transactions).
    pub fn final_checkpoint(&mut self, now_ms: u64) -> CheckpointId {
        let id = CheckpointId(self.next_id);
        self.next_id += 1;
        self.pending.clear();
        self.last_completion_ms = Some(now_ms);
        self.completed.push_back(id);
        id
    }

    /// The job restarts: pending checkpoints are abandoned (without counting as failures).
    pub fn reset_pending(&mut self, now_ms: u64) -> Vec<Decision> {
        let ids: Vec<CheckpointId> = self.pending.keys().copied().collect();
        self.pending.clear();
        self.last_trigger_ms = now_ms;
        ids.into_iter()
            .map(|id| Decision::Abort {
                id,
                reason: AbortReason::Restart,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(interval: u64) -> CheckpointSettings {
        CheckpointSettings {
            interval: Duration::from_millis(interval),
            timeout: Duration::from_millis(1_000),
            ..Default::default()
        }
    }

    fn trigger_id(d: &[Decision]) -> CheckpointId {
        match d {
            [Decision::Trigger { id, .. }] => *id,
            other => panic!("expected one trigger, got {other:?}"),
        }
    }

    const A: TaskRef = (0, 0);
    const B: TaskRef = (1, 0);

    /// `out`, then what publishing each completed checkpoint in it successfully decides (the
    /// actor reports a publish right after the `Complete`).
    fn publish_all(c: &mut CheckpointCoordinator, out: Vec<Decision>, now: u64) -> Vec<Decision> {
        let mut all = Vec::new();
        for d in out {
            let next = match &d {
                Decision::Complete { id, kind } => c.published(*id, *kind, now),
                _ => Vec::new(),
            };
            all.push(d);
            all.extend(next);
        }
        all
    }

    #[test]
    fn triggers_on_the_interval_one_at_a_time() {
        let mut c = CheckpointCoordinator::new(settings(100), vec![A, B], 0);
        assert_eq!(c.next_wakeup(), Some(100));
        assert!(c.tick(99).is_empty());
        let id = trigger_id(&c.tick(100));
        assert_eq!(id, CheckpointId(1));
        // Pending: no second trigger, whatever the interval says.
        assert!(c.tick(250).is_empty());
        assert_eq!(
            c.next_wakeup(),
            Some(1_100),
            "only the timeout is left to wait for"
        );
        assert!(c.acknowledge(id, A, 260).is_empty());
        assert_eq!(
            c.acknowledge(id, B, 270),
            vec![Decision::Complete {
                id,
                kind: CheckpointKind::Checkpoint
            }]
        );
        // The interval is measured from the last trigger: 200 is overdue, trigger now.
        assert_eq!(trigger_id(&c.tick(270)), CheckpointId(2));
    }

    #[test]
    fn min_pause_counts_from_the_last_completion() {
        let mut s = settings(100);
        s.min_pause = Duration::from_millis(500);
        let mut c = CheckpointCoordinator::new(s, vec![A], 0);
        let id = trigger_id(&c.tick(100));
        let out = c.acknowledge(id, A, 150);
        publish_all(&mut c, out, 150);
        assert!(c.tick(600).is_empty());
        assert_eq!(c.next_wakeup(), Some(650));
        assert_eq!(trigger_id(&c.tick(650)), CheckpointId(2));
    }

    #[test]
    fn timeouts_and_declines_fail_the_job_beyond_the_tolerance() {
        let mut s = settings(100);
        s.tolerable_failures = 1;
        let mut c = CheckpointCoordinator::new(s, vec![A, B], 0);
        let id1 = trigger_id(&c.tick(100));
        let out = c.tick(1_100);
        assert_eq!(
            out[0],
            Decision::Abort {
                id: id1,
                reason: AbortReason::Timeout
            }
        );
        let id2 = trigger_id(&out[1..]);
        let out = c.decline(id2, B, "disk full");
        assert!(matches!(out[0], Decision::Abort { .. }));
        assert!(matches!(&out[1], Decision::FailJob(m) if m.contains("2 consecutive")));
        assert!(c.tick(10_000).is_empty(), "a failed job triggers nothing");
    }

    #[test]
    fn a_completion_resets_the_failure_count() {
        let mut s = settings(100);
        s.tolerable_failures = 1;
        let mut c = CheckpointCoordinator::new(s, vec![A], 0);
        let id = trigger_id(&c.tick(100));
        assert_eq!(c.decline(id, A, "x").len(), 1);
        let id = trigger_id(&c.tick(200));
        let out = c.acknowledge(id, A, 210);
        publish_all(&mut c, out, 210);
        let id = trigger_id(&c.tick(310));
        assert_eq!(
            c.decline(id, A, "y").len(),
            1,
            "one failure again: tolerated"
        );
    }

    /// A checkpoint decided complete that the store could not publish is a failure: aborted,
    /// counted (beyond the tolerance the job fails), and the last published checkpoint is not
    /// discarded for it. After the failover, checkpoints go on with the count reset.
    #[test]
    fn a_checkpoint_the_store_refused_is_a_failure_and_discards_nothing() {
        let mut s = settings(100);
        s.retained = 1;
        let mut c = CheckpointCoordinator::new(s, vec![A], 0);
        let id1 = trigger_id(&c.tick(100));
        let out = c.acknowledge(id1, A, 110);
        assert!(
            publish_all(&mut c, out, 110).len() == 1,
            "nothing to discard yet"
        );
        let id2 = trigger_id(&c.tick(210));
        assert_eq!(
            c.acknowledge(id2, A, 220),
            vec![Decision::Complete {
                id: id2,
                kind: CheckpointKind::Checkpoint
            }]
        );
        let out = c.publish_failed(id2, CheckpointKind::Checkpoint, "no space left");
        assert_eq!(
            out[0],
            Decision::Abort {
                id: id2,
                reason: AbortReason::NotStored("no space left".into())
            }
        );
        assert!(matches!(&out[1], Decision::FailJob(m) if m.contains("1 consecutive")));
        assert_eq!(out.len(), 2, "checkpoint {id1} is not discarded: {out:?}");
        assert_eq!(c.completed(), vec![id1]);
        assert!(c.tick(10_000).is_empty(), "failing: nothing triggered");
        // The failover redeployed the tasks: checkpoints go on.
        c.tasks_running([A]);
        let id3 = trigger_id(&c.tick(10_100));
        let out = c.acknowledge(id3, A, 10_110);
        let out = publish_all(&mut c, out, 10_110);
        assert_eq!(out.last(), Some(&Decision::Discard(vec![id1])));
        // A refused savepoint fails nothing.
        let out = c.publish_failed(CheckpointId(99), CheckpointKind::Savepoint, "x");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn newer_completions_subsume_older_pending_and_old_ones_are_discarded() {
        let mut s = settings(100);
        s.max_concurrent = 2;
        s.retained = 2;
        let mut c = CheckpointCoordinator::new(s, vec![A, B], 0);
        let id1 = trigger_id(&c.tick(100));
        let id2 = trigger_id(&c.tick(200));
        assert!(c.tick(300).is_empty(), "two pending: the limit");
        c.acknowledge(id2, A, 310);
        let out = c.acknowledge(id2, B, 320);
        assert!(c.published(id2, CheckpointKind::Checkpoint, 320).is_empty());
        assert_eq!(
            out,
            vec![
                Decision::Complete {
                    id: id2,
                    kind: CheckpointKind::Checkpoint
                },
                Decision::Abort {
                    id: id1,
                    reason: AbortReason::Subsumed(id2)
                }
            ]
        );
        assert!(
            c.acknowledge(id1, A, 330).is_empty(),
            "late ack of a subsumed one"
        );
        for t in [400, 500] {
            let id = trigger_id(&c.tick(t));
            c.acknowledge(id, A, t + 1);
            let out = c.acknowledge(id, B, t + 2);
            let out = publish_all(&mut c, out, t + 2);
            if t == 500 {
                assert_eq!(out.last(), Some(&Decision::Discard(vec![id2])));
            }
        }
        assert_eq!(c.completed(), vec![CheckpointId(3), CheckpointId(4)]);
    }

    #[test]
    fn alignment_follows_the_mode_and_savepoints_are_aligned() {
        let mut s = settings(100);
        s.unaligned = true;
        let mut c = CheckpointCoordinator::new(s.clone(), vec![A], 0);
        assert!(matches!(
            c.tick(100).as_slice(),
            [Decision::Trigger {
                alignment: BarrierAlignment::Unaligned,
                ..
            }]
        ));
        assert_eq!(
            c.request_savepoint(110, false),
            SavepointRequest::Queued,
            "an unaligned checkpoint is pending"
        );
        // Its completion starts the queued savepoint, aligned.
        assert!(matches!(
            c.acknowledge(CheckpointId(1), A, 120).as_slice(),
            [
                Decision::Complete { .. },
                Decision::Trigger {
                    kind: CheckpointKind::Savepoint,
                    alignment: BarrierAlignment::Aligned,
                    ..
                }
            ]
        ));
        s.mode = CheckpointingMode::AtLeastOnce;
        let mut c = CheckpointCoordinator::new(s, vec![A], 0);
        assert!(matches!(
            c.tick(100).as_slice(),
            [Decision::Trigger {
                alignment: BarrierAlignment::AtLeastOnce,
                ..
            }]
        ));
    }

    #[test]
    fn ids_only_increase_across_a_restore() {
        let mut c = CheckpointCoordinator::new(settings(100), vec![A], 0)
            .continue_after(CheckpointId(41), CheckpointKind::Checkpoint);
        assert_eq!(trigger_id(&c.tick(100)), CheckpointId(42));
        let abandoned = c.reset_pending(150);
        assert_eq!(abandoned.len(), 1);
        assert_eq!(trigger_id(&c.tick(250)), CheckpointId(43));
    }

    #[test]
    fn a_fresh_job_numbers_after_the_store_and_discards_only_its_own() {
        let mut c =
            CheckpointCoordinator::new(settings(100), vec![A], 0).ids_after(CheckpointId(7));
        let id = trigger_id(&c.tick(100));
        assert_eq!(id, CheckpointId(8));
        // Retained 1: nothing older of this job to discard; checkpoint 7 is another run's.
        let out = c.acknowledge(id, A, 110);
        assert!(
            !out.iter().any(|d| matches!(d, Decision::Discard(_))),
            "{out:?}"
        );
    }

    #[test]
    fn checkpoints_go_on_after_a_subtask_finished() {
        const C: TaskRef = (2, 0);
        let mut c = CheckpointCoordinator::new(settings(100), vec![A, B, C], 0);
        let id1 = trigger_id(&c.tick(100));
        assert!(c.acknowledge(id1, A, 110).is_empty());
        // B finishes before its barrier came: its final state is its acknowledgement.
        assert!(c.task_finished(B, 120).is_empty());
        assert_eq!(
            c.acknowledge(id1, C, 130),
            vec![Decision::Complete {
                id: id1,
                kind: CheckpointKind::Checkpoint
            }]
        );
        // The next checkpoint does not wait for B at all.
        let id2 = trigger_id(&c.tick(230));
        c.acknowledge(id2, A, 240);
        assert!(matches!(
            c.acknowledge(id2, C, 250).as_slice(),
            [Decision::Complete { .. }, ..]
        ));
        // A finishing completes the pending checkpoint that waited only for it.
        let id3 = trigger_id(&c.tick(350));
        c.acknowledge(id3, C, 360);
        assert!(matches!(
            c.task_finished(A, 370).as_slice(),
            [Decision::Complete { id, .. }, ..] if *id == id3
        ));
        assert!(!c.all_finished());
        // Once no source runs, nothing is triggered until the final checkpoint.
        c.set_sources_running(false);
        assert!(c.tick(10_000).is_empty());
        assert!(matches!(
            c.request_savepoint(10_000, false),
            SavepointRequest::Refused(_)
        ));
        assert!(c.task_finished(C, 10_010).is_empty());
        assert!(c.all_finished());
        // A region deployed again is waited for again.
        c.tasks_running([A, B]);
        c.set_sources_running(true);
        let id4 = trigger_id(&c.tick(10_100));
        c.acknowledge(id4, A, 10_110);
        assert!(
            c.acknowledge(id4, B, 10_120)
                .iter()
                .any(|d| matches!(d, Decision::Complete { .. }))
        );
    }

    #[test]
    fn savepoints_are_never_discarded_by_retention() {
        let mut c = CheckpointCoordinator::new(settings(100), vec![A], 0)
            .continue_after(CheckpointId(3), CheckpointKind::Savepoint);
        let sp = match c.request_savepoint(0, false) {
            SavepointRequest::Triggered(Decision::Trigger { id, .. }) => id,
            other => panic!("{other:?}"),
        };
        let out = c.acknowledge(sp, A, 10);
        let out = publish_all(&mut c, out, 10);
        assert!(
            !out.iter().any(|d| matches!(d, Decision::Discard(_))),
            "{out:?}"
        );
        let id = trigger_id(&c.tick(200));
        let out = c.acknowledge(id, A, 210);
        let out = publish_all(&mut c, out, 210);
        let id2 = trigger_id(&c.tick(400));
        let out2 = c.acknowledge(id2, A, 410);
        let out2 = publish_all(&mut c, out2, 410);
        // Only the periodic checkpoint is discarded, never the savepoints 3 and `sp`.
        assert!(
            !out.iter().any(|d| matches!(d, Decision::Discard(_))),
            "{out:?}"
        );
        assert!(out2.contains(&Decision::Discard(vec![id])), "{out2:?}");
    }

    /// A savepoint asked for while a checkpoint is pending waits for it (Flink queues it) and
    /// starts before the next periodic checkpoint, whatever the minimum pause; one asked for
    /// during a restart starts on the next tick; queued ones are refused once the sources
    /// finished.
    #[test]
    fn savepoints_queue_behind_pending_checkpoints() {
        let mut s = settings(100);
        s.min_pause = Duration::from_millis(1_000);
        let mut c = CheckpointCoordinator::new(s, vec![A, B], 0);
        let id1 = trigger_id(&c.tick(100));
        assert_eq!(c.request_savepoint(105, false), SavepointRequest::Queued);
        assert_eq!(c.request_savepoint(106, false), SavepointRequest::Queued);
        assert_eq!(c.queued_savepoints(), 2);
        assert!(c.acknowledge(id1, A, 110).is_empty());
        let out = c.acknowledge(id1, B, 120);
        let sp1 = match out.as_slice() {
            [
                Decision::Complete { .. },
                Decision::Trigger {
                    id,
                    kind: CheckpointKind::Savepoint,
                    ..
                },
            ] => *id,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            c.next_wakeup(),
            Some(120 + 1_000),
            "only the timeout is due"
        );
        c.acknowledge(sp1, A, 130);
        let out = c.acknowledge(sp1, B, 140);
        assert!(
            matches!(
                out.last(),
                Some(Decision::Trigger {
                    kind: CheckpointKind::Savepoint,
                    ..
                })
            ),
            "the second queued savepoint starts next: {out:?}"
        );
        assert_eq!(c.queued_savepoints(), 0);

        // During a restart: queued, started by the next tick.
        let mut c = CheckpointCoordinator::new(settings(100), vec![A], 0);
        assert_eq!(c.request_savepoint(10, true), SavepointRequest::Queued);
        assert_eq!(c.next_wakeup(), Some(0));
        assert!(matches!(
            c.tick(20).as_slice(),
            [Decision::Trigger {
                kind: CheckpointKind::Savepoint,
                ..
            }]
        ));

        // Sources finished while one was queued: refused.
        let mut c = CheckpointCoordinator::new(settings(100), vec![A], 0);
        let _ = trigger_id(&c.tick(100));
        assert_eq!(c.request_savepoint(110, false), SavepointRequest::Queued);
        c.set_sources_running(false);
        assert!(matches!(
            c.tick(120).as_slice(),
            [Decision::RefuseSavepoint(why)] if why.contains("sources finished")
        ));
    }
}
