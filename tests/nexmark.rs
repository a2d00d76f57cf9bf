//! Every Nexmark query against a plain sequential reference: the events are dumped as JSON
//! lines (Flink's layout), read back here into the reference's own types, and each query is
//! computed by a loop written from the SQL, independently of the query code. The job's
//! result (rows, or the final table of an updating query) must equal it exactly, at
//! parallelism 1, 2 and 4.
//!
//! Event time runs at 2 000 events per second so that 100 000 events span 50 s: several
//! tumbling and sliding windows, sessions that split, and auctions that expire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::nexmark::{self, NexmarkConfig, NexmarkSource, QueryOptions, Results};
use actorflow::prelude::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

const EVENTS: u64 = 100_000;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        tps: 2_000,
        seed: 42,
        ..NexmarkConfig::default()
    }
}

// ----- the reference's own view of the events --------------------------------------------

#[derive(Debug, Clone)]
struct P {
    id: u64,
    name: String,
    city: String,
    state: String,
    ts: i64,
}

#[derive(Debug, Clone)]
struct A {
    id: u64,
    item_name: String,
    description: String,
    initial_bid: u64,
    reserve: u64,
    dt: String,
    ts: i64,
    expires_dt: String,
    expires: i64,
    seller: u64,
    category: u64,
    extra: String,
}

#[derive(Debug, Clone)]
struct B {
    auction: u64,
    bidder: u64,
    price: u64,
    channel: String,
    url: String,
    dt: String,
    ts: i64,
    extra: String,
}

struct Events {
    persons: Vec<P>,
    auctions: Vec<A>,
    bids: Vec<B>,
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `yyyy-MM-dd HH:mm:ss.SSS` to ms since the epoch.
fn parse_time(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let d = days(n(0, 4), n(5, 7), n(8, 10));
    d * 86_400_000 + n(11, 13) * 3_600_000 + n(14, 16) * 60_000 + n(17, 19) * 1000 + n(20, 23)
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_string()
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap()
}

/// The events, read from the JSON lines the library writes (`--dump-events`).
fn events() -> &'static Events {
    static E: OnceLock<Events> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = config();
        let mut e = Events {
            persons: Vec::new(),
            auctions: Vec::new(),
            bids: Vec::new(),
        };
        let mut line = String::new();
        for n in 0..EVENTS {
            line.clear();
            cfg.event(n).write_json(&mut line);
            let v: Value = serde_json::from_str(&line).unwrap();
            match v["event_type"].as_u64().unwrap() {
                0 => {
                    let p = &v["person"];
                    e.persons.push(P {
                        id: num(p, "id"),
                        name: text(p, "name"),
                        city: text(p, "city"),
                        state: text(p, "state"),
                        ts: parse_time(&text(p, "dateTime")),
                    });
                }
                1 => {
                    let a = &v["auction"];
                    e.auctions.push(A {
                        id: num(a, "id"),
                        item_name: text(a, "itemName"),
                        description: text(a, "description"),
                        initial_bid: num(a, "initialBid"),
                        reserve: num(a, "reserve"),
                        dt: text(a, "dateTime"),
                        ts: parse_time(&text(a, "dateTime")),
                        expires_dt: text(a, "expires"),
                        expires: parse_time(&text(a, "expires")),
                        seller: num(a, "seller"),
                        category: num(a, "category"),
                        extra: text(a, "extra"),
                    });
                }
                _ => {
                    let b = &v["bid"];
                    e.bids.push(B {
                        auction: num(b, "auction"),
                        bidder: num(b, "bidder"),
                        price: num(b, "price"),
                        channel: text(b, "channel"),
                        url: text(b, "url"),
                        dt: text(b, "dateTime"),
                        ts: parse_time(&text(b, "dateTime")),
                        extra: text(b, "extra"),
                    });
                }
            }
        }
        e
    })
}

fn time_text(ms: i64) -> String {
    let d = ms.div_euclid(86_400_000);
    // Invert `days` by search from the first bid's date (the run spans minutes).
    let base = parse_time(&events().bids[0].dt).div_euclid(86_400_000);
    let base_text = &events().bids[0].dt[..10];
    assert_eq!(d, base, "the reference only formats times of the run's day");
    let in_day = ms.rem_euclid(86_400_000);
    format!(
        "{base_text} {:02}:{:02}:{:02}.{:03}",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

fn euro(price: u64) -> String {
    let e = price * 908;
    format!("{}.{:03}", e / 1000, e % 1000)
}

fn bid_row(b: &B) -> String {
    format!(
        "{},{},{},{},{},{},{}",
        b.auction, b.bidder, b.price, b.channel, b.url, b.dt, b.extra
    )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn rank(price: u64) -> usize {
    if price < 10_000 {
        1
    } else if price < 1_000_000 {
        2
    } else {
        3
    }
}

/// The tie-break the docs state for best bids: price desc, time, bidder, channel, extra.
fn best_key(b: &B) -> (std::cmp::Reverse<u64>, i64, u64, String, String) {
    (
        std::cmp::Reverse(b.price),
        b.ts,
        b.bidder,
        b.channel.clone(),
        b.extra.clone(),
    )
}

// ----- the reference queries ---------------------------------------------------------------

fn reference(query: &str) -> Vec<String> {
    let e = events();
    let bids = &e.bids;
    match query {
        "q0" => sorted(
            bids.iter()
                .map(|b| {
                    format!(
                        "{},{},{},{},{}",
                        b.auction, b.bidder, b.price, b.dt, b.extra
                    )
                })
                .collect(),
        ),
        "q1" => sorted(
            bids.iter()
                .map(|b| {
                    format!(
                        "{},{},{},{},{}",
                        b.auction,
                        b.bidder,
                        euro(b.price),
                        b.dt,
                        b.extra
                    )
                })
                .collect(),
        ),
        "q2" => sorted(
            bids.iter()
                .filter(|b| b.auction % 123 == 0)
                .map(|b| format!("{},{}", b.auction, b.price))
                .collect(),
        ),
        "q3" => {
            let local: HashMap<u64, &P> = e
                .persons
                .iter()
                .filter(|p| ["OR", "ID", "CA"].contains(&p.state.as_str()))
                .map(|p| (p.id, p))
                .collect();
            sorted(
                e.auctions
                    .iter()
                    .filter(|a| a.category == 10)
                    .filter_map(|a| {
                        local
                            .get(&a.seller)
                            .map(|p| format!("{},{},{},{}", p.name, p.city, p.state, a.id))
                    })
                    .collect(),
            )
        }
        "q4" => {
            let mut finals: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            let by_auction = bids_by_auction();
            for a in &e.auctions {
                let best = by_auction
                    .get(&a.id)
                    .into_iter()
                    .flatten()
                    .filter(|b| b.ts >= a.ts && b.ts <= a.expires)
                    .map(|b| b.price)
                    .max();
                if let Some(m) = best {
                    finals.entry(a.category).or_default().push(m);
                }
            }
            sorted(
                finals
                    .iter()
                    .map(|(c, v)| format!("{c},{}", v.iter().sum::<u64>() / v.len() as u64))
                    .collect(),
            )
        }
        "q5" | "q5w" => {
            let mut counts: BTreeMap<i64, HashMap<u64, u64>> = BTreeMap::new();
            for b in bids {
                let last = b.ts.div_euclid(2000) * 2000;
                for k in 0..5 {
                    let start = last - k * 2000;
                    if b.ts < start + 10_000 {
                        *counts
                            .entry(start)
                            .or_default()
                            .entry(b.auction)
                            .or_default() += 1;
                    }
                }
            }
            let mut out = Vec::new();
            for per in counts.values() {
                let max = per.values().copied().max().unwrap_or(0);
                for (a, n) in per {
                    if *n >= max {
                        out.push(format!("{a},{n}"));
                    }
                }
            }
            sorted(out)
        }
        "q7" => {
            let mut max: BTreeMap<i64, u64> = BTreeMap::new();
            for b in bids {
                let s = b.ts.div_euclid(10_000) * 10_000;
                let m = max.entry(s).or_default();
                *m = (*m).max(b.price);
            }
            let mut out = Vec::new();
            for (s, m) in &max {
                let end = s + 10_000;
                for b in bids {
                    if b.price == *m && b.ts >= end - 10_000 && b.ts <= end {
                        out.push(format!(
                            "{},{},{},{},{}",
                            b.auction, b.price, b.bidder, b.dt, b.extra
                        ));
                    }
                }
            }
            sorted(out)
        }
        "q8" => {
            let sellers: HashSet<(u64, i64)> = e
                .auctions
                .iter()
                .map(|a| (a.seller, a.ts.div_euclid(10_000)))
                .collect();
            sorted(
                e.persons
                    .iter()
                    .filter(|p| sellers.contains(&(p.id, p.ts.div_euclid(10_000))))
                    .map(|p| {
                        format!(
                            "{},{},{}",
                            p.id,
                            p.name,
                            time_text(p.ts.div_euclid(10_000) * 10_000)
                        )
                    })
                    .collect(),
            )
        }
        "q9" => {
            let by_auction = bids_by_auction();
            let mut out = Vec::new();
            for a in &e.auctions {
                let best = by_auction
                    .get(&a.id)
                    .into_iter()
                    .flatten()
                    .filter(|b| b.ts >= a.ts && b.ts <= a.expires)
                    .min_by_key(|b| best_key(b));
                if let Some(b) = best {
                    out.push(format!(
                        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        a.id,
                        a.item_name,
                        a.description,
                        a.initial_bid,
                        a.reserve,
                        a.dt,
                        a.expires_dt,
                        a.seller,
                        a.category,
                        a.extra,
                        b.auction,
                        b.bidder,
                        b.price,
                        b.dt,
                        b.extra
                    ));
                }
            }
            sorted(out)
        }
        "q11" => {
            let mut per: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
            for b in bids {
                per.entry(b.bidder).or_default().push(b.ts);
            }
            let mut out = Vec::new();
            for (bidder, mut ts) in per {
                ts.sort_unstable();
                let (mut start, mut end, mut n) = (ts[0], ts[0] + 10_000, 0u64);
                for t in ts {
                    if t < end {
                        end = end.max(t + 10_000);
                        n += 1;
                    } else {
                        out.push(format!(
                            "{bidder},{n},{},{}",
                            time_text(start),
                            time_text(end)
                        ));
                        (start, end, n) = (t, t + 10_000, 1);
                    }
                }
                out.push(format!(
                    "{bidder},{n},{},{}",
                    time_text(start),
                    time_text(end)
                ));
            }
            sorted(out)
        }
        "q10" => sorted(
            bids.iter()
                .map(|b| {
                    format!(
                        "dt={}/hm={},{},{},{},{},{}",
                        &b.dt[..10],
                        &b.dt[11..16],
                        b.auction,
                        b.bidder,
                        b.price,
                        b.dt,
                        b.extra
                    )
                })
                .collect(),
        ),
        "q13" => {
            let side = side_table();
            sorted(
                bids.iter()
                    .filter_map(|b| {
                        side.get(&(b.auction % 10_000))
                            .map(|v| format!("{},{},{},{},{v}", b.auction, b.bidder, b.price, b.dt))
                    })
                    .collect(),
            )
        }
        "q14" => sorted(
            bids.iter()
                .filter(|b| b.price * 908 > 1_000_000_000 && b.price * 908 < 50_000_000_000)
                .map(|b| {
                    let hour = b.ts.rem_euclid(86_400_000) / 3_600_000;
                    let kind = if (8..=18).contains(&hour) {
                        "dayTime"
                    } else if hour <= 6 || hour >= 20 {
                        "nightTime"
                    } else {
                        "otherTime"
                    };
                    format!(
                        "{},{},{},{kind},{},{},{}",
                        b.auction,
                        b.bidder,
                        euro(b.price),
                        b.dt,
                        b.extra,
                        b.extra.matches('c').count()
                    )
                })
                .collect(),
        ),
        "q15" | "q16" => {
            // (group) -> counts, distinct sets, max minute
            #[derive(Default)]
            struct G {
                bids: [u64; 4],
                bidders: [HashSet<u64>; 4],
                auctions: [HashSet<u64>; 4],
                minute: String,
            }
            let mut groups: BTreeMap<String, G> = BTreeMap::new();
            for b in bids {
                let day = &b.dt[..10];
                let key = if query == "q15" {
                    day.to_string()
                } else {
                    format!("{},{day}", b.channel)
                };
                let g = groups.entry(key).or_default();
                for i in [0, rank(b.price)] {
                    g.bids[i] += 1;
                    g.bidders[i].insert(b.bidder);
                    g.auctions[i].insert(b.auction);
                }
                let minute = b.dt[11..16].to_string();
                if minute > g.minute {
                    g.minute = minute;
                }
            }
            sorted(
                groups
                    .iter()
                    .map(|(k, g)| {
                        let mut s = k.clone();
                        if query == "q16" {
                            s.push(',');
                            s.push_str(&g.minute);
                        }
                        for i in 0..4 {
                            s.push_str(&format!(",{}", g.bids[i]));
                        }
                        for i in 0..4 {
                            s.push_str(&format!(",{}", g.bidders[i].len()));
                        }
                        for i in 0..4 {
                            s.push_str(&format!(",{}", g.auctions[i].len()));
                        }
                        s
                    })
                    .collect(),
            )
        }
        "q17" => {
            let mut groups: BTreeMap<(u64, String), Vec<u64>> = BTreeMap::new();
            for b in bids {
                groups
                    .entry((b.auction, b.dt[..10].to_string()))
                    .or_default()
                    .push(b.price);
            }
            sorted(
                groups
                    .iter()
                    .map(|((a, d), p)| {
                        let count = |r: usize| p.iter().filter(|x| rank(**x) == r).count();
                        let sum: u64 = p.iter().sum();
                        format!(
                            "{a},{d},{},{},{},{},{},{},{},{sum}",
                            p.len(),
                            count(1),
                            count(2),
                            count(3),
                            p.iter().min().unwrap(),
                            p.iter().max().unwrap(),
                            sum / p.len() as u64
                        )
                    })
                    .collect(),
            )
        }
        "q18" => {
            let mut last: HashMap<(u64, u64), &B> = HashMap::new();
            for b in bids {
                let k = (b.bidder, b.auction);
                let replace = last.get(&k).is_none_or(|o| {
                    (b.ts, b.price, &b.channel, &b.extra) > (o.ts, o.price, &o.channel, &o.extra)
                });
                if replace {
                    last.insert(k, b);
                }
            }
            sorted(last.values().map(|b| bid_row(b)).collect())
        }
        "q19" => {
            let mut out = Vec::new();
            for list in bids_by_auction().values() {
                let mut l = list.clone();
                l.sort_by_key(best_key);
                for (i, b) in l.iter().take(10).enumerate() {
                    out.push(format!("{},{}", bid_row(b), i + 1));
                }
            }
            sorted(out)
        }
        "q20" => {
            let cat10: HashMap<u64, &A> = e
                .auctions
                .iter()
                .filter(|a| a.category == 10)
                .map(|a| (a.id, a))
                .collect();
            sorted(
                bids.iter()
                    .filter_map(|b| {
                        cat10.get(&b.auction).map(|a| {
                            format!(
                                "{},{},{},{},{},{},{},{},{}",
                                bid_row(b),
                                a.item_name,
                                a.description,
                                a.initial_bid,
                                a.reserve,
                                a.dt,
                                a.expires_dt,
                                a.seller,
                                a.category
                            ) + ","
                                + &a.extra
                        })
                    })
                    .collect(),
            )
        }
        "q21" => sorted(
            bids.iter()
                .filter_map(|b| {
                    let id = match b.channel.to_lowercase().as_str() {
                        "apple" => Some("0".to_string()),
                        "google" => Some("1".to_string()),
                        "facebook" => Some("2".to_string()),
                        "baidu" => Some("3".to_string()),
                        _ => regexp_channel_id(&b.url),
                    }?;
                    Some(format!(
                        "{},{},{},{},{id}",
                        b.auction, b.bidder, b.price, b.channel
                    ))
                })
                .collect(),
        ),
        "q22" => sorted(
            bids.iter()
                .map(|b| {
                    let parts: Vec<&str> = b.url.split('/').collect();
                    let at = |i: usize| parts.get(i).copied().unwrap_or("");
                    format!(
                        "{},{},{},{},{},{},{}",
                        b.auction,
                        b.bidder,
                        b.price,
                        b.channel,
                        at(3),
                        at(4),
                        at(5)
                    )
                })
                .collect(),
        ),
        other => panic!("no reference for {other}"),
    }
}

/// `REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)`, by hand.
fn regexp_channel_id(url: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = url[from..].find("channel_id=") {
        let at = from + i;
        if at == 0 || url.as_bytes()[at - 1] == b'&' {
            let rest = &url[at + "channel_id=".len()..];
            return Some(rest.split('&').next().unwrap_or("").to_string());
        }
        from = at + 1;
    }
    None
}

fn bids_by_auction() -> HashMap<u64, Vec<B>> {
    let mut m: HashMap<u64, Vec<B>> = HashMap::new();
    for b in &events().bids {
        m.entry(b.auction).or_default().push(b.clone());
    }
    m
}

fn side_input_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/nexmark-side-input.csv")
}

fn side_table() -> HashMap<u64, String> {
    std::fs::read_to_string(side_input_path())
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(',').unwrap();
            (k.parse().unwrap(), v.to_string())
        })
        .collect()
}

// ----- running the queries -------------------------------------------------------------------

async fn run(query: &str, parallelism: u32, mode: RuntimeMode) -> Arc<Results> {
    let env = common::env(parallelism);
    env.set_runtime_mode(mode);
    let events = nexmark::events(&env, NexmarkSource::new(config()));
    let results = Arc::new(Results::default());
    nexmark::add_query(
        query,
        &events,
        QueryOptions {
            side_input: side_input_path(),
            keep_rows: true,
            rate: None,
            config: config(),
            files: None,
        },
        &results,
    )
    .unwrap();
    common::run(&env).await.unwrap();
    results
}

/// Compares without printing thousands of rows.
#[track_caller]
fn assert_rows(got: &[String], expected: &[String], what: &str) {
    if got == expected {
        return;
    }
    let g: HashSet<&String> = got.iter().collect();
    let e: HashSet<&String> = expected.iter().collect();
    let missing: Vec<&&String> = e.difference(&g).take(3).collect();
    let extra: Vec<&&String> = g.difference(&e).take(3).collect();
    panic!(
        "{what}: {} rows, expected {}; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
        got.len(),
        expected.len()
    );
}

async fn check(query: &str) {
    let expected = reference(query);
    assert!(!expected.is_empty(), "{query}: the reference has rows");
    for parallelism in [1, 2, 4] {
        let r = run(query, parallelism, RuntimeMode::Streaming).await;
        assert_rows(
            &r.sorted_rows(),
            &expected,
            &format!("{query} at parallelism {parallelism}"),
        );
    }
}

macro_rules! reference_tests {
    ($($name:ident => $q:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            check($q).await;
        }
    )*};
}

reference_tests! {
    q0_equals_the_reference => "q0",
    q1_equals_the_reference => "q1",
    q2_equals_the_reference => "q2",
    q3_equals_the_reference => "q3",
    q4_equals_the_reference => "q4",
    q5_equals_the_reference => "q5",
    q5_as_sliding_windows_equals_the_reference => "q5w",
    q7_equals_the_reference => "q7",
    q8_equals_the_reference => "q8",
    q9_equals_the_reference => "q9",
    q10_equals_the_reference => "q10",
    q11_equals_the_reference => "q11",
    q13_equals_the_reference => "q13",
    q14_equals_the_reference => "q14",
    q15_equals_the_reference => "q15",
    q16_equals_the_reference => "q16",
    q17_equals_the_reference => "q17",
    q18_equals_the_reference => "q18",
    q19_equals_the_reference => "q19",
    q20_equals_the_reference => "q20",
    q21_equals_the_reference => "q21",
    q22_equals_the_reference => "q22",
}

/// q12 counts per processing-time window, which depends on speed: in BATCH mode every
/// window fires at the end, and the counts add up to the bids, per bidder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q12_counts_every_bid_once() {
    let mut per: BTreeMap<u64, u64> = BTreeMap::new();
    for b in &events().bids {
        *per.entry(b.bidder).or_default() += 1;
    }
    for parallelism in [1, 2] {
        let r = run("q12", parallelism, RuntimeMode::Batch).await;
        let mut got: BTreeMap<u64, u64> = BTreeMap::new();
        for row in r.sorted_rows() {
            let f: Vec<&str> = row.split(',').collect();
            *got.entry(f[0].parse().unwrap()).or_default() += f[1].parse::<u64>().unwrap();
            assert_eq!(f.len(), 4, "{row}");
        }
        assert_eq!(got, per, "q12 at parallelism {parallelism}");
    }
}

// ----- checkpoints, failures and rescaling ----------------------------------------------------

fn options() -> QueryOptions {
    QueryOptions {
        side_input: side_input_path(),
        keep_rows: true,
        rate: None,
        config: config(),
        files: None,
    }
}

/// Updating queries (and q10's exactly-once files) through injected failures: the generator
/// replays from its checkpointed position and the operators from their state, and the final
/// table (the committed files) equals the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_queries_through_failures_equal_the_reference() {
    for (query, fault) in [
        // Exactly once into partitioned files.
        ("q10", "panic@q10#1:records=20000"),
        ("q4", "panic@q4#1:records=3000"),
        ("q19", "panic@q19#0:records=20000"),
        ("q18", "panic@Nexmark#1:records=30000"),
    ] {
        let (env, events) =
            common::checkpointed_env(2, std::time::Duration::from_millis(20), fault);
        // Slow enough that checkpoints complete before the failure.
        let source = NexmarkSource::new(config()).with_rate(50_000.0);
        let stream = nexmark::events(&env, source);
        let results = Arc::new(Results::default());
        nexmark::add_query(query, &stream, options(), &results).unwrap();
        common::run(&env).await.unwrap();
        assert!(
            common::restarts_from_checkpoints(&events.lock().unwrap()) > 0,
            "{query}: restarted from a checkpoint"
        );
        assert_rows(&results.sorted_rows(), &reference(query), query);
    }
}

/// A savepoint taken at parallelism 2 restored at 3: the generator emits exactly the events
/// the first run had not, and the table of both runs equals the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_restores_the_generator_at_another_parallelism() {
    use actorflow::checkpoint::{JobEvent, RestoreFrom};
    use actorflow::snapshot::MemoryStore;
    let store = Arc::new(MemoryStore::new());
    let results = Arc::new(Results::default());
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let env = common::env(2);
    env.enable_checkpointing(std::time::Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .set_job_listener(Arc::new(move |e: &JobEvent| {
            if matches!(e, JobEvent::CheckpointCompleted { .. }) {
                tx.send_modify(|n| *n += 1);
            }
        }));
    let source = NexmarkSource::new(config()).with_rate(40_000.0);
    let stats = source.stats();
    let stream = nexmark::events(&env, source);
    nexmark::add_query("q18", &stream, options(), &results).unwrap();
    let handle = env.execute_async("q18 at 2").await.unwrap();
    rx.wait_for(|n| *n >= 5).await.unwrap();
    let savepoint = handle.control().stop_with_savepoint().await.unwrap();
    handle.join().await.unwrap();
    let first = stats.emitted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        first > 0 && first < EVENTS,
        "stopped in the middle: {first}"
    );
    let env = common::env(3);
    env.enable_checkpointing(std::time::Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(RestoreFrom::Checkpoint(savepoint));
    let source = NexmarkSource::new(config());
    let stats = source.stats();
    let stream = nexmark::events(&env, source);
    nexmark::add_query("q18", &stream, options(), &results).unwrap();
    common::run(&env).await.unwrap();
    let second = stats.emitted.load(std::sync::atomic::Ordering::Relaxed);
    // The second run emitted the rest, not everything: what the savepoint counts as emitted
    // is skipped (the first run may have emitted more after the savepoint's barrier, which
    // the second run emits again).
    assert!(
        second < EVENTS && first + second >= EVENTS,
        "{first} + {second}"
    );
    assert_rows(
        &results.sorted_rows(),
        &reference("q18"),
        "q18 across a rescale",
    );
}

/// The runner: several queries in child processes with one line each and a report; one
/// query's `--output` equals the reference; `--dump-events` writes every event.
#[test]
fn the_runner_prints_a_line_per_query_and_writes_what_it_is_asked() {
    let exe = common::example_binary("nexmark");
    let dir = std::env::temp_dir().join(format!("actorflow-nexmark-runner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.md");
    let out = std::process::Command::new(&exe)
        .args([
            "--query",
            "q0,q11",
            "--events",
            "20000",
            "--parallelism",
            "2",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("query=q0 events=20000 seconds="),
        "{text}"
    );
    assert!(
        lines[0].contains("output_rows=18400"),
        "46 bids in 50 events: {text}"
    );
    assert!(lines[1].starts_with("query=q11 "), "{text}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("| q0 |") && md.contains("| q11 |"), "{md}");
    let json = std::fs::read_to_string(dir.join("report.md.json")).unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[1]["query"], "q11");

    let rows = dir.join("q2.csv");
    let events = dir.join("events.json");
    let status = std::process::Command::new(&exe)
        .args([
            "--query", "q2", "--events", "100000", "--tps", "2000", "--seed", "42",
        ])
        .args(["--parallelism", "3"])
        .arg("--output")
        .arg(&rows)
        .arg("--dump-events")
        .arg(&events)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let got: Vec<String> = std::fs::read_to_string(&rows)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_rows(&got, &reference("q2"), "the runner's q2 output");
    let dumped = std::fs::read_to_string(&events).unwrap();
    assert_eq!(dumped.lines().count(), 100_000);
    let first: Value = serde_json::from_str(dumped.lines().next().unwrap()).unwrap();
    assert_eq!(first["event_type"], 0);
    assert_eq!(first["person"]["id"], 1000);
    // Unknown and unbuilt queries are refused with a reason.
    let bad = std::process::Command::new(&exe)
        .args(["--query", "q6"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not built"));
}
