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
            // A run killed before its first checkpoint leaves nothing to restore.
            args.extend(["--restore", "latest-or-fresh"]);
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
    args.extend(["--restore", "latest-or-fresh"]);
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

/// A damaged newest *completed* checkpoint is not silently skipped: sinks may have committed
/// its output, so restoring an older one would repeat it. `--restore latest` refuses with an
/// error that names the damage and the way on; restoring the older checkpoint explicitly
/// then works, with a WARN that committed output may be produced again (so only the distinct
/// lines are compared).
#[test]
fn a_damaged_latest_checkpoint_is_refused_and_an_explicit_older_restore_works() {
    let case = Case::new("corrupt", 15);
    let out = case.exit_at("exit@window#0:checkpoint=4");
    assert_eq!(out.status.code(), Some(137));
    let last = case.checkpointed(&["--restore", "latest", "--fault", "corrupt-latest"]);
    let out = case.command("out.csv", &last).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a damaged store was restored: {stderr}"
    );
    assert!(stderr.contains("damaged checkpoint 3"), "{stderr}");
    assert!(
        stderr.contains("newest completed checkpoint 3 is unusable")
            && stderr.contains("The newest older checkpoint that verifies is 2"),
        "the error says what was found and how to go on: {stderr}"
    );
    assert!(
        !case.dir.join("out.csv").exists(),
        "a refused restore wrote output"
    );
    let explicit = case.checkpointed(&["--restore", "2"]);
    let out = case.command("out.csv", &explicit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    check(out, "the explicit restore");
    assert!(
        stderr.contains("older than the newest completed checkpoint 3"),
        "the explicit fallback is a WARN: {stderr}"
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

/// Restoring a store that never completed a checkpoint: `latest` refuses (asking to restore
/// never turns into a fresh start), `latest-or-fresh` starts fresh and is exact.
#[test]
fn restoring_an_empty_store_refuses_unless_fresh_is_allowed() {
    let case = Case::new("empty", 16);
    check(
        case.command::<&str>("ref.csv", &[]).output().unwrap(),
        "the reference run",
    );
    let out = case
        .command("out.csv", &case.checkpointed(&["--restore", "latest"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "an empty store was restored: {stderr}"
    );
    assert!(
        stderr.contains("holds no completed checkpoint") && stderr.contains("latest-or-fresh"),
        "{stderr}"
    );
    let out = case
        .command(
            "out.csv",
            &case.checkpointed(&["--restore", "latest-or-fresh"]),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    check(out, "latest-or-fresh on an empty store");
    assert!(
        stderr.contains("never completed a checkpoint: starting from scratch"),
        "{stderr}"
    );
    assert!(case.read("out.csv") == case.read("ref.csv"));
    let _ = std::fs::remove_dir_all(&case.dir);
}

/// One way to damage a killed job's checkpoint store.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// 200 seeded random bytes of sled's `db` file flipped.
    FlipDbBytes,
    /// sled's `db` file cut to half its length.
    TruncateDb,
    /// sled's `db` file deleted.
    DeleteDb,
    /// Every file of the store deleted but the directory (a wiped store).
    DeleteAllButHead,
    /// The head record (the store's record of its newest completed checkpoint) deleted.
    DeleteHead,
    /// The head record's bytes flipped.
    FlipHead,
    /// The newest checkpoint removed through the store.
    RemoveNewest,
    /// The newest checkpoint's first blob replaced by the same blob of the previous one.
    BlobFromAnotherCheckpoint,
    /// A crash between a manifest commit and the head record: a newer checkpoint is published
    /// (pointing to a blob never written), the head record still names the completed one.
    NewerThanHeadBroken,
}

fn flip_bytes(path: &Path, count: usize, seed: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut rng = Rng::new(seed);
    for _ in 0..count {
        let i = rng.below(bytes.len() as u64) as usize;
        bytes[i] ^= 1 + rng.below(255) as u8;
    }
    std::fs::write(path, bytes).unwrap();
}

fn damage(snapshots: &Path, how: Damage) {
    use actorflow::snapshot::{HEAD_FILE, SledStore, SnapshotStore};
    let db = snapshots.join("db");
    match how {
        Damage::FlipDbBytes => flip_bytes(&db, 200, 99),
        Damage::TruncateDb => {
            let len = std::fs::metadata(&db).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            f.set_len(len / 2).unwrap();
        }
        Damage::DeleteDb => std::fs::remove_file(&db).unwrap(),
        Damage::DeleteAllButHead => {
            for e in std::fs::read_dir(snapshots).unwrap() {
                let p = e.unwrap().path();
                if p.file_name().is_some_and(|n| n == HEAD_FILE) {
                    continue;
                }
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).unwrap();
                } else {
                    std::fs::remove_file(&p).unwrap();
                }
            }
        }
        Damage::DeleteHead => std::fs::remove_file(snapshots.join(HEAD_FILE)).unwrap(),
        Damage::FlipHead => flip_bytes(&snapshots.join(HEAD_FILE), 3, 7),
        Damage::RemoveNewest => {
            let store = SledStore::open(snapshots).unwrap();
            let newest = store.list().unwrap()[0];
            store.remove(newest).unwrap();
        }
        Damage::BlobFromAnotherCheckpoint => {
            let store = SledStore::open(snapshots).unwrap();
            let ids = store.list().unwrap();
            let (newest, previous) = (ids[0], ids[1]);
            let old = store.load(previous).unwrap();
            let name = store.load(newest).unwrap().manifest.blobs[0].name.clone();
            store.put_blob(newest, &name, &old.blobs[&name]).unwrap();
        }
        Damage::NewerThanHeadBroken => {
            let head = std::fs::read(snapshots.join(HEAD_FILE)).unwrap();
            let store = SledStore::open(snapshots).unwrap();
            let newest = store.list().unwrap()[0];
            let mut manifest = store.load(newest).unwrap().manifest;
            manifest.id = actorflow::actorflow_runtime::CheckpointId(newest.0 + 1);
            manifest.blobs[0].name = "never-written".into();
            store.commit(&manifest).unwrap();
            drop(store);
            std::fs::write(snapshots.join(HEAD_FILE), head).unwrap();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Every kind of damage to a killed job's store, then `--restore latest`: the job either
/// produces exactly the uninterrupted run's output or refuses to start with an error that
/// says the store is damaged — never an exit 0 with repeated or missing output.
#[test]
fn a_damaged_store_is_never_restored_as_empty() {
    let case = Case::new("damage", 17);
    let out = case.exit_at("exit@window#0:checkpoint=4");
    assert_eq!(out.status.code(), Some(137));
    let reference = case.read("ref.csv");
    let kinds = [
        Damage::FlipDbBytes,
        Damage::TruncateDb,
        Damage::DeleteDb,
        Damage::DeleteAllButHead,
        Damage::DeleteHead,
        Damage::FlipHead,
        Damage::RemoveNewest,
        Damage::BlobFromAnotherCheckpoint,
        Damage::NewerThanHeadBroken,
    ];
    let mut outcomes = Vec::new();
    for how in kinds {
        let dir = case.dir.join(format!("{how:?}"));
        copy_dir(&case.dir.join("ck"), &dir);
        damage(&dir.join("snapshots"), how);
        let output = format!("{how:?}.csv");
        let mut args: Vec<String> = case.checkpointed(&["--restore", "latest"]);
        args[1] = dir.to_string_lossy().into_owned();
        let out = case.command(&output, &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            assert!(
                case.read(&output) == reference,
                "{how:?}: exit 0 but the output differs from the uninterrupted run: {stderr}"
            );
            outcomes.push(format!("{how:?}: restored exactly"));
        } else {
            assert!(
                stderr.contains("cannot restore") || stderr.contains("snapshot store"),
                "{how:?}: failed without saying the store is damaged: {stderr}"
            );
            assert!(
                !case.dir.join(&output).exists(),
                "{how:?}: a refused restore wrote output"
            );
            outcomes.push(format!("{how:?}: refused"));
        }
        if matches!(how, Damage::NewerThanHeadBroken) {
            assert!(
                outcomes
                    .last()
                    .is_some_and(|o| o.ends_with("restored exactly")),
                "a damaged checkpoint newer than the head record falls back to the completed one: {stderr}"
            );
            assert!(stderr.contains("never completed"), "{stderr}");
        }
        if matches!(
            how,
            Damage::DeleteHead | Damage::FlipHead | Damage::RemoveNewest | Damage::DeleteAllButHead
        ) {
            assert!(
                outcomes.last().is_some_and(|o| o.ends_with("refused")),
                "{how:?} must be refused: {stderr}"
            );
        }
    }
    eprintln!("damage outcomes: {outcomes:#?}");
    let _ = std::fs::remove_dir_all(&case.dir);
}
