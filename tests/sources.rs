//! The built-in sources: text files (lines, CRLF, blank lines, directories spread over
//! subtasks, invalid UTF-8 policies), sockets, sequences and rate-limited generators.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::prelude::*;
use common::{env as new_env, run};
use std::path::PathBuf;
use std::time::Duration;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actorflow-src-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_file_lines_match_flink_line_rules() {
    let dir = temp_dir("lines");
    let file = dir.join("in.txt");
    std::fs::write(
        &file,
        "first\r\n\nünïcødé 字\tword\r\n\r\nlast without newline",
    )
    .unwrap();
    let env = new_env(1);
    let out = env.read_text_file(&file).collect();
    run(&env).await.unwrap();
    assert_eq!(
        out.take(),
        vec!["first", "", "ünïcødé 字\tword", "", "last without newline"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_files_are_spread_over_subtasks_and_read_once() {
    let dir = temp_dir("dir");
    let mut expected = Vec::new();
    for f in 0..7 {
        let lines: Vec<String> = (0..(f * 700 + 3)).map(|l| format!("f{f} l{l}")).collect();
        std::fs::write(dir.join(format!("part-{f}")), lines.join("\n") + "\n").unwrap();
        expected.extend(lines);
    }
    std::fs::write(dir.join(".hidden"), "not me\n").unwrap();
    std::fs::write(dir.join("_SUCCESS"), "nor me\n").unwrap();
    expected.sort();
    for p in [1, 3] {
        let env = new_env(p);
        let out = env
            .read_text_file(&dir)
            .process_fn(|line: String, ctx, out: &mut Collector<(usize, String)>| {
                out.collect((ctx.task().subtask_index, line));
                Ok(())
            })
            .collect();
        run(&env).await.unwrap();
        let got = out.take();
        let mut lines: Vec<String> = got.iter().map(|(_, l)| l.clone()).collect();
        lines.sort();
        assert_eq!(lines, expected, "p={p}");
        // Each file is read by exactly one subtask: file k by subtask k mod p.
        for (subtask, line) in &got {
            let file: usize = line[1..line.find(' ').unwrap()].parse().unwrap();
            assert_eq!(*subtask, file % p as usize, "{line}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_policies() {
    let dir = temp_dir("utf8");
    let file = dir.join("bad.txt");
    std::fs::write(&file, b"ok 1\nok 2\nbad \xff\xfe here\nok 4\n").unwrap();

    let env = new_env(1);
    env.read_text_file(&file).discard();
    let err = run(&env).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("bad.txt") && text.contains("line 3") && text.contains("byte 14"),
        "{text}"
    );

    let env = new_env(1);
    let out = env
        .read_text_file_with(
            &file,
            TextFileOptions::default().utf8_policy(Utf8Policy::Replace),
        )
        .collect();
    run(&env).await.unwrap();
    assert_eq!(
        out.take(),
        vec!["ok 1", "ok 2", "bad \u{fffd}\u{fffd} here", "ok 4"]
    );

    let env = new_env(1);
    let out = env
        .read_text_file_with(
            &file,
            TextFileOptions::default().utf8_policy(Utf8Policy::Skip),
        )
        .collect();
    run(&env).await.unwrap();
    assert_eq!(out.take(), vec!["ok 1", "ok 2", "ok 4"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_text_stream_reads_lines_until_the_server_closes() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        for i in 0..5000 {
            conn.write_all(format!("line {i}\r\n").as_bytes())
                .await
                .unwrap();
        }
        conn.write_all(b"tail without newline").await.unwrap();
    });
    let env = new_env(2);
    let out = env
        .socket_text_stream("127.0.0.1", port)
        .map(|l| l.len())
        .collect();
    run(&env).await.unwrap();
    server.await.unwrap();
    let mut expected: Vec<usize> = (0..5000).map(|i| format!("line {i}").len()).collect();
    expected.push("tail without newline".len());
    let mut got = out.take();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_covers_its_range_exactly() {
    for (from, to, p) in [
        (5, 5, 3),
        (0, 0, 1),
        (10, 9, 2),
        (u64::MAX - 3, u64::MAX, 4),
    ] {
        let env = new_env(p);
        let out = env.from_sequence(from, to).collect();
        run(&env).await.unwrap();
        let mut got = out.take();
        got.sort();
        let expected: Vec<u64> = if from <= to {
            (from..=to).collect()
        } else {
            vec![]
        };
        assert_eq!(got, expected, "{from}..={to} at p={p}");
    }
}

#[tokio::test(start_paused = true)]
async fn generator_rate_limit_follows_the_clock() {
    // 1 000 records at 200/s over two subtasks: the last goes out at 995/200 s of (paused)
    // tokio time, whatever the machine does.
    let env = new_env(2);
    let out = env
        .from_generator(GeneratorSource::new(1000, |i| i).with_rate_limit(200.0))
        .collect();
    let started = tokio::time::Instant::now();
    env.execute("rate").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.len(), 1000);
    assert!(
        elapsed >= Duration::from_millis(4_970) && elapsed <= Duration::from_millis(5_100),
        "{elapsed:?}"
    );
}

/// A source closure, added at a default parallelism of 4.
struct Three(Vec<u64>);
impl Source for Three {
    type Output = u64;
    async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
        match self.0.pop() {
            Some(v) => {
                out.collect(v);
                Ok(SourceStatus::More)
            }
            None => Ok(SourceStatus::End),
        }
    }
}

/// A source closure is Flink's `SourceFunction`: it runs once (parallelism 1), not once per
/// subtask, and it is unbounded, so BATCH mode refuses it with an error naming
/// `SourceFn::bounded`; declared parallel it runs per subtask.
#[tokio::test]
async fn closure_sources_are_non_parallel_and_unbounded_unless_declared() {
    let env = new_env(4);
    let out = env
        .add_source("three", |_: &TaskInfo| Three(vec![3, 2, 1]))
        .map(|x| x)
        .collect();
    run(&env).await.unwrap();
    let mut got = out.take();
    got.sort();
    assert_eq!(got, vec![1, 2, 3], "each record once, not once per subtask");

    let env = new_env(4);
    let out = env
        .add_source(
            "three",
            actorflow::SourceFn::new(|_: &TaskInfo| Three(vec![3, 2, 1])).parallel(),
        )
        .collect();
    run(&env).await.unwrap();
    assert_eq!(
        out.take().len(),
        12,
        "declared parallel: one instance per subtask"
    );

    let env = new_env(1);
    env.set_runtime_mode(RuntimeMode::Batch);
    env.add_source("three", |_: &TaskInfo| Three(vec![1]))
        .discard();
    let err = env.execute("batch").await.unwrap_err().to_string();
    assert!(
        err.contains("unbounded") && err.contains("SourceFn::new(f).bounded()"),
        "{err}"
    );
    let env = new_env(1);
    env.set_runtime_mode(RuntimeMode::Batch);
    let out = env
        .add_source(
            "three",
            actorflow::SourceFn::new(|_: &TaskInfo| Three(vec![1])).bounded(),
        )
        .collect();
    run(&env).await.unwrap();
    assert_eq!(out.take(), vec![1]);
}

/// Emits 0..`end` in batches of 100, one batch per millisecond; the first `snapshot` records
/// are a phase it could not resume (an initial snapshot of a database): not ready for a
/// checkpoint until they are out. Records every position it checkpoints.
struct Snapshotting {
    next: u64,
    end: u64,
    snapshot: u64,
    positions: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Snapshotting {
    /// The source (bounded) emitting 0..`end`, not ready before `snapshot`, and the
    /// positions it checkpoints.
    fn add(
        env: &StreamExecutionEnvironment,
        end: u64,
        snapshot: u64,
    ) -> (DataStream<u64>, std::sync::Arc<std::sync::Mutex<Vec<u64>>>) {
        let positions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let p = positions.clone();
        let stream = env.add_source(
            "snapshotting",
            actorflow::SourceFn::new(move |_: &TaskInfo| Snapshotting {
                next: 0,
                end,
                snapshot,
                positions: p.clone(),
            })
            .bounded(),
        );
        (stream, positions)
    }
}

impl Source for Snapshotting {
    type Output = u64;
    async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let to = (self.next + 100).min(self.end);
        for v in self.next..to {
            out.collect(v);
        }
        self.next = to;
        Ok(if self.next == self.end {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }
    fn snapshot_state(
        &mut self,
        _: actorflow_runtime::CheckpointId,
        state: &mut actorflow::checkpoint::OperatorState,
    ) -> Result<(), UserError> {
        self.positions.lock().unwrap().push(self.next);
        state.push_item(&self.next)
    }
    fn restore_state(
        &mut self,
        restored: actorflow::checkpoint::RestoredState,
    ) -> Result<(), UserError> {
        let items: Vec<u64> = restored.state.items()?;
        self.next = items.into_iter().max().unwrap_or(0);
        Ok(())
    }
    fn is_ready_for_checkpoint(&self) -> bool {
        self.next >= self.snapshot
    }
}

/// A checkpoint triggered while the source is not ready waits for it instead of failing:
/// no checkpoint records a position inside the phase, the first one records the phase's end
/// at once (its barrier leaves right after the batch that made the source ready), and a
/// failure after it restores from there, exactly once.
#[test]
fn a_checkpoint_waits_for_a_source_that_is_not_ready() {
    let (env, events) =
        common::checkpointed_env(1, Duration::from_millis(5), "panic@boom#0:records=9000");
    let (stream, positions) = Snapshotting::add(&env, 12_000, 5_000);
    let out = stream.map(|v: u64| v).name("boom").collect();
    env.execute_blocking("postponed").unwrap();
    let mut got = out.take();
    got.sort_unstable();
    assert_eq!(got, (0..12_000).collect::<Vec<u64>>());
    let positions = positions.lock().unwrap().clone();
    assert!(
        positions.iter().all(|p| *p >= 5_000),
        "a checkpoint inside the phase: {positions:?}"
    );
    assert_eq!(positions.first(), Some(&5_000), "{positions:?}");
    let events = events.lock().unwrap().clone();
    assert_eq!(common::restarts_from_checkpoints(&events), 1, "{events:?}");
}

/// A source that becomes ready only with its last batch: the waiting checkpoint is taken at
/// its end (or the final state stands in for it), never declined, so the job ends without a
/// failure and every checkpoint it records is at the end.
#[test]
fn a_source_ready_only_at_its_end_finishes_without_a_failed_checkpoint() {
    let (env, events) = common::checkpointed_env(1, Duration::from_millis(5), "");
    let (stream, positions) = Snapshotting::add(&env, 3_000, 3_000);
    let out = stream.collect();
    env.execute_blocking("ready at the end").unwrap();
    assert_eq!(out.take().len(), 3_000);
    let positions = positions.lock().unwrap().clone();
    assert!(
        !positions.is_empty() && positions.iter().all(|p| *p == 3_000),
        "{positions:?}"
    );
    let events = events.lock().unwrap().clone();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            actorflow::checkpoint::JobEvent::CheckpointAborted { .. }
                | actorflow::checkpoint::JobEvent::Restart { .. }
        )),
        "{events:?}"
    );
}
