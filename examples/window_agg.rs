//! Keyed event-time windows over a CSV file: sum and count per key and window, with late
//! records in a side output — the job of `../shared/flink-oracle` (`run.sh window`), and the
//! same output byte for byte.
//!
//! ```text
//! cargo run --release --example window_agg -- --input data/events.csv --output /tmp/out.csv \
//!     --window tumbling --size 10000 --ooo 2000 --watermark punctuated
//! ```
//!
//! Flags: `--input CSV --output OUT [--late-output L (default OUT.late)]
//! --window tumbling|sliding|session [--size MS] [--slide MS] [--gap MS] [--offset MS]
//! [--ooo MS] [--lateness MS] [--parallelism N] [--watermark periodic|punctuated]
//! [--wm-interval MS] [--mode streaming|batch]`, and for checkpoints and recovery
//! (`docs/checkpointing.md`, `docs/recovery.md`):
//!
//! * `--checkpoint-dir DIR`: checkpoints go to a sled store in `DIR/snapshots`, and OUT and the
//!   late file are written exactly once through file sinks into `DIR/parts/{out,late}`, then
//!   assembled (sorted, as without checkpoints) when the job finishes. Without `--restore`,
//!   a run starts fresh: it empties `DIR/snapshots` and `DIR/parts` first.
//! * `--checkpoint-interval MS` (default 1000 with a dir; without a dir, checkpoints stay in
//!   memory and only serve restarts inside the process), `--checkpoint-mode
//!   exactly-once|at-least-once`, `--unaligned`, `--alignment-timeout MS` (an aligned
//!   checkpoint still aligning after MS turns unaligned);
//! * `--restore latest|latest-or-fresh|ID|PATH`: start from the newest completed checkpoint of
//!   `--checkpoint-dir`, or from its checkpoint `ID`, or from the newest of the store at PATH
//!   (a checkpoint dir or its `snapshots`). `latest` refuses to start when there is nothing to
//!   restore or the store is damaged (the error says what was found and how to go on);
//!   `latest-or-fresh` starts fresh when the store never completed a checkpoint (a first run
//!   killed before its first checkpoint) and refuses damage the same way. After SIGKILL at any
//!   moment, rerunning the same command with `--restore latest-or-fresh` produces the same
//!   files as an uninterrupted run.
//! * `--source-rate N`: read at most N lines/s; `--operator-delay-us N`: the window operator
//!   spends N µs per record (backpressure on purpose);
//! * `--metrics-file PATH`: one JSON object per line for each checkpoint (`checkpoint_completed`
//!   with `id`, `kind` aligned|unaligned, `duration_ms`, `alignment_ms`, `bytes`), abort,
//!   restore and restart; appended to with `--restore`, truncated otherwise.
//! * `--fault SPEC`: inject failures (`actorflow::actorflow_runtime::checkpoint::fault`), for example
//!   `panic@window#0:records=5000`, `exit@window:checkpoint=3`; `corrupt-latest` damages the
//!   newest checkpoint before restoring. A failure restarts the job from the latest
//!   checkpoint (exponential backoff, as Flink).
//!
//! Kafka (cargo feature `kafka`, `docs/connectors.md`):
//!
//! * `--input kafka://HOST:PORT/TOPIC`: the records' values are the lines; the source runs at
//!   `--parallelism` with the watermark strategy **per partition** (`--idleness MS` releases
//!   a silent partition), `--group G` commits offsets to a consumer group when checkpoints
//!   complete, `--kafka-bounded` stops at the partitions' end offsets taken when the job
//!   first started (kept in the checkpoint, as Flink's `setBounded(latest())`), and
//!   `--kafka-malformed fail|skip` chooses what a malformed value does (default fail, naming
//!   topic, partition and offset);
//! * `--output kafka://HOST:PORT/TOPIC`: the output lines become the values of TOPIC and the
//!   late records those of `TOPIC.late`, at least once.
//!
//! Input lines are `key,timestamp_ms,value` (integer timestamp and value, possibly negative);
//! empty lines are skipped, a malformed line stops the job naming its line number. One source
//! subtask reads the file and assigns timestamps with bounded out-of-orderness `--ooo`; the
//! windows run at `--parallelism`. OUT gets `key,window_start,window_end,sum,count` and the
//! late file `key,timestamp_ms,value`, both sorted in byte order.

#[path = "support/csv.rs"]
mod csv;
#[path = "support/web.rs"]
mod web;

use actorflow::CheckpointingMode;
use actorflow::RuntimeMode;
use actorflow::actorflow_runtime::{CheckpointId, CheckpointKind};
use actorflow::checkpoint::{JobEvent, JobListener, RestoreFrom};
use actorflow::fault::FaultPlan;
use actorflow::prelude::*;
use actorflow::snapshot::SledStore;
use actorflow::transactional::{FileSink, TwoPhaseCommit, committed_parts};
use actorflow::watermark::{WatermarkGenerator, WatermarkOutput};
use actorflow::window::{SessionWindows, SlidingWindows, TumblingWindows, WindowTime};
use csv::{Event, write_sorted};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: window_agg --input CSV --output OUT [--late-output L] \
    --window tumbling|sliding|session [--size MS] [--slide MS] [--gap MS] [--offset MS] \
    [--ooo MS] [--lateness MS] [--parallelism N] [--watermark periodic|punctuated] \
    [--wm-interval MS] [--mode streaming|batch] [--checkpoint-dir DIR] \
    [--checkpoint-interval MS] [--checkpoint-mode exactly-once|at-least-once] [--unaligned] \
    [--alignment-timeout MS] [--restore latest|latest-or-fresh|ID|PATH] [--source-rate N] [--operator-delay-us N] \
    [--metrics-file PATH] [--fault SPEC] [--group G] [--kafka-bounded] [--idleness MS] \
    [--kafka-malformed fail|skip]";

/// Flags that take no value.
const SWITCHES: &[&str] = &["unaligned", "kafka-bounded"];

struct Args {
    input: PathBuf,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    kafka: KafkaArgs,
    output: PathBuf,
    late_output: PathBuf,
    window: String,
    size: Option<i64>,
    slide: Option<i64>,
    gap: Option<i64>,
    offset: i64,
    ooo: i64,
    lateness: i64,
    parallelism: u32,
    punctuated: bool,
    wm_interval: u64,
    batch: bool,
    ck: CheckpointArgs,
    source_rate: Option<f64>,
    operator_delay: Duration,
    metrics_file: Option<PathBuf>,
    faults: Option<FaultPlan>,
    corrupt_latest: bool,
}

/// The Kafka source's flags.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
struct KafkaArgs {
    group: Option<String>,
    bounded: bool,
    idleness: Option<Duration>,
    skip_malformed: bool,
}

/// The checkpointing flags.
struct CheckpointArgs {
    dir: Option<PathBuf>,
    interval: Option<Duration>,
    at_least_once: bool,
    unaligned: bool,
    alignment_timeout: Option<Duration>,
    restore: Option<Restore>,
}

enum Restore {
    Latest,
    LatestOrFresh,
    Checkpoint(u64),
    Path(PathBuf),
}

impl CheckpointArgs {
    fn enabled(&self) -> bool {
        self.dir.is_some() || self.interval.is_some() || self.restore.is_some()
    }
}

fn parse_args() -> Result<Args, String> {
    let mut flags: HashMap<String, String> = HashMap::new();
    let mut it = web::from_args()?.into_iter();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument '{flag}'\n{USAGE}"));
        };
        if SWITCHES.contains(&name) {
            flags.insert(name.to_string(), String::new());
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        flags.insert(name.to_string(), value);
    }
    let mut take = |name: &str| flags.remove(name);
    let num = |name: &str, v: Option<String>| -> Result<Option<i64>, String> {
        v.map(|s| {
            s.parse::<i64>()
                .map_err(|_| format!("--{name} takes an integer, got '{s}'"))
        })
        .transpose()
    };
    let input: PathBuf = take("input")
        .ok_or(format!("--input is required\n{USAGE}"))?
        .into();
    let output: PathBuf = take("output")
        .ok_or(format!("--output is required\n{USAGE}"))?
        .into();
    let late_output = take("late-output").map(PathBuf::from).unwrap_or_else(|| {
        let mut s = output.clone().into_os_string();
        s.push(".late");
        s.into()
    });
    let window = take("window").ok_or(format!("--window is required\n{USAGE}"))?;
    let size = num("size", take("size"))?;
    let slide = num("slide", take("slide"))?;
    let gap = num("gap", take("gap"))?;
    let offset = num("offset", take("offset"))?.unwrap_or(0);
    let ooo = num("ooo", take("ooo"))?.unwrap_or(0);
    let lateness = num("lateness", take("lateness"))?.unwrap_or(0);
    let parallelism = num("parallelism", take("parallelism"))?.unwrap_or(1);
    let parallelism = u32::try_from(parallelism)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(format!(
            "--parallelism must be at least 1, got {parallelism}"
        ))?;
    let punctuated = match take("watermark").as_deref() {
        None | Some("periodic") => false,
        Some("punctuated") => true,
        Some(other) => {
            return Err(format!(
                "--watermark must be periodic|punctuated, got '{other}'"
            ));
        }
    };
    let wm_interval = num("wm-interval", take("wm-interval"))?.unwrap_or(200);
    let wm_interval = u64::try_from(wm_interval)
        .map_err(|_| format!("--wm-interval must be >= 0, got {wm_interval}"))?;
    let batch = match take("mode").as_deref() {
        None | Some("streaming") => false,
        Some("batch") => true,
        Some(other) => return Err(format!("--mode must be streaming|batch, got '{other}'")),
    };
    if ooo < 0 || lateness < 0 {
        return Err("--ooo and --lateness must be >= 0".into());
    }
    let millis = |name: &str, v: Option<i64>| -> Result<Option<Duration>, String> {
        v.map(|ms| {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| format!("--{name} must be >= 0, got {ms}"))
        })
        .transpose()
    };
    let interval = millis(
        "checkpoint-interval",
        num("checkpoint-interval", take("checkpoint-interval"))?,
    )?;
    if interval == Some(Duration::ZERO) {
        return Err("--checkpoint-interval must be at least 1 ms".into());
    }
    let at_least_once = match take("checkpoint-mode").as_deref() {
        None | Some("exactly-once") => false,
        Some("at-least-once") => true,
        Some(other) => {
            return Err(format!(
                "--checkpoint-mode must be exactly-once|at-least-once, got '{other}'"
            ));
        }
    };
    let unaligned = take("unaligned").is_some();
    let alignment_timeout = millis(
        "alignment-timeout",
        num("alignment-timeout", take("alignment-timeout"))?,
    )?;
    let dir = take("checkpoint-dir").map(PathBuf::from);
    let restore = match take("restore") {
        None => None,
        Some(s) if s == "latest" || s == "latest-or-fresh" || s.parse::<u64>().is_ok() => {
            if dir.is_none() {
                return Err(format!("--restore {s} needs --checkpoint-dir"));
            }
            Some(match (s.as_str(), s.parse::<u64>()) {
                ("latest", _) => Restore::Latest,
                (_, Ok(id)) => Restore::Checkpoint(id),
                _ => Restore::LatestOrFresh,
            })
        }
        Some(path) => Some(Restore::Path(path.into())),
    };
    if at_least_once && unaligned {
        return Err("--unaligned needs --checkpoint-mode exactly-once".into());
    }
    let ck = CheckpointArgs {
        dir,
        interval,
        at_least_once,
        unaligned,
        alignment_timeout,
        restore,
    };
    let source_rate = match take("source-rate") {
        None => None,
        Some(s) => Some(
            s.parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or(format!("--source-rate takes a positive number, got '{s}'"))?,
        ),
    };
    let delay_us = num("operator-delay-us", take("operator-delay-us"))?.unwrap_or(0);
    let operator_delay = u64::try_from(delay_us)
        .map(Duration::from_micros)
        .map_err(|_| format!("--operator-delay-us must be >= 0, got {delay_us}"))?;
    let metrics_file = take("metrics-file").map(PathBuf::from);
    let (mut faults, mut corrupt_latest) = (None, false);
    if let Some(spec) = take("fault") {
        let rest: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|p| {
                let corrupt = *p == "corrupt-latest";
                corrupt_latest |= corrupt;
                !corrupt && !p.is_empty()
            })
            .collect();
        if !rest.is_empty() {
            faults = Some(FaultPlan::parse(&rest.join(",")).map_err(|e| format!("--fault: {e}"))?);
        }
        if corrupt_latest && (ck.dir.is_none() || ck.restore.is_none()) {
            return Err("--fault corrupt-latest needs --checkpoint-dir and --restore".into());
        }
        if faults.is_some() && !ck.enabled() {
            return Err(
                "--fault needs checkpointing (--checkpoint-dir or --checkpoint-interval) to \
                 recover from the failure"
                    .into(),
            );
        }
    }
    let kafka = KafkaArgs {
        group: take("group"),
        bounded: take("kafka-bounded").is_some(),
        idleness: millis("idleness", num("idleness", take("idleness"))?)?,
        skip_malformed: match take("kafka-malformed").as_deref() {
            None | Some("fail") => false,
            Some("skip") => true,
            Some(other) => {
                return Err(format!(
                    "--kafka-malformed must be fail|skip, got '{other}'"
                ));
            }
        },
    };
    if let Some(unknown) = flags.keys().next() {
        return Err(format!("unknown flag --{unknown}\n{USAGE}"));
    }
    Ok(Args {
        input,
        kafka,
        output,
        late_output,
        window,
        size,
        slide,
        gap,
        offset,
        ooo,
        lateness,
        parallelism,
        punctuated,
        wm_interval,
        batch,
        ck,
        source_rate,
        operator_delay,
        metrics_file,
        faults,
        corrupt_latest,
    })
}

/// The oracle's punctuated generator: after every record that raises the highest timestamp,
/// the watermark `highest − ooo − 1` (Java's wrapping arithmetic included).
struct Punctuated {
    bound: i64,
    max_ts: i64,
    last: i64,
}

impl WatermarkGenerator<Event> for Punctuated {
    fn on_event(&mut self, _: &Event, ts: Timestamp, out: &mut WatermarkOutput) {
        if ts.0 > self.max_ts {
            self.max_ts = ts.0;
            let wm = self.max_ts.wrapping_sub(self.bound).wrapping_sub(1);
            if wm > self.last {
                self.last = wm;
                out.emit_watermark(Watermark(wm));
            }
        }
    }
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

/// Sum and count, with Java's wrapping `long` arithmetic; `delay` of busy work per record
/// (`--operator-delay-us`).
#[derive(Clone)]
struct SumCount {
    delay: Duration,
}

impl AggregateFunction<Event> for SumCount {
    type Acc = (i64, i64);
    type Out = (i64, i64);
    fn create_accumulator(&mut self) -> (i64, i64) {
        (0, 0)
    }
    #[inline]
    fn add(&mut self, e: Event, acc: &mut (i64, i64)) {
        if !self.delay.is_zero() {
            // Spin rather than sleep: an operator busy with each record, as a costly one is.
            let until = std::time::Instant::now() + self.delay;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        acc.0 = acc.0.wrapping_add(e.2);
        acc.1 += 1;
    }
    fn get_result(&mut self, acc: &(i64, i64)) -> (i64, i64) {
        *acc
    }
    fn merge(&mut self, a: &mut (i64, i64), b: (i64, i64)) {
        a.0 = a.0.wrapping_add(b.0);
        a.1 += b.1;
    }
}

type Row = (String, i64, i64, i64, i64);

#[allow(clippy::ptr_arg)] // the window function signature fixes the key type
fn emit_row(
    key: &String,
    ctx: &mut WindowContext<'_, TimeWindow>,
    (sum, count): (i64, i64),
    out: &mut Collector<Row>,
) -> Result<(), UserError> {
    let w = ctx.window();
    out.collect((key.clone(), w.start, w.end, sum, count));
    Ok(())
}
/// Where a checkpointed run keeps its files under `--checkpoint-dir`.
struct Layout {
    snapshots: PathBuf,
    out_parts: PathBuf,
    late_parts: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        Layout {
            snapshots: dir.join("snapshots"),
            out_parts: dir.join("parts").join("out"),
            late_parts: dir.join("parts").join("late"),
        }
    }

    /// A fresh run forgets an earlier run's checkpoints and output parts.
    fn clear(&self) -> Result<(), UserError> {
        for dir in [&self.snapshots, &self.out_parts, &self.late_parts] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot empty {}: {e}", dir.display()).into()),
            }
        }
        Ok(())
    }
}

fn open_store(path: &Path) -> Result<Arc<SledStore>, UserError> {
    Ok(Arc::new(SledStore::open(path).map_err(|e| e.to_string())?))
}

/// Turns the checkpointing flags into the environment's settings.
fn configure_checkpointing(
    env: &StreamExecutionEnvironment,
    args: &Args,
    layout: Option<&Layout>,
) -> Result<(), UserError> {
    let ck = &args.ck;
    env.checkpointing(|c| {
        c.settings.interval = ck.interval.unwrap_or(Duration::from_secs(1));
        c.settings.mode = if ck.at_least_once {
            CheckpointingMode::AtLeastOnce
        } else {
            CheckpointingMode::ExactlyOnce
        };
        c.settings.unaligned = ck.unaligned;
        c.settings.aligned_timeout = ck.alignment_timeout;
        // Keep a few, so a damaged newest checkpoint has a predecessor to fall back to.
        c.settings.retained = 3;
    });
    if let Some(layout) = layout {
        if ck.restore.is_none() {
            layout.clear()?;
        }
        let store = open_store(&layout.snapshots)?;
        if args.corrupt_latest {
            match store.corrupt_newest().map_err(|e| e.to_string())? {
                Some(id) => {
                    eprintln!("window_agg: damaged checkpoint {id} (--fault corrupt-latest)")
                }
                None => eprintln!("window_agg: no checkpoint to damage (--fault corrupt-latest)"),
            }
        }
        env.set_checkpoint_storage(store);
    }
    match &ck.restore {
        None => {}
        Some(Restore::Latest) => {
            env.restore_from(RestoreFrom::Latest);
        }
        Some(Restore::LatestOrFresh) => {
            env.restore_from(RestoreFrom::LatestOrFresh);
        }
        Some(Restore::Checkpoint(id)) => {
            env.restore_from(RestoreFrom::Checkpoint(CheckpointId(*id)));
        }
        Some(Restore::Path(path)) => {
            let nested = path.join("snapshots");
            let path = if nested.is_dir() {
                nested
            } else {
                path.clone()
            };
            let own = layout.map(|l| l.snapshots.as_path());
            let same = match (path.canonicalize(), own.map(Path::canonicalize)) {
                (Ok(a), Some(Ok(b))) => a == b,
                _ => false,
            };
            if same {
                env.restore_from(RestoreFrom::Latest);
            } else {
                env.restore_from(RestoreFrom::Store(open_store(&path)?));
            }
        }
    }
    if let Some(faults) = &args.faults {
        env.set_fault_plan(faults.clone());
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_id(id: Option<CheckpointId>) -> String {
    id.map_or("null".to_string(), |id| id.0.to_string())
}

/// One line of the metrics file.
fn event_json(event: &JobEvent) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    match event {
        JobEvent::CheckpointCompleted {
            id,
            kind,
            unaligned,
            duration_ms,
            alignment_ms,
            sync_ms,
            async_ms,
            bytes,
            shared_bytes,
            is_final,
        } => format!(
            "{{\"event\":\"checkpoint_completed\",\"id\":{},\"kind\":\"{}\",\"savepoint\":{},\
             \"final\":{is_final},\"duration_ms\":{duration_ms},\"alignment_ms\":{alignment_ms},\
             \"sync_ms\":{sync_ms},\"async_ms\":{async_ms},\
             \"bytes\":{bytes},\"shared_bytes\":{shared_bytes},\"ts_ms\":{ts}}}",
            id.0,
            if *unaligned { "unaligned" } else { "aligned" },
            *kind == CheckpointKind::Savepoint,
        ),
        JobEvent::CheckpointAborted { id, reason } => format!(
            "{{\"event\":\"checkpoint_aborted\",\"id\":{},\"reason\":{},\"ts_ms\":{ts}}}",
            id.0,
            json_str(reason)
        ),
        JobEvent::Restart {
            attempt,
            cause,
            from_checkpoint,
            delay_ms,
            generation,
        } => format!(
            "{{\"event\":\"restart\",\"attempt\":{attempt},\"cause\":{},\"from_checkpoint\":{},\
             \"delay_ms\":{delay_ms},\"generation\":{generation},\"ts_ms\":{ts}}}",
            json_str(cause),
            json_id(*from_checkpoint)
        ),
        JobEvent::Restored {
            checkpoint,
            generation,
        } => format!(
            "{{\"event\":\"restored\",\"checkpoint\":{},\"generation\":{generation},\"ts_ms\":{ts}}}",
            json_id(*checkpoint)
        ),
    }
}

/// A listener appending each event to `path` as a JSON line, written at once (a SIGKILL
/// loses nothing already reported).
fn metrics_listener(path: &Path, append: bool) -> Result<JobListener, UserError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| format!("cannot open the metrics file {}: {e}", path.display()))?;
    let file = Mutex::new(file);
    Ok(Arc::new(move |event: &JobEvent| {
        let mut line = event_json(event);
        line.push('\n');
        if let Ok(mut f) = file.lock()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            eprintln!("window_agg: cannot write the metrics file: {e}");
        }
    }))
}

/// The lines of every committed part file in `dir`.
fn committed_lines(dir: &Path) -> Result<Vec<String>, UserError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for part in committed_parts(dir)? {
        let text = std::fs::read_to_string(&part)
            .map_err(|e| format!("cannot read {}: {e}", part.display()))?;
        lines.extend(text.lines().map(str::to_string));
    }
    Ok(lines)
}

fn run(args: Args) -> Result<(), UserError> {
    let env = StreamExecutionEnvironment::new();
    web::get().attach(&env);
    env.set_parallelism(args.parallelism)
        .set_auto_watermark_interval(Duration::from_millis(args.wm_interval));
    if args.batch {
        env.set_runtime_mode(RuntimeMode::Batch);
    }
    let layout = args.ck.dir.as_deref().map(Layout::new);
    if args.ck.enabled() {
        configure_checkpointing(&env, &args, layout.as_ref())?;
    }
    if let Some(path) = &args.metrics_file {
        env.set_job_listener(metrics_listener(path, args.ck.restore.is_some())?);
    }
    let ooo = args.ooo;
    let strategy = if args.punctuated {
        WatermarkStrategy::for_generator(move || Punctuated {
            bound: ooo,
            max_ts: i64::MIN,
            last: i64::MIN,
        })
        .punctuated()
    } else {
        WatermarkStrategy::for_bounded_out_of_orderness_ms(ooo)
    }
    .with_timestamp_assigner(|e: &Event, _| e.1);
    let stamped = match kafka_url(&args.input) {
        Some(url) => kafka_events(&env, &args, &url, strategy)?,
        None => {
            let mut options = TextFileOptions::default();
            if let Some(rate) = args.source_rate {
                options = options.rate_limit(rate);
            }
            let lines = env
                .read_text_file_with(&args.input, options)
                .set_parallelism(1);
            csv::parse_lines(lines, args.input.display().to_string(), csv::parse_line)
                .name("parse")
                .set_parallelism(1)
                .assign_timestamps_and_watermarks(strategy)
                .name("timestamps+watermarks")
                .uid("timestamps")
                .set_parallelism(1)
        }
    };
    let keyed = stamped.key_by_ref(|e: &Event| &e.0);
    let late_tag: OutputTag<Event> = OutputTag::new("late");
    let need =
        |v: Option<i64>, flag: &str| v.ok_or(format!("--window {} needs --{flag}", args.window));
    let agg = SumCount {
        delay: args.operator_delay,
    };
    let result = match args.window.as_str() {
        "tumbling" => {
            let assigner =
                TumblingWindows::new(need(args.size, "size")?, args.offset, WindowTime::Event)?;
            keyed
                .window(assigner)
                .allowed_lateness_ms(args.lateness)
                .side_output_late_data(&late_tag)
                .aggregate_with(agg, emit_row)
        }
        "sliding" => {
            let assigner = SlidingWindows::new(
                need(args.size, "size")?,
                need(args.slide, "slide")?,
                args.offset,
                WindowTime::Event,
            )?;
            keyed
                .window(assigner)
                .allowed_lateness_ms(args.lateness)
                .side_output_late_data(&late_tag)
                .aggregate_with(agg, emit_row)
        }
        "session" => {
            let assigner = SessionWindows::<Event>::event_time(need(args.gap, "gap")?)?;
            keyed
                .window(assigner)
                .allowed_lateness_ms(args.lateness)
                .side_output_late_data(&late_tag)
                .aggregate_with(agg, emit_row)
        }
        other => {
            return Err(format!("--window must be tumbling|sliding|session, got '{other}'").into());
        }
    }
    .name(&format!("window-{}", args.window))
    .uid("window");
    if let Some(url) = postgres_output(&args.output) {
        to_postgres(&env, &url, &result, &late_tag)?;
        web::get().keep_serving_blocking();
        return Ok(());
    }
    if let Some(url) = kafka_url(&args.output) {
        to_kafka(&env, &url, &result, &late_tag)?;
        web::get().keep_serving_blocking();
        return Ok(());
    }
    let rows = result
        .map(|(k, s, e, sum, count): Row| format!("{k},{s},{e},{sum},{count}"))
        .name("format-rows");
    let late = result
        .get_side_output(&late_tag)
        .map(|(k, t, v): Event| format!("{k},{t},{v}"))
        .name("format-late");
    match &layout {
        Some(layout) => {
            let (out_dir, late_dir) = (layout.out_parts.clone(), layout.late_parts.clone());
            rows.add_sink("rows-file-sink", move |_: &TaskInfo| {
                Ok(TwoPhaseCommit::new(FileSink::<String>::new(
                    out_dir.clone(),
                )))
            })
            .uid("rows-sink");
            late.add_sink("late-file-sink", move |_: &TaskInfo| {
                Ok(TwoPhaseCommit::new(FileSink::<String>::new(
                    late_dir.clone(),
                )))
            })
            .uid("late-sink");
            env.execute_blocking("window_agg")?;
            write_sorted(&args.output, committed_lines(&layout.out_parts)?)?;
            write_sorted(&args.late_output, committed_lines(&layout.late_parts)?)?;
        }
        None => {
            let rows = rows.collect();
            let late = late.collect();
            env.execute_blocking("window_agg")?;
            write_sorted(&args.output, rows.take())?;
            write_sorted(&args.late_output, late.take())?;
        }
    }
    web::get().keep_serving_blocking();
    Ok(())
}

/// `--output postgresql://...`: the output is a PostgreSQL table, not a file.
fn postgres_output(output: &Path) -> Option<String> {
    let s = output.to_str()?;
    (s.starts_with("postgresql://") || s.starts_with("postgres://")).then(|| s.to_string())
}

/// Splits `?table=NAME` (default `windows`) off a connection URL.
fn split_table(url: &str) -> Result<(String, String), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut table = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("table", t)) => table = Some(t.to_string()),
            _ => rest.push(kv),
        }
    }
    let table = table.unwrap_or_else(|| "windows".into());
    if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "--output {url}: table={table} must be letters, digits and _"
        ));
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, table))
}

/// Window rows into table `NAME` (`key, window_start, window_end, sum, count`) and late
/// records into `NAME_late` (`key, ts, value`), both created if missing; exactly once with
/// checkpointing (`--checkpoint-dir`), through `PostgresSink`.
#[cfg(feature = "postgres")]
fn to_postgres(
    env: &StreamExecutionEnvironment,
    url: &str,
    result: &DataStream<Row>,
    late_tag: &OutputTag<Event>,
) -> Result<(), UserError> {
    use actorflow::postgres::{PostgresSink, SqlValue};
    let (url, table) = split_table(url)?;
    let rows = PostgresSink::<Row>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (key text, window_start bigint, window_end bigint, sum bigint, count bigint)"
        ))
        .table(&table, &["key", "window_start", "window_end", "sum", "count"])
        .row(|(k, s, e, sum, count)| {
            vec![
                SqlValue::from(k.as_str()),
                SqlValue::Int(*s),
                SqlValue::Int(*e),
                SqlValue::Int(*sum),
                SqlValue::Int(*count),
            ]
        })
        .build()
        .map_err(|e| e.to_string())?;
    let late_table = format!("{table}_late");
    let late = PostgresSink::<Event>::builder(&url)
        .create_table(&format!(
            "CREATE TABLE IF NOT EXISTS {late_table} (key text, ts bigint, value bigint)"
        ))
        .table(&late_table, &["key", "ts", "value"])
        .row(|(k, t, v)| {
            vec![
                SqlValue::from(k.as_str()),
                SqlValue::Int(*t),
                SqlValue::Int(*v),
            ]
        })
        .build()
        .map_err(|e| e.to_string())?;
    result
        .add_sink("rows-postgres-sink", move |_: &TaskInfo| Ok(rows.clone()))
        .uid("rows-sink");
    result
        .get_side_output(late_tag)
        .add_sink("late-postgres-sink", move |_: &TaskInfo| Ok(late.clone()))
        .uid("late-sink");
    env.execute_blocking("window_agg")?;
    Ok(())
}

#[cfg(not(feature = "postgres"))]
fn to_postgres(
    _env: &StreamExecutionEnvironment,
    url: &str,
    _result: &DataStream<Row>,
    _late_tag: &OutputTag<Event>,
) -> Result<(), UserError> {
    split_table(url)?;
    Err("--output postgresql://... needs the cargo feature `postgres`: cargo run --features postgres --example window_agg -- ...".into())
}

/// `kafka://HOST:PORT/TOPIC` as `(HOST:PORT, TOPIC)`.
fn kafka_url(path: &Path) -> Option<String> {
    let s = path.to_str()?;
    s.starts_with("kafka://").then(|| s.to_string())
}

/// Splits `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`.
fn split_kafka_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("kafka://").unwrap_or(url);
    match rest.split_once('/') {
        Some((brokers, topic)) if !brokers.is_empty() && !topic.is_empty() => {
            Ok((brokers.to_string(), topic.to_string()))
        }
        _ => Err(format!("{url}: expected kafka://HOST:PORT/TOPIC")),
    }
}

/// `--input kafka://...`: the events of a topic, watermarks per partition.
#[cfg(feature = "kafka")]
fn kafka_events(
    env: &StreamExecutionEnvironment,
    args: &Args,
    url: &str,
    mut strategy: WatermarkStrategy<Event>,
) -> Result<DataStream<Event>, UserError> {
    use actorflow::kafka::{KafkaRecord, KafkaSource, OffsetsInitializer, OnMalformed};
    let (brokers, topic) = split_kafka_url(url)?;
    if let Some(idle) = args.kafka.idleness {
        strategy = strategy.with_idleness(idle);
    }
    let mut builder = KafkaSource::<Event>::builder()
        .bootstrap_servers(&brokers)
        .topics(&[&topic])
        .deserializer(|r: &KafkaRecord<'_>| {
            let v = r.value.ok_or("the record has no value")?;
            let line = std::str::from_utf8(v).map_err(|e| format!("not UTF-8: {e}"))?;
            csv::parse_line(line.trim_end_matches(['\n', '\r']))
                .map_err(|why| format!("{why}: {line:?}"))
        })
        .watermark_strategy(strategy)
        .on_malformed(if args.kafka.skip_malformed {
            OnMalformed::Skip
        } else {
            OnMalformed::Fail
        });
    if let Some(g) = &args.kafka.group {
        builder = builder.group_id(g);
    }
    if args.kafka.bounded {
        builder = builder.bounded(OffsetsInitializer::Latest);
    }
    let source = builder.build().map_err(|e| e.to_string())?;
    Ok(env
        .add_source("kafka-source", source)
        .uid("kafka-source")
        .set_parallelism(args.parallelism))
}

#[cfg(not(feature = "kafka"))]
fn kafka_events(
    _env: &StreamExecutionEnvironment,
    _args: &Args,
    url: &str,
    _strategy: WatermarkStrategy<Event>,
) -> Result<DataStream<Event>, UserError> {
    split_kafka_url(url)?;
    Err("--input kafka://... needs the cargo feature `kafka`: cargo run --features kafka --example window_agg -- ...".into())
}

/// `--output kafka://HOST:PORT/TOPIC`: rows into TOPIC, late records into `TOPIC.late`, at
/// least once.
#[cfg(feature = "kafka")]
fn to_kafka(
    env: &StreamExecutionEnvironment,
    url: &str,
    result: &DataStream<Row>,
    late_tag: &OutputTag<Event>,
) -> Result<(), UserError> {
    use actorflow::kafka::{KafkaSink, ValueString};
    let (brokers, topic) = split_kafka_url(url)?;
    let sink = |topic: &str| {
        KafkaSink::<String>::builder()
            .bootstrap_servers(&brokers)
            .topic(topic)
            .serializer(ValueString)
            .build()
            .map_err(|e| UserError::from(e.to_string()))
    };
    let (rows, late) = (sink(&topic)?, sink(&format!("{topic}.late"))?);
    result
        .map(|(k, s, e, sum, count): Row| format!("{k},{s},{e},{sum},{count}"))
        .name("format-rows")
        .add_sink("rows-kafka-sink", move |_: &TaskInfo| Ok(rows.clone()))
        .uid("rows-sink");
    result
        .get_side_output(late_tag)
        .map(|(k, t, v): Event| format!("{k},{t},{v}"))
        .name("format-late")
        .add_sink("late-kafka-sink", move |_: &TaskInfo| Ok(late.clone()))
        .uid("late-sink");
    env.execute_blocking("window_agg")?;
    Ok(())
}

#[cfg(not(feature = "kafka"))]
fn to_kafka(
    _env: &StreamExecutionEnvironment,
    url: &str,
    _result: &DataStream<Row>,
    _late_tag: &OutputTag<Event>,
) -> Result<(), UserError> {
    split_kafka_url(url)?;
    Err("--output kafka://... needs the cargo feature `kafka`: cargo run --features kafka --example window_agg -- ...".into())
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
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("window_agg: {e}");
            ExitCode::FAILURE
        }
    }
}
