//! Joins against brute-force references: seeded random inputs at parallelism 1, 2 and 4,
//! inclusive and exclusive bounds, late records, and the `interval_join` example as a binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::operators::JoinContext;
use actorflow::prelude::*;
use common::{Rng, example_binary};

type Event = (u32, i64, i64);

/// `n` events over `keys` keys with ascending timestamps (steps of 0..=step).
fn events(rng: &mut Rng, n: usize, keys: u64, step: u64) -> Vec<Event> {
    let mut t = 0i64;
    (0..n)
        .map(|_| {
            t += rng.below(step + 1) as i64;
            (rng.below(keys) as u32, t, rng.below(101) as i64 - 50)
        })
        .collect()
}

fn brute_force(left: &[Event], right: &[Event], lower: i64, upper: i64) -> Vec<String> {
    let mut out = Vec::new();
    for l in left {
        for r in right {
            if l.0 == r.0 && l.1 + lower <= r.1 && r.1 <= l.1 + upper {
                out.push(line(l, r));
            }
        }
    }
    out.sort();
    out
}

fn line(l: &Event, r: &Event) -> String {
    format!("{},{},{},{},{}", l.0, l.1, l.2, r.1, r.2)
}

fn stamped(env: &StreamExecutionEnvironment, events: Vec<Event>) -> DataStream<Event> {
    env.from_collection(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .punctuated()
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
}

fn join(
    left: Vec<Event>,
    right: Vec<Event>,
    (lower, upper, lower_exclusive, upper_exclusive): (i64, i64, bool, bool),
    parallelism: u32,
) -> Vec<String> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let l = stamped(&env, left);
    let r = stamped(&env, right);
    let mut joined = l
        .key_by(|e: &Event| e.0)
        .interval_join(&r.key_by(|e: &Event| e.0))
        .between(lower, upper);
    if lower_exclusive {
        joined = joined.lower_bound_exclusive();
    }
    if upper_exclusive {
        joined = joined.upper_bound_exclusive();
    }
    let out = joined
        .process(
            |l: Event, r: Event, ctx: &JoinContext, out: &mut Collector<String>| {
                assert_eq!(ctx.timestamp().0, l.1.max(r.1));
                out.collect(line(&l, &r));
                Ok(())
            },
        )
        .collect();
    env.execute_blocking("interval join").unwrap();
    let mut lines = out.take();
    lines.sort();
    lines
}

#[test]
fn interval_join_matches_brute_force_at_several_parallelisms() {
    let mut rng = Rng::new(42);
    let left = events(&mut rng, 3_000, 20, 5);
    let right = events(&mut rng, 2_500, 20, 7);
    for bounds in [
        (-20, 35, false, false),
        (0, 0, false, false),
        (5, 50, true, true),
        (-30, -10, false, true),
    ] {
        let (mut lo, mut hi) = (bounds.0, bounds.1);
        if bounds.2 {
            lo += 1;
        }
        if bounds.3 {
            hi -= 1;
        }
        let expected = brute_force(&left, &right, lo, hi);
        assert!(!expected.is_empty(), "{bounds:?} joins nothing");
        for p in [1, 2, 4] {
            let got = join(left.clone(), right.clone(), bounds, p);
            assert!(
                got == expected,
                "{bounds:?} at p={p}: {} rows, expected {}",
                got.len(),
                expected.len()
            );
        }
    }
}

/// The join operator driven by hand (a harness test): records and watermarks of both inputs
/// in a chosen order, exact outputs, late records of each side in its side output, and the
/// buffers cleaned up once the watermark passes.
#[test]
fn harness_joins_in_range_sends_late_records_aside_and_cleans_up() {
    use actorflow::actorflow_runtime::harness::OperatorHarness;
    use actorflow::actorflow_runtime::key::OwnedKey;
    use actorflow::operators::{
        CoKey, CoRecord, IntervalJoin, JoinBounds, KeyedCoProcessAdapter, KeyedProcessOperator,
    };
    let left_late: OutputTag<Event> = OutputTag::new("left-late");
    let right_late: OutputTag<Event> = OutputTag::new("right-late");
    let join = IntervalJoin::new(
        JoinBounds::new(0, 5, false, false).unwrap(),
        Some(left_late.clone()),
        Some(right_late.clone()),
        |l: Event, r: Event, ctx: &JoinContext, out: &mut Collector<String>| {
            out.collect(format!("{}@{}", line(&l, &r), ctx.timestamp().0));
            Ok(())
        },
    );
    let key = CoKey::new(
        OwnedKey::new(|e: &Event| e.0),
        OwnedKey::new(|e: &Event| e.0),
    );
    let op = KeyedProcessOperator::<CoRecord<Event, Event>, String, _, _>::new(
        key,
        KeyedCoProcessAdapter::new(join),
    );
    let mut h = OperatorHarness::new(op).unwrap();
    h.process(CoRecord::First((1, 100, 1)), Some(100)).unwrap();
    h.process(CoRecord::Second((1, 103, 10)), Some(103))
        .unwrap();
    h.process(CoRecord::Second((1, 106, 11)), Some(106))
        .unwrap(); // 106 > 100 + 5
    h.process(CoRecord::First((1, 102, 2)), Some(102)).unwrap(); // joins 103 and 106
    h.process(CoRecord::First((2, 102, 3)), Some(102)).unwrap(); // another key
    let out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        out,
        vec![
            "1,100,1,103,10@103",
            "1,102,2,103,10@103",
            "1,102,2,106,11@106"
        ]
    );
    h.watermark(104).unwrap();
    h.process(CoRecord::First((1, 90, 4)), Some(90)).unwrap();
    h.process(CoRecord::Second((1, 99, 12)), Some(99)).unwrap();
    assert!(h.take_output().is_empty());
    assert_eq!(h.take_side_output(&left_late), vec![((1, 90, 4), Some(90))]);
    assert_eq!(
        h.take_side_output(&right_late),
        vec![((1, 99, 12), Some(99))]
    );
    // Past 100 + 5, the left record at 100 is gone: a right record at 105 (not late yet,
    // the watermark is 104) still joins left 100 and 102.
    h.process(CoRecord::Second((1, 105, 13)), Some(105))
        .unwrap();
    let out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
    assert_eq!(out, vec!["1,100,1,105,13@105", "1,102,2,105,13@105"]);
    // Left 150 is kept until the watermark reaches 150 + 5; then its cleanup timer drops it,
    // so a right record at exactly 155 (not late: not behind the watermark) finds nothing —
    // as in Flink, whose cleanup timers fire at the same watermark.
    h.process(CoRecord::First((1, 150, 5)), Some(150)).unwrap();
    h.watermark(154).unwrap();
    h.process(CoRecord::Second((1, 154, 15)), Some(154))
        .unwrap();
    let out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
    assert_eq!(out, vec!["1,150,5,154,15@154"]);
    h.watermark(155).unwrap();
    h.process(CoRecord::Second((1, 155, 16)), Some(155))
        .unwrap();
    assert!(h.take_output().is_empty(), "left 150 was cleaned up at 155");
}

#[test]
fn the_interval_join_example_is_exact_on_generated_files() {
    let dir = std::env::temp_dir().join(format!("actorflow-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(7);
    let left = events(&mut rng, 4_000, 30, 4);
    let right = events(&mut rng, 4_000, 30, 4);
    let write = |name: &str, evs: &[Event]| {
        let path = dir.join(name);
        let text: String = evs
            .iter()
            .map(|e| format!("k{},{},{}\n", e.0, e.1, e.2))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let (lp, rp) = (write("left.csv", &left), write("right.csv", &right));
    let mut expected: Vec<String> = brute_force(&left, &right, -15, 25)
        .into_iter()
        .map(|l| format!("k{l}"))
        .collect();
    expected.sort();
    for p in ["1", "3"] {
        let out = dir.join(format!("out-{p}.csv"));
        let status = std::process::Command::new(example_binary("interval_join"))
            .arg("--left")
            .arg(&lp)
            .arg("--right")
            .arg(&rp)
            .args([
                "--lower",
                "-15",
                "--upper",
                "25",
                "--parallelism",
                p,
                "--output",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let got: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            got == expected,
            "p={p}: {} lines, expected {}",
            got.len(),
            expected.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
