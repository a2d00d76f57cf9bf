//! The PostgreSQL sink against a real server (cargo feature `postgres`). `.ci/run` starts one
//! with `scripts/postgres.sh start` and sets `ACTORFLOW_POSTGRES_URL`; without it these tests
//! fail in CI and, elsewhere, say how to start it.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::GeneratorSource;
use actorflow::checkpoint::{OperatorState, RestoredState};
use actorflow::fault::FaultPlan;
use actorflow::postgres::{BadRows, PostgresSink, RejectedRow, SqlValue};
use actorflow::prelude::*;
use actorflow::restart::RestartStrategy;
use actorflow::snapshot::{MemoryStore, SnapshotStore};
use actorflow_runtime::CheckpointId;
use actorflow_runtime::operators::operator::Generation;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

fn url() -> Option<String> {
    match std::env::var("ACTORFLOW_POSTGRES_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "ACTORFLOW_POSTGRES_URL is not set: start the server with `eval \"$(scripts/postgres.sh start)\"`"
        ),
        Err(_) => {
            eprintln!(
                "NOT RUN: these tests need PostgreSQL: `eval \"$(scripts/postgres.sh start)\"` sets ACTORFLOW_POSTGRES_URL"
            );
            None
        }
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A table name no other test (or run) uses.
fn table(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A prefix no other test uses, so tests never resolve each other's transactions.
fn prefix(name: &str) -> String {
    format!("t{}{}", std::process::id(), name.replace('_', ""))
}

async fn count_prepared(client: &Client, prefix: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1",
            &[&format!("{prefix}:%")],
        )
        .await
        .unwrap()
        .get(0)
}

/// `(count, distinct ids, min, max)` of the table's `id` column.
async fn ids(client: &Client, table: &str) -> (i64, i64, Option<i64>, Option<i64>) {
    let r = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn sink(url: &str, table: &str, prefix: &str) -> PostgresSink<u64> {
    PostgresSink::<u64>::builder(url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigint NOT NULL, square bigint)"
        ))
        .table(table, &["id", "square"])
        .row(|i| {
            vec![
                SqlValue::Int(*i as i64),
                SqlValue::Int((*i as i64) * (*i as i64)),
            ]
        })
        .transaction_prefix(prefix)
        .batch_rows(500)
        .build()
        .unwrap()
}

/// An environment at `parallelism` that checkpoints every 40 ms into memory, restarts up to
/// `attempts` times 10 ms apart, and injects `faults` (a `FaultPlan`).
fn restarting_env(parallelism: u32, attempts: u32, faults: &str) -> StreamExecutionEnvironment {
    let env = common::env(parallelism);
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(FaultPlan::parse(faults).unwrap());
    env
}

/// Generator (rebalanced) -> "boom" (where faults fire) -> the sink (`uid`); the sink's side
/// output of rejected rows, collected.
fn rejecting_pipeline(
    env: &StreamExecutionEnvironment,
    records: u64,
    rate: f64,
    sink: PostgresSink<u64>,
    uid: &str,
    rejected: &OutputTag<RejectedRow<u64>>,
) -> actorflow::Collected<RejectedRow<u64>> {
    env.from_generator(GeneratorSource::new(records, |i| i).with_rate_limit(rate))
        .rebalance()
        .map(|i: u64| i)
        .name("boom")
        .add_sink("pg", move |_: &TaskInfo| Ok(sink.clone()))
        .uid(uid)
        .get_side_output(rejected)
        .collect()
}

/// Generator -> "boom" (where faults fire) -> the sink, at `parallelism`.
fn pipeline(env: &StreamExecutionEnvironment, records: u64, rate: f64, sink: PostgresSink<u64>) {
    env.from_generator(GeneratorSource::new(records, |i| i).with_rate_limit(rate))
        .map(|i: u64| i)
        .name("boom")
        .add_sink("pg", move |_: &TaskInfo| Ok(sink.clone()))
        .uid("pg-sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_injected_failures_at_parallelism_1_and_3() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    for p in [1u32, 3] {
        let t = table("eo");
        let pre = prefix(&format!("eo{p}"));
        let env = restarting_env(p, 5, "panic@boom#0:records=2000,panic@boom:records=3000");
        pipeline(&env, 20_000, 40_000.0, sink(&url, &t, &pre));
        let r = common::run(&env).await.unwrap();
        assert!(
            r.metrics.restarts >= 2,
            "p={p}: {} restarts",
            r.metrics.restarts
        );
        assert_eq!(
            ids(&client, &t).await,
            (20_000, 20_000, Some(0), Some(19_999)),
            "p={p}: every row exactly once"
        );
        assert_eq!(
            count_prepared(&client, &pre).await,
            0,
            "p={p}: nothing left prepared"
        );
    }
}

/// Commit markers older than the retention are deleted (those of this sink only); newer ones,
/// and the markers of the run itself, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_commit_markers_are_pruned() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("prune");
    let pre = prefix("prune");
    let other = prefix("pruneother");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS actorflow_commits (gid text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    for (gid, age) in [
        (format!("{pre}:pg-sink:0:old:1"), "8 days"),
        (format!("{pre}:pg-sink:1:old:1"), "8 days"),
        (format!("{pre}:pg-sink:0:recent:1"), "1 day"),
        (format!("{other}:pg-sink:0:old:1"), "8 days"),
    ] {
        client
            .execute(
                &format!(
                    "INSERT INTO actorflow_commits (gid, at) VALUES ($1, now() - interval '{age}')"
                ),
                &[&gid],
            )
            .await
            .unwrap();
    }
    let env = common::env(2);
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()));
    pipeline(&env, 5_000, 40_000.0, sink(&url, &t, &pre));
    common::run(&env).await.unwrap();
    let markers = |like: String| {
        let client = &client;
        async move {
            let rows = client
                .query(
                    "SELECT gid FROM actorflow_commits WHERE gid LIKE $1",
                    &[&like],
                )
                .await
                .unwrap();
            let mut gids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            gids.sort();
            gids
        }
    };
    let ours = markers(format!("{pre}:%")).await;
    assert!(!ours.iter().any(|g| g.contains(":old:")), "{ours:?}");
    assert!(
        ours.contains(&format!("{pre}:pg-sink:0:recent:1")),
        "{ours:?}"
    );
    assert!(
        ours.len() > 2,
        "the run's own markers (both subtasks) stay: {ours:?}"
    );
    assert_eq!(
        markers(format!("{other}:%")).await,
        vec![format!("{other}:pg-sink:0:old:1")],
        "another sink's markers are left alone"
    );
    assert_eq!(ids(&client, &t).await, (5_000, 5_000, Some(0), Some(4_999)));
    client
        .execute(
            "DELETE FROM actorflow_commits WHERE gid LIKE $1",
            &[&format!("{other}:%")],
        )
        .await
        .unwrap();
}

/// A checkpoint's prepared transaction that was never committed (the process died between
/// the checkpoint's completion and the commit) is committed on restore; a transaction
/// prepared after that checkpoint is rolled back; so is one of a subtask beyond the new
/// parallelism. Driven through the sink's own hooks, so each case happens for sure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_commits_the_checkpoints_transactions_and_rolls_back_the_rest() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("restore");
    let pre = prefix("restore");
    let info = |index: usize, parallelism: u32, restored: Option<u64>| {
        let mut i = TaskInfo::standalone("pg", index, parallelism, 128);
        i.uid = Some("pg-sink".into());
        i.checkpointing = true;
        i.restored_from = restored.map(CheckpointId);
        i
    };
    let rows = |from: u64, to: u64| -> Batch<u64> { Batch::from_values((from..to).collect()) };
    // The first run, subtask 0 of 2: checkpoint 1 prepared (and completed, but the commit
    // never happened), then checkpoint 2 prepared and never completed.
    let mut first = sink(&url, &t, &pre);
    first.open(&info(0, 2, None)).await.unwrap();
    first.write_batch(rows(0, 100)).await.unwrap();
    let mut at_1 = OperatorState::default();
    first
        .snapshot_state(CheckpointId(1), &mut at_1)
        .await
        .unwrap();
    first.write_batch(rows(100, 150)).await.unwrap();
    let mut at_2 = OperatorState::default();
    first
        .snapshot_state(CheckpointId(2), &mut at_2)
        .await
        .unwrap();
    drop(first);
    // Subtask 1 of the first run prepared checkpoint 2 too.
    let mut other = sink(&url, &t, &pre);
    other.open(&info(1, 2, None)).await.unwrap();
    other.write_batch(rows(1000, 1010)).await.unwrap();
    other
        .snapshot_state(CheckpointId(2), &mut OperatorState::default())
        .await
        .unwrap();
    drop(other);
    assert_eq!(count_prepared(&client, &pre).await, 3);
    assert_eq!(ids(&client, &t).await.0, 0, "nothing visible yet");

    // Restore checkpoint 1 at parallelism 1: its transaction is committed, the two of
    // checkpoint 2 (subtask 0's, and subtask 1's, beyond the new parallelism) rolled back.
    let mut second = sink(&url, &t, &pre);
    second.open(&info(0, 1, Some(1))).await.unwrap();
    second
        .restore_state(RestoredState {
            state: at_1.clone(),
            same_index: None,
        })
        .await
        .unwrap();
    assert_eq!(ids(&client, &t).await, (100, 100, Some(0), Some(99)));
    assert_eq!(count_prepared(&client, &pre).await, 0);

    // Restoring the same checkpoint again is idempotent: already committed is success.
    let mut third = sink(&url, &t, &pre);
    third.open(&info(0, 1, Some(1))).await.unwrap();
    third
        .restore_state(RestoredState {
            state: at_1,
            same_index: None,
        })
        .await
        .unwrap();
    assert_eq!(ids(&client, &t).await.0, 100);

    // A transaction that the restored state lists but that is neither prepared nor
    // committed means lost rows: the sink says so instead of carrying on.
    let mut fourth = sink(&url, &t, &pre);
    fourth.open(&info(0, 1, Some(2))).await.unwrap();
    let err = fourth
        .restore_state(RestoredState {
            state: at_2,
            same_index: None,
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("neither prepared nor committed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtask_of_a_stale_generation_cannot_commit() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("stale");
    let pre = prefix("stale");
    let current = Arc::new(AtomicU64::new(0));
    let mut info = TaskInfo::standalone("pg", 0, 1, 128);
    info.checkpointing = true;
    info.generation = Generation::new(0, current.clone());
    let mut s = sink(&url, &t, &pre);
    s.open(&info).await.unwrap();
    s.write_batch(Batch::from_values(vec![1u64, 2, 3]))
        .await
        .unwrap();
    s.snapshot_state(CheckpointId(1), &mut OperatorState::default())
        .await
        .unwrap();
    // The job restarted meanwhile.
    current.store(1, Ordering::SeqCst);
    let err = s
        .notify_checkpoint_complete(CheckpointId(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to commit"), "{err}");
    assert_eq!(ids(&client, &t).await.0, 0);
    assert_eq!(
        count_prepared(&client, &pre).await,
        1,
        "left for the restore to resolve"
    );
    // The restored attempt resolves it (here: rolls it back, as no checkpoint lists it).
    let mut fresh = sink(&url, &t, &pre);
    fresh
        .open(&TaskInfo {
            checkpointing: true,
            ..TaskInfo::standalone("pg", 0, 1, 128)
        })
        .await
        .unwrap();
    assert_eq!(count_prepared(&client, &pre).await, 0);
}

fn checked_sink(url: &str, table: &str, prefix: &str, bad: BadRows) -> PostgresSink<u64> {
    PostgresSink::<u64>::builder(url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigint NOT NULL, square bigint CHECK (id % 1000 <> 7))"
        ))
        .table(table, &["id", "square"])
        .row(|i| vec![SqlValue::Int(*i as i64), SqlValue::Int(0)])
        .transaction_prefix(prefix)
        .bad_rows(bad)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_fail_the_job_with_the_row_or_go_to_the_dead_letter_table() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    // Failing: the error names the row and the database's message; nothing is committed.
    let t = table("bad");
    let env = common::env(1);
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()))
        .set_restart_strategy(RestartStrategy::None);
    let s = checked_sink(&url, &t, &prefix("badfail"), BadRows::Fail);
    env.from_sequence(0, 2_000)
        .add_sink("pg", move |_: &TaskInfo| Ok(s.clone()));
    let err = common::run(&env).await.unwrap_err().to_string();
    assert!(err.contains("the row (7, 0) was refused"), "{err}");
    assert!(err.contains("violates check constraint"), "{err}");
    // Dead letters: the good rows once each, the bad ones in the other table.
    let t = table("dead");
    let dead = format!("{t}_bad");
    let env = restarting_env(2, 3, "panic@pg#1:records=2000");
    let s = checked_sink(
        &url,
        &t,
        &prefix("baddead"),
        BadRows::DeadLetter(dead.clone()),
    );
    env.from_sequence(0, 9_999)
        .rebalance()
        .add_sink("pg", move |_: &TaskInfo| Ok(s.clone()));
    common::run(&env).await.unwrap();
    assert_eq!(ids(&client, &t).await, (9_990, 9_990, Some(0), Some(9_999)));
    let bad: Vec<String> = client
        .query(&format!("SELECT row FROM {dead} ORDER BY row"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bad.len(), 10, "{bad:?}");
    assert!(bad.contains(&"1007, 0".to_string()), "{bad:?}");
}

/// Bad rows to a side output: the records the server refused leave the sink with the row and
/// the server's message, exactly once through a failure (the side output ends in the
/// exactly-once collecting sink), while the good rows are in the table exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_go_to_the_side_output_exactly_once() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("side");
    let rejected: OutputTag<RejectedRow<u64>> = OutputTag::new("rejected");
    let s = PostgresSink::<u64>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigint NOT NULL, square bigint CHECK (id % 1000 <> 7))"
        ))
        .table(&t, &["id", "square"])
        .row(|i| vec![SqlValue::Int(*i as i64), SqlValue::Int(0)])
        .transaction_prefix(&prefix("badside"))
        .bad_rows(BadRows::Fail)
        .bad_rows_to(&rejected)
        .build()
        .unwrap();
    let env = restarting_env(2, 3, "panic@boom#1:records=2500");
    let side = rejecting_pipeline(&env, 10_000, 40_000.0, s, "pg-side", &rejected);
    let r = common::run(&env).await.unwrap();
    assert!(r.metrics.restarts >= 1, "{} restarts", r.metrics.restarts);
    assert_eq!(ids(&client, &t).await, (9_990, 9_990, Some(0), Some(9_999)));
    let mut got = side.take();
    got.sort_by_key(|r| r.record);
    let records: Vec<u64> = got.iter().map(|r| r.record).collect();
    assert_eq!(records, (0..10).map(|k| k * 1000 + 7).collect::<Vec<u64>>());
    assert_eq!(got[1].row, "1007, 0");
    assert!(
        got.iter()
            .all(|r| r.error.contains("violates check constraint")),
        "{got:?}"
    );
    // Upserts (each batch committed at once) take the same way: the refused records, once
    // each in a run without failures, with their timestamps.
    let t = table("sideup");
    let s = PostgresSink::<u64>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigint PRIMARY KEY, square bigint CHECK (id % 1000 <> 7))"
        ))
        .table(&t, &["id", "square"])
        .row(|i| vec![SqlValue::Int(*i as i64), SqlValue::Int(0)])
        .upsert(&["id"])
        .bad_rows_to(&rejected)
        .build()
        .unwrap();
    let env = common::env(1);
    let side = env
        .from_sequence(0, 2_999)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|i: &u64, _| *i as i64 * 10),
        )
        .add_sink("pg", move |_: &TaskInfo| Ok(s.clone()))
        .get_side_output(&rejected)
        .process(
            |r: RejectedRow<u64>, ctx: &mut Context<'_>, out: &mut Collector<(u64, i64)>| {
                out.collect((r.record, ctx.timestamp().map_or(-1, |t| t.0)));
                Ok(())
            },
        )
        .collect();
    common::run(&env).await.unwrap();
    assert_eq!(ids(&client, &t).await, (2_997, 2_997, Some(0), Some(2_999)));
    let mut got = side.take();
    got.sort_unstable();
    assert_eq!(got, vec![(7, 70), (1007, 10_070), (2007, 20_070)]);
}

/// A user-supplied statement instead of a table mapping: still exactly once (it runs inside the
/// two-phase-committed transaction) through a failure at parallelism 2, the statement's own
/// computation applied, and a row it refuses goes to the side output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_statement_writes_exactly_once() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("stmt");
    let rejected: OutputTag<RejectedRow<u64>> = OutputTag::new("rejected");
    let s = PostgresSink::<u64>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigint PRIMARY KEY, square bigint CHECK (id % 1000 <> 7))"
        ))
        .statement(&format!(
            "INSERT INTO {t} (id, square) VALUES ($1::bigint, $1::bigint * $1::bigint) ON CONFLICT (id) DO NOTHING"
        ))
        .row(|i| vec![SqlValue::Int(*i as i64)])
        .transaction_prefix(&prefix("stmt"))
        .bad_rows_to(&rejected)
        .build()
        .unwrap();
    let env = restarting_env(2, 3, "panic@boom#1:records=1500");
    let side = rejecting_pipeline(&env, 6_000, 30_000.0, s, "pg-stmt", &rejected);
    let r = common::run(&env).await.unwrap();
    assert!(r.metrics.restarts >= 1, "{} restarts", r.metrics.restarts);
    assert_eq!(ids(&client, &t).await, (5_994, 5_994, Some(0), Some(5_999)));
    let wrong: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {t} WHERE square <> id * id"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
    let mut got: Vec<u64> = side.take().into_iter().map(|r| r.record).collect();
    got.sort_unstable();
    assert_eq!(got, (0..6).map(|k| k * 1000 + 7).collect::<Vec<u64>>());
    assert_eq!(count_prepared(&client, &prefix("stmt")).await, 0);
}

/// A value its column cannot take (out of `integer` range) is found before the server sees
/// it: that record's rows go row by row, the bad one to the dead-letter table, the others in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_fit_its_column_goes_to_the_dead_letter_table() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("misfit");
    let dead = format!("{t}_bad");
    let s = PostgresSink::<u64>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigint NOT NULL, small integer)"
        ))
        .table(&t, &["id", "small"])
        .row(|i| {
            let small = if *i == 13 { 1i64 << 40 } else { *i as i64 };
            vec![SqlValue::Int(*i as i64), SqlValue::Int(small)]
        })
        .transaction_prefix(&prefix("misfit"))
        .bad_rows(BadRows::DeadLetter(dead.clone()))
        .build()
        .unwrap();
    let env = common::env(1);
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()));
    env.from_sequence(0, 999)
        .add_sink("pg", move |_: &TaskInfo| Ok(s.clone()));
    common::run(&env).await.unwrap();
    let r = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), bool_or(id = 13) FROM {t}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, bool>(2)),
        (999, 999, false)
    );
    let bad: Vec<(String, String)> = client
        .query(&format!("SELECT row, error FROM {dead}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, "13, 1099511627776");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_a_failure_the_job_recovers_from() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("drop");
    let pre = prefix("drop");
    let app = format!("afdrop{}", std::process::id());
    let sink_url = format!("{url}?application_name={app}");
    let env = common::env(2);
    env.enable_checkpointing(Duration::from_millis(40))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()))
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(20),
        });
    pipeline(&env, 20_000, 10_000.0, sink(&sink_url, &t, &pre));
    let handle = env.execute_async("drop").await.unwrap();
    // Once rows are committed, the server drops the sink's connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .query_one(&format!("SELECT to_regclass('{t}') IS NOT NULL"), &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
            && ids(&client, &t).await.0 > 0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rows committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    let r = tokio::time::timeout(Duration::from_secs(120), handle.join())
        .await
        .unwrap()
        .unwrap();
    assert!(r.metrics.restarts >= 1);
    assert_eq!(
        ids(&client, &t).await,
        (20_000, 20_000, Some(0), Some(19_999))
    );
    assert_eq!(count_prepared(&client, &pre).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_end_with_the_same_table_through_failures() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("upsert");
    let s = PostgresSink::<u64>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (k bigint PRIMARY KEY, latest bigint)"
        ))
        .table(&t, &["k", "latest"])
        .row(|i| vec![SqlValue::Int((*i % 100) as i64), SqlValue::Int(*i as i64)])
        .upsert(&["k"])
        .build()
        .unwrap();
    let env = restarting_env(1, 3, "panic@boom:records=5000");
    env.from_sequence(0, 9_999)
        .map(|i: u64| i)
        .name("boom")
        .add_sink("pg", move |_: &TaskInfo| Ok(s.clone()));
    common::run(&env).await.unwrap();
    let rows: Vec<(i64, i64)> = client
        .query(&format!("SELECT k, latest FROM {t} ORDER BY k"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i64, i64)> = (0..100).map(|k| (k, 9_900 + k)).collect();
    assert_eq!(rows, expected);
}

/// `window_agg --output postgresql://...?table=T` killed (by its own `exit` fault, like
/// SIGKILL, and by a real SIGKILL while transactions are prepared on the server), at
/// parallelism 1 and 3, then rerun with `--restore latest`: the table holds exactly the rows
/// of an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_agg_into_postgres_survives_kill_9_exactly_once() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let exe = common::example_binary("window_agg");
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/data/events.csv");
    let base = [
        "--input",
        input,
        "--window",
        "tumbling",
        "--size",
        "100",
        "--ooo",
        "50",
        "--lateness",
        "20",
        // A watermark after every record: the windows' output does not depend on timing.
        "--watermark",
        "punctuated",
    ];
    let work = std::env::temp_dir().join(format!("actorflow-pg-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // The reference: an uninterrupted run into a file.
    let golden = work.join("golden.csv");
    let status = std::process::Command::new(&exe)
        .args(base)
        .arg("--output")
        .arg(&golden)
        .status()
        .unwrap();
    assert!(status.success());
    let mut expected: Vec<String> = std::fs::read_to_string(&golden)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    expected.sort();
    for (kill, parallelism) in [
        ("exit", "1"),
        ("sigkill", "1"),
        ("exit", "3"),
        ("sigkill", "3"),
    ] {
        let case = format!("{kill}-p{parallelism}");
        let t = table(&format!("wa{kill}{parallelism}"));
        let out = format!("{url}?table={t}");
        let dir = work.join(&case);
        let ck = [
            "--checkpoint-dir",
            dir.to_str().unwrap(),
            "--checkpoint-interval",
            "30",
            "--parallelism",
            parallelism,
        ];
        let mut first = std::process::Command::new(&exe);
        first
            .args(base)
            .args(["--output", &out])
            .args(ck)
            .args(["--source-rate", "300"]);
        if kill == "exit" {
            first.args(["--fault", "exit@window:checkpoint=3"]);
            let status = first.stderr(std::process::Stdio::null()).status().unwrap();
            assert_eq!(
                status.code(),
                Some(137),
                "{case}: the fault kills the process"
            );
        } else {
            let mut child = first.stderr(std::process::Stdio::null()).spawn().unwrap();
            // Kill -9 while the rows sink holds prepared transactions on the server.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let prepared: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'actorflow:rows-sink:%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if prepared > 0 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nothing was prepared"
                );
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the job ended before the kill"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let status = std::process::Command::new(&exe)
            .args(base)
            .args(["--output", &out])
            .args(ck)
            .args(["--restore", "latest"])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{case}: the restored run");
        let mut rows: Vec<String> = client
            .query(
                &format!(
                    "SELECT key || ',' || window_start || ',' || window_end || ',' || sum || ',' || count FROM {t}"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        assert_eq!(
            rows, expected,
            "{case}: exactly the rows of an uninterrupted run"
        );
        let prepared: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'actorflow:rows-sink:%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(prepared, 0, "{case}: nothing left prepared");
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Why a logical slot may not become consistent: it waits for every transaction running when
/// it was created, prepared ones included (a job that failed for good leaves its prepared
/// transactions behind).
async fn slot_blockers(client: &Client) -> String {
    let prepared: Vec<String> = client
        .query("SELECT gid FROM pg_prepared_xacts", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    format!(
        "{} prepared transaction(s) on the server hold slot creation back: {prepared:?} \
         (roll them back, or start a fresh server with scripts/postgres.sh stop/start)",
        prepared.len()
    )
}

/// Applies `n` random single-row changes (each its own transaction) to `table (id int, v
/// text)`, recording the change events they must produce: `+I,id,v`, `-U,id,old` `+U,id,new`,
/// `-D,id,v`.
async fn random_changes(
    client: &Client,
    table: &str,
    rows: &mut std::collections::BTreeMap<i32, String>,
    next_id: &mut i32,
    rng: &mut common::Rng,
    n: usize,
    history: &mut Vec<String>,
) {
    for _ in 0..n {
        let roll = rng.below(100);
        if rows.is_empty() || roll < 50 {
            let id = *next_id;
            *next_id += 1;
            let v = format!("v{}", rng.below(1_000_000));
            client
                .execute(
                    &format!("INSERT INTO {table} (id, v) VALUES ($1, $2)"),
                    &[&id, &v],
                )
                .await
                .unwrap();
            history.push(format!("+I,{id},{v}"));
            rows.insert(id, v);
        } else {
            let keys: Vec<i32> = rows.keys().copied().collect();
            let id = keys[rng.below(keys.len() as u64) as usize];
            let old = rows[&id].clone();
            if roll < 80 {
                let v = format!("v{}", rng.below(1_000_000));
                client
                    .execute(
                        &format!("UPDATE {table} SET v = $2 WHERE id = $1"),
                        &[&id, &v],
                    )
                    .await
                    .unwrap();
                history.push(format!("-U,{id},{old}"));
                history.push(format!("+U,{id},{v}"));
                rows.insert(id, v);
            } else {
                client
                    .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id])
                    .await
                    .unwrap();
                history.push(format!("-D,{id},{old}"));
                rows.remove(&id);
            }
        }
    }
}

/// The CDC job: the slot's changes -> "boom" -> `lsn,op,values` lines into the exactly-once
/// file sink.
fn cdc_job(
    env: &StreamExecutionEnvironment,
    url: &str,
    table: &str,
    slot: &str,
    dir: &std::path::Path,
) {
    cdc_job_with(env, url, table, slot, dir, |b| b);
}

/// [`cdc_job`] with more source settings.
fn cdc_job_with(
    env: &StreamExecutionEnvironment,
    url: &str,
    table: &str,
    slot: &str,
    dir: &std::path::Path,
    configure: impl FnOnce(
        actorflow::postgres::PostgresCdcSourceBuilder,
    ) -> actorflow::postgres::PostgresCdcSourceBuilder,
) {
    use actorflow::postgres::PostgresCdcSource;
    use actorflow::transactional::{FileSink, TwoPhaseCommit};
    let source = configure(
        PostgresCdcSource::builder(url)
            .tables(&[table])
            .slot(slot)
            .publication(slot)
            .poll_interval(Duration::from_millis(10))
            .stop_when_idle(Duration::from_millis(1500)),
    )
    .build()
    .unwrap();
    let dir = dir.to_path_buf();
    env.add_source("cdc", source)
        .uid("cdc")
        .map(|c: actorflow::postgres::ChangeEvent| {
            let values: Vec<String> = c
                .values
                .iter()
                .map(|v| v.clone().unwrap_or_default())
                .collect();
            format!("{},{},{}", c.lsn, c.op.short(), values.join(","))
        })
        .name("boom")
        .add_sink("lines", move |_: &TaskInfo| {
            Ok(TwoPhaseCommit::new(FileSink::<String>::new(dir.clone())))
        })
        .uid("lines");
}

/// The committed lines of the file sink's directory, in LSN order (within a transaction, a
/// before image first).
fn committed_changes(dir: &std::path::Path) -> Vec<String> {
    let mut lines: Vec<(u64, u8, String)> = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            let (lsn, rest) = l.split_once(',').unwrap();
            let rank = u8::from(!rest.starts_with("-U"));
            lines.push((lsn.parse().unwrap(), rank, rest.to_string()));
        }
    }
    lines.sort();
    lines.into_iter().map(|(_, _, l)| l).collect()
}

/// Replays committed `op,id,v` lines (in LSN order) onto an empty table, failing on the first
/// line that does not fit what came before: a snapshot row or insert of an existing id (a
/// duplicate), a before image or delete that does not match the current row (a gap).
fn replay(lines: &[String]) -> std::collections::BTreeMap<i32, String> {
    let mut rows = std::collections::BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        let mut parts = l.splitn(3, ',');
        let (op, id, v) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<i32>().unwrap(),
            parts.next().unwrap().to_string(),
        );
        match op {
            "+I" => assert!(rows.insert(id, v).is_none(), "line {i} {l}: a duplicate"),
            "-U" | "-D" => {
                assert_eq!(rows.get(&id), Some(&v), "line {i} {l}: a gap before it");
                if op == "-D" {
                    rows.remove(&id);
                }
            }
            "+U" => assert!(
                rows.insert(id, v).is_some(),
                "line {i} {l}: update of a missing row"
            ),
            other => panic!("line {i}: unknown op {other}"),
        }
    }
    rows
}

/// The initial snapshot then the stream, with no gap and no duplicate between them: 3 000
/// rows exist before the job, 400 random changes run while the snapshot is read (slowly, 100
/// rows a call). A failure inside the snapshot restarts from scratch (no checkpoint can hold
/// a position inside it: they wait), which reads a new snapshot of a recreated slot; a
/// failure after it restores from a checkpoint. Replaying the committed lines gives the
/// table exactly: a row in both the snapshot and the stream would be a duplicate insert, a
/// change in neither a mismatched before image or a different end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_initial_snapshot_then_changes_without_gap_or_duplicate() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("snap");
    let slot = format!("s{}", t.to_lowercase());
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); ALTER TABLE {t} REPLICA IDENTITY FULL;
             INSERT INTO {t} SELECT i, 's' || i FROM generate_series(0, 2999) i"
        ))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("actorflow-cdc-{t}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (env, events) = common::checkpointed_env(
        1,
        Duration::from_millis(20),
        "panic@boom:records=1200,panic@boom:records=3300",
    );
    cdc_job_with(&env, &url, &t, &slot, &dir, |b| {
        b.initial_snapshot().batch_changes(100)
    });
    let job = env.execute_async("cdc snapshot").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if exists {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("no slot: {}", slot_blockers(&client).await);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut rows: std::collections::BTreeMap<i32, String> =
        (0..3000).map(|i| (i, format!("s{i}"))).collect();
    let (mut next_id, mut rng, mut history) = (3000, common::Rng::new(11), Vec::new());
    random_changes(
        &client,
        &t,
        &mut rows,
        &mut next_id,
        &mut rng,
        400,
        &mut history,
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(120), job.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.metrics.restarts, 2);
    let events = events.lock().unwrap().clone();
    let restarts: Vec<Option<u64>> = events
        .iter()
        .filter_map(|e| match e {
            actorflow::checkpoint::JobEvent::Restart {
                from_checkpoint, ..
            } => Some(from_checkpoint.map(|c| c.0)),
            _ => None,
        })
        .collect();
    assert!(
        restarts[0].is_none() && restarts[1].is_some(),
        "inside the snapshot from scratch, after it from a checkpoint: {restarts:?}"
    );
    let lines = committed_changes(&dir);
    assert_eq!(replay(&lines), rows, "the table, exactly");
    // The original rows came from a snapshot (the stream never saw their inserts).
    assert!(
        lines.iter().filter(|l| l.starts_with("+I,")).count() >= 2_500,
        "{} inserts",
        lines.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_across_failures_and_a_restore_equals_the_change_history() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("cdc");
    let slot = format!("s{}", t.to_lowercase());
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); ALTER TABLE {t} REPLICA IDENTITY FULL"
        ))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("actorflow-cdc-{t}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(MemoryStore::new());
    let (mut rows, mut next_id, mut rng, mut history) = (
        std::collections::BTreeMap::new(),
        0,
        common::Rng::new(7),
        Vec::new(),
    );
    // Run 1, with a failure and a restart inside the job.
    let env = common::env(1);
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(FaultPlan::parse("panic@boom:records=150").unwrap());
    env.checkpointing(|c| c.settings.retained = 10_000);
    cdc_job(&env, &url, &t, &slot, &dir);
    let job = env.execute_async("cdc 1").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let exists: bool = client
            .query_one(
                // Created and consistent: changes from now on are decoded.
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL)",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if exists {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("no slot: {}", slot_blockers(&client).await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    random_changes(
        &client,
        &t,
        &mut rows,
        &mut next_id,
        &mut rng,
        300,
        &mut history,
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(120), job.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.metrics.restarts, 1);
    let run1_last = *store.list().unwrap().iter().max().unwrap();
    // Changes while no job runs stay in the slot.
    random_changes(
        &client,
        &t,
        &mut rows,
        &mut next_id,
        &mut rng,
        200,
        &mut history,
    )
    .await;
    // Run 2: a new job restored from the first one's last checkpoint, failing once too.
    let env = common::env(1);
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(actorflow::checkpoint::RestoreFrom::Latest)
        .set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(FaultPlan::parse("panic@boom:records=100").unwrap());
    env.checkpointing(|c| c.settings.retained = 10_000);
    cdc_job(&env, &url, &t, &slot, &dir);
    let r = common::run(&env).await.unwrap();
    assert_eq!(r.metrics.restarts, 1);
    assert_eq!(
        committed_changes(&dir),
        history,
        "every change exactly once, in order"
    );
    // The slot was advanced to the position of the last completed checkpoint (the final
    // one): the end of the last transaction emitted.
    let last_lsn = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .lines()
                .map(|l| l.split(',').next().unwrap().parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap();
    let confirmed: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(confirmed, actorflow::postgres::format_lsn(last_lsn));
    // Run 3: restoring run 1's last checkpoint, older than the slot's position now, would
    // miss run 2's changes: the source refuses.
    let env = common::env(1);
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(actorflow::checkpoint::RestoreFrom::Checkpoint(run1_last))
        .set_restart_strategy(RestartStrategy::None);
    cdc_job(&env, &url, &t, &slot, &dir);
    let err = common::run(&env).await.unwrap_err().to_string();
    assert!(
        err.contains("past the restored position") && err.contains(&format!("slot {slot} is at")),
        "{err}"
    );
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pg_cdc` killed with SIGKILL while changes stream in, then rerun with `--restore latest`
/// twice: its output file equals the table's change history exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_cdc_killed_and_restored_writes_the_change_history_exactly_once() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("pgcdc");
    let slot = format!("s{}", t.to_lowercase());
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); ALTER TABLE {t} REPLICA IDENTITY FULL"
        ))
        .await
        .unwrap();
    let exe = common::example_binary("pg_cdc");
    let work = std::env::temp_dir().join(format!("actorflow-pg-cdc-{t}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("changes.csv");
    let command = |restore: bool, stop_ms: &str| {
        let mut c = std::process::Command::new(&exe);
        c.args(["--postgres", &url, "--table", &t, "--slot", &slot])
            .arg("--output")
            .arg(&out)
            .arg("--checkpoint-dir")
            .arg(work.join("ck"))
            .args(["--checkpoint-interval", "20", "--stop-when-idle", stop_ms])
            .stderr(std::process::Stdio::null());
        if restore {
            c.args(["--restore", "latest"]);
        }
        c
    };
    let (mut rows, mut next_id, mut rng, mut history) = (
        std::collections::BTreeMap::new(),
        0,
        common::Rng::new(11),
        Vec::new(),
    );
    let mut first = command(false, "60000").spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL)",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if ready {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("no slot: {}", slot_blockers(&client).await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    random_changes(
        &client,
        &t,
        &mut rows,
        &mut next_id,
        &mut rng,
        200,
        &mut history,
    )
    .await;
    // Kill -9 once the job has committed some lines.
    let parts = work.join("ck").join("parts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&parts).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    }) {
        assert!(tokio::time::Instant::now() < deadline, "nothing committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    random_changes(
        &client,
        &t,
        &mut rows,
        &mut next_id,
        &mut rng,
        100,
        &mut history,
    )
    .await;
    // A restored run killed again, then one that runs until the table is quiet.
    let mut second = command(true, "60000").spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    random_changes(
        &client,
        &t,
        &mut rows,
        &mut next_id,
        &mut rng,
        100,
        &mut history,
    )
    .await;
    let status = command(true, "1500").status().unwrap();
    assert!(status.success());
    let lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.split_once(',').unwrap().1.to_string())
        .collect();
    assert_eq!(lines, history, "every change exactly once, in order");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&work);
}

/// Values that `COPY`'s text format must escape come back as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_tabs_newlines_backslashes_and_nulls_round_trips() {
    let Some(url) = url() else { return };
    let client = connect(&url).await;
    let t = table("escape");
    let values: Vec<Option<String>> = vec![
        Some("plain".into()),
        Some("tab\there".into()),
        Some("line\nbreak\r\n".into()),
        Some("back\\slash \\N".into()),
        Some(String::new()),
        None,
        Some("ünïcødé ✓".into()),
    ];
    let sink = PostgresSink::<(i64, Option<String>)>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigint, s text)"
        ))
        .table(&t, &["id", "s"])
        .row(|(i, s)| vec![SqlValue::Int(*i), SqlValue::from(s.clone())])
        .build()
        .unwrap();
    let mut s = sink.clone();
    s.open(&TaskInfo::standalone("pg", 0, 1, 128))
        .await
        .unwrap();
    let rows: Vec<(i64, Option<String>)> = values
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as i64, v))
        .collect();
    s.write_batch(Batch::from_values(rows)).await.unwrap();
    let back: Vec<Option<String>> = client
        .query(&format!("SELECT s FROM {t} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(back, values);
}
