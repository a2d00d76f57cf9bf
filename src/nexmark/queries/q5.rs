//! q5 — hot items: for each sliding window (10 s, every 2 s), the auction(s) with the most
//! bids, ties kept:
//!
//! ```sql
//! SELECT AuctionBids.auction, AuctionBids.num FROM (
//!   SELECT B1.auction, count(*) AS num, HOP_START(..) AS starttime, HOP_END(..) AS endtime
//!   FROM bid B1 GROUP BY B1.auction, HOP(B1.dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
//! ) AuctionBids JOIN (
//!   SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM (..same..) CountBids
//!   GROUP BY CountBids.starttime, CountBids.endtime
//! ) MaxBids ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
//!   AND AuctionBids.num >= MaxBids.maxn
//! ```
//!
//! Two formulations:
//!
//! * [`q5`] (the one the runner and the table use): panes, as Flink's SQL slices sliding
//!   windows. A keyed `process` per 2 s pane counts bids per auction (one map update per
//!   bid); when the pane is complete (an event-time timer at its end) its counts go to the
//!   five windows that contain it; a keyed `process` per window adds them up and, at the
//!   window's end, emits the auctions with the most. Parallelism is bounded by the panes and
//!   windows alive at once.
//! * [`q5_windowed`] (`--query q5w`): the textbook plan — a keyed sliding event-time window
//!   counting bids per auction (`aggregate_with`, the window's bounds from its context), then
//!   a keyed `process` per window that gathers the counts and emits the maximal ones. It
//!   spreads over any parallelism but keeps a timer and an accumulator per auction and
//!   window.

use super::bids;
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event};
use crate::window::{SlidingWindows, WindowTime};
use actorflow_runtime::operators::{
    AggregateFunction, KeyedContext, KeyedProcessFunction, OpenContext, WindowContext,
};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::time::window::TimeWindow;
use actorflow_runtime::{Collector, Timestamp, UserError};
use std::sync::Arc;

/// q5's rows: `auction, num`.
pub type Q5Row = (u64, u64);

/// Counts records.
#[derive(Clone, Copy, Default)]
pub(crate) struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&mut self) -> u64 {
        0
    }
    #[inline]
    fn add(&mut self, _: T, acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&mut self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&mut self, a: &mut u64, b: u64) {
        *a += b;
    }
}

/// Emits the auctions with the most bids of one window (all of them on a tie).
fn emit_hottest(counts: impl IntoIterator<Item = (u64, u64)>, out: &mut Collector<Q5Row>) {
    let all: Vec<(u64, u64)> = counts.into_iter().collect();
    let max = all.iter().map(|c| c.1).max().unwrap_or(0);
    for (auction, n) in all {
        if n >= max {
            out.collect((auction, n));
        }
    }
}

/// `(window start, window end, auction, bids)`.
type AuctionCount = (i64, i64, u64, u64);

#[derive(Clone, Default)]
struct HottestPerWindow {
    counts: Option<ValueState<Vec<(u64, u64)>>>,
}

impl KeyedProcessFunction<i64, AuctionCount, Q5Row> for HottestPerWindow {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.counts = Some(ctx.state.value_state("counts", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (_, end, auction, n): AuctionCount,
        ctx: &mut KeyedContext<'_, i64>,
        _: &mut Collector<Q5Row>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q5 used before open".into());
        };
        counts.modify(ctx.state(), |c| c.push((auction, n)))?;
        // Every count of this window carries the window's last instant as its time: once
        // the watermark passes it, all of them have arrived.
        ctx.register_event_time_timer(Timestamp(end - 1));
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<Q5Row>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q5 used before open".into());
        };
        let all = counts.modify(ctx.state(), std::mem::take)?;
        counts.clear(ctx.state());
        emit_hottest(all, out);
        Ok(())
    }
}

/// Bids per auction.
type Counts = std::collections::HashMap<u64, u64>;

/// Per 2 s pane: bids per auction; when the pane is complete, its counts go to the five
/// windows that contain it.
#[derive(Clone, Default)]
struct PaneCounts {
    counts: Option<ValueState<Counts>>,
}

impl KeyedProcessFunction<i64, (i64, u64), (i64, Arc<Counts>)> for PaneCounts {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.counts = Some(ctx.state.value_state("pane-counts", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (pane, auction): (i64, u64),
        ctx: &mut KeyedContext<'_, i64>,
        _: &mut Collector<(i64, Arc<Counts>)>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q5 used before open".into());
        };
        let first = counts.modify(ctx.state(), |c| {
            let n = c.entry(auction).or_default();
            *n += 1;
            *n == 1 && c.len() == 1
        })?;
        if first {
            // The pane's last instant: once the watermark passes it, its bids are in.
            ctx.register_event_time_timer(Timestamp(pane + SLIDE - 1));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<(i64, Arc<Counts>)>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q5 used before open".into());
        };
        let pane = *ctx.current_key();
        let all = Arc::new(counts.modify(ctx.state(), std::mem::take)?);
        counts.clear(ctx.state());
        // Windows [s, s + 10 s) holding the pane: s = pane - 8 s, …, pane.
        let mut s = pane;
        while s > pane - SIZE {
            out.collect((s, all.clone()));
            s -= SLIDE;
        }
        Ok(())
    }
}

/// Per window: its panes' counts added up; at the window's end, the hottest auctions.
#[derive(Clone, Default)]
struct HottestOfPanes {
    counts: Option<ValueState<Counts>>,
}

impl KeyedProcessFunction<i64, (i64, Arc<Counts>), Q5Row> for HottestOfPanes {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.counts = Some(ctx.state.value_state("window-counts", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (start, pane): (i64, Arc<Counts>),
        ctx: &mut KeyedContext<'_, i64>,
        _: &mut Collector<Q5Row>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q5 used before open".into());
        };
        let first = counts.modify(ctx.state(), |c| {
            let first = c.is_empty();
            for (a, n) in pane.iter() {
                *c.entry(*a).or_default() += n;
            }
            first
        })?;
        if first {
            ctx.register_event_time_timer(Timestamp(start + SIZE - 1));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<Q5Row>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q5 used before open".into());
        };
        let all = counts.modify(ctx.state(), std::mem::take)?;
        counts.clear(ctx.state());
        emit_hottest(all, out);
        Ok(())
    }
}

/// The window size and slide, ms.
const SIZE: i64 = 10_000;
const SLIDE: i64 = 2_000;

/// q5 over `events`, by panes (see the module docs).
pub fn q5(events: &DataStream<Event>) -> Result<DataStream<Q5Row>, UserError> {
    Ok(bids(events)
        .map(|b| (b.date_time.div_euclid(SLIDE) * SLIDE, b.auction))
        .key_by(|p: &(i64, u64)| p.0)
        .process(PaneCounts::default())
        .name("q5 bids per auction and pane")
        .key_by(|w: &(i64, Arc<Counts>)| w.0)
        .process(HottestOfPanes::default())
        .name("q5"))
}

/// q5 over `events` as a sliding window per auction (see the module docs).
pub fn q5_windowed(events: &DataStream<Event>) -> Result<DataStream<Q5Row>, UserError> {
    let counts = bids(events)
        .key_by(|b: &Bid| b.auction)
        .window(SlidingWindows::new(10_000, 2_000, 0, WindowTime::Event)?)
        .aggregate_with(
            Count,
            |auction: &u64,
             ctx: &mut WindowContext<'_, TimeWindow>,
             n: u64,
             out: &mut Collector<AuctionCount>| {
                let w = ctx.window();
                out.collect((w.start, w.end, *auction, n));
                Ok(())
            },
        )
        .name("q5 bids per auction and window");
    Ok(counts
        .key_by(|c: &AuctionCount| c.0)
        .process(HottestPerWindow::default())
        .name("q5w"))
}
