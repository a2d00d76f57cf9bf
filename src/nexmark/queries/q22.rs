//! q22 — get URL directories: each bid with the first three path segments of its URL:
//!
//! ```sql
//! SELECT auction, bidder, price, channel,
//!   SPLIT_INDEX(url, '/', 3) AS dir1, SPLIT_INDEX(url, '/', 4) AS dir2,
//!   SPLIT_INDEX(url, '/', 5) AS dir3
//! FROM bid
//! ```
//!
//! API: `map`. The directories are views into the channel's interned URL ([`UrlPart`]).

use super::{CsvField, CsvRow, UrlPart, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Event, channel_name};

/// q22's row: `auction, bidder, price, channel, dir1, dir2, dir3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q22Row {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// The price.
    pub price: u64,
    /// The channel (id into the channel table).
    pub channel: u16,
    /// `SPLIT_INDEX(url, '/', 3)`, `4` and `5`.
    pub dirs: [UrlPart; 3],
}

impl CsvRow for Q22Row {
    fn write_csv(&self, out: &mut String) {
        (
            self.auction,
            self.bidder,
            self.price,
            channel_name(self.channel),
        )
            .write_csv(out);
        for d in &self.dirs {
            out.push(',');
            d.write_field(out);
        }
    }
}

/// `SPLIT_INDEX(s, '/', i)` as `(start, len)`: the `i`-th piece (from 0), empty at the end
/// if there are fewer.
pub fn split_index(s: &str, i: usize) -> (usize, usize) {
    let mut out = [(s.len(), 0); 1];
    split_pieces(s, i, &mut out);
    out[0]
}

/// Pieces `first`, `first + 1`, … of `s` split at `/`, as `(start, len)`, in one pass.
pub fn split_pieces(s: &str, first: usize, out: &mut [(usize, usize)]) {
    let (mut piece, mut start) = (0usize, 0usize);
    for (i, b) in s
        .bytes()
        .enumerate()
        .chain(std::iter::once((s.len(), b'/')))
    {
        if b != b'/' {
            continue;
        }
        if let Some(slot) = piece.checked_sub(first).and_then(|k| out.get_mut(k)) {
            *slot = (start, i - start);
        }
        piece += 1;
        start = i + 1;
        if piece >= first + out.len() {
            return;
        }
    }
}

/// q22 over `events`.
pub fn q22(events: &DataStream<Event>) -> DataStream<Q22Row> {
    bids(events)
        .map(|b| {
            let url = b.url();
            let mut pieces = [(url.len(), 0); 3];
            split_pieces(url, 3, &mut pieces);
            let dir = |(at, len)| UrlPart::new(b.channel_id, at, len);
            Q22Row {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                channel: b.channel_id,
                dirs: pieces.map(dir),
            }
        })
        .name("q22")
}
