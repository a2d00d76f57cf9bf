//! q0 — pass-through: `SELECT auction, bidder, price, dateTime, extra FROM bid` (measures the
//! source and the framework). API: `flat_map` (the bid view) and `map`.

use super::{DateTime, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Event, PoolText};

/// q0's rows: `auction, bidder, price, dateTime, extra`.
pub type Q0Row = (u64, u64, u64, DateTime, PoolText);

/// q0 over `events`.
pub fn q0(events: &DataStream<Event>) -> DataStream<Q0Row> {
    bids(events)
        .map(|b| (b.auction, b.bidder, b.price, DateTime(b.date_time), b.extra))
        .name("q0")
}
