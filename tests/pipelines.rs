//! Pipelines on seeded random input equal a plain sequential computation, at parallelism 1, 2
//! and 4, with and without chaining, with tiny batches and lanes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::actorflow_runtime::state::keygroup::{
    assign_to_key_group, default_max_parallelism, operator_index_for_key_group,
};
use actorflow::prelude::*;
use common::{Rng, env, run};
use std::collections::HashMap;
use std::time::Duration;

fn input(seed: u64, n: usize, keys: u64) -> Vec<(u32, i64)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.below(keys) as u32, rng.below(2001) as i64 - 1000))
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Per key, the values in the order they were emitted.
fn per_key<K: std::hash::Hash + Eq, V>(records: Vec<(K, V)>) -> HashMap<K, Vec<V>> {
    let mut m: HashMap<K, Vec<V>> = HashMap::new();
    for (k, v) in records {
        m.entry(k).or_default().push(v);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_chain_equals_sequential() {
    let data = input(1, 20_000, 50);
    let expected: Vec<(u32, i64)> = data
        .iter()
        .map(|&(k, v)| (k, v * 3 - 1))
        .filter(|(_, v)| v % 5 != 0)
        .flat_map(|(k, v)| {
            let copies = if k % 3 == 0 { 2 } else { 1 };
            std::iter::repeat_n((k, v), copies)
        })
        .map(|(k, v)| (k + 1, v))
        .collect();
    for p in [1, 2, 4] {
        for chaining in [true, false] {
            let env = env(p);
            if !chaining {
                env.disable_operator_chaining();
            }
            let out = env
                .from_collection(data.clone())
                .map(|(k, v)| (k, v * 3 - 1))
                .filter(|(_, v)| v % 5 != 0)
                .flat_map(|(k, v): (u32, i64), out: &mut Collector<(u32, i64)>| {
                    out.collect((k, v));
                    if k % 3 == 0 {
                        out.collect((k, v));
                    }
                })
                .rebalance()
                .map(|(k, v)| (k + 1, v))
                .collect();
            run(&env).await.unwrap();
            assert_eq!(
                sorted(out.take()),
                sorted(expected.clone()),
                "p={p} chaining={chaining}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_aggregations_equal_sequential_per_key() {
    let data = input(2, 10_000, 37);
    // Sequential reference: per key, the running aggregate after each record.
    let mut sum: HashMap<u32, Vec<(u32, i64)>> = HashMap::new();
    let mut min: HashMap<u32, Vec<(u32, i64)>> = HashMap::new();
    let mut max: HashMap<u32, Vec<(u32, i64)>> = HashMap::new();
    let mut min_by: HashMap<u32, Vec<(u32, i64, u64)>> = HashMap::new();
    let mut max_by: HashMap<u32, Vec<(u32, i64, u64)>> = HashMap::new();
    for (i, &(k, v)) in data.iter().enumerate() {
        let i = i as u64;
        let next = |acc: Option<&(u32, i64)>, f: fn(i64, i64) -> i64| match acc {
            None => (k, v),
            Some(&(k0, a)) => (k0, f(a, v)),
        };
        let s = next(sum.get(&k).and_then(|l| l.last()), |a, b| a + b);
        sum.entry(k).or_default().push(s);
        let s = next(min.get(&k).and_then(|l| l.last()), i64::min);
        min.entry(k).or_default().push(s);
        let s = next(max.get(&k).and_then(|l| l.last()), i64::max);
        max.entry(k).or_default().push(s);
        let by = |acc: Option<&(u32, i64, u64)>, better: fn(i64, i64) -> bool| match acc {
            Some(&a) if !better(v, a.1) => a,
            _ => (k, v, i),
        };
        let s = by(min_by.get(&k).and_then(|l| l.last()), |new, old| new < old);
        min_by.entry(k).or_default().push(s);
        let s = by(max_by.get(&k).and_then(|l| l.last()), |new, old| new > old);
        max_by.entry(k).or_default().push(s);
    }
    let with_index: Vec<(u32, i64, u64)> = data
        .iter()
        .enumerate()
        .map(|(i, &(k, v))| (k, v, i as u64))
        .collect();
    for p in [1, 2, 4] {
        let env = env(p);
        // One source subtask, so each key's records reach their keyed subtask in input order.
        let src = env.from_collection(data.clone());
        let keyed = src.key_by(|(k, _)| *k);
        let got_sum = keyed.sum(|(_, v)| v).collect();
        let got_min = keyed.min(|(_, v)| v).collect();
        let got_max = keyed.max(|(_, v)| v).collect();
        let got_reduce = keyed.reduce(|a, b| (a.0, a.1 + b.1)).collect();
        let indexed = env.from_collection(with_index.clone()).key_by(|r| r.0);
        let got_min_by = indexed.min_by(|r| r.1).collect();
        let got_max_by = indexed.max_by(|r| r.1).collect();
        run(&env).await.unwrap();
        let by_key = |v: Vec<(u32, i64)>| per_key(v.into_iter().map(|r| (r.0, r)).collect());
        let by_key3 = |v: Vec<(u32, i64, u64)>| per_key(v.into_iter().map(|r| (r.0, r)).collect());
        assert_eq!(by_key(got_sum.take()), sum, "sum p={p}");
        assert_eq!(by_key(got_reduce.take()), sum, "reduce p={p}");
        assert_eq!(by_key(got_min.take()), min, "min p={p}");
        assert_eq!(by_key(got_max.take()), max, "max p={p}");
        assert_eq!(by_key3(got_min_by.take()), min_by, "min_by p={p}");
        assert_eq!(by_key3(got_max_by.take()), max_by, "max_by p={p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_counts_are_exact_with_parallel_upstream() {
    // Four source subtasks interleave arbitrarily, but each key's count must go 1, 2, ..., n.
    for p in [1, 2, 4] {
        let env = env(p);
        env.set_batch_size(64).set_lane_capacity(256);
        let counts = env
            .from_sequence(0, 49_999)
            .set_parallelism(4)
            .map(|x| (x % 101, 1u64))
            .key_by(|(k, _)| *k)
            .sum(|(_, c)| c)
            .collect();
        run(&env).await.unwrap();
        let per = per_key(counts.take());
        assert_eq!(per.len(), 101);
        for (k, seq) in per {
            let n = (0..50_000u64).filter(|x| x % 101 == k).count() as u64;
            assert_eq!(seq, (1..=n).collect::<Vec<_>>(), "key {k} at p={p}");
        }
    }
}

/// Tags each record with the index of the subtask that saw it.
fn tagged(stream: &DataStream<u64>, parallelism: u32) -> Collected<(usize, u64)> {
    stream
        .process_fn(|v, ctx, out: &mut Collector<(usize, u64)>| {
            out.collect((ctx.task().subtask_index, v));
            Ok(())
        })
        .set_parallelism(parallelism)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioners_route_as_specified() {
    let n = 10_000u64;
    let env = env(4);
    let src = env.from_sequence(0, n - 1).set_parallelism(2);
    let broadcast = tagged(&src.broadcast(), 3);
    let global = tagged(&src.global(), 3);
    let forward = tagged(&src.forward(), 2);
    let shuffle = tagged(&src.shuffle(), 4);
    let rebalance = tagged(&src.rebalance(), 3);
    let rescale = tagged(&src.rescale(), 4);
    let custom = tagged(
        &src.partition_custom(|k: &u64, n| (*k % n as u64) as usize, |v| *v),
        4,
    );
    let hash = tagged(src.key_by(|v| v % 1000).as_stream(), 3);
    run(&env).await.unwrap();

    let all: Vec<u64> = (0..n).collect();
    let values = |v: &[(usize, u64)]| sorted(v.iter().map(|r| r.1).collect::<Vec<_>>());
    let count_on = |v: &[(usize, u64)], i| v.iter().filter(|r| r.0 == i).count();

    let b = broadcast.take();
    for i in 0..3 {
        assert_eq!(
            count_on(&b, i),
            n as usize,
            "broadcast reaches subtask {i} fully"
        );
    }
    let g = global.take();
    assert_eq!(count_on(&g, 0), n as usize);
    assert_eq!(values(&g), all);
    // Forward: source subtask i feeds subtask i; the sequence source splits 0..n in halves.
    let f = forward.take();
    assert!(
        f.iter().all(|&(i, v)| (v < n / 2) == (i == 0)),
        "forward keeps halves apart"
    );
    for (name, recs, p) in [
        ("shuffle", shuffle.take(), 4),
        ("rebalance", rebalance.take(), 3),
    ] {
        assert_eq!(values(&recs), all, "{name} loses or duplicates nothing");
        for i in 0..p {
            let c = count_on(&recs, i);
            assert!(c > n as usize / p / 2, "{name}: subtask {i} got only {c}");
        }
    }
    // Rescale 2 -> 4: source 0 feeds subtasks 0 and 1, source 1 feeds 2 and 3.
    let r = rescale.take();
    assert_eq!(values(&r), all);
    assert!(
        r.iter().all(|&(i, v)| (v < n / 2) == (i < 2)),
        "rescale is pointwise"
    );
    let c = custom.take();
    assert!(c.iter().all(|&(i, v)| i as u64 == v % 4));
    let h = hash.take();
    assert_eq!(values(&h), all);
    let max_p = default_max_parallelism(3);
    assert!(h.iter().all(|&(i, v)| {
        operator_index_for_key_group(max_p, 3, assign_to_key_group(&(v % 1000), max_p)) == i
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_merges_every_input() {
    for p in [1, 2, 4] {
        let env = env(p);
        let a = env.from_collection((0..1000u64).collect());
        let b = env.from_sequence(1000, 2999);
        let c = env.from_iter(3000..3500u64).map(|x| x);
        let out = a.union_all([&b, &c]).map(|x| x * 2).collect();
        run(&env).await.unwrap();
        assert_eq!(
            sorted(out.take()),
            (0..3500u64).map(|x| x * 2).collect::<Vec<_>>(),
            "p={p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_batches_tiny_lanes_and_zero_buffer_timeout_stay_exact() {
    let data = input(3, 5_000, 20);
    let expected: HashMap<u32, i64> = data.iter().fold(HashMap::new(), |mut m, &(k, v)| {
        *m.entry(k).or_default() += v;
        m
    });
    for (batch, lane, timeout) in [(1, 1, 0), (3, 5, 1), (1024, 1024, 100)] {
        let env = env(3);
        env.set_batch_size(batch)
            .set_lane_capacity(lane)
            .set_buffer_timeout(Duration::from_millis(timeout));
        let out = env
            .from_collection(data.clone())
            .rebalance()
            .map(|r| r)
            .key_by(|(k, _)| *k)
            .sum(|(_, v)| v)
            .collect();
        run(&env).await.unwrap();
        let last: HashMap<u32, i64> = out.take().into_iter().collect::<Vec<_>>().into_iter().fold(
            HashMap::new(),
            |mut m, (k, v)| {
                m.insert(k, v);
                m
            },
        );
        assert_eq!(
            last, expected,
            "batch={batch} lane={lane} timeout={timeout}ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_emits_each_keys_final_value_once() {
    let data = input(4, 8_000, 29);
    let mut expected: HashMap<u32, (u32, i64)> = HashMap::new();
    for &(k, v) in &data {
        expected
            .entry(k)
            .and_modify(|acc| acc.1 = acc.1.max(v))
            .or_insert((k, v));
    }
    let mut expected: Vec<(u32, i64)> = expected.into_values().collect();
    expected.sort();
    for p in [1, 2, 4] {
        let env = env(p);
        env.set_runtime_mode(actorflow::RuntimeMode::Batch);
        let out = env
            .from_collection(data.clone())
            .rebalance()
            .map(|r| r)
            .key_by(|(k, _)| *k)
            .max(|(_, v)| v)
            // Flink's batch reduce stamps each final record with Long.MAX_VALUE.
            .process_fn(
                |r, ctx, out: &mut Collector<((u32, i64), Option<Timestamp>)>| {
                    out.collect((r, ctx.timestamp()));
                    Ok(())
                },
            )
            .collect();
        run(&env).await.unwrap();
        let got = out.take();
        assert!(
            got.iter().all(|(_, ts)| *ts == Some(Timestamp::MAX)),
            "p={p}"
        );
        let got = sorted(got.into_iter().map(|(r, _)| r).collect());
        assert_eq!(got, expected, "p={p}");
    }
}

/// Keyed map / flat map / filter with keyed state, as a Flink user ports them: the running
/// average of every two values per key (`CountWindowAverage`) and "drop a value equal to the
/// key's previous one", at parallelism 1, 2 and 4, against a sequential reference.
#[test]
fn keyed_rich_functions_with_state_match_a_reference() {
    use actorflow::keyed_state::ValueState;
    use actorflow::operators::OpenContext;

    #[derive(Clone, Default)]
    struct Average(Option<ValueState<(u64, u64)>>);
    impl KeyedFlatMapFunction<u64, (u64, u64), (u64, u64)> for Average {
        fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
            self.0 = Some(ctx.state.value_state("average", None)?);
            Ok(())
        }
        fn flat_map(
            &mut self,
            (key, value): (u64, u64),
            ctx: &mut KeyedContext<'_, u64>,
            out: &mut Collector<(u64, u64)>,
        ) -> Result<(), UserError> {
            let s = self.0.as_ref().ok_or("not open")?;
            let (n, sum) = s.value(ctx.state())?.unwrap_or((0, 0));
            if n + 1 == 2 {
                out.collect((key, (sum + value) / 2));
                s.clear(ctx.state());
            } else {
                s.update(ctx.state(), (n + 1, sum + value))?;
            }
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct NewValues(Option<ValueState<u64>>);
    impl KeyedFilterFunction<u64, (u64, u64)> for NewValues {
        fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
            self.0 = Some(ctx.state.value_state("last", None)?);
            Ok(())
        }
        fn filter(
            &mut self,
            (_, value): &(u64, u64),
            ctx: &mut KeyedContext<'_, u64>,
        ) -> Result<bool, UserError> {
            let s = self.0.as_ref().ok_or("not open")?;
            let fresh = s.value(ctx.state())? != Some(*value);
            s.update(ctx.state(), *value)?;
            Ok(fresh)
        }
    }

    let mut rng = common::Rng::new(41);
    let input: Vec<(u64, u64)> = (0..5_000).map(|_| (rng.below(13), rng.below(4))).collect();
    // The reference, key by key in input order.
    let mut averages = Vec::new();
    let mut distinct = Vec::new();
    let mut pending: std::collections::HashMap<u64, Vec<u64>> = Default::default();
    let mut last: std::collections::HashMap<u64, u64> = Default::default();
    for &(k, v) in &input {
        let p = pending.entry(k).or_default();
        p.push(v);
        if p.len() == 2 {
            averages.push((k, (p[0] + p[1]) / 2));
            p.clear();
        }
        if last.insert(k, v) != Some(v) {
            distinct.push((k, v));
        }
    }
    averages.sort();
    distinct.sort();
    for p in [1, 2, 4] {
        let env = common::env(p);
        let source = env.from_collection(input.clone()).set_parallelism(1);
        let avg = source
            .key_by(|r: &(u64, u64)| r.0)
            .flat_map(Average::default())
            .collect();
        let fresh = source
            .key_by(|r: &(u64, u64)| r.0)
            .filter(NewValues::default())
            .collect();
        let doubled = source
            .key_by(|r: &(u64, u64)| r.0)
            .map(|r: (u64, u64)| r.1 * 2)
            .collect();
        env.execute_blocking("keyed rich").unwrap();
        let mut got = avg.take();
        got.sort();
        assert_eq!(got, averages, "p={p}");
        let mut got = fresh.take();
        got.sort();
        assert_eq!(got, distinct, "p={p}");
        assert_eq!(doubled.take().len(), input.len(), "p={p}");
    }
}
