//! q14 — calculation: bids between 1 M and 50 M euro-cents after conversion, with the time
//! of day and a user function counting `c`s in `extra`:
//!
//! ```sql
//! SELECT auction, bidder, 0.908 * price AS price,
//!   CASE WHEN HOUR(dateTime) >= 8 AND HOUR(dateTime) <= 18 THEN 'dayTime'
//!        WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN 'nightTime'
//!        ELSE 'otherTime' END AS bidTimeType,
//!   dateTime, extra, count_char(extra, 'c') AS c_counts
//! FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
//! ```
//!
//! (`HOUR` in UTC.) API: `filter`, `map`, a plain Rust function as the UDF.

use super::{DateTime, Euro, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Event, PoolText};

/// q14's rows: `auction, bidder, price, bidTimeType, dateTime, extra, c_counts`.
pub type Q14Row = (u64, u64, Euro, BidTimeType, DateTime, PoolText, u64);

/// q14's `bidTimeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BidTimeType {
    /// 8:00 to 18:59.
    DayTime,
    /// 20:00 to 6:59.
    NightTime,
    /// The rest.
    OtherTime,
}

impl super::CsvField for BidTimeType {
    fn write_field(&self, out: &mut String) {
        out.push_str(match self {
            BidTimeType::DayTime => "dayTime",
            BidTimeType::NightTime => "nightTime",
            BidTimeType::OtherTime => "otherTime",
        });
    }
}

/// The UDF `count_char(s, c)`.
pub fn count_char(s: &str, c: u8) -> u64 {
    s.bytes().filter(|b| *b == c).count() as u64
}

/// q14 over `events`.
pub fn q14(events: &DataStream<Event>) -> DataStream<Q14Row> {
    bids(events)
        // 0.908 * price in (1 000 000, 50 000 000), in thousandths.
        .filter(|b| {
            let e = b.price * 908;
            e > 1_000_000_000 && e < 50_000_000_000
        })
        .map(|b| {
            let hour = b.date_time.rem_euclid(86_400_000) / 3_600_000;
            let kind = if (8..=18).contains(&hour) {
                BidTimeType::DayTime
            } else if hour <= 6 || hour >= 20 {
                BidTimeType::NightTime
            } else {
                BidTimeType::OtherTime
            };
            (
                b.auction,
                b.bidder,
                Euro::of(b.price),
                kind,
                DateTime(b.date_time),
                b.extra,
                count_char(b.extra.as_str(), b'c'),
            )
        })
        .name("q14")
}
