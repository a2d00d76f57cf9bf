//! q4 — average price per category:
//!
//! ```sql
//! SELECT Q.category, AVG(Q.final) FROM (
//!   SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
//!   WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
//!   GROUP BY A.id, A.category) Q
//! GROUP BY Q.category
//! ```
//!
//! An updating query. API: `connect` of auctions and bids keyed by auction id with a
//! `KeyedCoProcessFunction` (the auction, its winning price so far, bids that came before
//! their auction), emitting each change of an auction's winning price; then a keyed
//! `process` per category keeping the sum and count of winning prices. `AVG` of `BIGINT` is
//! a `BIGINT` in Flink (integer division), here too.

use super::{Change, auctions, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Auction, Bid, Event};
use actorflow_runtime::operators::{
    KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction, OpenContext,
};
use actorflow_runtime::state::keyed_state::{ListState, ValueState};
use actorflow_runtime::{Collector, UserError};

/// q4's changes: per category, `category, avg`.
pub type Q4Change = Change<u64, (u64, u64)>;

/// `(category, auction, old winning price, new winning price)`.
type Winning = (u64, u64, Option<u64>, u64);

#[derive(Clone, Default)]
struct WinningPrice {
    auction: Option<ValueState<(u64, i64, i64)>>,
    best: Option<ValueState<u64>>,
    early: Option<ListState<(i64, u64)>>,
}

impl WinningPrice {
    fn offer(
        &self,
        ctx: &mut KeyedContext<'_, u64>,
        (category, start, expires): (u64, i64, i64),
        ts: i64,
        price: u64,
        out: &mut Collector<Winning>,
    ) -> Result<(), UserError> {
        let Some(best) = self.best.as_ref() else {
            return Err("q4 used before open".into());
        };
        if ts < start || ts > expires {
            return Ok(());
        }
        let old = best.value(ctx.state())?;
        if old.is_none_or(|o| price > o) {
            best.update(ctx.state(), price)?;
            out.collect((category, *ctx.current_key(), old, price));
        }
        Ok(())
    }
}

impl KeyedCoProcessFunction<u64, Auction, Bid, Winning> for WinningPrice {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.auction = Some(ctx.state.value_state("auction", None)?);
        self.best = Some(ctx.state.value_state("best", None)?);
        self.early = Some(ctx.state.list_state("early-bids", None)?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Winning>,
    ) -> Result<(), UserError> {
        let (Some(auction), Some(early)) = (self.auction.as_ref(), self.early.as_ref()) else {
            return Err("q4 used before open".into());
        };
        let info = (a.category, a.date_time, a.expires);
        auction.update(ctx.state(), info)?;
        for (ts, price) in early.get(ctx.state())? {
            self.offer(ctx, info, ts, price, out)?;
        }
        early.clear(ctx.state());
        Ok(())
    }

    fn process_element2(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Winning>,
    ) -> Result<(), UserError> {
        let (Some(auction), Some(early)) = (self.auction.as_ref(), self.early.as_ref()) else {
            return Err("q4 used before open".into());
        };
        match auction.value(ctx.state())? {
            Some(info) => self.offer(ctx, info, b.date_time, b.price, out),
            None => early.add(ctx.state(), (b.date_time, b.price)),
        }
    }
}

/// q4 over `events`.
pub fn q4(events: &DataStream<Event>) -> DataStream<Q4Change> {
    let winning = auctions(events)
        .key_by(|a: &Auction| a.id)
        .connect(&bids(events).key_by(|b: &Bid| b.auction))
        .process(WinningPrice::default())
        .name("q4 winning prices");
    winning
        .key_by(|w: &Winning| w.0)
        .process(CategoryAverage::default())
        .name("q4")
}

/// Per category: the sum and count of its auctions' winning prices.
#[derive(Clone, Default)]
struct CategoryAverage {
    totals: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction<u64, Winning, Q4Change> for CategoryAverage {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.totals = Some(ctx.state.value_state("sum-count", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (category, _auction, old, new): Winning,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q4Change>,
    ) -> Result<(), UserError> {
        let Some(totals) = self.totals.as_ref() else {
            return Err("q4 used before open".into());
        };
        let avg = totals.modify(ctx.state(), |(sum, count)| {
            match old {
                Some(o) => *sum = *sum + new - o,
                None => {
                    *sum += new;
                    *count += 1;
                }
            }
            *sum / (*count).max(1)
        })?;
        out.collect(Change::Upsert(category, (category, avg)));
        Ok(())
    }
}
