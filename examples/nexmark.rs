//! The Nexmark benchmark runner (`docs/nexmark.md`).
//!
//! ```text
//! cargo run --release --example nexmark -- --query q5 --events 10000000 --parallelism 2
//! cargo run --release --example nexmark -- --query all --events 10000000 --report /tmp/nexmark.md
//! ```
//!
//! Flags: `--query qN[,qM…]|all` (required; `gen` is the generator alone into a sink that
//! only counts, and `all` runs it first; `q5w` is q5 as a sliding window per auction), `--events N` (default 10 000 000),
//! `--parallelism P` (default 2), `--tps N` (events per second of event time, default
//! 10 000 000, as Flink's V1 suite), `--rate N` (pace emission at N events/s of wall-clock
//! time and measure latency), `--checkpoint-interval MS` and `--checkpoint-dir D`
//! (exactly-once checkpoints into a sled store; the dir defaults to a fresh one under the
//! system's temp dir), `--output FILE` (the result rows as CSV, sorted; for updating
//! queries the final table), `--dump-events FILE` (the events as JSON lines in Flink's
//! Nexmark layout), `--seed S`, `--side-input PATH` (q13's table, default
//! `data/nexmark-side-input.csv`), `--report FILE` (the results as a markdown table in
//! FILE and JSON in FILE.json).
//!
//! Several queries run one after the other, each in a child process of its own, so each
//! has its own peak RSS and CPU time. One line per query:
//! `query=q5 events=… seconds=… events_per_s=… events_per_cpu_s=… p50_latency_ms=…
//! p99_latency_ms=… peak_rss_mb=… output_rows=… checkpoints=…` (latency only with
//! `--rate`).

#[path = "support/csv.rs"]
mod csv;

use actorflow::checkpoint::JobEvent;
use actorflow::nexmark::{self, NexmarkConfig, NexmarkSource, QUERIES, QueryOptions, Results};
use actorflow::prelude::*;
use actorflow::snapshot::SledStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: nexmark --query qN[,qM...]|all [--events N] [--parallelism P] \
    [--tps N] [--rate N] [--checkpoint-interval MS] [--checkpoint-dir D] [--output FILE] \
    [--dump-events FILE] [--seed S] [--side-input PATH] [--report FILE]";

#[derive(Debug, Clone)]
struct Args {
    queries: Vec<String>,
    events: u64,
    parallelism: u32,
    tps: u64,
    rate: Option<f64>,
    checkpoint_interval: Option<u64>,
    checkpoint_dir: Option<PathBuf>,
    output: Option<PathBuf>,
    dump_events: Option<PathBuf>,
    seed: u64,
    side_input: PathBuf,
    report: Option<PathBuf>,
    /// Run in this process and print the result line (set for each child).
    child: bool,
}

fn parse_args(raw: Vec<String>) -> Result<Args, String> {
    let mut f = csv::Flags::parse(raw, USAGE)?;
    let query = f.take("query")?;
    let queries: Vec<String> = if query == "all" {
        std::iter::once("gen")
            .chain(QUERIES)
            .map(|q| q.to_string())
            .collect()
    } else {
        query.split(',').map(|q| q.trim().to_string()).collect()
    };
    let num = |f: &mut csv::Flags, name: &str, default: u64| -> Result<u64, String> {
        match f.opt(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} takes a non-negative integer, got '{v}'")),
        }
    };
    let events = num(&mut f, "events", 10_000_000)?;
    let parallelism = num(&mut f, "parallelism", 2)?;
    let parallelism = u32::try_from(parallelism)
        .ok()
        .filter(|p| *p > 0)
        .ok_or("--parallelism must be at least 1")?;
    let tps = num(&mut f, "tps", 10_000_000)?.max(1);
    let rate = match f.opt("rate") {
        None => None,
        Some(v) => Some(
            v.parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or(format!("--rate takes a positive number, got '{v}'"))?,
        ),
    };
    let checkpoint_interval = match f.opt("checkpoint-interval") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or(format!("--checkpoint-interval takes ms >= 1, got '{v}'"))?,
        ),
    };
    let seed = num(&mut f, "seed", 0)?;
    let args = Args {
        queries,
        events,
        parallelism,
        tps,
        rate,
        checkpoint_interval,
        checkpoint_dir: f.opt("checkpoint-dir").map(PathBuf::from),
        output: f.opt("output").map(PathBuf::from),
        dump_events: f.opt("dump-events").map(PathBuf::from),
        seed,
        side_input: f
            .opt("side-input")
            .map_or_else(default_side_input, PathBuf::from),
        report: f.opt("report").map(PathBuf::from),
        child: f.opt("child").is_some(),
    };
    f.done()?;
    for q in &args.queries {
        if q != "gen" && q != "q5w" && !QUERIES.contains(&q.as_str()) {
            return Err(format!(
                "unknown query '{q}': one of {} or all (q6 is not built: docs/nexmark.md)",
                QUERIES.join(",")
            ));
        }
    }
    if args.output.is_some() && args.queries.len() > 1 {
        return Err("--output takes one query".into());
    }
    Ok(args)
}

fn default_side_input() -> PathBuf {
    let here = Path::new("data/nexmark-side-input.csv");
    if here.exists() {
        here.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/nexmark-side-input.csv")
    }
}

/// The process's user + system CPU time (`/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory in MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)] as f64 / 1000.0)
}

/// One query's figures.
#[derive(Debug, Clone)]
struct Line {
    query: String,
    events: u64,
    seconds: f64,
    cpu_seconds: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    peak_rss_mb: f64,
    output_rows: u64,
    checkpoints: u64,
}

impl Line {
    fn text(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
        format!(
            "query={} events={} seconds={:.3} events_per_s={:.0} events_per_cpu_s={:.0} \
             p50_latency_ms={} p99_latency_ms={} peak_rss_mb={:.1} output_rows={} checkpoints={}",
            self.query,
            self.events,
            self.seconds,
            self.events as f64 / self.seconds.max(1e-9),
            self.events as f64 / self.cpu_seconds.max(1e-9),
            ms(self.p50),
            ms(self.p99),
            self.peak_rss_mb,
            self.output_rows,
            self.checkpoints
        )
    }

    fn parse(text: &str) -> Option<Line> {
        let get = |k: &str| {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
        };
        let f = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
        let events = get("events")?.parse().ok()?;
        let seconds = f("seconds")?;
        Some(Line {
            query: get("query")?.to_string(),
            events,
            seconds,
            cpu_seconds: events as f64 / f("events_per_cpu_s").filter(|v| *v > 0.0)?,
            p50: f("p50_latency_ms"),
            p99: f("p99_latency_ms"),
            peak_rss_mb: f("peak_rss_mb")?,
            output_rows: get("output_rows")?.parse().ok()?,
            checkpoints: get("checkpoints")?.parse().ok()?,
        })
    }
}

fn config(args: &Args) -> NexmarkConfig {
    NexmarkConfig {
        events: args.events,
        tps: args.tps,
        seed: args.seed,
        ..NexmarkConfig::default()
    }
}

/// Runs one query in this process.
async fn run_query(args: &Args, query: &str) -> Result<Line, UserError> {
    let cfg = config(args);
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(args.parallelism);
    let checkpoints = Arc::new(AtomicU64::new(0));
    if let Some(ms) = args.checkpoint_interval {
        let dir = args.checkpoint_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("actorflow-nexmark-{}-{query}", std::process::id()))
        });
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir).map_err(|e| e.to_string())?;
        env.enable_checkpointing(Duration::from_millis(ms))
            .set_checkpoint_storage(Arc::new(store));
        let n = checkpoints.clone();
        env.set_job_listener(Arc::new(move |e: &JobEvent| {
            if matches!(e, JobEvent::CheckpointCompleted { .. }) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut source = NexmarkSource::new(cfg);
    if let Some(r) = args.rate {
        source = source.with_rate(r);
    }
    let stats = source.stats();
    let events = nexmark::events(&env, source);
    let results = Arc::new(Results::default());
    nexmark::add_query(
        query,
        &events,
        QueryOptions {
            side_input: args.side_input.clone(),
            keep_rows: args.output.is_some(),
            rate: args.rate,
            config: cfg,
            // q10's partitioned files: beside --output, else in a fresh temp dir.
            files: args.output.as_ref().map(|o| {
                let mut d = o.clone().into_os_string();
                d.push(".files");
                PathBuf::from(d)
            }),
        },
        &results,
    )?;
    let bar = indicatif::ProgressBar::new(args.events);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(query.to_string());
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let _ = results.started.set(start);
    let handle = env.execute_async(&format!("nexmark {query}")).await?;
    let progress = {
        let bar = bar.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(stats.emitted.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = handle.join().await;
    progress.abort();
    bar.finish_and_clear();
    result?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    if let Some(path) = &args.output {
        csv::write_sorted(path, results.sorted_rows())?;
    }
    let lat = results.latencies_us();
    let output_rows = results.output_rows();
    if args.output.is_none()
        && let Some(dir) = results.files_dir()
    {
        // q10's files in a temp dir of its own: counted, then removed.
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Line {
        query: query.to_string(),
        events: args.events,
        seconds,
        cpu_seconds: cpu,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        peak_rss_mb: peak_rss_mb(),
        output_rows,
        checkpoints: checkpoints.load(Ordering::Relaxed),
    })
}

/// Runs `query` in a child process and reads its line.
fn run_child(query: &str, raw: &[String]) -> Result<Line, UserError> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    let mut skip = false;
    for a in raw {
        if skip {
            skip = false;
            continue;
        }
        // The child runs one query, reports nothing and dumps nothing.
        if a == "--query" || a == "--report" || a == "--dump-events" {
            skip = true;
            continue;
        }
        cmd.arg(a);
    }
    cmd.args(["--query", query, "--child", "1"]);
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {query}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{query} failed ({}): {text}", out.status).into());
    }
    text.lines()
        .find_map(Line::parse)
        .ok_or_else(|| format!("{query}: no result line in {text:?}").into())
}

fn dump_events(args: &Args, path: &Path) -> Result<(), UserError> {
    let cfg = config(args);
    let file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let mut line = String::with_capacity(1024);
    for n in 0..args.events {
        line.clear();
        cfg.event(n).write_json(&mut line);
        line.push('\n');
        w.write_all(line.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

fn write_report(path: &Path, args: &Args, lines: &[Line]) -> Result<(), UserError> {
    let mut md = format!(
        "Nexmark: {} events, parallelism {}, tps {}{}{}\n\n\
         | query | seconds | events/s | events/CPU-s | p50 ms | p99 ms | peak RSS MB | output rows | checkpoints |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        args.events,
        args.parallelism,
        args.tps,
        args.rate.map_or(String::new(), |r| format!(", rate {r}/s")),
        args.checkpoint_interval
            .map_or(String::new(), |ms| format!(", checkpoints every {ms} ms")),
    );
    let mut json = Vec::new();
    for l in lines {
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.1}"));
        md.push_str(&format!(
            "| {} | {:.2} | {:.0} | {:.0} | {} | {} | {:.0} | {} | {} |\n",
            l.query,
            l.seconds,
            l.events as f64 / l.seconds.max(1e-9),
            l.events as f64 / l.cpu_seconds.max(1e-9),
            ms(l.p50),
            ms(l.p99),
            l.peak_rss_mb,
            l.output_rows,
            l.checkpoints
        ));
        let js = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.3}"));
        json.push(format!(
            "{{\"query\":\"{}\",\"events\":{},\"seconds\":{:.3},\"events_per_s\":{:.0},\
             \"events_per_cpu_s\":{:.0},\"p50_latency_ms\":{},\"p99_latency_ms\":{},\
             \"peak_rss_mb\":{:.1},\"output_rows\":{},\"checkpoints\":{}}}",
            l.query,
            l.events,
            l.seconds,
            l.events as f64 / l.seconds.max(1e-9),
            l.events as f64 / l.cpu_seconds.max(1e-9),
            js(l.p50),
            js(l.p99),
            l.peak_rss_mb,
            l.output_rows,
            l.checkpoints
        ));
    }
    std::fs::write(path, md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut jpath = path.as_os_str().to_owned();
    jpath.push(".json");
    std::fs::write(&jpath, format!("[{}]\n", json.join(",\n")))
        .map_err(|e| format!("cannot write the JSON report: {e}").into())
}

async fn run(args: Args, raw: Vec<String>) -> Result<(), UserError> {
    if let Some(path) = &args.dump_events {
        dump_events(&args, path)?;
    }
    let mut lines = Vec::new();
    if args.child || args.queries.len() == 1 {
        for q in &args.queries {
            let line = run_query(&args, q).await?;
            println!("{}", line.text());
            lines.push(line);
        }
    } else {
        for q in &args.queries {
            let line = run_child(q, &raw)?;
            println!("{}", line.text());
            lines.push(line);
        }
    }
    if let Some(path) = &args.report {
        write_report(path, &args, &lines)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(raw.clone()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args, raw).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexmark: {e}");
            ExitCode::FAILURE
        }
    }
}
