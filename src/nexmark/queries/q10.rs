//! q10 — log to a file system: every bid into files partitioned by day and minute:
//!
//! ```sql
//! INSERT INTO fs_sink  -- PARTITIONED BY (dt, hm)
//! SELECT auction, bidder, price, dateTime, extra,
//!   DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm')
//! FROM bid
//! ```
//!
//! API: `map` to the line, then the exactly-once [`PartitionedFileSink`] (two-phase commit:
//! part files made visible when a checkpoint completes) with the partition
//! `dt=yyyy-MM-dd/hm=HH:mm` of each bid's time; the partition columns are the directories,
//! not part of the lines, as in a partitioned filesystem table.

use super::{CsvRow, DateTime, bids};
use crate::datastream::{DataStream, DataStreamSink};
use crate::nexmark::model::{Event, format_day};
use actorflow_runtime::TaskInfo;
use actorflow_runtime::operators::transactional::{PartitionedFileSink, TwoPhaseCommit};
use std::path::Path;

/// A line of q10's output with its time: `(dateTime, "auction,bidder,price,dateTime,extra")`.
pub type Q10Line = (i64, String);

/// The partition of a time: `dt=yyyy-MM-dd/hm=HH:mm` (UTC).
pub fn q10_partition(ms: i64) -> String {
    let minute = ms.rem_euclid(86_400_000) / 60_000;
    format!(
        "dt={}/hm={:02}:{:02}",
        format_day(ms),
        minute / 60,
        minute % 60
    )
}

/// q10's lines (before the sink).
pub fn q10_lines(events: &DataStream<Event>) -> DataStream<Q10Line> {
    bids(events)
        .map(|b| {
            let line = (b.auction, b.bidder, b.price, DateTime(b.date_time), b.extra).csv();
            (b.date_time, line)
        })
        .name("q10")
}

/// A line as it is written (the time is the partition's).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Line(i64, String);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

/// q10 over `events`, writing under `dir` (which must not hold the committed output of
/// another run unless `discard_existing`).
pub fn q10(events: &DataStream<Event>, dir: &Path, discard_existing: bool) -> DataStreamSink {
    let sink = PartitionedFileSink::<Line>::new(dir, |l: &Line| q10_partition(l.0))
        .discard_existing(discard_existing);
    q10_lines(events)
        .map(|(ts, line): Q10Line| Line(ts, line))
        .add_sink("q10 files", move |_: &TaskInfo| {
            Ok(TwoPhaseCommit::new(sink.clone()))
        })
        .uid("q10-files")
}
