//! Processing time: wall-clock milliseconds that tests can pause and advance.
//!
//! A [`ProcessingClock`] pins a wall-clock reading to a tokio [`Instant`] when the job starts and
//! measures processing time from there on tokio's clock. Under `tokio::time::pause()` processing
//! time therefore stands still until the test advances it, and processing-time timers fire
//! exactly when the test says.

use crate::types::Timestamp;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Processing time for one job.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::time::clock::ProcessingClock;
/// use actorflow_runtime::Timestamp;
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let clock = ProcessingClock::starting_at(Timestamp(1_000));
/// assert_eq!(clock.now(), Timestamp(1_000));
/// tokio::time::advance(std::time::Duration::from_millis(250)).await;
/// assert_eq!(clock.now(), Timestamp(1_250));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ProcessingClock {
    origin_ms: i64,
    origin: Instant,
    /// Set for a clock moved by hand (operator harness tests).
    manual: Option<Arc<AtomicI64>>,
}

/// Moves a manual [`ProcessingClock`].
#[derive(Debug, Clone)]
pub struct ManualTime(Arc<AtomicI64>);

impl ManualTime {
    /// Sets processing time to `t` ms.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// The current manual time.
    pub fn get(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

impl ProcessingClock {
    /// A clock reading the system's wall-clock time now.
    pub fn system() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        ProcessingClock::starting_at(Timestamp(ms))
    }

    /// A clock that reads `now` at this instant of tokio's clock.
    pub fn starting_at(now: Timestamp) -> Self {
        ProcessingClock {
            origin_ms: now.0,
            origin: Instant::now(),
            manual: None,
        }
    }

    /// A clock that stands at `now` until moved with the returned [`ManualTime`].
    pub fn manual(now: Timestamp) -> (Self, ManualTime) {
        let cell = Arc::new(AtomicI64::new(now.0));
        let mut clock = ProcessingClock::starting_at(now);
        clock.manual = Some(cell.clone());
        (clock, ManualTime(cell))
    }

    /// The current processing time in milliseconds.
    pub fn now(&self) -> Timestamp {
        if let Some(m) = &self.manual {
            return Timestamp(m.load(Ordering::SeqCst));
        }
        let elapsed = i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.origin_ms.saturating_add(elapsed))
    }

    /// The tokio instant at which processing time reaches `t`.
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        if self.manual.is_some() {
            let ahead = u64::try_from(t.0.saturating_sub(self.now().0).max(0)).unwrap_or(0);
            return Instant::now() + Duration::from_millis(ahead.min(86_400_000 * 365));
        }
        let ms = t.0.saturating_sub(self.origin_ms).max(0);
        let ms = u64::try_from(ms).unwrap_or(0).min(u64::MAX / 4);
        self.origin
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(|| self.origin + Duration::from_secs(86_400 * 365 * 100))
    }
}

impl Default for ProcessingClock {
    fn default() -> Self {
        ProcessingClock::system()
    }
}
