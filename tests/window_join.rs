//! The window join and co-group against brute-force references: seeded random inputs, every
//! kind of window assigner (tumbling, sliding, session, global with a trigger), parallelism
//! 1, 2 and 4.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::prelude::*;
use actorflow::window::{
    EventTimeTrigger, GlobalWindows, SessionWindows, SlidingWindows, TumblingWindows,
};
use common::Rng;
use std::collections::BTreeMap;

type Event = (u32, i64, i64);

/// `n` events over `keys` keys with ascending even timestamps (steps of 0..=2 × step).
///
/// Even timestamps and an odd session gap keep records from landing exactly on a session's
/// end: there, whether the touching windows merge depends on whether the other input's
/// watermark already fired the first one, which no test can fix (in Flink too).
fn events(rng: &mut Rng, n: usize, keys: u64, step: u64) -> Vec<Event> {
    let mut t = 0i64;
    (0..n)
        .map(|_| {
            t += 2 * rng.below(step + 1) as i64;
            (rng.below(keys) as u32, t, rng.below(1000) as i64)
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Assigner {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
    /// Global windows fired by the end of input's maximum watermark.
    Global,
}

/// Per key, the windows (as `(start, end)`) and the records of each side in them.
type Windows = BTreeMap<(u32, i64, i64), (Vec<Event>, Vec<Event>)>;

fn windows_of(a: &[Event], b: &[Event], assigner: Assigner) -> Windows {
    let mut out: Windows = BTreeMap::new();
    let mut put = |e: &Event, first: bool, w: (i64, i64)| {
        let entry = out.entry((e.0, w.0, w.1)).or_default();
        if first {
            entry.0.push(*e);
        } else {
            entry.1.push(*e);
        }
    };
    let tagged = a
        .iter()
        .map(|e| (e, true))
        .chain(b.iter().map(|e| (e, false)));
    match assigner {
        Assigner::Tumbling(size) => {
            for (e, first) in tagged {
                let start = e.1 - e.1.rem_euclid(size);
                put(e, first, (start, start + size));
            }
        }
        Assigner::Sliding(size, slide) => {
            for (e, first) in tagged {
                let mut start = e.1 - e.1.rem_euclid(slide);
                while start > e.1 - size {
                    put(e, first, (start, start + size));
                    start -= slide;
                }
            }
        }
        Assigner::Global => {
            for (e, first) in tagged {
                put(e, first, (i64::MIN, i64::MAX));
            }
        }
        Assigner::Session(gap) => {
            // Per key, sort both sides by time; a new session starts after a gap: windows
            // `[t, t + gap)` that touch merge, as Flink's `TimeWindow::intersects` says.
            let mut per_key: BTreeMap<u32, Vec<(i64, bool, Event)>> = BTreeMap::new();
            for (e, first) in tagged {
                per_key.entry(e.0).or_default().push((e.1, first, *e));
            }
            for (_, mut recs) in per_key {
                recs.sort_by_key(|r| r.0);
                let mut session: Vec<(i64, bool, Event)> = Vec::new();
                let mut flush = |session: &mut Vec<(i64, bool, Event)>| {
                    if let (Some(f), Some(l)) = (session.first(), session.last()) {
                        let w = (f.0, l.0 + gap);
                        for (_, first, e) in session.drain(..) {
                            put(&e, first, w);
                        }
                    }
                };
                for r in recs {
                    if session.last().is_some_and(|l| r.0 > l.0 + gap) {
                        flush(&mut session);
                    }
                    session.push(r);
                }
                flush(&mut session);
            }
        }
    }
    out
}

fn join_line(a: &Event, b: &Event) -> String {
    format!("{},{},{},{},{}", a.0, a.1, a.2, b.1, b.2)
}

fn cogroup_line(a: &[Event], b: &[Event]) -> String {
    let key = a.first().or(b.first()).map_or(0, |e| e.0);
    let mut av: Vec<(i64, i64)> = a.iter().map(|e| (e.1, e.2)).collect();
    let mut bv: Vec<(i64, i64)> = b.iter().map(|e| (e.1, e.2)).collect();
    av.sort_unstable();
    bv.sort_unstable();
    format!("{key}:{av:?}/{bv:?}")
}

fn brute_force(a: &[Event], b: &[Event], assigner: Assigner) -> (Vec<String>, Vec<String>) {
    let mut joined = Vec::new();
    let mut grouped = Vec::new();
    for (xs, ys) in windows_of(a, b, assigner).values() {
        for x in xs {
            for y in ys {
                joined.push(join_line(x, y));
            }
        }
        grouped.push(cogroup_line(xs, ys));
    }
    joined.sort();
    grouped.sort();
    (joined, grouped)
}

fn stamped(env: &StreamExecutionEnvironment, events: Vec<Event>) -> DataStream<Event> {
    env.from_collection(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .punctuated()
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
}

/// Runs the join and the co-group of `a` and `b` in one job.
fn run(
    a: Vec<Event>,
    b: Vec<Event>,
    assigner: Assigner,
    parallelism: u32,
) -> (Vec<String>, Vec<String>) {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let (a, b) = (stamped(&env, a), stamped(&env, b));
    let key_a = |e: &Event| e.0;
    let key_b = |e: &Event| e.0;
    let join = |e: Event, f: Event| join_line(&e, &f);
    let cogroup = |xs: Vec<Event>, ys: Vec<Event>, out: &mut Collector<String>| {
        out.collect(cogroup_line(&xs, &ys));
        Ok(())
    };
    let j = a.join(&b).where_(key_a).equal_to(key_b);
    let c = a.co_group(&b).where_(key_a).equal_to(key_b);
    let (joined, grouped) = match assigner {
        Assigner::Tumbling(size) => {
            let w = TumblingWindows::event_time(size).unwrap();
            (j.window(w).apply(join), c.window(w).apply(cogroup))
        }
        Assigner::Sliding(size, slide) => {
            let w = SlidingWindows::event_time(size, slide).unwrap();
            (j.window(w).apply(join), c.window(w).apply(cogroup))
        }
        Assigner::Session(gap) => (
            j.window(SessionWindows::event_time(gap).unwrap())
                .apply(join),
            c.window(SessionWindows::event_time(gap).unwrap())
                .apply(cogroup),
        ),
        Assigner::Global => (
            j.window(GlobalWindows::create())
                .trigger(EventTimeTrigger)
                .apply(join),
            c.window(GlobalWindows::create())
                .trigger(EventTimeTrigger)
                .apply(cogroup),
        ),
    };
    let (joined, grouped) = (joined.collect(), grouped.collect());
    env.execute_blocking("window join").unwrap();
    let (mut joined, mut grouped) = (joined.take(), grouped.take());
    joined.sort();
    grouped.sort();
    (joined, grouped)
}

#[test]
fn window_join_and_co_group_match_brute_force_for_every_assigner_and_parallelism() {
    let mut rng = Rng::new(17);
    let a = events(&mut rng, 1_500, 20, 3);
    let b = events(&mut rng, 1_200, 20, 4);
    for assigner in [
        Assigner::Tumbling(100),
        Assigner::Sliding(120, 40),
        Assigner::Session(25),
    ] {
        let (join_ref, cogroup_ref) = brute_force(&a, &b, assigner);
        assert!(
            join_ref.len() > 1_000,
            "{assigner:?}: {} pairs",
            join_ref.len()
        );
        assert!(
            cogroup_ref.iter().any(|l| l.ends_with("/[]")),
            "{assigner:?}: some windows have no second-side records"
        );
        for p in [1, 2, 4] {
            let (joined, grouped) = run(a.clone(), b.clone(), assigner, p);
            assert!(
                joined == join_ref,
                "{assigner:?} p={p}: join {} pairs, expected {}",
                joined.len(),
                join_ref.len()
            );
            assert!(
                grouped == cogroup_ref,
                "{assigner:?} p={p}: co-group {} groups, expected {}",
                grouped.len(),
                cogroup_ref.len()
            );
        }
    }
}

#[test]
fn global_windows_with_a_trigger_join_everything_at_the_end() {
    let mut rng = Rng::new(5);
    let a = events(&mut rng, 120, 6, 5);
    let b = events(&mut rng, 100, 6, 5);
    let expected = brute_force(&a, &b, Assigner::Global);
    assert_eq!(run(a, b, Assigner::Global, 2), expected);
}
