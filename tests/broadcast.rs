//! Broadcast state: the operators driven by hand (read-only element side, writes on the
//! broadcast side, `apply_to_keyed_state`, snapshots restored at another parallelism,
//! undeclared state), every subtask receiving every rule, and the `broadcast_rules` example
//! against a brute-force reference on seeded inputs at parallelism 1, 2 and 4.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use actorflow::actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow::actorflow_runtime::operators::harness::OperatorHarness;
use actorflow::actorflow_runtime::state::key::OwnedKey;
use actorflow::actorflow_runtime::state::keygroup::{
    assign_to_key_group, key_group_range_for_subtask,
};
use actorflow::broadcast::{BroadcastContext, KeyedBroadcastContext, ReadOnlyBroadcastState};
use actorflow::keyed_state::ValueState;
use actorflow::operators::{
    BroadcastProcessOperator, CoRecord, KeyedBroadcastProcessOperator, OpenContext,
};
use actorflow::prelude::*;
use common::{Rng, example_output};
use serde::{Deserialize, Serialize};

const LIMITS: BroadcastStateDescriptor<u32, i64> = BroadcastStateDescriptor::new("limits");

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Rule {
    Set(u32, i64),
    /// Clear every key's alert count (through `apply_to_keyed_state`).
    Reset,
}

/// Per key: alerts when a value exceeds the key's limit, numbering them in keyed state.
#[derive(Clone, Default)]
struct Limits {
    count: Option<ValueState<u64>>,
}

impl KeyedBroadcastProcessFunction<u32, (u32, i64), Rule, String> for Limits {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.count = Some(ctx.state.value_state("count", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): (u32, i64),
        ctx: &mut KeyedContext<'_, u32>,
        limits: ReadOnlyBroadcastState<'_>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let Some(limit) = limits.get(&LIMITS, &k)? else {
            return Ok(());
        };
        if v > *limit {
            let count = self.count.as_ref().ok_or("not open")?;
            let n = count.value(ctx.state())?.unwrap_or(0) + 1;
            count.update(ctx.state(), n)?;
            out.collect(format!("{k}:{v}>{limit} #{n}"));
        }
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        rule: Rule,
        ctx: &mut KeyedBroadcastContext<'_, u32>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        match rule {
            Rule::Set(k, limit) => {
                ctx.broadcast_state().put(&LIMITS, k, limit)?;
                out.collect(format!("set {k}={limit} on {}", ctx.task().subtask_index));
            }
            Rule::Reset => {
                let count = self.count.as_ref().ok_or("not open")?;
                let mut keys = Vec::new();
                ctx.apply_to_keyed_state(|k, state| {
                    keys.push(*k);
                    count.clear(state);
                    Ok(())
                })?;
                keys.sort_unstable();
                out.collect(format!("reset {keys:?}"));
            }
        }
        Ok(())
    }
}

type LimitsOp = KeyedBroadcastProcessOperator<
    (u32, i64),
    Rule,
    String,
    OwnedKey<fn(&(u32, i64)) -> u32, u32>,
    Limits,
>;

fn limits_op() -> LimitsOp {
    let key: fn(&(u32, i64)) -> u32 = |e| e.0;
    KeyedBroadcastProcessOperator::new(OwnedKey::new(key), Limits::default(), &[LIMITS.spec()])
}

fn texts(h: &mut OperatorHarness<LimitsOp>) -> Vec<String> {
    h.take_output().into_iter().map(|(s, _)| s).collect()
}

/// What a subtask of a job restarted at `parallelism` gets of `snapshot`: the key groups of
/// its range and every union item (the runtime's rule).
fn share(snapshot: &OperatorState, index: usize, parallelism: u32) -> RestoredState {
    let range = key_group_range_for_subtask(128, parallelism, index);
    let mut state = snapshot.clone();
    state.keyed.retain(|kg, _| range.contains(*kg));
    RestoredState {
        state,
        same_index: None,
    }
}

#[test]
fn harness_keyed_broadcast_state_rules_every_key_and_restores_at_another_parallelism() {
    let mut h = OperatorHarness::new(limits_op()).unwrap();
    h.process(CoRecord::Second(Rule::Set(1, 10)), None).unwrap();
    h.process(CoRecord::Second(Rule::Set(2, 20)), None).unwrap();
    for (k, v) in [(1, 12), (1, 5), (2, 25), (3, 100), (1, 11)] {
        h.process(CoRecord::First((k, v)), Some(v)).unwrap();
    }
    assert_eq!(
        texts(&mut h),
        vec![
            "set 1=10 on 0",
            "set 2=20 on 0",
            "1:12>10 #1",
            "2:25>20 #1",
            "1:11>10 #2"
        ],
        "key 3 has no limit"
    );
    // `apply_to_keyed_state` visits the keys with state (1 and 2) and clears their counts.
    h.process(CoRecord::Second(Rule::Reset), None).unwrap();
    h.process(CoRecord::First((1, 13)), None).unwrap();
    assert_eq!(texts(&mut h), vec!["reset [1, 2]", "1:13>10 #1"]);
    h.process(CoRecord::First((2, 21)), None).unwrap();
    h.process(CoRecord::Second(Rule::Set(2, 30)), None).unwrap();
    let snapshot = h.snapshot(1).unwrap();
    assert_eq!(snapshot.union.len(), 1, "one copy of the broadcast state");
    assert_eq!(snapshot.keyed.len(), 2, "keys 1 and 2, one group each");

    // Restored at parallelism 2: each subtask has every limit and only its own keys' counts.
    let mut owners = Vec::new();
    for index in 0..2 {
        let mut r = OperatorHarness::restored(limits_op(), share(&snapshot, index, 2), |info| {
            info.subtask_index = index;
            info.parallelism = 2;
        })
        .unwrap();
        let range = key_group_range_for_subtask(128, 2, index);
        for (k, v) in [(1u32, 14i64), (2, 31)] {
            if range.contains(assign_to_key_group(&k, 128)) {
                owners.push(k);
                r.process(CoRecord::First((k, v)), None).unwrap();
            }
        }
        r.process(CoRecord::Second(Rule::Reset), None).unwrap();
        let out = texts(&mut r);
        for line in &out {
            if line.starts_with("1:") {
                assert_eq!(line, "1:14>10 #2", "key 1's count and limit came back");
            } else if line.starts_with("2:") {
                assert_eq!(line, "2:31>30 #2", "the newest limit of key 2 came back");
            }
        }
        assert_eq!(out.len(), 1 + range_keys(&range), "{out:?}");
    }
    owners.sort_unstable();
    assert_eq!(
        owners,
        vec![1, 2],
        "each key is restored on exactly one subtask"
    );
}

fn range_keys(range: &actorflow::actorflow_runtime::state::keygroup::KeyGroupRange) -> usize {
    [1u32, 2]
        .iter()
        .filter(|k| range.contains(assign_to_key_group(*k, 128)))
        .count()
}

#[test]
fn undeclared_broadcast_state_is_an_error_naming_it() {
    const OTHER: BroadcastStateDescriptor<u32, i64> = BroadcastStateDescriptor::new("other");
    let key: fn(&(u32, i64)) -> u32 = |e| e.0;
    // Declared with another descriptor than the function uses.
    let op: LimitsOp =
        KeyedBroadcastProcessOperator::new(OwnedKey::new(key), Limits::default(), &[OTHER.spec()]);
    let mut h = OperatorHarness::new(op).unwrap();
    let err = h
        .process(CoRecord::Second(Rule::Set(1, 10)), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"limits\"") && err.contains("not declared") && err.contains("other"),
        "{err}"
    );
    // Declared with other types.
    const WRONG: BroadcastStateDescriptor<u32, String> = BroadcastStateDescriptor::new("limits");
    let op: LimitsOp =
        KeyedBroadcastProcessOperator::new(OwnedKey::new(key), Limits::default(), &[WRONG.spec()]);
    let mut h = OperatorHarness::new(op).unwrap();
    let err = h
        .process(CoRecord::Second(Rule::Set(1, 10)), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("String") && err.contains("i64"), "{err}");
}

const ALLOWED: BroadcastStateDescriptor<String, ()> = BroadcastStateDescriptor::new("allowed");

/// Passes the words on the allow list; the broadcast side adds (`+w`) and removes (`-w`).
#[derive(Clone)]
struct AllowList;

impl BroadcastProcessFunction<String, String, String> for AllowList {
    fn process_element(
        &mut self,
        word: String,
        _: &mut Context<'_>,
        allowed: ReadOnlyBroadcastState<'_>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        if allowed.contains_key(&ALLOWED, &word)? {
            out.collect(word);
        }
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        change: String,
        ctx: &mut BroadcastContext<'_>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let state = ctx.broadcast_state();
        match change.split_at(1) {
            ("+", w) => {
                state.put(&ALLOWED, w.to_string(), ())?;
            }
            ("-", w) => {
                state.remove(&ALLOWED, &w.to_string())?;
            }
            _ => return Err(format!("bad change {change:?}").into()),
        }
        Ok(())
    }
}

#[test]
fn harness_non_keyed_broadcast_state_and_its_snapshot() {
    let op =
        || BroadcastProcessOperator::<String, String, String, _>::new(AllowList, &[ALLOWED.spec()]);
    let mut h = OperatorHarness::new(op()).unwrap();
    let s = |w: &str| w.to_string();
    h.process(CoRecord::Second(s("+a")), None).unwrap();
    h.process(CoRecord::Second(s("+b")), None).unwrap();
    for w in ["a", "b", "c"] {
        h.process(CoRecord::First(s(w)), None).unwrap();
    }
    h.process(CoRecord::Second(s("-a")), None).unwrap();
    h.process(CoRecord::First(s("a")), None).unwrap();
    let out: Vec<String> = h.take_output().into_iter().map(|(w, _)| w).collect();
    assert_eq!(out, vec!["a", "b"]);
    let snapshot = h.snapshot(1).unwrap();
    // Restored on 3 subtasks (rescaled): each has the list {b}.
    for index in 0..3 {
        let mut r = OperatorHarness::restored(op(), share(&snapshot, index, 3), |info| {
            info.subtask_index = index;
            info.parallelism = 3;
        })
        .unwrap();
        for w in ["a", "b"] {
            r.process(CoRecord::First(s(w)), None).unwrap();
        }
        let out: Vec<String> = r.take_output().into_iter().map(|(w, _)| w).collect();
        assert_eq!(out, vec!["b"], "subtask {index}");
    }
}

/// Every subtask of the operator receives every broadcast record, whatever the element
/// side's parallelism.
#[test]
fn every_subtask_receives_every_rule() {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(3);
    let rules = env
        .from_collection((0..20u32).map(|k| Rule::Set(k, 0)).collect())
        .broadcast_with(&LIMITS);
    let out = env
        .from_collection(vec![(0u32, 0i64)])
        .key_by(|e: &(u32, i64)| e.0)
        .connect_broadcast(&rules)
        .process(Limits::default())
        .collect();
    env.execute_blocking("every subtask").unwrap();
    let mut per_subtask = [0usize; 3];
    for line in out.take() {
        if let Some(i) = line.strip_prefix("set ").and_then(|l| l.rsplit(' ').next()) {
            per_subtask[i.parse::<usize>().unwrap()] += 1;
        }
    }
    assert_eq!(per_subtask, [20, 20, 20]);
}

// ----- the broadcast_rules example -----------------------------------------------------------

type Line = (String, i64, i64);

/// The threshold in force at `ts` for `key`: its newest rule at or before `ts`, else the
/// newest default (`*`) one.
fn brute_force(events: &[Line], rules: &[Line]) -> Vec<String> {
    let in_force = |key: &str, ts: i64| {
        rules
            .iter()
            .rev()
            .find(|r| r.0 == key && r.1 <= ts)
            .map(|r| r.2)
    };
    let mut out: Vec<String> = events
        .iter()
        .filter_map(|(k, ts, v)| {
            let t = in_force(k, *ts).or_else(|| in_force("*", *ts))?;
            (*v > t).then(|| format!("{k},{ts},{v},{t}"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_broadcast_rules_example_matches_brute_force_at_several_parallelisms() {
    let dir = std::env::temp_dir().join(format!("actorflow-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(41);
    let mut t = 0;
    let events: Vec<Line> = (0..6_000)
        .map(|_| {
            t += rng.below(4) as i64;
            (format!("k{}", rng.below(12)), t, rng.below(100) as i64)
        })
        .collect();
    // Rules often share timestamps with events and with each other (ties are the hard part).
    let mut rt = 0;
    let mut rules: Vec<Line> = vec![("*".into(), 0, 80)];
    while rt < t {
        rt += rng.below(120) as i64;
        let key = match rng.below(13) {
            12 => "*".to_string(),
            k => format!("k{k}"),
        };
        rules.push((key, rt, 40 + rng.below(60) as i64));
    }
    let write = |name: &str, lines: &[Line]| {
        let path = dir.join(name);
        let text: String = lines
            .iter()
            .map(|(k, t, v)| format!("{k},{t},{v}\n"))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let (ep, rp) = (write("events.csv", &events), write("rules.csv", &rules));
    let expected = brute_force(&events, &rules);
    assert!(expected.len() > 500, "{} alerts", expected.len());
    for p in ["1", "2", "4"] {
        let out = dir.join(format!("alerts-{p}.csv"));
        let got = example_output(
            "broadcast_rules",
            &[
                "--events".as_ref(),
                ep.as_os_str(),
                "--rules".as_ref(),
                rp.as_os_str(),
                "--parallelism".as_ref(),
                p.as_ref(),
            ],
            &out,
        );
        assert!(
            got == expected,
            "p={p}: {} alerts, expected {}",
            got.len(),
            expected.len()
        );
    }
    // And the README's demo data, shipped in the repository.
    let read = |name: &str| -> Vec<Line> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(name);
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect()
    };
    let expected = brute_force(&read("rule_events.csv"), &read("rules.csv"));
    let out = dir.join("shipped.csv");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (events, rules) = (
        root.join("data/rule_events.csv"),
        root.join("data/rules.csv"),
    );
    let got = example_output(
        "broadcast_rules",
        &[
            "--events".as_ref(),
            events.as_os_str(),
            "--rules".as_ref(),
            rules.as_os_str(),
            "--parallelism".as_ref(),
            "2".as_ref(),
        ],
        &out,
    );
    assert_eq!(got.len(), 736);
    assert!(got == expected, "shipped data: {} alerts", got.len());
    let _ = std::fs::remove_dir_all(&dir);
}
