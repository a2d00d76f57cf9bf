//! q12 — processing-time windows: bids per bidder in 10 s tumbling windows of **processing
//! time** (the results depend on speed; only the total count is deterministic):
//!
//! ```sql
//! SELECT B.bidder, count(*) AS bid_count,
//!   TUMBLE_START(B.p_time, INTERVAL '10' SECOND) AS starttime,
//!   TUMBLE_END(B.p_time, INTERVAL '10' SECOND) AS endtime
//! FROM (SELECT *, PROCTIME() AS p_time FROM bid) B
//! GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND)
//! ```
//!
//! API: a keyed processing-time tumbling window with an incremental count. At the end of a
//! bounded input in streaming mode a window still open is dropped, as in Flink (its
//! processing-time timers never fire); in BATCH mode every window fires at the end.

use super::q5::Count;
use super::{DateTime, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event};
use crate::window::{TumblingWindows, WindowTime};
use actorflow_runtime::operators::WindowContext;
use actorflow_runtime::time::window::TimeWindow;
use actorflow_runtime::{Collector, UserError};

/// q12's rows: `bidder, bid_count, starttime, endtime` (processing time).
pub type Q12Row = (u64, u64, DateTime, DateTime);

/// q12 over `events`.
pub fn q12(events: &DataStream<Event>) -> Result<DataStream<Q12Row>, UserError> {
    Ok(bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(TumblingWindows::new(10_000, 0, WindowTime::Processing)?)
        .aggregate_with(
            Count,
            |bidder: &u64,
             ctx: &mut WindowContext<'_, TimeWindow>,
             n: u64,
             out: &mut Collector<Q12Row>| {
                let w = ctx.window();
                out.collect((*bidder, n, DateTime(w.start), DateTime(w.end)));
                Ok(())
            },
        )
        .name("q12"))
}
