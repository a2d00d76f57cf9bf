//! Joins. The **interval join** of two keyed streams (Flink's `intervalJoin`):
//! `a.key_by(k).interval_join(&b.key_by(k)).between(lower, upper).process(f)` calls `f` for
//! every pair with equal keys and `a_ts + lower <= b_ts <= a_ts + upper`, in event time. See
//! `docs/joins.md` for when to use which join and what each keeps in state.

use crate::connected::ConnectedKeyedStreams;
use crate::datastream::DataStream;
use actorflow_runtime::Data;
use actorflow_runtime::OutputTag;
use actorflow_runtime::error::BuildError;
use actorflow_runtime::operators::{IntervalJoin, JoinBounds, ProcessJoinFunction};
use actorflow_runtime::state::key::KeySelector;
use std::panic::Location;

/// `a.interval_join(&b)`, waiting for its bounds.
#[derive(Debug, Clone)]
pub struct IntervalJoinBuilder<A, B, S1, S2> {
    connected: ConnectedKeyedStreams<A, B, S1, S2>,
}

impl<A, B, S1, S2> IntervalJoinBuilder<A, B, S1, S2>
where
    A: Data,
    B: Data,
    S1: KeySelector<A>,
    S2: KeySelector<B, Key = S1::Key>,
{
    pub(crate) fn new(connected: ConnectedKeyedStreams<A, B, S1, S2>) -> Self {
        IntervalJoinBuilder { connected }
    }

    /// Joins a left record at `l` with the right records at `r` where
    /// `l + lower_ms <= r <= l + upper_ms` (both bounds inclusive until made exclusive).
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoined<A, B, S1, S2> {
        IntervalJoined {
            connected: self.connected,
            lower: lower_ms,
            upper: upper_ms,
            lower_exclusive: false,
            upper_exclusive: false,
            left_late: None,
            right_late: None,
        }
    }
}

/// An interval join with its bounds; `process` builds it.
#[derive(Debug, Clone)]
pub struct IntervalJoined<A, B, S1, S2> {
    connected: ConnectedKeyedStreams<A, B, S1, S2>,
    lower: i64,
    upper: i64,
    lower_exclusive: bool,
    upper_exclusive: bool,
    left_late: Option<OutputTag<A>>,
    right_late: Option<OutputTag<B>>,
}

impl<A, B, S1, S2> IntervalJoined<A, B, S1, S2>
where
    A: Data,
    B: Data,
    S1: KeySelector<A>,
    S2: KeySelector<B, Key = S1::Key>,
{
    /// `l + lower < r` instead of `<=`.
    pub fn lower_bound_exclusive(mut self) -> Self {
        self.lower_exclusive = true;
        self
    }

    /// `r < l + upper` instead of `<=`.
    pub fn upper_bound_exclusive(mut self) -> Self {
        self.upper_exclusive = true;
        self
    }

    /// Left records behind the watermark go to `tag` instead of being dropped.
    pub fn side_output_left_late_data(mut self, tag: &OutputTag<A>) -> Self {
        self.left_late = Some(tag.clone());
        self
    }

    /// Right records behind the watermark go to `tag` instead of being dropped.
    pub fn side_output_right_late_data(mut self, tag: &OutputTag<B>) -> Self {
        self.right_late = Some(tag.clone());
        self
    }

    /// Calls `function` for every joined pair; each result carries the larger of the two
    /// timestamps. Late records are read with `get_side_output` on the returned stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::operators::JoinContext;
    /// let mut out = actorflow::testing::example(|env| {
    ///     let stamp = |s: DataStream<(char, i64)>| {
    ///         s.assign_timestamps_and_watermarks(
    ///             WatermarkStrategy::for_monotonous_timestamps()
    ///                 .with_timestamp_assigner(|e: &(char, i64), _| e.1),
    ///         )
    ///     };
    ///     let clicks = stamp(env.from_collection(vec![('a', 10), ('b', 20)]));
    ///     let buys = stamp(env.from_collection(vec![('a', 12), ('a', 30), ('b', 21)]));
    ///     clicks
    ///         .key_by(|e| e.0)
    ///         .interval_join(&buys.key_by(|e| e.0))
    ///         .between(0, 5)
    ///         .process(|c: (char, i64), b: (char, i64), _: &JoinContext, out: &mut Collector<String>| {
    ///             out.collect(format!("{}: {} -> {}", c.0, c.1, b.1));
    ///             Ok(())
    ///         })
    /// });
    /// out.sort();
    /// assert_eq!(out, vec!["a: 10 -> 12", "b: 20 -> 21"]);
    /// ```
    #[track_caller]
    pub fn process<O, P>(self, function: P) -> DataStream<O>
    where
        O: Data,
        P: ProcessJoinFunction<A, B, O> + Clone + Sync,
    {
        let location = Location::caller();
        let bounds = match JoinBounds::new(
            self.lower,
            self.upper,
            self.lower_exclusive,
            self.upper_exclusive,
        ) {
            Ok(b) => b,
            Err(e) => {
                self.connected.env().lock().errors.push(BuildError::Api {
                    message: e.to_string(),
                    location,
                });
                JoinBounds { lower: 0, upper: 0 }
            }
        };
        self.connected.process_at(
            "Interval Join",
            IntervalJoin::new(bounds, self.left_late, self.right_late, function),
            location,
        )
    }
}
