//! The interval join of two keyed streams in event time (Flink's `IntervalJoinOperator`): a
//! left record at `l` and a right record at `r` with the same key are joined when
//! `l + lower <= r <= l + upper` (each bound can be made exclusive).
//!
//! Both sides are buffered in keyed map state by timestamp. A record is joined with the other
//! side's buffered records in its range, then buffered itself until the watermark passes the
//! last time a record of the other side could still match it (an event-time cleanup timer). A
//! record behind the watermark is late: dropped, or sent to a side output. Each result carries
//! the larger of the two timestamps.

use crate::dataplane::data::{Collector, OutputTag};
use crate::error::UserError;
use crate::operators::{KeyedCoProcessFunction, KeyedContext, OpenContext};
use crate::state::keyed_state::{MapState, StateValue};
use crate::types::{Timestamp, Watermark};

/// The timestamps of a joined pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinContext {
    /// The left record's timestamp.
    pub left_timestamp: Timestamp,
    /// The right record's timestamp.
    pub right_timestamp: Timestamp,
}

impl JoinContext {
    /// The result's timestamp: the larger of the two.
    pub fn timestamp(&self) -> Timestamp {
        self.left_timestamp.max(self.right_timestamp)
    }
}

/// Turns a joined pair into output (Flink's `ProcessJoinFunction`). Implemented for closures
/// `FnMut(A, B, &JoinContext, &mut Collector<O>) -> Result<(), UserError>`.
pub trait ProcessJoinFunction<A, B, O>: Send + 'static {
    /// Processes one joined pair.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        left: A,
        right: B,
        ctx: &JoinContext,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;
}

impl<A, B, O, F> ProcessJoinFunction<A, B, O> for F
where
    F: FnMut(A, B, &JoinContext, &mut Collector<O>) -> Result<(), UserError> + Send + 'static,
{
    fn process_element(
        &mut self,
        left: A,
        right: B,
        ctx: &JoinContext,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(left, right, ctx, out)
    }
}

/// The bounds of an interval join, in milliseconds relative to the left record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinBounds {
    /// `r >= l + lower` (inclusive after applying exclusivity).
    pub lower: i64,
    /// `r <= l + upper` (inclusive after applying exclusivity).
    pub upper: i64,
}

impl JoinBounds {
    /// Bounds `lower..=upper`, each made exclusive on request.
    ///
    /// # Errors
    ///
    /// If the resulting interval is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow_runtime::operators::interval_join::JoinBounds;
    /// assert_eq!(JoinBounds::new(-5, 5, true, false).unwrap().lower, -4);
    /// assert!(JoinBounds::new(3, 3, true, false).is_err());
    /// ```
    pub fn new(
        lower: i64,
        upper: i64,
        lower_exclusive: bool,
        upper_exclusive: bool,
    ) -> Result<Self, UserError> {
        let lo = if lower_exclusive {
            lower.saturating_add(1)
        } else {
            lower
        };
        let hi = if upper_exclusive {
            upper.saturating_sub(1)
        } else {
            upper
        };
        if lo > hi {
            return Err(format!(
                "interval join bounds {lower}..{upper} (lower {}, upper {}) are empty",
                if lower_exclusive {
                    "exclusive"
                } else {
                    "inclusive"
                },
                if upper_exclusive {
                    "exclusive"
                } else {
                    "inclusive"
                }
            )
            .into());
        }
        Ok(JoinBounds {
            lower: lo,
            upper: hi,
        })
    }
}

/// The interval join as a [`KeyedCoProcessFunction`] over the two keyed inputs.
#[derive(Clone)]
pub struct IntervalJoin<A, B, P> {
    bounds: JoinBounds,
    left_late: Option<OutputTag<A>>,
    right_late: Option<OutputTag<B>>,
    function: P,
    left: Option<MapState<i64, Vec<A>>>,
    right: Option<MapState<i64, Vec<B>>>,
}

impl<A, B, P> IntervalJoin<A, B, P> {
    /// Joins with `bounds`, late records to the side outputs if given (else dropped).
    pub fn new(
        bounds: JoinBounds,
        left_late: Option<OutputTag<A>>,
        right_late: Option<OutputTag<B>>,
        function: P,
    ) -> Self {
        IntervalJoin {
            bounds,
            left_late,
            right_late,
            function,
            left: None,
            right: None,
        }
    }
}

fn not_open() -> UserError {
    "interval join used before open()".into()
}

/// The record's timestamp, or an error naming the side.
fn stamp<K: std::hash::Hash + Eq + Clone>(
    ctx: &KeyedContext<'_, K>,
    side: &str,
) -> Result<i64, UserError> {
    ctx.timestamp().map(|t| t.0).ok_or_else(|| {
        format!(
            "an interval join needs event timestamps, and a {side} record has none; assign \
             timestamps and watermarks upstream"
        )
        .into()
    })
}

fn is_late(ts: i64, watermark: Watermark) -> bool {
    watermark != Watermark::MIN && ts < watermark.0
}

/// When the buffered record at `ts` can be dropped: the last time the other side could still
/// match it (`relative_upper` is how far ahead that is).
fn cleanup_time(ts: i64, relative_upper: i64) -> i64 {
    if relative_upper > 0 {
        ts.saturating_add(relative_upper)
    } else {
        ts
    }
}

impl<K, A, B, O, P> KeyedCoProcessFunction<K, A, B, O> for IntervalJoin<A, B, P>
where
    K: std::hash::Hash + Eq + Clone,
    A: StateValue + crate::dataplane::data::Data,
    B: StateValue + crate::dataplane::data::Data,
    O: crate::dataplane::data::Data,
    P: ProcessJoinFunction<A, B, O>,
{
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.left = Some(ctx.state.map_state("interval-join-left", None)?);
        self.right = Some(ctx.state.map_state("interval-join-right", None)?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        value: A,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let ts = stamp(ctx, "left")?;
        if is_late(ts, ctx.current_watermark()) {
            if let Some(tag) = &self.left_late {
                out.output_with_timestamp(tag, value, Some(Timestamp(ts)));
            }
            return Ok(());
        }
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        left.modify(ctx.state(), ts, |bucket| bucket.push(value.clone()))?;
        let (lo, hi) = (
            ts.saturating_add(self.bounds.lower),
            ts.saturating_add(self.bounds.upper),
        );
        for (rts, records) in right.range(ctx.state(), lo..=hi)? {
            for r in records {
                let jc = JoinContext {
                    left_timestamp: Timestamp(ts),
                    right_timestamp: Timestamp(rts),
                };
                out.set_timestamp(Some(jc.timestamp()));
                self.function.process_element(value.clone(), r, &jc, out)?;
            }
        }
        ctx.register_event_time_timer(Timestamp(cleanup_time(ts, self.bounds.upper)));
        Ok(())
    }

    fn process_element2(
        &mut self,
        value: B,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let ts = stamp(ctx, "right")?;
        if is_late(ts, ctx.current_watermark()) {
            if let Some(tag) = &self.right_late {
                out.output_with_timestamp(tag, value, Some(Timestamp(ts)));
            }
            return Ok(());
        }
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        right.modify(ctx.state(), ts, |bucket| bucket.push(value.clone()))?;
        // l + lower <= ts <= l + upper  <=>  ts - upper <= l <= ts - lower
        let (lo, hi) = (
            ts.saturating_sub(self.bounds.upper),
            ts.saturating_sub(self.bounds.lower),
        );
        for (lts, records) in left.range(ctx.state(), lo..=hi)? {
            for l in records {
                let jc = JoinContext {
                    left_timestamp: Timestamp(lts),
                    right_timestamp: Timestamp(ts),
                };
                out.set_timestamp(Some(jc.timestamp()));
                self.function.process_element(l, value.clone(), &jc, out)?;
            }
        }
        ctx.register_event_time_timer(Timestamp(cleanup_time(
            ts,
            self.bounds.lower.saturating_neg(),
        )));
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, K>,
        _: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let (left, right) = (
            self.left.as_ref().ok_or_else(not_open)?,
            self.right.as_ref().ok_or_else(not_open)?,
        );
        // The timer may have been registered by either side; each side's bucket that expires
        // at `time` is dropped (a no-op if there is none).
        let t = time.0;
        let left_bucket = if self.bounds.upper > 0 {
            t.saturating_sub(self.bounds.upper)
        } else {
            t
        };
        let right_bucket = if self.bounds.lower < 0 {
            t.saturating_add(self.bounds.lower)
        } else {
            t
        };
        left.remove(ctx.state(), &left_bucket)?;
        right.remove(ctx.state(), &right_bucket)?;
        Ok(())
    }
}
