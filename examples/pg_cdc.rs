//! A PostgreSQL table's changes into a file, exactly once (cargo feature `postgres`).
//!
//! ```text
//! eval "$(scripts/postgres.sh start)"
//! cargo run --release --features postgres --example pg_cdc -- --postgres "$ACTORFLOW_POSTGRES_URL" \
//!     --table orders --output /tmp/orders.changes --checkpoint-dir /tmp/orders-cdc [--restore latest] \
//!     [--stop-when-idle MS] [--slot NAME] [--initial-snapshot]
//! ```
//!
//! Reads the table's inserts, updates and deletes from a logical replication slot (created
//! if missing, named `--slot`, default `actorflow_cdc_TABLE`) and writes one line per change,
//! `lsn,op,` then the row's values as CSV (`op` is `+I`, `-U`, `+U` or `-D`; with
//! `--initial-snapshot` the table's rows at the start come first, as `+I` at the slot's
//! consistent point, and the slot is dropped and recreated on a fresh start), through the
//! exactly-once file sink (parts under `--checkpoint-dir`). Once the job ends
//! (`--stop-when-idle MS` without a change; otherwise Ctrl-C leaves the committed parts),
//! OUT holds every committed line in LSN order. Killed at any moment and rerun with
//! `--restore latest`, OUT holds the table's change history exactly once. With
//! `--web ADDR` the job shows on the dashboard.

#[path = "support/web.rs"]
mod web;

use actorflow::checkpoint::RestoreFrom;
use actorflow::postgres::{ChangeEvent, PostgresCdcSource};
use actorflow::prelude::*;
use actorflow::snapshot::SledStore;
use actorflow::transactional::{FileSink, TwoPhaseCommit, committed_parts};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: pg_cdc --postgres URL --table T --output FILE --checkpoint-dir D \
    [--restore latest] [--stop-when-idle MS] [--slot NAME] [--checkpoint-interval MS] \
    [--initial-snapshot] [--web ADDR]";

struct Args {
    url: String,
    table: String,
    output: PathBuf,
    dir: PathBuf,
    restore: bool,
    stop_when_idle: Option<Duration>,
    slot: String,
    interval: Duration,
    initial_snapshot: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = web::from_args()?.into_iter();
    let (mut url, mut table, mut output, mut dir) = (None, None, None, None);
    let (mut restore, mut stop, mut slot, mut interval) = (false, None, None, 200u64);
    let mut initial_snapshot = false;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--postgres" => url = Some(value()?),
            "--table" => table = Some(value()?),
            "--output" => output = Some(PathBuf::from(value()?)),
            "--checkpoint-dir" => dir = Some(PathBuf::from(value()?)),
            "--restore" => match value()?.as_str() {
                "latest" => restore = true,
                other => return Err(format!("--restore takes `latest`, got {other:?}")),
            },
            "--stop-when-idle" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|e| format!("--stop-when-idle: {e}"))?;
                stop = Some(Duration::from_millis(ms));
            }
            "--slot" => slot = Some(value()?),
            "--initial-snapshot" => initial_snapshot = true,
            "--checkpoint-interval" => {
                interval = value()?
                    .parse()
                    .map_err(|e| format!("--checkpoint-interval: {e}"))?;
            }
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    let table = table.ok_or(format!("--table is required\n{USAGE}"))?;
    let slot = slot.unwrap_or_else(|| {
        format!(
            "actorflow_cdc_{}",
            table
                .to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        )
    });
    Ok(Args {
        url: url.ok_or(format!("--postgres is required\n{USAGE}"))?,
        table,
        output: output.ok_or(format!("--output is required\n{USAGE}"))?,
        dir: dir.ok_or(format!("--checkpoint-dir is required\n{USAGE}"))?,
        restore,
        stop_when_idle: stop,
        slot,
        interval: Duration::from_millis(interval.max(1)),
        initial_snapshot,
    })
}

/// `lsn,op,v1,v2,...`: NULL as an empty field, values with `,` `"` or a line break quoted.
fn line(c: &ChangeEvent) -> String {
    let mut s = format!("{},{}", c.lsn, c.op.short());
    for v in &c.values {
        s.push(',');
        match v {
            None => {}
            Some(v) if v.contains([',', '"', '\n', '\r']) => {
                s.push('"');
                s.push_str(&v.replace('"', "\"\""));
                s.push('"');
            }
            Some(v) => s.push_str(v),
        }
    }
    s
}

fn run(args: &Args) -> Result<(), UserError> {
    let snapshots = args.dir.join("snapshots");
    let parts = args.dir.join("parts");
    if !args.restore {
        for d in [&snapshots, &parts] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot empty {}: {e}", d.display()).into()),
            }
        }
    }
    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
    env.set_parallelism(1)
        .enable_checkpointing(args.interval)
        .set_checkpoint_storage(Arc::new(
            SledStore::open(&snapshots).map_err(|e| e.to_string())?,
        ));
    if args.restore {
        env.restore_from(RestoreFrom::Latest);
    }
    let mut source = PostgresCdcSource::builder(&args.url)
        .tables(&[args.table.as_str()])
        .slot(&args.slot)
        .publication(&args.slot);
    if let Some(d) = args.stop_when_idle {
        source = source.stop_when_idle(d);
    }
    if args.initial_snapshot {
        source = source.initial_snapshot();
    }
    let source = source.build().map_err(|e| e.to_string())?;
    let dir = parts.clone();
    env.add_source("changes", source)
        .uid("cdc")
        .map(|c: ChangeEvent| line(&c))
        .name("format")
        .add_sink("changes-file-sink", move |_: &TaskInfo| {
            Ok(TwoPhaseCommit::new(FileSink::<String>::new(dir.clone())))
        })
        .uid("changes-sink");
    env.execute_blocking("pg_cdc")?;
    write_in_lsn_order(&parts, &args.output)?;
    web::get().keep_serving_blocking();
    Ok(())
}

/// Every committed line, ordered by LSN (stable within a transaction), into `out`.
fn write_in_lsn_order(parts: &Path, out: &Path) -> Result<(), UserError> {
    let mut lines: Vec<(u64, usize, String)> = Vec::new();
    if parts.exists() {
        for part in committed_parts(parts)? {
            let text = std::fs::read_to_string(&part)
                .map_err(|e| format!("cannot read {}: {e}", part.display()))?;
            for l in text.lines() {
                let lsn = l
                    .split(',')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| format!("{}: a line without an LSN: {l:?}", part.display()))?;
                lines.push((lsn, lines.len(), l.to_string()));
            }
        }
    }
    lines.sort();
    let mut text = String::new();
    for (_, _, l) in lines {
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(out, text).map_err(|e| format!("cannot write {}: {e}", out.display()).into())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_cdc: {e}");
            ExitCode::FAILURE
        }
    }
}
