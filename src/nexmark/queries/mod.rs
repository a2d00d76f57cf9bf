//! The Nexmark queries as ordinary actorflow programs, one file each, written as a user
//! would: the event stream, filters and maps, keyed windows, joins and keyed process
//! functions. Each `qN` takes the stream of [`Event`]s (timestamped, with the suite's 4 s
//! bounded out-of-orderness watermarks: [`super::events`]) and returns its result rows.
//!
//! Queries whose SQL result is a table that changes (q4, q9, q15–q19) return a changelog of
//! [`Change`]s keyed as the SQL's `GROUP BY` or primary key (an upsert stream); the others
//! append rows. `docs/nexmark.md` lists the queries, the API each uses, and where a detail
//! is our choice (ties).

use super::model::{Auction, Bid, Event, Person, PoolText, format_time};
use crate::datastream::DataStream;
use actorflow_runtime::{Collector, Data};
use std::fmt::Write as _;

mod q0;
mod q1;
mod q10;
mod q11;
mod q12;
mod q13;
mod q14;
mod q15;
mod q16;
mod q17;
mod q18;
mod q19;
mod q2;
mod q20;
mod q21;
mod q22;
mod q3;
mod q4;
mod q5;
mod q7;
mod q8;
mod q9;

pub use q0::*;
pub use q1::*;
pub use q2::*;
pub use q3::*;
pub use q4::*;
pub use q5::*;
pub use q7::*;
pub use q8::*;
pub use q9::*;
pub use q10::*;
pub use q11::*;
pub use q12::*;
pub use q13::*;
pub use q14::*;
pub use q15::*;
pub use q16::*;
pub use q17::*;
pub use q18::*;
pub use q19::*;
pub use q20::*;
pub use q21::*;
pub use q22::*;

/// A change of a query's result table, keyed by `K` (an upsert stream: Flink's changelog
/// with `+I`/`+U` as `Upsert` and `-D` as `Delete`; update-befores are implied by the key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change<K, V> {
    /// The row of key `K` is now `V` (insert or update-after).
    Upsert(K, V),
    /// The row of key `K` is gone.
    Delete(K),
}

/// The bids of the event stream (Flink's `bid` view).
pub fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events
        .flat_map(|e: Event, out: &mut Collector<Bid>| {
            if let Event::Bid(b) = e {
                out.collect(b);
            }
        })
        .name("bids")
}

/// The auctions of the event stream (Flink's `auction` view).
pub fn auctions(events: &DataStream<Event>) -> DataStream<Auction> {
    events
        .flat_map(|e: Event, out: &mut Collector<Auction>| {
            if let Event::Auction(a) = e {
                out.collect(*a);
            }
        })
        .name("auctions")
}

/// The persons of the event stream (Flink's `person` view).
pub fn persons(events: &DataStream<Event>) -> DataStream<Person> {
    events
        .flat_map(|e: Event, out: &mut Collector<Person>| {
            if let Event::Person(p) = e {
                out.collect(*p);
            }
        })
        .name("persons")
}

/// A `TIMESTAMP(3)` column: ms since the epoch, written as `yyyy-MM-dd HH:mm:ss.SSS`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DateTime(pub i64);

/// `0.908 * price` as Flink's `DECIMAL(23, 3)`: the price in cents times 908, written with
/// three decimals.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Euro(pub u64);

impl Euro {
    /// `0.908 * price`.
    pub fn of(price: u64) -> Self {
        Euro(price * 908)
    }
}

/// One column of a CSV result row.
pub trait CsvField {
    /// Appends the field (quoted if it holds a comma, a quote or a line break).
    fn write_field(&self, out: &mut String);
}

fn text_field(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

macro_rules! display_field {
    ($($t:ty),*) => {$(
        impl CsvField for $t {
            fn write_field(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
display_field!(u64, i64, u32, i32, usize);

impl CsvField for String {
    fn write_field(&self, out: &mut String) {
        text_field(self, out);
    }
}

impl CsvField for &'static str {
    fn write_field(&self, out: &mut String) {
        text_field(self, out);
    }
}

impl CsvField for PoolText {
    fn write_field(&self, out: &mut String) {
        text_field(self.as_str(), out);
    }
}

impl CsvField for DateTime {
    fn write_field(&self, out: &mut String) {
        out.push_str(&format_time(self.0));
    }
}

impl CsvField for Euro {
    fn write_field(&self, out: &mut String) {
        let _ = write!(out, "{}.{:03}", self.0 / 1000, self.0 % 1000);
    }
}

impl<T: CsvField> CsvField for Option<T> {
    fn write_field(&self, out: &mut String) {
        if let Some(v) = self {
            v.write_field(out);
        }
    }
}

/// Writes `fields` separated by commas (rows too wide for a tuple).
pub fn write_fields(fields: &[&dyn CsvField], out: &mut String) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f.write_field(out);
    }
}

/// A result row as one CSV line, columns in the SQL's order.
pub trait CsvRow {
    /// Appends the row (without a line break).
    fn write_csv(&self, out: &mut String);

    /// The row as a line.
    fn csv(&self) -> String {
        let mut s = String::new();
        self.write_csv(&mut s);
        s
    }
}

macro_rules! tuple_row {
    ($($name:ident),+) => {
        impl<$($name: CsvField),+> CsvRow for ($($name,)+) {
            #[allow(non_snake_case)]
            fn write_csv(&self, out: &mut String) {
                let ($($name,)+) = self;
                let mut first = true;
                $(
                    if !first { out.push(','); }
                    first = false;
                    $name.write_field(out);
                )+
                let _ = first;
            }
        }
    };
}
tuple_row!(A);
tuple_row!(A, B);
tuple_row!(A, B, C);
tuple_row!(A, B, C, D);
tuple_row!(A, B, C, D, E);
tuple_row!(A, B, C, D, E, F);
tuple_row!(A, B, C, D, E, F, G);
tuple_row!(A, B, C, D, E, F, G, H);
tuple_row!(A, B, C, D, E, F, G, H, I);
tuple_row!(A, B, C, D, E, F, G, H, I, J);

/// The best bid first: highest price, then earliest time; further ties (the SQL leaves them
/// to arrival order) by bidder, channel name and extra, so results do not depend on
/// parallelism.
pub fn better_bid(a: &Bid, b: &Bid) -> bool {
    (
        std::cmp::Reverse(a.price),
        a.date_time,
        a.bidder,
        a.channel(),
        a.extra.as_str(),
    ) < (
        std::cmp::Reverse(b.price),
        b.date_time,
        b.bidder,
        b.channel(),
        b.extra.as_str(),
    )
}

/// A piece of a channel's interned URL: `(channel, start, length)`; the text is a slice of
/// the channel table's URL, so a row that holds one copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UrlPart {
    channel: u16,
    at: u16,
    len: u16,
}

impl UrlPart {
    /// The piece of channel `channel`'s URL at `at`, `len` bytes long.
    pub fn new(channel: u16, at: usize, len: usize) -> Self {
        UrlPart {
            channel,
            at: at as u16,
            len: len as u16,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &'static str {
        let url = super::model::channel_url(self.channel);
        let (a, b) = (self.at as usize, self.at as usize + self.len as usize);
        url.get(a..b).unwrap_or("")
    }
}

impl CsvField for UrlPart {
    fn write_field(&self, out: &mut String) {
        text_field(self.as_str(), out);
    }
}

impl CsvRow for Bid {
    /// `auction, bidder, price, channel, url, dateTime, extra` (Flink's bid columns).
    fn write_csv(&self, out: &mut String) {
        (
            self.auction,
            self.bidder,
            self.price,
            self.channel(),
            self.url(),
            DateTime(self.date_time),
            self.extra,
        )
            .write_csv(out);
    }
}

/// Marker for rows: any `Data` with a CSV form.
pub trait ResultRow: Data + CsvRow {}
impl<T: Data + CsvRow> ResultRow for T {}
