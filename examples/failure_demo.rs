//! Failure and recovery, narrated as it happens: a windowed job checkpoints into sled, a
//! failure is injected into one window subtask, the supervisor restarts the job from the
//! latest checkpoint, and the final output is compared with a run without failures.
//!
//! ```text
//! cargo run --release --example failure_demo
//! cargo run --release --example failure_demo -- --unaligned --fault abort@window#0:records=9000
//! ```
//!
//! Flags: `--fault SPEC` (default `panic@window#1:records=15000`; see
//! `actorflow::fault`), `--unaligned`, `--parallelism N` (default 2), `--dir DIR` (the sled
//! store; default a fresh directory under the system temp dir).

#[path = "support/web.rs"]
mod web;

use actorflow::checkpoint::JobEvent;
use actorflow::fault::FaultPlan;
use actorflow::prelude::*;
use actorflow::restart::RestartStrategy;
use actorflow::snapshot::SledStore;
use actorflow::window::{TumblingWindows, WindowTime};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Event = (u64, i64, u64);
type Row = (u64, i64, u64, u64);

const RECORDS: u64 = 60_000;

#[derive(Clone)]
struct Sum;

impl AggregateFunction<Event> for Sum {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&mut self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&mut self, e: Event, acc: &mut (u64, u64)) {
        acc.0 += e.2;
        acc.1 += 1;
    }
    fn get_result(&mut self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&mut self, a: &mut (u64, u64), b: (u64, u64)) {
        a.0 += b.0;
        a.1 += b.1;
    }
}

/// 60 000 events over 17 keys at 40 000 events/s, summed per key and 100 ms window.
fn pipeline(env: &StreamExecutionEnvironment) -> Result<Collected<Row>, UserError> {
    Ok(env
        .from_generator(
            GeneratorSource::new(RECORDS, |i| (i % 17, i as i64, i)).with_rate_limit(40_000.0),
        )
        .set_parallelism(1)
        .uid("generator")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Event, _| e.1 / 20),
        )
        .uid("timestamps")
        .set_parallelism(1)
        .key_by(|e: &Event| e.0)
        .window(TumblingWindows::new(100, 0, WindowTime::Event)?)
        .aggregate_with(
            Sum,
            |k: &u64, ctx: &mut WindowContext<'_, TimeWindow>, (s, c), out: &mut Collector<Row>| {
                out.collect((*k, ctx.window().start, s, c));
                Ok(())
            },
        )
        .uid("window")
        .name("window")
        .collect())
}

struct Args {
    fault: String,
    unaligned: bool,
    parallelism: u32,
    dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        fault: "panic@window#1:records=15000".into(),
        unaligned: false,
        parallelism: 2,
        dir: std::env::temp_dir().join(format!("actorflow-failure-demo-{}", std::process::id())),
    };
    let mut it = web::from_args()?.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--unaligned" => args.unaligned = true,
            "--fault" => args.fault = it.next().ok_or("--fault needs a SPEC")?,
            "--dir" => args.dir = it.next().ok_or("--dir needs a path")?.into(),
            "--parallelism" => {
                args.parallelism = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|p| *p > 0)
                    .ok_or("--parallelism needs a positive number")?;
            }
            other => {
                return Err(format!(
                    "unknown flag {other}; usage: failure_demo [--fault SPEC] [--unaligned] \
                     [--parallelism N] [--dir DIR]"
                ));
            }
        }
    }
    Ok(args)
}

fn narrate(start: Instant) -> actorflow::checkpoint::JobListener {
    Arc::new(move |event: &JobEvent| {
        let at = start.elapsed().as_secs_f64();
        match event {
            JobEvent::CheckpointCompleted {
                id,
                unaligned,
                duration_ms,
                bytes,
                is_final,
                ..
            } => println!(
                "[{at:6.2} s] {} {id} completed: {}, {duration_ms} ms, {:.1} KB",
                if *is_final {
                    "final checkpoint"
                } else {
                    "checkpoint"
                },
                if *unaligned { "unaligned" } else { "aligned" },
                *bytes as f64 / 1000.0
            ),
            JobEvent::CheckpointAborted { id, reason } => {
                println!("[{at:6.2} s] checkpoint {id} aborted: {reason}")
            }
            JobEvent::Restart {
                attempt,
                cause,
                from_checkpoint,
                delay_ms,
                generation,
            } => {
                println!("[{at:6.2} s] FAILURE: {cause}");
                println!(
                    "[{at:6.2} s] the supervisor cancels the failed pipelined region (this job \
                     is one connected region: every subtask) and restarts it (attempt \
                     {attempt}) in {delay_ms} ms as generation {generation}, from {}",
                    match from_checkpoint {
                        Some(id) => format!("checkpoint {id}"),
                        None => "the beginning (no checkpoint yet)".into(),
                    }
                );
            }
            JobEvent::Restored {
                checkpoint,
                generation,
            } => match checkpoint {
                Some(id) => println!(
                    "[{at:6.2} s] generation {generation} running from checkpoint {id}: the \
                     generator resumes at its recorded position, each window subtask gets its \
                     key groups' windows and timers back, uncommitted output is dropped"
                ),
                None => println!("[{at:6.2} s] generation {generation} running from scratch"),
            },
        }
    })
}

fn run(args: Args) -> Result<bool, UserError> {
    println!("reference run, without failures ...");
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(args.parallelism);
    let reference = pipeline(&env)?;
    env.execute_blocking("reference")?;
    let mut reference = reference.take();
    reference.sort_unstable();
    println!("  {} window results\n", reference.len());

    let _ = std::fs::remove_dir_all(&args.dir);
    let store = Arc::new(SledStore::open(&args.dir).map_err(|e| e.to_string())?);
    println!(
        "the same job with a checkpoint every 200 ms ({}) into {}, and the fault {}:",
        if args.unaligned {
            "unaligned"
        } else {
            "aligned"
        },
        args.dir.display(),
        args.fault
    );
    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
    let start = Instant::now();
    env.set_parallelism(args.parallelism)
        .enable_checkpointing(Duration::from_millis(200))
        .checkpointing(|c| c.settings.unaligned = args.unaligned)
        .set_checkpoint_storage(store)
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(100),
        })
        .set_job_listener(narrate(start))
        .set_fault_plan(FaultPlan::parse(&args.fault)?);
    let rows = pipeline(&env)?;
    env.execute_blocking("failure demo")?;
    let mut rows = rows.take();
    rows.sort_unstable();
    let same = rows == reference;
    println!(
        "\nfinished in {:.2} s: {} window results, {}",
        start.elapsed().as_secs_f64(),
        rows.len(),
        if same {
            "identical to the run without failures: every record counted exactly once"
        } else {
            "DIFFERENT from the run without failures"
        }
    );
    web::get().keep_serving_blocking();
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(same)
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
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("failure_demo: {e}");
            ExitCode::FAILURE
        }
    }
}
