//! q17 — auction statistics per day:
//!
//! ```sql
//! SELECT auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd') AS `day`,
//!   count(*) AS total_bids,
//!   count(*) FILTER (WHERE price < 10000) AS rank1_bids,
//!   count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
//!   count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
//!   min(price) AS min_price, max(price) AS max_price,
//!   avg(price) AS avg_price, sum(price) AS sum_price
//! FROM bid GROUP BY auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd')
//! ```
//!
//! An updating query keyed by (auction, day); `avg` of `BIGINT` is integer division, as
//! in Flink. API: as q15 (a keyed `process`, rows once per watermark advance).

use super::q15::rank;
use super::{Change, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event, format_day};
use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::{Collector, Timestamp, UserError};

/// q17's rows: `auction, day, total_bids, rank1_bids, rank2_bids, rank3_bids, min_price,
/// max_price, avg_price, sum_price`.
pub type Q17Row = (u64, String, u64, u64, u64, u64, u64, u64, u64, u64);

/// q17's changes, keyed by (auction, day).
pub type Q17Change = Change<(u64, i64), Q17Row>;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Stats {
    bids: [u64; 4],
    min: u64,
    max: u64,
    sum: u64,
    timer_at: Option<i64>,
}

#[derive(Clone, Default)]
struct PerAuctionDay {
    stats: Option<ValueState<Stats>>,
}

impl KeyedProcessFunction<(u64, i64), Bid, Q17Change> for PerAuctionDay {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.stats = Some(ctx.state.value_state("stats", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, (u64, i64)>,
        _: &mut Collector<Q17Change>,
    ) -> Result<(), UserError> {
        let Some(stats) = self.stats.as_ref() else {
            return Err("q17 used before open".into());
        };
        let at = ctx.current_watermark().0.saturating_add(1);
        let arm = stats.modify(ctx.state(), |s| {
            if s.bids[0] == 0 {
                s.min = b.price;
            }
            s.bids[0] += 1;
            s.bids[rank(b.price)] += 1;
            s.min = s.min.min(b.price);
            s.max = s.max.max(b.price);
            s.sum += b.price;
            let arm = s.timer_at.is_none_or(|t| at > t);
            if arm {
                s.timer_at = Some(at);
            }
            arm
        })?;
        if arm {
            ctx.register_event_time_timer(Timestamp(at));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, (u64, i64)>,
        out: &mut Collector<Q17Change>,
    ) -> Result<(), UserError> {
        let Some(stats) = self.stats.as_ref() else {
            return Err("q17 used before open".into());
        };
        let (auction, day) = *ctx.current_key();
        let s = stats.modify(ctx.state(), |s| s.clone())?;
        out.collect(Change::Upsert(
            (auction, day),
            (
                auction,
                format_day(day * 86_400_000),
                s.bids[0],
                s.bids[1],
                s.bids[2],
                s.bids[3],
                s.min,
                s.max,
                s.sum / s.bids[0].max(1),
                s.sum,
            ),
        ));
        Ok(())
    }
}

/// q17 over `events`.
pub fn q17(events: &DataStream<Event>) -> DataStream<Q17Change> {
    bids(events)
        .key_by(|b: &Bid| (b.auction, b.date_time.div_euclid(86_400_000)))
        .process(PerAuctionDay::default())
        .name("q17")
}
