//! q1 — currency conversion: `SELECT auction, bidder, 0.908 * price AS price, dateTime, extra
//! FROM bid`. API: `map`.

use super::{DateTime, Euro, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Event, PoolText};

/// q1's rows: `auction, bidder, price (euros, DECIMAL(23,3)), dateTime, extra`.
pub type Q1Row = (u64, u64, Euro, DateTime, PoolText);

/// q1 over `events`.
pub fn q1(events: &DataStream<Event>) -> DataStream<Q1Row> {
    bids(events)
        .map(|b| {
            (
                b.auction,
                b.bidder,
                Euro::of(b.price),
                DateTime(b.date_time),
                b.extra,
            )
        })
        .name("q1")
}
