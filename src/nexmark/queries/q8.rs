//! q8 — new users: persons who registered and opened an auction in the same 10 s tumbling
//! window:
//!
//! ```sql
//! SELECT P.id, P.name, P.starttime FROM (
//!   SELECT id, name, window_start AS starttime, window_end AS endtime
//!   FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
//!   GROUP BY id, name, window_start, window_end
//! ) P JOIN (
//!   SELECT seller, window_start AS starttime, window_end AS endtime
//!   FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
//!   GROUP BY seller, window_start, window_end
//! ) A ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime
//! ```
//!
//! API: the window co-group of persons and auctions on `id = seller` over a tumbling
//! event-time window; one row per person (and window) with at least one auction.

use super::{DateTime, auctions, persons};
use crate::datastream::DataStream;
use crate::nexmark::model::{Auction, Event, Person};
use crate::window::{TumblingWindows, WindowTime};
use actorflow_runtime::{Collector, UserError};

/// q8's rows: `id, name, starttime`.
pub type Q8Row = (u64, String, DateTime);

/// q8 over `events`.
pub fn q8(events: &DataStream<Event>) -> Result<DataStream<Q8Row>, UserError> {
    Ok(persons(events)
        .co_group(&auctions(events))
        .where_(|p: &Person| p.id)
        .equal_to(|a: &Auction| a.seller)
        .window(TumblingWindows::new(10_000, 0, WindowTime::Event)?)
        .apply(
            |people: Vec<Person>, sold: Vec<Auction>, out: &mut Collector<Q8Row>| {
                if sold.is_empty() {
                    return Ok(());
                }
                let mut seen: Vec<(u64, &str)> = Vec::new();
                for p in &people {
                    if !seen.contains(&(p.id, p.name.as_str())) {
                        seen.push((p.id, p.name.as_str()));
                        // A tumbling window of 10 s from the epoch.
                        let start = p.date_time - p.date_time.rem_euclid(10_000);
                        out.collect((p.id, p.name.clone(), DateTime(start)));
                    }
                }
                Ok(())
            },
        )
        .name("q8"))
}
