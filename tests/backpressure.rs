//! Backpressure: with a sink that holds, the source emits no more than the lanes and batches
//! can hold. Runs on tokio's paused clock: `sleep` returns only once every task is blocked, so
//! the counts below are exact, not timing-dependent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actorflow::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Waits for one permit per batch: the test decides when the sink may go on.
struct GatedSink {
    gate: Arc<Semaphore>,
    seen: Arc<AtomicU64>,
}

impl Sink for GatedSink {
    type Input = u64;
    async fn write_batch(&mut self, batch: Batch<u64>) -> Result<(), UserError> {
        self.gate.acquire().await?.forget();
        self.seen.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// The test's hold on its sinks: the gate they wait on (no permits at first) and the count
/// of records they wrote.
struct Held {
    gate: Arc<Semaphore>,
    seen: Arc<AtomicU64>,
}

impl Held {
    /// A factory of sinks held by this gate.
    fn sink(&self) -> impl Fn(&TaskInfo) -> Result<GatedSink, String> + Send + Sync + 'static {
        let (gate, seen) = (self.gate.clone(), self.seen.clone());
        move |_: &TaskInfo| {
            Ok(GatedSink {
                gate: gate.clone(),
                seen: seen.clone(),
            })
        }
    }
}

/// An environment with small batches and lanes and no timed flushes, and held sinks.
fn gated(parallelism: u32, batch: u64, lane: u64) -> (StreamExecutionEnvironment, Held) {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        .set_batch_size(batch as usize)
        .set_lane_capacity(lane as usize)
        .set_buffer_timeout(Duration::from_secs(3600));
    let held = Held {
        gate: Arc::new(Semaphore::new(0)),
        seen: Arc::new(AtomicU64::new(0)),
    };
    (env, held)
}

#[tokio::test(start_paused = true)]
async fn holding_sink_throttles_the_source_to_the_lane_bound() {
    const BATCH: u64 = 100;
    const LANE: u64 = 400;
    const TOTAL: u64 = 100 * LANE;
    let (env, held) = gated(1, BATCH, LANE);
    let Held { gate, seen } = &held;
    env.from_sequence(0, TOTAL - 1)
        .map(|x| x)
        .name("source side")
        .add_sink("gated", held.sink())
        .disable_chaining();
    let handle = env.execute_async("backpressure").await.unwrap();

    // Everything is now blocked: the sink on its gate, the source on a full lane.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m = handle.metrics();
    let source = m.vertex("Source").next().unwrap();
    let sink = m.vertex("gated").next().unwrap();
    // The source filled the lane; the sink took one batch and holds it. A blocked sender
    // resumes only once half the lane is free (hysteresis), so the source is still waiting:
    // exactly one lane's worth of records left it.
    assert_eq!(sink.records_in, BATCH);
    assert_eq!(sink.input_lanes[0].queued as u64, LANE - BATCH);
    assert_eq!(source.records_out, LANE);
    assert!(source.backpressured > Duration::ZERO);
    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // Let three batches through: the sink writes three and holds a fourth; the source refills
    // the lane but never beyond it.
    gate.add_permits(3);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m = handle.metrics();
    let source = m.vertex("Source").next().unwrap();
    let sink = m.vertex("gated").next().unwrap();
    let queued = sink.input_lanes[0].queued as u64;
    assert_eq!(seen.load(Ordering::SeqCst), 3 * BATCH);
    assert_eq!(sink.records_in, 4 * BATCH);
    assert_eq!(source.records_out, sink.records_in + queued, "{m}");
    assert!(queued > LANE / 2 && queued <= LANE, "{m}");

    // Release the sink: the job finishes with every record delivered.
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    handle.join().await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), TOTAL);
}

#[tokio::test(start_paused = true)]
async fn backpressure_crosses_a_keyed_shuffle_to_parallel_sources() {
    // Two sources, a hash exchange, two held sinks: every lane fills, and each source stops
    // at what its lanes, its pending batches and its buffers hold.
    const BATCH: u64 = 50;
    const LANE: u64 = 200;
    let (env, held) = gated(2, BATCH, LANE);
    env.from_generator(GeneratorSource::new(u64::MAX, |i| i))
        .key_by(|x| x % 16)
        .as_stream()
        .map(|x: u64| x)
        .add_sink("gated", held.sink());
    let handle = env.execute_async("shuffle").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m = handle.metrics();
    let sent: u64 = m.vertex("Source").map(|s| s.records_out).sum();
    let received: u64 = m.vertex("gated").map(|s| s.records_in).sum();
    let queued: u64 = m
        .vertex("gated")
        .flat_map(|s| s.input_lanes.iter().map(|l| l.queued as u64))
        .sum();
    // Each sink holds one batch; everything else the sources sent sits in the four lanes, and
    // no lane exceeds its capacity. A source blocks on its first full lane, so another of its
    // lanes may be less than full.
    assert_eq!(received, 2 * BATCH, "{m}");
    assert_eq!(sent - received, queued, "{m}");
    assert!(
        m.vertex("gated")
            .all(|s| s.input_lanes.iter().all(|l| l.queued as u64 <= LANE))
    );
    assert!(queued >= 3 * LANE, "{m}");
    assert!(
        m.vertex("Source").all(|s| s.backpressured > Duration::ZERO),
        "{m}"
    );
    handle.cancel();
    assert!(matches!(handle.join().await, Err(JobError::Cancelled)));
}

#[tokio::test(start_paused = true)]
async fn a_watermark_firing_many_windows_waits_for_room_between_chunks() {
    const KEYS: u64 = 20_000;
    let (env, held) = gated(1, 100, 400);
    let Held { gate, seen } = &held;
    let fired = Arc::new(AtomicU64::new(0));
    let counter = fired.clone();
    env.from_sequence(0, KEYS - 1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|_, _| 1),
        )
        .key_by(|k: &u64| *k)
        .window(actorflow::window::TumblingWindows::event_time(10).unwrap())
        .process(
            move |k: &u64,
                  _: &mut WindowContext<'_, TimeWindow>,
                  _: Vec<u64>,
                  out: &mut Collector<u64>| {
                counter.fetch_add(1, Ordering::SeqCst);
                out.collect(*k);
                Ok(())
            },
        )
        .name("windows")
        .add_sink("gated", held.sink())
        .disable_chaining();
    let handle = env.execute_async("firing").await.unwrap();
    // The end of input fires every window at once; the sink holds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let so_far = fired.load(Ordering::SeqCst);
    assert!(
        so_far <= 2 * 1024 && actorflow::timer::TIMERS_PER_CHUNK == 1024,
        "{so_far} windows fired while nothing could be sent: firing does not wait for room"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    handle.join().await.unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), KEYS);
    assert_eq!(seen.load(Ordering::SeqCst), KEYS);
}

/// The metrics name both watermarks of a subtask: the vertex that generates watermarks has no
/// input watermark (a source) but shows the one it generated as its output watermark, and
/// the vertex downstream shows it as its input watermark — mid-run, with the sink held.
#[tokio::test(start_paused = true)]
async fn metrics_report_input_and_output_watermarks() {
    let (env, held) = gated(1, 10, 20);
    env.from_generator(GeneratorSource::new(1_000_000, |i| i))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .punctuated()
                .with_timestamp_assigner(|x: &u64, _| *x as i64 * 10),
        )
        .name("timestamps")
        .map(|x| x)
        .name("after")
        .disable_chaining()
        .add_sink("gated", held.sink());
    let handle = env.execute_async("watermarks").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m = handle.metrics();
    let source = m.vertex("timestamps").next().unwrap();
    let after = m.vertex("after").next().unwrap();
    // The source is blocked on its full lane, part way through its input.
    assert_eq!(source.input_watermark, None, "{m}");
    let generated = source
        .output_watermark
        .expect("the generated watermark is shown");
    assert!((0..9_999_990).contains(&generated), "{m}");
    let seen = after
        .input_watermark
        .expect("the downstream vertex has an input watermark");
    assert!(seen <= generated, "{m}");
    assert!(
        m.to_string()
            .contains(&format!("output_watermark={generated}")),
        "{m}"
    );
    handle.control().cancel();
    assert!(handle.join().await.is_err(), "cancelled");
}
