//! Smoke tests of the examples, run as binaries (window_agg has its own golden tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn socket_wordcount_prints_rolling_counts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new(common::example_binary("socket_wordcount"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"to be or not to be\nthat is the question\n")
        .unwrap();
    drop(conn);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 10, "one update per word: {stdout}");
    for expected in [
        r#"("to", 1)"#,
        r#"("to", 2)"#,
        r#"("be", 2)"#,
        r#"("question", 1)"#,
    ] {
        assert!(lines.contains(&expected), "missing {expected} in {stdout}");
    }
}

#[test]
fn backpressure_example_shows_the_source_throttled() {
    let out = Command::new(common::example_binary("backpressure"))
        .args([
            "--records",
            "100000",
            "--sink-delay-ms",
            "1",
            "--every-ms",
            "20",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("finished in"), "{stdout}");
    assert!(
        stdout.contains("Source: fast source -> passthrough (1/1) Finished: in=0 out=100000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Sink: slow sink (1/1) Finished: in=100000"),
        "{stdout}"
    );
}

fn run_example(name: &str, args: &[&str]) -> String {
    let out = Command::new(common::example_binary(name))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn idle_partitions_fires_only_with_idleness() {
    let out = run_example("idle_partitions", &["--seconds", "2"]);
    let (without, with) = out.split_once("with_idleness").unwrap();
    assert!(without.contains("windows fired: 0"), "{out}");
    assert!(without.contains("stuck at the minimum"), "{out}");
    let fired: usize = with
        .lines()
        .find_map(|l| l.trim().strip_prefix("windows fired: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(fired > 0, "{out}");
}

#[test]
fn timers_fire_once_per_key_and_time() {
    let out = run_example("timers", &[]);
    assert!(
        out.starts_with("50 timer registrations, 4 timers fired:"),
        "{out}"
    );
    assert!(out.contains("alice minute 0: 20 views"), "{out}");
    assert!(out.contains("bob minute 1: 5 views"), "{out}");
}

#[test]
fn topn_ranks_every_sliding_window() {
    let out = run_example("topn", &["--n", "2"]);
    let windows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(windows.len(), 11, "{out}");
    assert!(
        windows[0].contains("[-40000,  20000) ms  apple=162  durian=49"),
        "{out}"
    );
}

#[test]
fn chaos_runner_finds_every_run_equal_to_the_reference() {
    let stdout = run_example(
        "chaos",
        &["--runs", "4", "--seed", "5", "--records", "30000"],
    );
    assert!(
        stdout.contains("all 4 runs equal the reference"),
        "{stdout}"
    );
    assert!(stdout.contains("restarts)"), "{stdout}");
}

#[test]
fn failure_demo_narrates_a_restart_and_matches_the_reference() {
    let stdout = run_example("failure_demo", &[]);
    for expected in [
        "FAILURE: operator 'window'",
        "and restarts it (attempt 1)",
        "running from checkpoint",
        "identical to the run without failures",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in {stdout}"
        );
    }
}
