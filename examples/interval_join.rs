//! The interval join of two CSV streams (Flink's `intervalJoin`): every pair of a left and a
//! right record with equal keys and `left_ts + lower <= right_ts <= left_ts + upper`.
//!
//! ```text
//! cargo run --release --example interval_join -- --left data/clicks.csv \
//!     --right data/purchases.csv --lower -5000 --upper 10000 --output /tmp/joined.csv
//! ```
//!
//! Flags: `--left CSV --right CSV --lower MS --upper MS --output OUT [--parallelism N]`.
//! Inputs are `key,timestamp_ms,value` lines (integer timestamp and value) sorted by timestamp,
//! so nothing is late; empty lines are skipped, a malformed line stops the job naming its
//! file and line. OUT gets one line `key,left_ts,left_value,right_ts,right_value` per joined
//! pair, sorted in byte order. The join runs at `--parallelism` (default 1), keyed by `key`.

use actorflow::operators::JoinContext;
use actorflow::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

type Event = (String, i64, i64);

const USAGE: &str = "usage: interval_join --left CSV --right CSV --lower MS --upper MS \
                     --output OUT [--parallelism N]";

struct Args {
    left: PathBuf,
    right: PathBuf,
    lower: i64,
    upper: i64,
    output: PathBuf,
    parallelism: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut flags: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument '{flag}'\n{USAGE}"))?;
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        flags.insert(name.to_string(), value);
    }
    let mut take = |name: &str| {
        flags
            .remove(name)
            .ok_or_else(|| format!("--{name} is required\n{USAGE}"))
    };
    let int = |name: &str, v: String| {
        v.parse::<i64>()
            .map_err(|_| format!("--{name} takes an integer, got '{v}'"))
    };
    let left = take("left")?.into();
    let right = take("right")?.into();
    let lower = int("lower", take("lower")?)?;
    let upper = int("upper", take("upper")?)?;
    let output = take("output")?.into();
    let parallelism = match flags.remove("parallelism") {
        None => 1,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(format!("--parallelism must be at least 1, got '{v}'"))?,
    };
    if let Some(unknown) = flags.keys().next() {
        return Err(format!("unknown flag --{unknown}\n{USAGE}"));
    }
    if lower > upper {
        return Err(format!(
            "--lower ({lower}) must not exceed --upper ({upper})"
        ));
    }
    Ok(Args {
        left,
        right,
        lower,
        upper,
        output,
        parallelism,
    })
}

/// Parses `key,timestamp,value`; `Ok(None)` for an empty line.
fn parse_line(line: &str) -> Result<Option<Event>, &'static str> {
    if line.is_empty() {
        return Ok(None);
    }
    let mut f = line.splitn(3, ',');
    let (Some(key), Some(ts), Some(value)) = (f.next(), f.next(), f.next()) else {
        return Err("expected key,timestamp_ms,value");
    };
    if key.is_empty() {
        return Err("the key is empty");
    }
    let ts = ts.parse().map_err(|_| "the timestamp is not an integer")?;
    let value = value.parse().map_err(|_| "the value is not an integer")?;
    Ok(Some((key.to_string(), ts, value)))
}

/// The events of one CSV file, with event timestamps (ascending input: monotonous).
fn events(env: &StreamExecutionEnvironment, path: &Path, side: &'static str) -> DataStream<Event> {
    let name = path.display().to_string();
    let mut line_no = 0u64;
    env.read_text_file(path)
        .set_parallelism(1)
        .process(
            move |line: String, _: &mut Context<'_>, out: &mut Collector<Event>| {
                line_no += 1;
                match parse_line(&line) {
                    Ok(Some(e)) => out.collect(e),
                    Ok(None) => {}
                    Err(why) => {
                        return Err(
                            format!("{name}: malformed line {line_no}: {why}: {line:?}").into()
                        );
                    }
                }
                Ok(())
            },
        )
        .name(&format!("parse {side}"))
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .name(&format!("timestamps {side}"))
        .set_parallelism(1)
}

fn run(args: Args) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(args.parallelism);
    let left = events(&env, &args.left, "left");
    let right = events(&env, &args.right, "right");
    let joined = left
        .key_by_ref(|e: &Event| &e.0)
        .interval_join(&right.key_by_ref(|e: &Event| &e.0))
        .between(args.lower, args.upper)
        .process(
            |l: Event, r: Event, _: &JoinContext, out: &mut Collector<String>| {
                out.collect(format!("{},{},{},{},{}", l.0, l.1, l.2, r.1, r.2));
                Ok(())
            },
        )
        .uid("interval-join")
        .collect();
    env.execute_blocking("interval_join")?;
    let mut lines = joined.take();
    lines.sort_unstable();
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&args.output, text)
        .map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interval_join: {e}");
            ExitCode::FAILURE
        }
    }
}
