//! Watermarks per split inside a source (Flink's per-split watermarks: a generator per split
//! and the `WatermarkOutputMultiplexer` that combines them).
//!
//! A source that reads several splits (Kafka partitions, files) runs the
//! [`WatermarkStrategy`] once per split, and the subtask emits the **minimum** over the splits
//! that are not idle, only when that minimum rises. A split that has seen no record holds the
//! watermark back at its start, exactly as in Flink, until idleness
//! ([`WatermarkStrategy::with_idleness`]) declares it idle. When every split is idle (or the
//! source owns none), the subtask goes idle; a split counts again once its generator emits a
//! watermark. A finished split (a bounded split read to its end) stops holding anything back.
//!
//! Pure: the caller feeds records and the processing time; the emissions go into a
//! [`Collector`].
//!
//! # Examples
//!
//! ```
//! use actorflow_runtime::time::splits::SplitWatermarks;
//! use actorflow_runtime::time::watermark::WatermarkStrategy;
//! use actorflow_runtime::{Collector, Emission, Timestamp, Watermark};
//! use std::time::Duration;
//!
//! let strategy = WatermarkStrategy::<i64>::for_monotonous_timestamps()
//!     .with_timestamp_assigner(|v, _| *v)
//!     .punctuated();
//! let mut wm = SplitWatermarks::new(strategy);
//! wm.start(Timestamp(0), Duration::from_millis(200), false);
//! let (a, b) = (wm.add_split(), wm.add_split());
//! let mut out: Collector<i64> = Collector::new();
//! wm.on_record(a, &10, None);
//! wm.emit_pending(&mut out);
//! // Split b has seen nothing: the watermark is held back.
//! assert_eq!(wm.current(), Watermark::MIN);
//! wm.on_record(b, &7, None);
//! wm.emit_pending(&mut out);
//! assert_eq!(wm.current(), Watermark(6)); // min(10, 7) - 1
//! ```

use crate::dataplane::data::{Collector, Data};
use crate::time::watermark::{
    IdlenessTimer, WatermarkAction, WatermarkEmission, WatermarkGenerator, WatermarkOutput,
    WatermarkStrategy,
};
use crate::types::{Timestamp, Watermark, WatermarkStatus};
use std::time::Duration;

/// A split's place in a [`SplitWatermarks`] (stable while the split lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitSlot(usize);

struct Split<T> {
    generator: Box<dyn WatermarkGenerator<T>>,
    idleness: Option<IdlenessTimer>,
    watermark: Watermark,
    idle: bool,
    finished: bool,
}

/// The per-split watermark generators of one source subtask and their combination. See the
/// [module docs](self).
pub struct SplitWatermarks<T> {
    strategy: WatermarkStrategy<T>,
    splits: Vec<Split<T>>,
    scratch: WatermarkOutput,
    /// The last watermark emitted downstream.
    emitted: Watermark,
    /// Idleness announced downstream.
    idle: bool,
    punctuated: bool,
    /// Periodic emission interval in ms (0: none).
    interval: i64,
    next_periodic: Option<Timestamp>,
    /// False in batch mode: no watermarks at all (the end of input brings the maximum).
    enabled: bool,
    /// A split's watermark or idleness changed since the last combination.
    pending: bool,
}

impl<T> std::fmt::Debug for SplitWatermarks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitWatermarks")
            .field("splits", &self.splits.len())
            .field("emitted", &self.emitted)
            .field("idle", &self.idle)
            .finish()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<T: 'static> SplitWatermarks<T> {
    /// Per-split watermarks under `strategy` (its timestamp assigner, generator, idleness and
    /// emission mode apply to each split separately).
    pub fn new(strategy: WatermarkStrategy<T>) -> Self {
        SplitWatermarks {
            strategy,
            splits: Vec::new(),
            scratch: WatermarkOutput::default(),
            emitted: Watermark::MIN,
            idle: false,
            punctuated: false,
            interval: 0,
            next_periodic: None,
            enabled: true,
            pending: false,
        }
    }

    /// Starts periodic emission at `now`, every `auto_interval` unless the strategy sets its
    /// own; `batch`: batch mode, where no watermarks are generated.
    pub fn start(&mut self, now: Timestamp, auto_interval: Duration, batch: bool) {
        self.enabled = !batch;
        self.next_periodic = None;
        self.punctuated = self.strategy.emission() == WatermarkEmission::Punctuated;
        self.interval = match self.strategy.emission() {
            WatermarkEmission::PeriodicEvery(d) => ms(d),
            _ => ms(auto_interval),
        };
        // Punctuated generators are asked after each record; the periodic check still runs
        // when idleness must be detected.
        if self.enabled
            && self.interval > 0
            && (!self.punctuated || self.strategy.idleness().is_some())
        {
            self.next_periodic = Some(Timestamp(now.0.saturating_add(self.interval)));
        }
    }

    /// Watermarks at or below `watermark` are not emitted again (the restored position of a
    /// source whose subtask emitted it before a failure).
    pub fn restore_watermark(&mut self, watermark: Watermark) {
        self.emitted = self.emitted.max(watermark);
    }

    /// Adds a split: it holds the watermark back at its start until it sees records or goes
    /// idle.
    pub fn add_split(&mut self) -> SplitSlot {
        self.splits.push(Split {
            generator: self.strategy.create_generator(),
            idleness: self.strategy.idleness().map(|d| IdlenessTimer::new(ms(d))),
            watermark: Watermark::MIN,
            idle: false,
            finished: false,
        });
        SplitSlot(self.splits.len() - 1)
    }

    /// The split was read to its end: it no longer holds the watermark back.
    pub fn finish_split<O: Data>(&mut self, slot: SplitSlot, out: &mut Collector<O>) {
        if let Some(s) = self.splits.get_mut(slot.0) {
            s.finished = true;
        }
        self.combine(out);
    }

    /// The watermark emitted last (`Watermark::MIN` before the first).
    pub fn current(&self) -> Watermark {
        self.emitted
    }

    /// True if the subtask announced itself idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// A split's own watermark.
    pub fn split_watermark(&self, slot: SplitSlot) -> Option<Watermark> {
        self.splits.get(slot.0).map(|s| s.watermark)
    }

    /// A record of `slot` with the timestamp the external system gave it (`broker`): returns
    /// its event timestamp under the strategy and feeds the split's generator. Emit the
    /// record, then call [`emit_pending`](Self::emit_pending): a watermark the record raised
    /// goes out after it, as in Flink.
    #[inline]
    pub fn on_record(
        &mut self,
        slot: SplitSlot,
        record: &T,
        broker: Option<Timestamp>,
    ) -> Option<Timestamp> {
        let ts = self.strategy.timestamp(record, broker);
        if !self.enabled {
            return ts;
        }
        let Some(split) = self.splits.get_mut(slot.0) else {
            return ts;
        };
        if let Some(i) = split.idleness.as_mut() {
            i.activity(1);
        }
        split
            .generator
            .on_event(record, ts.unwrap_or(Timestamp::MIN), &mut self.scratch);
        if self.punctuated {
            split.generator.on_periodic_emit(&mut self.scratch);
        }
        if !self.scratch.actions.is_empty() && self.apply(slot.0) {
            self.pending = true;
        }
        ts
    }

    /// Emits what the records since the last call raised (see
    /// [`on_record`](Self::on_record)).
    #[inline]
    pub fn emit_pending<O: Data>(&mut self, out: &mut Collector<O>) {
        if self.pending {
            self.pending = false;
            self.combine(out);
        }
    }

    /// When [`on_periodic`](Self::on_periodic) is due next (`None`: never).
    pub fn next_periodic(&self) -> Option<Timestamp> {
        self.next_periodic
    }

    /// Periodic emission at processing time `now` (does nothing before it is due): each split
    /// checks idleness or asks its generator, then the combined watermark goes out if it rose.
    pub fn on_periodic<O: Data>(&mut self, now: Timestamp, out: &mut Collector<O>) {
        let Some(due) = self.next_periodic else {
            return;
        };
        if now < due {
            return;
        }
        self.next_periodic = Some(Timestamp(now.0.saturating_add(self.interval)));
        let mut changed = false;
        for i in 0..self.splits.len() {
            let split = &mut self.splits[i];
            if split.finished {
                continue;
            }
            if split
                .idleness
                .as_mut()
                .is_some_and(|t| t.check_if_idle(now))
            {
                self.scratch.mark_idle();
            } else if !self.punctuated {
                split.generator.on_periodic_emit(&mut self.scratch);
            }
            changed |= self.apply(i);
        }
        if changed || self.pending || self.splits.is_empty() {
            self.pending = false;
            self.combine(out);
        }
    }

    /// Applies the scratch output's actions to split `i`; true if its watermark or idleness
    /// changed.
    fn apply(&mut self, i: usize) -> bool {
        let mut changed = false;
        let split = &mut self.splits[i];
        for action in self.scratch.actions.drain(..) {
            match action {
                WatermarkAction::Emit(wm) => {
                    changed |= split.idle || wm > split.watermark;
                    split.idle = false;
                    split.watermark = split.watermark.max(wm);
                }
                WatermarkAction::Idle => {
                    changed |= !split.idle;
                    split.idle = true;
                }
                WatermarkAction::Active => {
                    changed |= split.idle;
                    split.idle = false;
                }
            }
        }
        changed
    }

    /// Emits the minimum over the active splits if it rose, or idleness if none is active.
    fn combine<O: Data>(&mut self, out: &mut Collector<O>) {
        if !self.enabled {
            return;
        }
        let min = self
            .splits
            .iter()
            .filter(|s| !s.finished && !s.idle)
            .map(|s| s.watermark)
            .min();
        match min {
            None => {
                if !self.idle {
                    self.idle = true;
                    out.emit_status(WatermarkStatus::Idle);
                }
            }
            Some(min) if min > self.emitted => {
                self.emitted = min;
                if self.idle {
                    self.idle = false;
                    out.emit_status(WatermarkStatus::Active);
                }
                out.emit_watermark(min);
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dataplane::data::Emission;

    /// The watermarks and statuses emitted, in order (records left out).
    fn controls(out: &mut Collector<i64>) -> Vec<String> {
        let mut e = Vec::new();
        out.take_emissions(&mut e);
        e.into_iter()
            .filter_map(|e| match e {
                Emission::Watermark(w) => Some(format!("wm {}", w.0)),
                Emission::Status(WatermarkStatus::Idle) => Some("idle".into()),
                Emission::Status(WatermarkStatus::Active) => Some("active".into()),
                _ => None,
            })
            .collect()
    }

    fn rec(wm: &mut SplitWatermarks<i64>, slot: SplitSlot, v: &i64, out: &mut Collector<i64>) {
        wm.on_record(slot, v, None);
        out.collect(*v);
        wm.emit_pending(out);
    }

    fn periodic(idle_ms: Option<u64>) -> SplitWatermarks<i64> {
        let mut s = WatermarkStrategy::<i64>::for_bounded_out_of_orderness_ms(5)
            .with_timestamp_assigner(|v, _| *v);
        if let Some(ms) = idle_ms {
            s = s.with_idleness(Duration::from_millis(ms));
        }
        let mut wm = SplitWatermarks::new(s);
        wm.start(Timestamp(0), Duration::from_millis(100), false);
        wm
    }

    #[test]
    fn an_empty_split_holds_the_watermark_back_until_idleness_releases_it() {
        let mut wm = periodic(Some(1000));
        let mut out = Collector::new();
        let (a, _b) = (wm.add_split(), wm.add_split());
        for t in [100, 200, 300] {
            rec(&mut wm, a, &t, &mut out);
        }
        let mut now = 100;
        wm.on_periodic(Timestamp(now), &mut out);
        assert_eq!(controls(&mut out), Vec::<String>::new(), "b holds it back");
        // b stays silent; a keeps receiving records, so only b goes idle.
        let mut seen = Vec::new();
        while now < 1500 {
            now += 100;
            rec(&mut wm, a, &(300 + now), &mut out);
            wm.on_periodic(Timestamp(now), &mut out);
            seen.extend(controls(&mut out));
        }
        // First check at 200 starts b's inactivity; idle once more than 1000 ms passed.
        assert_eq!(seen.first().map(String::as_str), Some("wm 1494"));
        assert_eq!(wm.current(), Watermark(300 + 1500 - 6));
    }

    #[test]
    fn without_idleness_the_silent_split_stalls_forever() {
        let mut wm = periodic(None);
        let mut out = Collector::new();
        let (a, _b) = (wm.add_split(), wm.add_split());
        for now in (100..10_000).step_by(100) {
            rec(&mut wm, a, &now, &mut out);
            wm.on_periodic(Timestamp(now), &mut out);
        }
        assert_eq!(controls(&mut out), Vec::<String>::new());
        assert_eq!(wm.current(), Watermark::MIN);
    }

    #[test]
    fn the_minimum_goes_out_only_when_it_rises() {
        let strategy = WatermarkStrategy::<i64>::for_monotonous_timestamps()
            .with_timestamp_assigner(|v, _| *v)
            .punctuated();
        let mut wm = SplitWatermarks::new(strategy);
        wm.start(Timestamp(0), Duration::from_millis(100), false);
        let mut out = Collector::new();
        let (a, b) = (wm.add_split(), wm.add_split());
        rec(&mut wm, a, &10, &mut out);
        rec(&mut wm, b, &20, &mut out);
        rec(&mut wm, b, &30, &mut out);
        rec(&mut wm, a, &25, &mut out);
        rec(&mut wm, a, &40, &mut out);
        assert_eq!(controls(&mut out), vec!["wm 9", "wm 24", "wm 29"]);
        // A finished split no longer holds back.
        wm.finish_split(b, &mut out);
        assert_eq!(controls(&mut out), vec!["wm 39"]);
        wm.finish_split(a, &mut out);
        assert_eq!(controls(&mut out), vec!["idle"]);
    }

    #[test]
    fn all_idle_then_active_again_never_regresses() {
        let mut wm = periodic(Some(150));
        let mut out = Collector::new();
        let a = wm.add_split();
        rec(&mut wm, a, &1000, &mut out);
        wm.on_periodic(Timestamp(100), &mut out);
        assert_eq!(controls(&mut out), vec!["wm 994"]);
        for now in [200, 300, 400] {
            wm.on_periodic(Timestamp(now), &mut out);
        }
        assert_eq!(controls(&mut out), vec!["idle"]);
        // Back with an older record: active again only with a higher watermark.
        rec(&mut wm, a, &900, &mut out);
        wm.on_periodic(Timestamp(500), &mut out);
        assert_eq!(controls(&mut out), Vec::<String>::new());
        rec(&mut wm, a, &2000, &mut out);
        wm.on_periodic(Timestamp(600), &mut out);
        assert_eq!(controls(&mut out), vec!["active", "wm 1994"]);
    }

    #[test]
    fn a_subtask_without_splits_is_idle_and_restored_watermarks_are_not_repeated() {
        let mut wm = periodic(None);
        let mut out = Collector::new();
        wm.on_periodic(Timestamp(100), &mut out);
        assert_eq!(controls(&mut out), vec!["idle"]);
        let mut wm = periodic(None);
        wm.restore_watermark(Watermark(500));
        let a = wm.add_split();
        rec(&mut wm, a, &400, &mut out);
        wm.on_periodic(Timestamp(100), &mut out);
        assert_eq!(controls(&mut out), Vec::<String>::new());
        rec(&mut wm, a, &600, &mut out);
        wm.on_periodic(Timestamp(200), &mut out);
        assert_eq!(controls(&mut out), vec!["wm 594"]);
    }

    #[test]
    fn batch_mode_generates_nothing_but_stamps_records() {
        let mut wm = periodic(None);
        wm.start(Timestamp(0), Duration::from_millis(100), true);
        let mut out = Collector::new();
        let a = wm.add_split();
        assert_eq!(wm.on_record(a, &42, None), Some(Timestamp(42)));
        wm.on_periodic(Timestamp(1000), &mut out);
        assert_eq!(controls(&mut out), Vec::<String>::new());
    }
}
