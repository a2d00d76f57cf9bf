//! The inner join of three CSV streams on their key within each tumbling event-time window,
//! on the native N-input operator (`actorflow::multi_input`): one operator with three
//! inputs of its own, not a cascade of two-input joins.
//!
//! ```text
//! cargo run --release --example three_way_join -- --a data/a.csv --b data/b.csv \
//!     --c data/c.csv --window-size 1000 --output /tmp/joined.csv
//! ```
//!
//! Flags: `--a CSV --b CSV --c CSV --window-size MS --output OUT [--parallelism N]`.
//! Inputs are `key,timestamp_ms,value` lines (integer timestamp and value) sorted by timestamp,
//! so nothing is late; empty lines are skipped, a malformed line stops the job naming its
//! file and line. OUT gets one line `key,window_start,a_value,b_value,c_value` for every
//! combination of one record of each input with the same key in the same window, sorted in
//! byte order. The join runs at `--parallelism` (default 1), keyed by `key`.

use actorflow::multi_input::MultiInput;
use actorflow::operators::{Three, ThreeWayWindowJoin};
use actorflow::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

type Event = (String, i64, i64);

const USAGE: &str = "usage: three_way_join --a CSV --b CSV --c CSV --window-size MS \
                     --output OUT [--parallelism N]";

struct Args {
    inputs: [PathBuf; 3],
    window_size: i64,
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
    let inputs = [take("a")?.into(), take("b")?.into(), take("c")?.into()];
    let window_size = int("window-size", take("window-size")?)?;
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
    if window_size <= 0 {
        return Err(format!("--window-size must be positive, got {window_size}"));
    }
    Ok(Args {
        inputs,
        window_size,
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
    let [a, b, c] = &args.inputs;
    let (a, b, c) = (
        events(&env, a, "a"),
        events(&env, b, "b"),
        events(&env, c, "c"),
    );
    let key = |e: &Event| e.0.clone();
    let join = ThreeWayWindowJoin::new(
        args.window_size,
        |k: &String, start: i64, a: &i64, b: &i64, c: &i64, out: &mut Collector<String>| {
            out.collect(format!("{k},{start},{a},{b},{c}"));
            Ok(())
        },
    )?;
    let joined = MultiInput::new(&env)
        .input(&a, key, |e: Event| Three::A(e.2))
        .input(&b, key, |e: Event| Three::B(e.2))
        .input(&c, key, |e: Event| Three::C(e.2))
        .process("three-way join", join)
        .uid("three-way-join")
        .collect();
    env.execute_blocking("three_way_join")?;
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
            eprintln!("three_way_join: {e}");
            ExitCode::FAILURE
        }
    }
}
