//! "My window never fires": the empty-partition bug, on a real Kafka topic, and its fix.
//!
//! ```text
//! eval "$(scripts/kafka.sh start)"
//! cargo run --release --features kafka --example kafka_idle -- --brokers "$ACTORFLOW_KAFKA_BROKERS"
//! ```
//!
//! A topic with four partitions gets sensor readings on partitions 0, 1 and 2 (one every
//! 10 ms, 100 ms of event time apart); partition 3 is never written. The Kafka source runs
//! the watermark strategy **per partition** (as Flink's `KafkaSource` does) and emits the
//! minimum, so partition 3 holds event time at its start and the 1 s event-time windows
//! never fire. The second run adds `with_idleness(1 s)`: the silent partition is left
//! out of the minimum and the windows fire.
//!
//! Flags: `--brokers HOST:PORT` (default `$ACTORFLOW_KAFKA_BROKERS`), `--seconds S` per run
//! (default 3), and the web flags (`--web ADDR` …). It prints, per run, the windows that
//! fired and the window operator's watermark, and exits with 1 if the runs do not show the
//! bug and its fix.

#[path = "support/web.rs"]
mod web;

use actorflow::kafka::{KafkaRecord, KafkaSource};
use actorflow::prelude::*;
use actorflow::window::TumblingWindows;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `(sensor, event time ms, readings)`.
type Reading = (String, i64, u64);

/// Writes a reading to partitions 0, 1 and 2 every 10 ms until `stop`; partition 3 stays
/// empty. Runs on its own thread (librdkafka's producer calls block).
fn produce(brokers: String, topic: String, stop: Arc<AtomicBool>) -> Result<(), String> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .map_err(|e| e.to_string())?;
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        for part in 0..3 {
            let v = format!("sensor-{part},{}", n * 100);
            let rec = BaseRecord::<(), str>::to(&topic)
                .payload(&v)
                .partition(part);
            p.send(rec).map_err(|(e, _)| e.to_string())?;
        }
        n += 1;
        p.poll(Duration::from_millis(10));
    }
    p.flush(Duration::from_secs(10)).map_err(|e| e.to_string())
}

async fn run(
    brokers: &str,
    idleness: Option<Duration>,
    run_for: Duration,
) -> Result<usize, UserError> {
    let topic = format!(
        "kafka-idle-{}-{}",
        std::process::id(),
        idleness.is_some() as u8
    );
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    for r in admin
        .create_topics(
            &[NewTopic::new(&topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .map_err(|e| e.to_string())?
    {
        r.map_err(|(t, e)| format!("cannot create {t}: {e}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (b, t, s) = (brokers.to_string(), topic.clone(), stop.clone());
        std::thread::spawn(move || produce(b, t, s))
    };

    let mut strategy = WatermarkStrategy::<Reading>::for_bounded_out_of_orderness_ms(0)
        .with_timestamp_assigner(|r, _| r.1);
    if let Some(d) = idleness {
        strategy = strategy.with_idleness(d);
    }
    let source = KafkaSource::<Reading>::builder()
        .bootstrap_servers(brokers)
        .topics(&[&topic])
        .deserializer(|r: &KafkaRecord<'_>| {
            let line =
                std::str::from_utf8(r.value.unwrap_or_default()).map_err(|e| e.to_string())?;
            let (sensor, ts) = line.split_once(',').ok_or("expected sensor,ts")?;
            let ts = ts.parse().map_err(|_| "bad timestamp")?;
            Ok(Some((sensor.to_string(), ts, 1)))
        })
        .watermark_strategy(strategy)
        .build()
        .map_err(|e| e.to_string())?;

    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
    env.set_parallelism(2);
    let fired = env
        .add_source("kafka", source)
        .key_by(|r: &Reading| r.0.clone())
        .window(TumblingWindows::event_time(1_000)?)
        .reduce(|a, b| (a.0, a.1, a.2 + b.2))
        .name("1 s windows")
        .set_parallelism(1)
        .collect();
    let handle = env.execute_async("kafka idle partition").await?;
    let control = handle.control();
    let job = tokio::spawn(handle.join());
    tokio::time::sleep(run_for).await;
    let watermark = control
        .metrics()
        .vertex("1 s windows")
        .filter_map(|s| s.input_watermark)
        .max();
    control.cancel();
    let _ = job.await;
    stop.store(true, Ordering::Relaxed);
    producer
        .join()
        .map_err(|_| "the producer thread panicked")??;
    let mut fired = fired.take();
    fired.sort_by_key(|(sensor, ts, _)| (*ts / 1000, sensor.clone()));
    let wm = match watermark {
        Some(w) if w > i64::MIN => w.to_string(),
        _ => "none (held at the minimum by the empty partition)".to_string(),
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
    Ok(fired.len())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match main_inner().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("kafka_idle: the runs did not show the stall and its fix");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kafka_idle: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner() -> Result<bool, UserError> {
    let args = web::from_args()?;
    let flag = |name: &str| args.iter().skip_while(|a| *a != name).nth(1).cloned();
    let brokers = flag("--brokers")
        .or_else(|| std::env::var("ACTORFLOW_KAFKA_BROKERS").ok())
        .ok_or("--brokers HOST:PORT is required (or ACTORFLOW_KAFKA_BROKERS)")?;
    let secs: f64 = flag("--seconds").map_or(Ok(3.0), |s| s.parse())?;
    let run_for = Duration::from_secs_f64(secs);
    println!("without idleness (partition 3 is never written):");
    let stalled = run(&brokers, None, run_for).await?;
    println!("with_idleness(1 s):");
    let fixed = run(&brokers, Some(Duration::from_millis(1000)), run_for).await?;
    web::get().keep_serving().await;
    Ok(stalled == 0 && fixed > 0)
}
