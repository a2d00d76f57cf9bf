//! A failing user function ends the job with an error naming the operator, the subtask and the
//! cause; no subtask hangs and nothing is left running. Cancellation is prompt, even when every
//! subtask is blocked on a full lane or a stuck sink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::prelude::*;
use actorflow::{FailureCause, SubtaskStatus};
use common::{env as new_env, run};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

fn failure(err: &JobError) -> &actorflow::SubtaskFailure {
    err.failure()
        .unwrap_or_else(|| panic!("expected a subtask failure, got: {err}"))
}

/// Runs the job through a handle and checks that, once it ended, no subtask is still running.
async fn run_and_check_stopped(env: &StreamExecutionEnvironment) -> Result<JobResult, JobError> {
    let handle = env.execute_async("test").await?;
    let control = handle.control();
    let result = tokio::time::timeout(Duration::from_secs(60), handle.join())
        .await
        .expect("the job hung");
    for s in control.metrics().subtasks {
        assert_ne!(s.status, SubtaskStatus::Running, "{s} still running");
        assert_ne!(s.status, SubtaskStatus::Created, "{s} never ran");
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_map_names_operator_subtask_and_cause() {
    let env = new_env(2);
    env.from_sequence(0, 99_999)
        .map(|x| {
            if x == 70_000 {
                panic!("boom at {x}")
            } else {
                x
            }
        })
        .name("exploding map")
        .rebalance()
        .map(|x| x + 1)
        .discard();
    let err = run_and_check_stopped(&env).await.unwrap_err();
    let f = failure(&err);
    assert_eq!(&*f.operator.name, "exploding map");
    // The sequence source gives 50 000..99 999 to subtask 1; the map is chained to it.
    assert_eq!((f.subtask_index, f.parallelism), (1, 2));
    assert!(
        matches!(&f.cause, FailureCause::Panic(m) if m == "boom at 70000"),
        "{f}"
    );
    assert!(f.operator.location.unwrap().file().ends_with("failures.rs"));
    let text = err.to_string();
    assert!(
        text.contains("'exploding map'")
            && text.contains("subtask 1 (2/2)")
            && text.contains("boom at 70000"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_downstream_of_an_endless_source_stops_the_source() {
    let env = new_env(2);
    env.from_generator(GeneratorSource::new(u64::MAX, |i| i))
        .key_by(|x| x % 7)
        .process_fn(|x, _ctx, out: &mut Collector<u64>| {
            assert!(x < 30_000, "record {x} is too large");
            out.collect(x);
            Ok(())
        })
        .name("checker")
        .discard();
    let err = run_and_check_stopped(&env).await.unwrap_err();
    let f = failure(&err);
    assert_eq!(&*f.operator.name, "checker");
    assert!(
        matches!(&f.cause, FailureCause::Panic(m) if m.contains("is too large")),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_errors_are_reported_with_their_message() {
    let env = new_env(3);
    env.from_collection((0..100u64).collect())
        .rebalance()
        .process_fn(|x, _ctx, out: &mut Collector<u64>| {
            if x == 42 {
                return Err(format!("record {x} is malformed").into());
            }
            out.collect(x);
            Ok(())
        })
        .name("validate")
        .discard();
    let err = run_and_check_stopped(&env).await.unwrap_err();
    let f = failure(&err);
    assert_eq!(&*f.operator.name, "validate");
    assert!(
        matches!(&f.cause, FailureCause::Error(e) if e.to_string() == "record 42 is malformed")
    );
    assert!(std::error::Error::source(f).is_some());
}

struct PanickySink;
impl Sink for PanickySink {
    type Input = u64;
    async fn write_batch(&mut self, batch: Batch<u64>) -> Result<(), UserError> {
        if batch.values().contains(&500) {
            panic!("sink cannot take 500");
        }
        Ok(())
    }
}

struct PanickySource(u64);
impl Source for PanickySource {
    type Output = u64;
    async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
        self.0 += 1;
        if self.0 == 3 {
            panic!("source broke on call {}", self.0);
        }
        out.collect(self.0);
        Ok(SourceStatus::More)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_sources_and_partitioners_are_named_too() {
    let env = new_env(1);
    env.from_sequence(0, 999)
        .add_sink("fragile sink", |_: &TaskInfo| Ok(PanickySink))
        .set_parallelism(2);
    let err = run_and_check_stopped(&env).await.unwrap_err();
    assert_eq!(&*failure(&err).operator.name, "fragile sink", "{err}");

    let env = new_env(2);
    env.add_source("flaky source", |_: &TaskInfo| PanickySource(0))
        .discard();
    let err = run_and_check_stopped(&env).await.unwrap_err();
    let f = failure(&err);
    assert_eq!(&*f.operator.name, "flaky source");
    assert!(matches!(&f.cause, FailureCause::Panic(m) if m == "source broke on call 3"));

    let env = new_env(2);
    env.from_sequence(0, 99)
        .map(|x| x)
        .name("router")
        .partition_custom(|k: &u64, _n| *k as usize, |x| *x)
        .discard();
    let err = run_and_check_stopped(&env).await.unwrap_err();
    let f = failure(&err);
    assert_eq!(&*f.operator.name, "router");
    assert!(
        f.cause
            .to_string()
            .contains("custom partitioner returned channel"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_source_that_cannot_connect_fails_with_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let env = new_env(1);
    env.socket_text_stream("127.0.0.1", port).discard();
    let err = run(&env).await.unwrap_err();
    let f = failure(&err);
    assert_eq!(&*f.operator.name, "Socket Stream");
    assert!(
        f.cause
            .to_string()
            .contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{f}"
    );
}

/// A sink that signals its first batch and then never completes a write.
struct StuckSink(Arc<Notify>);
impl Sink for StuckSink {
    type Input = u64;
    async fn write_batch(&mut self, _: Batch<u64>) -> Result<(), UserError> {
        self.0.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_fully_backpressured_job_through_priority_lanes() {
    let env = new_env(2);
    // Killing actors is the fallback after this timeout; an hour means only the priority
    // lanes can stop this job in time.
    env.set_cancel_timeout(Duration::from_secs(3600));
    let first = Arc::new(Notify::new());
    let signal = first.clone();
    env.from_generator(GeneratorSource::new(u64::MAX, |i| i))
        .map(|x| x + 1)
        .rebalance()
        .add_sink("stuck", move |_: &TaskInfo| Ok(StuckSink(signal.clone())));
    let handle = env.execute_async("endless").await.unwrap();
    first.notified().await;
    let control = handle.control();
    handle.cancel();
    let result = tokio::time::timeout(Duration::from_secs(60), handle.join())
        .await
        .expect("cancel did not stop the job");
    assert!(matches!(result, Err(JobError::Cancelled)), "{result:?}");
    for s in control.metrics().subtasks {
        assert_eq!(s.status, SubtaskStatus::Cancelled, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_the_job_ended_is_harmless() {
    let env = new_env(2);
    let out = env.from_sequence(1, 10).collect();
    let handle = env.execute_async("short").await.unwrap();
    let control = handle.control();
    handle.join().await.unwrap();
    control.cancel();
    assert_eq!(out.len(), 10);
}

#[test]
fn a_side_output_tag_reused_with_another_type_is_named_in_the_error() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1);
    let as_text = OutputTag::<String>::new("side");
    let as_number = OutputTag::<u64>::new("side");
    let main = env.from_sequence(1, 3).process(
        move |x: u64, _: &mut Context<'_>, out: &mut Collector<u64>| {
            out.output(&as_text, x.to_string());
            out.collect(x);
            Ok(())
        },
    );
    let _side = main.get_side_output(&as_number).collect();
    let err = env.execute_blocking("tags").unwrap_err().to_string();
    assert!(
        err.contains("side output 'side' was emitted with records of type `alloc::string::String`")
            && err.contains("reads it as `u64`")
            && err.contains("Process"),
        "{err}"
    );
}
