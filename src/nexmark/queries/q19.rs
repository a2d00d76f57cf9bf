//! q19 — the ten highest bids of each auction, ranked:
//!
//! ```sql
//! SELECT * FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
//!   FROM bid)
//! WHERE rank_number <= 10
//! ```
//!
//! An updating query keyed by (auction, rank) (Flink's Top-N). Equal prices the SQL orders
//! by arrival; here earlier `dateTime`, then bidder, channel and extra rank higher
//! ([`super::better_bid`]). API: a keyed `process` holding each auction's top ten; a new bid
//! that enters it emits the ranks that changed.

use super::{Change, CsvField, CsvRow, better_bid, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event};
use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::{Collector, UserError};

/// How many bids per auction.
pub const TOP: usize = 10;

/// q19's row: the bid's columns, then `rank_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q19Row {
    /// The bid.
    pub bid: Bid,
    /// Its rank in its auction, from 1.
    pub rank: u64,
}

impl CsvRow for Q19Row {
    fn write_csv(&self, out: &mut String) {
        self.bid.write_csv(out);
        out.push(',');
        self.rank.write_field(out);
    }
}

/// q19's changes, keyed by (auction, rank).
pub type Q19Change = Change<(u64, u64), Q19Row>;

#[derive(Clone, Default)]
struct TopBids {
    top: Option<ValueState<Vec<Bid>>>,
}

impl KeyedProcessFunction<u64, Bid, Q19Change> for TopBids {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.top = Some(ctx.state.value_state("top", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q19Change>,
    ) -> Result<(), UserError> {
        let Some(top) = self.top.as_ref() else {
            return Err("q19 used before open".into());
        };
        let auction = *ctx.current_key();
        top.modify(ctx.state(), |t| {
            let at = t.iter().position(|x| better_bid(&b, x)).unwrap_or(t.len());
            if at >= TOP {
                return;
            }
            t.insert(at, b);
            t.truncate(TOP);
            // Every rank from the new bid's down moved (or is new).
            for (i, x) in t.iter().enumerate().skip(at) {
                let rank = i as u64 + 1;
                out.collect(Change::Upsert((auction, rank), Q19Row { bid: *x, rank }));
            }
        })?;
        Ok(())
    }
}

/// q19 over `events`.
pub fn q19(events: &DataStream<Event>) -> DataStream<Q19Change> {
    bids(events)
        .key_by(|b: &Bid| b.auction)
        .process(TopBids::default())
        .name("q19")
}
