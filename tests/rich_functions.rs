//! Rich functions: open and close around every subtask's life, and checkpointed non-keyed
//! state (Flink's `CheckpointedFunction`) surviving restarts exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use actorflow::prelude::*;
use actorflow::rich::{FlatMapFunction, FunctionState, MapFunction, RichFunction};
use actorflow_runtime::CheckpointId;
use actorflow_runtime::operators::WindowFunction;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Holds records back and emits them 100 at a time (Flink's `BufferingSink` pattern); the
/// held records are list state.
#[derive(Clone, Default)]
struct Buffering {
    held: Vec<u64>,
    checkpointed: bool,
}

impl RichFunction for Buffering {
    fn snapshot_state(&mut self, _: CheckpointId, s: &mut FunctionState) -> Result<(), UserError> {
        if self.checkpointed {
            s.put_list("held", self.held.iter().copied())?;
        }
        Ok(())
    }
    fn restore_state(&mut self, s: &FunctionState) -> Result<(), UserError> {
        self.held = s.list("held")?;
        Ok(())
    }
}

impl FlatMapFunction<u64, Vec<u64>> for Buffering {
    fn flat_map(&mut self, v: u64, out: &mut Collector<Vec<u64>>) -> Result<(), UserError> {
        self.held.push(v);
        if self.held.len() == 100 {
            out.collect(std::mem::take(&mut self.held));
        }
        Ok(())
    }
    fn finish(&mut self, out: &mut Collector<Vec<u64>>) -> Result<(), UserError> {
        if !self.held.is_empty() {
            out.collect(std::mem::take(&mut self.held));
        }
        Ok(())
    }
}

const N: u64 = 30_000;

fn buffered_run(checkpointed: bool) -> (Vec<u64>, usize) {
    let (env, events) = common::checkpointed_env(
        2,
        Duration::from_millis(30),
        "panic@after#0:records=6000,panic@after#1:records=9000",
    );
    let out = env
        .from_generator(GeneratorSource::new(N, |i| i).with_rate_limit(50_000.0))
        .set_parallelism(1)
        .uid("ids")
        .rebalance()
        .rich_flat_map(Buffering {
            checkpointed,
            ..Buffering::default()
        })
        .uid("buffering")
        .map(|batch: Vec<u64>| batch)
        .name("after")
        .collect();
    env.execute_blocking("buffering").unwrap();
    let mut all: Vec<u64> = out.take().into_iter().flatten().collect();
    all.sort_unstable();
    let restarts = common::restarts_from_checkpoints(&events.lock().unwrap());
    (all, restarts)
}

#[test]
fn checkpointed_function_state_survives_restarts_exactly_once() {
    let (all, restarts) = buffered_run(true);
    assert!(restarts >= 1, "no restart from a checkpoint");
    assert_eq!(all, (0..N).collect::<Vec<u64>>());
}

#[test]
fn without_its_state_the_same_function_loses_the_records_it_held() {
    // The control: the runtime does not keep a function's fields by itself.
    let (all, restarts) = buffered_run(false);
    assert!(restarts >= 1);
    assert!(all.len() < N as usize, "{} of {N}", all.len());
}

/// Counts its opens and closes.
#[derive(Clone)]
struct Lifecycle {
    opened: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    fail_at: Option<u64>,
}

impl RichFunction for Lifecycle {
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        assert_eq!(info.parallelism, 3);
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl MapFunction<u64, u64> for Lifecycle {
    fn map(&mut self, v: u64) -> Result<u64, UserError> {
        if Some(v) == self.fail_at {
            return Err(format!("bad record {v}").into());
        }
        Ok(v + 1)
    }
}

#[test]
fn open_and_close_run_once_per_subtask_also_when_the_job_fails() {
    for fail_at in [None, Some(500)] {
        let (opened, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let f = Lifecycle {
            opened: opened.clone(),
            closed: closed.clone(),
            fail_at,
        };
        let result =
            actorflow::testing::try_example(3, move |env| env.from_sequence(1, 1000).rich_map(f));
        match fail_at {
            None => assert_eq!(result.unwrap().len(), 1000),
            Some(_) => assert!(result.unwrap_err().to_string().contains("bad record 500")),
        }
        assert_eq!(opened.load(Ordering::SeqCst), 3, "fail_at {fail_at:?}");
        assert_eq!(closed.load(Ordering::SeqCst), 3, "fail_at {fail_at:?}");
    }
}

/// A window function that learns its subtask in `open` and counts its closes.
#[derive(Clone)]
struct WindowTagger {
    subtask: Option<usize>,
    closed: Arc<AtomicU64>,
}

impl WindowFunction<u64, Vec<(u64, i64)>, (u64, usize, usize), TimeWindow> for WindowTagger {
    fn process(
        &mut self,
        key: &u64,
        _: &mut WindowContext<'_, TimeWindow>,
        input: Vec<(u64, i64)>,
        out: &mut Collector<(u64, usize, usize)>,
    ) -> Result<(), UserError> {
        let subtask = self.subtask.ok_or("window function used before open")?;
        out.collect((*key, subtask, input.len()));
        Ok(())
    }
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.subtask = Some(info.subtask_index);
        Ok(())
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn window_functions_are_opened_and_closed_too() {
    use actorflow::window::TumblingWindows;
    let closed = Arc::new(AtomicU64::new(0));
    let f = WindowTagger {
        subtask: None,
        closed: closed.clone(),
    };
    let out = actorflow::testing::example_with(2, move |env| {
        env.from_collection((0..40u64).map(|i| (i % 4, i as i64)).collect::<Vec<_>>())
            .set_parallelism(1)
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|e: &(u64, i64), _| e.1),
            )
            .key_by(|e: &(u64, i64)| e.0)
            .window(TumblingWindows::event_time(Duration::from_millis(20)).unwrap())
            .process(f)
    });
    assert_eq!(out.len(), 8, "4 keys x 2 windows");
    assert!(out.iter().all(|(_, _, n)| *n == 5));
    assert_eq!(closed.load(Ordering::SeqCst), 2);
}

/// A keyed flat map counting its closes.
#[derive(Clone)]
struct KeyedCloser(Arc<AtomicU64>);

impl actorflow::KeyedFlatMapFunction<u64, u64, u64> for KeyedCloser {
    fn flat_map(
        &mut self,
        value: u64,
        _: &mut KeyedContext<'_, u64>,
        out: &mut Collector<u64>,
    ) -> Result<(), UserError> {
        out.collect(value);
        Ok(())
    }
    fn close(&mut self) -> Result<(), UserError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn keyed_functions_are_closed_once_per_subtask() {
    let closed = Arc::new(AtomicU64::new(0));
    let f = KeyedCloser(closed.clone());
    let out = actorflow::testing::example_with(3, move |env| {
        env.from_sequence(1, 100)
            .key_by(|x: &u64| x % 7)
            .flat_map(f)
    });
    assert_eq!(out.len(), 100);
    assert_eq!(closed.load(Ordering::SeqCst), 3);
}

/// [`Buffering`] plus a union list: every subtask stores how many records it has taken in,
/// and on restore records the whole union (every old subtask's count) in `seen_on_restore`.
#[derive(Clone, Default)]
struct Counting {
    buffer: Buffering,
    taken: u64,
    seen_on_restore: Arc<std::sync::Mutex<Vec<Vec<u64>>>>,
}

impl RichFunction for Counting {
    fn snapshot_state(&mut self, id: CheckpointId, s: &mut FunctionState) -> Result<(), UserError> {
        self.buffer.snapshot_state(id, s)?;
        s.put_union_list("taken", [self.taken])
    }
    fn restore_state(&mut self, s: &FunctionState) -> Result<(), UserError> {
        self.buffer.restore_state(s)?;
        let union: Vec<u64> = s.union_list("taken")?;
        self.seen_on_restore.lock().unwrap().push(union);
        Ok(())
    }
}

impl FlatMapFunction<u64, Vec<u64>> for Counting {
    fn flat_map(&mut self, v: u64, out: &mut Collector<Vec<u64>>) -> Result<(), UserError> {
        self.taken += 1;
        self.buffer.flat_map(v, out)
    }
    fn finish(&mut self, out: &mut Collector<Vec<u64>>) -> Result<(), UserError> {
        self.buffer.finish(out)
    }
}

#[test]
fn function_state_is_redistributed_when_restored_at_another_parallelism() {
    use actorflow_runtime::checkpoint::snapshot::MemoryStore;
    use actorflow_runtime::checkpoint::types::{JobEvent, RestoreFrom};

    fn run(
        env: &StreamExecutionEnvironment,
        parallelism: u32,
        rate: f64,
        counting: &Counting,
    ) -> actorflow::Collected<Vec<u64>> {
        env.from_generator(GeneratorSource::new(N, |i| i).with_rate_limit(rate))
            .set_parallelism(1)
            .uid("ids")
            .rebalance()
            .rich_flat_map(counting.clone())
            .uid("buffering")
            .set_parallelism(parallelism)
            .collect()
    }
    let counting = Counting {
        buffer: Buffering {
            checkpointed: true,
            ..Buffering::default()
        },
        ..Counting::default()
    };
    let store = Arc::new(MemoryStore::new());
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .set_job_listener(Arc::new(move |e| {
            if matches!(e, JobEvent::CheckpointCompleted { .. }) {
                tx.send_modify(|n| *n += 1);
            }
        }));
    // 30 000 records at 20 000/s: stopped after a few checkpoints, in the middle.
    let first = run(&env, 2, 20_000.0, &counting);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stopped = rt.block_on(async {
        let handle = env.execute_async("before").await.unwrap();
        rx.wait_for(|n| *n >= 3).await.unwrap();
        let stopped = handle.control().stop_with_savepoint().await.unwrap();
        handle.join().await.unwrap();
        stopped
    });
    let mut all: Vec<u64> = first.take().into_iter().flatten().collect();
    let before = all.len();
    assert!(
        before > 0 && before < N as usize,
        "{before} of {N} before the stop"
    );
    assert!(counting.seen_on_restore.lock().unwrap().is_empty());

    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store)
        .restore_from(RestoreFrom::Checkpoint(stopped));
    let second = run(&env, 3, 1e9, &counting);
    env.execute_blocking("after").unwrap();
    let mut after: Vec<u64> = second.take().into_iter().flatten().collect();
    after.sort_unstable();
    all.sort_unstable();
    // The records held in the two old subtasks' lists went to the three new ones: none lost,
    // none twice. Each run's output is exactly once on its own; a record in both is one the
    // savepoint's pending transaction held, committed by the first run when the savepoint
    // completed and again by the restore (commits are idempotent per run, and these are two
    // separate `collect` handles), so across the runs repeats are dropped.
    let unique = |v: &[u64]| v.windows(2).all(|w| w[0] != w[1]);
    assert!(unique(&all), "the first run emitted a record twice");
    assert!(unique(&after), "the restored run emitted a record twice");
    all.extend(after);
    all.sort_unstable();
    all.dedup();
    assert!(
        all.len() == N as usize && all.last() == Some(&(N - 1)),
        "{} distinct records of {N}",
        all.len()
    );
    // Each of the three new subtasks saw the whole union: both old subtasks' counts, which
    // add up to what the source had emitted at the savepoint (records held or passed on).
    let seen = counting.seen_on_restore.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|u| u == &seen[0]), "{seen:?}");
    assert_eq!(seen[0].len(), 2, "{seen:?}");
    let taken: u64 = seen[0].iter().sum();
    assert!(
        taken as usize >= before && taken < N,
        "{taken} taken, {before} emitted"
    );
}
