//! End-to-end checkpointing: injected failures, restarts from the latest checkpoint, exactly
//! once and at least once, unaligned checkpoints, restore at another parallelism, a
//! corrupted checkpoint skipped. Each run is compared with the same job without faults.
#![allow(clippy::unwrap_used)]

use actorflow::prelude::*;
use actorflow::window::{TumblingWindows, WindowTime};
use actorflow_runtime::checkpoint::coordinator::CheckpointingMode;
use actorflow_runtime::checkpoint::fault::FaultPlan;
use actorflow_runtime::checkpoint::restart::RestartStrategy;
use actorflow_runtime::checkpoint::snapshot::{MemoryStore, SnapshotStore, StoreError};
use actorflow_runtime::checkpoint::types::{JobEvent, RestoreFrom};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Row = (u64, i64, u64, u64);

const N: u64 = 60_000;

/// Sums per key and 100 ms tumbling window over a rate-limited generator (so checkpoints
/// happen while it runs); windows at `parallelism`.
fn job(env: &StreamExecutionEnvironment, parallelism: u32) -> actorflow::Collected<Row> {
    job_with(env, parallelism, 200_000.0, Duration::ZERO)
}

/// [`job`] with the generator's rate and a busy delay per record in the window operator.
fn job_with(
    env: &StreamExecutionEnvironment,
    parallelism: u32,
    rate: f64,
    delay: Duration,
) -> actorflow::Collected<Row> {
    env.set_parallelism(parallelism).set_max_parallelism(128);
    let events = env
        .from_generator(GeneratorSource::new(N, |i| (i % 17, i as i64, i)).with_rate_limit(rate))
        .set_parallelism(1)
        .uid("generator")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &(u64, i64, u64), _| e.1 / 20),
        )
        .uid("timestamps")
        .set_parallelism(1);
    events
        .key_by(|e: &(u64, i64, u64)| e.0)
        .window(TumblingWindows::new(100, 0, WindowTime::Event).unwrap())
        .aggregate_with(
            Sum(delay),
            |k: &u64,
             ctx: &mut WindowContext<'_, TimeWindow>,
             (s, c): (u64, u64),
             out: &mut Collector<Row>| {
                out.collect((*k, ctx.window().start, s, c));
                Ok(())
            },
        )
        .uid("window")
        .name("window")
        .collect()
}

/// Sum and count, spending the given time per record.
#[derive(Clone)]
struct Sum(Duration);
impl AggregateFunction<(u64, i64, u64)> for Sum {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&mut self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&mut self, e: (u64, i64, u64), acc: &mut (u64, u64)) {
        if !self.0.is_zero() {
            let until = std::time::Instant::now() + self.0;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
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

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_unstable();
    rows
}

fn reference() -> Vec<Row> {
    let env = StreamExecutionEnvironment::new();
    let out = job(&env, 1);
    env.execute_blocking("reference").unwrap();
    let rows = sorted(out.take());
    assert!(rows.len() > 100, "the reference has {} rows", rows.len());
    rows
}

struct Run {
    rows: Vec<Row>,
    events: Vec<JobEvent>,
}

fn run(parallelism: u32, faults: &str, configure: impl FnOnce(&StreamExecutionEnvironment)) -> Run {
    let env = StreamExecutionEnvironment::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    env.enable_checkpointing(Duration::from_millis(40))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        })
        .set_job_listener(Arc::new(move |e| sink.lock().unwrap().push(e.clone())));
    if !faults.is_empty() {
        env.set_fault_plan(FaultPlan::parse(faults).unwrap());
    }
    configure(&env);
    let out = job(&env, parallelism);
    env.execute_blocking("checkpointed").unwrap();
    let events = events.lock().unwrap().clone();
    Run {
        rows: sorted(out.take()),
        events,
    }
}

fn restarts(r: &Run) -> usize {
    r.events
        .iter()
        .filter(|e| matches!(e, JobEvent::Restart { .. }))
        .count()
}

fn completed(r: &Run) -> usize {
    r.events
        .iter()
        .filter(|e| {
            matches!(
                e,
                JobEvent::CheckpointCompleted {
                    is_final: false,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn exactly_once_after_panics_at_parallelism_1_and_2() {
    let expected = reference();
    for p in [1, 2] {
        let r = run(
            p,
            "panic@window:records=6000,panic@window:records=9000",
            |_| {},
        );
        assert_eq!(restarts(&r), 2, "p={p}: {:?}", r.events);
        assert!(completed(&r) >= 1, "p={p}: no checkpoint completed");
        assert_eq!(r.rows, expected, "p={p}");
    }
}

#[test]
fn exactly_once_with_unaligned_checkpoints() {
    let expected = reference();
    let r = run(2, "panic@window#1:records=25000", |env| {
        env.checkpointing(|c| c.settings.unaligned = true);
    });
    assert_eq!(restarts(&r), 1);
    assert!(r.events.iter().any(|e| matches!(
        e,
        JobEvent::CheckpointCompleted {
            unaligned: true,
            ..
        }
    )));
    assert_eq!(r.rows, expected);
}

#[test]
fn at_least_once_loses_nothing() {
    let expected = reference();
    let r = run(2, "panic@window#0:records=10000", |env| {
        env.checkpointing(|c| c.settings.mode = CheckpointingMode::AtLeastOnce);
    });
    assert_eq!(restarts(&r), 1);
    // Every expected row is there (with exactly-once sinks even the duplicates are gone).
    for row in &expected {
        assert!(r.rows.contains(row), "missing {row:?}");
    }
}

#[test]
fn restore_at_another_parallelism() {
    let expected = reference();
    for (from, to) in [(2u32, 3u32), (4, 2), (1, 1)] {
        let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::new());
        // First run: fail for good after some checkpoints (no restarts allowed).
        let env = StreamExecutionEnvironment::new();
        env.enable_checkpointing(Duration::from_millis(40))
            .set_checkpoint_storage(store.clone())
            .set_restart_strategy(RestartStrategy::None)
            .set_fault_plan(FaultPlan::parse("panic@window#0:records=12000").unwrap());
        let first = job(&env, from);
        assert!(env.execute_blocking("first").is_err());
        assert!(
            !store.list().unwrap().is_empty(),
            "{from}->{to}: no checkpoint"
        );
        let mut rows = first.take();
        // Second run at another parallelism from the latest checkpoint.
        let env = StreamExecutionEnvironment::new();
        env.enable_checkpointing(Duration::from_millis(40))
            .set_checkpoint_storage(store.clone())
            .restore_from(RestoreFrom::Latest);
        let second = job(&env, to);
        env.execute_blocking("second").unwrap();
        rows.extend(second.take());
        // The restored checkpoint's pending transaction is committed again on restore
        // (commits are idempotent). If the first run had already committed it, the repeat
        // lands in the second run's separate `Collected`, whose committed-set cannot know
        // it: the same rows appear in both handles. Every expected row is unique, so
        // dropping exact repeats loses nothing else.
        let mut rows = sorted(rows);
        rows.dedup();
        assert_eq!(rows, expected, "{from}->{to}");
    }
}

#[test]
fn corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let store = Arc::new(MemoryStore::new());
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .checkpointing(|c| c.settings.retained = 3)
        .set_restart_strategy(RestartStrategy::None)
        .set_fault_plan(FaultPlan::parse("panic@window#0:records=40000").unwrap());
    let _ = job(&env, 1);
    assert!(env.execute_blocking("first").is_err());
    let ids = store.list().unwrap();
    assert!(ids.len() >= 2, "{ids:?}");
    let newest = ids[0];
    let blob = store
        .load(newest)
        .unwrap()
        .blobs
        .keys()
        .next()
        .unwrap()
        .clone();
    store.corrupt_blob(newest, &blob);
    let latest = actorflow_runtime::checkpoint::snapshot::latest_valid(store.as_ref())
        .unwrap()
        .unwrap();
    assert_eq!(latest.manifest.id, ids[1]);
    // Restoring "the latest" refuses instead: the damaged one had completed, and its output
    // may have been committed.
    let damaged = actorflow_runtime::checkpoint::snapshot::newest_completed(store.as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        damaged.contains(&format!("newest completed checkpoint {newest} is unusable"))
            && damaged.contains(&format!("older checkpoint that verifies is {}", ids[1])),
        "{damaged}"
    );
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(RestoreFrom::Latest);
    let _ = job(&env, 1);
    let refused = env.execute_blocking("second").unwrap_err().to_string();
    assert!(refused.contains("cannot restore"), "{refused}");
}

/// An aligned checkpoint whose barriers wait behind the data queued for a slow window operator
/// turns unaligned after the alignment timeout (the barrier is announced on the priority
/// lane); with a failure on top, the output is still exact.
#[test]
fn alignment_timeout_turns_checkpoints_unaligned_and_stays_exact() {
    let expected = reference();
    let env = StreamExecutionEnvironment::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    env.enable_checkpointing(Duration::from_millis(40))
        .checkpointing(|c| c.settings.aligned_timeout = Some(Duration::from_millis(2)))
        .set_lane_capacity(4096)
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_job_listener(Arc::new(move |e| sink.lock().unwrap().push(e.clone())))
        .set_fault_plan(FaultPlan::parse("panic@window#1:records=20000").unwrap());
    // 2 × 10 µs per record is slower than the 1 M records/s generator: the lanes fill up.
    let out = job_with(&env, 2, 1_000_000.0, Duration::from_micros(10));
    env.execute_blocking("alignment timeout").unwrap();
    let run = Run {
        rows: sorted(out.take()),
        events: events.lock().unwrap().clone(),
    };
    assert_eq!(run.rows, expected);
    assert_eq!(restarts(&run), 1);
    let unaligned = run
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                JobEvent::CheckpointCompleted {
                    unaligned: true,
                    ..
                }
            )
        })
        .count();
    assert!(
        unaligned > 0,
        "no checkpoint turned unaligned: {:?}",
        run.events
    );
}

/// A savepoint on a running job, then stop-with-savepoint, then a restore from that savepoint
/// at another parallelism: together the two runs produce exactly the reference.
#[test]
fn savepoint_stop_with_savepoint_and_rescaled_restore() {
    use actorflow_runtime::CheckpointKind;
    let expected = reference();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(store.clone())
        .set_job_listener(Arc::new(move |e| {
            if matches!(e, JobEvent::CheckpointCompleted { .. }) {
                tx.send_modify(|n| *n += 1);
            }
        }));
    // 60 000 records at 30 000/s: 2 s, long enough to stop it in the middle.
    let first = job_with(&env, 2, 30_000.0, Duration::ZERO);
    let (savepoint, stopped) = rt.block_on(async {
        let handle = env.execute_async("savepoints").await.unwrap();
        rx.wait_for(|n| *n >= 2).await.unwrap();
        let savepoint = handle.control().trigger_savepoint().await.unwrap();
        // Past a few periodic watermarks (200 ms), so some windows fired and committed.
        rx.wait_for(|n| *n >= 15).await.unwrap();
        let stopped = handle.control().stop_with_savepoint().await.unwrap();
        handle.join().await.unwrap();
        (savepoint, stopped)
    });
    assert!(stopped > savepoint);
    for id in [savepoint, stopped] {
        assert_eq!(
            store.load(id).unwrap().manifest.kind,
            CheckpointKind::Savepoint
        );
    }
    let mut rows = first.take();
    assert!(
        !rows.is_empty() && rows.len() < expected.len(),
        "stopped in the middle: {} of {} rows",
        rows.len(),
        expected.len()
    );
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(store.clone())
        .restore_from(RestoreFrom::Checkpoint(stopped));
    let second = job(&env, 3);
    env.execute_blocking("from the savepoint").unwrap();
    rows.extend(second.take());
    // As in the rescale test: the savepoint's pending transaction may be committed twice,
    // once in each run's separate collect handle.
    let mut rows = sorted(rows);
    rows.dedup();
    assert_eq!(rows, expected);
}

// ----- keyed process state, timers and rolling reduce ---------------------------------

use actorflow::keyed_state::{ListState, MapState, ValueState};
use actorflow::operators::OpenContext;

type Report = (u64, i64, u64, u64, u64);

/// Per key: the tally of each 100 ms slice (map state), the slices seen (list state, one
/// entry per record), the number of reports so far (value state), and an event-time timer at
/// each slice's end that reports them. Every report depends only on the records up to its
/// time, never on when watermarks happen to arrive, so runs are comparable.
#[derive(Clone, Default)]
struct SliceReport {
    reports: Option<ValueState<u64>>,
    seen: Option<ListState<i64>>,
    tally: Option<MapState<i64, u64>>,
}

impl KeyedProcessFunction<u64, (u64, i64, u64), Report> for SliceReport {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.tally = Some(ctx.state.map_state("tally", None)?);
        self.reports = Some(ctx.state.value_state("reports", None)?);
        self.seen = Some(ctx.state.list_state("seen", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        e: (u64, i64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<Report>,
    ) -> Result<(), UserError> {
        let ts = e.1 / 20;
        let end = (ts.div_euclid(100) + 1) * 100 - 1;
        let (seen, tally) = (
            self.seen.as_ref().ok_or("not open")?,
            self.tally.as_ref().ok_or("not open")?,
        );
        seen.add(ctx.state(), end)?;
        let t = tally.get(ctx.state(), &end)?.unwrap_or(0);
        tally.put(ctx.state(), end, t + e.2)?;
        ctx.register_event_time_timer(Timestamp(end));
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<Report>,
    ) -> Result<(), UserError> {
        let (reports, seen, tally) = (
            self.reports.as_ref().ok_or("not open")?,
            self.seen.as_ref().ok_or("not open")?,
            self.tally.as_ref().ok_or("not open")?,
        );
        let r = reports.value(ctx.state())?.unwrap_or(0) + 1;
        reports.update(ctx.state(), r)?;
        let all = seen.get(ctx.state())?;
        let (due, rest): (Vec<i64>, Vec<i64>) = all.into_iter().partition(|t| *t <= time.0);
        seen.update(ctx.state(), rest)?;
        let t = tally.get(ctx.state(), &time.0)?.unwrap_or(0);
        tally.remove(ctx.state(), &time.0)?;
        out.collect((*ctx.current_key(), time.0, r, due.len() as u64, t));
        Ok(())
    }
}

/// The keyed process function, then a rolling sum of its reports' tallies per key.
fn stateful_job(
    env: &StreamExecutionEnvironment,
    parallelism: u32,
) -> (actorflow::Collected<Report>, actorflow::Collected<Report>) {
    env.set_parallelism(parallelism).set_max_parallelism(128);
    let reports = env
        .from_generator(
            GeneratorSource::new(N, |i| (i % 13, i as i64, i)).with_rate_limit(200_000.0),
        )
        .set_parallelism(1)
        .uid("generator")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &(u64, i64, u64), _| e.1 / 20),
        )
        .uid("timestamps")
        .set_parallelism(1)
        .key_by(|e: &(u64, i64, u64)| e.0)
        .process(SliceReport::default())
        .uid("slices")
        .name("slices");
    let rolling = reports
        .key_by(|r: &Report| r.0)
        .reduce(|a: Report, b: Report| (a.0, b.1, a.2 + b.2, a.3 + b.3, a.4 + b.4))
        .uid("rolling")
        .name("rolling");
    (reports.collect(), rolling.collect())
}

#[test]
fn keyed_process_state_timers_and_rolling_reduce_survive_restarts() {
    let run_it = |faults: &str, parallelism: u32| {
        let env = StreamExecutionEnvironment::new();
        if !faults.is_empty() {
            env.enable_checkpointing(Duration::from_millis(40))
                .set_restart_strategy(RestartStrategy::FixedDelay {
                    attempts: 5,
                    delay: Duration::from_millis(10),
                })
                .set_fault_plan(FaultPlan::parse(faults).unwrap());
        }
        let (reports, rolling) = stateful_job(&env, parallelism);
        env.execute_blocking("stateful").unwrap();
        let (mut a, mut b) = (reports.take(), rolling.take());
        a.sort_unstable();
        b.sort_unstable();
        (a, b)
    };
    let reference = run_it("", 1);
    assert!(reference.0.len() > 300, "{} reports", reference.0.len());
    for (faults, parallelism) in [
        ("panic@slices#0:records=20000,panic@rolling:records=300", 2),
        ("panic@slices:records=35000", 1),
    ] {
        let got = run_it(faults, parallelism);
        assert_eq!(
            got.0, reference.0,
            "reports with {faults} at p={parallelism}"
        );
        assert_eq!(
            got.1, reference.1,
            "rolling sums with {faults} at p={parallelism}"
        );
    }
}

/// Incremental checkpoints (chains of base and delta chunks per key group) keep keyed
/// process state (value, list and map state), timers and a rolling reduce exact through
/// failures, and through a restore at another parallelism; later checkpoints list chunks of
/// earlier ones instead of writing them again.
#[test]
fn incremental_checkpoints_stay_exact_through_failures_and_rescaling() {
    let incremental = |env: &StreamExecutionEnvironment| {
        env.checkpointing(|c| c.settings.incremental = true);
    };
    let sorted_pair = |(mut a, mut b): (Vec<Report>, Vec<Report>)| {
        a.sort_unstable();
        b.sort_unstable();
        (a, b)
    };
    let reference = {
        let env = StreamExecutionEnvironment::new();
        let (reports, rolling) = stateful_job(&env, 1);
        env.execute_blocking("reference").unwrap();
        sorted_pair((reports.take(), rolling.take()))
    };
    // Failures, restarts from incremental checkpoints.
    let shared = Arc::new(Mutex::new(0u64));
    let env = StreamExecutionEnvironment::new();
    let sink = shared.clone();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(
            FaultPlan::parse("panic@slices#0:records=20000,panic@rolling:records=300").unwrap(),
        )
        .set_job_listener(Arc::new(move |e| {
            if let JobEvent::CheckpointCompleted { shared_bytes, .. } = e {
                *sink.lock().unwrap() += shared_bytes;
            }
        }));
    incremental(&env);
    let (reports, rolling) = stateful_job(&env, 2);
    env.execute_blocking("incremental with failures").unwrap();
    assert_eq!(
        sorted_pair((reports.take(), rolling.take())),
        reference,
        "incremental checkpoints with failures"
    );
    assert!(
        *shared.lock().unwrap() > 0,
        "no checkpoint listed chunks of an earlier one: not incremental"
    );
    // Fail for good at parallelism 2, restore the latest incremental checkpoint at 3.
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::new());
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .set_restart_strategy(RestartStrategy::None)
        .set_fault_plan(FaultPlan::parse("panic@slices#1:records=25000").unwrap());
    env.checkpointing(|c| c.settings.retained = 4);
    incremental(&env);
    let (r1, s1) = stateful_job(&env, 2);
    assert!(env.execute_blocking("first").is_err());
    // The newest retained checkpoint made of deltas on earlier chunks (with tiny key groups,
    // every other checkpoint rebases them).
    let from = store
        .list()
        .unwrap()
        .into_iter()
        .find(|&id| {
            let manifest = store.load(id).unwrap().manifest;
            manifest.blobs.iter().any(|b| b.owner != id)
        })
        .expect("no retained checkpoint lists chunks of an earlier one");
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(RestoreFrom::Checkpoint(from));
    incremental(&env);
    let (r2, s2) = stateful_job(&env, 3);
    env.execute_blocking("second").unwrap();
    let (mut reports, mut rolling) = (r1.take(), s1.take());
    reports.extend(r2.take());
    rolling.extend(s2.take());
    // As in `restore_at_another_parallelism`: output committed after the restored checkpoint
    // (by the first run, or again on restore) shows up in both runs' handles; every expected
    // row is unique.
    let (mut reports, mut rolling) = sorted_pair((reports, rolling));
    reports.dedup();
    rolling.dedup();
    assert_eq!(
        (reports, rolling),
        reference,
        "incremental, restored 2 -> 3"
    );
}

/// A keyed event-time window job whose state is mostly idle: 5 000 keys loaded first, then
/// only 7 hot keys change; one long window per key fires at the end of input.
fn sparse_window_job(
    env: &StreamExecutionEnvironment,
    parallelism: u32,
) -> actorflow::Collected<(u64, u64, u64)> {
    env.set_parallelism(parallelism).set_max_parallelism(128);
    env.from_generator(
        GeneratorSource::new(N, |i| {
            let key = if i < 10_000 { i % 5_000 } else { i % 7 };
            (key, i)
        })
        .with_rate_limit(200_000.0),
    )
    .set_parallelism(1)
    .uid("generator")
    .assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|e: &(u64, u64), _| e.1 as i64),
    )
    .uid("timestamps")
    .set_parallelism(1)
    .key_by(|e: &(u64, u64)| e.0)
    .window(TumblingWindows::new(1_000_000_000, 0, WindowTime::Event).unwrap())
    .aggregate_with(
        SumCount,
        |k: &u64,
         _: &mut WindowContext<'_, TimeWindow>,
         (s, c): (u64, u64),
         out: &mut Collector<(u64, u64, u64)>| {
            out.collect((*k, s, c));
            Ok(())
        },
    )
    .uid("window")
    .name("window")
    .collect()
}

#[derive(Clone)]
struct SumCount;
impl AggregateFunction<(u64, u64)> for SumCount {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&mut self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&mut self, e: (u64, u64), acc: &mut (u64, u64)) {
        acc.0 += e.1;
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

/// Window contents in incremental checkpoints: exact through failures and through a restore
/// at another parallelism, and later checkpoints list the chunks of idle key groups instead
/// of writing them again.
#[test]
fn incremental_window_checkpoints_stay_exact_through_failures_and_rescaling() {
    let reference = {
        let env = StreamExecutionEnvironment::new();
        let out = sparse_window_job(&env, 1);
        env.execute_blocking("reference").unwrap();
        let mut rows = out.take();
        rows.sort_unstable();
        rows
    };
    assert_eq!(reference.len(), 5_000);
    // Failures, restarts from incremental checkpoints.
    let shared = Arc::new(Mutex::new(0u64));
    let sink = shared.clone();
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(FaultPlan::parse("panic@window#0:records=20000").unwrap())
        .set_job_listener(Arc::new(move |e| {
            if let JobEvent::CheckpointCompleted { shared_bytes, .. } = e {
                *sink.lock().unwrap() += shared_bytes;
            }
        }));
    env.checkpointing(|c| c.settings.incremental = true);
    let out = sparse_window_job(&env, 2);
    let result = env
        .execute_blocking("incremental windows with a failure")
        .unwrap();
    assert_eq!(result.metrics.restarts, 1);
    let mut rows = out.take();
    rows.sort_unstable();
    assert_eq!(
        rows, reference,
        "incremental window checkpoints with a failure"
    );
    assert!(
        *shared.lock().unwrap() > 0,
        "no checkpoint listed chunks of an earlier one: windows not incremental"
    );
    // Fail for good at parallelism 2, restore an incremental checkpoint at 3.
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::new());
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .set_restart_strategy(RestartStrategy::None)
        .set_fault_plan(FaultPlan::parse("panic@window#1:records=25000").unwrap());
    env.checkpointing(|c| {
        c.settings.retained = 4;
        c.settings.incremental = true;
    });
    let first = sparse_window_job(&env, 2);
    assert!(env.execute_blocking("first").is_err());
    assert!(first.take().is_empty(), "the windows fire only at the end");
    let from = store
        .list()
        .unwrap()
        .into_iter()
        .find(|&id| {
            let manifest = store.load(id).unwrap().manifest;
            manifest.blobs.iter().any(|b| b.owner != id)
        })
        .expect("no retained checkpoint lists chunks of an earlier one");
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(RestoreFrom::Checkpoint(from));
    env.checkpointing(|c| c.settings.incremental = true);
    let second = sparse_window_job(&env, 3);
    env.execute_blocking("second").unwrap();
    let mut rows = second.take();
    rows.sort_unstable();
    assert_eq!(rows, reference, "incremental windows, restored 2 -> 3");
}

/// `from_iter` replays a fresh clone of its iterable after a restore, skipping what the
/// checkpoint says it emitted: exactly once, not from the start.
#[test]
fn iterator_sources_resume_where_the_checkpoint_left_them() {
    let env = StreamExecutionEnvironment::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    env.set_parallelism(2)
        .enable_checkpointing(Duration::from_millis(5))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(1),
        })
        .set_job_listener(Arc::new(move |e| sink.lock().unwrap().push(e.clone())))
        .set_fault_plan(FaultPlan::parse("panic@slow#1:records=150000").unwrap());
    let out = env
        .from_iter(0..400_000u64)
        .uid("numbers")
        .rebalance()
        .map(|x: u64| {
            // Slow enough that checkpoints happen before the failure.
            std::hint::black_box((0..20).fold(x, |a, b| a.wrapping_mul(31).wrapping_add(b)));
            x
        })
        .name("slow")
        .collect();
    env.execute_blocking("iter").unwrap();
    let events = events.lock().unwrap().clone();
    let restored_from = events.iter().find_map(|e| match e {
        JobEvent::Restored {
            checkpoint: Some(id),
            generation: 1,
        } => Some(*id),
        _ => None,
    });
    assert!(
        restored_from.is_some(),
        "the restart did not restore a checkpoint: {events:?}"
    );
    let mut got = out.take();
    got.sort_unstable();
    assert_eq!(got, (0..400_000u64).collect::<Vec<_>>());
}

// ----- pipelined regions ------------------------------------------------------------------

/// Counts `open` calls per pipeline: how many subtask instances were (re)started.
#[derive(Clone)]
struct CountOpens(&'static std::sync::atomic::AtomicUsize);

impl ProcessFunction<u64, u64> for CountOpens {
    fn process_element(
        &mut self,
        v: u64,
        _: &mut Context<'_>,
        out: &mut Collector<u64>,
    ) -> Result<(), UserError> {
        out.collect(v);
        Ok(())
    }
    fn open(&mut self, _: &TaskInfo) -> Result<(), UserError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Two disconnected pipelines are two pipelined regions: a failure in one restarts only that
/// one (its generation, from the latest checkpoint) while the other keeps running; both
/// outputs are exact.
#[test]
fn a_failure_restarts_only_its_pipelined_region() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static OPENS_A: AtomicUsize = AtomicUsize::new(0);
    static OPENS_B: AtomicUsize = AtomicUsize::new(0);
    let env = StreamExecutionEnvironment::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    env.set_parallelism(2)
        .enable_checkpointing(Duration::from_millis(30))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_job_listener(Arc::new(move |e| sink.lock().unwrap().push(e.clone())))
        .set_fault_plan(FaultPlan::parse("panic@pipeline-b#1:records=8000").unwrap());
    let a = env
        .from_generator(GeneratorSource::new(40_000, |i| i).with_rate_limit(100_000.0))
        .uid("source-a")
        .process(CountOpens(&OPENS_A))
        .uid("pipeline-a")
        .name("pipeline-a")
        .collect();
    let b = env
        .from_generator(GeneratorSource::new(40_000, |i| i * 3).with_rate_limit(100_000.0))
        .uid("source-b")
        .rebalance()
        .process(CountOpens(&OPENS_B))
        .uid("pipeline-b")
        .name("pipeline-b")
        .collect();
    let result = env.execute_blocking("two regions").unwrap();
    assert_eq!(result.metrics.restarts, 1, "restarts show in the metrics");
    let events = events.lock().unwrap().clone();
    let restarts = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Restart { .. }))
        .count();
    assert_eq!(restarts, 1, "{events:?}");
    assert_eq!(
        OPENS_A.load(Ordering::SeqCst),
        2,
        "pipeline A was restarted"
    );
    assert_eq!(
        OPENS_B.load(Ordering::SeqCst),
        4,
        "pipeline B's two subtasks start twice"
    );
    let mut a = a.take();
    a.sort_unstable();
    assert_eq!(a, (0..40_000).collect::<Vec<u64>>());
    let mut b = b.take();
    b.sort_unstable();
    assert_eq!(b, (0..40_000).map(|i| i * 3).collect::<Vec<u64>>());
}

/// When a region runs out of restarts, the whole job fails with the root cause and the other
/// region is cancelled (the job does not hang on it).
#[test]
fn a_region_out_of_restarts_fails_the_whole_job() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1)
        .enable_checkpointing(Duration::from_millis(30))
        .set_restart_strategy(RestartStrategy::None)
        .set_fault_plan(FaultPlan::parse("panic@doomed:records=100").unwrap());
    // An endless pipeline that would never finish on its own.
    env.from_generator(GeneratorSource::new(u64::MAX, |i| i).with_rate_limit(10_000.0))
        .map(|x: u64| x)
        .name("endless")
        .discard();
    env.from_generator(GeneratorSource::new(1_000, |i| i))
        .map(|x: u64| x)
        .name("doomed")
        .discard();
    let err = env.execute_blocking("out of restarts").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("doomed") && text.contains("injected fault"),
        "{text}"
    );
}

// ----- window function state ----------------------------------------------------------------

type Fired = (u64, i64, u64, u64, usize);

/// A process window function keeps per-window state (how often this window fired) and
/// per-key state (how often any window of the key fired) in its `StateBag`s; with an early
/// firing trigger and punctuated watermarks every firing is deterministic, so a run with
/// restarts must produce exactly the same firings.
fn bag_job(env: &StreamExecutionEnvironment, parallelism: u32) -> actorflow::Collected<Fired> {
    use actorflow::window::ContinuousEventTimeTrigger;
    env.set_parallelism(parallelism).set_max_parallelism(128);
    env.from_generator(
        GeneratorSource::new(N, |i| (i % 17, i as i64, i)).with_rate_limit(200_000.0),
    )
    .set_parallelism(1)
    .uid("generator")
    .assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps()
            .punctuated()
            .with_timestamp_assigner(|e: &(u64, i64, u64), _| e.1 / 20),
    )
    .uid("timestamps")
    .set_parallelism(1)
    .key_by(|e: &(u64, i64, u64)| e.0)
    .window(TumblingWindows::new(100, 0, WindowTime::Event).unwrap())
    .trigger(ContinuousEventTimeTrigger::of(25).unwrap())
    .process(
        |k: &u64,
         ctx: &mut WindowContext<'_, TimeWindow>,
         items: Vec<(u64, i64, u64)>,
         out: &mut Collector<Fired>| {
            let fires = {
                let f = ctx.window_state().get_or_default::<u64>("fires")?;
                *f += 1;
                *f
            };
            let total = {
                let g = ctx.global_state().get_or_default::<u64>("windows fired")?;
                *g += 1;
                *g
            };
            out.collect((*k, ctx.window().start, fires, total, items.len()));
            Ok(())
        },
    )
    .uid("window")
    .name("window")
    .collect()
}

#[test]
fn window_function_state_survives_restarts() {
    let env = StreamExecutionEnvironment::new();
    let out = bag_job(&env, 2);
    env.execute_blocking("reference").unwrap();
    let mut reference = out.take();
    reference.sort_unstable();
    assert!(
        reference.iter().any(|r| r.2 > 1),
        "windows fire early several times"
    );
    let env = StreamExecutionEnvironment::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_job_listener(Arc::new(move |e| sink.lock().unwrap().push(e.clone())))
        .set_fault_plan(
            FaultPlan::parse("panic@window#0:records=15000,panic@window#1:records=25000").unwrap(),
        );
    let out = bag_job(&env, 2);
    env.execute_blocking("with restarts").unwrap();
    let events = events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(
            e,
            JobEvent::Restored {
                checkpoint: Some(_),
                generation: 1
            }
        )),
        "restored from a checkpoint: {events:?}"
    );
    let mut got = out.take();
    got.sort_unstable();
    assert_eq!(got, reference);
}

/// Per key, over both inputs: the count and sum so far (value state), emitted with every
/// record, so each output row is unique and depends on the restored state.
#[derive(Clone, Default)]
struct RunningTotals {
    totals: Option<ValueState<(u64, u64)>>,
}

impl RunningTotals {
    fn add(
        &mut self,
        v: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<(u64, u64, u64)>,
    ) -> Result<(), UserError> {
        let totals = self.totals.as_ref().ok_or("not open")?;
        let (n, s) = totals.value(ctx.state())?.unwrap_or((0, 0));
        totals.update(ctx.state(), (n + 1, s + v))?;
        out.collect((*ctx.current_key(), n + 1, s + v));
        Ok(())
    }
}

impl KeyedCoProcessFunction<u64, u64, u64, (u64, u64, u64)> for RunningTotals {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.totals = Some(ctx.state.value_state("totals", None)?);
        Ok(())
    }
    fn process_element1(
        &mut self,
        v: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<(u64, u64, u64)>,
    ) -> Result<(), UserError> {
        self.add(v, ctx, out)
    }
    fn process_element2(
        &mut self,
        v: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<(u64, u64, u64)>,
    ) -> Result<(), UserError> {
        self.add(v, ctx, out)
    }
}

/// A short input that ends at once, connected to a long one: checkpoints go on after the
/// short one finished (Flink's FLIP-147), a failure long after its end restores from such a
/// checkpoint (the finished source's final state stands in for it), and the output equals
/// the fault-free run.
#[test]
fn checkpoints_go_on_after_one_input_finished() {
    const LONG: u64 = 40_000;
    let run = |faults: &str| {
        let env = StreamExecutionEnvironment::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        env.set_parallelism(2)
            .set_max_parallelism(128)
            .enable_checkpointing(Duration::from_millis(30))
            .set_restart_strategy(RestartStrategy::FixedDelay {
                attempts: 3,
                delay: Duration::from_millis(10),
            })
            .set_job_listener(Arc::new(move |e| sink.lock().unwrap().push(e.clone())));
        if !faults.is_empty() {
            env.set_fault_plan(FaultPlan::parse(faults).unwrap());
        }
        let short = env.from_iter((0..2_000u64).map(|i| i * 7)).uid("short");
        let long = env
            .from_generator(GeneratorSource::new(LONG, |i| i).with_rate_limit(100_000.0))
            .set_parallelism(1)
            .uid("long");
        let out = short
            .key_by(|v: &u64| v % 10)
            .connect(&long.key_by(|v: &u64| v % 10))
            .process(RunningTotals::default())
            .uid("totals")
            .name("totals")
            .collect();
        env.execute_blocking("short and long").unwrap();
        let mut rows = out.take();
        rows.sort_unstable();
        (rows, events.lock().unwrap().clone())
    };
    let (expected, _) = run("");
    assert_eq!(expected.len(), 42_000);
    // About 300 ms after the short input ended (the long one runs 400 ms).
    let (rows, events) = run("panic@totals#0:records=15000");
    let completed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::CheckpointCompleted {
                id,
                is_final: false,
                ..
            } => Some(*id),
            _ => None,
        })
        .collect();
    assert!(
        completed.len() >= 4,
        "checkpoints stopped when the short input ended: {events:?}"
    );
    let from = events.iter().find_map(|e| match e {
        JobEvent::Restart {
            from_checkpoint, ..
        } => Some(*from_checkpoint),
        _ => None,
    });
    assert!(
        matches!(from, Some(Some(_))),
        "the restart should use a checkpoint taken after the short input ended: {events:?}"
    );
    assert_eq!(rows, expected);
    // The finished subtasks' final state is written once, then listed (shared) by the
    // checkpoints after it instead of being copied into each.
    let sharing = events
        .iter()
        .filter(|e| {
            matches!(e, JobEvent::CheckpointCompleted { shared_bytes, is_final: false, .. }
                if *shared_bytes > 0)
        })
        .count();
    assert!(
        sharing >= 2,
        "later checkpoints should list the finished state, not copy it: {events:?}"
    );
}

/// A two-phase-commit sink whose bounded pipeline ended commits its last transaction at the
/// next checkpoint, while the rest of the job still runs (Flink's final checkpoint of a
/// finished task), not only when the whole job ends.
#[test]
fn a_finished_sink_commits_at_the_next_checkpoint() {
    use actorflow::transactional::{FileSink, TwoPhaseCommit, committed_parts};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = std::env::temp_dir().join(format!("actorflow-finished-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let committed_while_running = Arc::new(AtomicBool::new(false));
    let (seen, watched) = (committed_while_running.clone(), dir.clone());
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1)
        .enable_checkpointing(Duration::from_millis(30))
        .set_job_listener(Arc::new(move |e| {
            if let JobEvent::CheckpointCompleted {
                is_final: false, ..
            } = e
                && committed_parts(&watched).is_ok_and(|p| !p.is_empty())
            {
                seen.store(true, Ordering::SeqCst);
            }
        }));
    let parts = dir.clone();
    env.from_iter(0..1_000u64)
        .uid("short")
        .add_sink("short-file-sink", move |_: &TaskInfo| {
            Ok(TwoPhaseCommit::new(FileSink::<u64>::new(parts.clone())))
        })
        .uid("short-sink");
    // 0.6 s of input at 50 000/s: room for several checkpoints after the short input ended,
    // even on a loaded machine (at 0.3 s the test failed once in a clean-clone CI run).
    let long = env
        .from_generator(GeneratorSource::new(30_000, |i| i).with_rate_limit(50_000.0))
        .uid("long")
        .collect();
    env.execute_blocking("short sink, long job").unwrap();
    assert_eq!(long.take().len(), 30_000);
    assert!(
        committed_while_running.load(Ordering::SeqCst),
        "the finished sink's output stayed uncommitted until the job ended"
    );
    let mut lines: Vec<u64> = committed_parts(&dir)
        .unwrap()
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| l.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, (0..1_000).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store double over a `MemoryStore` that records what a power cut would keep (the newest
/// checkpoint a returned `commit` made durable) and whether a commit is under way, and can
/// make commits slow.
struct WatchedStore {
    inner: MemoryStore,
    durable: Arc<std::sync::atomic::AtomicU64>,
    committing: Arc<std::sync::atomic::AtomicBool>,
    commit_delay: Duration,
    /// Commits made so far, and the number of the one to refuse (a full disk), if any.
    commits: std::sync::atomic::AtomicU64,
    refuse_commit: Option<u64>,
}

impl WatchedStore {
    fn new(commit_delay: Duration) -> Self {
        WatchedStore {
            inner: MemoryStore::new(),
            durable: Default::default(),
            committing: Default::default(),
            commit_delay,
            commits: Default::default(),
            refuse_commit: None,
        }
    }

    /// Refuses its `n`th commit (1-based).
    fn refusing_commit(n: u64) -> Self {
        WatchedStore {
            refuse_commit: Some(n),
            ..WatchedStore::new(Duration::ZERO)
        }
    }
}

impl SnapshotStore for WatchedStore {
    fn put_blob(
        &self,
        id: actorflow_runtime::CheckpointId,
        name: &str,
        bytes: &[u8],
    ) -> Result<actorflow_runtime::checkpoint::snapshot::BlobEntry, StoreError> {
        self.inner.put_blob(id, name, bytes)
    }
    fn commit(
        &self,
        manifest: &actorflow_runtime::checkpoint::snapshot::Manifest,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.refuse_commit == Some(n) {
            return Err(StoreError::Io {
                path: "watched".into(),
                message: format!(
                    "commit {n} of checkpoint {} refused: no space left",
                    manifest.id
                ),
            });
        }
        self.committing.store(true, Ordering::SeqCst);
        if !self.commit_delay.is_zero() {
            #[allow(clippy::disallowed_methods)] // a slow disk, on the store's blocking thread
            std::thread::sleep(self.commit_delay);
        }
        let r = self.inner.commit(manifest);
        if r.is_ok() {
            self.durable.fetch_max(manifest.id.0, Ordering::SeqCst);
        }
        self.committing.store(false, Ordering::SeqCst);
        r
    }
    fn head(
        &self,
    ) -> Result<Option<actorflow_runtime::checkpoint::snapshot::HeadRecord>, StoreError> {
        self.inner.head()
    }
    fn list(&self) -> Result<Vec<actorflow_runtime::CheckpointId>, StoreError> {
        self.inner.list()
    }
    fn load(
        &self,
        id: actorflow_runtime::CheckpointId,
    ) -> Result<actorflow_runtime::checkpoint::snapshot::Snapshot, StoreError> {
        self.inner.load(id)
    }
    fn remove(&self, id: actorflow_runtime::CheckpointId) -> Result<(), StoreError> {
        self.inner.remove(id)
    }
}

/// A checkpoint the store cannot publish (its 3rd commit fails, as on a full disk) is a failed
/// checkpoint: it is aborted, the last published one is not pushed out of retention, the job
/// fails over (no failure tolerated) and restores from the last published one, checkpoints
/// go on after the restart, and the output is exactly once.
#[test]
fn a_checkpoint_the_store_cannot_publish_fails_over_from_the_last_published_one() {
    let expected = reference();
    let store = Arc::new(WatchedStore::refusing_commit(3));
    let r = run(2, "", |env| {
        env.enable_checkpointing(Duration::from_millis(30))
            .set_checkpoint_storage(store);
    });
    assert_eq!(r.rows, expected);
    let events = r.events;
    let refused = events.iter().find_map(|e| match e {
        JobEvent::CheckpointAborted { id, reason } if reason.contains("NotStored") => Some(*id),
        _ => None,
    });
    let refused = refused.unwrap_or_else(|| panic!("no refused checkpoint: {events:?}"));
    let restarted_from = events.iter().find_map(|e| match e {
        JobEvent::Restart {
            from_checkpoint, ..
        } => Some(*from_checkpoint),
        _ => None,
    });
    let completed_before: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::CheckpointCompleted { id, .. } if *id < refused => Some(id.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        restarted_from,
        Some(
            completed_before
                .last()
                .map(|i| actorflow_runtime::CheckpointId(*i))
        ),
        "restored from the last published checkpoint: {events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            JobEvent::CheckpointCompleted { id, is_final: false, .. } if *id > refused
        )),
        "checkpoints go on after the restart: {events:?}"
    );
}

/// The job's final checkpoint the store cannot publish fails the job over instead of leaving
/// the finished subtasks waiting for it forever (they commit their last transactions only
/// when it is published). No periodic checkpoint comes first (1 h interval), so the final
/// checkpoint is the store's first commit, refused; the rerun from scratch ends with its own
/// final checkpoint published, and the output is exactly once.
#[test]
fn a_final_checkpoint_the_store_cannot_publish_fails_over() {
    let expected = reference();
    let store = Arc::new(WatchedStore::refusing_commit(1));
    let env = StreamExecutionEnvironment::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    env.enable_checkpointing(Duration::from_secs(3600))
        .set_checkpoint_storage(store.clone())
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_job_listener(Arc::new(move |ev| e.lock().unwrap().push(ev.clone())));
    let out = job(&env, 2);
    // Before the fix the job never ended: bounded here so the test fails instead of hanging.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(env.execute_blocking("refused final").map(|_| ()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the job did not end within 60 s")
        .unwrap();
    assert_eq!(sorted(out.take()), expected);
    let events = events.lock().unwrap().clone();
    let restarts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Restart {
                from_checkpoint, ..
            } => Some(*from_checkpoint),
            _ => None,
        })
        .collect();
    assert_eq!(restarts, vec![None], "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::CheckpointCompleted { is_final: true, .. })),
        "{events:?}"
    );
}

/// A sink that checks, each time it is told a checkpoint completed (when a two-phase-commit
/// sink commits), that the checkpoint is already durable.
struct DurabilityProbe {
    durable: Arc<std::sync::atomic::AtomicU64>,
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl actorflow_runtime::Sink for DurabilityProbe {
    type Input = Row;
    async fn write_batch(&mut self, _: actorflow_runtime::Batch<Row>) -> Result<(), UserError> {
        Ok(())
    }
    async fn notify_checkpoint_complete(
        &mut self,
        checkpoint: actorflow_runtime::CheckpointId,
    ) -> Result<(), UserError> {
        let durable = self.durable.load(std::sync::atomic::Ordering::SeqCst);
        self.seen.lock().unwrap().push((checkpoint.0, durable));
        Ok(())
    }
}

/// Power loss at any moment keeps only what was durable: every checkpoint a sink was told
/// to commit must already be durable at that moment, so no committed output's checkpoint can
/// be lost (the final checkpoint's notification included).
#[test]
fn sinks_commit_only_checkpoints_that_are_already_durable() {
    let store = Arc::new(WatchedStore::new(Duration::ZERO));
    let durable = store.durable.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(20))
        .set_checkpoint_storage(store.clone());
    env.set_parallelism(2).set_max_parallelism(128);
    let (d, s) = (durable.clone(), seen.clone());
    env.from_generator(
        GeneratorSource::new(N, |i| (i % 17, i as i64, i, i)).with_rate_limit(200_000.0),
    )
    .set_parallelism(1)
    .add_sink("probe", move |_| {
        Ok(DurabilityProbe {
            durable: d.clone(),
            seen: s.clone(),
        })
    });
    env.execute_blocking("durability").unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 3, "too few checkpoints completed: {seen:?}");
    for (checkpoint, durable_then) in &seen {
        let effective = if *checkpoint == u64::MAX {
            // The final checkpoint's notification names it by its own (last) id.
            store.list().unwrap()[0].0
        } else {
            *checkpoint
        };
        assert!(
            *durable_then >= effective,
            "checkpoint {checkpoint} was committed by a sink while only {durable_then} was durable"
        );
    }
}

/// Savepoints asked for while another checkpoint or savepoint is pending wait for it instead
/// of failing with "try again": six requested at once all succeed, one after the other, and
/// so does the stop.
#[test]
fn savepoints_wait_for_a_pending_checkpoint_instead_of_failing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let env = StreamExecutionEnvironment::new();
    // A checkpoint every millisecond behind a slow window operator (its barriers wait behind
    // queued data): one is pending nearly all the time.
    env.enable_checkpointing(Duration::from_millis(1))
        .set_checkpoint_storage(store.clone());
    let _rows = job_with(&env, 2, 20_000.0, Duration::from_micros(50));
    let ids = rt.block_on(async {
        let handle = env.execute_async("queued savepoints").await.unwrap();
        // Six requests at once: at most one can start, the others must wait their turn.
        let requests: Vec<_> = (0..6)
            .map(|_| {
                let control = handle.control();
                tokio::spawn(async move { control.trigger_savepoint().await })
            })
            .collect();
        let mut ids = Vec::new();
        for r in requests {
            ids.push(r.await.unwrap().unwrap());
        }
        ids.sort();
        ids.push(handle.control().stop_with_savepoint().await.unwrap());
        handle.join().await.unwrap();
        ids
    });
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for id in ids {
        assert_eq!(
            store.load(id).unwrap().manifest.kind,
            actorflow_runtime::CheckpointKind::Savepoint
        );
    }
}

/// Restarts are visible without a tracing subscriber or a listener: the job's metrics carry
/// the exception history — each failure's operator, subtask and cause, and what the
/// supervisor did — in the result of a job that recovered, and in the handle's metrics of a
/// job whose restarts ran out.
#[test]
fn the_exception_history_tells_what_failed_and_what_was_done() {
    use actorflow_runtime::runtime::metrics::RecoveryAction;
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(40))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(FaultPlan::parse("panic@window#0:records=6000").unwrap());
    let _ = job(&env, 2);
    let result = env.execute_blocking("recovers").unwrap();
    assert_eq!(result.metrics.restarts, 1);
    let [e] = result.metrics.exceptions.as_slice() else {
        panic!("{:?}", result.metrics.exceptions);
    };
    assert_eq!((e.operator.as_str(), e.subtask_index), ("window", 0));
    assert!(e.cause.contains("injected"), "{}", e.cause);
    assert!(
        matches!(
            e.action,
            RecoveryAction::RegionRestarted {
                attempt: 1,
                delay_ms: 10,
                ..
            }
        ),
        "{:?}",
        e.action
    );
    assert!(
        result.metrics.to_string().contains("exception: "),
        "{}",
        result.metrics
    );

    // Always failing: two restarts, then the job fails; the handle still tells the story.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(40))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::ZERO,
        })
        .set_fault_plan(
            FaultPlan::parse(
                "panic@window#0:records=100,panic@window#0:records=100,panic@window#0:records=100",
            )
            .unwrap(),
        );
    let _ = job(&env, 1);
    let history = rt.block_on(async {
        let handle = env.execute_async("always fails").await.unwrap();
        let control = handle.control();
        assert!(handle.join().await.is_err());
        control.metrics().exceptions
    });
    let actions: Vec<_> = history.iter().map(|e| e.action.clone()).collect();
    assert!(
        matches!(
            actions.as_slice(),
            [
                RecoveryAction::RegionRestarted { attempt: 1, .. },
                RecoveryAction::RegionRestarted { attempt: 2, .. },
                RecoveryAction::JobFailed { .. }
            ]
        ),
        "{history:?}"
    );
}

/// A user operator plugged in with `KeyedStream::transform` keeps per-key counts, snapshots
/// them per key group and restores them: after an injected failure and a restart the
/// emitted final counts equal a plain count.
#[test]
fn a_custom_keyed_operator_checkpoints_and_restores_its_state() {
    use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
    use actorflow_runtime::state::keygroup::assign_to_key_group;
    use actorflow_runtime::{Batch, CheckpointId, Operator};
    use std::collections::BTreeMap;

    struct CountPerKey {
        max_parallelism: u32,
        counts: BTreeMap<u64, u64>,
    }
    impl Operator for CountPerKey {
        type In = (u64, i64, u64);
        type Out = (u64, u64);
        fn process_batch(
            &mut self,
            batch: Batch<(u64, i64, u64)>,
            _: &mut Collector<(u64, u64)>,
        ) -> Result<(), UserError> {
            for (k, _, _) in batch {
                *self.counts.entry(k).or_default() += 1;
            }
            Ok(())
        }
        fn finish(&mut self, out: &mut Collector<(u64, u64)>) -> Result<(), UserError> {
            for (k, n) in &self.counts {
                out.collect((*k, *n));
            }
            Ok(())
        }
        fn snapshot_state(
            &mut self,
            _: CheckpointId,
            state: &mut OperatorState,
        ) -> Result<(), UserError> {
            let mut groups: BTreeMap<_, Vec<(u64, u64)>> = BTreeMap::new();
            for (k, n) in &self.counts {
                groups
                    .entry(assign_to_key_group(k, self.max_parallelism))
                    .or_default()
                    .push((*k, *n));
            }
            for (kg, entries) in groups {
                state.put_group(kg, &entries)?;
            }
            Ok(())
        }
        fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
            for (_, entries) in restored.state.groups::<Vec<(u64, u64)>>()? {
                self.counts.extend(entries);
            }
            Ok(())
        }
    }

    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::ZERO,
        })
        .set_fault_plan(FaultPlan::parse("panic@count#1:records=15000").unwrap())
        .set_parallelism(2)
        .set_max_parallelism(128);
    let counts = env
        .from_generator(
            GeneratorSource::new(N, |i| (i % 17, i as i64, i)).with_rate_limit(100_000.0),
        )
        .set_parallelism(1)
        .key_by(|e: &(u64, i64, u64)| e.0)
        .transform("count", |info: &TaskInfo| CountPerKey {
            max_parallelism: info.max_parallelism,
            counts: BTreeMap::new(),
        })
        .uid("count")
        .collect();
    let result = env.execute_blocking("custom").unwrap();
    assert_eq!(result.metrics.restarts, 1, "the fault fired");
    let mut got = counts.take();
    got.sort();
    let expected: Vec<(u64, u64)> = (0..17).map(|k| (k, (N - k).div_ceil(17))).collect();
    assert_eq!(got, expected);
}

/// A failed subtask's operators (with all their state) are freed only after the failure was
/// reported: the restart does not wait for a large state to be dropped. The operator that
/// failed blocks in its `Drop` until the job's `Restart` event; were it dropped before the
/// report, the restart could not happen and the wait would time out.
#[test]
fn a_failed_chain_is_freed_while_the_job_restarts() {
    use std::sync::Condvar;
    use std::sync::atomic::{AtomicBool, Ordering};
    static FIRED: AtomicBool = AtomicBool::new(false);
    /// Set (and signalled) by the job's `Restart` event.
    static RESTARTED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
    static DROP_SAW_RESTART: Mutex<Option<bool>> = Mutex::new(None);

    /// Each copy of the map function starts unarmed; the copy that fails arms itself.
    struct Probe(AtomicBool);
    impl Clone for Probe {
        fn clone(&self) -> Self {
            Probe(AtomicBool::new(false))
        }
    }
    impl Drop for Probe {
        fn drop(&mut self) {
            if !self.0.load(Ordering::SeqCst) {
                return;
            }
            // The dropping thread waits on purpose: for the restart, at most 20 s.
            let (lock, signal) = &RESTARTED;
            let restarted = signal
                .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(20), |r| !*r)
                .unwrap()
                .0;
            *DROP_SAW_RESTART.lock().unwrap() = Some(*restarted);
        }
    }

    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(20))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 1,
            delay: Duration::ZERO,
        })
        .set_job_listener(Arc::new(|e| {
            if matches!(e, JobEvent::Restart { .. }) {
                *RESTARTED.0.lock().unwrap() = true;
                RESTARTED.1.notify_all();
            }
        }))
        .set_parallelism(1);
    let probe = Probe(AtomicBool::new(false));
    let out = env
        .from_generator(GeneratorSource::new(N, |i| i).with_rate_limit(200_000.0))
        .map(move |x: u64| {
            if x == N / 2 && !FIRED.swap(true, Ordering::SeqCst) {
                probe.0.store(true, Ordering::SeqCst);
                panic!("injected failure at {x}");
            }
            x
        })
        .collect();
    let result = env.execute_blocking("freed-while-restarting").unwrap();
    assert_eq!(result.metrics.restarts, 1);
    assert_eq!(
        *DROP_SAW_RESTART.lock().unwrap(),
        Some(true),
        "the failed operator was dropped before the restart began"
    );
    // Exactly once into `collect` across the restart.
    let mut got = out.take();
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

/// `execute` returns only after the checkpoint coordinator is done: a checkpoint being
/// written when the last subtask ended is finished, the job's final checkpoint is published,
/// and nothing is written or reported afterwards — even for a job without transactional
/// sinks, whose subtasks do not wait for the final checkpoint, on a runtime that outlives
/// the job. (A benchmark saw a previous job's checkpoint reported while the next one ran.)
#[test]
fn execute_returns_after_the_final_checkpoint_is_published() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..3 {
        let store = Arc::new(WatchedStore::new(Duration::from_millis(100)));
        let committing = store.committing.clone();
        let events = Arc::new(Mutex::new(Vec::new()));
        let returned = Arc::new(AtomicBool::new(false));
        let (sink, after) = (events.clone(), returned.clone());
        let env = StreamExecutionEnvironment::new();
        env.enable_checkpointing(Duration::from_millis(10))
            .set_checkpoint_storage(store.clone())
            .set_parallelism(1)
            .set_job_listener(Arc::new(move |e| {
                if let JobEvent::CheckpointCompleted { id, is_final, .. } = e {
                    sink.lock()
                        .unwrap()
                        .push((id.0, *is_final, after.load(Ordering::SeqCst)));
                }
            }));
        env.from_generator(GeneratorSource::new(20_000, |i| i).with_rate_limit(100_000.0))
            .map(|x: u64| x + 1)
            .discard();
        rt.block_on(env.execute("slow store")).unwrap();
        returned.store(true, Ordering::SeqCst);
        assert!(
            !committing.load(Ordering::SeqCst),
            "round {round}: a checkpoint was still being written after the job returned"
        );
        let seen = events.lock().unwrap().clone();
        assert!(
            seen.iter().any(|&(_, is_final, _)| is_final),
            "round {round}: the job returned before its final checkpoint: {seen:?}"
        );
        let newest = store.list().unwrap().into_iter().max().unwrap();
        assert_eq!(
            Some(newest.0),
            seen.iter().find(|e| e.1).map(|e| e.0),
            "round {round}: the final checkpoint is the newest in the store"
        );
    }
}
