//! The Nexmark events: [`Person`], [`Auction`], [`Bid`], with Flink's field names, and their
//! JSON lines in Flink's Nexmark layout.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// Random text drawn from a fixed pool (the `extra` paddings, an auction's item name and
/// description): the generator picks where and how long, the text is the pool's slice. A
/// record then carries three numbers instead of an allocation, and the text is the same in
/// every process (the pools come from constant seeds). Two pools: lowercase letters
/// (Beam's `nextExactString`), and letters with a space one time in 13 (Beam's
/// `nextString`, whose slices are trimmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PoolText {
    at: u32,
    len: u16,
    spaced: bool,
}

/// Size of a text pool (plus the longest slice).
const POOL: usize = 1 << 16;
const POOL_MAX_SLICE: usize = 1024;

fn pool(spaced: bool) -> &'static str {
    static LETTERS: OnceLock<String> = OnceLock::new();
    static SPACED: OnceLock<String> = OnceLock::new();
    let make = |spaced: bool| {
        let mut rng = super::generator::Rng::new(0x6e65_786d_6172_6b00, u64::from(spaced));
        (0..POOL + POOL_MAX_SLICE)
            .map(|_| {
                if spaced && rng.below(13) == 0 {
                    ' '
                } else {
                    char::from(b'a' + rng.below(26) as u8)
                }
            })
            .collect::<String>()
    };
    if spaced {
        SPACED.get_or_init(|| make(true))
    } else {
        LETTERS.get_or_init(|| make(false))
    }
}

impl PoolText {
    /// `len` letters from position `at` of the letter pool.
    pub(crate) fn new(at: u32, len: usize) -> Self {
        PoolText {
            at: at % POOL as u32,
            len: len.min(POOL_MAX_SLICE) as u16,
            spaced: false,
        }
    }

    /// Up to `len` characters from position `at` of the pool with spaces, trimmed.
    pub(crate) fn spaced(at: u32, len: usize) -> Self {
        let at = (at % POOL as u32) as usize;
        let len = len.min(POOL_MAX_SLICE);
        let slice = &pool(true)[at..at + len];
        let start = slice.len() - slice.trim_start().len();
        let trimmed = slice.trim();
        PoolText {
            at: (at + start) as u32,
            len: trimmed.len() as u16,
            spaced: true,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &'static str {
        let at = self.at as usize % POOL;
        // Clamped: a value decoded from damaged bytes must not slice out of the pool.
        let len = (self.len as usize).min(POOL_MAX_SLICE);
        &pool(self.spaced)[at..at + len]
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Display for PoolText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person registering (Flink's `person` view).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    /// Person id (dense, from 1000).
    pub id: u64,
    /// First and last name.
    pub name: String,
    /// `xxx@yyy.com`.
    pub email_address: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// One of ten US cities.
    pub city: String,
    /// One of six US states (upper case, as Flink's generator).
    pub state: String,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to about 200 bytes.
    pub extra: PoolText,
}

/// An auction opening (Flink's `auction` view).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Auction {
    /// Auction id (dense, from 1000).
    pub id: u64,
    /// Item name.
    pub item_name: PoolText,
    /// Description.
    pub description: PoolText,
    /// Initial bid, cents.
    pub initial_bid: u64,
    /// Reserve price, cents.
    pub reserve: u64,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// When the auction closes, ms since the epoch.
    pub expires: i64,
    /// The seller's person id.
    pub seller: u64,
    /// Category, 10 to 14.
    pub category: u64,
    /// Padding to about 500 bytes.
    pub extra: PoolText,
}

/// A bid (Flink's `bid` view). Channel and URL are indexes into the generator's channel
/// table; [`channel`](Self::channel) and [`url`](Self::url) give the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bid {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's person id.
    pub bidder: u64,
    /// Price, cents.
    pub price: u64,
    /// Which channel (0–3: a hot channel, 4..: `channel-(n−4)`).
    pub channel_id: u16,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to about 100 bytes.
    pub extra: PoolText,
}

/// The four hot channels.
pub const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Channels besides the hot ones (`channel-0` … `channel-9999`).
pub const CHANNELS: usize = 10_000;

/// `(channel, url)` for every channel id.
pub(crate) fn channel_table() -> &'static [(String, String)] {
    static T: OnceLock<Vec<(String, String)>> = OnceLock::new();
    T.get_or_init(|| {
        let url = |rng: &mut super::generator::Rng| {
            format!(
                "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
                rng.delimited_string(5, '_'),
                rng.delimited_string(5, '_'),
                rng.delimited_string(5, '_')
            )
        };
        let mut out = Vec::with_capacity(4 + CHANNELS);
        for (i, name) in HOT_CHANNELS.iter().enumerate() {
            let mut rng = super::generator::Rng::new(0x686f_7400, i as u64);
            out.push((name.to_string(), url(&mut rng)));
        }
        for i in 0..CHANNELS {
            let mut rng = super::generator::Rng::new(0x6368_616e, i as u64);
            let mut u = url(&mut rng);
            // Nine channels in ten carry their id in the URL (Beam's rule).
            if rng.below(10) > 0 {
                let _ = write!(
                    u,
                    "&channel_id={}",
                    i64::from((i as i32).reverse_bits()).abs()
                );
            }
            out.push((format!("channel-{i}"), u));
        }
        out
    })
}

/// The name of channel `id` (see [`Bid::channel_id`]).
pub fn channel_name(id: u16) -> &'static str {
    channel_table()
        .get(id as usize)
        .map_or("", |c| c.0.as_str())
}

/// The URL of channel `id`.
pub fn channel_url(id: u16) -> &'static str {
    channel_table()
        .get(id as usize)
        .map_or("", |c| c.1.as_str())
}

impl Bid {
    /// The channel's name.
    pub fn channel(&self) -> &'static str {
        channel_name(self.channel_id)
    }

    /// The URL the bid came from.
    pub fn url(&self) -> &'static str {
        channel_url(self.channel_id)
    }
}

/// One Nexmark event (Flink's `datagen` row: `event_type` and one of three columns).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// `event_type` 0.
    Person(Box<Person>),
    /// `event_type` 1.
    Auction(Box<Auction>),
    /// `event_type` 2.
    Bid(Bid),
}

impl Event {
    /// Event time, ms since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// Flink's `event_type`: 0 person, 1 auction, 2 bid.
    pub fn event_type(&self) -> u8 {
        match self {
            Event::Person(_) => 0,
            Event::Auction(_) => 1,
            Event::Bid(_) => 2,
        }
    }

    /// The event as one JSON line in Flink's Nexmark layout (without the newline):
    /// `{"event_type":N,"person":{…}|null,"auction":{…}|null,"bid":{…}|null}`, field names
    /// as Flink's DDL, `dateTime` as `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
    pub fn write_json(&self, out: &mut String) {
        let _ = write!(out, "{{\"event_type\":{},", self.event_type());
        match self {
            Event::Person(p) => {
                out.push_str("\"person\":{\"id\":");
                let _ = write!(out, "{}", p.id);
                field(out, "name", &p.name);
                field(out, "emailAddress", &p.email_address);
                field(out, "creditCard", &p.credit_card);
                field(out, "city", &p.city);
                field(out, "state", &p.state);
                field(out, "dateTime", &format_time(p.date_time));
                field(out, "extra", p.extra.as_str());
                out.push_str("},\"auction\":null,\"bid\":null}");
            }
            Event::Auction(a) => {
                out.push_str("\"person\":null,\"auction\":{\"id\":");
                let _ = write!(out, "{}", a.id);
                field(out, "itemName", a.item_name.as_str());
                field(out, "description", a.description.as_str());
                let _ = write!(
                    out,
                    ",\"initialBid\":{},\"reserve\":{}",
                    a.initial_bid, a.reserve
                );
                field(out, "dateTime", &format_time(a.date_time));
                field(out, "expires", &format_time(a.expires));
                let _ = write!(out, ",\"seller\":{},\"category\":{}", a.seller, a.category);
                field(out, "extra", a.extra.as_str());
                out.push_str("},\"bid\":null}");
            }
            Event::Bid(b) => {
                out.push_str("\"person\":null,\"auction\":null,\"bid\":{");
                let _ = write!(
                    out,
                    "\"auction\":{},\"bidder\":{},\"price\":{}",
                    b.auction, b.bidder, b.price
                );
                field(out, "channel", b.channel());
                field(out, "url", b.url());
                field(out, "dateTime", &format_time(b.date_time));
                field(out, "extra", b.extra.as_str());
                out.push_str("}}");
            }
        }
    }
}

/// `,"name":"value"` with JSON escaping.
fn field(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, ",\"{name}\":\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Days since 1970-01-01 to (year, month, day) (the proleptic Gregorian calendar).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `yyyy-MM-dd HH:mm:ss.SSS` of ms since the epoch, in UTC (Flink's `TIMESTAMP(3)` text).
///
/// # Examples
///
/// ```
/// assert_eq!(actorflow::nexmark::format_time(0), "1970-01-01 00:00:00.000");
/// assert_eq!(actorflow::nexmark::format_time(1_735_689_601_234), "2025-01-01 00:00:01.234");
/// ```
pub fn format_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// `yyyy-MM-dd` of ms since the epoch, UTC (Flink's `DATE_FORMAT(dateTime, 'yyyy-MM-dd')`).
pub fn format_day(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn calendar_dates_are_right() {
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(format_time(-1), "1969-12-31 23:59:59.999");
        assert_eq!(format_day(1_709_251_199_999), "2024-02-29");
    }

    #[test]
    fn channels_and_pool_are_fixed() {
        let t = channel_table();
        assert_eq!(t.len(), 4 + CHANNELS);
        assert_eq!(t[0].0, "Google");
        assert_eq!(t[4].0, "channel-0");
        assert!(t[5].1.starts_with("https://www.nexmark.com/"));
        let with_id = t.iter().filter(|c| c.1.contains("&channel_id=")).count();
        assert!((8_500..9_500).contains(&with_id), "{with_id}");
        let p = PoolText::new(12_345, 70);
        assert_eq!(p.as_str().len(), 70);
        assert!(p.as_str().bytes().all(|b| b.is_ascii_lowercase()));
    }

    #[test]
    fn json_lines_escape_and_name_fields_as_flink() {
        let e = Event::Person(Box::new(Person {
            id: 1000,
            name: "Peter \"P\" Shultz".into(),
            email_address: "a@b.com".into(),
            credit_card: "1 2 3 4".into(),
            city: "Bend".into(),
            state: "OR".into(),
            date_time: 0,
            extra: PoolText::new(0, 0),
        }));
        let mut s = String::new();
        e.write_json(&mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["event_type"], 0);
        assert_eq!(v["person"]["name"], "Peter \"P\" Shultz");
        assert_eq!(v["person"]["emailAddress"], "a@b.com");
        assert_eq!(v["person"]["dateTime"], "1970-01-01 00:00:00.000");
        assert!(v["bid"].is_null());
    }
}
