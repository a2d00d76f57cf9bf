//! q15 — bidding statistics per day:
//!
//! ```sql
//! SELECT DATE_FORMAT(dateTime, 'yyyy-MM-dd') AS `day`,
//!   count(*) AS total_bids,
//!   count(*) FILTER (WHERE price < 10000) AS rank1_bids,
//!   count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
//!   count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
//!   count(DISTINCT bidder) AS total_bidders,
//!   count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, .. rank2, rank3,
//!   count(DISTINCT auction) AS total_auctions,
//!   count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, .. rank2, rank3
//! FROM bid GROUP BY DATE_FORMAT(dateTime, 'yyyy-MM-dd')
//! ```
//!
//! An updating query, one row per day. API: a keyed `process` with keyed state (the counts
//! and the distinct sets, changed in place with `ValueState::modify`) that emits a day's row
//! once per watermark advance in which it changed (an event-time timer just past the current
//! watermark: Flink's mini-batch, driven by event time), and at the end.

use super::{Change, CsvField, CsvRow, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event, format_day};
use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::{Collector, Timestamp, UserError};
use std::collections::HashSet;

/// The price rank of a bid: 1 below 10 000, 2 below 1 000 000, else 3.
pub(crate) fn rank(price: u64) -> usize {
    if price < 10_000 {
        1
    } else if price < 1_000_000 {
        2
    } else {
        3
    }
}

/// Counts of bids, distinct bidders and distinct auctions, in all and per price rank.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DistinctCounts {
    bids: [u64; 4],
    bidders: [HashSet<u64>; 4],
    auctions: [HashSet<u64>; 4],
    /// The timer registered last (one per watermark advance).
    timer_at: Option<i64>,
}

impl DistinctCounts {
    /// Counts a bid.
    pub fn add(&mut self, b: &Bid) {
        let r = rank(b.price);
        for i in [0, r] {
            self.bids[i] += 1;
            self.bidders[i].insert(b.bidder);
            self.auctions[i].insert(b.auction);
        }
    }

    /// `total_bids, rank1..3_bids, total_bidders, rank1..3_bidders, total_auctions,
    /// rank1..3_auctions`.
    pub fn counts(&self) -> [u64; 12] {
        let mut c = [0u64; 12];
        for i in 0..4 {
            c[i] = self.bids[i];
            c[4 + i] = self.bidders[i].len() as u64;
            c[8 + i] = self.auctions[i].len() as u64;
        }
        c
    }

    /// Registers a timer just past the watermark unless one is registered already; the
    /// caller emits when it fires.
    pub(crate) fn arm(&mut self, ctx: &mut TimerArm) -> Option<Timestamp> {
        let at = ctx.watermark.saturating_add(1);
        self.timer_at.is_none_or(|t| at > t).then(|| {
            self.timer_at = Some(at);
            Timestamp(at)
        })
    }
}

/// What `arm` needs of the context.
pub(crate) struct TimerArm {
    pub(crate) watermark: i64,
}

/// q15's row: the day, then the twelve counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q15Row {
    /// `yyyy-MM-dd`.
    pub day: String,
    /// The counts in the SQL's order.
    pub counts: [u64; 12],
}

impl CsvRow for Q15Row {
    fn write_csv(&self, out: &mut String) {
        self.day.write_field(out);
        for c in &self.counts {
            out.push(',');
            c.write_field(out);
        }
    }
}

/// q15's changes, keyed by day (days since the epoch).
pub type Q15Change = Change<i64, Q15Row>;

#[derive(Clone, Default)]
struct PerDay {
    counts: Option<ValueState<DistinctCounts>>,
}

impl KeyedProcessFunction<i64, Bid, Q15Change> for PerDay {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.counts = Some(ctx.state.value_state("counts", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, i64>,
        _: &mut Collector<Q15Change>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q15 used before open".into());
        };
        let mut arm = TimerArm {
            watermark: ctx.current_watermark().0,
        };
        if let Some(at) = counts.modify(ctx.state(), |c| {
            c.add(&b);
            c.arm(&mut arm)
        })? {
            ctx.register_event_time_timer(at);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<Q15Change>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q15 used before open".into());
        };
        let day = *ctx.current_key();
        let c = counts.modify(ctx.state(), |c| c.counts())?;
        out.collect(Change::Upsert(
            day,
            Q15Row {
                day: format_day(day * 86_400_000),
                counts: c,
            },
        ));
        Ok(())
    }
}

/// q15 over `events`.
pub fn q15(events: &DataStream<Event>) -> DataStream<Q15Change> {
    bids(events)
        .key_by(|b: &Bid| b.date_time.div_euclid(86_400_000))
        .process(PerDay::default())
        .name("q15")
}
