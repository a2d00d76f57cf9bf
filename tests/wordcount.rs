//! The `wordcount` example is exact at parallelism 1, 2 and 4 on awkward input: unicode
//! words, tabs, CRLF, blank lines, runs of spaces, form feeds, a missing final newline, and a
//! directory of files. It runs the example binary that `cargo test` builds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn example_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| common::example_binary("wordcount"))
        .clone()
}

/// The reference: split on ASCII whitespace, count, sort by word bytes.
fn reference(texts: &[Vec<u8>]) -> String {
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for t in texts {
        for w in t
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (w, c) in counts {
        out.extend_from_slice(&w);
        out.extend_from_slice(format!(",{c}\n").as_bytes());
    }
    String::from_utf8(out).unwrap()
}

fn awkward_text(seed: u64, lines: usize) -> Vec<u8> {
    let words = [
        "to",
        "be",
        "be,",
        "To",
        "naïve",
        "café",
        "Straße",
        "東京",
        "😀",
        "a",
        "a,b",
        "ünïcødé",
        "z",
        "Z",
        "zz",
        "Ω",
        "-",
        "'tis",
        "e\u{301}",
        "\u{a0}nbsp",
        "x\u{a0}y",
    ];
    let seps = [" ", "  ", "\t", " \t ", "\x0c", "\r"];
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    for _ in 0..lines {
        match rng.below(10) {
            0 => {}
            1 => out.push_str("   \t "),
            _ => {
                for i in 0..rng.below(12) {
                    if i > 0 || rng.below(4) == 0 {
                        out.push_str(seps[rng.below(seps.len() as u64) as usize]);
                    }
                    out.push_str(words[rng.below(words.len() as u64) as usize]);
                }
            }
        }
        out.push_str(if rng.below(3) == 0 { "\r\n" } else { "\n" });
    }
    out.push_str("final line without newline");
    out.into_bytes()
}

fn run_wordcount(input: &Path, output: &Path, parallelism: u32) -> String {
    let status = Command::new(example_binary())
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .args(["--parallelism", &parallelism.to_string()])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "wordcount failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read_to_string(output).unwrap()
}

#[test]
fn wordcount_is_exact_at_every_parallelism() {
    let dir = std::env::temp_dir().join(format!("actorflow-wc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("many")).unwrap();

    let text = awkward_text(11, 30_000);
    let file = dir.join("input.txt");
    std::fs::write(&file, &text).unwrap();
    let expected = reference(&[text]);
    assert!(expected.contains("東京,") && expected.contains("x\u{a0}y,"));

    let parts: Vec<Vec<u8>> = (0..5).map(|i| awkward_text(100 + i, 3_000)).collect();
    for (i, p) in parts.iter().enumerate() {
        std::fs::write(dir.join("many").join(format!("part-{i}.txt")), p).unwrap();
    }
    let expected_dir = reference(&parts);

    for p in [1, 2, 4] {
        let got = run_wordcount(&file, &dir.join(format!("out-{p}.txt")), p);
        assert!(got == expected, "file input differs at parallelism {p}");
        let got = run_wordcount(&dir.join("many"), &dir.join(format!("dir-out-{p}.txt")), p);
        assert!(
            got == expected_dir,
            "directory input differs at parallelism {p}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wordcount_without_arguments_counts_the_sample() {
    let out = Command::new(example_binary()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/hamlet.txt")).unwrap();
    let words = sample
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .count();
    assert!(stdout.starts_with(&format!("{words} words, ")), "{stdout}");
    assert!(stdout.contains("    30  the\n"), "{stdout}");
}

#[test]
fn wordcount_reports_a_missing_input_clearly() {
    let out = Command::new(example_binary())
        .args([
            "--input",
            "/no/such/input",
            "--output",
            "/tmp/never-written",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/no/such/input"), "{stderr}");
}
