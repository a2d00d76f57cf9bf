//! Word count over a TCP socket, Flink's `socketTextStream` demo.
//!
//! ```text
//! nc -lk 9999                                             # terminal 1: type lines here
//! cargo run --release --example socket_wordcount          # terminal 2
//! cargo run --release --example socket_wordcount -- --host 127.0.0.1 --port 9999 --parallelism 2
//! ```
//!
//! Each line typed into `nc` is split into words; every word's running count is printed as it
//! changes (a rolling count, as Flink's streaming mode emits it), prefixed `N>` by the printing
//! subtask when the parallelism is above 1. The job ends when the server closes the
//! connection; Ctrl-C stops it.
//!
//! The socket source cannot replay input, so after a failure lines in flight are lost: it is
//! an at-most-once source, for demos.

use actorflow::prelude::*;
use std::error::Error;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: socket_wordcount [--host HOST] [--port PORT] [--parallelism N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socket_wordcount: {e}");
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
    let (mut host, mut port, mut parallelism) = ("localhost".to_string(), 9999u16, 1u32);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--parallelism" => {
                parallelism = value()?
                    .parse()
                    .map_err(|e| format!("--parallelism: {e}"))?
            }
            _ => return Err(format!("unknown argument '{flag}'\n{USAGE}").into()),
        }
    }

    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        // Print each update within 10 ms instead of the default 100 ms buffer timeout.
        .set_buffer_timeout(std::time::Duration::from_millis(10));
    env.socket_text_stream(&host, port)
        .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
            for word in line.split_ascii_whitespace() {
                out.collect((word.to_owned(), 1));
            }
        })
        .name("tokenize")
        .key_by_ref(|(word, _): &(String, u64)| word)
        .sum(|(_, n)| n)
        .name("count")
        .print();
    eprintln!("socket_wordcount: reading lines from {host}:{port} (start `nc -lk {port}` first)");
    env.execute_blocking("Socket word count")?;
    Ok(())
}
