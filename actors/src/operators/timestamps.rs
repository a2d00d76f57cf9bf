//! `assign_timestamps_and_watermarks`: stamps records with event time and generates watermarks
//! (Flink's `TimestampsAndWatermarksOperator`).
//!
//! Watermarks from upstream are swallowed, except the final maximum watermark of a bounded
//! input; this operator's generator is the watermark source from here on. In batch mode no
//! watermarks are generated at all (only the final maximum passes), so nothing is late.

use crate::dataplane::data::{Batch, Collector, Data};
use crate::dataplane::message::WatermarkStatus;
use crate::error::UserError;
use crate::operators::operator::{Operator, TaskInfo};
use crate::time::watermark::{
    IdlenessTimer, WatermarkAction, WatermarkEmission, WatermarkGenerator, WatermarkOutput,
    WatermarkStrategy,
};
use crate::types::RuntimeMode;
use crate::types::{Timestamp, Watermark};
use std::time::Duration;

/// Applies a [`WatermarkStrategy`] to a stream.
pub struct TimestampsAndWatermarksOperator<T> {
    strategy: WatermarkStrategy<T>,
    generator: Option<Box<dyn WatermarkGenerator<T>>>,
    interval: Option<i64>,
    next_periodic: Option<Timestamp>,
    idleness: Option<IdlenessTimer>,
    current: Watermark,
    idle: bool,
    punctuated: bool,
    output: WatermarkOutput,
    index: usize,
}

impl<T: 'static> TimestampsAndWatermarksOperator<T> {
    /// An operator applying `strategy`.
    pub fn new(strategy: WatermarkStrategy<T>) -> Self {
        TimestampsAndWatermarksOperator {
            strategy,
            generator: None,
            interval: None,
            next_periodic: None,
            idleness: None,
            current: Watermark::MIN,
            idle: false,
            punctuated: false,
            output: WatermarkOutput::default(),
            index: 0,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<T: Data> TimestampsAndWatermarksOperator<T> {
    fn apply<O: Data>(&mut self, out: &mut Collector<O>) {
        for action in self.output.actions.drain(..) {
            match action {
                WatermarkAction::Emit(wm) => {
                    if wm <= self.current {
                        continue;
                    }
                    self.current = wm;
                    if self.idle {
                        self.idle = false;
                        out.emit_status(WatermarkStatus::Active);
                    }
                    out.emit_watermark(wm);
                }
                WatermarkAction::Idle => {
                    if !self.idle {
                        self.idle = true;
                        out.emit_status(WatermarkStatus::Idle);
                    }
                }
                WatermarkAction::Active => {
                    if self.idle {
                        self.idle = false;
                        out.emit_status(WatermarkStatus::Active);
                    }
                }
            }
        }
    }

    fn periodic_emit(&mut self, now: Timestamp) {
        let idle = self.idleness.as_mut().is_some_and(|i| i.check_if_idle(now));
        if idle {
            self.output.mark_idle();
        } else if let Some(g) = self.generator.as_mut() {
            g.on_periodic_emit(&mut self.output);
        }
    }
}

impl<T: Data> Operator for TimestampsAndWatermarksOperator<T> {
    type In = T;
    type Out = T;

    fn snapshot_state(
        &mut self,
        _: crate::types::CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        // The last watermark emitted: after a restore nothing at or below it is emitted
        // again, so downstream sees the same watermarks as without the failure.
        state.push_union(self.index, &self.current.0)
    }

    fn restore_state(
        &mut self,
        restored: crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        if let Some(wm) = restored.own_union::<i64>(|all| all.into_iter().min())? {
            self.current = Watermark(wm);
        }
        Ok(())
    }

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.index = info.subtask_index;
        if info.runtime_mode == RuntimeMode::Batch {
            return Ok(()); // no watermarks in batch mode: only the final maximum
        }
        self.generator = Some(self.strategy.create_generator());
        self.punctuated = self.strategy.emission() == WatermarkEmission::Punctuated;
        let interval = match self.strategy.emission() {
            WatermarkEmission::PeriodicEvery(d) => ms(d),
            _ => ms(info.auto_watermark_interval),
        };
        self.idleness = self.strategy.idleness().map(|d| IdlenessTimer::new(ms(d)));
        // Periodic emission, or the idleness check, runs on a processing-time timer; an
        // interval of 0 disables periodic emission, as in Flink.
        if interval > 0 && (!self.punctuated || self.idleness.is_some()) {
            self.interval = Some(interval);
            self.next_periodic = Some(Timestamp(info.clock.now().0.saturating_add(interval)));
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) -> Result<(), UserError> {
        let Some(mut generator) = self.generator.take() else {
            // Batch mode: stamp only.
            out.reserve(batch.len());
            for (v, ts) in batch.into_iter_timestamped() {
                let ts = self.strategy.timestamp(&v, ts);
                out.set_timestamp(ts);
                out.collect(v);
            }
            return Ok(());
        };
        if let Some(i) = self.idleness.as_mut() {
            i.activity(batch.len() as u64);
        }
        out.reserve(batch.len());
        for (v, ts) in batch.into_iter_timestamped() {
            let ts = self.strategy.timestamp(&v, ts);
            generator.on_event(&v, ts.unwrap_or(Timestamp::MIN), &mut self.output);
            out.set_timestamp(ts);
            out.collect(v);
            if self.punctuated {
                generator.on_periodic_emit(&mut self.output);
            }
            if !self.output.actions.is_empty() {
                // Watermarks go out after the record that caused them.
                self.apply(out);
            }
        }
        self.generator = Some(generator);
        Ok(())
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }

    fn process_watermark(
        &mut self,
        wm: Watermark,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        // Only the end of event time passes through; this operator makes the watermarks.
        if wm == Watermark::MAX {
            self.output.emit_watermark(Watermark::MAX);
            self.apply(out);
        }
        Ok(())
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.next_periodic
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        self.periodic_emit(now);
        self.apply(out);
        if let Some(interval) = self.interval {
            self.next_periodic = Some(Timestamp(now.0.saturating_add(interval)));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector<T>) -> Result<(), UserError> {
        if let Some(g) = self.generator.as_mut() {
            g.on_periodic_emit(&mut self.output);
            self.apply(out);
        }
        self.next_periodic = None;
        Ok(())
    }
}
