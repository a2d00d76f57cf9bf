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
//! `BETWEEN` includes both ends, so a window `[s, s + 10 s)` takes its maximum over its own
//! bids and matches the bids of `[s, s + 10 s]`: one at exactly the end also matches (as in
//! Flink). API: a keyed `process` per window (keyed by the window's start; a bid at a
//! window's end goes to both windows), which keeps the maximum so far and only the bids
//! that reach it, and emits them on an event-time timer at the window's end. A join of all
//! bids with the maxima (an interval join) would hold every bid of the window in state.

use super::{DateTime, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event, PoolText};
use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::{Collector, Timestamp, UserError};

/// q7's rows: `auction, price, bidder, dateTime, extra`.
pub type Q7Row = (u64, u64, u64, DateTime, PoolText);

/// The window size, ms.
const SIZE: i64 = 10_000;

/// A bid sent to the window starting at `start`; `own` is false for a bid at that window's
/// end, which may match its maximum but does not count towards it.
type Routed = (i64, bool, Bid);

/// Per window: the highest price of its own bids, and the bids (its own or at its end) at
/// or above it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Highest {
    max: Option<u64>,
    candidates: Vec<Bid>,
}

#[derive(Clone, Default)]
struct HighestBids {
    state: Option<ValueState<Highest>>,
}

impl KeyedProcessFunction<i64, Routed, Q7Row> for HighestBids {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.state = Some(ctx.state.value_state("highest", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (start, own, b): Routed,
        ctx: &mut KeyedContext<'_, i64>,
        _: &mut Collector<Q7Row>,
    ) -> Result<(), UserError> {
        let Some(state) = self.state.as_ref() else {
            return Err("q7 used before open".into());
        };
        let first = state.modify(ctx.state(), |h| {
            let first = h.max.is_none() && h.candidates.is_empty();
            if own && h.max.is_none_or(|m| b.price > m) {
                h.max = Some(b.price);
                h.candidates.retain(|c| c.price >= b.price);
            }
            if h.max.is_none_or(|m| b.price >= m) {
                h.candidates.push(b);
            }
            first
        })?;
        if first {
            // Every bid with a time up to the window's end has arrived once the watermark
            // reaches it.
            ctx.register_event_time_timer(Timestamp(start + SIZE));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<Q7Row>,
    ) -> Result<(), UserError> {
        let Some(state) = self.state.as_ref() else {
            return Err("q7 used before open".into());
        };
        let h = state.modify(ctx.state(), std::mem::take)?;
        state.clear(ctx.state());
        // A window whose own bids are all missing has no maximum and no result.
        if let Some(max) = h.max {
            for b in h.candidates.iter().filter(|b| b.price == max) {
                out.collect((b.auction, b.price, b.bidder, DateTime(b.date_time), b.extra));
            }
        }
        Ok(())
    }
}

/// q7 over `events`.
pub fn q7(events: &DataStream<Event>) -> Result<DataStream<Q7Row>, UserError> {
    Ok(bids(events)
        .flat_map(|b: Bid, out: &mut actorflow_runtime::Collector<Routed>| {
            let start = b.date_time.div_euclid(SIZE) * SIZE;
            out.collect((start, true, b));
            if b.date_time == start {
                // At the previous window's end: a candidate for it too.
                out.collect((start - SIZE, false, b));
            }
        })
        .key_by(|r: &Routed| r.0)
        .process(HighestBids::default())
        .name("q7"))
}
