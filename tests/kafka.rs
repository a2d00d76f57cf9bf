//! The Kafka connectors against a real Kafka-protocol broker (Tansu, cargo feature `kafka`).
//! `.ci/run` starts one with `scripts/kafka.sh start` and sets `ACTORFLOW_KAFKA_BROKERS`;
//! without it these tests fail in CI and, elsewhere, say how to start it.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::checkpoint::JobEvent;
use actorflow::fault::FaultPlan;
use actorflow::kafka::{
    KafkaRecord, KafkaSink, KafkaSource, MalformedRecord, OffsetsInitializer, OnMalformed,
    SinkPartitioner, ValueString, split_owner,
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
        common::run(&env).await.unwrap();
        let mut got = out.take();
        got.sort();
        assert_same(&got, &expected, &format!("parallelism {parallelism}"));
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
