//! Smoke tests of the `socket_wordcount` and `backpressure` examples, run as binaries.
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
