//! Async I/O and the blocking operator in whole jobs: order, watermarks, capacity, timeouts,
//! errors and retries, and exactly-once through failures with requests in flight.
#![allow(clippy::unwrap_used)]

mod common;

use actorflow::async_io::{AsyncDataStream, AsyncFunction, AsyncRetryStrategy};
use actorflow::prelude::*;
use actorflow::watermark::{WatermarkGenerator, WatermarkOutput};
use actorflow_runtime::checkpoint::types::JobEvent;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A seeded pseudo-random delay of 0–3 ms per id, so completions come out of order.
fn delay_of(id: u64) -> Duration {
    Duration::from_micros(id.wrapping_mul(2_654_435_761) % 3_000)
}

async fn lookup(id: u64) -> Result<Vec<(u64, u64)>, UserError> {
    tokio::time::sleep(delay_of(id)).await;
    Ok(vec![(id, id * 2)])
}

/// What a downstream operator saw: records (by event time) and watermarks, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Record(i64),
    Watermark(i64),
}

/// Records what reaches it, forwarding nothing.
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl actorflow::Operator for Recorder {
    type In = (u64, u64);
    type Out = u64;
    fn process_batch(
        &mut self,
        batch: Batch<(u64, u64)>,
        _: &mut Collector<u64>,
    ) -> Result<(), UserError> {
        let mut seen = self.0.lock().unwrap();
        for (_, ts) in batch.into_iter_timestamped() {
            seen.push(Seen::Record(ts.map_or(-1, |t| t.0)));
        }
        Ok(())
    }
    fn process_watermark(
        &mut self,
        watermark: Watermark,
        _: &mut Collector<u64>,
    ) -> Result<(), UserError> {
        self.0.lock().unwrap().push(Seen::Watermark(watermark.0));
        Ok(())
    }
}

/// A watermark after every 25th record: the event time of that record.
struct Every25(u64);
impl WatermarkGenerator<u64> for Every25 {
    fn on_event(&mut self, _: &u64, ts: Timestamp, out: &mut WatermarkOutput) {
        self.0 += 1;
        if self.0.is_multiple_of(25) {
            out.emit_watermark(Watermark(ts.0));
        }
    }
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

fn watermark_run(ordered: bool) -> Vec<Seen> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ids = env.from_sequence(1, 1000).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_generator(|| Every25(0))
            .with_timestamp_assigner(|id: &u64, _| *id as i64)
            .punctuated(),
    );
    let out = if ordered {
        AsyncDataStream::ordered_wait(&ids, lookup, Duration::from_secs(10), 40)
    } else {
        AsyncDataStream::unordered_wait(&ids, lookup, Duration::from_secs(10), 40)
    };
    let s = seen.clone();
    out.transform("recorder", move |_| Recorder(s.clone()))
        .discard();
    env.execute_blocking("watermarks").unwrap();
    seen.lock().unwrap().clone()
}

/// Checks that every record before a watermark has an event time at most the watermark's and
/// every record after it a later one; returns the records' event times in output order.
fn check_no_crossing(seen: &[Seen]) -> Vec<i64> {
    let mut last_wm = i64::MIN;
    let mut records = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        match *s {
            Seen::Record(ts) => {
                assert!(ts > last_wm, "record {ts} came after watermark {last_wm}");
                records.push(ts);
            }
            Seen::Watermark(wm) => {
                let before = seen[..i]
                    .iter()
                    .filter(|s| matches!(s, Seen::Record(_)))
                    .count();
                // Watermark wm follows record wm: exactly wm records precede it.
                if wm < i64::MAX {
                    assert_eq!(before as i64, wm, "watermark {wm} after {before} records");
                }
                last_wm = wm;
            }
        }
    }
    records
}

#[test]
fn unordered_results_overtake_each_other_but_never_a_watermark() {
    let seen = watermark_run(false);
    let records = check_no_crossing(&seen);
    let mut sorted = records.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=1000).collect::<Vec<i64>>());
    assert_ne!(
        records, sorted,
        "unordered mode emitted everything in input order"
    );
    let wms = seen
        .iter()
        .filter(|s| matches!(s, Seen::Watermark(_)))
        .count();
    assert_eq!(wms, 40 + 1, "40 punctuated watermarks and the final one");
}

#[test]
fn ordered_results_keep_input_order() {
    let seen = watermark_run(true);
    let records = check_no_crossing(&seen);
    assert_eq!(records, (1..=1000).collect::<Vec<i64>>());
}

#[test]
fn ordered_results_keep_input_order_per_subtask_at_parallelism_2() {
    let out = actorflow::testing::example_with(2, |env| {
        let ids = env.from_sequence(1, 2000);
        let tagged = AsyncDataStream::ordered_wait(&ids, lookup, Duration::from_secs(10), 30);
        tagged.process(
            |(id, twice): (u64, u64),
             ctx: &mut Context<'_>,
             out: &mut Collector<(usize, u64, u64)>| {
                out.collect((ctx.task().subtask_index, id, twice));
                Ok(())
            },
        )
    });
    assert_eq!(out.len(), 2000);
    for sub in [0, 1] {
        let ids: Vec<u64> = out.iter().filter(|r| r.0 == sub).map(|r| r.1).collect();
        assert!(!ids.is_empty());
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "subtask {sub} out of order"
        );
    }
    assert!(out.iter().all(|r| r.2 == r.1 * 2));
}

#[test]
fn capacity_bounds_the_requests_in_flight_per_subtask() {
    let in_flight = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let (f, m) = (in_flight.clone(), most.clone());
    let out = actorflow::testing::example(move |env| {
        let ids = env.from_sequence(1, 400);
        let gauge = move |id: u64| {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let f = f.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                Ok(vec![id])
            }
        };
        AsyncDataStream::unordered_wait(&ids, gauge, Duration::from_secs(10), 16)
    });
    assert_eq!(out.len(), 400);
    assert_eq!(
        most.load(Ordering::SeqCst),
        16,
        "requests in flight at the peak"
    );
}

/// Never answers id 7.
#[derive(Clone)]
struct Hangs {
    handle_timeout: bool,
}

impl AsyncFunction<u64, (u64, String)> for Hangs {
    // `async fn` would borrow `self`; the future must be 'static.
    #[allow(clippy::manual_async_fn)]
    fn invoke(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Vec<(u64, String)>, UserError>> + Send + 'static {
        async move {
            if id == 7 {
                std::future::pending::<()>().await;
            }
            Ok(vec![(id, "found".to_string())])
        }
    }
    fn timeout(&self, id: u64) -> Result<Vec<(u64, String)>, UserError> {
        if self.handle_timeout {
            Ok(vec![(id, "timed out".to_string())])
        } else {
            Err(format!("no answer for {id}").into())
        }
    }
}

#[test]
fn a_timeout_fails_the_job_unless_the_handler_answers() {
    let run = |handle_timeout| {
        actorflow::testing::try_example(1, move |env| {
            let ids = env.from_sequence(1, 10);
            AsyncDataStream::ordered_wait(
                &ids,
                Hangs { handle_timeout },
                Duration::from_millis(50),
                5,
            )
        })
    };
    let out = run(true).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(out[6], (7, "timed out".to_string()));
    assert!(out.iter().filter(|r| r.0 != 7).all(|r| r.1 == "found"));
    let err = run(false).unwrap_err().to_string();
    assert!(
        err.contains("timed out after 50ms") && err.contains("no answer for 7"),
        "{err}"
    );
}

#[test]
fn errors_fail_the_job_once_retries_are_used_up() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let err = actorflow::testing::try_example(1, move |env| {
        let ids = env.from_collection(vec![1u64]);
        let failing = move |_: u64| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Err::<Vec<u64>, UserError>("connection refused".into()) }
        };
        let retry = AsyncRetryStrategy::fixed_delay(3, Duration::from_millis(1));
        AsyncDataStream::unordered_wait_with_retry(&ids, failing, Duration::from_secs(10), 4, retry)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("async request failed: connection refused"),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "three attempts in all");
}

const N: u64 = 20_000;

/// A rate-limited generator into an unordered async lookup with up to 50 requests in flight
/// per subtask, checkpointed every 30 ms, with the faults given; returns the sorted output and
/// the job events.
fn checkpointed_run(faults: &str) -> (Vec<(u64, u64)>, Vec<JobEvent>) {
    let (env, events) = common::checkpointed_env(2, Duration::from_millis(30), faults);
    let ids = env
        .from_generator(GeneratorSource::new(N, |i| i).with_rate_limit(40_000.0))
        .set_parallelism(1)
        .uid("ids");
    let out = AsyncDataStream::unordered_wait(&ids, lookup, Duration::from_secs(10), 50)
        .uid("lookup")
        .map(|r: (u64, u64)| r)
        .name("after-lookup")
        .collect();
    env.execute_blocking("async checkpointed").unwrap();
    let mut rows = out.take();
    rows.sort_unstable();
    let events = events.lock().unwrap().clone();
    (rows, events)
}

#[test]
fn requests_in_flight_at_a_checkpoint_are_issued_again_after_a_restore_exactly_once() {
    let (rows, events) =
        checkpointed_run("panic@after-lookup#0:records=4000,panic@after-lookup#1:records=7000");
    let restarts = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Restart { .. }))
        .count();
    // The second fault fires only if subtask 1 still has 7000 records to read after the
    // first restart, which depends on how far the restored checkpoint got.
    assert!(restarts >= 1, "{restarts} restarts");
    assert!(
        common::restarts_from_checkpoints(&events) >= 1,
        "no restart restored a checkpoint: {events:?}"
    );
    let expected: Vec<(u64, u64)> = (0..N).map(|i| (i, i * 2)).collect();
    assert_eq!(rows.len(), expected.len(), "lost or duplicated results");
    assert_eq!(rows, expected);
}

#[test]
fn map_blocking_runs_on_a_thread_of_its_own_and_keeps_watermarks_behind_its_records() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let threads = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let t = threads.clone();
    let ids = env
        .from_sequence(1, 1000)
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_generator(|| Every25(0))
                .with_timestamp_assigner(|id: &u64, _| *id as i64)
                .punctuated(),
        )
        .set_parallelism(1);
    let s = seen.clone();
    ids.map_blocking(move |id: u64| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        t.lock().unwrap().insert(name);
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_micros(50));
        Ok((id, id * 2))
    })
    .set_parallelism(1)
    .transform("recorder", move |_| Recorder(s.clone()))
    .set_parallelism(1)
    .discard();
    env.execute_blocking("blocking").unwrap();
    let records = check_no_crossing(&seen.lock().unwrap());
    assert_eq!(records, (1..=1000).collect::<Vec<i64>>());
    let threads = threads.lock().unwrap().clone();
    assert_eq!(
        threads.into_iter().collect::<Vec<_>>(),
        vec!["Blocking Map-0".to_string()]
    );
}

#[test]
fn a_panicking_blocking_function_fails_the_job_naming_it() {
    let err = actorflow::testing::try_example(1, |env| {
        env.from_sequence(1, 10).map_blocking(|x: u64| {
            if x == 5 {
                panic!("driver crashed on {x}");
            }
            Ok(x)
        })
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Blocking Map") && err.contains("driver crashed on 5"),
        "{err}"
    );
}
