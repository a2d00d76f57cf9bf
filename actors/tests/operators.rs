//! Harness tests: one operator at a time, records, watermarks and processing time pushed by
//! hand, exact outputs asserted. Every assigner, trigger and evictor, keyed timers and state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actorflow_runtime::dataplane::message::WatermarkStatus;
use actorflow_runtime::operators::harness::OperatorHarness;
use actorflow_runtime::operators::{
    AggregateAgg, AggregateFunction, EvictingAgg, KeyedContext, KeyedProcessFunction,
    KeyedProcessOperator, ListAgg, OpenContext, PassThrough, ReduceAgg,
    TimestampsAndWatermarksOperator, WindowContext, WindowOperator, WindowSettings,
};
use actorflow_runtime::state::key::OwnedKey;
use actorflow_runtime::state::keyed_state::{ListState, MapState, StateTtlConfig, ValueState};
use actorflow_runtime::time::watermark::WatermarkStrategy;
use actorflow_runtime::time::window::*;
use actorflow_runtime::{Collector, OutputTag, Timestamp, UserError};
use std::time::Duration;

type Ev = (char, i64);

fn key() -> OwnedKey<fn(&Ev) -> char, char> {
    OwnedKey::new((|e: &Ev| e.0) as fn(&Ev) -> char)
}

fn sum(a: Ev, b: Ev) -> Ev {
    (a.0, a.1 + b.1)
}

fn reduce_op<A, Tr>(
    assigner: A,
    trigger: Tr,
    settings: WindowSettings<Ev>,
) -> OperatorHarness<impl actorflow_runtime::Operator<In = Ev, Out = Ev>>
where
    A: WindowAssigner<Ev>,
    Tr: Trigger<Ev, A::W>,
{
    OperatorHarness::new(WindowOperator::new(
        key(),
        assigner,
        trigger,
        ReduceAgg(sum as fn(Ev, Ev) -> Ev),
        PassThrough,
        settings,
    ))
    .unwrap()
}

/// Global windows firing every two records with `evictor`; emits the values kept.
fn every_two_values<E: Evictor<Ev, GlobalWindow>>(
    evictor: E,
) -> OperatorHarness<impl actorflow_runtime::Operator<In = Ev, Out = Vec<i64>>> {
    OperatorHarness::new(WindowOperator::new(
        key(),
        GlobalWindows::create(),
        CountTrigger::of(2),
        EvictingAgg {
            evictor,
            inner: ListAgg,
        },
        |_: &char,
         _: &mut WindowContext<'_, GlobalWindow>,
         v: Vec<Ev>,
         out: &mut Collector<Vec<i64>>| {
            out.collect(v.into_iter().map(|e| e.1).collect());
            Ok(())
        },
        WindowSettings::default(),
    ))
    .unwrap()
}

#[test]
fn tumbling_event_time_fires_at_the_window_end_with_its_max_timestamp() {
    let a = TumblingWindows::event_time(10).unwrap();
    let mut h = reduce_op(a, EventTimeTrigger, WindowSettings::default());
    h.process(('a', 1), Some(3)).unwrap();
    h.process(('a', 2), Some(9)).unwrap();
    h.process(('b', 5), Some(-4)).unwrap();
    h.watermark(8).unwrap();
    assert_eq!(h.take_output(), vec![(('b', 5), Some(-1))]);
    h.watermark(9).unwrap();
    assert_eq!(h.take_output(), vec![(('a', 3), Some(9))]);
    assert_eq!(
        h.take_watermarks(),
        vec![8, 9],
        "watermarks are forwarded after the results"
    );
    // Late: dropped (no side output configured), nothing fires.
    h.process(('a', 100), Some(5)).unwrap();
    h.watermark(100).unwrap();
    assert!(h.take_output().is_empty());
}

#[test]
fn allowed_lateness_refires_and_late_records_go_to_the_side_output() {
    let tag = OutputTag::new("late");
    let settings = WindowSettings {
        allowed_lateness: 5,
        late_output: Some(tag.clone()),
    };
    let mut h = reduce_op(
        TumblingWindows::event_time(10).unwrap(),
        EventTimeTrigger,
        settings,
    );
    h.process(('a', 1), Some(2)).unwrap();
    h.watermark(9).unwrap();
    assert_eq!(h.take_output(), vec![(('a', 1), Some(9))]);
    h.process(('a', 10), Some(4)).unwrap(); // late but allowed: fires at once
    assert_eq!(h.take_output(), vec![(('a', 11), Some(9))]);
    h.watermark(14).unwrap(); // cleanup at 9 + 5
    h.process(('a', 100), Some(4)).unwrap();
    assert!(h.take_output().is_empty());
    assert_eq!(h.take_side_output(&tag), vec![(('a', 100), Some(4))]);
}

#[test]
fn sliding_windows_fire_each_window_and_sessions_merge() {
    let mut h = reduce_op(
        SlidingWindows::event_time(10, 5).unwrap(),
        EventTimeTrigger,
        WindowSettings::default(),
    );
    h.process(('a', 1), Some(7)).unwrap();
    h.watermark(i64::MAX).unwrap();
    assert_eq!(
        h.take_output(),
        vec![(('a', 1), Some(9)), (('a', 1), Some(14))]
    );

    let mut s = reduce_op(
        SessionWindows::event_time(5).unwrap(),
        EventTimeTrigger,
        WindowSettings::default(),
    );
    for (v, t) in [(1, 0), (2, 5), (4, 20), (8, 10)] {
        s.process(('a', v), Some(t)).unwrap();
    }
    s.watermark(i64::MAX).unwrap();
    // [0,5) and [5,10) touch and merge, [10,15) touches too; [20,25) stays apart.
    assert_eq!(
        s.take_output(),
        vec![(('a', 11), Some(14)), (('a', 4), Some(24))]
    );
}

#[test]
fn dynamic_session_gaps_come_from_the_record() {
    let a = SessionWindows::dynamic(WindowTime::Event, |e: &Ev| e.1);
    let mut h = reduce_op(a, EventTimeTrigger, WindowSettings::default());
    h.process(('a', 10), Some(0)).unwrap(); // [0, 10)
    h.process(('a', 1), Some(10)).unwrap(); // [10, 11) touches
    h.process(('a', 2), Some(13)).unwrap(); // [13, 15) apart
    h.watermark(i64::MAX).unwrap();
    assert_eq!(
        h.take_output(),
        vec![(('a', 11), Some(10)), (('a', 2), Some(14))]
    );
    let mut bad = reduce_op(
        SessionWindows::dynamic(WindowTime::Event, |_: &Ev| 0),
        EventTimeTrigger,
        WindowSettings::default(),
    );
    let err = bad.process(('a', 1), Some(0)).unwrap_err();
    assert!(err.to_string().contains("gap"), "{err}");
}

#[test]
fn processing_time_windows_follow_the_clock() {
    let mut h = reduce_op(
        TumblingWindows::processing_time(10).unwrap(),
        ProcessingTimeTrigger,
        WindowSettings::default(),
    );
    h.set_processing_time(3).unwrap();
    h.process(('a', 1), None).unwrap();
    h.process(('a', 2), None).unwrap();
    h.set_processing_time(12).unwrap();
    h.process(('a', 4), None).unwrap();
    assert_eq!(h.next_processing_time(), Some(19));
    assert_eq!(h.take_output(), vec![(('a', 3), Some(9))]);
    h.set_processing_time(19).unwrap();
    assert_eq!(h.take_output(), vec![(('a', 4), Some(19))]);
    assert_eq!(h.next_processing_time(), None, "state and timers are gone");
}

#[test]
fn count_windows_purge_and_slide_with_an_evictor() {
    let mut h = reduce_op(
        GlobalWindows::create(),
        PurgingTrigger::of(CountTrigger::of(3)),
        WindowSettings::default(),
    );
    for v in 1..=7 {
        h.process(('a', v), None).unwrap();
    }
    h.watermark(i64::MAX).unwrap();
    h.finish().unwrap();
    let sums: Vec<i64> = h.take_output().into_iter().map(|(e, _)| e.1).collect();
    assert_eq!(
        sums,
        vec![6, 15],
        "the partial window of 7 never fires, as in Flink"
    );

    let mut s = every_two_values(CountEvictor::of(3));
    for v in 1..=6 {
        s.process(('a', v), None).unwrap();
    }
    let fired: Vec<Vec<i64>> = s.take_output().into_iter().map(|(v, _)| v).collect();
    assert_eq!(fired, vec![vec![1, 2], vec![2, 3, 4], vec![4, 5, 6]]);
}

#[test]
fn time_evictor_keeps_the_recent_records() {
    let mut h = OperatorHarness::new(WindowOperator::new(
        key(),
        TumblingWindows::event_time(100).unwrap(),
        EventTimeTrigger,
        EvictingAgg {
            evictor: TimeEvictor::of(10),
            inner: ReduceAgg(sum as fn(Ev, Ev) -> Ev),
        },
        PassThrough,
        WindowSettings::default(),
    ))
    .unwrap();
    for (v, t) in [(1, 5), (2, 50), (4, 45), (8, 41)] {
        h.process(('a', v), Some(t)).unwrap();
    }
    h.watermark(99).unwrap();
    assert_eq!(
        h.take_output(),
        vec![(('a', 14), Some(99))],
        "only ts > 50 - 10 remain"
    );
}

#[test]
fn continuous_trigger_fires_early_and_at_the_end() {
    let mut h = reduce_op(
        TumblingWindows::event_time(100).unwrap(),
        ContinuousEventTimeTrigger::of(30).unwrap(),
        WindowSettings::default(),
    );
    h.process(('a', 1), Some(5)).unwrap(); // first early firing at 0 + 30
    h.watermark(29).unwrap();
    assert!(h.take_output().is_empty());
    h.watermark(30).unwrap();
    assert_eq!(h.take_output(), vec![(('a', 1), Some(99))]);
    h.process(('a', 2), Some(40)).unwrap();
    h.watermark(60).unwrap();
    assert_eq!(h.take_output(), vec![(('a', 3), Some(99))]);
    h.watermark(99).unwrap(); // 90 (early) and 99 (end) both fire
    assert_eq!(
        h.take_output(),
        vec![(('a', 3), Some(99)), (('a', 3), Some(99))]
    );
}

/// A custom trigger: fires as soon as a large value arrives, purging.
#[derive(Clone)]
struct Big;

impl Trigger<Ev, GlobalWindow> for Big {
    type State = ();
    fn on_element(
        &mut self,
        e: &Ev,
        _: Option<Timestamp>,
        _: &GlobalWindow,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if e.1 >= 100 {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    }
    fn on_event_time(
        &mut self,
        _: Timestamp,
        _: &GlobalWindow,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn on_processing_time(
        &mut self,
        _: Timestamp,
        _: &GlobalWindow,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn clear(&mut self, _: &GlobalWindow, _: &mut (), _: &mut TriggerContext<'_>) {}
}

#[test]
fn custom_triggers_and_end_of_stream_global_windows() {
    let mut h = reduce_op(GlobalWindows::create(), Big, WindowSettings::default());
    for v in [1, 2, 100, 5] {
        h.process(('a', v), None).unwrap();
    }
    assert_eq!(h.take_output(), vec![(('a', 103), Some(i64::MAX))]);

    let eos = GlobalWindows::with_end_of_stream_trigger();
    let trigger = AssignerDefault(<GlobalWindows as WindowAssigner<Ev>>::default_trigger(&eos));
    let mut g = reduce_op(eos, trigger, WindowSettings::default());
    g.process(('a', 1), None).unwrap();
    g.process(('a', 2), None).unwrap();
    g.watermark(1_000).unwrap();
    assert!(g.take_output().is_empty());
    g.watermark(i64::MAX).unwrap();
    assert_eq!(g.take_output(), vec![(('a', 3), Some(i64::MAX))]);
}

#[derive(Clone)]
struct Avg;
impl AggregateFunction<Ev> for Avg {
    type Acc = (i64, i64);
    type Out = f64;
    fn create_accumulator(&mut self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&mut self, e: Ev, a: &mut (i64, i64)) {
        a.0 += e.1;
        a.1 += 1;
    }
    fn get_result(&mut self, a: &(i64, i64)) -> f64 {
        a.0 as f64 / a.1 as f64
    }
    fn merge(&mut self, a: &mut (i64, i64), b: (i64, i64)) {
        a.0 += b.0;
        a.1 += b.1;
    }
}

#[test]
fn aggregate_with_a_process_function_sees_the_window_and_state() {
    let mut h = OperatorHarness::new(WindowOperator::new(
        key(),
        SessionWindows::event_time(10).unwrap(),
        EventTimeTrigger,
        AggregateAgg(Avg),
        |k: &char,
         ctx: &mut WindowContext<'_, TimeWindow>,
         avg: f64,
         out: &mut Collector<String>| {
            let fired = ctx.global_state().get_or_default::<u32>("fired")?;
            *fired += 1;
            let n = *fired;
            out.collect(format!("{k} {:?} {avg} #{n}", ctx.window()));
            Ok(())
        },
        WindowSettings::default(),
    ))
    .unwrap();
    h.process(('a', 1), Some(0)).unwrap();
    h.process(('a', 4), Some(25)).unwrap();
    h.process(('a', 2), Some(8)).unwrap(); // merges into [0, 18)
    h.watermark(i64::MAX).unwrap();
    let out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        out,
        vec![
            "a TimeWindow { start: 0, end: 18 } 1.5 #1",
            "a TimeWindow { start: 25, end: 35 } 4 #2"
        ]
    );
}

// ----- keyed process functions: timers and state -----------------------------------------

#[derive(Clone, Default)]
struct Timers {
    seen: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<char, Ev, String> for Timers {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.seen = Some(ctx.state.value_state("seen", None)?);
        Ok(())
    }
    fn process_element(
        &mut self,
        e: Ev,
        ctx: &mut KeyedContext<'_, char>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let seen = self.seen.as_ref().ok_or("open")?;
        let n = seen.value(ctx.state())?.unwrap_or(0) + 1;
        seen.update(ctx.state(), n)?;
        // The same timer, registered for every record: fires once.
        ctx.register_event_time_timer(Timestamp(100));
        ctx.register_processing_time_timer(Timestamp(50));
        if e.1 < 0 {
            ctx.delete_processing_time_timer(Timestamp(50));
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        t: Timestamp,
        ctx: &mut KeyedContext<'_, char>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let seen = self.seen.as_ref().ok_or("open")?;
        let n = seen.value(ctx.state())?.unwrap_or(0);
        out.collect(format!(
            "{} {:?} at {} after {n}",
            ctx.current_key(),
            ctx.time_domain().unwrap(),
            t.0
        ));
        Ok(())
    }
}

#[test]
fn timers_registered_twice_fire_once_and_can_be_deleted() {
    let mut h = OperatorHarness::new(KeyedProcessOperator::new(key(), Timers::default())).unwrap();
    for v in [1, 2, 3] {
        h.process(('a', v), Some(v)).unwrap();
    }
    h.process(('b', -1), Some(1)).unwrap();
    h.set_processing_time(49).unwrap();
    assert!(h.take_output().is_empty());
    h.set_processing_time(50).unwrap();
    assert_eq!(
        h.take_output(),
        vec![("a ProcessingTime at 50 after 3".into(), None)]
    );
    h.watermark(99).unwrap();
    assert!(h.take_output().is_empty());
    h.watermark(100).unwrap();
    assert_eq!(
        h.take_output(),
        vec![
            ("a EventTime at 100 after 3".into(), Some(100)),
            ("b EventTime at 100 after 1".into(), Some(100))
        ]
    );
    h.watermark(1_000).unwrap();
    assert!(h.take_output().is_empty(), "fired timers are gone");
}

#[derive(Clone, Default)]
struct Ttl {
    last: Option<ValueState<i64>>,
    all: Option<ListState<i64>>,
    by_value: Option<MapState<i64, u32>>,
}

impl KeyedProcessFunction<char, Ev, String> for Ttl {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let ttl = Some(StateTtlConfig::new(Duration::from_millis(100)));
        self.last = Some(ctx.state.value_state("last", ttl)?);
        self.all = Some(ctx.state.list_state("all", ttl)?);
        self.by_value = Some(ctx.state.map_state("by_value", None)?);
        Ok(())
    }
    fn process_element(
        &mut self,
        e: Ev,
        ctx: &mut KeyedContext<'_, char>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let (last, all, map) = (
            self.last.as_ref().ok_or("open")?,
            self.all.as_ref().ok_or("open")?,
            self.by_value.as_ref().ok_or("open")?,
        );
        let before = last.value(ctx.state())?;
        last.update(ctx.state(), e.1)?;
        all.add(ctx.state(), e.1)?;
        let n = map.get(ctx.state(), &e.1)?.unwrap_or(0) + 1;
        map.put(ctx.state(), e.1, n)?;
        out.collect(format!("{before:?} {:?} {n}", all.get(ctx.state())?));
        Ok(())
    }
}

#[test]
fn state_is_per_key_and_expires_after_its_ttl() {
    let mut h = OperatorHarness::new(KeyedProcessOperator::new(key(), Ttl::default())).unwrap();
    h.process(('a', 1), None).unwrap();
    h.process(('b', 9), None).unwrap();
    h.set_processing_time(60).unwrap();
    h.process(('a', 2), None).unwrap();
    h.set_processing_time(130).unwrap();
    h.process(('a', 1), None).unwrap(); // value written at 60 lives; list element from 0 expired
    h.set_processing_time(500).unwrap();
    h.process(('a', 1), None).unwrap(); // everything expired except the map (no TTL)
    let out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        out,
        vec![
            "None [1] 1",
            "None [9] 1",
            "Some(1) [1, 2] 1",
            "Some(2) [2, 1] 2",
            "None [1] 3"
        ]
    );
}

// ----- timestamps and watermarks -----------------------------------------------------------

#[test]
fn periodic_watermarks_idleness_and_the_final_maximum() {
    let strategy = WatermarkStrategy::<Ev>::for_bounded_out_of_orderness_ms(5)
        .with_timestamp_assigner(|e, _| e.1)
        .with_idleness(Duration::from_millis(300));
    let mut h = OperatorHarness::new(TimestampsAndWatermarksOperator::new(strategy)).unwrap();
    h.process(('a', 100), None).unwrap();
    h.process(('a', 90), None).unwrap();
    assert_eq!(
        h.take_output(),
        vec![(('a', 100), Some(100)), (('a', 90), Some(90))]
    );
    assert!(
        h.take_watermarks().is_empty(),
        "periodic: nothing before the first tick"
    );
    h.set_processing_time(200).unwrap();
    assert_eq!(h.take_watermarks(), vec![94]);
    h.watermark(50).unwrap(); // upstream watermarks are swallowed
    h.set_processing_time(400).unwrap(); // first check without records: starts the clock
    h.set_processing_time(600).unwrap(); // 200 ms idle: not yet
    assert!(h.take_statuses().is_empty());
    h.set_processing_time(800).unwrap(); // 400 ms > 300 ms
    assert_eq!(h.take_statuses(), vec![WatermarkStatus::Idle]);
    h.process(('a', 200), None).unwrap();
    h.set_processing_time(1_000).unwrap();
    assert_eq!(h.take_statuses(), vec![WatermarkStatus::Active]);
    assert_eq!(h.take_watermarks(), vec![194]);
    h.watermark(i64::MAX).unwrap();
    assert_eq!(h.take_watermarks(), vec![i64::MAX]);
}

#[test]
fn punctuated_watermarks_follow_every_record_and_batch_mode_has_none() {
    let strategy = WatermarkStrategy::<Ev>::for_bounded_out_of_orderness_ms(0)
        .with_timestamp_assigner(|e, _| e.1)
        .punctuated();
    let mut h =
        OperatorHarness::new(TimestampsAndWatermarksOperator::new(strategy.clone())).unwrap();
    for t in [5, 3, 8] {
        h.process(('a', t), None).unwrap();
    }
    assert_eq!(h.take_watermarks(), vec![4, 7]);
    let mut b = OperatorHarness::with_info(TimestampsAndWatermarksOperator::new(strategy), |i| {
        i.runtime_mode = actorflow_runtime::RuntimeMode::Batch;
    })
    .unwrap();
    b.process(('a', 5), None).unwrap();
    b.set_processing_time(10_000).unwrap();
    b.finish().unwrap();
    assert!(b.take_watermarks().is_empty());
    assert_eq!(b.take_output(), vec![(('a', 5), Some(5))]);
}

static CLONES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A record that counts its clones.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counted(i64);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted(self.0)
    }
}

#[test]
fn sliding_windows_store_each_record_once() {
    let mut h = OperatorHarness::new(WindowOperator::new(
        OwnedKey::new((|_: &Counted| 0u8) as fn(&Counted) -> u8),
        SlidingWindows::event_time(40, 10).unwrap(),
        EventTimeTrigger,
        ListAgg,
        |_: &u8,
         ctx: &mut WindowContext<'_, TimeWindow>,
         v: Vec<Counted>,
         out: &mut Collector<(i64, usize)>| {
            out.collect((ctx.window().start, v.len()));
            Ok(())
        },
        WindowSettings::default(),
    ))
    .unwrap();
    CLONES.store(0, std::sync::atomic::Ordering::SeqCst);
    for t in 0..100 {
        h.process(Counted(t), Some(t)).unwrap();
    }
    assert_eq!(
        CLONES.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "each record is kept once (in its pane), not once per window"
    );
    h.watermark(i64::MAX).unwrap();
    let out = h.take_output();
    assert_eq!(out.len(), 13);
    for ((start, n), _) in out {
        let expected = (start + 40).min(100) - start.max(0);
        assert_eq!(n as i64, expected, "window starting at {start}");
    }
}

#[test]
fn continuous_processing_time_trigger_fires_on_the_clock() {
    let mut h = reduce_op(
        TumblingWindows::processing_time(100).unwrap(),
        ContinuousProcessingTimeTrigger::of(30).unwrap(),
        WindowSettings::default(),
    );
    h.set_processing_time(5).unwrap();
    h.process(('a', 1), None).unwrap(); // next firing at 0 + 30
    h.set_processing_time(29).unwrap();
    assert!(h.take_output().is_empty());
    h.set_processing_time(30).unwrap();
    assert_eq!(h.take_output(), vec![(('a', 1), Some(99))]);
    h.process(('a', 2), None).unwrap();
    h.set_processing_time(99).unwrap(); // 60, 90 and the end (99) are due
    let sums: Vec<i64> = h.take_output().into_iter().map(|((_, s), _)| s).collect();
    assert_eq!(sums, vec![3, 3, 3]);
    assert_eq!(
        h.next_processing_time(),
        None,
        "the window is cleaned up at its end"
    );
}

#[test]
fn processing_time_sliding_windows_and_sessions() {
    let mut h = reduce_op(
        SlidingWindows::processing_time(20, 10).unwrap(),
        ProcessingTimeTrigger,
        WindowSettings::default(),
    );
    h.set_processing_time(5).unwrap();
    h.process(('a', 1), None).unwrap(); // [-10, 10) and [0, 20)
    h.set_processing_time(12).unwrap();
    h.process(('a', 2), None).unwrap(); // [0, 20) and [10, 30)
    assert_eq!(h.take_output(), vec![(('a', 1), Some(9))]);
    h.set_processing_time(29).unwrap();
    assert_eq!(
        h.take_output(),
        vec![(('a', 3), Some(19)), (('a', 2), Some(29))]
    );

    let mut s = reduce_op(
        SessionWindows::processing_time(10).unwrap(),
        ProcessingTimeTrigger,
        WindowSettings::default(),
    );
    s.set_processing_time(0).unwrap();
    s.process(('a', 1), None).unwrap(); // [0, 10)
    s.set_processing_time(8).unwrap();
    s.process(('a', 2), None).unwrap(); // merges: [0, 18)
    s.set_processing_time(9).unwrap();
    assert!(s.take_output().is_empty(), "the merged session ends later");
    s.set_processing_time(17).unwrap();
    assert_eq!(s.take_output(), vec![(('a', 3), Some(17))]);
}

#[test]
fn evictors_can_run_after_the_function() {
    let mut h = every_two_values(CountEvictor::after(1));
    for v in 1..=5 {
        h.process(('a', v), None).unwrap();
    }
    let fired: Vec<Vec<i64>> = h.take_output().into_iter().map(|(v, _)| v).collect();
    // Fires with everything, then keeps only the newest record for the next firing.
    assert_eq!(fired, vec![vec![1, 2], vec![2, 3, 4]]);
}

#[test]
fn a_watermark_firing_many_windows_works_in_chunks() {
    let mut h = reduce_op(
        TumblingWindows::event_time(10).unwrap(),
        EventTimeTrigger,
        WindowSettings::default(),
    );
    // 3000 keys' windows all end at 9: one watermark fires 3000 timers.
    let keys: Vec<char> = (0..3000u32)
        .filter_map(|i| char::from_u32(0x4e00 + i))
        .collect();
    for &k in &keys {
        h.process((k, 1), Some(1)).unwrap();
    }
    h.watermark(9).unwrap();
    assert_eq!(h.take_output().len(), keys.len());
    assert_eq!(h.chunks(), 2, "3000 timers = 1024 + 1024 + 952");
    assert_eq!(
        h.take_watermarks(),
        vec![9],
        "forwarded once, after every window fired"
    );
}

// ----- asynchronous snapshots: the state frozen at the barrier, whatever comes after --------

/// A snapshot taken at a barrier holds the state of that moment even though the operator goes
/// on changing it before the snapshot is encoded: the keyed process function's counts and
/// timers, and a window's contents. Restored, the operator continues from that moment.
#[test]
fn an_asynchronous_snapshot_holds_the_state_at_the_barrier() {
    use actorflow_runtime::checkpoint::types::RestoredState;
    let restore = |state| RestoredState {
        state,
        same_index: Some(0),
    };
    // Keyed process: 'a' seen 3 times, 'b' once, at the barrier.
    let mut h = OperatorHarness::new(KeyedProcessOperator::new(key(), Timers::default())).unwrap();
    for (k, v) in [('a', 1), ('a', 2), ('b', 3), ('a', 4)] {
        h.process((k, v), Some(v)).unwrap();
    }
    let mut frozen = h.snapshot_frozen(1).unwrap();
    assert!(
        frozen.has_pending(),
        "keyed state is encoded after the barrier"
    );
    // After the barrier: every key group written again, a new key.
    for (k, v) in [('a', 5), ('b', 6), ('c', 7), ('a', 8)] {
        h.process((k, v), Some(v)).unwrap();
    }
    frozen.finish_pending().unwrap();
    let mut r = OperatorHarness::restored(
        KeyedProcessOperator::new(key(), Timers::default()),
        restore(frozen),
        |_| {},
    )
    .unwrap();
    r.watermark(100).unwrap();
    let mut fired = r
        .take_output()
        .into_iter()
        .map(|(s, _)| s)
        .collect::<Vec<_>>();
    fired.sort();
    assert_eq!(
        fired,
        ["a EventTime at 100 after 3", "b EventTime at 100 after 1"]
    );
    h.watermark(100).unwrap();
    let mut fired = h
        .take_output()
        .into_iter()
        .map(|(s, _)| s)
        .collect::<Vec<_>>();
    fired.sort();
    assert_eq!(
        fired,
        [
            "a EventTime at 100 after 5",
            "b EventTime at 100 after 2",
            "c EventTime at 100 after 1"
        ]
    );

    // A tumbling window: sums 1 + 2 at the barrier, + 10 after it.
    let window = || {
        reduce_op(
            TumblingWindows::event_time(10).unwrap(),
            EventTimeTrigger,
            WindowSettings::default(),
        )
    };
    let mut h = window();
    h.process(('a', 1), Some(1)).unwrap();
    h.process(('a', 2), Some(2)).unwrap();
    let mut frozen = h.snapshot_frozen(2).unwrap();
    h.process(('a', 10), Some(3)).unwrap();
    h.process(('b', 10), Some(4)).unwrap();
    frozen.finish_pending().unwrap();
    let mut r = OperatorHarness::restored(
        WindowOperator::new(
            key(),
            TumblingWindows::event_time(10).unwrap(),
            EventTimeTrigger,
            ReduceAgg(sum as fn(Ev, Ev) -> Ev),
            PassThrough,
            WindowSettings::default(),
        ),
        restore(frozen),
        |_| {},
    )
    .unwrap();
    r.watermark(20).unwrap();
    assert_eq!(r.take_output(), vec![(('a', 3), Some(9))]);
    h.watermark(20).unwrap();
    let mut out = h.take_output();
    out.sort();
    assert_eq!(out, vec![(('a', 13), Some(9)), (('b', 10), Some(9))]);
}

// ----- incremental checkpoints: only what changed is written, restore equals the state ----

/// Keeps each key's latest value: a value < 0 clears it, 0 only reads it. Every key written
/// gets a timer at 1 000 000 that reports the key's value.
#[derive(Clone, Default)]
struct Latest {
    value: Option<ValueState<i64>>,
}

type Kv = (u64, i64);

impl KeyedProcessFunction<u64, Kv, String> for Latest {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.value = Some(ctx.state.value_state("v", None)?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (_, v): Kv,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let state = self.value.as_ref().ok_or("open")?;
        match v {
            0 => {
                state.value(ctx.state())?;
            }
            v if v < 0 => state.clear(ctx.state()),
            v => {
                state.update(ctx.state(), v)?;
                ctx.register_event_time_timer(Timestamp(1_000_000));
            }
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let state = self.value.as_ref().ok_or("open")?;
        let v = state.value(ctx.state())?;
        out.collect(format!("{} {v:?}", ctx.current_key()));
        Ok(())
    }
}

type KvKey = OwnedKey<fn(&Kv) -> u64, u64>;

fn latest() -> KeyedProcessOperator<Kv, String, KvKey, Latest> {
    KeyedProcessOperator::new(
        OwnedKey::new((|e: &Kv| e.0) as fn(&Kv) -> u64),
        Latest::default(),
    )
}

/// Moves the chunks a snapshot wrote into `store` (every chunk written so far, for
/// resolving chains); the bytes written.
fn keep_new_chunks(
    store: &mut std::collections::BTreeMap<String, Vec<u8>>,
    state: &mut actorflow_runtime::checkpoint::types::OperatorState,
) -> u64 {
    let chunks = state.take_new_chunks();
    let written = chunks.iter().map(|(_, b)| b.len() as u64).sum();
    for (e, b) in chunks {
        store.insert(e.name, b);
    }
    written
}

/// An incremental checkpoint after 1 % of the keys changed writes a small fraction of a full
/// one (reads are not changes), one with no change writes nothing, and restoring the chain of
/// base and deltas gives the state and timers of the operator that took it.
#[test]
fn incremental_checkpoints_write_what_changed_and_restore_exactly() {
    use actorflow_runtime::checkpoint::types::RestoredState;
    use std::collections::BTreeMap;
    let mut store: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut keep = |state: &mut actorflow_runtime::checkpoint::types::OperatorState| {
        keep_new_chunks(&mut store, state)
    };
    let mut h = OperatorHarness::new(latest()).unwrap();
    for k in 0..2_000u64 {
        h.process((k, k as i64 * 10 + 1), Some(1)).unwrap();
    }
    let mut s1 = h.snapshot_incremental(1).unwrap();
    assert!(
        s1.keyed.len() > 100,
        "timers are written whole, per key group"
    );
    let full = keep(&mut s1);
    assert!(
        full > 20_000,
        "the first incremental checkpoint writes every key: {full}"
    );
    h.notify_complete(1).unwrap();

    // 1 %: 20 keys updated, 3 cleared, 5 new; 100 keys only read.
    for k in 0..20u64 {
        h.process((k * 97, -5 - k as i64 + 1_000_000), Some(2))
            .unwrap();
    }
    for k in [5u64, 500, 1_500] {
        h.process((k, -1), Some(2)).unwrap();
    }
    for k in 5_000..5_005u64 {
        h.process((k, 7), Some(2)).unwrap();
    }
    for k in 1_000..1_100u64 {
        h.process((k, 0), Some(2)).unwrap();
    }
    let mut s2 = h.snapshot_incremental(2).unwrap();
    let delta = keep(&mut s2);
    assert!(delta > 0);
    assert!(
        delta * 20 <= full,
        "an incremental checkpoint after 1 % changes wrote {delta} bytes of {full} (> 5 %)"
    );
    h.notify_complete(2).unwrap();
    let mut s3 = h.snapshot_incremental(3).unwrap();
    assert_eq!(keep(&mut s3), 0, "nothing changed, nothing written");
    assert_eq!(s3.chains, s2.chains, "the same chains, listed again");
    h.notify_complete(3).unwrap();

    // Restore from checkpoint 3 (base from 1, deltas from 2).
    s3.resolve_chains(&store).unwrap();
    let mut r = OperatorHarness::restored(
        latest(),
        RestoredState {
            state: s3,
            same_index: Some(0),
        },
        |_| {},
    )
    .unwrap();
    let fire = |h: &mut OperatorHarness<_>| {
        h.watermark(2_000_000).unwrap();
        let mut out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
        out.sort();
        out
    };
    let expected = fire(&mut h);
    assert_eq!(expected.len(), 2_005);
    assert!(expected.contains(&"500 None".to_string()));
    assert!(expected.contains(&"97 Some(999994)".to_string()));
    assert_eq!(fire(&mut r), expected);

    // A chain that was not read is refused, not restored empty.
    let mut h2 = OperatorHarness::new(latest()).unwrap();
    h2.process((1, 1), Some(1)).unwrap();
    let s = h2.snapshot_incremental(1).unwrap();
    let restored = OperatorHarness::restored(
        latest(),
        RestoredState {
            state: s,
            same_index: Some(0),
        },
        |_| {},
    );
    match restored {
        Ok(_) => panic!("an unresolved chain must fail the restore"),
        Err(err) => assert!(err.to_string().contains("not read"), "{err}"),
    }
}

/// Keeps 100 bytes per key and a timer that reports them.
#[derive(Clone, Default)]
struct Payload {
    bytes: Option<ValueState<Vec<u8>>>,
}

impl KeyedProcessFunction<u64, Kv, String> for Payload {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.bytes = Some(ctx.state.value_state("bytes", None)?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (k, v): Kv,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let state = self.bytes.as_ref().ok_or("open")?;
        state.update(ctx.state(), vec![(k as i64 + v) as u8; 100])?;
        ctx.register_event_time_timer(Timestamp(1_000));
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let state = self.bytes.as_ref().ok_or("open")?;
        let sum: u64 = state
            .value(ctx.state())?
            .unwrap_or_default()
            .iter()
            .map(|b| u64::from(*b))
            .sum();
        out.collect(format!("{} {sum}", ctx.current_key()));
        Ok(())
    }
}

/// A restore of more than 4 MB of keyed state decodes key groups on several threads: the
/// restored operator holds the same values and timers as the one that took the snapshot.
#[test]
fn a_large_restore_on_several_threads_holds_the_same_state() {
    use actorflow_runtime::checkpoint::types::RestoredState;
    let payload = || {
        KeyedProcessOperator::new(
            OwnedKey::new((|e: &Kv| e.0) as fn(&Kv) -> u64),
            Payload::default(),
        )
    };
    let mut h = OperatorHarness::new(payload()).unwrap();
    for k in 0..50_000u64 {
        h.process((k, 3), Some(1)).unwrap();
    }
    let s = h.snapshot(1).unwrap();
    let size: usize = s.keyed.values().map(Vec::len).sum();
    assert!(size > 4 << 20, "{size} bytes: under the parallel threshold");
    let mut r = OperatorHarness::restored(
        payload(),
        RestoredState {
            state: s,
            same_index: Some(0),
        },
        |_| {},
    )
    .unwrap();
    let fire = |h: &mut OperatorHarness<_>| {
        h.watermark(2_000).unwrap();
        let mut out: Vec<String> = h.take_output().into_iter().map(|(s, _)| s).collect();
        out.sort();
        out
    };
    let (expected, got) = (fire(&mut h), fire(&mut r));
    assert_eq!(expected.len(), 50_000);
    assert!(expected == got, "the restored state differs");
}

type SessionSums = WindowOperator<
    Kv,
    KvKey,
    SessionWindows<Kv>,
    EventTimeTrigger,
    ReduceAgg<fn(Kv, Kv) -> Kv>,
    PassThrough,
    Kv,
>;

fn sessions_of_sums() -> SessionSums {
    WindowOperator::new(
        OwnedKey::new((|e: &Kv| e.0) as fn(&Kv) -> u64),
        SessionWindows::event_time(10).unwrap(),
        EventTimeTrigger,
        ReduceAgg((|a: Kv, b: Kv| (a.0, a.1 + b.1)) as fn(Kv, Kv) -> Kv),
        PassThrough,
        WindowSettings::default(),
    )
}

/// Window contents are incremental too: after 1 % of the keys' sessions changed (some grew,
/// some fired and were cleared, a few keys are new) a checkpoint writes a small fraction of a
/// full one, and the chain of base and deltas restores the windows and timers exactly.
#[test]
fn incremental_checkpoints_cover_window_contents() {
    use actorflow_runtime::checkpoint::types::RestoredState;
    use std::collections::BTreeMap;
    let mut store: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut keep = |state: &mut actorflow_runtime::checkpoint::types::OperatorState| {
        keep_new_chunks(&mut store, state)
    };
    let mut h = OperatorHarness::new(sessions_of_sums()).unwrap();
    // Keys 0..10 have a session at 1..; the others at 1 000.
    for k in 0..2_000u64 {
        let ts = if k < 10 { 1 } else { 1_000 };
        h.process((k, k as i64), Some(ts)).unwrap();
    }
    let mut s1 = h.snapshot_incremental(1).unwrap();
    let full = keep(&mut s1);
    assert!(
        full > 20_000,
        "the first checkpoint writes every key: {full}"
    );
    h.notify_complete(1).unwrap();

    // 1 %: the sessions of keys 0..10 fire (and are cleared), 20 sessions grow, 5 keys new.
    h.watermark(100).unwrap();
    assert_eq!(h.take_output().len(), 10);
    for k in 0..20u64 {
        h.process((100 + k * 97, 1_000_000), Some(1_005)).unwrap();
    }
    for k in 5_000..5_005u64 {
        h.process((k, 7), Some(1_002)).unwrap();
    }
    let mut s2 = h.snapshot_incremental(2).unwrap();
    let delta = keep(&mut s2);
    assert!(delta > 0);
    assert!(
        delta * 20 <= full,
        "an incremental checkpoint after 1 % changes wrote {delta} bytes of {full} (> 5 %)"
    );
    h.notify_complete(2).unwrap();
    let mut s3 = h.snapshot_incremental(3).unwrap();
    assert_eq!(keep(&mut s3), 0, "nothing changed, nothing written");
    h.notify_complete(3).unwrap();

    // Restore from checkpoint 3 (bases from 1, deltas from 2): the same sessions fire.
    s3.resolve_chains(&store).unwrap();
    let mut r = OperatorHarness::restored(
        sessions_of_sums(),
        RestoredState {
            state: s3,
            same_index: Some(0),
        },
        |_| {},
    )
    .unwrap();
    let fire = |h: &mut OperatorHarness<_>| {
        h.watermark(1_000_000).unwrap();
        let mut out = h.take_output();
        out.sort();
        out
    };
    let expected = fire(&mut h);
    assert_eq!(expected.len(), 1_995);
    assert!(expected.contains(&((197, 1_000_197), Some(1_014))));
    assert!(expected.contains(&((5_000, 7), Some(1_011))));
    assert!(!expected.iter().any(|((k, _), _)| *k < 10));
    assert_eq!(fire(&mut r), expected);
}
