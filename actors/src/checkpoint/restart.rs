//! Restart strategies: whether and when the supervisor restarts a failed pipelined region, as
//! plain functions over plain state (Flink's `RestartBackoffTimeStrategy`s). The supervisor
//! actor (a later step) feeds in failures and completed restarts and applies the decisions;
//! nothing here reads a clock or draws a random number itself, so every rule is tested exactly.
//!
//! * **none** — the first failure fails the job;
//! * **fixed delay** — up to `attempts` restarts, each after `delay`;
//! * **failure rate** — restart after `delay` unless more than `max_failures` happened within
//!   `interval`;
//! * **exponential backoff with jitter** (the default) — the delay starts at `initial`, grows
//!   by `multiplier` up to `max`, varies by ±`jitter`, and resets to `initial` (with the attempt
//!   count) after `reset_after` without failures.
//!
//! A burst of failures from one incident counts as one attempt: failures that arrive between a
//! restart decision and the end of that restart (other subtasks of the same region failing,
//! peers noticing) are reported as [`RestartDecision::SameIncident`].

use std::collections::VecDeque;
use std::time::Duration;

/// How failures are answered.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Never restart.
    None,
    /// Restart at most `attempts` times, `delay` after each failure.
    FixedDelay {
        /// Restarts allowed over the job's life.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart `delay` after a failure, unless more than `max_failures` failures happened in
    /// the last `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The sliding interval.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Exponentially growing delays with jitter (Flink's `exponential-delay`).
    ExponentialBackoff {
        /// The first delay.
        initial: Duration,
        /// The largest delay.
        max: Duration,
        /// Growth per attempt.
        multiplier: f64,
        /// Relative jitter: the delay varies within ±`jitter` × delay.
        jitter: f64,
        /// A healthy period after which delay and attempt count reset.
        reset_after: Duration,
        /// Attempts allowed between resets; `None` is unlimited.
        attempts: Option<u32>,
    },
}

impl Default for RestartStrategy {
    /// Flink's exponential-delay defaults: 1 s growing by 1.5× up to 1 min, ±10 % jitter,
    /// reset after a healthy hour, unlimited attempts.
    fn default() -> Self {
        RestartStrategy::ExponentialBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            jitter: 0.1,
            reset_after: Duration::from_secs(3600),
            attempts: None,
        }
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartDecision {
    /// Restart the region after `delay`; this is restart number `attempt` (from 1).
    Restart {
        /// Wait this long first.
        delay: Duration,
        /// Which attempt this is.
        attempt: u32,
    },
    /// Part of the incident already being restarted: no new attempt.
    SameIncident,
    /// Give up: the job fails with its root cause.
    Fail {
        /// Why restarting stops.
        reason: String,
    },
}

/// Failure bookkeeping for one job (or one pipelined region).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::checkpoint::restart::{RestartDecision, RestartStrategy, RestartTracker};
/// use std::time::Duration;
/// let mut t = RestartTracker::new(RestartStrategy::FixedDelay { attempts: 1, delay: Duration::from_secs(2) });
/// assert_eq!(t.on_failure(0, 0.5), RestartDecision::Restart { delay: Duration::from_secs(2), attempt: 1 });
/// assert_eq!(t.on_failure(10, 0.5), RestartDecision::SameIncident, "another subtask of the same incident");
/// t.on_restarted(2_000);
/// assert!(matches!(t.on_failure(5_000, 0.5), RestartDecision::Fail { .. }));
/// ```
#[derive(Debug, Clone)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    /// Attempts since the start (or the last reset).
    attempts: u32,
    /// Failure times within the failure-rate interval.
    recent: VecDeque<u64>,
    /// The delay the next exponential attempt uses (before jitter).
    next_delay_ms: f64,
    /// A restart was decided and has not completed yet.
    restarting: bool,
    /// When the last restart completed (start of the healthy period).
    healthy_since_ms: Option<u64>,
    failed: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RestartTracker {
    /// Bookkeeping for `strategy`, before any failure.
    pub fn new(strategy: RestartStrategy) -> Self {
        let next_delay_ms = match &strategy {
            RestartStrategy::ExponentialBackoff { initial, .. } => ms(*initial) as f64,
            _ => 0.0,
        };
        RestartTracker {
            strategy,
            attempts: 0,
            recent: VecDeque::new(),
            next_delay_ms,
            restarting: false,
            healthy_since_ms: None,
            failed: false,
        }
    }

    /// Restarts decided so far (since the last reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A subtask failed at `now_ms`. `random` is a sample in `[0, 1)` for the jitter.
    pub fn on_failure(&mut self, now_ms: u64, random: f64) -> RestartDecision {
        if self.failed {
            return RestartDecision::Fail {
                reason: "the job already failed".into(),
            };
        }
        if self.restarting {
            return RestartDecision::SameIncident;
        }
        let decision = match &self.strategy {
            RestartStrategy::None => RestartDecision::Fail {
                reason: "the restart strategy is 'none'".into(),
            },
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.attempts >= *attempts {
                    RestartDecision::Fail {
                        reason: format!("all {attempts} restart attempts were used"),
                    }
                } else {
                    self.attempts += 1;
                    RestartDecision::Restart {
                        delay: *delay,
                        attempt: self.attempts,
                    }
                }
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                let window = ms(*interval);
                self.recent.push_back(now_ms);
                while self
                    .recent
                    .front()
                    .is_some_and(|&t| now_ms.saturating_sub(t) >= window)
                {
                    self.recent.pop_front();
                }
                if self.recent.len() as u64 > u64::from(*max_failures) {
                    RestartDecision::Fail {
                        reason: format!(
                            "{} failures within {interval:?} (at most {max_failures} tolerated)",
                            self.recent.len()
                        ),
                    }
                } else {
                    self.attempts += 1;
                    RestartDecision::Restart {
                        delay: *delay,
                        attempt: self.attempts,
                    }
                }
            }
            RestartStrategy::ExponentialBackoff {
                initial,
                max,
                multiplier,
                jitter,
                reset_after,
                attempts,
            } => {
                if let Some(since) = self.healthy_since_ms
                    && now_ms.saturating_sub(since) >= ms(*reset_after)
                {
                    self.attempts = 0;
                    self.next_delay_ms = ms(*initial) as f64;
                }
                if attempts.is_some_and(|a| self.attempts >= a) {
                    RestartDecision::Fail {
                        reason: format!(
                            "{} restart attempts without a healthy period of {reset_after:?}",
                            self.attempts
                        ),
                    }
                } else {
                    let base = self.next_delay_ms.min(ms(*max) as f64);
                    let spread = base * jitter.clamp(0.0, 1.0);
                    let delay = (base - spread + 2.0 * spread * random.clamp(0.0, 1.0)).max(0.0);
                    self.next_delay_ms = (base * multiplier.max(1.0)).min(ms(*max) as f64);
                    self.attempts += 1;
                    RestartDecision::Restart {
                        delay: Duration::from_millis(delay.round() as u64),
                        attempt: self.attempts,
                    }
                }
            }
        };
        match &decision {
            RestartDecision::Restart { .. } => self.restarting = true,
            RestartDecision::Fail { .. } => self.failed = true,
            RestartDecision::SameIncident => {}
        }
        decision
    }

    /// The decided restart completed at `now_ms`: new failures are a new incident, and the
    /// healthy period starts.
    pub fn on_restarted(&mut self, now_ms: u64) {
        self.restarting = false;
        self.healthy_since_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart_delay(d: RestartDecision) -> u64 {
        match d {
            RestartDecision::Restart { delay, .. } => ms(delay),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn none_fails_at_once() {
        let mut t = RestartTracker::new(RestartStrategy::None);
        assert!(matches!(t.on_failure(0, 0.0), RestartDecision::Fail { .. }));
    }

    #[test]
    fn failure_rate_counts_within_the_sliding_interval() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        });
        for at in [0, 10_000] {
            assert_eq!(restart_delay(t.on_failure(at, 0.0)), 1_000);
            t.on_restarted(at + 1_000);
        }
        // The first failure left the interval at 60 s: two in the window again.
        assert_eq!(restart_delay(t.on_failure(60_000, 0.0)), 1_000);
        t.on_restarted(61_000);
        let third = t.on_failure(65_000, 0.0);
        assert!(
            matches!(third, RestartDecision::Fail { ref reason } if reason.contains("3 failures")),
            "{third:?}"
        );
    }

    #[test]
    fn exponential_backoff_grows_caps_jitters_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(60),
            attempts: None,
        });
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            delays.push(restart_delay(t.on_failure(now, 0.5)));
            now += 1_000;
            t.on_restarted(now);
        }
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
        // Jitter: the extremes of the sample give ±10 %.
        let low = restart_delay(t.on_failure(now, 0.0));
        t.on_restarted(now + 1);
        let high = restart_delay(t.on_failure(now + 2, 0.999_999));
        assert_eq!((low, high), (900, 1_100));
        // A healthy hour resets delay and count.
        t.on_restarted(now + 3);
        assert_eq!(restart_delay(t.on_failure(now + 3 + 60_000, 0.5)), 100);
        assert_eq!(t.attempts(), 1);
    }

    #[test]
    fn a_burst_of_failures_is_one_attempt_and_attempts_run_out() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            multiplier: 1.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(3600),
            attempts: Some(2),
        });
        assert_eq!(restart_delay(t.on_failure(0, 0.5)), 10);
        for _ in 0..5 {
            assert_eq!(t.on_failure(1, 0.5), RestartDecision::SameIncident);
        }
        t.on_restarted(20);
        assert_eq!(restart_delay(t.on_failure(30, 0.5)), 10);
        t.on_restarted(40);
        let out = t.on_failure(50, 0.5);
        assert!(
            matches!(out, RestartDecision::Fail { ref reason } if reason.contains("2 restart attempts")),
            "{out:?}"
        );
        assert!(matches!(
            t.on_failure(60, 0.5),
            RestartDecision::Fail { .. }
        ));
    }
}
