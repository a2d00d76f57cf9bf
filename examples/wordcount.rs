//! Word count, the classic streaming job.
//!
//! ```text
//! cargo run --release --example wordcount                       # sample text, top words
//! cargo run --release --example wordcount -- --input FILE|DIR --output FILE [--parallelism N]
//! ```
//!
//! Lines are split into words on ASCII whitespace (space, tab, CR, LF, form feed). The job is
//! Flink's word count: `flat_map` to `(word, 1)`, `key_by(word)`, `sum`. It runs in batch mode
//! (Flink's `RuntimeExecutionMode.BATCH`), so the sum emits each word's final count once, at
//! end of input. The output has one `word,count` line per distinct word, sorted by word in
//! byte order.

use actorflow::RuntimeMode;
use actorflow::prelude::*;
use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

// A multi-threaded dataflow allocates on one thread and frees on another; mimalloc handles
// that far better than glibc's malloc (see docs/BENCHMARKS.md). The library itself leaves
// the choice of allocator to the application.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: wordcount [--input FILE|DIR] [--output FILE] [--parallelism N] [--top N]";

struct Args {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    parallelism: Option<u32>,
    top: usize,
    metrics: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        input: None,
        output: None,
        parallelism: None,
        top: 10,
        metrics: false,
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
            "--metrics" => args.metrics = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(args)
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
    // `RUST_LOG=info` shows the job's plan and lifecycle; `RUST_LOG=actorflow=debug` more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hamlet.txt");
    let input = args.input.clone().unwrap_or(sample);

    let env = StreamExecutionEnvironment::new();
    env.set_runtime_mode(RuntimeMode::Batch);
    if let Some(p) = args.parallelism {
        env.set_parallelism(p);
    }
    let finals = env
        .read_text_file(&input)
        .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
            for word in line.split_ascii_whitespace() {
                out.collect((word.to_owned(), 1));
            }
        })
        .name("tokenize")
        .key_by_ref(|(word, _): &(String, u64)| word)
        .sum(|(_, n)| n)
        .name("count")
        .collect();
    let result = env.execute_blocking("wordcount")?;

    if args.metrics {
        eprint!("{}", result.metrics);
    }
    let mut counts = finals.take();
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
