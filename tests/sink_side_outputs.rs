//! Side outputs of sinks (`Sink::side_outputs`, `DataStreamSink::get_side_output`): records a
//! sink sets aside travel in order with its input — before the watermark and the checkpoint
//! barrier that followed them — so they are on time downstream and exactly once through
//! failures, aligned or unaligned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::SideOutputs;
use actorflow::prelude::*;
use actorflow_runtime::checkpoint::types::JobEvent;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Takes even numbers (counts them), sets the odd ones aside; at `finish` it sets aside one
/// more record, `u64::MAX`, as a sink flushing a last batch would.
struct Evens {
    odd: OutputTag<u64>,
    side: SideOutputs,
    kept: u64,
    last_word: bool,
    /// Finds the odd numbers only when a checkpoint's barrier comes (as a sink that writes
    /// at checkpoints does), the final one included.
    at_checkpoints: bool,
    unchecked: Vec<u64>,
}

impl Evens {
    fn new(odd: &OutputTag<u64>, last_word: bool) -> Self {
        Evens {
            odd: odd.clone(),
            side: SideOutputs::new(),
            kept: 0,
            last_word,
            at_checkpoints: false,
            unchecked: Vec::new(),
        }
    }

    fn at_checkpoints(odd: &OutputTag<u64>) -> Self {
        Evens {
            at_checkpoints: true,
            ..Evens::new(odd, false)
        }
    }
}

impl Sink for Evens {
    type Input = u64;

    async fn write_batch(&mut self, batch: Batch<u64>) -> Result<(), UserError> {
        if self.at_checkpoints {
            self.unchecked.extend(batch.into_values());
            return Ok(());
        }
        let ts = batch.timestamps().map(<[Timestamp]>::to_vec);
        for (i, v) in batch.values().iter().enumerate() {
            if v % 2 == 1 {
                let t = ts.as_ref().map(|t| t[i]);
                self.side.output_with_timestamp(&self.odd, *v, t);
            } else {
                self.kept += 1;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), UserError> {
        if self.last_word {
            self.side.output(&self.odd, u64::MAX);
        }
        Ok(())
    }

    async fn snapshot_state(
        &mut self,
        _: actorflow_runtime::CheckpointId,
        _: &mut actorflow::checkpoint::OperatorState,
    ) -> Result<(), UserError> {
        for v in std::mem::take(&mut self.unchecked) {
            if v % 2 == 1 {
                self.side.output(&self.odd, v);
            }
        }
        Ok(())
    }

    fn side_outputs(&mut self) -> Option<&mut SideOutputs> {
        Some(&mut self.side)
    }
}

fn odd() -> OutputTag<u64> {
    OutputTag::new("odd")
}

/// Every side record reaches the next operator before any watermark at or after its
/// timestamp (it is never late), and the sink's records set aside at `finish` arrive before
/// end of input.
#[test]
fn side_records_travel_before_the_watermarks_that_followed_them() {
    for p in [1u32, 2] {
        let env = common::env(p);
        let late = Arc::new(Mutex::new(Vec::new()));
        let l = late.clone();
        let tag = odd();
        let sink_tag = tag.clone();
        let out = env
            .from_sequence(1, 4_000)
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|v: &u64, _| *v as i64)
                    .punctuated(),
            )
            .add_sink("evens", move |_: &TaskInfo| Ok(Evens::new(&sink_tag, true)))
            .get_side_output(&tag)
            .process(
                move |v: u64, ctx: &mut Context<'_>, out: &mut Collector<u64>| {
                    if let Some(ts) = ctx.timestamp()
                        && ts.0 <= ctx.current_watermark().0
                    {
                        l.lock().unwrap().push((v, ctx.current_watermark().0));
                    }
                    out.collect(v);
                    Ok(())
                },
            )
            .collect();
        env.execute_blocking("side output order").unwrap();
        let late = late.lock().unwrap().clone();
        assert!(
            late.is_empty(),
            "p={p}: {} late side records (value, watermark), first {:?}",
            late.len(),
            &late[..late.len().min(5)]
        );
        let mut got = out.take();
        got.sort_unstable();
        let mut expected: Vec<u64> = (1..=4_000).filter(|v| v % 2 == 1).collect();
        expected.extend(std::iter::repeat_n(u64::MAX, p as usize));
        assert_eq!(got, expected, "p={p}");
    }
}

/// What a sink sets aside is exactly once through failures: records set aside before a
/// checkpoint's barrier belong to that checkpoint downstream too. Aligned and unaligned
/// checkpoints, parallelism 1 and 3 (the side output rebalanced to another parallelism), and
/// a sink that sets records aside only when it snapshots (the final snapshot included: its
/// side output ends after it).
#[test]
fn side_records_are_exactly_once_through_failures() {
    for (p, unaligned, at_checkpoints) in [
        (1u32, false, false),
        (3, false, false),
        (3, true, false),
        (2, false, true),
    ] {
        let (env, events) = common::checkpointed_env(
            p,
            Duration::from_millis(30),
            "panic@boom#0:records=1000,panic@after#0:records=600",
        );
        if unaligned {
            env.checkpointing(|c| c.settings.unaligned = true);
        }
        let tag = odd();
        let sink_tag = tag.clone();
        let out = env
            .from_generator(GeneratorSource::new(12_000, |i| i).with_rate_limit(60_000.0))
            .map(|v: u64| v)
            .name("boom")
            .add_sink("evens", move |_: &TaskInfo| {
                Ok(if at_checkpoints {
                    Evens::at_checkpoints(&sink_tag)
                } else {
                    Evens::new(&sink_tag, false)
                })
            })
            .uid("evens")
            .get_side_output(&tag)
            .map(|v: u64| v)
            .name("after")
            .set_parallelism(2)
            .collect();
        env.execute_blocking("side output exactly once").unwrap();
        let events = events.lock().unwrap().clone();
        let restarts = events
            .iter()
            .filter(|e| matches!(e, JobEvent::Restart { .. }))
            .count();
        assert!(restarts >= 2, "p={p}: {restarts} restarts");
        let completed = events
            .iter()
            .filter(|e| matches!(e, JobEvent::CheckpointCompleted { .. }))
            .count();
        assert!(completed >= 3, "p={p}: {completed} checkpoints");
        let mut got = out.take();
        got.sort_unstable();
        let expected: Vec<u64> = (0..12_000).filter(|v| v % 2 == 1).collect();
        let case = format!("p={p} unaligned={unaligned} at_checkpoints={at_checkpoints}");
        assert_eq!(got.len(), expected.len(), "{case}");
        assert_eq!(got, expected, "{case}");
    }
}

/// A sink whose side output nobody reads fails with a message naming the tag, rather than
/// dropping the records.
#[test]
fn a_side_output_nobody_reads_fails_the_job() {
    let env = common::env(1);
    let tag = odd();
    env.from_sequence(1, 10)
        .add_sink("evens", move |_: &TaskInfo| Ok(Evens::new(&tag, false)));
    let err = env.execute_blocking("unread").unwrap_err().to_string();
    assert!(
        err.contains("side output 'odd', which nobody reads"),
        "{err}"
    );
}

/// The side output of a sink feeds an operator on a forward edge of equal parallelism (which
/// the plan does not chain to the sink: see `plan`'s unit tests).
#[test]
fn a_sinks_side_output_feeds_a_forward_successor() {
    let env = common::env(2);
    let tag = odd();
    let sink_tag = tag.clone();
    let out = env
        .from_sequence(1, 100)
        .add_sink("evens", move |_: &TaskInfo| {
            Ok(Evens::new(&sink_tag, false))
        })
        .get_side_output(&tag)
        .map(|v: u64| v * 10)
        .name("tenfold")
        .collect();
    env.execute_blocking("vertex").unwrap();
    let mut got = out.take();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=100)
            .filter(|v| v % 2 == 1)
            .map(|v| v * 10)
            .collect::<Vec<u64>>()
    );
}
