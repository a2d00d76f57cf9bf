//! What a job reports: the live `JobMetrics` the supervisor keeps up to date across
//! restarts, and the [`JobResult`] of a job that ended well.

use crate::runtime::metrics::{
    EXCEPTION_HISTORY, ExceptionRecord, JobMetricsSnapshot, SubtaskMetrics,
};
use crate::runtime::observer::JobObserver;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The live metrics of a job's subtasks (replaced on every restart).
#[derive(Debug)]
pub(crate) struct JobMetrics {
    started: Instant,
    subtasks: std::sync::RwLock<Vec<Arc<SubtaskMetrics>>>,
    pub(crate) restarts: std::sync::atomic::AtomicU32,
    /// The newest failures and what was done about them (written by the supervisor, rarely).
    exceptions: std::sync::Mutex<VecDeque<ExceptionRecord>>,
    /// Status, checkpoint statistics and live updates.
    pub(crate) observer: Arc<JobObserver>,
}

impl JobMetrics {
    /// Metrics of a job starting now with these subtasks.
    pub(crate) fn new(subtasks: Vec<Arc<SubtaskMetrics>>, observer: Arc<JobObserver>) -> Self {
        JobMetrics {
            observer,
            started: Instant::now(),
            subtasks: std::sync::RwLock::new(subtasks),
            restarts: Default::default(),
            exceptions: Default::default(),
        }
    }

    /// Records a failure the supervisor handled (the oldest beyond the history size go).
    pub(crate) fn record_exception(&self, record: ExceptionRecord) {
        self.observer.exception(&record);
        if let Ok(mut e) = self.exceptions.lock() {
            if e.len() == EXCEPTION_HISTORY {
                e.pop_front();
            }
            e.push_back(record);
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn subtask(&self, i: usize) -> Option<Arc<SubtaskMetrics>> {
        self.subtasks.read().ok().and_then(|s| s.get(i).cloned())
    }

    pub(crate) fn replace(&self, subtasks: Vec<Arc<SubtaskMetrics>>) {
        if let Ok(mut s) = self.subtasks.write() {
            *s = subtasks;
        }
    }

    /// Replaces the metrics of subtask slot `i` (a restarted region's subtask).
    pub(crate) fn replace_at(&self, i: usize, metrics: Arc<SubtaskMetrics>) {
        if let Ok(mut s) = self.subtasks.write()
            && let Some(slot) = s.get_mut(i)
        {
            *slot = metrics;
        }
    }

    pub(crate) fn snapshot(&self) -> JobMetricsSnapshot {
        JobMetricsSnapshot {
            elapsed: self.started.elapsed(),
            subtasks: self
                .subtasks
                .read()
                .map(|s| s.iter().map(|m| m.snapshot()).collect())
                .unwrap_or_default(),
            restarts: self.restarts.load(std::sync::atomic::Ordering::Relaxed),
            exceptions: self
                .exceptions
                .lock()
                .map(|e| e.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// What a successful job reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Wall time from start to end.
    pub duration: Duration,
    /// Every subtask's final metrics.
    pub metrics: JobMetricsSnapshot,
}
