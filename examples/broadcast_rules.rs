//! Flink's dynamic-rules pattern on broadcast state: a rule stream sets per-key thresholds
//! that a keyed event stream is checked against; the rules reach every subtask and live in
//! broadcast state, the events wait in keyed state until event time says which rule applies.
//!
//! ```text
//! cargo run --release --example broadcast_rules -- --events data/rule_events.csv \
//!     --rules data/rules.csv --output /tmp/alerts.csv --parallelism 2
//! ```
//!
//! Flags: `--events CSV --rules CSV --output OUT [--parallelism N]`. Both inputs are
//! `key,timestamp_ms,value` lines sorted by timestamp. A rule line sets the threshold `value`
//! for `key` from `timestamp_ms` on; the key `*` sets the default for keys without a rule of
//! their own. An event alerts if its value is above the threshold in force at its timestamp
//! (the newest rule for its key with a timestamp at or before it, else the newest default;
//! none: no alert). OUT gets one line `key,timestamp_ms,value,threshold` per alert, sorted in
//! byte order.
//!
//! Why the output is the same at every parallelism and on every run: an event is held in
//! keyed state until the operator's watermark (the minimum of both inputs') passes its
//! timestamp, so every rule up to it has arrived, whatever order the two inputs interleave in.

#[path = "support/csv.rs"]
mod csv;

use actorflow::broadcast::{KeyedBroadcastContext, ReadOnlyBroadcastState};
use actorflow::keyed_state::MapState;
use actorflow::operators::OpenContext;
use actorflow::prelude::*;
use csv::{Event, Flags, events, main_with, write_sorted};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: broadcast_rules --events CSV --rules CSV --output OUT [--parallelism N]";

/// Per key (`*`: the default), the thresholds in the order they arrived: `(from_ms, threshold)`.
const RULES: BroadcastStateDescriptor<String, Vec<(i64, i64)>> =
    BroadcastStateDescriptor::new("rules");

struct Args {
    events: PathBuf,
    rules: PathBuf,
    output: PathBuf,
    parallelism: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut flags = Flags::parse(std::env::args().skip(1).collect(), USAGE)?;
    let args = Args {
        events: flags.path("events")?,
        rules: flags.path("rules")?,
        output: flags.path("output")?,
        parallelism: flags.parallelism()?,
    };
    flags.done()?;
    Ok(args)
}

/// The threshold `history` puts in force at `ts`: the last one that starts at or before it.
fn in_force(history: Option<&Vec<(i64, i64)>>, ts: i64) -> Option<i64> {
    history?
        .iter()
        .rev()
        .find(|(from, _)| *from <= ts)
        .map(|(_, t)| *t)
}

/// Holds each key's events until the watermark passes them, then checks them against the
/// rules in force at their timestamps.
#[derive(Clone, Default)]
struct CheckRules {
    /// Events waiting for the watermark: timestamp → values.
    pending: Option<MapState<i64, Vec<i64>>>,
}

impl KeyedBroadcastProcessFunction<String, Event, Event, String> for CheckRules {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.pending = Some(ctx.state.map_state("pending", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (_, ts, value): Event,
        ctx: &mut KeyedContext<'_, String>,
        _: ReadOnlyBroadcastState<'_>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let pending = self.pending.as_ref().ok_or("not open")?;
        pending.modify(ctx.state(), ts, |values| values.push(value))?;
        ctx.register_event_time_timer(Timestamp(ts));
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        (key, from, threshold): Event,
        ctx: &mut KeyedBroadcastContext<'_, String>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let rules = ctx.broadcast_state().entries_mut(&RULES)?;
        rules.entry(key).or_default().push((from, threshold));
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, String>,
        rules: ReadOnlyBroadcastState<'_>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let pending = self.pending.as_ref().ok_or("not open")?;
        let Some(values) = pending.take(ctx.state(), &time.0)? else {
            return Ok(());
        };
        let key = ctx.current_key().clone();
        let all = rules.entries(&RULES)?;
        let threshold = in_force(all.get(&key), time.0).or_else(|| in_force(all.get("*"), time.0));
        if let Some(threshold) = threshold {
            for v in values.into_iter().filter(|v| *v > threshold) {
                out.collect(format!("{key},{},{v},{threshold}", time.0));
            }
        }
        Ok(())
    }
}

fn run(args: Args) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(args.parallelism);
    let rules = events(&env, &args.rules, "rules").broadcast_with(&RULES);
    let alerts = events(&env, &args.events, "events")
        .key_by(|e: &Event| e.0.clone())
        .connect_broadcast(&rules)
        .process(CheckRules::default())
        .uid("check-rules")
        .name("check rules")
        .collect();
    env.execute_blocking("broadcast_rules")?;
    let alerts = alerts.take();
    println!("{} alerts -> {}", alerts.len(), args.output.display());
    write_sorted(&args.output, alerts)
}

fn main() -> ExitCode {
    main_with("broadcast_rules", parse_args, run)
}
