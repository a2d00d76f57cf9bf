//! q3 — local item suggestion: `SELECT P.name, P.city, P.state, A.id FROM auction A INNER
//! JOIN person P ON A.seller = P.id WHERE A.category = 10 AND P.state IN ('OR', 'ID',
//! 'CA')`. An unwindowed inner join of two append-only streams, so its result only grows.
//! API: `connect` of two keyed streams with a `KeyedCoProcessFunction` holding the person
//! and the auctions still waiting for their seller (state grows with the input, as the
//! SQL's join state does without TTL).

use super::{auctions, persons};
use crate::datastream::DataStream;
use crate::nexmark::model::{Auction, Event, Person};
use actorflow_runtime::operators::{KeyedCoProcessFunction, KeyedContext, OpenContext};
use actorflow_runtime::state::keyed_state::{ListState, ValueState};
use actorflow_runtime::{Collector, UserError};

/// q3's rows: `name, city, state, id` (the auction's).
pub type Q3Row = (String, String, String, u64);

#[derive(Clone, Default)]
struct LocalSellers {
    seller: Option<ValueState<(String, String, String)>>,
    waiting: Option<ListState<u64>>,
}

impl KeyedCoProcessFunction<u64, Person, Auction, Q3Row> for LocalSellers {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.seller = Some(ctx.state.value_state("seller", None)?);
        self.waiting = Some(ctx.state.list_state("waiting-auctions", None)?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        p: Person,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q3Row>,
    ) -> Result<(), UserError> {
        let (seller, waiting) = (self.seller.as_ref(), self.waiting.as_ref());
        let (Some(seller), Some(waiting)) = (seller, waiting) else {
            return Err("q3 used before open".into());
        };
        for id in waiting.get(ctx.state())? {
            out.collect((p.name.clone(), p.city.clone(), p.state.clone(), id));
        }
        waiting.clear(ctx.state());
        seller.update(ctx.state(), (p.name, p.city, p.state))
    }

    fn process_element2(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Q3Row>,
    ) -> Result<(), UserError> {
        let (seller, waiting) = (self.seller.as_ref(), self.waiting.as_ref());
        let (Some(seller), Some(waiting)) = (seller, waiting) else {
            return Err("q3 used before open".into());
        };
        match seller.value(ctx.state())? {
            Some((name, city, state)) => out.collect((name, city, state, a.id)),
            None => waiting.add(ctx.state(), a.id)?,
        }
        Ok(())
    }
}

/// q3 over `events`.
pub fn q3(events: &DataStream<Event>) -> DataStream<Q3Row> {
    let people = persons(events).filter(|p| matches!(p.state.as_str(), "OR" | "ID" | "CA"));
    let sold = auctions(events).filter(|a| a.category == 10);
    people
        .key_by(|p: &Person| p.id)
        .connect(&sold.key_by(|a: &Auction| a.seller))
        .process(LocalSellers::default())
        .name("q3")
}
