//! An invalid pipeline returns an `Err` naming what is wrong and where; nothing runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::prelude::*;
use actorflow::{BuildError, WriteMode};
use common::env as new_env;
use std::time::Duration;

async fn build_error(env: &StreamExecutionEnvironment) -> BuildError {
    match env.execute("invalid").await {
        Err(JobError::Build(e)) => e,
        other => panic!("expected a build error, got {other:?}"),
    }
}

fn here() -> &'static str {
    "tests/build_errors.rs"
}

#[tokio::test]
async fn zero_parallelism_names_the_operator_and_line() {
    let env = new_env(2);
    env.from_sequence(0, 9)
        .map(|x| x)
        .name("squash")
        .set_parallelism(0)
        .discard();
    let err = build_error(&env).await;
    assert!(matches!(
        err,
        BuildError::InvalidParallelism { value: 0, .. }
    ));
    let text = err.to_string();
    assert!(text.contains("'squash'") && text.contains(here()), "{text}");

    let env = new_env(0);
    env.from_sequence(0, 9).discard();
    assert!(
        matches!(build_error(&env).await, BuildError::InvalidConfig(m) if m.contains("parallelism"))
    );
}

#[tokio::test]
async fn missing_input_file_is_reported_before_running() {
    let env = new_env(2);
    let missing = std::env::temp_dir().join("actorflow-no-such-file.txt");
    env.read_text_file(&missing).discard();
    let err = build_error(&env).await;
    let text = err.to_string();
    assert!(matches!(err, BuildError::Setup { .. }), "{text}");
    assert!(
        text.contains("actorflow-no-such-file.txt") && text.contains("Text File Source"),
        "{text}"
    );
}

#[tokio::test]
async fn operator_without_a_sink_is_named() {
    let env = new_env(1);
    let src = env.from_sequence(0, 9);
    src.map(|x| x * 2).name("forgotten");
    src.discard();
    let err = build_error(&env).await;
    let text = err.to_string();
    assert!(matches!(err, BuildError::NoPathToSink { .. }));
    assert!(
        text.contains("'forgotten'") && text.contains(here()),
        "{text}"
    );

    let env = new_env(1);
    env.from_sequence(0, 9).map(|x| x);
    assert!(matches!(
        build_error(&env).await,
        BuildError::NoPathToSink { .. }
    ));

    let env = new_env(1);
    assert!(matches!(build_error(&env).await, BuildError::EmptyPipeline));
}

#[tokio::test]
async fn max_parallelism_below_parallelism() {
    let env = new_env(1);
    env.from_sequence(0, 9)
        .key_by(|x| *x)
        .sum(|x| x)
        .name("counter")
        .set_parallelism(8)
        .set_max_parallelism(4)
        .discard();
    let err = build_error(&env).await;
    assert!(matches!(
        err,
        BuildError::MaxParallelismBelowParallelism {
            parallelism: 8,
            max_parallelism: 4,
            ..
        }
    ));
    assert!(err.to_string().contains("'counter'"));

    let env = new_env(1);
    env.set_max_parallelism(40_000);
    env.from_sequence(0, 9).discard();
    assert!(matches!(
        build_error(&env).await,
        BuildError::InvalidConfig(_)
    ));
}

#[tokio::test]
async fn api_misuse_points_at_the_call() {
    let env = new_env(2);
    let a = env.from_sequence(0, 9);
    a.union(&env.from_sequence(10, 19))
        .set_parallelism(3)
        .discard();
    let err = build_error(&env).await;
    let text = err.to_string();
    assert!(matches!(err, BuildError::Api { .. }), "{text}");
    assert!(
        text.contains("set_parallelism") && text.contains(here()),
        "{text}"
    );

    let env = new_env(2);
    env.from_sequence(0, 9)
        .set_parallelism(1)
        .forward()
        .map(|x| x)
        .set_parallelism(2)
        .discard();
    assert!(matches!(
        build_error(&env).await,
        BuildError::ForwardParallelismMismatch { .. }
    ));

    let env = new_env(2);
    env.from_collection(vec![1u8]).set_parallelism(2).discard();
    assert!(matches!(
        build_error(&env).await,
        BuildError::SourceParallelism { max: 1, .. }
    ));

    let env = new_env(1);
    env.from_sequence(0, 9)
        .uid("same")
        .map(|x| x)
        .uid("same")
        .discard();
    assert!(
        matches!(build_error(&env).await, BuildError::DuplicateUid { uid, .. } if uid == "same")
    );

    let env = new_env(1);
    env.set_batch_size(100).set_lane_capacity(10);
    env.from_sequence(0, 9).discard();
    assert!(
        matches!(build_error(&env).await, BuildError::InvalidConfig(m) if m.contains("lane capacity"))
    );
}

#[tokio::test]
async fn stream_used_after_execute_is_refused() {
    let env = new_env(1);
    let src = env.from_sequence(0, 9);
    src.discard();
    env.execute("first").await.unwrap();
    src.map(|x| x).discard();
    let err = build_error(&env).await;
    assert!(err.to_string().contains("already executed"), "{err}");
}

#[tokio::test]
async fn existing_output_and_bad_rate_limit() {
    let dir = std::env::temp_dir().join(format!("actorflow-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.txt");
    std::fs::write(&out, "keep me\n").unwrap();
    let env = new_env(1);
    env.from_sequence(0, 9)
        .write_as_text(&out, WriteMode::NoOverwrite);
    let err = build_error(&env).await;
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "keep me\n",
        "nothing was overwritten"
    );

    let env = new_env(1);
    env.from_sequence(0, 9)
        .write_as_text(&out, WriteMode::Overwrite);
    env.execute("overwrite").await.unwrap();
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        written,
        (0..10).map(|i| format!("{i}\n")).collect::<String>()
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let env = new_env(1);
    env.from_generator(GeneratorSource::new(10, |i| i).with_rate_limit(0.0))
        .discard();
    assert!(build_error(&env).await.to_string().contains("rate limit"));
}

#[tokio::test]
async fn batch_mode_refuses_unbounded_sources() {
    let env = new_env(1);
    env.set_runtime_mode(actorflow::RuntimeMode::Batch);
    env.socket_text_stream("127.0.0.1", 9).discard();
    let err = build_error(&env).await;
    assert!(
        matches!(err, BuildError::UnboundedSourceInBatchMode { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Socket Stream"), "{err}");
}

/// `execute_blocking` inside a tokio runtime returns an error that says what to call instead
/// (tokio would panic).
#[tokio::test]
async fn execute_blocking_inside_a_runtime_is_an_error_not_a_panic() {
    let env = StreamExecutionEnvironment::new();
    env.from_collection(vec![1u64]).print();
    let err = env.execute_blocking("inside").unwrap_err().to_string();
    assert!(
        err.contains("inside a tokio runtime") && err.contains(".await"),
        "{err}"
    );
    // And `execute(..).await` works there.
    env.execute("inside").await.unwrap();
}

/// Window settings take a `Duration` or milliseconds, and their errors are real
/// `std::error::Error`s that `?` turns into a `Box<dyn Error>`.
#[test]
fn window_sizes_take_durations_and_their_errors_are_std_errors() {
    use actorflow::window::{SessionWindows, SlidingWindows, TumblingWindows};
    fn build() -> Result<(), Box<dyn std::error::Error>> {
        let a = TumblingWindows::event_time(Duration::from_secs(5))?;
        let b = TumblingWindows::event_time(5_000)?;
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let s = SlidingWindows::event_time(Duration::from_secs(10), Duration::from_millis(500))?;
        assert_eq!(
            format!("{s:?}"),
            format!("{:?}", SlidingWindows::event_time(10_000, 500)?)
        );
        let _: SessionWindows<u64> = SessionWindows::event_time(Duration::from_secs(1))?;
        TumblingWindows::event_time(Duration::ZERO)?;
        Ok(())
    }
    let err = build().unwrap_err().to_string();
    assert!(err.contains("tumbling windows need size > 0"), "{err}");
}

/// With checkpointing, the plain text sink refuses to start (it cannot be exactly once) and
/// names the exactly-once file sink; nothing is written.
#[tokio::test]
async fn write_as_text_with_checkpointing_names_the_exactly_once_sink() {
    let out = std::env::temp_dir().join(format!("actorflow-text-ck-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let env = new_env(1);
    env.enable_checkpointing(Duration::from_millis(50));
    env.from_collection(vec![1u64, 2, 3])
        .write_as_text(&out, WriteMode::Overwrite);
    let e = build_error(&env).await.to_string();
    assert!(
        e.contains("cannot write exactly once") && e.contains("TwoPhaseCommit::new(FileSink"),
        "{e}"
    );
    assert!(!out.exists(), "nothing was written");
}

/// `window_all(..)` with a parallelism above 1 names the non-parallel operator and the way to
/// parallel windows, instead of suggesting a higher max parallelism.
#[tokio::test]
async fn window_all_at_parallelism_4_says_it_is_non_parallel() {
    use actorflow::window::TumblingWindows;
    let env = new_env(2);
    env.from_collection(vec![1u64, 2, 3])
        .window_all(TumblingWindows::event_time(10).unwrap())
        .reduce(|a, b| a + b)
        .set_parallelism(4)
        .discard();
    let e = build_error(&env).await;
    assert!(
        matches!(e, BuildError::NonParallelOperator { parallelism: 4, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("non-parallel") && msg.contains("key_by"),
        "{msg}"
    );
    assert!(!msg.contains("raise the max parallelism"), "{msg}");
}
