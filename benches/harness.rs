//! The project's benchmark harness: actorflow jobs beside hand-written single-thread loops
//! doing the same work on the same input, in the same process and session.
//!
//! ```text
//! cargo bench --bench harness                 # all scenarios
//! cargo bench --bench harness -- wordcount    # scenarios whose name contains "wordcount"
//! cargo bench --bench harness -- windows      # tumbling, sliding, session windows
//! cargo bench --bench harness -- checkpoint   # checkpoint cost, aligned vs unaligned, recovery
//! cargo bench --bench harness -- async-io     # 5 ms calls: async I/O, map_blocking, blocking map
//! cargo bench --bench harness --features web -- web-overhead   # REST server + polling client
//! cargo bench --bench harness --features postgres -- postgres   # needs ACTORFLOW_POSTGRES_URL
//! cargo bench --bench harness --features postgres -- postgres-cdc   # the CDC part only
//! cargo bench --bench harness --features kafka -- kafka   # needs ACTORFLOW_KAFKA_BROKERS
//! cargo bench --bench harness -- nexmark      # q0, q5, q11 beside hand-written loops
//! ```
//!
//! Each scenario runs `REPEATS` times after one warm-up run; the median wall time is reported
//! as records/s, and the ratio is actorflow's time over the loop's time (lower is better).
//! The memory scenario runs each size in a child process and reads its peak RSS (`VmHWM`).
//! Method and results: `docs/BENCHMARKS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actorflow::prelude::*;
use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// As in the examples: records are allocated on one thread and freed on another, which
// glibc's malloc handles poorly. `--features bench-system-alloc` measures with the system
// allocator instead (docs/BENCHMARKS.md has both).
#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REPEATS: usize = 5;
const WORDS: u64 = 10_000_000;
const VOCABULARY: u64 = 100_000;
const KEYED_RECORDS: u64 = 50_000_000;
const KEYS: u64 = 10_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One result line: `count` items in `d`, and `d` as a multiple of the baseline's time.
#[cfg_attr(
    not(any(feature = "postgres", feature = "kafka")),
    allow(dead_code, reason = "the connector scenarios use it")
)]
fn rate_line(name: &str, count: f64, unit: &str, d: Duration, base: Duration, base_name: &str) {
    println!(
        "{name:<40} {:>10.0} {unit}/s ({:>7.1} ms)  {:.2}x {base_name}",
        count / d.as_secs_f64(),
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() / base.as_secs_f64()
    );
}

fn time(mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..REPEATS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn report(name: &str, records: u64, job: Duration, baseline: Duration) {
    let rate = |d: Duration| records as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{name:<34} {:>8.2} M rec/s  ({:>7.1} ms)   loop {:>8.2} M rec/s ({:>7.1} ms)   ratio {:.2}x",
        rate(job),
        job.as_secs_f64() * 1e3,
        rate(baseline),
        baseline.as_secs_f64() * 1e3,
        job.as_secs_f64() / baseline.as_secs_f64()
    );
}

// ----- word count ---------------------------------------------------------------------

/// Zipf-ish words from a seeded generator, 10 per line; written once and reused.
fn word_file() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let path = dir.join(format!("words-{WORDS}-{VOCABULARY}.txt"));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = 42u64;
    for i in 0..WORDS {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Skewed: square a uniform draw, so low word ids are much more frequent.
        let u = (state >> 11) as f64 / (1u64 << 53) as f64;
        let w = (u * u * VOCABULARY as f64) as u64;
        write!(out, "w{w}{}", if i % 10 == 9 { "\n" } else { " " }).unwrap();
    }
    out.flush().unwrap();
    path
}

/// The hand-written loop: read, split on ASCII whitespace, count, sort.
fn wordcount_loop(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read(path).unwrap();
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    for word in text
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word).or_default() += 1;
    }
    let mut out: Vec<(String, u64)> = counts
        .into_iter()
        .map(|(w, c)| (String::from_utf8_lossy(w).into_owned(), c))
        .collect();
    out.sort_unstable();
    out
}

/// The `wordcount` example's job: batch mode, so the sum emits final counts only.
fn wordcount_job(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    parallelism: u32,
) -> Vec<(String, u64)> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        .set_runtime_mode(actorflow::RuntimeMode::Batch);
    let finals = env
        .read_text_file(path)
        .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
            for w in line.split_ascii_whitespace() {
                out.collect((w.to_owned(), 1));
            }
        })
        .key_by_ref(|(w, _): &(String, u64)| w)
        .sum(|(_, n)| n)
        .collect();
    rt.block_on(env.execute("wordcount")).unwrap();
    let mut out = finals.take();
    out.sort_unstable();
    out
}

fn wordcount(rt: &tokio::runtime::Runtime) {
    let path = word_file();
    let expected = wordcount_loop(&path);
    let baseline = time(|| {
        black_box(wordcount_loop(&path));
    });
    for p in [1, 2] {
        assert_eq!(
            wordcount_job(rt, &path, p),
            expected,
            "wordcount p={p} is wrong"
        );
        let job = time(|| {
            black_box(wordcount_job(rt, &path, p));
        });
        report(&format!("wordcount p={p}"), WORDS, job, baseline);
    }
}

// ----- keyed count --------------------------------------------------------------------

/// The hand-written loop: a rolling count per key, every update emitted (to `black_box`).
fn keyed_count_loop() -> u64 {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut checksum = 0u64;
    for i in 0..KEYED_RECORDS {
        let key = i % KEYS;
        let c = counts.entry(key).or_default();
        *c += 1;
        let update = black_box((key, *c));
        checksum = checksum.wrapping_add(update.1);
    }
    checksum
}

/// Sums the second field of what it receives.
struct Checksum(u64, Arc<Mutex<u64>>);

impl Sink for Checksum {
    type Input = (u64, u64);
    async fn write_batch(&mut self, batch: Batch<(u64, u64)>) -> Result<(), UserError> {
        for (_, c) in batch.values() {
            self.0 = self.0.wrapping_add(*c);
        }
        Ok(())
    }
    async fn finish(&mut self) -> Result<(), UserError> {
        let mut total = self.1.lock().unwrap();
        *total = total.wrapping_add(self.0);
        Ok(())
    }
}

fn keyed_count_job(rt: &tokio::runtime::Runtime, parallelism: u32) -> u64 {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let total = Arc::new(Mutex::new(0u64));
    let target = total.clone();
    env.from_sequence(0, KEYED_RECORDS - 1)
        .map(|i| (i % KEYS, 1u64))
        .key_by(|(k, _)| *k)
        .sum(|(_, c)| c)
        .add_sink("checksum", move |_: &TaskInfo| {
            Ok(Checksum(0, target.clone()))
        });
    rt.block_on(env.execute("keyed count")).unwrap();
    *total.lock().unwrap()
}

fn keyed_count(rt: &tokio::runtime::Runtime) {
    let expected = keyed_count_loop();
    let baseline = time(|| {
        black_box(keyed_count_loop());
    });
    for p in [1, 2] {
        assert_eq!(
            keyed_count_job(rt, p),
            expected,
            "keyed count p={p} is wrong"
        );
        let job = time(|| {
            black_box(keyed_count_job(rt, p));
        });
        report(
            &format!("keyed count u64 p={p}"),
            KEYED_RECORDS,
            job,
            baseline,
        );
    }
}

// ----- memory under backpressure ------------------------------------------------------

/// Sleeps 1 ms per batch: a slow sink.
struct SlowSink;

impl Sink for SlowSink {
    type Input = String;
    async fn write_batch(&mut self, batch: Batch<String>) -> Result<(), UserError> {
        black_box(batch);
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child-process mode: run `records` 100-byte records into a slow sink, print peak RSS.
fn memory_child(records: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1);
    env.from_generator(GeneratorSource::new(records, |i| format!("{i:0>100}")))
        .map(|s| s)
        .add_sink("slow", |_: &TaskInfo| Ok(SlowSink))
        .disable_chaining();
    let before = peak_rss_kib();
    let result = rt.block_on(env.execute("memory")).unwrap();
    let source = result.metrics.vertex("Source").next().unwrap().clone();
    println!(
        "{} {} {} {}",
        before,
        peak_rss_kib(),
        source.records_out,
        source.backpressured.as_millis()
    );
}

fn memory() {
    let lane = actorflow::JobConfig::default().lane_capacity as u64;
    println!("memory: 100-byte records through a 1 ms/batch sink; lanes hold {lane} records");
    for factor in [0u64, 100, 1000] {
        let records = factor * lane;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--memory-child", &records.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        assert_eq!(
            f.len(),
            4,
            "child output: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "  input {:>4}x lanes = {:>8} records ({:>6.1} MB): peak RSS {:>6.1} MB (before the job {:>5.1} MB), source backpressured {:>5.1} s",
            factor,
            records,
            (records * 100) as f64 / 1e6,
            f[1] as f64 / 1024.0,
            f[0] as f64 / 1024.0,
            f[3] as f64 / 1e3
        );
    }
}

// ----- event-time windows ------------------------------------------------------------

const EVENTS: u64 = 10_000_000;
const EVENT_KEYS: u64 = 1_000;
/// Events per second of event time: 10 M events span 500 s.
const EVENTS_PER_SECOND: u64 = 20_000;
/// Out-of-orderness of the input, and the watermark bound: nothing is late, so the job's
/// output must equal the loop's whatever the watermark timing.
const OOO_MS: i64 = 100;

/// `key,timestamp_ms,value` lines from a seeded generator, timestamps jittered by up to
/// `OOO_MS`; written once and reused.
fn event_file() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let path = dir.join(format!("events-{EVENTS}-{EVENT_KEYS}.csv"));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let base: i64 = 1_700_000_000_000;
    for i in 0..EVENTS {
        let t = base + (i * 1000 / EVENTS_PER_SECOND) as i64 - (next() % OOO_MS as u64) as i64;
        let key = next() % EVENT_KEYS;
        let value = (next() % 2001) as i64 - 1000;
        writeln!(out, "k{key},{t},{value}").unwrap();
    }
    out.flush().unwrap();
    path
}

type Event = (String, i64, i64);
type Row = (String, i64, i64, i64, i64);

fn parse(line: &[u8]) -> Event {
    let text = std::str::from_utf8(line).unwrap();
    let mut f = text.splitn(3, ',');
    let key = f.next().unwrap().to_string();
    (
        key,
        f.next().unwrap().parse().unwrap(),
        f.next().unwrap().parse().unwrap(),
    )
}

#[derive(Clone, Copy, Debug)]
enum WindowKind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

/// The hand-written loop: read, parse, aggregate per key and window in a hash map, sort.
fn windows_loop(path: &Path, kind: WindowKind) -> Vec<Row> {
    let text = std::fs::read(path).unwrap();
    let lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut out: Vec<Row> = Vec::new();
    match kind {
        WindowKind::Tumbling(size) | WindowKind::Sliding(size, _) => {
            let slide = match kind {
                WindowKind::Sliding(_, slide) => slide,
                _ => size,
            };
            let mut acc: HashMap<(String, i64), (i64, i64)> = HashMap::new();
            for line in lines {
                let (k, t, v) = parse(line);
                let last = t - t.rem_euclid(slide);
                let mut start = last;
                while start > t - size {
                    let e = acc.entry((k.clone(), start)).or_default();
                    e.0 += v;
                    e.1 += 1;
                    start -= slide;
                }
            }
            out.extend(
                acc.into_iter()
                    .map(|((k, s), (sum, n))| (k, s, s + size, sum, n)),
            );
        }
        WindowKind::Session(gap) => {
            let mut per_key: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
            for line in lines {
                let (k, t, v) = parse(line);
                per_key.entry(k).or_default().push((t, v));
            }
            for (k, mut evs) in per_key {
                evs.sort_unstable();
                let (mut start, mut end, mut sum, mut n) = (evs[0].0, evs[0].0 + gap, 0, 0);
                for (t, v) in evs {
                    if t > end {
                        out.push((k.clone(), start, end, sum, n));
                        (start, sum, n) = (t, 0, 0);
                    }
                    end = end.max(t + gap);
                    sum += v;
                    n += 1;
                }
                out.push((k, start, end, sum, n));
            }
        }
    }
    out.sort_unstable();
    out
}

#[derive(Clone)]
struct SumCount;

impl AggregateFunction<Event> for SumCount {
    type Acc = (i64, i64);
    type Out = (i64, i64);
    fn create_accumulator(&mut self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&mut self, e: Event, acc: &mut (i64, i64)) {
        acc.0 += e.2;
        acc.1 += 1;
    }
    fn get_result(&mut self, acc: &(i64, i64)) -> (i64, i64) {
        *acc
    }
    fn merge(&mut self, a: &mut (i64, i64), b: (i64, i64)) {
        a.0 += b.0;
        a.1 += b.1;
    }
}

/// The `window_agg` example's job: one source subtask, bounded out-of-orderness, keyed
/// windows at `parallelism`, sum and count.
fn windows_job(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    kind: WindowKind,
    parallelism: u32,
) -> Vec<Row> {
    windows_job_with(rt, path, kind, parallelism, |_| {})
}

/// [`windows_job`] with extra settings (checkpointing).
fn windows_job_with(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    kind: WindowKind,
    parallelism: u32,
    configure: impl FnOnce(&StreamExecutionEnvironment),
) -> Vec<Row> {
    use actorflow::window::{SessionWindows, SlidingWindows, TumblingWindows};
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    configure(&env);
    let keyed = env
        .read_text_file(path)
        .set_parallelism(1)
        .map(|line: String| parse(line.as_bytes()))
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_ms(OOO_MS)
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .set_parallelism(1)
        .key_by_ref(|e: &Event| &e.0);
    let emit = |k: &String,
                ctx: &mut WindowContext<'_, TimeWindow>,
                (sum, n): (i64, i64),
                out: &mut Collector<Row>| {
        let w = ctx.window();
        out.collect((k.clone(), w.start, w.end, sum, n));
        Ok(())
    };
    let rows = match kind {
        WindowKind::Tumbling(size) => keyed
            .window(TumblingWindows::event_time(size).unwrap())
            .aggregate_with(SumCount, emit),
        WindowKind::Sliding(size, slide) => keyed
            .window(SlidingWindows::event_time(size, slide).unwrap())
            .aggregate_with(SumCount, emit),
        WindowKind::Session(gap) => keyed
            .window(SessionWindows::event_time(gap).unwrap())
            .aggregate_with(SumCount, emit),
    }
    .collect();
    rt.block_on(env.execute("windows")).unwrap();
    let mut out = rows.take();
    out.sort_unstable();
    out
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, in clock ticks (100 per second).
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn windows(rt: &tokio::runtime::Runtime) {
    let path = event_file();
    for (name, kind) in [
        ("tumbling 10 s", WindowKind::Tumbling(10_000)),
        ("sliding 40 s / 10 s", WindowKind::Sliding(40_000, 10_000)),
        ("session gap 100 ms", WindowKind::Session(100)),
    ] {
        let expected = windows_loop(&path, kind);
        let baseline = time(|| {
            black_box(windows_loop(&path, kind));
        });
        for p in [1, 2] {
            assert!(
                windows_job(rt, &path, kind, p) == expected,
                "{name} p={p} differs from the loop"
            );
            let cpu_before = cpu_time();
            let job = time(|| {
                black_box(windows_job(rt, &path, kind, p));
            });
            let cpu = (cpu_time() - cpu_before).as_secs_f64() / (REPEATS + 1) as f64;
            report(&format!("{name} p={p}"), EVENTS, job, baseline);
            println!(
                "{:<34} {:>8.2} M events per CPU-second ({} rows)",
                "",
                EVENTS as f64 / cpu / 1e6,
                expected.len()
            );
        }
    }
}

// ----- checkpoints -----------------------------------------------------------------------

/// A fresh sled store in `target/bench-data`.
fn sled_store(name: &str) -> Arc<actorflow::snapshot::SledStore> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    Arc::new(actorflow::snapshot::SledStore::open(&dir).unwrap())
}

/// The tumbling-window job with a checkpoint every second into sled, against none; runs
/// alternate so drift hits both alike.
fn checkpoint_overhead(rt: &tokio::runtime::Runtime) {
    use actorflow::checkpoint::JobEvent;
    let path = event_file();
    let kind = WindowKind::Tumbling(10_000);
    let expected = windows_loop(&path, kind);
    let baseline = time(|| {
        black_box(windows_loop(&path, kind));
    });
    for p in [1, 2] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        let completed = Arc::new(Mutex::new(Vec::new()));
        for run in 0..=REPEATS {
            let t = Instant::now();
            let rows = windows_job_with(rt, &path, kind, p, |_| {});
            let plain = t.elapsed();
            let sink = completed.clone();
            let t = Instant::now();
            let rows_ck = windows_job_with(rt, &path, kind, p, |env| {
                env.enable_checkpointing(Duration::from_secs(1))
                    .set_checkpoint_storage(sled_store("ck-overhead"))
                    .set_job_listener(Arc::new(move |e| {
                        if let JobEvent::CheckpointCompleted {
                            duration_ms, bytes, ..
                        } = e
                        {
                            sink.lock().unwrap().push((*duration_ms, *bytes));
                        }
                    }));
            });
            let checkpointed = t.elapsed();
            assert!(
                rows == expected && rows_ck == expected,
                "p={p}: output differs"
            );
            if run > 0 {
                off.push(plain);
                on.push(checkpointed);
            }
        }
        let (off, on) = (median(off), median(on));
        report(
            &format!("tumbling p={p}, no checkpoints"),
            EVENTS,
            off,
            baseline,
        );
        report(
            &format!("tumbling p={p}, checkpoint every 1 s"),
            EVENTS,
            on,
            baseline,
        );
        let c = completed.lock().unwrap();
        let n = c.len().max(1);
        println!(
            "{:<34} cost {:+.1} %; {} checkpoints, mean {} ms, mean {} bytes",
            "",
            (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0,
            c.len(),
            c.iter().map(|x| x.0).sum::<u64>() / n as u64,
            c.iter().map(|x| x.1).sum::<u64>() / n as u64
        );
    }
}

/// What publishing one checkpoint costs in each store: `put_blob` of its blobs, then
/// `commit`. The durable sled store (fsync of the database's files and the head record)
/// against the same store without fsyncs and against memory, for a small checkpoint (4 blobs
/// of 1 KB), a medium one (4 × 256 KB) and the large-state benchmark's size (121 MB).
fn store_commit() {
    use actorflow::snapshot::{FORMAT_VERSION, Manifest, MemoryStore, SledStore, SnapshotStore};
    let sizes: [(&str, usize, usize, usize); 3] = [
        ("4 × 1 KB", 4, 1 << 10, 40),
        ("4 × 256 KB", 4, 256 << 10, 20),
        ("1 × 121 MB", 1, 121 << 20, 3),
    ];
    for (label, blobs, size, rounds) in sizes {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let mut line = format!("{:<34}", format!("store commit, {label}"));
        for store_kind in ["sled durable", "sled no fsync", "memory"] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench-data")
                .join(format!("commit-{}", store_kind.replace(' ', "-")));
            let _ = std::fs::remove_dir_all(&dir);
            let store: Box<dyn SnapshotStore> = match store_kind {
                "sled durable" => Box::new(SledStore::open(&dir).unwrap()),
                "sled no fsync" => Box::new(SledStore::open_without_fsync(&dir).unwrap()),
                _ => Box::new(MemoryStore::new()),
            };
            let mut times = Vec::new();
            for round in 0..rounds as u64 {
                let id = actorflow::actorflow_runtime::CheckpointId(round + 1);
                let t = Instant::now();
                let entries = (0..blobs)
                    .map(|b| {
                        store
                            .put_blob(id, &format!("subtask-0-{b}"), &payload)
                            .unwrap()
                    })
                    .collect();
                store
                    .commit(&Manifest {
                        version: FORMAT_VERSION,
                        id,
                        kind: actorflow::actorflow_runtime::CheckpointKind::Checkpoint,
                        triggered_ms: 0,
                        blobs: entries,
                        metadata: Vec::new(),
                    })
                    .unwrap();
                times.push(t.elapsed());
                if round >= 2 {
                    store
                        .remove(actorflow::actorflow_runtime::CheckpointId(round - 1))
                        .unwrap();
                }
            }
            line.push_str(&format!(
                " {store_kind}: {:.2} ms",
                median(times).as_secs_f64() * 1e3
            ));
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!("{line}");
    }
}

/// Sum per key and 1 s window with a window operator that spins `delay` per record: with an
/// unthrottled generator, the source is hundreds of times faster, so the lanes stay full.
/// Returns the completed checkpoints' (duration ms, bytes).
fn backpressured_checkpoints(
    rt: &tokio::runtime::Runtime,
    unaligned: bool,
    lane_capacity: usize,
    delay: Duration,
    records: u64,
) -> Vec<(u64, u64, bool)> {
    use actorflow::checkpoint::JobEvent;
    use actorflow::window::TumblingWindows;
    let env = StreamExecutionEnvironment::new();
    let completed = Arc::new(Mutex::new(Vec::new()));
    let sink = completed.clone();
    env.set_parallelism(2)
        .set_lane_capacity(lane_capacity)
        .enable_checkpointing(Duration::from_millis(500))
        .checkpointing(|c| c.settings.unaligned = unaligned)
        .set_checkpoint_storage(sled_store("ck-backpressure"))
        .set_job_listener(Arc::new(move |e| {
            if let JobEvent::CheckpointCompleted {
                duration_ms,
                bytes,
                is_final: false,
                unaligned,
                ..
            } = e
            {
                sink.lock()
                    .unwrap()
                    .push((*duration_ms, *bytes, *unaligned));
            }
        }));
    #[derive(Clone)]
    struct Slow(Duration);
    impl AggregateFunction<(u64, i64)> for Slow {
        type Acc = u64;
        type Out = u64;
        fn create_accumulator(&mut self) -> u64 {
            0
        }
        fn add(&mut self, _: (u64, i64), acc: &mut u64) {
            let until = Instant::now() + self.0;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            *acc += 1;
        }
        fn get_result(&mut self, acc: &u64) -> u64 {
            *acc
        }
        fn merge(&mut self, a: &mut u64, b: u64) {
            *a += b;
        }
    }
    env.from_generator(GeneratorSource::new(records, |i| (i % 64, i as i64)))
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &(u64, i64), _| e.1),
        )
        .set_parallelism(1)
        .key_by(|e: &(u64, i64)| e.0)
        .window(TumblingWindows::event_time(1_000).unwrap())
        .aggregate(Slow(delay))
        .discard();
    rt.block_on(env.execute("backpressured")).unwrap();
    completed.lock().unwrap().clone()
}

fn aligned_vs_unaligned(rt: &tokio::runtime::Runtime) {
    // 2 subtasks × 200 µs per record = 10 000 records/s; the generator alone makes tens of
    // millions. 100 000 records keep the source backpressured for ~7 s.
    let delay = Duration::from_micros(200);
    for capacity in [4_096, 16_384] {
        for unaligned in [false, true] {
            let mut c = backpressured_checkpoints(rt, unaligned, capacity, delay, 100_000);
            c.sort_unstable();
            let n = c.len();
            let pick = |q: f64| c.get(((n as f64 - 1.0) * q) as usize).map_or(0, |x| x.0);
            println!(
                "{:<34} {} checkpoints: duration p50 {} ms, max {} ms; mean {} KB stored",
                format!(
                    "{} lanes {capacity}",
                    if unaligned { "unaligned" } else { "aligned" }
                ),
                n,
                pick(0.5),
                pick(1.0),
                c.iter().map(|x| x.1).sum::<u64>() / n.max(1) as u64 / 1000
            );
        }
    }
}

/// A keyed process function holding ~100 bytes per key (1 M keys, 8 M records at 1 M/s),
/// run three ways: without checkpoints (the baseline), with a checkpoint every 2 s and no
/// failure (job time, and per checkpoint the subtask's pause at the barrier, the asynchronous
/// part and the size), and failing once after a checkpoint of the full state (the time from
/// the failure to the first record processed after the restore).
fn recovery_time(rt: &tokio::runtime::Runtime) {
    use actorflow::checkpoint::JobEvent;
    use actorflow::keyed_state::ValueState;
    use actorflow::operators::OpenContext;
    use actorflow::restart::RestartStrategy;
    use std::sync::atomic::{AtomicBool, Ordering};
    // ACTORFLOW_BENCH_KEYS=10000000 runs only the two recovery runs, at that many keys
    // (6 records per key).
    let big: Option<u64> = std::env::var("ACTORFLOW_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok());
    let keys = big.unwrap_or(1_000_000);
    let records = if big.is_some() { 6 * keys } else { 8 * keys };
    static FAIL: AtomicBool = AtomicBool::new(false);
    static READY: AtomicBool = AtomicBool::new(false);
    static FAILED: Mutex<Option<Instant>> = Mutex::new(None);
    static BACK: Mutex<Option<Instant>> = Mutex::new(None);
    #[derive(Clone, Default)]
    struct Big(Option<ValueState<Vec<u8>>>);
    impl KeyedProcessFunction<u64, u64, u64> for Big {
        fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
            self.0 = Some(ctx.state.value_state("payload", None)?);
            Ok(())
        }
        fn process_element(
            &mut self,
            i: u64,
            ctx: &mut KeyedContext<'_, u64>,
            _: &mut Collector<u64>,
        ) -> Result<(), UserError> {
            let state = self.0.as_ref().ok_or("not open")?;
            if FAIL.load(Ordering::Relaxed) {
                let mut failed = FAILED.lock().unwrap();
                if failed.is_some() {
                    BACK.lock().unwrap().get_or_insert_with(Instant::now);
                } else if READY.load(Ordering::SeqCst) {
                    *failed = Some(Instant::now());
                    return Err("injected failure".into());
                }
            }
            if state.value(ctx.state())?.is_none() {
                state.update(ctx.state(), vec![(i % 251) as u8; 100])?;
            }
            Ok(())
        }
    }
    // (sync_ms, async_ms, duration_ms, MB written)
    type Ck = (u64, u64, u64, u64);
    let run = |checkpoints: bool, fail: bool, incremental: bool| -> (Duration, Vec<Ck>) {
        FAIL.store(fail, Ordering::SeqCst);
        READY.store(false, Ordering::SeqCst);
        *FAILED.lock().unwrap() = None;
        *BACK.lock().unwrap() = None;
        let env = StreamExecutionEnvironment::new();
        let ck = Arc::new(Mutex::new(Vec::new()));
        let sink = ck.clone();
        env.set_parallelism(1);
        if checkpoints {
            env.enable_checkpointing(Duration::from_secs(2))
                .set_checkpoint_storage(sled_store(match (fail, incremental) {
                    (false, false) => "ck-recovery",
                    (false, true) => "ck-recovery-incremental-no-failure",
                    (true, false) => "ck-recovery-fail",
                    (true, true) => "ck-recovery-incremental",
                }))
                .set_restart_strategy(RestartStrategy::FixedDelay {
                    attempts: 1,
                    delay: Duration::ZERO,
                })
                .set_job_listener(Arc::new(move |e| {
                    if let JobEvent::CheckpointCompleted {
                        bytes,
                        shared_bytes,
                        duration_ms,
                        sync_ms,
                        async_ms,
                        is_final: false,
                        ..
                    } = e
                    {
                        sink.lock().unwrap().push((
                            *sync_ms,
                            *async_ms,
                            *duration_ms,
                            *bytes / 1_000_000,
                        ));
                        // The full state checkpointed; incremental: in chunks of an earlier
                        // checkpoint, so the restore reads chains.
                        if *bytes + *shared_bytes > 100 * keys
                            && (!incremental || *shared_bytes > 100 * keys)
                        {
                            READY.store(true, Ordering::SeqCst);
                        }
                    }
                }));
            env.checkpointing(|c| c.settings.incremental = incremental);
        }
        env.from_generator(
            GeneratorSource::new(records, move |i| i % keys).with_rate_limit(1_000_000.0),
        )
        .key_by(|k: &u64| *k)
        .process(Big::default())
        .discard();
        let t = Instant::now();
        rt.block_on(env.execute("recovery")).unwrap();
        let d = t.elapsed();
        let c = ck.lock().unwrap().clone();
        (d, c)
    };
    let label = |what: &str| format!("{what}, {} M keys × 100 B", keys / 1_000_000);
    if big.is_none() {
        let (plain, _) = run(false, false, false);
        let (with_ck, cks) = run(true, false, false);
        let (with_incremental, icks) = run(true, false, true);
        let pauses: Vec<u64> = cks.iter().chain(&icks).map(|c| c.0).collect();
        println!(
            "{:<34} job {:.2} s without checkpoints, {:.2} s with ({:+.1} %), {:.2} s with \
         incremental ones ({:+.1} %); per checkpoint (sync ms, async ms, total ms, MB): full \
         {:?}, incremental {:?}; max pause {} ms",
            label("checkpoints"),
            plain.as_secs_f64(),
            with_ck.as_secs_f64(),
            (with_ck.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0,
            with_incremental.as_secs_f64(),
            (with_incremental.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0,
            cks,
            icks,
            pauses.iter().max().copied().unwrap_or(0)
        );
    }
    for incremental in [false, true] {
        let (t, cks) = run(true, true, incremental);
        let (failed, back) = (*FAILED.lock().unwrap(), *BACK.lock().unwrap());
        println!(
            "{:<34} {} from failure to processing again; checkpoints: {:?}; job {:.1} s; peak RSS {} MB",
            label(if incremental {
                "recovery, incremental"
            } else {
                "recovery"
            }),
            match (failed, back) {
                (Some(f), Some(b)) => format!("{:.0} ms", (b - f).as_secs_f64() * 1e3),
                _ => "no failure happened".into(),
            },
            cks,
            t.as_secs_f64(),
            peak_rss_kib() / 1024
        );
    }
}

/// Incremental checkpoints, two ways. Operator level (the harness, exact): 1 M keys × 100 B
/// of ValueState, then 120 rounds of 10 000 pseudo-random keys updated (1 %) between two
/// checkpoints; what each incremental checkpoint writes against a full snapshot of the same
/// state, taken in the same session. Job level: the same state loaded by a fast bounded
/// source while a second source updates 10 000 keys/s, a checkpoint every second into the
/// durable sled store, incremental against full.
fn incremental_checkpoints(rt: &tokio::runtime::Runtime) {
    use actorflow::checkpoint::JobEvent;
    use actorflow::keyed_state::ValueState;
    use actorflow::operators::OpenContext;
    use actorflow_runtime::operators::KeyedProcessOperator;
    use actorflow_runtime::operators::harness::OperatorHarness;
    use actorflow_runtime::state::key::OwnedKey;
    const KEYS: u64 = 1_000_000;
    const CHANGED: u64 = KEYS / 100;
    #[derive(Clone, Default)]
    struct Big(Option<ValueState<Vec<u8>>>);
    impl KeyedProcessFunction<u64, u64, u64> for Big {
        fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
            self.0 = Some(ctx.state.value_state("payload", None)?);
            Ok(())
        }
        fn process_element(
            &mut self,
            i: u64,
            ctx: &mut KeyedContext<'_, u64>,
            _: &mut Collector<u64>,
        ) -> Result<(), UserError> {
            let state = self.0.as_ref().ok_or("not open")?;
            state.update(ctx.state(), vec![(i % 251) as u8; 100])?;
            Ok(())
        }
    }
    let scramble = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS;
    let chunk_bytes = |s: &mut actorflow_runtime::checkpoint::types::OperatorState| -> u64 {
        s.take_new_chunks()
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>()
            + s.keyed.values().map(|b| b.len() as u64).sum::<u64>()
    };
    // Operator level.
    let op = KeyedProcessOperator::new(
        OwnedKey::new((|k: &u64| *k) as fn(&u64) -> u64),
        Big::default(),
    );
    let mut h = OperatorHarness::new(op).unwrap();
    for k in 0..KEYS {
        h.process(k, None).unwrap();
    }
    let t = Instant::now();
    let mut whole = h.snapshot(100).unwrap();
    let whole_ms = t.elapsed().as_secs_f64() * 1e3;
    let full = chunk_bytes(&mut whole);
    let t = Instant::now();
    let mut first = h.snapshot_incremental(1).unwrap();
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let first_bytes = chunk_bytes(&mut first);
    h.notify_complete(1).unwrap();
    let mut rounds = Vec::new();
    let mut next = KEYS;
    for id in 2..=121u64 {
        for _ in 0..CHANGED {
            h.process(scramble(next), None).unwrap();
            next += 1;
        }
        let t = Instant::now();
        let mut s = h.snapshot_incremental(id).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        rounds.push((chunk_bytes(&mut s), ms));
        h.notify_complete(id).unwrap();
    }
    let pct = |b: u64| b as f64 / full as f64 * 100.0;
    let avg = rounds.iter().map(|r| r.0).sum::<u64>() / rounds.len() as u64;
    let max = rounds.iter().map(|r| r.0).max().unwrap_or(0);
    println!(
        "{:<34} full snapshot {:.1} MB in {whole_ms:.0} ms; first incremental {:.1} MB in \
         {first_ms:.0} ms; then per 1 % changed: {:.2} MB = {:.2} % on average, max {:.2} %, \
         {:.0} ms to encode on average (% of full, rounds 1-120: {:?})",
        "incremental, operator, 1 M keys",
        full as f64 / 1e6,
        first_bytes as f64 / 1e6,
        avg as f64 / 1e6,
        pct(avg),
        pct(max),
        rounds.iter().map(|r| r.1).sum::<f64>() / rounds.len() as f64,
        rounds
            .iter()
            .map(|r| (pct(r.0) * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    drop(h);

    // Job level: (MB written, MB of state, total ms) per checkpoint.
    let run = |incremental: bool| -> (Vec<(f64, f64, u64)>, Duration) {
        let env = StreamExecutionEnvironment::new();
        let ck = Arc::new(Mutex::new(Vec::new()));
        let sink = ck.clone();
        env.set_parallelism(1)
            .enable_checkpointing(Duration::from_secs(1))
            .set_checkpoint_storage(sled_store(if incremental { "ck-incr" } else { "ck-full" }))
            .set_job_listener(Arc::new(move |e| {
                if let JobEvent::CheckpointCompleted {
                    bytes,
                    shared_bytes,
                    duration_ms,
                    is_final: false,
                    ..
                } = e
                {
                    sink.lock().unwrap().push((
                        *bytes as f64 / 1e6,
                        (*bytes + *shared_bytes) as f64 / 1e6,
                        *duration_ms,
                    ));
                }
            }));
        env.checkpointing(|c| c.settings.incremental = incremental);
        let load = env.from_sequence(0, KEYS - 1);
        let updates = env.from_generator(
            GeneratorSource::new(12 * CHANGED, move |i| scramble(KEYS + i))
                .with_rate_limit(CHANGED as f64),
        );
        load.union(&updates)
            .key_by(|k: &u64| *k)
            .process(Big::default())
            .discard();
        let t = Instant::now();
        rt.block_on(env.execute("incremental")).unwrap();
        let d = t.elapsed();
        let c = ck.lock().unwrap().clone();
        (c, d)
    };
    for incremental in [false, true] {
        let (cks, d) = run(incremental);
        // The first two carry the load.
        let steady: Vec<&(f64, f64, u64)> = cks.iter().skip(2).collect();
        let n = steady.len().max(1) as f64;
        let written = steady.iter().map(|c| c.0).sum::<f64>() / n;
        let state = steady.iter().map(|c| c.1).sum::<f64>() / n;
        let ms = steady.iter().map(|c| c.2).sum::<u64>() as f64 / n;
        println!(
            "{:<34} {} checkpoints after the load, 1 s apart: {:.2} MB written on average of \
             {:.1} MB of state ({:.1} %), {:.0} ms each; per checkpoint (MB written): {:?}; \
             job {:.1} s",
            if incremental {
                "incremental, job, sled"
            } else {
                "full, job, sled"
            },
            steady.len(),
            written,
            state,
            written / state * 100.0,
            ms,
            steady
                .iter()
                .map(|c| (c.0 * 100.0).round() / 100.0)
                .collect::<Vec<_>>(),
            d.as_secs_f64()
        );
    }
}

/// 5 ms calls per record, three ways, at parallelism 1, 2, 4 and 8: a blocking call inside
/// `map` (the trap), `map_blocking` (a thread per subtask), and Async I/O with capacity 100
/// (ordered and unordered); the baseline is tokio alone running the same calls 100 at a time
/// per "subtask" (a semaphore), i.e. the best Async I/O can do.
fn async_io(rt: &tokio::runtime::Runtime) {
    use actorflow::async_io::AsyncDataStream;
    const CALL: Duration = Duration::from_millis(5);
    const CAPACITY: usize = 100;
    async fn call(x: u64) -> Result<Vec<u64>, UserError> {
        tokio::time::sleep(CALL).await;
        Ok(vec![x])
    }
    let run = |p: u32, n: u64, build: &dyn Fn(&DataStream<u64>) -> DataStream<u64>| {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(p);
        let out = build(&env.from_sequence(1, n)).collect();
        let t = Instant::now();
        rt.block_on(env.execute("async-io")).unwrap();
        let d = t.elapsed();
        assert_eq!(out.take().len() as u64, n);
        d
    };
    let line = |name: &str, p: u32, n: u64, d: Duration, base: Option<Duration>| {
        let rate = n as f64 / d.as_secs_f64();
        let vs = base.map_or(String::new(), |b| {
            format!(
                "   baseline {:>8.0} rec/s   ratio {:.2}x",
                n as f64 / b.as_secs_f64(),
                d.as_secs_f64() / b.as_secs_f64()
            )
        });
        println!(
            "async-io {name:<22} p={p}  {:>8.0} rec/s  ({:>6.0} per subtask, {n} records in {:.2} s){vs}",
            rate,
            rate / f64::from(p),
            d.as_secs_f64()
        );
    };
    for p in [1u32, 2, 4, 8] {
        // Blocking: 200 records per subtask (about 1 s when each subtask has its own thread).
        let n = 200 * u64::from(p);
        let d = run(p, n, &|s| {
            s.map(|x: u64| {
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(CALL);
                x
            })
        });
        line("blocking call in map", p, n, d, None);
        let d = run(p, n, &|s| {
            s.map_blocking(|x: u64| {
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(CALL);
                Ok(x)
            })
        });
        line("map_blocking", p, n, d, None);
        // Async: 20 000 records per subtask.
        let n = 20_000 * u64::from(p);
        let base = {
            let t = Instant::now();
            rt.block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..p {
                    let sem = Arc::new(tokio::sync::Semaphore::new(CAPACITY));
                    tasks.push(tokio::spawn(async move {
                        let mut set = tokio::task::JoinSet::new();
                        for x in 0..n / u64::from(p) {
                            let permit = sem.clone().acquire_owned().await.unwrap();
                            set.spawn(async move {
                                let r = call(x).await;
                                drop(permit);
                                r
                            });
                        }
                        while set.join_next().await.is_some() {}
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            t.elapsed()
        };
        let d = run(p, n, &|s| {
            AsyncDataStream::unordered_wait(s, call, Duration::from_secs(10), CAPACITY)
        });
        line("async unordered cap 100", p, n, d, Some(base));
        let d = run(p, n, &|s| {
            AsyncDataStream::ordered_wait(s, call, Duration::from_secs(10), CAPACITY)
        });
        line("async ordered cap 100", p, n, d, Some(base));
    }
}

// ----- the web server ---------------------------------------------------------------------

/// One GET over a fresh connection (`Connection: close`), as a polling script would: the
/// status code (0 if the request failed) and the body.
#[cfg(feature = "web")]
fn poll_once(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The tumbling-window job (p = 2) with the REST server on and a client polling it every
/// 100 ms (job details, a vertex, its backpressure, the checkpoints, `/metrics` in turn),
/// against the same job without a server; runs alternate so drift hits both alike.
#[cfg(feature = "web")]
fn web_overhead(rt: &tokio::runtime::Runtime) {
    use actorflow::web::{WebConfig, WebServer};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let path = event_file();
    let kind = WindowKind::Tumbling(10_000);
    let expected = windows_loop(&path, kind);
    let baseline = time(|| {
        black_box(windows_loop(&path, kind));
    });
    let server = WebServer::start(WebConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let addr = server.local_addr();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let polls = Arc::new(AtomicU64::new(0));
    for run in 0..=REPEATS {
        let t = Instant::now();
        let rows = windows_job_with(rt, &path, kind, 2, |_| {});
        let plain = t.elapsed();
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (stop, polls) = (stop.clone(), polls.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // The newest job's id, then one of its pages, every 100 ms.
                    let (_, jobs) = poll_once(addr, "/jobs");
                    let jid = jobs
                        .split("\"id\":\"")
                        .nth(1)
                        .and_then(|r| r.get(..32))
                        .map(str::to_string);
                    if let Some(jid) = jid {
                        let paths = [
                            format!("/jobs/{jid}"),
                            format!("/jobs/{jid}/checkpoints"),
                            "/metrics".to_string(),
                            "/jobs/overview".to_string(),
                        ];
                        let (status, _) = poll_once(addr, &paths[i % paths.len()]);
                        assert_eq!(status, 200);
                        polls.fetch_add(2, Ordering::Relaxed);
                    }
                    i += 1;
                    #[allow(clippy::disallowed_methods)] // the client's own thread
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let t = Instant::now();
        let rows_web = windows_job_with(rt, &path, kind, 2, |env| {
            env.use_web(&server);
        });
        let watched = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        poller.join().unwrap();
        assert!(rows == expected && rows_web == expected, "output differs");
        if run > 0 {
            off.push(plain);
            on.push(watched);
        }
    }
    let (off, on) = (median(off), median(on));
    report("tumbling p=2, no web server", EVENTS, off, baseline);
    report("tumbling p=2, web + 100 ms polling", EVENTS, on, baseline);
    println!(
        "{:<34} cost {:+.1} %; {} requests answered",
        "",
        (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0,
        polls.load(Ordering::Relaxed)
    );
    server.stop();
}

// ----- PostgreSQL ---------------------------------------------------------------------------

#[cfg(feature = "postgres")]
const PG_ROWS: u64 = 1_000_000;

#[cfg(feature = "postgres")]
async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[cfg(feature = "postgres")]
async fn pg_fresh_table(client: &tokio_postgres::Client, table: &str) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint, v bigint, s text)"
        ))
        .await
        .unwrap();
}

#[cfg(feature = "postgres")]
async fn pg_count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// The baseline: the same rows by a bare client with `COPY ... FROM STDIN` (text format,
/// 256 KB chunks), one transaction.
#[cfg(feature = "postgres")]
async fn pg_copy(client: &tokio_postgres::Client, table: &str) {
    use futures_util::SinkExt;
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY {table} (id, v, s) FROM STDIN"))
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut buf = String::with_capacity(300_000);
    for i in 0..PG_ROWS {
        buf.push_str(&format!("{i}\t{}\trow-{i:012}\n", i * 7));
        if buf.len() > 256 << 10 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .unwrap();
        }
    }
    sink.send(bytes::Bytes::from(buf)).await.unwrap();
    sink.finish().await.unwrap();
}

/// A bare client doing what the sink does: multi-row `INSERT`s of 1 000 rows with bound
/// parameters, one transaction.
#[cfg(feature = "postgres")]
async fn pg_insert(client: &mut tokio_postgres::Client, table: &str) {
    let n = 1000usize;
    let mut sql = format!("INSERT INTO {table} (id, v, s) VALUES ");
    for r in 0..n {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3));
    }
    let tx = client.transaction().await.unwrap();
    let stmt = tx.prepare(&sql).await.unwrap();
    let mut start = 0u64;
    while start < PG_ROWS {
        let rows: Vec<(i64, i64, String)> = (start..start + n as u64)
            .map(|i| (i as i64, (i * 7) as i64, format!("row-{i:012}")))
            .collect();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        for (a, b, c) in &rows {
            params.push(a);
            params.push(b);
            params.push(c);
        }
        tx.execute(&stmt, &params).await.unwrap();
        start += n as u64;
    }
    tx.commit().await.unwrap();
}

/// How the benchmark's sink writes.
#[cfg(feature = "postgres")]
#[derive(Clone, Copy, PartialEq)]
enum PgMode {
    /// Two-phase commit with `COPY`.
    ExactlyOnce,
    /// `INSERT ... ON CONFLICT`, committed per batch.
    Upsert,
    /// Two-phase commit with a user-supplied `INSERT` run once per row (pipelined).
    Statement,
}

/// `from_sequence` -> `PostgresSink` at `parallelism`, exactly once (a checkpoint every
/// second), as upserts, or exactly once through a user statement.
#[cfg(feature = "postgres")]
fn pg_sink_job(
    rt: &tokio::runtime::Runtime,
    url: &str,
    table: &str,
    parallelism: u32,
    mode: PgMode,
) {
    use actorflow::postgres::{PostgresSink, SqlValue};
    let upsert = mode == PgMode::Upsert;
    let mut b = PostgresSink::<u64>::builder(url)
        .table(table, &["id", "v", "s"])
        .row(|i| {
            vec![
                SqlValue::Int(*i as i64),
                SqlValue::Int((*i * 7) as i64),
                SqlValue::Text(format!("row-{i:012}")),
            ]
        })
        .transaction_prefix(&format!("bench{parallelism}{}", u8::from(upsert)));
    match mode {
        PgMode::ExactlyOnce => {}
        PgMode::Upsert => b = b.upsert(&["id"]),
        PgMode::Statement => {
            b = b.statement(&format!(
                "INSERT INTO {table} (id, v, s) VALUES ($1, $2, $3)"
            ))
        }
    }
    let sink = b.build().unwrap();
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        .enable_checkpointing(Duration::from_secs(1))
        .set_checkpoint_storage(Arc::new(actorflow::snapshot::MemoryStore::new()));
    env.from_sequence(0, PG_ROWS - 1)
        .add_sink("pg", move |_: &TaskInfo| Ok(sink.clone()))
        .uid("pg-bench");
    rt.block_on(env.execute("postgres sink")).unwrap();
}

/// Rows per second into PostgreSQL: the sink (exactly once at p = 1 and 2, upserts at
/// p = 1) beside a bare client's `COPY` and multi-row `INSERT` of the same rows, same server,
/// same session (median of 3 each, table recreated before every run).
#[cfg(feature = "postgres")]
fn postgres_sink(rt: &tokio::runtime::Runtime) {
    let Ok(url) = std::env::var("ACTORFLOW_POSTGRES_URL") else {
        println!("postgres: set ACTORFLOW_POSTGRES_URL (eval \"$(scripts/postgres.sh start)\")");
        return;
    };
    let table = "bench_rows";
    let mut client = rt.block_on(pg_connect(&url));
    let mut runs = |name: &str, f: &mut dyn FnMut(&mut tokio_postgres::Client)| -> Duration {
        let mut times = Vec::new();
        for _ in 0..3 {
            rt.block_on(pg_fresh_table(&client, table));
            let t = Instant::now();
            f(&mut client);
            times.push(t.elapsed());
            assert_eq!(
                rt.block_on(pg_count(&client, table)),
                PG_ROWS as i64,
                "{name}"
            );
        }
        median(times)
    };
    let copy = runs("copy", &mut |c| rt.block_on(pg_copy(c, table)));
    let insert = runs("insert", &mut |c| rt.block_on(pg_insert(c, table)));
    let eo1 = runs("sink p=1", &mut |_| {
        pg_sink_job(rt, &url, table, 1, PgMode::ExactlyOnce)
    });
    let eo2 = runs("sink p=2", &mut |_| {
        pg_sink_job(rt, &url, table, 2, PgMode::ExactlyOnce)
    });
    let stmt1 = runs("statement p=1", &mut |_| {
        pg_sink_job(rt, &url, table, 1, PgMode::Statement)
    });
    rt.block_on(client.batch_execute(&format!("DROP TABLE IF EXISTS {table}")))
        .unwrap();
    let mut upsert_times = Vec::new();
    for _ in 0..3 {
        rt.block_on(client.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, v bigint, s text)"
        )))
        .unwrap();
        let t = Instant::now();
        pg_sink_job(rt, &url, table, 1, PgMode::Upsert);
        upsert_times.push(t.elapsed());
        assert_eq!(rt.block_on(pg_count(&client, table)), PG_ROWS as i64);
    }
    let upsert = median(upsert_times);
    let line = |name: &str, d: Duration| rate_line(name, PG_ROWS as f64, "rows", d, copy, "COPY");
    line("bare client COPY (baseline)", copy);
    line("bare client INSERT x1000", insert);
    line("PostgresSink exactly-once p=1", eo1);
    line("PostgresSink exactly-once p=2", eo2);
    line("PostgresSink upsert p=1", upsert);
    line("PostgresSink exactly-once, user statement p=1", stmt1);
    rt.block_on(client.batch_execute(&format!("DROP TABLE IF EXISTS {table}")))
        .unwrap();
}

#[cfg(feature = "postgres")]
const CDC_TXNS: u64 = 10_000;
#[cfg(feature = "postgres")]
const CDC_PER_TXN: u64 = 100;

/// A fresh table, publication and `slots` (all created before the changes, so each reads
/// the same WAL), then `CDC_TXNS` transactions of `CDC_PER_TXN` inserts; returns the WAL
/// position after them.
#[cfg(feature = "postgres")]
async fn cdc_prepare(client: &tokio_postgres::Client, slots: &[&str]) -> u64 {
    client
        .batch_execute(
            "DROP PUBLICATION IF EXISTS bench_cdc; DROP TABLE IF EXISTS bench_cdc;
             CREATE TABLE bench_cdc (id bigint PRIMARY KEY, v bigint, s text);
             CREATE PUBLICATION bench_cdc FOR TABLE bench_cdc;
             CREATE OR REPLACE PROCEDURE bench_cdc_gen(n bigint, per bigint) LANGUAGE plpgsql AS $$
             BEGIN
               FOR t IN 0..n-1 LOOP
                 INSERT INTO bench_cdc SELECT g, g * 7, 'row-' || g FROM generate_series(t * per, t * per + per - 1) g;
                 COMMIT;
               END LOOP;
             END $$;",
        )
        .await
        .unwrap();
    for slot in slots {
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .unwrap();
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[slot],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            &format!("CALL bench_cdc_gen({CDC_TXNS}, {CDC_PER_TXN})"),
            &[],
        )
        .await
        .unwrap();
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (hi, lo) = end.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// The bare SQL client: `pg_logical_slot_get_binary_changes` in reads of 4096 messages until
/// the slot is drained, counting insert messages (no decoding beyond the first byte).
#[cfg(feature = "postgres")]
async fn cdc_sql_drain(client: &tokio_postgres::Client, slot: &str) -> u64 {
    let mut inserts = 0;
    loop {
        let rows = client
            .query(
                "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, 4096, 'proto_version', '1', 'publication_names', 'bench_cdc')",
                &[&slot],
            )
            .await
            .unwrap();
        for r in &rows {
            let d: &[u8] = r.get(0);
            inserts += u64::from(d.first() == Some(&b'I'));
        }
        if rows.len() < 4096 {
            return inserts;
        }
    }
}

/// `PostgresCdcSource` (exactly once, a checkpoint every second) -> count, until `end`.
#[cfg(feature = "postgres")]
fn cdc_job(rt: &tokio::runtime::Runtime, url: &str, slot: &str, end: u64) -> u64 {
    use actorflow::postgres::{ChangeEvent, PostgresCdcSource};
    let source = PostgresCdcSource::builder(url)
        .tables(&["bench_cdc"])
        .slot(slot)
        .publication("bench_cdc")
        .stop_at_lsn(end)
        .build()
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_secs(1))
        .set_checkpoint_storage(Arc::new(actorflow::snapshot::MemoryStore::new()));
    let total = Arc::new(Mutex::new(0u64));
    let target = total.clone();
    env.add_source("cdc", source)
        .uid("cdc")
        .map(|c: ChangeEvent| (c.lsn, u64::from(c.values.len() == 3)))
        .add_sink("count", move |_: &TaskInfo| Ok(Checksum(0, target.clone())));
    rt.block_on(env.execute("postgres cdc")).unwrap();
    *total.lock().unwrap()
}

/// Changes per second out of a replication slot: `PostgresCdcSource` beside `pg_recvlogical`
/// (the streaming replication protocol, writing to /dev/null) and a bare SQL client, each on
/// its own slot over the same WAL (1 M inserts in 10 000 transactions), median of 3.
#[cfg(feature = "postgres")]
fn postgres_cdc(rt: &tokio::runtime::Runtime) {
    let Ok(url) = std::env::var("ACTORFLOW_POSTGRES_URL") else {
        println!(
            "postgres-cdc: set ACTORFLOW_POSTGRES_URL (eval \"$(scripts/postgres.sh start)\")"
        );
        return;
    };
    let bin = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let recvlogical = format!("{bin}/pg_recvlogical");
    let client = rt.block_on(pg_connect(&url));
    let slots = ["bench_recv", "bench_sql", "bench_source"];
    let changes = CDC_TXNS * CDC_PER_TXN;
    let (mut recv, mut sql, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let end = rt.block_on(cdc_prepare(&client, &slots));
        let t = Instant::now();
        let status = std::process::Command::new(&recvlogical)
            .args([
                "-d",
                &url,
                "-S",
                slots[0],
                "--start",
                "--no-loop",
                "-f",
                "/dev/null",
            ])
            .args(["-o", "proto_version=1", "-o", "publication_names=bench_cdc"])
            .args(["-E", &actorflow::postgres::format_lsn(end)])
            .status()
            .unwrap();
        recv.push(t.elapsed());
        assert!(status.success(), "pg_recvlogical: {status}");
        let t = Instant::now();
        assert_eq!(rt.block_on(cdc_sql_drain(&client, slots[1])), changes);
        sql.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(cdc_job(rt, &url, slots[2], end), changes);
        ours.push(t.elapsed());
    }
    for slot in slots {
        rt.block_on(client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]))
            .unwrap();
    }
    rt.block_on(client.batch_execute("DROP PUBLICATION bench_cdc; DROP TABLE bench_cdc"))
        .unwrap();
    let recv = median(recv);
    let line = |name: &str, d: Duration| {
        rate_line(name, changes as f64, "changes", d, recv, "pg_recvlogical");
    };
    line("pg_recvlogical (baseline)", recv);
    line("bare SQL client, get_binary_changes", median(sql));
    line("PostgresCdcSource, exactly once", median(ours));
}

// ----- Kafka ---------------------------------------------------------------------------------

#[cfg(feature = "kafka")]
const KAFKA_RECORDS: u64 = 500_000;
#[cfg(feature = "kafka")]
const KAFKA_PARTITIONS: i32 = 4;

/// The value of record `i`: about 100 bytes, as Nexmark's bids.
#[cfg(feature = "kafka")]
fn kafka_value(i: u64) -> String {
    format!(
        "{i:012},auction-{:06},bidder-{:06},{:09},channel-{:04},https://www.nexmark.com/item.htm",
        i % 997,
        i % 10_007,
        i * 31 % 1_000_000_000,
        i % 5_000
    )
}

#[cfg(feature = "kafka")]
fn kafka_topic(rt: &tokio::runtime::Runtime, brokers: &str, name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics(
            &[NewTopic::new(
                name,
                KAFKA_PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        ))
        .unwrap()
    {
        r.unwrap();
    }
}

/// The baseline producer: a bare librdkafka `BaseProducer` loop, key = the record number
/// (murmur2 partitioning, as the sink's default), flushed at the end.
#[cfg(feature = "kafka")]
fn kafka_bare_produce(brokers: &str, topic: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for i in 0..KAFKA_RECORDS {
        let key = i.to_string();
        let value = kafka_value(i);
        let mut rec = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    p.poll(Duration::from_millis(1));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(300)).unwrap();
}

/// `from_sequence -> map to the value -> KafkaSink` (at least once, a checkpoint every second).
#[cfg(feature = "kafka")]
fn kafka_sink_job(rt: &tokio::runtime::Runtime, brokers: &str, topic: &str) {
    use actorflow::kafka::{KafkaSink, RecordBuilder};
    let sink = KafkaSink::<(u64, String)>::builder()
        .bootstrap_servers(brokers)
        .topic(topic)
        .serializer(|r: &(u64, String), out: &mut RecordBuilder| {
            use std::io::Write;
            let _ = write!(out.value_buf(), "{}", r.1);
            let mut key = [0u8; 20];
            let mut cursor = std::io::Cursor::new(&mut key[..]);
            let _ = write!(cursor, "{}", r.0);
            let n = cursor.position() as usize;
            out.key(&key[..n]);
            Ok(())
        })
        .build()
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1)
        .enable_checkpointing(Duration::from_secs(1))
        .set_checkpoint_storage(Arc::new(actorflow::snapshot::MemoryStore::new()));
    env.from_sequence(0, KAFKA_RECORDS - 1)
        .map(|i: u64| (i, kafka_value(i)))
        .add_sink("kafka", move |_: &TaskInfo| Ok(sink.clone()));
    rt.block_on(env.execute("kafka sink")).unwrap();
}

/// The baseline consumer: a bare librdkafka `BaseConsumer` loop over every partition from
/// the start, copying each value into a `String` (what the source's deserializer does).
#[cfg(feature = "kafka")]
fn kafka_bare_consume(brokers: &str, topic: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..KAFKA_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut n = 0u64;
    while n < KAFKA_RECORDS {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            black_box(v);
            n += 1;
        }
    }
    n
}

/// `KafkaSource` (p = 1, bounded at the known end of each partition) -> map -> discard.
#[cfg(feature = "kafka")]
fn kafka_source_job(
    rt: &tokio::runtime::Runtime,
    brokers: &str,
    topic: &str,
    ends: &[(String, i32, i64)],
    parallelism: u32,
) {
    use actorflow::kafka::{KafkaSource, OffsetReset, OffsetsInitializer, ValueString};
    // Explicit end offsets: Tansu's in-memory engine misreports "latest" (scripts/kafka.sh).
    let source = KafkaSource::<String>::builder()
        .bootstrap_servers(brokers)
        .topics(&[topic])
        .deserializer(ValueString)
        .bounded(OffsetsInitializer::Explicit {
            offsets: ends.to_vec(),
            reset: OffsetReset::None,
        })
        .build()
        .unwrap();
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    env.add_source("kafka", source)
        .map(|v: String| v.len())
        .discard();
    let result = rt.block_on(env.execute("kafka source")).unwrap();
    let read: u64 = result
        .metrics
        .subtasks
        .iter()
        .filter(|s| s.vertex.contains("kafka"))
        .map(|s| s.records_out)
        .sum();
    assert!(read == 0 || read == KAFKA_RECORDS, "read {read}");
}

/// Records per second into and out of Kafka: `KafkaSink` beside a bare producer loop, and
/// `KafkaSource` beside a bare consumer loop, same broker, same session (median of 3, a
/// fresh topic for every produce run).
#[cfg(feature = "kafka")]
fn kafka(rt: &tokio::runtime::Runtime) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Ok(brokers) = std::env::var("ACTORFLOW_KAFKA_BROKERS") else {
        println!("kafka: set ACTORFLOW_KAFKA_BROKERS (eval \"$(scripts/kafka.sh start)\")");
        return;
    };
    let run_id = std::process::id();
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        let t = format!("bench-{run_id}-{n}");
        kafka_topic(rt, &brokers, &t);
        t
    };
    let mut bare_p = Vec::new();
    let mut ours_p = Vec::new();
    for _ in 0..3 {
        let t = fresh();
        let s = Instant::now();
        kafka_bare_produce(&brokers, &t);
        bare_p.push(s.elapsed());
        let t = fresh();
        let s = Instant::now();
        kafka_sink_job(rt, &brokers, &t);
        ours_p.push(s.elapsed());
    }
    // One topic to read, written by the bare producer; its per-partition counts from a
    // consumer's point of view (the broker's low/high offsets of each partition).
    let topic = fresh();
    kafka_bare_produce(&brokers, &topic);
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "bench-ends")
        .create()
        .unwrap();
    // Count per partition by reading once (the memory engine's "latest" is wrong).
    let mut ends: Vec<(String, i32, i64)> = (0..KAFKA_PARTITIONS)
        .map(|p| (topic.clone(), p, 0))
        .collect();
    {
        use rdkafka::message::Message;
        use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
        let mut tpl = TopicPartitionList::new();
        for p in 0..KAFKA_PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Offset(0))
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut seen = 0;
        while seen < KAFKA_RECORDS {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let e = &mut ends[m.partition() as usize];
                e.2 = e.2.max(m.offset() + 1);
                seen += 1;
            }
        }
    }
    let mut bare_c = Vec::new();
    let mut ours_c1 = Vec::new();
    let mut ours_c2 = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        assert_eq!(kafka_bare_consume(&brokers, &topic), KAFKA_RECORDS);
        bare_c.push(s.elapsed());
        let s = Instant::now();
        kafka_source_job(rt, &brokers, &topic, &ends, 1);
        ours_c1.push(s.elapsed());
        let s = Instant::now();
        kafka_source_job(rt, &brokers, &topic, &ends, 2);
        ours_c2.push(s.elapsed());
    }
    let (bp, bc) = (median(bare_p), median(bare_c));
    let n = KAFKA_RECORDS as f64;
    rate_line(
        "bare BaseProducer loop (baseline)",
        n,
        "records",
        bp,
        bp,
        "bare producer",
    );
    rate_line(
        "KafkaSink p=1, at least once",
        n,
        "records",
        median(ours_p),
        bp,
        "bare producer",
    );
    rate_line(
        "bare BaseConsumer loop (baseline)",
        n,
        "records",
        bc,
        bc,
        "bare consumer",
    );
    rate_line(
        "KafkaSource p=1 -> map -> discard",
        n,
        "records",
        median(ours_c1),
        bc,
        "bare consumer",
    );
    rate_line(
        "KafkaSource p=2 -> map -> discard",
        n,
        "records",
        median(ours_c2),
        bc,
        "bare consumer",
    );
}

// ----- Nexmark beside hand-written loops -------------------------------------------------------

const NEXMARK_EVENTS: u64 = 10_000_000;

/// The same generator, one thread, no framework: q0 (each bid's row to `black_box`), q5
/// (bids per auction per 10 s window sliding by 2 s, the hottest per window) and q11 (bids
/// per bidder and 10 s-gap session). Returns the number of result rows.
fn nexmark_loop(query: &str) -> u64 {
    use actorflow::nexmark::{Event, NexmarkConfig};
    let cfg = NexmarkConfig {
        events: NEXMARK_EVENTS,
        ..NexmarkConfig::default()
    };
    let mut rows = 0u64;
    match query {
        "q0" => {
            for n in 0..NEXMARK_EVENTS {
                if let Event::Bid(b) = cfg.event(n) {
                    black_box((b.auction, b.bidder, b.price, b.date_time, b.extra));
                    rows += 1;
                }
            }
        }
        "q5" => {
            // The job's algorithm: counts per 2 s pane, then each window adds its 5 panes.
            let mut panes: HashMap<i64, HashMap<u64, u64>> = HashMap::new();
            for n in 0..NEXMARK_EVENTS {
                if let Event::Bid(b) = cfg.event(n) {
                    let pane = b.date_time.div_euclid(2000) * 2000;
                    *panes.entry(pane).or_default().entry(b.auction).or_default() += 1;
                }
            }
            let mut windows: HashMap<i64, HashMap<u64, u64>> = HashMap::new();
            for (pane, counts) in &panes {
                let mut s = *pane;
                while s > pane - 10_000 {
                    let w = windows.entry(s).or_default();
                    for (a, c) in counts {
                        *w.entry(*a).or_default() += c;
                    }
                    s -= 2000;
                }
            }
            for counts in windows.values() {
                let max = counts.values().copied().max().unwrap_or(0);
                rows += counts.values().filter(|n| **n >= max).count() as u64;
            }
        }
        "q11" => {
            // Events come in time order: a bidder's session ends at its first bid 10 s or
            // more after the session's last.
            let mut open: HashMap<u64, (i64, i64, u64)> = HashMap::new();
            for n in 0..NEXMARK_EVENTS {
                if let Event::Bid(b) = cfg.event(n) {
                    let s = open
                        .entry(b.bidder)
                        .or_insert((b.date_time, b.date_time, 0));
                    if b.date_time >= s.1 + 10_000 {
                        black_box(*s);
                        rows += 1;
                        *s = (b.date_time, b.date_time, 0);
                    }
                    s.1 = b.date_time;
                    s.2 += 1;
                }
            }
            rows += open.len() as u64;
        }
        other => panic!("no loop for {other}"),
    }
    rows
}

/// The query as an actorflow job at `parallelism` into a counting sink; its result rows.
fn nexmark_job(rt: &tokio::runtime::Runtime, query: &str, parallelism: u32) -> u64 {
    use actorflow::nexmark::{self, NexmarkConfig, NexmarkSource, QueryOptions, Results};
    let cfg = NexmarkConfig {
        events: NEXMARK_EVENTS,
        ..NexmarkConfig::default()
    };
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let events = nexmark::events(&env, NexmarkSource::new(cfg));
    let results = Arc::new(Results::default());
    nexmark::add_query(
        query,
        &events,
        QueryOptions {
            side_input: PathBuf::from("data/nexmark-side-input.csv"),
            keep_rows: false,
            rate: None,
            config: cfg,
            files: None,
        },
        &results,
    )
    .unwrap();
    rt.block_on(env.execute(query)).unwrap();
    results.output_rows()
}

/// Events per second and per CPU-second of q0, q5 and q11: the job at parallelism 1 and 2
/// beside the hand-written loop (same generator, same session, median of 3).
fn nexmark_vs_loops(rt: &tokio::runtime::Runtime) {
    for query in ["q0", "q5", "q11"] {
        let rows = nexmark_loop(query);
        let runs = |f: &mut dyn FnMut() -> u64| -> (Duration, f64) {
            let mut times = Vec::new();
            let mut cpus = Vec::new();
            for _ in 0..3 {
                let (c0, t) = (cpu_time(), Instant::now());
                assert_eq!(
                    f(),
                    rows,
                    "{query}: the job and the loop agree on the row count"
                );
                times.push(t.elapsed());
                cpus.push((cpu_time() - c0).as_secs_f64());
            }
            cpus.sort_by(f64::total_cmp);
            (median(times), cpus[1])
        };
        let (l, lc) = runs(&mut || nexmark_loop(query));
        let (j1, j1c) = runs(&mut || nexmark_job(rt, query, 1));
        let (j2, j2c) = runs(&mut || nexmark_job(rt, query, 2));
        let n = NEXMARK_EVENTS as f64;
        let line = |name: &str, d: Duration, cpu: f64| {
            println!(
                "{name:<34} {:>12.0} events/s {:>12.0} events/CPU-s ({:>7.1} ms)  {:.2}x loop time",
                n / d.as_secs_f64(),
                n / cpu.max(1e-9),
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() / l.as_secs_f64()
            );
        };
        line(&format!("{query} hand-written loop (baseline)"), l, lc);
        line(&format!("{query} actorflow p=1"), j1, j1c);
        line(&format!("{query} actorflow p=2"), j2, j2c);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(args[i + 1].parse().unwrap());
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "actorflow harness: {} CPUs, median of {REPEATS} runs after a warm-up",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if wanted("wordcount") {
        wordcount(&rt);
    }
    if wanted("keyed") {
        keyed_count(&rt);
    }
    if wanted("windows") {
        windows(&rt);
    }
    if wanted("memory") {
        memory();
    }
    if wanted("checkpoint-store") {
        store_commit();
    }
    if wanted("checkpoint-overhead") {
        checkpoint_overhead(&rt);
    }
    if wanted("checkpoint-backpressure") {
        aligned_vs_unaligned(&rt);
    }
    if wanted("checkpoint-recovery") {
        recovery_time(&rt);
    }
    if wanted("checkpoint-incremental") {
        incremental_checkpoints(&rt);
    }
    if wanted("async-io") {
        async_io(&rt);
    }
    #[cfg(feature = "postgres")]
    if wanted("postgres") {
        postgres_sink(&rt);
    }
    #[cfg(feature = "postgres")]
    if wanted("postgres-cdc") {
        postgres_cdc(&rt);
    }
    if wanted("nexmark") {
        nexmark_vs_loops(&rt);
    }
    #[cfg(feature = "kafka")]
    if wanted("kafka") {
        kafka(&rt);
    }
    #[cfg(feature = "web")]
    if wanted("web-overhead") {
        web_overhead(&rt);
    }
    #[cfg(not(feature = "web"))]
    if filter.as_deref() == Some("web-overhead") {
        println!("web-overhead needs --features web");
    }
}
