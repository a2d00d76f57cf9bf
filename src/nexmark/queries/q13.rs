//! q13 — bounded side input join: each bid enriched from a static table keyed by
//! `auction % 10000`:
//!
//! ```sql
//! SELECT B.auction, B.bidder, B.price, B.dateTime, S.value
//! FROM (SELECT *, PROCTIME() AS p_time FROM bid) B
//! JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON mod(B.auction, 10000) = S.key
//! ```
//!
//! The side input is a file of `key,value` lines (`data/nexmark-side-input.csv`: 10 000
//! keys). API: a rich `map` that loads the table in `open` (a lookup join against a static
//! table); bids whose key is missing are dropped, as the inner join drops them.

use super::{DateTime, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event};
use actorflow_runtime::operators::rich::{FlatMapFunction, RichFunction};
use actorflow_runtime::{Collector, TaskInfo, UserError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// q13's rows: `auction, bidder, price, dateTime, value`.
pub type Q13Row = (u64, u64, u64, DateTime, String);

/// Reads a side-input file of `key,value` lines.
///
/// # Errors
///
/// An unreadable file, or a line that is not `key,value` with an integer key (named with
/// its line number).
pub fn side_input(path: &Path) -> Result<HashMap<u64, String>, UserError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("q13: cannot read the side input {}: {e}", path.display()))?;
    let mut table = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(',')
            .ok_or_else(|| format!("{}:{}: expected key,value", path.display(), i + 1))?;
        let k = k
            .trim()
            .parse()
            .map_err(|_| format!("{}:{}: the key is not an integer", path.display(), i + 1))?;
        table.insert(k, v.to_string());
    }
    Ok(table)
}

#[derive(Clone)]
struct Lookup {
    path: PathBuf,
    table: Arc<HashMap<u64, String>>,
}

impl RichFunction for Lookup {
    fn open(&mut self, _: &TaskInfo) -> Result<(), UserError> {
        self.table = Arc::new(side_input(&self.path)?);
        Ok(())
    }
}

impl FlatMapFunction<Bid, Q13Row> for Lookup {
    fn flat_map(&mut self, b: Bid, out: &mut Collector<Q13Row>) -> Result<(), UserError> {
        if let Some(v) = self.table.get(&(b.auction % 10_000)) {
            out.collect((
                b.auction,
                b.bidder,
                b.price,
                DateTime(b.date_time),
                v.clone(),
            ));
        }
        Ok(())
    }
}

/// q13 over `events`, joining the side input file at `side_input`.
pub fn q13(events: &DataStream<Event>, side_input: &Path) -> DataStream<Q13Row> {
    bids(events)
        .rich_flat_map(Lookup {
            path: side_input.to_path_buf(),
            table: Arc::default(),
        })
        .name("q13")
}
