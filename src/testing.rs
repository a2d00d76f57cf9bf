//! Helpers for tests and documentation examples.

use crate::datastream::DataStream;
use crate::env::StreamExecutionEnvironment;
use actorflow_runtime::{Data, JobError};

/// Builds a pipeline with `build` on a fresh environment of parallelism 1, runs it, and
/// returns what reached the end of the returned stream, in order.
///
/// # Panics
///
/// If the job fails; it is meant for examples and tests.
///
/// # Examples
///
/// ```
/// let out = actorflow::testing::example(|env| env.from_sequence(1, 3).map(|x| x * x));
/// assert_eq!(out, vec![1, 4, 9]);
/// ```
pub fn example<T: Data>(
    build: impl FnOnce(&StreamExecutionEnvironment) -> DataStream<T>,
) -> Vec<T> {
    example_with(1, build)
}

/// Like [`example`] at the given default parallelism. With more than one subtask the output
/// order is not deterministic.
///
/// # Panics
///
/// If the job fails.
pub fn example_with<T: Data>(
    parallelism: u32,
    build: impl FnOnce(&StreamExecutionEnvironment) -> DataStream<T>,
) -> Vec<T> {
    match try_example(parallelism, build) {
        Ok(v) => v,
        #[allow(clippy::panic)]
        Err(e) => panic!("example job failed: {e}"),
    }
}

/// Like [`example_with`], returning the job's error instead of panicking.
///
/// # Errors
///
/// The job's error.
pub fn try_example<T: Data>(
    parallelism: u32,
    build: impl FnOnce(&StreamExecutionEnvironment) -> DataStream<T>,
) -> Result<Vec<T>, JobError> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let out = build(&env).collect();
    env.execute_blocking("example")?;
    Ok(out.take())
}
