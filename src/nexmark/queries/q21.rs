//! q21 — add channel id: bids with a channel id, from the channel's name for the four hot
//! channels, else from the URL's `channel_id` parameter; bids with neither are dropped:
//!
//! ```sql
//! SELECT auction, bidder, price, channel,
//!   CASE WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1'
//!        WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3'
//!        ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id
//! FROM bid
//! WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) IS NOT NULL
//!   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')
//! ```
//!
//! API: `flat_map`, the regular expression's job done by string search. Text columns are
//! views into the channel's interned name and URL ([`UrlPart`]), not copies.

use super::{CsvField, CsvRow, UrlPart, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event, channel_name};
use actorflow_runtime::Collector;

/// q21's row: `auction, bidder, price, channel, channel_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q21Row {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The channel (id into the channel table).
    pub channel: u16,
    /// `'0'`–`'3'` for a hot channel, else the URL's `channel_id` value.
    pub channel_id: ChannelId,
}

/// q21's `channel_id` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChannelId {
    /// A hot channel's number.
    Hot(u8),
    /// Taken from the URL.
    Url(UrlPart),
}

impl CsvRow for Q21Row {
    fn write_csv(&self, out: &mut String) {
        (
            self.auction,
            self.bidder,
            self.price,
            channel_name(self.channel),
        )
            .write_csv(out);
        out.push(',');
        match self.channel_id {
            ChannelId::Hot(n) => n.to_string().write_field(out),
            ChannelId::Url(p) => p.write_field(out),
        }
    }
}

/// Where `REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)` finds its value in `url`:
/// the first `channel_id` parameter at the start or after a `&`.
pub fn channel_id_param(url: &str) -> Option<(usize, usize)> {
    const P: &str = "channel_id=";
    let at = if url.starts_with(P) {
        0
    } else {
        url.find("&channel_id=")? + 1
    } + P.len();
    let rest = &url[at..];
    Some((at, rest.find('&').unwrap_or(rest.len())))
}

/// q21 over `events`.
pub fn q21(events: &DataStream<Event>) -> DataStream<Q21Row> {
    bids(events)
        .flat_map(|b: Bid, out: &mut Collector<Q21Row>| {
            let hot = match b.channel() {
                c if c.eq_ignore_ascii_case("apple") => Some(0),
                c if c.eq_ignore_ascii_case("google") => Some(1),
                c if c.eq_ignore_ascii_case("facebook") => Some(2),
                c if c.eq_ignore_ascii_case("baidu") => Some(3),
                _ => None,
            };
            let channel_id = match hot {
                Some(h) => ChannelId::Hot(h),
                None => match channel_id_param(b.url()) {
                    Some((at, len)) => ChannelId::Url(UrlPart::new(b.channel_id, at, len)),
                    None => return,
                },
            };
            out.collect(Q21Row {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                channel: b.channel_id,
                channel_id,
            });
        })
        .name("q21")
}
