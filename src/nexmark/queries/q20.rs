//! q20 — expanded bids: every bid of a category-10 auction with the auction's columns:
//!
//! ```sql
//! SELECT auction, bidder, price, channel, url, B.dateTime, B.extra,
//!   itemName, description, initialBid, reserve, A.dateTime, expires, seller, category, A.extra
//! FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id WHERE A.category = 10
//! ```
//!
//! An unwindowed inner join of append-only streams: its result only grows. API: `connect`
//! of bids and auctions keyed by auction id with a `KeyedCoProcessFunction` (the auction,
//! and bids that came before it; bids of other categories are dropped once their auction
//! is known).

use super::{CsvRow, DateTime, auctions, bids, write_fields};
use crate::datastream::DataStream;
use crate::nexmark::model::{Auction, Bid, Event};
use actorflow_runtime::operators::{KeyedCoProcessFunction, KeyedContext, OpenContext};
use actorflow_runtime::state::keyed_state::{ListState, ValueState};
use actorflow_runtime::{Collector, UserError};
use std::sync::Arc;

/// q20's row: the bid, then its auction (shared by the auction's rows).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q20Row {
    /// The bid.
    pub bid: Bid,
    /// Its auction.
    pub auction: Arc<Auction>,
}

impl CsvRow for Q20Row {
    fn write_csv(&self, out: &mut String) {
        let (b, a) = (&self.bid, &*self.auction);
        write_fields(
            &[
                &b.auction,
                &b.bidder,
                &b.price,
                &b.channel(),
                &b.url(),
                &DateTime(b.date_time),
                &b.extra,
                &a.item_name,
                &a.description,
                &a.initial_bid,
                &a.reserve,
                &DateTime(a.date_time),
                &DateTime(a.expires),
                &a.seller,
                &a.category,
                &a.extra,
            ],
            out,
        );
    }
}

/// `Some(auction)` for category 10, `None` for others.
type Known = Option<Arc<Auction>>;

#[derive(Clone, Default)]
struct ExpandBids {
    auction: Option<ValueState<Known>>,
    early: Option<ListState<Bid>>,
}

impl KeyedCoProcessFunction<u64, Bid, Auction, Q20Row> for ExpandBids {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.auction = Some(ctx.state.value_state("auction", None)?);
        self.early = Some(ctx.state.list_state("early-bids", None)?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q20Row>,
    ) -> Result<(), UserError> {
        let (Some(auction), Some(early)) = (self.auction.as_ref(), self.early.as_ref()) else {
            return Err("q20 used before open".into());
        };
        match auction.value(ctx.state())? {
            Some(Some(a)) => out.collect(Q20Row { bid: b, auction: a }),
            Some(None) => {}
            None => early.add(ctx.state(), b)?,
        }
        Ok(())
    }

    fn process_element2(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q20Row>,
    ) -> Result<(), UserError> {
        let (Some(auction), Some(early)) = (self.auction.as_ref(), self.early.as_ref()) else {
            return Err("q20 used before open".into());
        };
        let known = (a.category == 10).then(|| Arc::new(a));
        if let Some(a) = &known {
            for b in early.get(ctx.state())? {
                out.collect(Q20Row {
                    bid: b,
                    auction: a.clone(),
                });
            }
        }
        early.clear(ctx.state());
        auction.update(ctx.state(), known)
    }
}

/// q20 over `events`.
pub fn q20(events: &DataStream<Event>) -> DataStream<Q20Row> {
    bids(events)
        .key_by(|b: &Bid| b.auction)
        .connect(&auctions(events).key_by(|a: &Auction| a.id))
        .process(ExpandBids::default())
        .name("q20")
}
