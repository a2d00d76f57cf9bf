//! Recovery of the `window_agg` example as a separate process: it is killed (SIGKILL, or the
//! `exit` fault, which ends the process at once the same way) at seeded moments, then run
//! again with `--restore latest`; the final files must equal an uninterrupted run's, byte for
//! byte, with aligned and unaligned checkpoints.
//!
//! The kill moments come from a seeded generator: they change *where* the job dies, never
//! what the test expects, so the test cannot pass or fail by timing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Rng, example_binary};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A seeded input with out-of-order and late records: 40 keys, 60 000 lines.
fn write_input(path: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    let mut t = 0i64;
    for _ in 0..60_000 {
        t += rng.below(3) as i64;
        let ts = if rng.below(5) == 0 {
            t - rng.below(80) as i64
        } else {
            t
        };
        let value = rng.below(201) as i64 - 100;
        text.push_str(&format!("k{},{ts},{value}\n", rng.below(40)));
    }
    std::fs::write(path, text).unwrap();
}

struct Case {
    dir: PathBuf,
    input: PathBuf,
}

impl Case {
    fn new(name: &str, seed: u64) -> Case {
        let dir =
            std::env::temp_dir().join(format!("actorflow-recovery-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("events.csv");
        write_input(&input, seed);
        Case { dir, input }
    }

    /// The window_agg command: punctuated watermarks, so lateness is deterministic.
    fn command<S: AsRef<std::ffi::OsStr>>(&self, output: &str, extra: &[S]) -> Command {
        let mut cmd = Command::new(example_binary("window_agg"));
        cmd.arg("--input")
            .arg(&self.input)
            .arg("--output")
            .arg(self.dir.join(output))
            .args([
                "--window",
                "tumbling",
                "--size",
                "100",
                "--ooo",
                "30",
                "--watermark",
                "punctuated",
                "--parallelism",
                "2",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Flags of a checkpointed run into `ck/` (every 20 ms, source at 60 000 lines/s), then
    /// `extra`.
    fn checkpointed(&self, extra: &[&str]) -> Vec<String> {
        let ck = self.dir.join("ck");
        let mut args: Vec<String> = vec![
            "--checkpoint-dir".into(),
            ck.to_string_lossy().into_owned(),
            "--checkpoint-interval".into(),
            "20".into(),
            "--source-rate".into(),
            "60000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs the reference, then a checkpointed run that the `exit` fault `spec` ends.
    fn exit_at(&self, spec: &str) -> Output {
        check(
            self.command::<&str>("ref.csv", &[]).output().unwrap(),
            "the reference run",
        );
        self.command("out.csv", &self.checkpointed(&["--fault", spec]))
            .output()
            .unwrap()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the checkpointed command, killing it after each of `kills` (ms after its start),
/// then once more to the end; returns the number of runs actually killed.
fn run_with_kills(case: &Case, flags: &[&str], kills: &[u64]) -> usize {
    let ck = case.dir.join("ck");
    let ck = ck.to_str().unwrap();
    let metrics = case.dir.join("metrics.jsonl");
    let metrics = metrics.to_str().unwrap();
    let mut base = vec![
        "--checkpoint-dir",
        ck,
        "--checkpoint-interval",
        "25",
        "--source-rate",
        "60000",
        "--metrics-file",
        metrics,
    ];
    base.extend_from_slice(flags);
    let mut killed = 0;
    for (i, at) in kills.iter().enumerate() {
        let mut args = base.clone();
        if i > 0 {
            args.extend(["--restore", "latest"]);
        }
        let mut child = case.command("out.csv", &args).spawn().unwrap();
        // The moment of death is seeded; whether it comes before the end does not matter.
        // This thread runs no tokio runtime: the sleep chooses when to kill, it does not wait
        // for anything to happen.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(*at));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    let mut args = base.clone();
    args.extend(["--restore", "latest"]);
    check(
        case.command("out.csv", &args).output().unwrap(),
        "the last restore",
    );
    killed
}

fn kill_and_restore(name: &str, seed: u64, flags: &[&str]) {
    let case = Case::new(name, seed);
    check(
        case.command::<&str>("ref.csv", &[]).output().unwrap(),
        "the reference run",
    );
    let mut rng = Rng::new(seed);
    let kills: Vec<u64> = (0..3).map(|_| 150 + rng.below(500)).collect();
    let killed = run_with_kills(&case, flags, &kills);
    assert!(killed >= 1, "no run was killed: the input is too small");
    assert!(
        case.read("out.csv") == case.read("ref.csv"),
        "{name}: the windows differ from the uninterrupted run"
    );
    assert!(
        case.read("out.csv.late") == case.read("ref.csv.late"),
        "{name}: the late records differ from the uninterrupted run"
    );
    let metrics = String::from_utf8(case.read("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains(r#""event":"checkpoint_completed""#),
        "{metrics}"
    );
    if flags.contains(&"--unaligned") {
        assert!(metrics.contains(r#""kind":"unaligned""#), "{metrics}");
    }
    let _ = std::fs::remove_dir_all(&case.dir);
}

#[test]
fn sigkill_and_restore_latest_reproduces_the_output_aligned() {
    kill_and_restore("aligned", 11, &[]);
}

#[test]
fn sigkill_and_restore_latest_reproduces_the_output_unaligned() {
    kill_and_restore(
        "unaligned",
        12,
        &["--unaligned", "--operator-delay-us", "5"],
    );
}

#[test]
fn sigkill_with_an_alignment_timeout_reproduces_the_output() {
    kill_and_restore(
        "timeout",
        13,
        &["--alignment-timeout", "2", "--operator-delay-us", "5"],
    );
}

/// The `exit` fault ends the process inside a checkpoint (after one window subtask took it,
/// before the checkpoint completes); the same command with `--restore latest` finishes the
/// job exactly.
#[test]
fn exit_inside_a_checkpoint_then_restore_latest_is_exact() {
    let case = Case::new("exit", 14);
    let out = case.exit_at("exit@window#1:checkpoint=4");
    assert_eq!(
        out.status.code(),
        Some(137),
        "the exit fault ends the process"
    );
    check(
        case.command("out.csv", &case.checkpointed(&["--restore", "latest"]))
            .output()
            .unwrap(),
        "the restore",
    );
    assert!(case.read("out.csv") == case.read("ref.csv"));
    assert!(case.read("out.csv.late") == case.read("ref.csv.late"));
    let _ = std::fs::remove_dir_all(&case.dir);
}

fn distinct_lines(bytes: &[u8]) -> std::collections::BTreeSet<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A damaged newest checkpoint is skipped for the previous one. The output committed by the
/// damaged checkpoint is produced again (exactly-once output assumes that a completed
/// checkpoint stays readable, as in Flink), so only the distinct lines are compared.
#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one() {
    let case = Case::new("corrupt", 15);
    let out = case.exit_at("exit@window#0:checkpoint=6");
    assert_eq!(out.status.code(), Some(137));
    let last = case.checkpointed(&["--restore", "latest", "--fault", "corrupt-latest"]);
    let out = case.command("out.csv", &last).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    check(out, "the restore");
    assert!(stderr.contains("damaged checkpoint 5"), "{stderr}");
    assert!(
        stderr.contains("skipping a damaged checkpoint"),
        "the fallback is logged: {stderr}"
    );
    assert_eq!(
        distinct_lines(&case.read("out.csv")),
        distinct_lines(&case.read("ref.csv"))
    );
    assert_eq!(
        distinct_lines(&case.read("out.csv.late")),
        distinct_lines(&case.read("ref.csv.late"))
    );
    let _ = std::fs::remove_dir_all(&case.dir);
}
