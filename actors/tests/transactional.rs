//! The exactly-once file sink on its own, driven by hand through the two-phase-commit
//! protocol: pre-commit at a checkpoint, commit on completion, a stale generation refused,
//! pending transactions of a restored snapshot committed again (idempotently).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow_runtime::operators::operator::{Generation, TaskInfo};
use actorflow_runtime::operators::transactional::{FileSink, TwoPhaseCommit, committed_parts};
use actorflow_runtime::{Batch, CheckpointId, Sink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("actorflow-filesink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn info(generation: u64, current: &Arc<AtomicU64>, checkpointing: bool) -> TaskInfo {
    let mut info = TaskInfo::standalone("file sink", 0, 1, 128);
    info.generation = Generation::new(generation, current.clone());
    info.checkpointing = checkpointing;
    info
}

fn committed_lines(d: &Path) -> Vec<String> {
    let mut lines: Vec<String> = committed_parts(d)
        .unwrap()
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

fn hidden(d: &Path, suffix: &str) -> usize {
    std::fs::read_dir(d)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.ends_with(suffix))
        })
        .count()
}

fn batch(values: &[&str]) -> Batch<String> {
    Batch::from_values(values.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn pre_commit_commit_stale_generation_and_restore() {
    let d = dir("protocol");
    let current = Arc::new(AtomicU64::new(0));
    let mut sink = TwoPhaseCommit::new(FileSink::<String>::new(&d));
    sink.open(&info(0, &current, true)).await.unwrap();

    // Checkpoint 1: written, pre-committed (pending, invisible), then committed.
    sink.write_batch(batch(&["a", "b"])).await.unwrap();
    assert_eq!(hidden(&d, ".inprogress"), 1);
    let mut s1 = OperatorState::default();
    sink.snapshot_state(CheckpointId(1), &mut s1).await.unwrap();
    assert_eq!(hidden(&d, ".pending"), 1);
    assert!(
        committed_lines(&d).is_empty(),
        "nothing visible before completion"
    );
    sink.notify_checkpoint_complete(CheckpointId(1))
        .await
        .unwrap();
    assert_eq!(committed_lines(&d), vec!["a", "b"]);

    // Checkpoint 2 is pre-committed, then the job restarts before it completes: this stale
    // instance must not commit it.
    sink.write_batch(batch(&["c"])).await.unwrap();
    let mut s2 = OperatorState::default();
    sink.snapshot_state(CheckpointId(2), &mut s2).await.unwrap();
    current.store(1, Ordering::SeqCst);
    let refused = sink.notify_checkpoint_complete(CheckpointId(2)).await;
    assert!(refused.is_err(), "a stale generation committed");
    assert_eq!(committed_lines(&d), vec!["a", "b"]);
    assert_eq!(hidden(&d, ".pending"), 1);

    // The restarted instance restores checkpoint 2: its pending part is committed, and
    // committing it again (another restore of the same snapshot) changes nothing.
    for _ in 0..2 {
        let mut restored = TwoPhaseCommit::new(FileSink::<String>::new(&d));
        let mut restored_info = info(1, &current, true);
        restored_info.restored_from = Some(CheckpointId(2));
        restored.open(&restored_info).await.unwrap();
        restored
            .restore_state(RestoredState {
                state: s2.clone(),
                same_index: Some(0),
            })
            .await
            .unwrap();
        assert_eq!(committed_lines(&d), vec!["a", "b", "c"]);
        assert_eq!(hidden(&d, ".pending"), 0);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn without_checkpointing_the_sink_commits_at_the_end() {
    let d = dir("plain");
    let current = Arc::new(AtomicU64::new(0));
    let mut sink = TwoPhaseCommit::new(FileSink::<String>::new(&d));
    sink.open(&info(0, &current, false)).await.unwrap();
    sink.write_batch(batch(&["x"])).await.unwrap();
    sink.write_batch(batch(&["y"])).await.unwrap();
    assert!(committed_lines(&d).is_empty());
    sink.finish().await.unwrap();
    assert_eq!(committed_lines(&d), vec!["x", "y"]);
    let _ = std::fs::remove_dir_all(&d);
}

/// A fresh start into a directory holding committed output of an earlier attempt is refused
/// (adding to it would repeat that output), unless the sink is told to discard it; a restored
/// attempt continues the directory.
#[tokio::test]
async fn a_fresh_start_refuses_committed_output_of_an_earlier_attempt() {
    let d = dir("fresh");
    let current = Arc::new(AtomicU64::new(0));
    let mut first = TwoPhaseCommit::new(FileSink::<String>::new(&d));
    first.open(&info(0, &current, false)).await.unwrap();
    first.write_batch(batch(&["old"])).await.unwrap();
    first.finish().await.unwrap();
    assert_eq!(committed_lines(&d), vec!["old"]);

    let mut fresh = TwoPhaseCommit::new(FileSink::<String>::new(&d));
    let err = fresh
        .open(&info(0, &current, true))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds 1 committed part file(s) of an earlier attempt")
            && err.contains("discard"),
        "{err}"
    );
    assert_eq!(committed_lines(&d), vec!["old"], "nothing was touched");

    let mut restored = TwoPhaseCommit::new(FileSink::<String>::new(&d));
    let mut restored_info = info(0, &current, true);
    restored_info.restored_from = Some(CheckpointId(1));
    restored.open(&restored_info).await.unwrap();

    let mut discarding = TwoPhaseCommit::new(FileSink::<String>::new(&d).discard_existing(true));
    discarding.open(&info(0, &current, false)).await.unwrap();
    assert!(
        committed_lines(&d).is_empty(),
        "the old output was discarded"
    );
    discarding.write_batch(batch(&["new"])).await.unwrap();
    discarding.finish().await.unwrap();
    assert_eq!(committed_lines(&d), vec!["new"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn in_progress_files_of_earlier_attempts_are_removed_when_a_subtask_opens() {
    let d = dir("stale-inprogress");
    std::fs::create_dir_all(&d).unwrap();
    let pid = std::process::id();
    let killed_run = d.join(".part-0-1-abc-g0-000001.inprogress");
    let before_restart = d.join(format!(".part-3-{pid}-abc-g0-000004.inprogress"));
    let live = d.join(format!(".part-1-{pid}-def-g2-000001.inprogress"));
    let pending = d.join(".part-0-1-abc-g0-000000.pending");
    for f in [&killed_run, &before_restart, &live, &pending] {
        std::fs::write(f, "x\n").unwrap();
    }
    let current = Arc::new(AtomicU64::new(2));
    let mut sink = TwoPhaseCommit::new(FileSink::<String>::new(&d));
    let mut restored_info = info(2, &current, true);
    restored_info.restored_from = Some(CheckpointId(7));
    sink.open(&restored_info).await.unwrap();
    assert!(
        !killed_run.exists(),
        "another process's in-progress file stayed"
    );
    assert!(
        !before_restart.exists(),
        "an earlier generation's in-progress file stayed"
    );
    assert!(
        live.exists(),
        "a live subtask's file of this attempt was deleted"
    );
    assert!(
        pending.exists(),
        "pending files belong to checkpoints and stay"
    );
    let _ = std::fs::remove_dir_all(&d);
}
