//! Joins against brute-force references: seeded random inputs at parallelism 1, 2 and 4,
//! inclusive and exclusive bounds, late records, and the `interval_join` example as a binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::operators::JoinContext;
use actorflow::prelude::*;
use common::{Rng, example_output};

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
    use actorflow::actorflow_runtime::operators::harness::OperatorHarness;
    use actorflow::actorflow_runtime::state::key::OwnedKey;
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
        let got = example_output(
            "interval_join",
            &[
                "--left".as_ref(),
                lp.as_os_str(),
                "--right".as_ref(),
                rp.as_os_str(),
                "--lower".as_ref(),
                "-15".as_ref(),
                "--upper".as_ref(),
                "25".as_ref(),
                "--parallelism".as_ref(),
                p.as_ref(),
            ],
            &out,
        );
        assert!(
            got == expected,
            "p={p}: {} lines, expected {}",
            got.len(),
            expected.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- the N-input operator and the three-way join -----------------------------------------

fn three_way_brute_force(a: &[Event], b: &[Event], c: &[Event], size: i64) -> Vec<String> {
    let window = |t: i64| t - t.rem_euclid(size);
    let mut out = Vec::new();
    for x in a {
        for y in b
            .iter()
            .filter(|y| y.0 == x.0 && window(y.1) == window(x.1))
        {
            for z in c
                .iter()
                .filter(|z| z.0 == x.0 && window(z.1) == window(x.1))
            {
                out.push(format!("{},{},{},{},{}", x.0, window(x.1), x.2, y.2, z.2));
            }
        }
    }
    out.sort();
    out
}

fn three_way(
    a: Vec<Event>,
    b: Vec<Event>,
    c: Vec<Event>,
    size: i64,
    parallelism: u32,
) -> Vec<String> {
    use actorflow::multi_input::MultiInput;
    use actorflow::operators::{Three, ThreeWayWindowJoin};
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let (a, b, c) = (stamped(&env, a), stamped(&env, b), stamped(&env, c));
    let key = |e: &Event| e.0;
    let join = ThreeWayWindowJoin::new(
        size,
        |k: &u32, start: i64, a: &i64, b: &i64, c: &i64, out: &mut Collector<String>| {
            out.collect(format!("{k},{start},{a},{b},{c}"));
            Ok(())
        },
    )
    .unwrap();
    let out = MultiInput::new(&env)
        .input(&a, key, |e: Event| Three::A(e.2))
        .input(&b, key, |e: Event| Three::B(e.2))
        .input(&c, key, |e: Event| Three::C(e.2))
        .process("three-way join", join)
        .collect();
    env.execute_blocking("three-way join").unwrap();
    let mut lines = out.take();
    lines.sort();
    lines
}

#[test]
fn three_way_join_matches_brute_force_at_several_parallelisms() {
    let mut rng = Rng::new(99);
    let a = events(&mut rng, 1_500, 12, 10);
    let b = events(&mut rng, 1_200, 12, 12);
    let c = events(&mut rng, 1_000, 12, 15);
    for size in [100, 250] {
        let expected = three_way_brute_force(&a, &b, &c, size);
        assert!(expected.len() > 100, "size {size}: {} rows", expected.len());
        for p in [1, 2, 4] {
            let got = three_way(a.clone(), b.clone(), c.clone(), size, p);
            assert!(
                got == expected,
                "size {size} at p={p}: {} rows, expected {}",
                got.len(),
                expected.len()
            );
        }
    }
}

/// A source that emits its events (each followed by a watermark at its timestamp), or marks
/// itself idle after them, then waits — without ending — until the test says so.
#[derive(Clone)]
struct Scripted {
    events: Vec<Event>,
    idle_after: bool,
    end: tokio::sync::watch::Receiver<bool>,
}

struct ScriptedReader {
    script: Scripted,
    sent: bool,
}

impl ParallelSource for Scripted {
    type Source = ScriptedReader;
    fn create(&self, _: &TaskInfo) -> Result<ScriptedReader, String> {
        Ok(ScriptedReader {
            script: self.clone(),
            sent: false,
        })
    }
    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }
}

impl Source for ScriptedReader {
    type Output = Event;
    async fn next_batch(&mut self, out: &mut Collector<Event>) -> Result<SourceStatus, UserError> {
        if !self.sent {
            self.sent = true;
            for e in &self.script.events {
                out.collect_with_timestamp(*e, Timestamp(e.1));
                out.emit_watermark(Watermark(e.1));
            }
            if self.script.idle_after {
                out.emit_status(
                    actorflow::actorflow_runtime::dataplane::message::WatermarkStatus::Idle,
                );
            }
            return Ok(SourceStatus::More);
        }
        // Cancel-safe: a fresh wait checks the current value first.
        let _ = self.script.end.wait_for(|end| *end).await;
        Ok(SourceStatus::End)
    }
}

/// Three inputs into the N-input operator; the third goes idle after one record. The
/// operator's watermark must then follow the two active inputs alone (the valve leaves idle
/// inputs out), so the window fires while every source is still running.
#[test]
fn an_idle_input_does_not_hold_back_the_n_input_operator() {
    use actorflow::multi_input::MultiInput;
    use actorflow::operators::{Three, ThreeWayWindowJoin};
    use std::sync::{Arc, Mutex};
    let (end_tx, end_rx) = tokio::sync::watch::channel(false);
    let end_tx = Arc::new(end_tx);
    let script = |events: Vec<Event>, idle_after: bool| Scripted {
        events,
        idle_after,
        end: end_rx.clone(),
    };
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(1);
    let a = env.add_source("a", script(vec![(1, 10, 1), (1, 150, 2)], false));
    let b = env.add_source("b", script(vec![(1, 20, 3), (1, 160, 4)], false));
    let c = env.add_source("c", script(vec![(1, 50, 5)], true));
    let join = ThreeWayWindowJoin::new(
        100,
        |k: &u32, start: i64, a: &i64, b: &i64, c: &i64, out: &mut Collector<String>| {
            out.collect(format!("{k},{start},{a},{b},{c}"));
            Ok(())
        },
    )
    .unwrap();
    let joined = MultiInput::new(&env)
        .input(&a, |e: &Event| e.0, |e: Event| Three::A(e.2))
        .input(&b, |e: &Event| e.0, |e: Event| Three::B(e.2))
        .input(&c, |e: &Event| e.0, |e: Event| Three::C(e.2))
        .process("three-way join", join);
    // The sink ends every source once the window's row arrived (or, failing that, after a
    // deadline, so a broken valve fails the test instead of hanging it).
    let rows: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let seen = rows.clone();
    let signal = end_tx.clone();
    joined.add_sink("rows", move |_: &TaskInfo| {
        let (seen, signal) = (seen.clone(), signal.clone());
        let deadline = signal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            let _ = deadline.send(true);
        });
        Ok(RowSink { seen, signal })
    });
    env.execute_blocking("idle input").unwrap();
    let rows = rows.lock().unwrap().clone();
    assert_eq!(
        rows,
        vec![("1,0,1,3,5".to_string(), true)],
        "the window fired while the sources were still running"
    );
}

struct RowSink {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
    signal: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Sink for RowSink {
    type Input = String;
    async fn write_batch(&mut self, batch: Batch<String>) -> Result<(), UserError> {
        let running = !*self.signal.borrow();
        let mut seen = self.seen.lock().unwrap();
        seen.extend(batch.into_values().into_iter().map(|r| (r, running)));
        let _ = self.signal.send(true);
        Ok(())
    }
}

#[test]
fn the_three_way_join_example_is_exact_on_generated_files() {
    let dir = std::env::temp_dir().join(format!("actorflow-join3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(17);
    let (a, b, c) = (
        events(&mut rng, 1_500, 10, 9),
        events(&mut rng, 1_500, 10, 9),
        events(&mut rng, 1_500, 10, 9),
    );
    let write = |name: &str, evs: &[Event]| {
        let path = dir.join(name);
        let text: String = evs
            .iter()
            .map(|e| format!("k{},{},{}\n", e.0, e.1, e.2))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let paths = [write("a.csv", &a), write("b.csv", &b), write("c.csv", &c)];
    let mut expected: Vec<String> = three_way_brute_force(&a, &b, &c, 300)
        .into_iter()
        .map(|l| format!("k{l}"))
        .collect();
    expected.sort();
    assert!(expected.len() > 100);
    for p in ["1", "4"] {
        let out = dir.join(format!("out-{p}.csv"));
        let got = example_output(
            "three_way_join",
            &[
                "--a".as_ref(),
                paths[0].as_os_str(),
                "--b".as_ref(),
                paths[1].as_os_str(),
                "--c".as_ref(),
                paths[2].as_os_str(),
                "--window-size".as_ref(),
                "300".as_ref(),
                "--parallelism".as_ref(),
                p.as_ref(),
            ],
            &out,
        );
        assert!(
            got == expected,
            "p={p}: {} lines, expected {}",
            got.len(),
            expected.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- checkpoints -----------------------------------------------------------------------------

/// Rules `(key, from_ts, threshold)` in broadcast state; each key's events wait in keyed
/// state until the watermark passes them, then alert if above the threshold in force (the
/// `broadcast_rules` example's logic on `Event`s, so its output does not depend on timing).
#[derive(Clone, Default)]
struct Thresholds {
    pending: Option<actorflow::keyed_state::MapState<i64, Vec<i64>>>,
}

const RULES: BroadcastStateDescriptor<u32, Vec<(i64, i64)>> =
    BroadcastStateDescriptor::new("rules");

impl KeyedBroadcastProcessFunction<u32, Event, Event, String> for Thresholds {
    fn open(&mut self, ctx: &mut actorflow::operators::OpenContext<'_>) -> Result<(), UserError> {
        self.pending = Some(ctx.state.map_state("pending", None)?);
        Ok(())
    }
    fn process_element(
        &mut self,
        e: Event,
        ctx: &mut KeyedContext<'_, u32>,
        _: actorflow::broadcast::ReadOnlyBroadcastState<'_>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let pending = self.pending.as_ref().ok_or("not open")?;
        pending.modify(ctx.state(), e.1, |v| v.push(e.2))?;
        ctx.register_event_time_timer(Timestamp(e.1));
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        r: Event,
        ctx: &mut actorflow::broadcast::KeyedBroadcastContext<'_, u32>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let rules = ctx.broadcast_state().entries_mut(&RULES)?;
        rules.entry(r.0).or_default().push((r.1, r.2));
        Ok(())
    }
    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, u32>,
        rules: actorflow::broadcast::ReadOnlyBroadcastState<'_>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let pending = self.pending.as_ref().ok_or("not open")?;
        let values = pending.take(ctx.state(), &time.0)?.unwrap_or_default();
        let k = *ctx.current_key();
        let threshold = rules
            .get(&RULES, &k)?
            .and_then(|h| h.iter().rev().find(|(from, _)| *from <= time.0))
            .map(|(_, t)| *t);
        if let Some(t) = threshold {
            for v in values.into_iter().filter(|v| *v > t) {
                out.collect(format!("b|{k},{},{v},{t}", time.0));
            }
        }
        Ok(())
    }
}

/// One job with a three-way join, an interval join and a broadcast-state operator, fed by
/// rate-limited generators, restarted by panics in each with unaligned checkpoints: the output
/// equals the fault-free run (buffers, timers, broadcast state and in-flight data of all
/// inputs restored).
#[test]
fn joins_and_broadcast_state_restore_exactly_after_failures_with_unaligned_checkpoints() {
    use actorflow::fault::FaultPlan;
    use actorflow::multi_input::MultiInput;
    use actorflow::operators::{Three, ThreeWayWindowJoin};
    use actorflow::restart::RestartStrategy;
    use std::time::Duration;
    let run = |faults: Option<&str>| {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(2).set_max_parallelism(128);
        if let Some(f) = faults {
            env.enable_checkpointing(Duration::from_millis(30))
                .checkpointing(|c| c.settings.unaligned = true)
                .set_restart_strategy(RestartStrategy::FixedDelay {
                    attempts: 5,
                    delay: Duration::from_millis(10),
                })
                .set_fault_plan(FaultPlan::parse(f).unwrap());
        }
        let source = |salt: u64, uid: &str| {
            env.from_generator(
                GeneratorSource::new(20_000, move |i| {
                    (
                        (i.wrapping_mul(salt) % 50) as u32,
                        (i / 4) as i64,
                        (i % 97) as i64,
                    )
                })
                .with_rate_limit(100_000.0),
            )
            .set_parallelism(1)
            .uid(&format!("{uid}-source"))
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .punctuated()
                    .with_timestamp_assigner(|e: &Event, _| e.1),
            )
            .uid(&format!("{uid}-timestamps"))
            .set_parallelism(1)
        };
        let (a, b, c) = (source(3, "a"), source(5, "b"), source(11, "c"));
        let key = |e: &Event| e.0;
        let join3 = ThreeWayWindowJoin::new(
            10,
            |k: &u32, start: i64, a: &i64, b: &i64, c: &i64, out: &mut Collector<String>| {
                out.collect(format!("3|{k},{start},{a},{b},{c}"));
                Ok(())
            },
        )
        .unwrap();
        let three = MultiInput::new(&env)
            .input(&a, key, |e: Event| Three::A(e.2))
            .input(&b, key, |e: Event| Three::B(e.2))
            .input(&c, key, |e: Event| Three::C(e.2))
            .process("three", join3)
            .uid("three")
            .collect();
        let interval = a
            .key_by(key)
            .interval_join(&b.key_by(key))
            .between(-3, 2)
            .process(
                |l: Event, r: Event, _: &JoinContext, out: &mut Collector<String>| {
                    out.collect(format!("i|{}", line(&l, &r)));
                    Ok(())
                },
            )
            .uid("interval")
            .name("interval")
            .collect();
        let rules = env
            .from_generator(
                GeneratorSource::new(400, |i| {
                    ((i * 7 % 50) as u32, (i * 12) as i64, (i * 31 % 97) as i64)
                })
                .with_rate_limit(2_000.0),
            )
            .set_parallelism(1)
            .uid("rules-source")
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .punctuated()
                    .with_timestamp_assigner(|e: &Event, _| e.1),
            )
            .uid("rules-timestamps")
            .set_parallelism(1)
            .broadcast_with(&RULES);
        let alerts = c
            .key_by(key)
            .connect_broadcast(&rules)
            .process(Thresholds::default())
            .uid("rules")
            .name("rules")
            .collect();
        env.execute_blocking("joins").unwrap();
        let mut rows = three.take();
        rows.extend(interval.take());
        let alerts = alerts.take();
        assert!(alerts.len() > 1_000, "{} alerts", alerts.len());
        rows.extend(alerts);
        rows.sort();
        rows
    };
    let reference = run(None);
    assert!(reference.len() > 1_000, "{} rows", reference.len());
    let got = run(Some(
        "panic@three#1:records=9000,panic@interval#0:records=7000,panic@rules#1:records=6000",
    ));
    assert!(
        got == reference,
        "{} rows, expected {}",
        got.len(),
        reference.len()
    );
}
