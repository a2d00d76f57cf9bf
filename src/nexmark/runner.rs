//! Running a query by name into a result sink that counts rows, samples latency and, if
//! asked, keeps the rows (for appending queries) or the final table (for updating ones).
//! The `nexmark` example and the tests share it.

use super::queries::{self, Change, CsvRow};
use super::{Event, NexmarkConfig};
use crate::datastream::DataStream;
use actorflow_runtime::{Batch, Data, Sink, TaskInfo, UserError};
use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Every query the runner knows, in order.
pub const QUERIES: [&str; 22] = [
    "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q9", "q10", "q11", "q12", "q13", "q14", "q15",
    "q16", "q17", "q18", "q19", "q20", "q21", "q22",
];

/// The queries whose result is an updating table (their output is the final table).
pub const UPDATING: [&str; 7] = ["q4", "q9", "q15", "q16", "q17", "q18", "q19"];

/// How the runner builds a query.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// q13's side input file (`key,value` lines).
    pub side_input: PathBuf,
    /// Keep the result rows (for `--output` and the tests); otherwise only count them.
    pub keep_rows: bool,
    /// Sample latency against this pacing (`--rate`): the generator's events per second.
    pub rate: Option<f64>,
    /// The generator's configuration (for the latency clock).
    pub config: NexmarkConfig,
    /// Where q10 writes its partitioned files (`None`: a fresh directory under the system's
    /// temp dir).
    pub files: Option<PathBuf>,
}

/// What the result sink saw.
#[derive(Debug, Default)]
pub struct Results {
    rows: AtomicU64,
    appended: Mutex<Vec<String>>,
    table: Mutex<HashMap<String, String>>,
    latencies_us: Mutex<Vec<u64>>,
    /// When the generator started (set by the runner when the job starts).
    pub started: OnceLock<Instant>,
    /// Where a query that writes files (q10) wrote them.
    files: OnceLock<PathBuf>,
}

impl Results {
    /// Rows (or changes) the query emitted; for a query that writes files, the lines of its
    /// committed files.
    pub fn output_rows(&self) -> u64 {
        match self.files.get() {
            Some(dir) => {
                // Counted by reading the committed files a block at a time.
                let parts = actorflow_runtime::operators::transactional::committed_parts_under(dir)
                    .unwrap_or_default();
                let mut lines = 0u64;
                for p in parts {
                    use std::io::Read;
                    let Ok(mut f) = std::fs::File::open(&p) else {
                        continue;
                    };
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                    }
                }
                lines
            }
            None => self.rows.load(Ordering::Relaxed),
        }
    }

    /// Where a query that writes files (q10) wrote them.
    pub fn files_dir(&self) -> Option<&std::path::Path> {
        self.files.get().map(PathBuf::as_path)
    }

    /// The committed lines of a query that writes files, each prefixed by its partition
    /// and a comma (`dt=…/hm=…,line`).
    fn file_rows(&self) -> Vec<String> {
        let Some(dir) = self.files.get() else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        let parts = actorflow_runtime::operators::transactional::committed_parts_under(dir)
            .unwrap_or_default();
        for p in parts {
            let partition = p
                .parent()
                .and_then(|d| d.strip_prefix(dir).ok())
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Ok(text) = std::fs::read_to_string(&p) {
                rows.extend(text.lines().map(|l| format!("{partition},{l}")));
            }
        }
        rows
    }

    /// The result as CSV lines, sorted: the appended rows, or the final table of an
    /// updating query (for q10, its files' lines with their partition first).
    pub fn sorted_rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = self
            .appended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        rows.extend(
            self.table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned(),
        );
        rows.extend(self.file_rows());
        rows.sort();
        rows
    }

    /// The sampled latencies in microseconds, sorted.
    pub fn latencies_us(&self) -> Vec<u64> {
        let mut l = self
            .latencies_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        l.sort_unstable();
        l
    }
}

/// Writes a query's rows (or its changes) into [`Results`].
struct ResultSink<T> {
    results: Arc<Results>,
    options: Arc<QueryOptions>,
    render: fn(&T, &Results),
    seen: u64,
}

impl<T> Clone for ResultSink<T> {
    fn clone(&self) -> Self {
        ResultSink {
            results: self.results.clone(),
            options: self.options.clone(),
            render: self.render,
            seen: 0,
        }
    }
}

/// One in this many output rows has its latency measured.
const LATENCY_SAMPLE: u64 = 1000;

impl<T: Data> Sink for ResultSink<T> {
    type Input = T;

    async fn write_batch(&mut self, batch: Batch<T>) -> Result<(), UserError> {
        let n = batch.len() as u64;
        self.results.rows.fetch_add(n, Ordering::Relaxed);
        if let (Some(rate), Some(started)) = (self.options.rate, self.results.started.get()) {
            // With pacing, event n leaves n / rate seconds after the start; an output row's
            // event time says which event it waited for last.
            let cfg = &self.options.config;
            if let Some(ts) = batch.timestamps() {
                let now = started.elapsed().as_secs_f64();
                let mut lat = Vec::new();
                for (i, t) in ts.iter().enumerate() {
                    if !(self.seen + i as u64).is_multiple_of(LATENCY_SAMPLE) || t.0 == i64::MIN {
                        continue;
                    }
                    let n = (t.0 - cfg.base_time).max(0) as f64 * cfg.tps as f64 / 1000.0;
                    let due = n / rate;
                    lat.push(((now - due).max(0.0) * 1e6) as u64);
                }
                self.results
                    .latencies_us
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(lat);
            }
        }
        self.seen += n;
        if self.options.keep_rows {
            for v in batch.values() {
                (self.render)(v, &self.results);
            }
        }
        Ok(())
    }
}

fn append<T: CsvRow>(row: &T, results: &Results) {
    results
        .appended
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(row.csv());
}

fn upsert<K: Debug, V: CsvRow>(change: &Change<K, V>, results: &Results) {
    let mut table = results.table.lock().unwrap_or_else(PoisonError::into_inner);
    match change {
        Change::Upsert(k, v) => {
            table.insert(format!("{k:?}"), v.csv());
        }
        Change::Delete(k) => {
            table.remove(&format!("{k:?}"));
        }
    }
}

fn sink_into<T: Data>(
    stream: &DataStream<T>,
    results: &Arc<Results>,
    options: &Arc<QueryOptions>,
    render: fn(&T, &Results),
) {
    let sink = ResultSink {
        results: results.clone(),
        options: options.clone(),
        render,
        seen: 0,
    };
    stream
        .add_sink("results", move |_: &TaskInfo| Ok(sink.clone()))
        .uid("nexmark-results");
}

/// Builds query `name` over `events` into a result sink writing into `results`.
///
/// # Errors
///
/// An unknown query name, or a window the query cannot set up.
pub fn add_query(
    name: &str,
    events: &DataStream<Event>,
    options: QueryOptions,
    results: &Arc<Results>,
) -> Result<(), UserError> {
    let o = Arc::new(options);
    let r = results;
    match name {
        // The generator alone, into a sink that only counts (its own rate).
        "gen" => sink_into(events, r, &o, |_, _| {}),
        "q0" => sink_into(&queries::q0(events), r, &o, append),
        "q1" => sink_into(&queries::q1(events), r, &o, append),
        "q2" => sink_into(&queries::q2(events), r, &o, append),
        "q3" => sink_into(&queries::q3(events), r, &o, append),
        "q4" => sink_into(&queries::q4(events), r, &o, upsert),
        "q5" => sink_into(&queries::q5(events)?, r, &o, append),
        "q5w" => sink_into(&queries::q5_windowed(events)?, r, &o, append),
        "q7" => sink_into(&queries::q7(events)?, r, &o, append),
        "q8" => sink_into(&queries::q8(events)?, r, &o, append),
        "q9" => sink_into(&queries::q9(events), r, &o, upsert),
        "q11" => sink_into(&queries::q11(events)?, r, &o, append),
        "q12" => sink_into(&queries::q12(events)?, r, &o, append),
        "q13" => sink_into(&queries::q13(events, &o.side_input), r, &o, append),
        "q14" => sink_into(&queries::q14(events), r, &o, append),
        "q15" => sink_into(&queries::q15(events), r, &o, upsert),
        "q16" => sink_into(&queries::q16(events), r, &o, upsert),
        "q17" => sink_into(&queries::q17(events), r, &o, upsert),
        "q18" => sink_into(&queries::q18(events), r, &o, upsert),
        "q19" => sink_into(&queries::q19(events), r, &o, upsert),
        "q20" => sink_into(&queries::q20(events), r, &o, append),
        "q21" => sink_into(&queries::q21(events), r, &o, append),
        "q22" => sink_into(&queries::q22(events), r, &o, append),
        "q6" => {
            return Err(
                "q6 is not built: Flink cannot run it either (FLINK-19059, an OVER \
                        window over a retracting input); see docs/nexmark.md"
                    .into(),
            );
        }
        "q10" => {
            let dir = match &o.files {
                Some(d) => d.clone(),
                None => std::env::temp_dir().join(format!(
                    "actorflow-nexmark-q10-{}-{:x}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                )),
            };
            queries::q10(events, &dir, true);
            let _ = results.files.set(dir);
        }
        other => {
            return Err(format!("unknown query {other:?}: one of {}", QUERIES.join(", ")).into());
        }
    }
    Ok(())
}
