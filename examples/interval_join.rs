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

#[path = "support/csv.rs"]
mod csv;
#[path = "support/web.rs"]
mod web;

use actorflow::operators::JoinContext;
use actorflow::prelude::*;
use csv::{Event, Flags, events, main_with, write_sorted};
use std::path::PathBuf;
use std::process::ExitCode;

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
    let mut flags = Flags::parse(web::from_args()?, USAGE)?;
    let args = Args {
        left: flags.path("left")?,
        right: flags.path("right")?,
        lower: flags.int("lower")?,
        upper: flags.int("upper")?,
        output: flags.path("output")?,
        parallelism: flags.parallelism()?,
    };
    flags.done()?;
    if args.lower > args.upper {
        return Err(format!(
            "--lower ({}) must not exceed --upper ({})",
            args.lower, args.upper
        ));
    }
    Ok(args)
}

fn run(args: Args) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
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
    web::get().keep_serving_blocking();
    write_sorted(&args.output, joined.take())
}

fn main() -> ExitCode {
    main_with("interval_join", parse_args, run)
}
