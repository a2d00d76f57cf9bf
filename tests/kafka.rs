//! The Kafka connectors against a real Kafka-protocol broker (Tansu, cargo feature `kafka`).
//! `.ci/run` starts one with `scripts/kafka.sh start` and sets `ACTORFLOW_KAFKA_BROKERS`;
//! without it these tests fail in CI and, elsewhere, say how to start it.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::kafka::{
    KafkaRecord, KafkaSink, KafkaSource, MalformedRecord, OffsetsInitializer, OnMalformed,
    ValueString, split_owner,
};
use actorflow::prelude::*;
use actorflow::restart::RestartStrategy;
use actorflow::snapshot::MemoryStore;
use actorflow::window::{TumblingWindows, WindowTime};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn brokers() -> Option<String> {
    match std::env::var("ACTORFLOW_KAFKA_BROKERS") {
        Ok(b) => Some(b),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "ACTORFLOW_KAFKA_BROKERS is not set: start the broker with `eval \"$(scripts/kafka.sh start)\"`"
        ),
        Err(_) => {
            eprintln!(
                "NOT RUN: these tests need a Kafka broker: `eval \"$(scripts/kafka.sh start)\"` sets ACTORFLOW_KAFKA_BROKERS"
            );
            None
        }
    }
}

/// A topic name no other test (or run) uses.
fn topic(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for x in r {
        x.unwrap();
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// Writes `(partition, value)`s to `topic` in order and waits until all are acknowledged.
fn produce(brokers: &str, topic: &str, records: &[(i32, String)]) {
    let p = producer(brokers);
    for (part, v) in records {
        let mut rec = BaseRecord::<(), str>::to(topic).payload(v).partition(*part);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Every value of `topic`, per partition in offset order, read by a bare consumer.
fn read_all(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<String>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "actorflow-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let total: i64 = ends.values().sum();
    let mut seen = 0;
    while seen < total {
        assert!(
            std::time::Instant::now() < deadline,
            "read {seen} of {total}"
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            out.entry(m.partition()).or_default().push(v);
            seen += 1;
        }
    }
    out
}

/// `n` events `key,ts,value` spread over `partitions` by key, each partition in timestamp
/// order (so per-partition watermarks never make a record late).
fn events(n: usize, partitions: i32, seed: u64) -> Vec<(i32, String)> {
    let mut rng = common::Rng::new(seed);
    (0..n)
        .map(|i| {
            let key = rng.below(20);
            let part = (key % partitions as u64) as i32;
            (
                part,
                format!("k{key},{},{}", i as i64 * 10, rng.below(1000) as i64 - 500),
            )
        })
        .collect()
}

/// Compares two sorted lists; on a difference says how many records are missing and extra
/// (and a few of each), not the whole lists.
#[track_caller]
fn assert_same(got: &[String], expected: &[String], what: &str) {
    if got == expected {
        return;
    }
    let mut missing = expected.to_vec();
    let mut extra = Vec::new();
    for g in got {
        match missing.iter().position(|e| e == g) {
            Some(i) => {
                missing.swap_remove(i);
            }
            None => extra.push(g.clone()),
        }
    }
    missing.truncate(5);
    extra.truncate(5);
    panic!(
        "{what}: got {} records, expected {}; missing (first 5): {missing:?}; extra (first 5): {extra:?}",
        got.len(),
        expected.len()
    );
}

fn string_source(brokers: &str, topic: &str) -> actorflow::kafka::KafkaSourceBuilder<String> {
    KafkaSource::<String>::builder()
        .bootstrap_servers(brokers)
        .topics(&[topic])
        .deserializer(ValueString)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_source_reads_every_partition_once_at_any_parallelism() {
    let Some(b) = brokers() else { return };
    let t = topic("bounded");
    create_topic(&b, &t, 7).await;
    let input = events(5_000, 7, 1);
    produce(&b, &t, &input);
    let mut expected: Vec<String> = input.iter().map(|(_, v)| v.clone()).collect();
    expected.sort();
    for parallelism in [1, 3, 8] {
        let env = common::env(parallelism);
        let source = string_source(&b, &t)
            .bounded(OffsetsInitializer::Latest)
            .build()
            .unwrap();
        let out = env.add_source("kafka", source).collect();
        let result = common::run(&env).await.unwrap();
        let mut got = out.take();
        got.sort();
        assert_same(&got, &expected, &format!("parallelism {parallelism}"));
        // The offset gauges: each partition read to its end, nothing pending.
        let gauges: BTreeMap<String, i64> = result
            .metrics
            .subtasks
            .iter()
            .flat_map(|s| s.gauges.clone())
            .collect();
        for p in 0..7 {
            let last = input.iter().filter(|(q, _)| *q == p).count() as i64 - 1;
            let name = format!("KafkaSourceReader.topic.{t}.partition.{p}.currentOffset");
            assert_eq!(gauges.get(&name), Some(&last), "{name}");
        }
        assert_eq!(gauges.get("KafkaSourceReader.pendingRecords"), Some(&0));
    }
    // Batch mode takes the bounded source too.
    let env = common::env(3);
    env.set_runtime_mode(RuntimeMode::Batch);
    let source = string_source(&b, &t)
        .bounded(OffsetsInitializer::Latest)
        .build()
        .unwrap();
    let counts = env
        .add_source("kafka", source)
        .map(|line: String| (line.split(',').next().unwrap_or("").to_string(), 1u64))
        .key_by(|(k, _)| k.clone())
        .sum(|(_, n)| n)
        .collect();
    common::run(&env).await.unwrap();
    let mut finals: BTreeMap<String, u64> = BTreeMap::new();
    for (k, n) in counts.take() {
        let e = finals.entry(k).or_default();
        *e = (*e).max(n);
    }
    assert_eq!(finals.values().sum::<u64>(), 5_000);
}

/// A sink that appends its records to a shared list, readable while the job runs.
struct Shared(Arc<Mutex<Vec<String>>>);

impl Sink for Shared {
    type Input = String;
    async fn write_batch(&mut self, batch: Batch<String>) -> Result<(), UserError> {
        self.0.lock().unwrap().extend(batch.into_values());
        Ok(())
    }
}

/// Waits (up to 60 s) until `cond` holds, checking every 20 ms.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines of every committed part of a file sink's directory, sorted.
fn committed_lines(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for p in actorflow::transactional::committed_parts(dir).unwrap() {
        out.extend(
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    out.sort();
    out
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("actorflow-kafka-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `window_agg --input kafka://…/T --kafka-bounded --checkpoint-dir D` killed (its own `exit`
/// fault at p = 1 over 4 partitions, a real SIGKILL at p = 3 over 7, so subtasks own unequal
/// numbers of partitions) and rerun with `--restore latest` after more records arrived: the
/// output file is byte-identical to an uninterrupted run over the records that were there
/// when the job first started (the end offsets are in the checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_agg_from_kafka_survives_kill_9_exactly_once() {
    let Some(b) = brokers() else { return };
    let exe = common::example_binary("window_agg");
    let work = temp_dir("window-agg");
    let window = [
        "--window",
        "tumbling",
        "--size",
        "1000",
        "--ooo",
        "0",
        "--watermark",
        "punctuated",
    ];
    for (case, parallelism, partitions) in [("exit", "1", 4), ("sigkill", "3", 7)] {
        let t = topic(&format!("wa-{case}"));
        create_topic(&b, &t, partitions).await;
        let input = events(20_000, partitions, 7);
        produce(&b, &t, &input);
        // The reference: the same events from a file, uninterrupted.
        let csv = work.join(format!("{case}.csv"));
        let text: String = input.iter().map(|(_, v)| format!("{v}\n")).collect();
        std::fs::write(&csv, text).unwrap();
        let golden = work.join(format!("{case}-golden.csv"));
        let status = std::process::Command::new(&exe)
            .args(["--input", csv.to_str().unwrap()])
            .args(window)
            .arg("--output")
            .arg(&golden)
            .status()
            .unwrap();
        assert!(status.success());
        let expected = std::fs::read_to_string(&golden).unwrap();
        assert!(expected.lines().count() > 100, "{case}: a real reference");

        let url = format!("kafka://{b}/{t}");
        let dir = work.join(case);
        let out = work.join(format!("{case}-out.csv"));
        let metrics = work.join(format!("{case}-metrics.jsonl"));
        let run = |restore: bool| {
            let mut c = std::process::Command::new(&exe);
            c.args(["--input", &url, "--kafka-bounded", "--group", &t])
                .args(window)
                .args(["--parallelism", parallelism])
                .args(["--checkpoint-dir", dir.to_str().unwrap()])
                .args(["--checkpoint-interval", "30"])
                // Slow windows, so the kill lands in the middle of the input.
                .args(["--operator-delay-us", "100"])
                .arg("--metrics-file")
                .arg(&metrics)
                .arg("--output")
                .arg(&out)
                .stderr(std::process::Stdio::null());
            if restore {
                c.args(["--restore", "latest"]);
            }
            c
        };
        if case == "exit" {
            let status = run(false)
                .args(["--fault", "exit@window:checkpoint=3"])
                .status()
                .unwrap();
            assert_eq!(
                status.code(),
                Some(137),
                "{case}: the fault kills the process"
            );
        } else {
            let mut child = run(false).spawn().unwrap();
            wait_until("two checkpoints completed", || {
                std::fs::read_to_string(&metrics)
                    .map(|m| m.matches("checkpoint_completed").count() >= 2)
                    .unwrap_or(false)
            })
            .await;
            assert!(
                child.try_wait().unwrap().is_none(),
                "the job ended before the kill"
            );
            child.kill().unwrap();
            child.wait().unwrap();
        }
        // Records written after the first start are not part of this bounded run.
        produce(&b, &t, &events(500, partitions, 99));
        let status = run(true).status().unwrap();
        assert!(status.success(), "{case}: the restored run");
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(
            got == expected,
            "{case}: {} lines, expected {} (the uninterrupted run's)",
            got.lines().count(),
            expected.lines().count()
        );
        let m = std::fs::read_to_string(&metrics).unwrap();
        assert!(
            m.contains("\"event\":\"restored\""),
            "{case}: restored from a checkpoint"
        );
    }
}

/// At least once into Kafka: every record is in the topic; without a failure exactly once,
/// and after a failure duplicates are the only difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_every_record_at_least_once_through_failures() {
    let Some(b) = brokers() else { return };
    let n = 20_000u64;
    let expected: Vec<String> = (0..n).map(|i| format!("r{i:06}")).collect();
    for failure in [false, true] {
        let t = topic("sink");
        create_topic(&b, &t, 3).await;
        let faults = if failure {
            "panic@work#1:records=6000"
        } else {
            ""
        };
        let (env, events) = common::checkpointed_env(2, Duration::from_millis(100), faults);
        let sink = KafkaSink::<String>::builder()
            .bootstrap_servers(&b)
            .topic(&t)
            .serializer(|v: &String, out: &mut actorflow::kafka::RecordBuilder| {
                out.key(v.as_bytes()).value(v.as_bytes());
                Ok(())
            })
            .build()
            .unwrap();
        // 20 000 records at 8 000/s, well below what the broker takes, so each checkpoint's
        // wait for acknowledgements is short and checkpoints complete before the failure.
        env.from_generator(actorflow::GeneratorSource::new(n, |i| i).with_rate_limit(8_000.0))
            .rebalance()
            .map(|i: u64| format!("r{i:06}"))
            .name("work")
            .add_sink("kafka", move |_: &TaskInfo| Ok(sink.clone()));
        common::run(&env).await.unwrap();
        let restarts = common::restarts_from_checkpoints(&events.lock().unwrap());
        assert_eq!(
            restarts > 0,
            failure,
            "restarts: {restarts}; events: {:?}",
            events.lock().unwrap()
        );
        let per_partition = read_all(&b, &t, 3);
        let mut got: Vec<String> = per_partition.values().flatten().cloned().collect();
        got.sort();
        let mut distinct = got.clone();
        distinct.dedup();
        assert_same(&distinct, &expected, &format!("failure={failure}"));
        if !failure {
            assert_eq!(got.len(), expected.len(), "no duplicates without a failure");
        }
        // Key hash partitioning: one key, one partition.
        for (p, vals) in &per_partition {
            for v in vals {
                assert!(
                    !per_partition.iter().any(|(q, o)| q != p && o.contains(v)),
                    "{v} in two partitions"
                );
            }
        }
    }
}

/// The seed's bug: four partitions, one never written; windows never fire, then fire with
/// `with_idleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_partition_holds_windows_back_until_idleness_releases_it() {
    let Some(b) = brokers() else { return };
    // Idleness well above the time a partition takes to deliver its first records: a
    // partition that has data but is slow to start would otherwise count as idle, and its
    // records would be late (Flink behaves the same).
    for idleness in [None, Some(Duration::from_millis(1000))] {
        let t = topic("idle");
        create_topic(&b, &t, 4).await;
        // Partitions 0..2: 3 s of event time each, partition 3 nothing.
        let records: Vec<(i32, String)> = (0..300)
            .flat_map(|i| (0..3).map(move |p| (p, format!("k{p},{},1", i * 10))))
            .collect();
        produce(&b, &t, &records);
        let mut strategy = WatermarkStrategy::<String>::for_monotonous_timestamps()
            .with_timestamp_assigner(|l: &String, _| {
                l.split(',')
                    .nth(1)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0)
            });
        if let Some(d) = idleness {
            strategy = strategy.with_idleness(d);
        }
        let source = string_source(&b, &t)
            .watermark_strategy(strategy)
            .build()
            .unwrap();
        let env = common::env(2);
        env.set_auto_watermark_interval(Duration::from_millis(50));
        let fired = Arc::new(Mutex::new(Vec::new()));
        let into = fired.clone();
        env.add_source("kafka", source)
            .key_by(|l: &String| l.split(',').next().unwrap_or("").to_string())
            .window(TumblingWindows::new(1000, 0, WindowTime::Event).unwrap())
            .process(
                |k: &String,
                 ctx: &mut actorflow::window::WindowContext<'_, actorflow::window::TimeWindow>,
                 items: Vec<String>,
                 out: &mut Collector<String>| {
                    out.collect(format!("{k},{},{}", ctx.window().end, items.len()));
                    Ok(())
                },
            )
            .name("windows")
            .set_parallelism(1)
            .add_sink("shared", move |_: &TaskInfo| Ok(Shared(into.clone())));
        let handle = env.execute_async("idle").await.unwrap();
        let control = handle.control();
        let job = tokio::spawn(handle.join());
        let source_out = || {
            control
                .metrics()
                .vertex("kafka")
                .map(|s| s.records_out)
                .sum::<u64>()
        };
        wait_until("the source read every record", || source_out() >= 900).await;
        match idleness {
            None => {
                // Many watermark intervals after the last record: still nothing.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                assert_eq!(fired.lock().unwrap().len(), 0, "no window fired");
                let wm = control
                    .metrics()
                    .vertex("windows")
                    .filter_map(|s| s.input_watermark)
                    .max();
                assert!(
                    wm.is_none_or(|w| w == i64::MIN),
                    "held at the start: {wm:?}"
                );
            }
            Some(_) => {
                // Windows ending at 1000 and 2000 for each of the three keys; the window
                // ending at 3000 waits for more records (watermark 2989).
                wait_until("six windows fired", || fired.lock().unwrap().len() >= 6).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut got = fired.lock().unwrap().clone();
                got.sort();
                let expected: Vec<String> = (0..3)
                    .flat_map(|p| [format!("k{p},1000,100"), format!("k{p},2000,100")])
                    .collect();
                assert_same(&got, &expected, "windows with idleness");
            }
        }
        control.cancel();
        let _ = job.await;
    }
}

/// Partition discovery: a topic created while the job runs, matching the source's pattern,
/// is picked up and read from its start. (Tansu 0.6.0 has no CreatePartitions, so a new
/// topic stands in for an existing topic gaining a partition: both are new partitions to
/// the source.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_partitions_are_discovered_while_the_job_runs() {
    let Some(b) = brokers() else { return };
    let base = topic("disc");
    let (t1, t2) = (format!("{base}-a"), format!("{base}-b"));
    create_topic(&b, &t1, 2).await;
    let first: Vec<(i32, String)> = (0..100).map(|i| (i % 2, format!("a{i}"))).collect();
    produce(&b, &t1, &first);
    let source = KafkaSource::<String>::builder()
        .bootstrap_servers(&b)
        .topic_pattern(&format!("{}-.*", regex_escape(&base)))
        .deserializer(ValueString)
        .partition_discovery_interval(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let env = common::env(3);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    env.add_source("kafka", source)
        .add_sink("shared", move |_: &TaskInfo| Ok(Shared(into.clone())));
    let handle = env.execute_async("discovery").await.unwrap();
    let control = handle.control();
    let job = tokio::spawn(handle.join());
    wait_until("the first topic was read", || {
        seen.lock().unwrap().len() >= 100
    })
    .await;
    create_topic(&b, &t2, 3).await;
    let second: Vec<(i32, String)> = (0..90).map(|i| (i % 3, format!("b{i}"))).collect();
    produce(&b, &t2, &second);
    wait_until("the new topic was read", || {
        seen.lock().unwrap().len() >= 190
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    control.cancel();
    let _ = job.await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let mut expected: Vec<String> = first.into_iter().chain(second).map(|(_, v)| v).collect();
    expected.sort();
    assert_same(&got, &expected, "both topics, each record once");
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$-".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// Malformed values: fail naming topic, partition and offset; skip and count; or a side
/// output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_follow_the_chosen_policy() {
    let Some(b) = brokers() else { return };
    let t = topic("malformed");
    create_topic(&b, &t, 2).await;
    // Partition 1, offset 3 is not a number.
    let records: Vec<(i32, String)> = vec![
        (0, "1".into()),
        (1, "2".into()),
        (1, "3".into()),
        (0, "4".into()),
        (1, "5".into()),
        (1, "five".into()),
        (1, "7".into()),
    ];
    produce(&b, &t, &records);
    let source = |policy: OnMalformed| {
        KafkaSource::<u64>::builder()
            .bootstrap_servers(&b)
            .topics(&[&t])
            .deserializer(|r: &KafkaRecord<'_>| {
                let s =
                    std::str::from_utf8(r.value.unwrap_or_default()).map_err(|e| e.to_string())?;
                s.parse::<u64>()
                    .map(Some)
                    .map_err(|e| format!("{s:?}: {e}"))
            })
            .bounded(OffsetsInitializer::Latest)
            .on_malformed(policy)
            .build()
            .unwrap()
    };
    // Fail.
    let env = common::env(2);
    env.set_restart_strategy(RestartStrategy::None);
    let _ = env.add_source("kafka", source(OnMalformed::Fail)).collect();
    let err = common::run(&env).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("{t}/1 at offset 3")) && err.contains("five"),
        "{err}"
    );
    // Skip and count.
    let env = common::env(2);
    let out = env.add_source("kafka", source(OnMalformed::Skip)).collect();
    let result = common::run(&env).await.unwrap();
    let mut got = out.take();
    got.sort();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 7]);
    let skipped: i64 = result
        .metrics
        .subtasks
        .iter()
        .flat_map(|s| s.gauges.iter())
        .filter(|(name, _)| name == "numMalformedRecordsSkipped")
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(skipped, 1);
    // Side output.
    let env = common::env(2);
    let tag: OutputTag<MalformedRecord> = OutputTag::new("malformed");
    let good = env.add_source("kafka", source(OnMalformed::SideOutput(tag.clone())));
    let bad = good.get_side_output(&tag).collect();
    let good = good.collect();
    common::run(&env).await.unwrap();
    assert_eq!(good.take().len(), 6);
    let bad = bad.take();
    assert_eq!(bad.len(), 1);
    assert_eq!(
        (bad[0].topic.as_str(), bad[0].partition, bad[0].offset),
        (t.as_str(), 1, 3)
    );
    assert_eq!(bad[0].value.as_deref(), Some(&b"five"[..]));
}

/// Offsets go to the group when checkpoints complete, and `Committed` starts from them; a
/// savepoint taken at parallelism 2 restores at 3 with every record read exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_and_a_savepoint_restores_at_another_parallelism() {
    let Some(b) = brokers() else { return };
    let t = topic("offsets");
    create_topic(&b, &t, 5).await;
    let first: Vec<(i32, String)> = (0..5_000).map(|i| (i % 5, format!("x{i:05}"))).collect();
    produce(&b, &t, &first);
    let group = format!("{t}-group");
    let dir = temp_dir("savepoint");
    let store = Arc::new(MemoryStore::new());
    let file_sink = |dir: std::path::PathBuf| {
        move |_: &TaskInfo| {
            Ok(actorflow::transactional::TwoPhaseCommit::new(
                actorflow::transactional::FileSink::<String>::new(dir.clone()),
            ))
        }
    };
    // Run 1: unbounded at parallelism 2, stopped with a savepoint in the middle.
    let env = common::env(2);
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone());
    let source = string_source(&b, &t)
        .group_id(&group)
        .batch_records(100)
        .build()
        .unwrap();
    env.add_source("kafka", source)
        .uid("kafka")
        .map(|v: String| {
            // Busy for 200 µs a record, so the stop comes in the middle of the topic.
            let until = std::time::Instant::now() + Duration::from_micros(200);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            v
        })
        .add_sink("files", file_sink(dir.clone()))
        .uid("files");
    let handle = env.execute_async("run 1").await.unwrap();
    let control = handle.control();
    wait_until("some output committed", || {
        committed_lines(&dir).len() >= 1_000
    })
    .await;
    let savepoint = control.stop_with_savepoint().await.unwrap();
    handle.join().await.unwrap();
    let after_first = committed_lines(&dir).len();
    assert!(after_first < 5_000, "stopped in the middle: {after_first}");
    // The group's offsets are those of a completed checkpoint: not past what was committed.
    let committed: i64 = {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..5 {
            tpl.add_partition(&t, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    };
    assert!(
        committed > 0 && committed as usize <= after_first,
        "{committed} vs {after_first}"
    );
    // Run 2: from the savepoint at parallelism 3, bounded at the end of the topic.
    let second: Vec<(i32, String)> = (5_000..6_000)
        .map(|i| (i % 5, format!("x{i:05}")))
        .collect();
    produce(&b, &t, &second);
    let env = common::env(3);
    env.enable_checkpointing(Duration::from_millis(30))
        .set_checkpoint_storage(store.clone())
        .restore_from(actorflow::checkpoint::RestoreFrom::Checkpoint(savepoint));
    let source = string_source(&b, &t)
        .group_id(&group)
        .bounded(OffsetsInitializer::Latest)
        .build()
        .unwrap();
    env.add_source("kafka", source)
        .uid("kafka")
        .map(|v: String| v)
        .add_sink("files", file_sink(dir.clone()))
        .uid("files");
    common::run(&env).await.unwrap();
    let mut expected: Vec<String> = first.into_iter().chain(second).map(|(_, v)| v).collect();
    expected.sort();
    assert_same(&committed_lines(&dir), &expected, "both runs, exactly once");
    // A third job starting from the group's committed offsets finds nothing left to read.
    let env = common::env(2);
    let source = string_source(&b, &t)
        .group_id(&group)
        .starting_offsets(OffsetsInitializer::Committed {
            reset: actorflow::kafka::OffsetReset::None,
        })
        .bounded(OffsetsInitializer::Latest)
        .build()
        .unwrap();
    let rest = env.add_source("kafka", source).collect();
    common::run(&env).await.unwrap();
    assert_eq!(rest.take(), Vec::<String>::new());
}

/// The owner rule spreads one topic's partitions round robin from a hashed start.
#[test]
fn split_owner_is_flinks_rule() {
    // Flink: start = ((topic.hashCode() * 31) & 0x7FFFFFFF) % n; owner = (start + p) % n.
    let start = split_owner("events", 0, 3);
    for p in 0..7 {
        assert_eq!(split_owner("events", p, 3), (start + p as usize) % 3);
    }
}

/// A Tansu broker of the test's own (SQLite storage in `dir`, so it keeps its data across a
/// restart), on `port`.
struct OwnBroker {
    child: std::process::Child,
}

impl OwnBroker {
    async fn start(dir: &std::path::Path, port: u16) -> OwnBroker {
        let bin = match std::env::var("ACTORFLOW_TANSU_BIN") {
            Ok(b) => b,
            Err(_) => panic!(
                "ACTORFLOW_TANSU_BIN is not set: `eval \"$(scripts/kafka.sh start)\"` sets it"
            ),
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .unwrap();
        let child = std::process::Command::new(bin)
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://broker.db"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        OwnBroker { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker is killed while the job reads and started again a few seconds later: the job
/// fails over (the brokers were unreachable for longer than its broker timeout), restarts
/// from its last checkpoint once the broker is back, and reads everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_fails_over_and_resumes_when_the_broker_restarts() {
    if brokers().is_none() {
        return;
    }
    let dir = temp_dir("restart");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = format!("127.0.0.1:{port}");
    let broker = OwnBroker::start(&dir, port).await;
    let t = topic("restart");
    create_topic(&b, &t, 3).await;
    let first: Vec<(i32, String)> = (0..3_000).map(|i| (i % 3, format!("y{i:05}"))).collect();
    produce(&b, &t, &first);
    let out = dir.join("out");
    let (env, events) = common::checkpointed_env(2, Duration::from_millis(100), "");
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 1000,
        delay: Duration::from_millis(200),
    });
    let source = string_source(&b, &t)
        .group_id(&t)
        .broker_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let sink_dir = out.clone();
    env.add_source("kafka", source)
        .uid("kafka")
        .add_sink("files", move |_: &TaskInfo| {
            Ok(actorflow::transactional::TwoPhaseCommit::new(
                actorflow::transactional::FileSink::<String>::new(sink_dir.clone()),
            ))
        })
        .uid("files");
    let handle = env.execute_async("restart").await.unwrap();
    let control = handle.control();
    let job = tokio::spawn(handle.join());
    wait_until("the first records were committed", || {
        committed_lines(&out).len() >= 3_000
    })
    .await;
    broker.kill();
    wait_until("the job failed over", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, actorflow::checkpoint::JobEvent::Restart { .. }))
    })
    .await;
    // Down a while longer: restarts meanwhile fail to find the brokers and are retried.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let broker = OwnBroker::start(&dir, port).await;
    let second: Vec<(i32, String)> = (3_000..5_000)
        .map(|i| (i % 3, format!("y{i:05}")))
        .collect();
    produce(&b, &t, &second);
    wait_until("everything was committed", || {
        committed_lines(&out).len() >= 5_000
    })
    .await;
    // A few more checkpoints: nothing more may appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    control.cancel();
    let _ = job.await;
    let mut expected: Vec<String> = first.into_iter().chain(second).map(|(_, v)| v).collect();
    expected.sort();
    assert_same(
        &committed_lines(&out),
        &expected,
        "across the broker's restart",
    );
    drop(broker);
}

/// The `kafka_idle` example shows the stall and its fix (it exits with 1 otherwise).
#[test]
fn the_kafka_idle_example_shows_the_stall_and_the_fix() {
    let Some(b) = brokers() else { return };
    let out = std::process::Command::new(common::example_binary("kafka_idle"))
        .args(["--brokers", &b, "--seconds", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("windows fired: 0"), "{text}");
}

/// The sink's partitioners: fixed (subtask i writes partition i mod n), custom, and a
/// partition or topic the serializer names; a record without any topic fails the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_partitions_as_told() {
    let Some(b) = brokers() else { return };
    let (fixed, custom, named) = (topic("fixed"), topic("custom"), topic("named"));
    for t in [&fixed, &custom, &named] {
        create_topic(&b, t, 3).await;
    }
    let run = |sink: KafkaSink<String>, parallelism: u32| {
        let env = common::env(parallelism);
        env.set_restart_strategy(RestartStrategy::None);
        env.from_collection((0..30).map(|i| format!("v{i:02}")).collect())
            .rebalance()
            .map(|v: String| v)
            .add_sink("kafka", move |_: &TaskInfo| Ok(sink.clone()));
        env
    };
    // Fixed at parallelism 2: subtasks 0 and 1 write partitions 0 and 1, never 2.
    let sink = KafkaSink::<String>::builder()
        .bootstrap_servers(&b)
        .topic(&fixed)
        .serializer(ValueString)
        .partitioner(actorflow::kafka::SinkPartitioner::Fixed)
        .build()
        .unwrap();
    common::run(&run(sink, 2)).await.unwrap();
    let got = read_all(&b, &fixed, 3);
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 30);
    assert!(!got.contains_key(&2) && got.len() == 2, "{got:?}");
    // Custom: by the value's last digit.
    let sink = KafkaSink::<String>::builder()
        .bootstrap_servers(&b)
        .topic(&custom)
        .serializer(ValueString)
        .partitioner(actorflow::kafka::SinkPartitioner::Custom(Arc::new(
            |_key: Option<&[u8]>, value: &[u8], n: i32| {
                i32::from(value.last().copied().unwrap_or(b'0') - b'0') % n
            },
        )))
        .build()
        .unwrap();
    common::run(&run(sink, 2)).await.unwrap();
    for (p, vals) in read_all(&b, &custom, 3) {
        for v in vals {
            let digit = i32::from(v.as_bytes()[2] - b'0');
            assert_eq!(digit % 3, p, "{v} in partition {p}");
        }
    }
    // The serializer names the topic and partition.
    let named_topic = named.clone();
    let sink = KafkaSink::<String>::builder()
        .bootstrap_servers(&b)
        .serializer(
            move |v: &String, out: &mut actorflow::kafka::RecordBuilder| {
                out.topic(&named_topic).partition(1).value(v.as_bytes());
                Ok(())
            },
        )
        .build()
        .unwrap();
    common::run(&run(sink, 1)).await.unwrap();
    let got = read_all(&b, &named, 3);
    assert_eq!(got.get(&1).map(Vec::len), Some(30), "{got:?}");
    // No topic anywhere: the job fails saying so.
    let sink = KafkaSink::<String>::builder()
        .bootstrap_servers(&b)
        .serializer(ValueString)
        .build()
        .unwrap();
    let err = common::run(&run(sink, 1)).await.unwrap_err().to_string();
    assert!(err.contains("names no topic"), "{err}");
}

/// Starting offsets by timestamp and explicit offsets, and what a deserializer sees of a
/// record: key, headers, broker timestamp, offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_offsets_by_time_and_explicit_and_record_metadata() {
    use rdkafka::message::{Header, OwnedHeaders};
    let Some(b) = brokers() else { return };
    let t = topic("starts");
    create_topic(&b, &t, 2).await;
    let base = 1_700_000_000_000i64;
    {
        let p = producer(&b);
        for i in 0..20i64 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            let rec = BaseRecord::to(&t)
                .key(&k)
                .payload(&v)
                .partition((i % 2) as i32)
                .timestamp(base + i * 1000)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "n",
                    value: Some(&i.to_string()),
                }));
            p.send(rec).map_err(|(e, _)| e).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
    type Seen = (String, String, String, i64, i32, i64);
    let read = |start: OffsetsInitializer| {
        let b = b.clone();
        let t = t.clone();
        async move {
            let source = KafkaSource::<Seen>::builder()
                .bootstrap_servers(&b)
                .topics(&[&t])
                .starting_offsets(start)
                .bounded(OffsetsInitializer::Latest)
                .deserializer(|r: &KafkaRecord<'_>| {
                    let s = |x: Option<&[u8]>| {
                        String::from_utf8_lossy(x.unwrap_or_default()).to_string()
                    };
                    Ok(Some((
                        s(r.key),
                        s(r.value),
                        s(r.header("n")),
                        r.timestamp.unwrap_or(-1),
                        r.partition,
                        r.offset,
                    )))
                })
                .build()
                .unwrap();
            let env = common::env(2);
            let out = env.add_source("kafka", source).collect();
            common::run(&env).await.unwrap();
            let mut got = out.take();
            got.sort_by_key(|x| x.3);
            got
        }
    };
    let all = read(OffsetsInitializer::Earliest).await;
    assert_eq!(all.len(), 20);
    for (i, (k, v, h, ts, p, o)) in all.iter().enumerate() {
        let i = i as i64;
        assert_eq!(
            (k.as_str(), v.as_str(), h.as_str(), *ts, *p, *o),
            (
                format!("k{i}").as_str(),
                format!("v{i}").as_str(),
                i.to_string().as_str(),
                base + i * 1000,
                (i % 2) as i32,
                i / 2
            )
        );
    }
    // From 12.5 s after the first record: records 13..19.
    let later = read(OffsetsInitializer::Timestamp(base + 12_500)).await;
    let values: Vec<&str> = later.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(values, ["v13", "v14", "v15", "v16", "v17", "v18", "v19"]);
    // Partition 0 from offset 8 (record 16), partition 1 from the latest (nothing).
    let explicit = read(OffsetsInitializer::Explicit {
        offsets: vec![(t.clone(), 0, 8)],
        reset: actorflow::kafka::OffsetReset::Latest,
    })
    .await;
    let values: Vec<&str> = explicit.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(values, ["v16", "v18"]);
}
