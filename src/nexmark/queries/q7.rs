//! q7 — highest bid: the bids whose price equals the highest price of their 10 s tumbling
//! window:
//!
//! ```sql
//! SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra FROM bid B JOIN (
//!   SELECT MAX(price) AS maxprice, window_end AS dateTime
//!   FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
//!   GROUP BY window_start, window_end
//! ) B1 ON B.price = B1.maxprice
//! WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime
//! ```
//!
//! (`BETWEEN` includes both ends: a bid at exactly a window's end also matches that
//! window's maximum, as in Flink.) API: `window_all` over a tumbling event-time window for
//! the maximum, then an event-time interval join keyed by price.

use super::{DateTime, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event, PoolText};
use crate::window::{TumblingWindows, WindowTime};
use actorflow_runtime::operators::{AggregateFunction, JoinContext, WindowContext};
use actorflow_runtime::time::window::TimeWindow;
use actorflow_runtime::{Collector, UserError};

/// q7's rows: `auction, price, bidder, dateTime, extra`.
pub type Q7Row = (u64, u64, u64, DateTime, PoolText);

/// The highest price.
#[derive(Clone, Copy, Default)]
struct MaxPrice;

impl AggregateFunction<Bid> for MaxPrice {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&mut self) -> u64 {
        0
    }
    #[inline]
    fn add(&mut self, b: Bid, acc: &mut u64) {
        *acc = (*acc).max(b.price);
    }
    fn get_result(&mut self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&mut self, a: &mut u64, b: u64) {
        *a = (*a).max(b);
    }
}

/// q7 over `events`.
pub fn q7(events: &DataStream<Event>) -> Result<DataStream<Q7Row>, UserError> {
    let all = bids(events);
    // (max price, window end); the record's time is the window's last instant, end - 1.
    let maxes = all
        .window_all(TumblingWindows::new(10_000, 0, WindowTime::Event)?)
        .aggregate_with(
            MaxPrice,
            |_: &(),
             ctx: &mut WindowContext<'_, TimeWindow>,
             max: u64,
             out: &mut Collector<(u64, i64)>| {
                out.collect((max, ctx.window().end));
                Ok(())
            },
        )
        .name("q7 max per window");
    // end - 10 s <= bid time <= end, with the max's time end - 1: the max is within
    // [bid time - 1, bid time + 9 999] of the bid.
    Ok(all
        .key_by(|b: &Bid| b.price)
        .interval_join(&maxes.key_by(|m: &(u64, i64)| m.0))
        .between(-1, 9_999)
        .process(
            |b: Bid, m: (u64, i64), _: &JoinContext, out: &mut Collector<Q7Row>| {
                if b.date_time >= m.1 - 10_000 && b.date_time <= m.1 {
                    out.collect((b.auction, b.price, b.bidder, DateTime(b.date_time), b.extra));
                }
                Ok(())
            },
        )
        .name("q7"))
}
