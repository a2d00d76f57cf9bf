//! The Nexmark generator (the Beam / Flink model, `../shared/nexmark.md` §1) and its
//! parallel, replayable source.

use super::model::{Auction, Bid, CHANNELS, Event, HOT_CHANNELS, Person, PoolText};
use crate::env::ParallelSource;
use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow_runtime::{
    CheckpointId, Collector, Source, SourceStatus, TaskInfo, Timestamp, UserError,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// SplitMix64, seeded per event: every event's random choices depend only on the run's seed
/// and the event's id, so the same seed gives the same events at any parallelism.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`n > 0`; 0 gives 0).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Beam's `nextString`: length in `[3, max)`, lowercase letters, a delimiter with
    /// chance 1/13, trimmed.
    pub(crate) fn delimited_string(&mut self, max: u64, delimiter: char) -> String {
        let len = 3 + self.below(max.saturating_sub(3).max(1));
        let s: String = (0..len)
            .map(|_| {
                if self.below(13) == 0 {
                    delimiter
                } else {
                    char::from(b'a' + self.below(26) as u8)
                }
            })
            .collect();
        s.trim().to_string()
    }

    /// Beam's `nextExtra`: the length that brings an event of `current` bytes to about
    /// `average` (±20 %).
    fn extra_len(&mut self, current: u64, average: u64) -> u64 {
        if current > average {
            return 0;
        }
        let want = average - current;
        let delta = (want + 2) / 5;
        want - delta + self.below(2 * delta)
    }

    /// Log-uniform price between 100 and 10^8 cents: `round(10^(6u) * 100)`, with `exp`
    /// (faster than `powf`) and rounding by adding a half (the value is positive).
    #[inline]
    fn price(&mut self) -> u64 {
        ((self.unit() * 6.0 * std::f64::consts::LN_10).exp() * 100.0 + 0.5) as u64
    }
}

const PROPORTION: u64 = 50; // 1 person, 3 auctions, 46 bids per 50 events
const AUCTIONS: u64 = 3;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const ACTIVE_PEOPLE: u64 = 1000;
const IN_FLIGHT_AUCTIONS: u64 = 100;
const ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_CHANNEL_RATIO: u64 = 2;
const HOT_BLOCK: u64 = 100;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// The generator's settings (`../shared/nexmark.md` §1.1; the proportions, id offsets, hot
/// ratios and sizes are the suite's constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Events in all (0: unbounded).
    pub events: u64,
    /// Events per second of **event time** (Flink's V1 suite: 10 M): event `n` is at
    /// `base_time + n * 1000 / tps` ms.
    pub tps: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Event time of the first event, ms since the epoch (default 2025-01-01T00:00:00Z; the
    /// Beam and Flink ports take the wall clock, which makes runs differ).
    pub base_time: i64,
    /// Out-of-order group size (Beam's; 1 = in order, Arroyo uses 50).
    pub out_of_order_group: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 10_000_000,
            tps: 10_000_000,
            seed: 0,
            base_time: 1_735_689_600_000,
            out_of_order_group: 1,
        }
    }
}

impl NexmarkConfig {
    /// The adjusted event number (Beam's out-of-order groups; identity for groups of 1).
    #[inline]
    fn adjusted(&self, n: u64) -> u64 {
        let g = self.out_of_order_group.max(1);
        (n / g) * g + (n.wrapping_mul(953)) % g
    }

    /// Event time of event number `n`, ms.
    #[inline]
    pub fn timestamp(&self, n: u64) -> i64 {
        let a = self.adjusted(n);
        let tps = self.tps.max(1);
        let offset = match a.checked_mul(1000) {
            Some(x) => x / tps,
            None => (u128::from(a) * 1000 / u128::from(tps)) as u64,
        };
        self.base_time
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    /// Event number `n` (0, 1, 2, …; the event's id is its adjusted number). Pure: the same
    /// `n` and config give the same event.
    pub fn event(&self, n: u64) -> Event {
        let eid = self.adjusted(n);
        let ts = self.timestamp(n);
        let mut rng = Rng::new(self.seed, eid);
        match eid % PROPORTION {
            0 => Event::Person(Box::new(self.person(eid, ts, &mut rng))),
            1..=3 => Event::Auction(Box::new(self.auction(n, eid, ts, &mut rng))),
            _ => Event::Bid(self.bid(eid, ts, &mut rng)),
        }
    }

    fn person(&self, eid: u64, ts: i64, rng: &mut Rng) -> Person {
        let id = last_person(eid) + FIRST_PERSON_ID;
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize],
            LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize]
        );
        let email_address = format!(
            "{}@{}.com",
            rng.delimited_string(7, ' '),
            rng.delimited_string(5, ' ')
        );
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = CITIES[rng.below(CITIES.len() as u64) as usize].to_string();
        let state = STATES[rng.below(STATES.len() as u64) as usize].to_string();
        let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + 2 + 8;
        let len = rng.extra_len(size as u64, 200);
        let at = rng.next() as u32;
        Person {
            id,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: ts,
            extra: PoolText::new(at, len as usize),
        }
    }

    fn auction(&self, n: u64, eid: u64, ts: i64, rng: &mut Rng) -> Auction {
        let id = last_auction(eid) + FIRST_AUCTION_ID;
        // Beam's nextString(20) and nextString(100): 3 to max - 1 characters, trimmed.
        let item_name = PoolText::spaced(rng.next() as u32, 3 + rng.below(17) as usize);
        let description = PoolText::spaced(rng.next() as u32, 3 + rng.below(97) as usize);
        let initial_bid = rng.price();
        let reserve = initial_bid + rng.price();
        // Auctions last up to twice the time the next 100 auctions take to appear.
        let horizon = self.timestamp(n + IN_FLIGHT_AUCTIONS * PROPORTION / AUCTIONS) - ts;
        let expires = ts + 1 + rng.below((2 * horizon.max(0) as u64).max(1)) as i64;
        let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
            (last_person(eid) / HOT_BLOCK) * HOT_BLOCK
        } else {
            next_person(eid, rng)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let size = 8 + item_name.len() + description.len() + 8 * 5;
        let len = rng.extra_len(size as u64, 500);
        let at = rng.next() as u32;
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller,
            category,
            extra: PoolText::new(at, len as usize),
        }
    }

    #[inline]
    fn bid(&self, eid: u64, ts: i64, rng: &mut Rng) -> Bid {
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            (last_auction(eid) / HOT_BLOCK) * HOT_BLOCK
        } else {
            next_auction(eid, rng)
        } + FIRST_AUCTION_ID;
        // The +1 keeps hot bidders apart from hot sellers.
        let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
            (last_person(eid) / HOT_BLOCK) * HOT_BLOCK + 1
        } else {
            next_person(eid, rng)
        } + FIRST_PERSON_ID;
        let price = rng.price();
        let channel_id = if rng.below(HOT_CHANNEL_RATIO) > 0 {
            rng.below(HOT_CHANNELS.len() as u64) as u16
        } else {
            (HOT_CHANNELS.len() as u64 + rng.below(CHANNELS as u64)) as u16
        };
        let len = rng.extra_len(32, 100);
        let at = rng.next() as u32;
        Bid {
            auction,
            bidder,
            price,
            channel_id,
            date_time: ts,
            extra: PoolText::new(at, len as usize),
        }
    }
}

/// The newest person id (base 0) at event `eid`.
#[inline]
fn last_person(eid: u64) -> u64 {
    eid / PROPORTION
}

/// The newest auction id (base 0) at event `eid`.
#[inline]
fn last_auction(eid: u64) -> u64 {
    let (epoch, off) = (eid / PROPORTION, eid % PROPORTION);
    if off < 1 {
        (epoch * AUCTIONS).saturating_sub(1)
    } else if off > AUCTIONS {
        epoch * AUCTIONS + AUCTIONS - 1
    } else {
        epoch * AUCTIONS + off - 1
    }
}

/// A recent person (base 0): one of the last 1 000, or up to 10 not yet created.
#[inline]
fn next_person(eid: u64, rng: &mut Rng) -> u64 {
    let people = last_person(eid) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + rng.below(active + ID_LEAD)
}

/// A recent auction (base 0): one of the last 100, or up to 10 not yet created.
#[inline]
fn next_auction(eid: u64, rng: &mut Rng) -> u64 {
    let max = last_auction(eid);
    let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + ID_LEAD)
}

/// What one generator subtask emitted, for the checkpoint: at `parallelism`, subtask
/// `index` emitted the events `index, index + parallelism, …` below number `index +
/// emitted * parallelism`; `earlier` are the same facts from before a rescaled restore.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Progress {
    parallelism: u64,
    index: u64,
    emitted: u64,
    earlier: Vec<Layer>,
}

/// Every subtask's progress at one parallelism.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Layer {
    parallelism: u64,
    emitted: Vec<u64>,
}

impl Layer {
    fn covers(&self, n: u64) -> bool {
        let p = self.parallelism.max(1);
        self.emitted
            .get((n % p) as usize)
            .is_some_and(|&k| n / p < k)
    }
}

/// Counters a runner reads while the job runs.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    /// Events emitted by all subtasks (including replays after restarts).
    pub emitted: AtomicU64,
}

/// The Nexmark source: `P` subtasks, subtask `i` emitting events `i, i + P, i + 2P, …` (so
/// the union is the same event sequence at any parallelism, each subtask's share in time
/// order), stamped with their event time. Replayable: a checkpoint holds how many each
/// subtask emitted, and a restore (at any parallelism) emits exactly the rest.
///
/// `rate` paces emission in wall-clock time (events per second in all; event `n` leaves
/// no earlier than `n / rate` seconds after the job started); without it events go out as
/// fast as the job takes them (Flink's `max-emit-speed`).
///
/// # Examples
///
/// ```
/// use actorflow::nexmark::{Event, NexmarkConfig, NexmarkSource};
/// let cfg = NexmarkConfig { events: 1_000, ..NexmarkConfig::default() };
/// let mut out = actorflow::testing::example_with(2, |env| {
///     env.add_source("nexmark", NexmarkSource::new(cfg))
///         .map(|e: Event| e.event_type())
/// });
/// out.sort();
/// assert_eq!(out.iter().filter(|t| **t == 0).count(), 20); // 1 person in 50 events
/// assert_eq!(out.iter().filter(|t| **t == 2).count(), 920); // 46 bids in 50
/// ```
#[derive(Debug, Clone)]
pub struct NexmarkSource {
    config: NexmarkConfig,
    rate: Option<f64>,
    stats: Arc<GeneratorStats>,
}

impl NexmarkSource {
    /// A source of `config`'s events, as fast as the job takes them.
    pub fn new(config: NexmarkConfig) -> Self {
        NexmarkSource {
            config,
            rate: None,
            stats: Arc::default(),
        }
    }

    /// Paces emission: `events_per_second` in all, in wall-clock time.
    pub fn with_rate(mut self, events_per_second: f64) -> Self {
        self.rate = Some(events_per_second).filter(|r| r.is_finite() && *r > 0.0);
        self
    }

    /// Live counters (events emitted so far).
    pub fn stats(&self) -> Arc<GeneratorStats> {
        self.stats.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }
}

impl ParallelSource for NexmarkSource {
    type Source = NexmarkReader;

    fn create(&self, task: &TaskInfo) -> Result<NexmarkReader, String> {
        Ok(NexmarkReader {
            config: self.config,
            rate: self.rate,
            stats: self.stats.clone(),
            index: task.subtask_index as u64,
            parallelism: u64::from(task.parallelism.max(1)),
            emitted: 0,
            earlier: Vec::new(),
            start: None,
        })
    }

    fn is_bounded(&self) -> bool {
        self.config.events > 0
    }
}

/// One subtask of a [`NexmarkSource`].
#[derive(Debug)]
pub struct NexmarkReader {
    config: NexmarkConfig,
    rate: Option<f64>,
    stats: Arc<GeneratorStats>,
    index: u64,
    parallelism: u64,
    /// Events this subtask emitted (its next is `index + emitted * parallelism`).
    emitted: u64,
    earlier: Vec<Layer>,
    start: Option<tokio::time::Instant>,
}

/// Events per call of the source.
const BATCH: u64 = 4096;

impl NexmarkReader {
    fn next_number(&self) -> u64 {
        self.index + self.emitted * self.parallelism
    }

    fn done(&self) -> bool {
        self.config.events > 0 && self.next_number() >= self.config.events
    }
}

impl Source for NexmarkReader {
    type Output = Event;

    async fn next_batch(&mut self, out: &mut Collector<Event>) -> Result<SourceStatus, UserError> {
        if self.done() {
            return Ok(SourceStatus::End);
        }
        let mut limit = BATCH;
        if let Some(rate) = self.rate {
            let start = *self.start.get_or_insert_with(tokio::time::Instant::now);
            // Event n is due n / rate seconds after the start.
            let due = |n: u64| start + Duration::from_secs_f64(n as f64 / rate);
            let next = self.next_number();
            let now = tokio::time::Instant::now();
            if due(next) > now {
                tokio::time::sleep_until(due(next)).await;
            }
            let now = tokio::time::Instant::now();
            let allowed = (now.duration_since(start).as_secs_f64() * rate) as u64;
            limit = limit.min(allowed.saturating_sub(next) / self.parallelism + 1);
        }
        out.reserve(limit as usize);
        let mut sent = 0;
        while sent < limit && !self.done() {
            let n = self.next_number();
            self.emitted += 1;
            if !self.earlier.is_empty() && self.earlier.iter().any(|l| l.covers(n)) {
                continue; // emitted before a rescaled restore
            }
            let e = self.config.event(n);
            out.collect_with_timestamp(e, Timestamp(self.config.timestamp(n)));
            sent += 1;
        }
        self.stats.emitted.fetch_add(sent, Ordering::Relaxed);
        Ok(if self.done() {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }

    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        state.push_union(
            self.index as usize,
            &Progress {
                parallelism: self.parallelism,
                index: self.index,
                emitted: self.emitted,
                earlier: self.earlier.clone(),
            },
        )
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let items: Vec<(usize, Progress)> = restored.state.union_items()?;
        let Some((_, first)) = items.first() else {
            return Ok(());
        };
        let old_p = first.parallelism.max(1);
        self.earlier = first.earlier.clone();
        if old_p == self.parallelism {
            if let Some((_, own)) = items.iter().find(|(_, p)| p.index == self.index) {
                self.emitted = own.emitted;
            }
            return Ok(());
        }
        // Another parallelism: what the old subtasks emitted becomes a layer to skip.
        let mut emitted = vec![0u64; old_p as usize];
        for (_, p) in &items {
            if let Some(slot) = emitted.get_mut(p.index as usize) {
                *slot = p.emitted;
            }
        }
        self.earlier.push(Layer {
            parallelism: old_p,
            emitted,
        });
        self.emitted = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_types_and_hot_keys_follow_the_model() {
        let cfg = NexmarkConfig::default();
        let events: Vec<Event> = (0..100_000).map(|n| cfg.event(n)).collect();
        // 1 person, 3 auctions, 46 bids per 50; dense ids from 1000.
        let persons: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Person(p) => Some(p.id),
                _ => None,
            })
            .collect();
        assert_eq!(persons.len(), 2_000);
        assert_eq!(persons, (1000..3000).collect::<Vec<_>>());
        let auctions: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Auction(a) => Some(a.id),
                _ => None,
            })
            .collect();
        assert_eq!(auctions, (1000..7000).collect::<Vec<_>>());
        // About half the bids go to the hot auction of the current block of 100.
        let bids: Vec<&Bid> = events
            .iter()
            .filter_map(|e| match e {
                Event::Bid(b) => Some(b),
                _ => None,
            })
            .collect();
        let hot = bids
            .iter()
            .filter(|b| (b.auction - 1000) % 100 == 0)
            .count() as f64;
        let share = hot / bids.len() as f64;
        assert!((0.49..0.53).contains(&share), "{share}");
        // Prices are log-uniform in [100, 1e8].
        assert!(bids.iter().all(|b| (100..=100_000_000).contains(&b.price)));
        // The same seed, the same events; another seed, others.
        assert_eq!(cfg.event(777), events[777]);
        let other = NexmarkConfig { seed: 1, ..cfg };
        assert_ne!(other.event(777), events[777]);
    }

    #[test]
    fn timestamps_follow_the_event_rate() {
        let cfg = NexmarkConfig {
            tps: 1000,
            ..NexmarkConfig::default()
        };
        assert_eq!(cfg.timestamp(0), cfg.base_time);
        assert_eq!(cfg.timestamp(1500), cfg.base_time + 1500);
        let fast = NexmarkConfig::default();
        assert_eq!(fast.timestamp(9_999), fast.base_time);
        assert_eq!(fast.timestamp(10_000), fast.base_time + 1);
    }

    #[test]
    fn rescaled_progress_skips_what_was_emitted() {
        let layer = Layer {
            parallelism: 2,
            emitted: vec![3, 1],
        };
        // Subtask 0 emitted 0, 2, 4; subtask 1 emitted 1.
        let covered: Vec<u64> = (0..8).filter(|n| layer.covers(*n)).collect();
        assert_eq!(covered, vec![0, 1, 2, 4]);
    }
}
