//! What the CSV examples share: their flags, the `key,timestamp_ms,value` reader with
//! event timestamps, and the sorted output file. Included with `#[path]` (not an example).

#![allow(dead_code, reason = "each example uses a part of it")]

use actorflow::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One input line: key, timestamp (ms), value.
pub(crate) type Event = (String, i64, i64);

/// `--name value` pairs, taken one by one; what is left over is an error.
pub(crate) struct Flags {
    flags: HashMap<String, String>,
    usage: &'static str,
}

impl Flags {
    /// The process's arguments (`args`: without the program name).
    pub(crate) fn parse(args: Vec<String>, usage: &'static str) -> Result<Self, String> {
        let mut flags = HashMap::new();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument '{flag}'\n{usage}"))?;
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{usage}"))?;
            flags.insert(name.to_string(), value);
        }
        Ok(Flags { flags, usage })
    }

    /// A required flag.
    pub(crate) fn take(&mut self, name: &str) -> Result<String, String> {
        self.flags
            .remove(name)
            .ok_or_else(|| format!("--{name} is required\n{}", self.usage))
    }

    /// An optional flag.
    pub(crate) fn opt(&mut self, name: &str) -> Option<String> {
        self.flags.remove(name)
    }

    /// A required path.
    pub(crate) fn path(&mut self, name: &str) -> Result<PathBuf, String> {
        self.take(name).map(PathBuf::from)
    }

    /// A required integer.
    pub(crate) fn int(&mut self, name: &str) -> Result<i64, String> {
        let v = self.take(name)?;
        v.parse::<i64>()
            .map_err(|_| format!("--{name} takes an integer, got '{v}'"))
    }

    /// `--parallelism`, 1 by default.
    pub(crate) fn parallelism(&mut self) -> Result<u32, String> {
        match self.flags.remove("parallelism") {
            None => Ok(1),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!("--parallelism must be at least 1, got '{v}'")),
        }
    }

    /// Fails on a flag nobody took.
    pub(crate) fn done(self) -> Result<(), String> {
        match self.flags.keys().next() {
            Some(unknown) => Err(format!("unknown flag --{unknown}\n{}", self.usage)),
            None => Ok(()),
        }
    }
}

/// Parses `key,timestamp,value`; `Ok(None)` for an empty line.
pub(crate) fn parse_line(line: &str) -> Result<Option<Event>, &'static str> {
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

/// Parses each line of `lines` with `parse`; a malformed line stops the job naming `source`
/// and the line.
pub(crate) fn parse_lines<T: Data>(
    lines: DataStream<String>,
    source: String,
    parse: fn(&str) -> Result<Option<T>, &'static str>,
) -> DataStream<T> {
    let mut line_no = 0u64;
    lines.process(
        move |line: String, _: &mut Context<'_>, out: &mut Collector<T>| {
            line_no += 1;
            match parse(&line) {
                Ok(Some(e)) => out.collect(e),
                Ok(None) => {}
                Err(why) => {
                    return Err(
                        format!("{source}: malformed line {line_no}: {why}: {line:?}").into(),
                    );
                }
            }
            Ok(())
        },
    )
}

/// The records of one CSV file, parsed by `parse` (see [`parse_lines`]), with event
/// timestamps from `timestamp` (ascending input: monotonous watermarks).
pub(crate) fn read_csv<T: Data>(
    env: &StreamExecutionEnvironment,
    path: &Path,
    side: &'static str,
    parse: fn(&str) -> Result<Option<T>, &'static str>,
    timestamp: fn(&T) -> i64,
) -> DataStream<T> {
    let lines = env.read_text_file(path).set_parallelism(1);
    parse_lines(lines, path.display().to_string(), parse)
        .name(&format!("parse {side}"))
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(move |e: &T, _| timestamp(e)),
        )
        .name(&format!("timestamps {side}"))
        .set_parallelism(1)
}

/// The `key,timestamp_ms,value` events of one CSV file.
pub(crate) fn events(
    env: &StreamExecutionEnvironment,
    path: &Path,
    side: &'static str,
) -> DataStream<Event> {
    read_csv(env, path, side, parse_line, |e: &Event| e.1)
}

/// Writes `lines` sorted in byte order, one per line.
pub(crate) fn write_sorted(path: &Path, mut lines: Vec<String>) -> Result<(), UserError> {
    lines.sort_unstable();
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// Runs an example's `main`: usage errors exit with 2, job errors with 1.
pub(crate) fn main_with<A>(
    name: &str,
    parse: impl FnOnce() -> Result<A, String>,
    run: impl FnOnce(A) -> Result<(), UserError>,
) -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
