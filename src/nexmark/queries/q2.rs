//! q2 — selection: `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`. API:
//! `filter`, `map`.

use super::bids;
use crate::datastream::DataStream;
use crate::nexmark::model::Event;

/// q2's rows: `auction, price`.
pub type Q2Row = (u64, u64);

/// q2 over `events`.
pub fn q2(events: &DataStream<Event>) -> DataStream<Q2Row> {
    bids(events)
        .filter(|b| b.auction % 123 == 0)
        .map(|b| (b.auction, b.price))
        .name("q2")
}
