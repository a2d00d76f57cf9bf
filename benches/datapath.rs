//! Criterion benchmarks of the data path: one lane at several batch sizes, a four-operator
//! chain, and a keyed count. Throughput is in records (elements) per second.
//!
//! ```text
//! cargo bench --bench datapath
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actorflow::actorflow_runtime::dataplane::gate::{GateEvent, InputGateBuilder};
use actorflow::actorflow_runtime::{DataBatch, PriorityMessage, StreamMessage};
use actorflow::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One producer task sends `records` u64s in batches of `batch` through one lane of 4096
/// records to one consumer task.
async fn lane_transfer(records: u64, batch: usize) {
    let mut builder = InputGateBuilder::<StreamMessage, PriorityMessage>::new(4);
    let tx = builder.add_lane(4096.max(batch));
    let mut gate = builder.build();
    let producer = tokio::spawn(async move {
        let template: Vec<u64> = (0..batch as u64).collect();
        let mut sent = 0;
        while sent < records {
            let b = Batch::from_values(template.clone());
            sent += b.len() as u64;
            tx.send(StreamMessage::Data(DataBatch::new(b)))
                .await
                .unwrap();
        }
        tx.send(StreamMessage::EndOfInput).await.unwrap();
    });
    // The consumer runs as a task on the runtime, as subtasks do.
    let consumer = tokio::spawn(async move {
        let mut received = 0u64;
        while let GateEvent::Data {
            message: StreamMessage::Data(b),
            ..
        } = gate.next().await
        {
            received += b.len() as u64;
        }
        received
    });
    producer.await.unwrap();
    let received = consumer.await.unwrap();
    assert!(received >= records);
}

fn lanes(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("lane");
    for batch in [1usize, 64, 1024] {
        let records = if batch == 1 { 200_000 } else { 20_000_000 };
        group.throughput(Throughput::Elements(records));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(lane_transfer(records, batch));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn run_job(rt: &tokio::runtime::Runtime, env: &StreamExecutionEnvironment) -> Duration {
    let start = Instant::now();
    rt.block_on(env.execute("bench")).unwrap();
    start.elapsed()
}

fn chain(c: &mut Criterion) {
    const N: u64 = 20_000_000;
    let rt = runtime();
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(N));
    group.bench_function("source-map-filter-map-map-sink", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let env = StreamExecutionEnvironment::new();
                    env.set_parallelism(1);
                    env.from_sequence(0, N - 1)
                        .map(|x| x.wrapping_mul(3))
                        .filter(|x| x % 7 != 0)
                        .map(|x| x ^ 0x55)
                        .map(|x| (x, x as u32))
                        .discard();
                    run_job(&rt, &env)
                })
                .sum()
        })
    });
    group.finish();
}

fn keyed(c: &mut Criterion) {
    const N: u64 = 20_000_000;
    let rt = runtime();
    let mut group = c.benchmark_group("keyed_count");
    group.throughput(Throughput::Elements(N));
    for p in [1u32, 2] {
        group.bench_with_input(BenchmarkId::new("parallelism", p), &p, |b, &p| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let env = StreamExecutionEnvironment::new();
                        env.set_parallelism(p);
                        env.from_sequence(0, N - 1)
                            .map(|i| (i % 10_000, 1u64))
                            .key_by(|(k, _)| *k)
                            .sum(|(_, c)| c)
                            .discard();
                        run_job(&rt, &env)
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = lanes, chain, keyed
}
criterion_main!(benches);
