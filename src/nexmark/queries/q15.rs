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
use std::collections::HashMap;

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
///
/// Each bidder (and auction) seen is kept once, with a bit per rank it had a bid in; the
/// distinct counts go up when a bit is first set. One map lookup per bid and column instead
/// of one per set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DistinctCounts {
    /// Bids in all, then per rank.
    bids: [u64; 4],
    /// Distinct bidders in all, then per rank.
    bidder_counts: [u64; 4],
    /// Distinct auctions in all, then per rank.
    auction_counts: [u64; 4],
    /// Per bidder: bit `r` set if it bid in rank `r` (1–3).
    bidders: HashMap<u64, u8>,
    /// Per auction: the same.
    auctions: HashMap<u64, u8>,
    /// The timer registered last (one per watermark advance).
    timer_at: Option<i64>,
}

/// Marks rank `r` of `id` in `seen`, counting what is new into `counts`.
#[inline]
fn mark(seen: &mut HashMap<u64, u8>, counts: &mut [u64; 4], id: u64, r: usize) {
    let bits = seen.entry(id).or_insert_with(|| {
        counts[0] += 1;
        0
    });
    if *bits & (1 << r) == 0 {
        *bits |= 1 << r;
        counts[r] += 1;
    }
}

impl DistinctCounts {
    /// Counts a bid.
    pub fn add(&mut self, b: &Bid) {
        let r = rank(b.price);
        self.bids[0] += 1;
        self.bids[r] += 1;
        mark(&mut self.bidders, &mut self.bidder_counts, b.bidder, r);
        mark(&mut self.auctions, &mut self.auction_counts, b.auction, r);
    }

    /// `total_bids, rank1..3_bids, total_bidders, rank1..3_bidders, total_auctions,
    /// rank1..3_auctions`.
    pub fn counts(&self) -> [u64; 12] {
        let mut c = [0u64; 12];
        c[..4].copy_from_slice(&self.bids);
        c[4..8].copy_from_slice(&self.bidder_counts);
        c[8..].copy_from_slice(&self.auction_counts);
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
