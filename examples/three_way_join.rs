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

#[path = "support/csv.rs"]
mod csv;
#[path = "support/web.rs"]
mod web;

use actorflow::multi_input::MultiInput;
use actorflow::operators::{Three, ThreeWayWindowJoin};
use actorflow::prelude::*;
use csv::{Event, Flags, events, main_with, write_sorted};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: three_way_join --a CSV --b CSV --c CSV --window-size MS \
                     --output OUT [--parallelism N]";

struct Args {
    inputs: [PathBuf; 3],
    window_size: i64,
    output: PathBuf,
    parallelism: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut flags = Flags::parse(web::from_args()?, USAGE)?;
    let args = Args {
        inputs: [flags.path("a")?, flags.path("b")?, flags.path("c")?],
        window_size: flags.int("window-size")?,
        output: flags.path("output")?,
        parallelism: flags.parallelism()?,
    };
    flags.done()?;
    if args.window_size <= 0 {
        return Err(format!(
            "--window-size must be positive, got {}",
            args.window_size
        ));
    }
    Ok(args)
}

fn run(args: Args) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
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
    web::get().keep_serving_blocking();
    write_sorted(&args.output, joined.take())
}

fn main() -> ExitCode {
    main_with("three_way_join", parse_args, run)
}
