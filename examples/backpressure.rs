//! Backpressure, visible: a fast source feeds a slow sink through a bounded lane.
//!
//! ```text
//! cargo run --release --example backpressure
//! cargo run --release --example backpressure -- --records 5000000 --sink-delay-ms 2
//! ```
//!
//! The source could produce millions of records per second; the sink sleeps for a while after
//! every batch. Every half second the example prints each subtask's rates from the job's live
//! metrics: the source spends almost all its time *backpressured* (waiting for room in the
//! lane), the sink almost all *busy*, the lane between them stays full, and the process's
//! memory stays flat — however many records go through, only the lane (16384 records by
//! default) and a few batches are ever in flight.

#[path = "support/web.rs"]
mod web;

use actorflow::prelude::*;
use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: backpressure [--records N] [--sink-delay-ms D] [--every-ms T]";

/// Sleeps after every batch: a slow external system.
struct SlowSink(Duration);

impl Sink for SlowSink {
    type Input = String;
    async fn write_batch(&mut self, batch: Batch<String>) -> Result<(), UserError> {
        std::hint::black_box(batch);
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}

/// Resident and peak resident memory of this process, in MiB (Linux).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backpressure: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    // `RUST_LOG=info` shows the job's plan and lifecycle; `RUST_LOG=actorflow=debug` more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let (mut records, mut delay_ms, mut every_ms) = (1_000_000u64, 1u64, 500u64);
    let mut args = web::from_args()?.into_iter();
    while let Some(flag) = args.next() {
        let value: Result<u64, String> = args
            .next()
            .ok_or(format!("{flag} needs a value\n{USAGE}"))
            .and_then(|v| v.parse().map_err(|e| format!("{flag}: {e}")));
        match flag.as_str() {
            "--records" => records = value?,
            "--sink-delay-ms" => delay_ms = value?,
            "--every-ms" => every_ms = value?.max(1),
            _ => return Err(format!("unknown argument '{flag}'\n{USAGE}").into()),
        }
    }
    let payload_mb = records as f64 * 100.0 / 1e6;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let env = StreamExecutionEnvironment::new();
        web::get().attach(&env);
        env.set_parallelism(1);
        env.from_generator(GeneratorSource::new(records, |i| format!("{i:0>100}")))
            .name("fast source")
            .map(|s: String| s)
            .name("passthrough")
            .add_sink("slow sink", move |_: &TaskInfo| {
                Ok(SlowSink(Duration::from_millis(delay_ms)))
            })
            // Its own subtask, so a lane sits between source and sink.
            .disable_chaining();
        let handle = env.execute_async("backpressure demo").await?;
        println!("{}", handle.plan().trim_end());
        println!(
            "{records} records of 100 bytes ({payload_mb:.0} MB) into a sink that sleeps {delay_ms} ms per batch\n"
        );
        println!(
            "{:>6}  {:>12} {:>15} {:>12}  {:>10} {:>14}  {:>9}",
            "t", "source rec/s", "backpressured", "sink rec/s", "sink busy", "lane", "RSS MiB"
        );
        let control = handle.control();
        let mut previous = control.metrics();
        let mut ticker = tokio::time::interval(Duration::from_millis(every_ms));
        ticker.tick().await;
        let job = tokio::spawn(handle.join());
        while !job.is_finished() {
            ticker.tick().await;
            let now = control.metrics();
            let rates = now.rates_since(&previous);
            let source = rates.iter().find(|r| r.vertex.contains("fast source"));
            let sink = rates.iter().find(|r| r.vertex.contains("slow sink"));
            let lane = now
                .vertex("slow sink")
                .next()
                .and_then(|s| s.input_lanes.first().copied());
            if let (Some(source), Some(sink), Some(lane)) = (source, sink, lane) {
                println!(
                    "{:>5.1}s  {:>12.0} {:>10.0} ms/s {:>12.0}  {:>5.0} ms/s {:>6}/{:<7}  {:>9.1}",
                    now.elapsed.as_secs_f64(),
                    source.records_out_per_sec,
                    source.backpressured_ms_per_sec,
                    sink.records_in_per_sec,
                    sink.busy_ms_per_sec,
                    lane.queued,
                    lane.capacity,
                    memory_mib().0
                );
            }
            previous = now;
        }
        let result = job.await??;
        let (_, peak) = memory_mib();
        println!("\nfinished in {:.1?}; peak RSS {peak:.1} MiB for {payload_mb:.0} MB of records", result.duration);
        for s in &result.metrics.subtasks {
            println!("  {s}");
        }
        web::get().keep_serving().await;
        Ok::<(), Box<dyn Error>>(())
    })
}
