//! Keyed event-time windows over a CSV file: sum and count per key and window, with late
//! records in a side output — the job of `../shared/flink-oracle` (`run.sh window`), and the
//! same output byte for byte.
//!
//! ```text
//! cargo run --release --example window_agg -- --input data/events.csv --output /tmp/out.csv \
//!     --window tumbling --size 10000 --ooo 2000 --watermark punctuated
//! ```
//!
//! Flags: `--input CSV --output OUT [--late-output L (default OUT.late)]
//! --window tumbling|sliding|session [--size MS] [--slide MS] [--gap MS] [--offset MS]
//! [--ooo MS] [--lateness MS] [--parallelism N] [--watermark periodic|punctuated]
//! [--wm-interval MS] [--mode streaming|batch]`.
//!
//! Input lines are `key,timestamp_ms,value` (integer timestamp and value, possibly negative);
//! empty lines are skipped, a malformed line stops the job naming its line number. One source
//! subtask reads the file and assigns timestamps with bounded out-of-orderness `--ooo`; the
//! windows run at `--parallelism`. OUT gets `key,window_start,window_end,sum,count` and the
//! late file `key,timestamp_ms,value`, both sorted in byte order.

use actorflow::RuntimeMode;
use actorflow::prelude::*;
use actorflow::watermark::{WatermarkGenerator, WatermarkOutput};
use actorflow::window::{SessionWindows, SlidingWindows, TumblingWindows, WindowTime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: window_agg --input CSV --output OUT [--late-output L] \
    --window tumbling|sliding|session [--size MS] [--slide MS] [--gap MS] [--offset MS] \
    [--ooo MS] [--lateness MS] [--parallelism N] [--watermark periodic|punctuated] \
    [--wm-interval MS] [--mode streaming|batch]";

type Event = (String, i64, i64);

struct Args {
    input: PathBuf,
    output: PathBuf,
    late_output: PathBuf,
    window: String,
    size: Option<i64>,
    slide: Option<i64>,
    gap: Option<i64>,
    offset: i64,
    ooo: i64,
    lateness: i64,
    parallelism: u32,
    punctuated: bool,
    wm_interval: u64,
    batch: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut flags: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument '{flag}'\n{USAGE}"));
        };
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        flags.insert(name.to_string(), value);
    }
    let mut take = |name: &str| flags.remove(name);
    let num = |name: &str, v: Option<String>| -> Result<Option<i64>, String> {
        v.map(|s| {
            s.parse::<i64>()
                .map_err(|_| format!("--{name} takes an integer, got '{s}'"))
        })
        .transpose()
    };
    let input: PathBuf = take("input")
        .ok_or(format!("--input is required\n{USAGE}"))?
        .into();
    let output: PathBuf = take("output")
        .ok_or(format!("--output is required\n{USAGE}"))?
        .into();
    let late_output = take("late-output").map(PathBuf::from).unwrap_or_else(|| {
        let mut s = output.clone().into_os_string();
        s.push(".late");
        s.into()
    });
    let window = take("window").ok_or(format!("--window is required\n{USAGE}"))?;
    let size = num("size", take("size"))?;
    let slide = num("slide", take("slide"))?;
    let gap = num("gap", take("gap"))?;
    let offset = num("offset", take("offset"))?.unwrap_or(0);
    let ooo = num("ooo", take("ooo"))?.unwrap_or(0);
    let lateness = num("lateness", take("lateness"))?.unwrap_or(0);
    let parallelism = num("parallelism", take("parallelism"))?.unwrap_or(1);
    let parallelism = u32::try_from(parallelism)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(format!(
            "--parallelism must be at least 1, got {parallelism}"
        ))?;
    let punctuated = match take("watermark").as_deref() {
        None | Some("periodic") => false,
        Some("punctuated") => true,
        Some(other) => {
            return Err(format!(
                "--watermark must be periodic|punctuated, got '{other}'"
            ));
        }
    };
    let wm_interval = num("wm-interval", take("wm-interval"))?.unwrap_or(200);
    let wm_interval = u64::try_from(wm_interval)
        .map_err(|_| format!("--wm-interval must be >= 0, got {wm_interval}"))?;
    let batch = match take("mode").as_deref() {
        None | Some("streaming") => false,
        Some("batch") => true,
        Some(other) => return Err(format!("--mode must be streaming|batch, got '{other}'")),
    };
    if ooo < 0 || lateness < 0 {
        return Err("--ooo and --lateness must be >= 0".into());
    }
    if let Some(unknown) = flags.keys().next() {
        return Err(format!("unknown flag --{unknown}\n{USAGE}"));
    }
    Ok(Args {
        input,
        output,
        late_output,
        window,
        size,
        slide,
        gap,
        offset,
        ooo,
        lateness,
        parallelism,
        punctuated,
        wm_interval,
        batch,
    })
}

/// Parses `key,timestamp,value`; `Ok(None)` for an empty line.
fn parse_line(line: &str) -> Result<Option<Event>, &'static str> {
    if line.is_empty() {
        return Ok(None);
    }
    let (key, rest) = line
        .split_once(',')
        .ok_or("expected key,timestamp_ms,value")?;
    let (ts, value) = rest
        .split_once(',')
        .ok_or("expected key,timestamp_ms,value")?;
    if key.is_empty() {
        return Err("the key is empty");
    }
    let ts = ts.parse().map_err(|_| "the timestamp is not an integer")?;
    let value = value.parse().map_err(|_| "the value is not an integer")?;
    Ok(Some((key.to_string(), ts, value)))
}

/// The oracle's punctuated generator: after every record that raises the highest timestamp,
/// the watermark `highest − ooo − 1` (Java's wrapping arithmetic included).
struct Punctuated {
    bound: i64,
    max_ts: i64,
    last: i64,
}

impl WatermarkGenerator<Event> for Punctuated {
    fn on_event(&mut self, _: &Event, ts: Timestamp, out: &mut WatermarkOutput) {
        if ts.0 > self.max_ts {
            self.max_ts = ts.0;
            let wm = self.max_ts.wrapping_sub(self.bound).wrapping_sub(1);
            if wm > self.last {
                self.last = wm;
                out.emit_watermark(Watermark(wm));
            }
        }
    }
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

/// Sum and count, with Java's wrapping `long` arithmetic.
#[derive(Clone)]
struct SumCount;

impl AggregateFunction<Event> for SumCount {
    type Acc = (i64, i64);
    type Out = (i64, i64);
    fn create_accumulator(&mut self) -> (i64, i64) {
        (0, 0)
    }
    #[inline]
    fn add(&mut self, e: Event, acc: &mut (i64, i64)) {
        acc.0 = acc.0.wrapping_add(e.2);
        acc.1 += 1;
    }
    fn get_result(&mut self, acc: &(i64, i64)) -> (i64, i64) {
        *acc
    }
    fn merge(&mut self, a: &mut (i64, i64), b: (i64, i64)) {
        a.0 = a.0.wrapping_add(b.0);
        a.1 += b.1;
    }
}

type Row = (String, i64, i64, i64, i64);

#[allow(clippy::ptr_arg)] // the window function signature fixes the key type
fn emit_row(
    key: &String,
    ctx: &mut WindowContext<'_, TimeWindow>,
    (sum, count): (i64, i64),
    out: &mut Collector<Row>,
) -> Result<(), UserError> {
    let w = ctx.window();
    out.collect((key.clone(), w.start, w.end, sum, count));
    Ok(())
}

fn write_sorted(path: &Path, mut lines: Vec<String>) -> Result<(), UserError> {
    lines.sort_unstable();
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn run(args: Args) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(args.parallelism)
        .set_auto_watermark_interval(Duration::from_millis(args.wm_interval));
    if args.batch {
        env.set_runtime_mode(RuntimeMode::Batch);
    }
    let mut line_no = 0u64;
    let events = env
        .read_text_file(&args.input)
        .set_parallelism(1)
        .process(
            move |line: String, _: &mut Context<'_>, out: &mut Collector<Event>| {
                line_no += 1;
                match parse_line(&line) {
                    Ok(Some(e)) => out.collect(e),
                    Ok(None) => {}
                    Err(why) => {
                        return Err(
                            format!("malformed input line {line_no}: {why}: {line:?}").into()
                        );
                    }
                }
                Ok(())
            },
        )
        .name("parse")
        .set_parallelism(1);
    let ooo = args.ooo;
    let strategy = if args.punctuated {
        WatermarkStrategy::for_generator(move || Punctuated {
            bound: ooo,
            max_ts: i64::MIN,
            last: i64::MIN,
        })
        .punctuated()
    } else {
        WatermarkStrategy::for_bounded_out_of_orderness_ms(ooo)
    }
    .with_timestamp_assigner(|e: &Event, _| e.1);
    let stamped = events
        .assign_timestamps_and_watermarks(strategy)
        .name("timestamps+watermarks")
        .set_parallelism(1);
    let keyed = stamped.key_by_ref(|e: &Event| &e.0);
    let late_tag: OutputTag<Event> = OutputTag::new("late");
    let need =
        |v: Option<i64>, flag: &str| v.ok_or(format!("--window {} needs --{flag}", args.window));
    let result = match args.window.as_str() {
        "tumbling" => {
            let assigner =
                TumblingWindows::new(need(args.size, "size")?, args.offset, WindowTime::Event)?;
            keyed
                .window(assigner)
                .allowed_lateness_ms(args.lateness)
                .side_output_late_data(&late_tag)
                .aggregate_with(SumCount, emit_row)
        }
        "sliding" => {
            let assigner = SlidingWindows::new(
                need(args.size, "size")?,
                need(args.slide, "slide")?,
                args.offset,
                WindowTime::Event,
            )?;
            keyed
                .window(assigner)
                .allowed_lateness_ms(args.lateness)
                .side_output_late_data(&late_tag)
                .aggregate_with(SumCount, emit_row)
        }
        "session" => {
            let assigner = SessionWindows::<Event>::event_time(need(args.gap, "gap")?)?;
            keyed
                .window(assigner)
                .allowed_lateness_ms(args.lateness)
                .side_output_late_data(&late_tag)
                .aggregate_with(SumCount, emit_row)
        }
        other => {
            return Err(format!("--window must be tumbling|sliding|session, got '{other}'").into());
        }
    }
    .name(&format!("window-{}", args.window));
    let rows = result.collect();
    let late = result.get_side_output(&late_tag).collect();
    env.execute_blocking("window_agg")?;
    let rows: Vec<String> = rows
        .take()
        .into_iter()
        .map(|(k, s, e, sum, count)| format!("{k},{s},{e},{sum},{count}"))
        .collect();
    let late: Vec<String> = late
        .take()
        .into_iter()
        .map(|(k, t, v)| format!("{k},{t},{v}"))
        .collect();
    write_sorted(&args.output, rows)?;
    write_sorted(&args.late_output, late)?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            eprintln!("window_agg: {e}");
            ExitCode::FAILURE
        }
    }
}
