//! Word count, the classic streaming job.
//!
//! ```text
//! cargo run --release --example wordcount                       # sample text, top words
//! cargo run --release --example wordcount -- --input FILE|DIR --output FILE [--parallelism N]
//! ```
//!
//! Lines are split into words on ASCII whitespace (space, tab, CR, LF, form feed). The job is
//! Flink's streaming word count: `flat_map` to `(word, 1)`, `key_by(word)`, rolling `sum`.
//! The rolling sum emits every update; the sink keeps the latest count per word (each word's
//! updates arrive in order at one sink subtask, chained to its counter), so the output holds
//! the final counts: one `word,count` line per distinct word, sorted by word in byte order.

use actorflow::prelude::*;
use std::collections::HashMap;
use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

const USAGE: &str =
    "usage: wordcount [--input FILE|DIR] [--output FILE] [--parallelism N] [--top N]";

struct Args {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    parallelism: Option<u32>,
    top: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        input: None,
        output: None,
        parallelism: None,
        top: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--input" => args.input = Some(value()?.into()),
            "--output" => args.output = Some(value()?.into()),
            "--parallelism" => {
                let v = value()?;
                args.parallelism = Some(
                    v.parse()
                        .map_err(|_| format!("--parallelism takes a number, got '{v}'"))?,
                )
            }
            "--top" => {
                let v = value()?;
                args.top = v
                    .parse()
                    .map_err(|_| format!("--top takes a number, got '{v}'"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The latest count of every word, merged from all sink subtasks when they finish.
#[derive(Clone, Default)]
struct FinalCounts(Arc<Mutex<HashMap<String, u64>>>);

/// One sink subtask: keeps the latest update per word, hands them over at end of input.
struct LatestCount {
    local: HashMap<String, u64>,
    into: FinalCounts,
}

impl Sink for LatestCount {
    type Input = (String, u64);

    async fn write_batch(&mut self, batch: Batch<(String, u64)>) -> Result<(), UserError> {
        for (word, count) in batch {
            self.local.insert(word, count);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), UserError> {
        let mut all = self.into.0.lock().map_err(|_| "final counts poisoned")?;
        all.extend(self.local.drain());
        Ok(())
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wordcount: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hamlet.txt");
    let input = args.input.clone().unwrap_or(sample);

    let env = StreamExecutionEnvironment::new();
    if let Some(p) = args.parallelism {
        env.set_parallelism(p);
    }
    let finals = FinalCounts::default();
    let sink_target = finals.clone();
    env.read_text_file(&input)
        .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
            for word in line.split_ascii_whitespace() {
                out.collect((word.to_owned(), 1));
            }
        })
        .name("tokenize")
        .key_by(|(word, _): &(String, u64)| word.clone())
        .sum(|(_, n)| n)
        .name("count")
        .add_sink("latest count", move |_: &TaskInfo| {
            Ok(LatestCount {
                local: HashMap::new(),
                into: sink_target.clone(),
            })
        })
        .name("latest count");
    let result = env.execute_blocking("wordcount")?;

    let mut counts: Vec<(String, u64)> =
        std::mem::take(&mut *finals.0.lock().map_err(|_| "final counts poisoned")?)
            .into_iter()
            .collect();
    // `String`'s order is byte order.
    counts.sort_unstable();

    match &args.output {
        Some(path) => {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .map_err(|e| format!("cannot create output file '{}': {e}", path.display()))?,
            );
            for (word, count) in &counts {
                writeln!(out, "{word},{count}")?;
            }
            out.flush()?;
            eprintln!(
                "wordcount: {} distinct words written to {} in {:.2?}",
                counts.len(),
                path.display(),
                result.duration
            );
        }
        None => {
            let total: u64 = counts.iter().map(|(_, c)| c).sum();
            println!(
                "{} words, {} distinct, in {} ({:.2?})",
                total,
                counts.len(),
                input.display(),
                result.duration
            );
            let mut top = counts.clone();
            top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (word, count) in top.iter().take(args.top) {
                println!("{count:>6}  {word}");
            }
        }
    }
    Ok(())
}
