//! Watermark strategies: how records get event timestamps and how watermarks are generated
//! from them (Flink's `WatermarkStrategy`, `WatermarkGenerator`, `TimestampAssigner`).
//!
//! A strategy is applied by the [`TimestampsAndWatermarksOperator`]
//! (`assign_timestamps_and_watermarks`). With periodic emission (the default) the generator
//! is asked for a watermark every `auto_watermark_interval` of processing time (200 ms by
//! default); with punctuated emission it is asked after every record, which makes event-time
//! results independent of speed.
//!
//! [`TimestampsAndWatermarksOperator`]: crate::operators::TimestampsAndWatermarksOperator

use crate::types::{Timestamp, Watermark};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a [`WatermarkGenerator`] can do: emit a watermark, or declare its input idle.
#[derive(Debug, Default)]
pub struct WatermarkOutput {
    pub(crate) actions: Vec<WatermarkAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatermarkAction {
    Emit(Watermark),
    Idle,
    Active,
}

impl WatermarkOutput {
    /// Emits a watermark; ignored unless it is higher than the last one (watermarks never go
    /// back).
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.actions.push(WatermarkAction::Emit(watermark));
    }

    /// Declares the input idle: it stops holding back downstream watermarks until the next
    /// watermark is emitted.
    pub fn mark_idle(&mut self) {
        self.actions.push(WatermarkAction::Idle);
    }

    /// Declares the input active again.
    pub fn mark_active(&mut self) {
        self.actions.push(WatermarkAction::Active);
    }
}

/// Generates watermarks from the records it sees (Flink's `WatermarkGenerator`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::time::watermark::{WatermarkGenerator, WatermarkOutput};
/// use actorflow_runtime::{Timestamp, Watermark};
/// /// Watermark = the highest timestamp seen, minus 10.
/// struct Lagging(i64);
/// impl WatermarkGenerator<String> for Lagging {
///     fn on_event(&mut self, _: &String, ts: Timestamp, _: &mut WatermarkOutput) {
///         self.0 = self.0.max(ts.0);
///     }
///     fn on_periodic_emit(&mut self, out: &mut WatermarkOutput) {
///         out.emit_watermark(Watermark(self.0 - 10));
///     }
/// }
/// ```
pub trait WatermarkGenerator<T>: Send + 'static {
    /// Called for every record, after its timestamp was assigned.
    fn on_event(&mut self, event: &T, timestamp: Timestamp, out: &mut WatermarkOutput);
    /// Called periodically (or after every record, with punctuated emission).
    fn on_periodic_emit(&mut self, out: &mut WatermarkOutput);
}

/// Watermark = highest timestamp seen − `bound` − 1 (Flink's
/// `BoundedOutOfOrdernessWatermarks`).
#[derive(Debug, Clone, Copy)]
pub struct BoundedOutOfOrderness {
    bound: i64,
    max_timestamp: i64,
}

impl BoundedOutOfOrderness {
    /// Tolerates records up to `bound` ms out of order.
    pub fn new(bound: i64) -> Self {
        BoundedOutOfOrderness {
            bound,
            // Flink starts here so that the first watermark is Long.MIN_VALUE.
            max_timestamp: i64::MIN.wrapping_add(bound).wrapping_add(1),
        }
    }
}

impl<T> WatermarkGenerator<T> for BoundedOutOfOrderness {
    #[inline]
    fn on_event(&mut self, _: &T, ts: Timestamp, _: &mut WatermarkOutput) {
        self.max_timestamp = self.max_timestamp.max(ts.0);
    }

    fn on_periodic_emit(&mut self, out: &mut WatermarkOutput) {
        out.emit_watermark(Watermark(
            self.max_timestamp.wrapping_sub(self.bound).wrapping_sub(1),
        ));
    }
}

/// Generates no watermarks (Flink's `NoWatermarksGenerator`); event time still ends with the
/// maximum watermark at the end of a bounded input.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatermarks;

impl<T> WatermarkGenerator<T> for NoWatermarks {
    fn on_event(&mut self, _: &T, _: Timestamp, _: &mut WatermarkOutput) {}
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

/// Flink's `IdlenessTimer`: idle once two periodic checks saw no record and the timeout
/// passed since the first of them.
#[derive(Debug)]
pub(crate) struct IdlenessTimer {
    timeout: i64,
    counter: u64,
    last_counter: u64,
    inactive_since: Option<Timestamp>,
}

impl IdlenessTimer {
    /// A timer that declares idleness after `timeout` ms without records.
    pub(crate) fn new(timeout: i64) -> Self {
        IdlenessTimer {
            timeout,
            counter: 0,
            last_counter: 0,
            inactive_since: None,
        }
    }

    /// Counts `n` records seen.
    #[inline]
    pub(crate) fn activity(&mut self, n: u64) {
        self.counter = self.counter.wrapping_add(n);
    }

    /// Called at each periodic emission: true once the input counts as idle.
    pub(crate) fn check_if_idle(&mut self, now: Timestamp) -> bool {
        if self.counter != self.last_counter {
            self.last_counter = self.counter;
            self.inactive_since = None;
            return false;
        }
        match self.inactive_since {
            None => {
                self.inactive_since = Some(now);
                false
            }
            Some(since) => now.0.saturating_sub(since.0) > self.timeout,
        }
    }
}

/// When the generator is asked for a watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkEmission {
    /// Every `auto_watermark_interval` of processing time (the environment's setting, 200 ms by
    /// default).
    Periodic,
    /// Every given interval of processing time.
    PeriodicEvery(Duration),
    /// After every record (deterministic: the same input always gives the same watermarks).
    Punctuated,
}

type GeneratorFactory<T> = Arc<dyn Fn() -> Box<dyn WatermarkGenerator<T>> + Send + Sync>;
type TimestampFn<T> = Arc<dyn Fn(&T, Option<Timestamp>) -> i64 + Send + Sync>;

/// How a stream gets timestamps and watermarks (Flink's `WatermarkStrategy`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::time::watermark::WatermarkStrategy;
/// use std::time::Duration;
/// let s = WatermarkStrategy::<(String, i64)>::for_bounded_out_of_orderness(Duration::from_secs(5))
///     .with_timestamp_assigner(|e, _| e.1)
///     .with_idleness(Duration::from_secs(60));
/// assert_eq!(s.idleness(), Some(Duration::from_secs(60)));
/// ```
pub struct WatermarkStrategy<T> {
    generator: GeneratorFactory<T>,
    assigner: Option<TimestampFn<T>>,
    idleness: Option<Duration>,
    emission: WatermarkEmission,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            generator: self.generator.clone(),
            assigner: self.assigner.clone(),
            idleness: self.idleness,
            emission: self.emission,
        }
    }
}

impl<T> fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("assigner", &self.assigner.is_some())
            .field("idleness", &self.idleness)
            .field("emission", &self.emission)
            .finish()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<T: 'static> WatermarkStrategy<T> {
    /// Watermarks trailing the highest timestamp by `bound` (plus 1 ms, as in Flink).
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        Self::for_bounded_out_of_orderness_ms(millis(bound))
    }

    /// [`for_bounded_out_of_orderness`](Self::for_bounded_out_of_orderness) in milliseconds.
    pub fn for_bounded_out_of_orderness_ms(bound: i64) -> Self {
        Self::for_generator(move || BoundedOutOfOrderness::new(bound))
    }

    /// For timestamps that never decrease: bounded out-of-orderness with bound 0.
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness_ms(0)
    }

    /// No watermarks until the end of a bounded input.
    pub fn no_watermarks() -> Self {
        Self::for_generator(|| NoWatermarks)
    }

    /// A custom generator; `make` creates one per subtask.
    pub fn for_generator<G: WatermarkGenerator<T>>(
        make: impl Fn() -> G + Send + Sync + 'static,
    ) -> Self {
        WatermarkStrategy {
            generator: Arc::new(move || Box::new(make()) as Box<dyn WatermarkGenerator<T>>),
            assigner: None,
            idleness: None,
            emission: WatermarkEmission::Periodic,
        }
    }

    /// Takes each record's timestamp from `f(record, previous timestamp)` (in ms). Without
    /// an assigner, records keep the timestamps they have.
    pub fn with_timestamp_assigner(
        mut self,
        f: impl Fn(&T, Option<Timestamp>) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.assigner = Some(Arc::new(f));
        self
    }

    /// Marks the input idle after `timeout` without records, so it stops holding back the
    /// watermark downstream (Flink's `withIdleness`).
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness = Some(timeout);
        self
    }

    /// Asks the generator for a watermark after every record instead of periodically.
    pub fn punctuated(mut self) -> Self {
        self.emission = WatermarkEmission::Punctuated;
        self
    }

    /// Asks the generator every `interval` of processing time, overriding the environment's
    /// auto-watermark interval.
    pub fn with_periodic_interval(mut self, interval: Duration) -> Self {
        self.emission = WatermarkEmission::PeriodicEvery(interval);
        self
    }

    /// The idleness timeout, if set.
    pub fn idleness(&self) -> Option<Duration> {
        self.idleness
    }

    /// When watermarks are emitted.
    pub fn emission(&self) -> WatermarkEmission {
        self.emission
    }

    /// A fresh generator.
    pub fn create_generator(&self) -> Box<dyn WatermarkGenerator<T>> {
        (self.generator)()
    }

    /// The record's timestamp under this strategy.
    #[inline]
    pub fn timestamp(&self, record: &T, previous: Option<Timestamp>) -> Option<Timestamp> {
        match &self.assigner {
            Some(f) => Some(Timestamp(f(record, previous))),
            None => previous,
        }
    }

    /// True if the strategy assigns timestamps itself.
    pub fn has_timestamp_assigner(&self) -> bool {
        self.assigner.is_some()
    }
}
