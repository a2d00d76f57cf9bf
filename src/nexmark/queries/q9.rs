//! q9 — winning bids: for each auction, its best bid between its open and its expiry, with
//! every column of both:
//!
//! ```sql
//! SELECT id, itemName, description, initialBid, reserve, dateTime, expires, seller,
//!   category, extra, auction, bidder, price, bid_dateTime, bid_extra FROM (
//!   SELECT A.*, B.auction, B.bidder, B.price, B.dateTime AS bid_dateTime,
//!     B.extra AS bid_extra,
//!     ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS rownum
//!   FROM auction A, bid B
//!   WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
//! ) WHERE rownum <= 1
//! ```
//!
//! An updating query (one row per auction, replaced when a better bid comes). Ties the SQL
//! leaves to arrival order are broken by bidder, channel and extra ([`super::better_bid`]).
//! API: `connect` of auctions and bids keyed by auction id, a `KeyedCoProcessFunction`.

use super::{Change, CsvRow, DateTime, auctions, better_bid, bids, write_fields};
use crate::datastream::DataStream;
use crate::nexmark::model::{Auction, Bid, Event};
use actorflow_runtime::operators::{KeyedCoProcessFunction, KeyedContext, OpenContext};
use actorflow_runtime::state::keyed_state::{ListState, ValueState};
use actorflow_runtime::{Collector, UserError};

/// q9's row: the auction's columns, then the winning bid's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q9Row {
    /// The auction.
    pub auction: Auction,
    /// Its best bid.
    pub bid: Bid,
}

impl CsvRow for Q9Row {
    fn write_csv(&self, out: &mut String) {
        let a = &self.auction;
        let b = &self.bid;
        write_fields(
            &[
                &a.id,
                &a.item_name,
                &a.description,
                &a.initial_bid,
                &a.reserve,
                &DateTime(a.date_time),
                &DateTime(a.expires),
                &a.seller,
                &a.category,
                &a.extra,
                &b.auction,
                &b.bidder,
                &b.price,
                &DateTime(b.date_time),
                &b.extra,
            ],
            out,
        );
    }
}

/// q9's changes, keyed by auction id.
pub type Q9Change = Change<u64, Q9Row>;

/// Per auction: when it is open (read for every bid, so small), the whole auction (read
/// only when its winner changes), the best bid, and bids that came before the auction.
#[derive(Clone, Default)]
struct WinningBid {
    open_between: Option<ValueState<(i64, i64)>>,
    auction: Option<ValueState<Auction>>,
    best: Option<ValueState<Bid>>,
    early: Option<ListState<Bid>>,
}

impl WinningBid {
    /// Takes bid `b` if it is the auction's best so far; `a` is the auction if at hand.
    fn offer(
        &self,
        ctx: &mut KeyedContext<'_, u64>,
        (start, expires): (i64, i64),
        a: Option<&Auction>,
        b: Bid,
        out: &mut Collector<Q9Change>,
    ) -> Result<(), UserError> {
        let (Some(best), Some(auction)) = (self.best.as_ref(), self.auction.as_ref()) else {
            return Err("q9 used before open".into());
        };
        if b.date_time < start || b.date_time > expires {
            return Ok(());
        }
        if best
            .value(ctx.state())?
            .is_none_or(|old| better_bid(&b, &old))
        {
            best.update(ctx.state(), b)?;
            let auction = match a {
                Some(a) => a.clone(),
                None => auction
                    .value(ctx.state())?
                    .ok_or("q9: an auction's window without the auction")?,
            };
            out.collect(Change::Upsert(auction.id, Q9Row { auction, bid: b }));
        }
        Ok(())
    }
}

impl KeyedCoProcessFunction<u64, Auction, Bid, Q9Change> for WinningBid {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.open_between = Some(ctx.state.value_state("open-between", None)?);
        self.auction = Some(ctx.state.value_state("auction", None)?);
        self.best = Some(ctx.state.value_state("best", None)?);
        self.early = Some(ctx.state.list_state("early-bids", None)?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q9Change>,
    ) -> Result<(), UserError> {
        let (Some(window), Some(auction), Some(early)) = (
            self.open_between.as_ref(),
            self.auction.as_ref(),
            self.early.as_ref(),
        ) else {
            return Err("q9 used before open".into());
        };
        let between = (a.date_time, a.expires);
        window.update(ctx.state(), between)?;
        for b in early.get(ctx.state())? {
            self.offer(ctx, between, Some(&a), b, out)?;
        }
        early.clear(ctx.state());
        auction.update(ctx.state(), a)
    }

    fn process_element2(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q9Change>,
    ) -> Result<(), UserError> {
        let (Some(window), Some(early)) = (self.open_between.as_ref(), self.early.as_ref()) else {
            return Err("q9 used before open".into());
        };
        match window.value(ctx.state())? {
            Some(between) => self.offer(ctx, between, None, b, out),
            None => early.add(ctx.state(), b),
        }
    }
}

/// q9 over `events`.
pub fn q9(events: &DataStream<Event>) -> DataStream<Q9Change> {
    auctions(events)
        .key_by(|a: &Auction| a.id)
        .connect(&bids(events).key_by(|b: &Bid| b.auction))
        .process(WinningBid::default())
        .name("q9")
}
