//! q18 — the last bid of each (bidder, auction):
//!
//! ```sql
//! SELECT auction, bidder, price, channel, url, dateTime, extra FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC)
//!     AS rank_number FROM bid)
//! WHERE rank_number <= 1
//! ```
//!
//! An updating query keyed by (bidder, auction) (Flink's deduplicate-keep-last on event
//! time). Bids with equal `dateTime` the SQL orders by arrival; here the one with the higher
//! price, then channel name, then extra wins, so results do not depend on parallelism. API: a
//! keyed `process` with one value per key.

use super::{Change, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event};
use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::{Collector, UserError};

/// q18's changes, keyed by (bidder, auction); the row is the bid.
pub type Q18Change = Change<(u64, u64), Bid>;

/// True if `a` replaces `b` as the last bid.
pub fn later_bid(a: &Bid, b: &Bid) -> bool {
    (a.date_time, a.price, a.channel(), a.extra.as_str())
        > (b.date_time, b.price, b.channel(), b.extra.as_str())
}

#[derive(Clone, Default)]
struct KeepLast {
    last: Option<ValueState<Option<Bid>>>,
}

impl KeyedProcessFunction<(u64, u64), Bid, Q18Change> for KeepLast {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.last = Some(ctx.state.value_state("last", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, (u64, u64)>,
        out: &mut Collector<Q18Change>,
    ) -> Result<(), UserError> {
        let Some(last) = self.last.as_ref() else {
            return Err("q18 used before open".into());
        };
        let replaced = last.modify(ctx.state(), |l| match l {
            Some(old) if !later_bid(&b, old) => false,
            _ => {
                *l = Some(b);
                true
            }
        })?;
        if replaced {
            out.collect(Change::Upsert(*ctx.current_key(), b));
        }
        Ok(())
    }
}

/// q18 over `events`.
pub fn q18(events: &DataStream<Event>) -> DataStream<Q18Change> {
    bids(events)
        .key_by(|b: &Bid| (b.bidder, b.auction))
        .process(KeepLast::default())
        .name("q18")
}
