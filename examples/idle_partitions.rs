//! The classic "my window never fires" bug, and its fix.
//!
//! ```text
//! cargo run --release --example idle_partitions
//! ```
//!
//! A source with four partitions reads sensor readings; partition 3 never gets any data (think
//! of a Kafka partition nobody writes to). Watermarks are generated per partition, and the
//! window operator's watermark is the *minimum* over its inputs — so the silent partition
//! holds it at its start value forever and no event-time window ever fires.
//!
//! `WatermarkStrategy::with_idleness(d)` marks a partition idle after `d` without records;
//! idle inputs are left out of the minimum and the windows fire. The example runs the job both
//! ways for a couple of seconds each and prints what fired and the window operator's watermark.

#[path = "support/web.rs"]
mod web;

use actorflow::SourceFn;
use actorflow::prelude::*;
use actorflow::window::TumblingWindows;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Reading = (String, i64, u64);

/// Partition `index` emits one reading every 10 ms (100 ms of event time apart), except
/// partition 3, which never emits. The stream does not end by itself.
struct Sensors {
    index: usize,
    sent: i64,
}

impl Source for Sensors {
    type Output = Reading;
    async fn next_batch(
        &mut self,
        out: &mut Collector<Reading>,
    ) -> Result<SourceStatus, UserError> {
        if self.index == 3 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        out.collect((format!("sensor-{}", self.index), self.sent * 100, 1));
        self.sent += 1;
        Ok(SourceStatus::More)
    }
}

async fn run(idleness: Option<Duration>, run_for: Duration) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
    env.set_parallelism(4);
    let mut strategy = WatermarkStrategy::<Reading>::for_bounded_out_of_orderness_ms(0)
        .with_timestamp_assigner(|r, _| r.1);
    if let Some(d) = idleness {
        strategy = strategy.with_idleness(d);
    }
    let counts = env
        .add_source(
            "sensors",
            // One instance per subtask, each a partition of its own (Flink's parallel source).
            SourceFn::new(|task: &TaskInfo| Sensors {
                index: task.subtask_index,
                sent: 0,
            })
            .parallel(),
        )
        .assign_timestamps_and_watermarks(strategy)
        .key_by(|r: &Reading| r.0.clone())
        .window(TumblingWindows::event_time(1_000)?)
        .reduce(|a, b| (a.0, a.1, a.2 + b.2))
        .name("1 s windows")
        .set_parallelism(1)
        .collect();
    let handle = env.execute_async("idle partitions").await?;
    let control = handle.control();
    let job = tokio::spawn(handle.join());
    tokio::time::sleep(run_for).await;
    let watermark = control
        .metrics()
        .vertex("1 s windows")
        .filter_map(|s| s.input_watermark)
        .max();
    control.cancel();
    let _ = job.await?;
    let mut fired = counts.take();
    fired.sort_by_key(|(sensor, ts, _)| (*ts / 1000, sensor.clone()));
    let wm = match watermark {
        Some(w) if w > i64::MIN => w.to_string(),
        _ => "none yet (stuck at the minimum)".to_string(),
    };
    println!("  windows fired: {}", fired.len());
    println!("  window operator's watermark: {wm}");
    for (sensor, ts, n) in fired.iter().take(6) {
        println!(
            "    {sensor} window ending {} ms: {n} readings",
            ts - ts % 1000 + 1000
        );
    }
    if fired.len() > 6 {
        println!("    ...");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), UserError> {
    let args = web::from_args()?;
    let secs: f64 = args
        .iter()
        .skip_while(|a| *a != "--seconds")
        .nth(1)
        .map_or(Ok(2.0), |s| s.parse())?;
    let run_for = Duration::from_secs_f64(secs);
    println!("without idleness (partition 3 is silent):");
    run(None, run_for).await?;
    println!("with_idleness(300 ms):");
    run(Some(Duration::from_millis(300)), run_for).await?;
    web::get().keep_serving().await;
    Ok(())
}
