//! Shared test helpers: a seeded RNG and a guarded job runner.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actorflow::prelude::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// SplitMix64: small, seeded, reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Runs the environment's job; a hang fails the test instead of blocking CI.
pub(crate) async fn run(env: &StreamExecutionEnvironment) -> Result<JobResult, JobError> {
    match tokio::time::timeout(Duration::from_secs(120), env.execute("test")).await {
        Ok(r) => r,
        Err(_) => panic!("the job did not finish within 120 s"),
    }
}

pub(crate) fn env(parallelism: u32) -> StreamExecutionEnvironment {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    env
}

/// An environment at `parallelism` that checkpoints every `interval`, restarts up to five
/// times 10 ms apart, injects `faults` (a `FaultPlan`, empty for none), and records every job
/// event into the returned list.
pub(crate) fn checkpointed_env(
    parallelism: u32,
    interval: Duration,
    faults: &str,
) -> (
    StreamExecutionEnvironment,
    std::sync::Arc<Mutex<Vec<actorflow::checkpoint::JobEvent>>>,
) {
    let env = env(parallelism);
    let events = std::sync::Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    env.enable_checkpointing(interval)
        .set_restart_strategy(actorflow::restart::RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        })
        .set_job_listener(std::sync::Arc::new(move |e| {
            sink.lock().unwrap().push(e.clone())
        }));
    if !faults.is_empty() {
        env.set_fault_plan(actorflow::fault::FaultPlan::parse(faults).unwrap());
    }
    (env, events)
}

/// How many restarts restored a checkpoint (rather than starting from scratch).
pub(crate) fn restarts_from_checkpoints(events: &[actorflow::checkpoint::JobEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                actorflow::checkpoint::JobEvent::Restart {
                    from_checkpoint: Some(_),
                    ..
                }
            )
        })
        .count()
}

/// Builds an example (a no-op when `cargo test` already did) and returns its path, in the
/// same profile as the running test.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_build_at_a_time = BUILD.lock().unwrap();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--example", name]);
    // The features this test was built with, so the example is the one `cargo test` built
    // (another feature set would rebuild the crate and replace the example's binary).
    let features: Vec<&str> = [
        ("bench-system-alloc", cfg!(feature = "bench-system-alloc")),
        ("kafka", cfg!(feature = "kafka")),
        ("postgres", cfg!(feature = "postgres")),
        ("web", cfg!(feature = "web")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "building example {name} failed"
    );
    profile_dir.join("examples").join(name)
}

/// Runs example `name` with `args` plus `--output OUT`, expects it to succeed, and returns
/// OUT's lines.
pub(crate) fn example_output(name: &str, args: &[&OsStr], out: &Path) -> Vec<String> {
    let run = Command::new(example_binary(name))
        .args(args)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{name}: {run:?}");
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
