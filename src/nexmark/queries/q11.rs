//! q11 — user sessions: bids per bidder and session (gap 10 s):
//!
//! ```sql
//! SELECT B.bidder, count(*) AS bid_count,
//!   SESSION_START(B.dateTime, INTERVAL '10' SECOND) AS starttime,
//!   SESSION_END(B.dateTime, INTERVAL '10' SECOND) AS endtime
//! FROM bid B GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND)
//! ```
//!
//! API: a keyed event-time session window (merging windows) with an incremental count.

use super::q5::Count;
use super::{DateTime, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event};
use crate::window::SessionWindows;
use actorflow_runtime::operators::WindowContext;
use actorflow_runtime::time::window::TimeWindow;
use actorflow_runtime::{Collector, UserError};

/// q11's rows: `bidder, bid_count, starttime, endtime`.
pub type Q11Row = (u64, u64, DateTime, DateTime);

/// q11 over `events`.
pub fn q11(events: &DataStream<Event>) -> Result<DataStream<Q11Row>, UserError> {
    Ok(bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(SessionWindows::<Bid>::event_time(10_000)?)
        .aggregate_with(
            Count,
            |bidder: &u64,
             ctx: &mut WindowContext<'_, TimeWindow>,
             n: u64,
             out: &mut Collector<Q11Row>| {
                let w = ctx.window();
                out.collect((*bidder, n, DateTime(w.start), DateTime(w.end)));
                Ok(())
            },
        )
        .name("q11"))
}
