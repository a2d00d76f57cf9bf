//! The Nexmark benchmark, built in: the event generator (the Beam / Flink model: persons,
//! auctions and bids with hot keys, log-uniform prices and synthetic event time), a
//! parallel replayable source, and the queries as ordinary actorflow programs
//! ([`queries`]). The runner is the `nexmark` example; `docs/nexmark.md` explains the
//! model, each query, and the figures.
//!
//! ```
//! use actorflow::nexmark::{self, NexmarkConfig, NexmarkSource, queries};
//! let cfg = NexmarkConfig { events: 5_000, ..NexmarkConfig::default() };
//! let out = actorflow::testing::example_with(2, |env| {
//!     let events = nexmark::events(env, NexmarkSource::new(cfg));
//!     queries::q2(&events)
//! });
//! assert!(out.iter().all(|(auction, _price)| auction % 123 == 0));
//! ```

mod generator;
mod model;
pub mod queries;
mod runner;

pub use generator::{GeneratorStats, NexmarkConfig, NexmarkReader, NexmarkSource};
pub use model::{
    Auction, Bid, CHANNELS, Event, HOT_CHANNELS, Person, PoolText, channel_name, channel_url,
    format_day, format_time,
};

pub use runner::{QUERIES, QueryOptions, Results, UPDATING, add_query};

use crate::datastream::DataStream;
use crate::env::StreamExecutionEnvironment;
use actorflow_runtime::time::watermark::WatermarkStrategy;
use std::time::Duration;

/// The watermark delay the suite's DDL declares (`dateTime - INTERVAL '4' SECOND`).
pub const WATERMARK_DELAY: Duration = Duration::from_secs(4);

/// The events of `source` (which stamps each with its `dateTime`) with watermarks trailing
/// event time by 4 s (bounded out-of-orderness, periodic), chained to the source at its
/// parallelism.
pub fn events(env: &StreamExecutionEnvironment, source: NexmarkSource) -> DataStream<Event> {
    env.add_source("Nexmark", source)
        .uid("nexmark-source")
        .assign_timestamps_and_watermarks(WatermarkStrategy::for_bounded_out_of_orderness(
            WATERMARK_DELAY,
        ))
        .name("Nexmark watermarks")
        .uid("nexmark-watermarks")
}
