//! The window operator (Flink's `WindowOperator` and `EvictingWindowOperator`).
//!
//! Per key, the operator keeps the key's open windows in a short list (a key rarely has more
//! than a handful), each with its contents, its trigger state and its per-window state. Keys
//! live in a [`KeyedTable`], one hash table per key group. Timers are `(key, window)` entries in
//! a deduplicated [`Timers`] queue, so the trigger timer and the cleanup timer of a window with
//! no allowed lateness are one timer, as in Flink.
//!
//! The control flow follows Flink's operator step by step: windows that are already late are
//! skipped; a record all of whose windows are late goes to the late side output (or is
//! dropped and counted); session windows merge through the assigner, merging contents and
//! trigger state and moving timers; a window's state is removed at its cleanup time
//! (`max_timestamp + allowed_lateness` in event time, `max_timestamp` in processing time).

use crate::checkpoint::types::KeyedSnapshot;
use crate::dataplane::data::{Batch, Collector, Data, OutputTag};
use crate::error::UserError;
use crate::operators::operator::{Operator, TaskInfo};
use crate::state::key::KeySelector;
use crate::state::table::KeyedTable;
use crate::time::timer::{Firing, TIMERS_PER_CHUNK, Timers};
use crate::time::window::{
    AssignerContext, Evictor, TimerRequest, Trigger, TriggerContext, TriggerResult, Window,
    WindowAssigner,
};
use crate::types::{Timestamp, Watermark};
use std::hash::Hash;
use std::marker::PhantomData;

/// How a window's contents are kept and what its function receives when it fires.
pub trait WindowAgg<T, W>: Send + 'static {
    /// What is stored per window.
    type Acc: Data;
    /// What the window function receives.
    type Out;

    /// Adds a record to a window's contents (`None` for a window without contents yet).
    ///
    /// # Errors
    ///
    /// The user function's error.
    fn add(
        &mut self,
        acc: &mut Option<Self::Acc>,
        value: T,
        timestamp: Option<Timestamp>,
    ) -> Result<(), UserError>;

    /// Merges the contents of a window merged away into the merged window's (sessions).
    ///
    /// # Errors
    ///
    /// The user function's error.
    fn merge(&mut self, into: &mut Self::Acc, from: Self::Acc) -> Result<(), UserError>;

    /// What the window function gets when the window fires; `None` emits nothing.
    ///
    /// # Errors
    ///
    /// The user function's error.
    fn fire(&mut self, acc: &mut Self::Acc, window: &W) -> Result<Option<Self::Out>, UserError>;

    /// Called after the window function ran (evict-after evictors run here).
    fn after_fire(&mut self, acc: &mut Self::Acc, window: &W) {
        let _ = (acc, window);
    }

    /// True if a window's contents are the merge of its panes' contents (false for evicting
    /// contents, which change at each firing).
    fn sliceable(&self) -> bool {
        true
    }
}

/// Incremental reduce: one value per window (`reduce(accumulated, record)`).
#[derive(Clone)]
pub struct ReduceAgg<F>(pub F);

impl<T: Data, W, F: FnMut(T, T) -> T + Send + 'static> WindowAgg<T, W> for ReduceAgg<F> {
    type Acc = T;
    type Out = T;

    #[inline]
    fn add(
        &mut self,
        acc: &mut Option<T>,
        value: T,
        _: Option<Timestamp>,
    ) -> Result<(), UserError> {
        *acc = Some(match acc.take() {
            None => value,
            Some(a) => (self.0)(a, value),
        });
        Ok(())
    }

    fn merge(&mut self, into: &mut T, from: T) -> Result<(), UserError> {
        let a = into.clone();
        *into = (self.0)(a, from);
        Ok(())
    }

    fn fire(&mut self, acc: &mut T, _: &W) -> Result<Option<T>, UserError> {
        Ok(Some(acc.clone()))
    }
}

pub use crate::state::keyed_state::AggregateFunction;

/// Incremental aggregation through an [`AggregateFunction`].
#[derive(Clone)]
pub struct AggregateAgg<A>(pub A);

impl<T, W, A: AggregateFunction<T>> WindowAgg<T, W> for AggregateAgg<A> {
    type Acc = A::Acc;
    type Out = A::Out;

    #[inline]
    fn add(
        &mut self,
        acc: &mut Option<A::Acc>,
        value: T,
        _: Option<Timestamp>,
    ) -> Result<(), UserError> {
        match acc {
            Some(a) => self.0.add(value, a),
            None => {
                let mut a = self.0.create_accumulator();
                self.0.add(value, &mut a);
                *acc = Some(a);
            }
        }
        Ok(())
    }

    fn merge(&mut self, into: &mut A::Acc, from: A::Acc) -> Result<(), UserError> {
        self.0.merge(into, from);
        Ok(())
    }

    fn fire(&mut self, acc: &mut A::Acc, _: &W) -> Result<Option<A::Out>, UserError> {
        Ok(Some(self.0.get_result(acc)))
    }
}

/// Keeps every record of the window; the function gets them all (`process`).
#[derive(Clone, Default)]
pub struct ListAgg;

impl<T: Data, W> WindowAgg<T, W> for ListAgg {
    type Acc = Vec<(T, Option<Timestamp>)>;
    type Out = Vec<T>;

    fn add(
        &mut self,
        acc: &mut Option<Self::Acc>,
        value: T,
        ts: Option<Timestamp>,
    ) -> Result<(), UserError> {
        acc.get_or_insert_with(Vec::new).push((value, ts));
        Ok(())
    }

    fn merge(&mut self, into: &mut Self::Acc, mut from: Self::Acc) -> Result<(), UserError> {
        into.append(&mut from);
        Ok(())
    }

    fn fire(&mut self, acc: &mut Self::Acc, _: &W) -> Result<Option<Vec<T>>, UserError> {
        Ok(Some(acc.iter().map(|(v, _)| v.clone()).collect()))
    }
}

/// Keeps every record so an [`Evictor`] can remove some before and after the function; the
/// inner aggregation (reduce, aggregate or list) is computed over what remains at each firing
/// (Flink's `EvictingWindowOperator`).
#[derive(Clone)]
pub struct EvictingAgg<E, A> {
    /// The evictor.
    pub evictor: E,
    /// The aggregation applied to the remaining records.
    pub inner: A,
}

impl<T: Data, W, E: Evictor<T, W>, A: WindowAgg<T, W>> WindowAgg<T, W> for EvictingAgg<E, A> {
    type Acc = Vec<(T, Option<Timestamp>)>;
    type Out = A::Out;

    /// Stored as [`ListAgg`] stores them.
    fn add(
        &mut self,
        acc: &mut Option<Self::Acc>,
        value: T,
        ts: Option<Timestamp>,
    ) -> Result<(), UserError> {
        <ListAgg as WindowAgg<T, W>>::add(&mut ListAgg, acc, value, ts)
    }

    fn merge(&mut self, into: &mut Self::Acc, from: Self::Acc) -> Result<(), UserError> {
        <ListAgg as WindowAgg<T, W>>::merge(&mut ListAgg, into, from)
    }

    fn fire(&mut self, acc: &mut Self::Acc, window: &W) -> Result<Option<A::Out>, UserError> {
        self.evictor.evict_before(acc, window);
        let mut inner = None;
        for (v, ts) in acc.iter() {
            self.inner.add(&mut inner, v.clone(), *ts)?;
        }
        match inner {
            Some(mut i) => self.inner.fire(&mut i, window),
            None => Ok(None),
        }
    }

    fn after_fire(&mut self, acc: &mut Self::Acc, window: &W) {
        self.evictor.evict_after(acc, window);
    }

    fn sliceable(&self) -> bool {
        false
    }
}

/// Named values of any serializable type, for per-window and per-key state of a window
/// function (Flink's `windowState()` / `globalState()`). Checkpointed with the window; restored
/// values are decoded when first read.
#[derive(Default, Clone)]
pub struct StateBag {
    values: Vec<(String, crate::state::keyed_state::Slot)>,
}

/// Names a [`StateBag`] value in errors.
struct BagName<'a>(&'a str);

impl std::fmt::Display for BagName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "window state {:?}", self.0)
    }
}

impl std::fmt::Debug for StateBag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(n, _)| n))
            .finish()
    }
}

impl StateBag {
    /// The value called `name`, created with `Default` if absent.
    ///
    /// # Errors
    ///
    /// If `name` already holds a value of another type.
    pub fn get_or_default<V>(&mut self, name: &'static str) -> Result<&mut V, UserError>
    where
        V: Default + Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        let pos = match self.values.iter().position(|(n, _)| n == name) {
            Some(p) => p,
            None => {
                self.values.push((
                    name.to_string(),
                    crate::state::keyed_state::Slot::new(V::default()),
                ));
                self.values.len() - 1
            }
        };
        self.values[pos].1.typed(&BagName(name))
    }

    /// Removes the value called `name`.
    pub fn remove(&mut self, name: &'static str) {
        self.values.retain(|(n, _)| n != name);
    }

    /// The values for a snapshot, by name.
    fn encode(&self) -> Result<Vec<(String, Vec<u8>)>, UserError> {
        self.values
            .iter()
            .map(|(n, v)| {
                v.encode()
                    .map(|b| (n.clone(), b))
                    .map_err(|e| format!("cannot serialize window state {n:?}: {e}").into())
            })
            .collect()
    }

    /// A bag of restored values, decoded when first read.
    fn restored(values: Vec<(String, Vec<u8>)>) -> Self {
        StateBag {
            values: values
                .into_iter()
                .map(|(n, b)| (n, crate::state::keyed_state::Slot::Raw(b)))
                .collect(),
        }
    }

    /// True if no value is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// What a window function sees when its window fires (Flink's
/// `ProcessWindowFunction.Context`).
#[derive(Debug)]
pub struct WindowContext<'a, W> {
    window: &'a W,
    watermark: Watermark,
    processing_time: Timestamp,
    window_state: &'a mut StateBag,
    global_state: &'a mut StateBag,
}

impl<W> WindowContext<'_, W> {
    /// The window being evaluated.
    pub fn window(&self) -> &W {
        self.window
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.processing_time
    }

    /// State of this key and window, dropped when the window is cleaned up.
    pub fn window_state(&mut self) -> &mut StateBag {
        self.window_state
    }

    /// State of this key across all its windows.
    pub fn global_state(&mut self) -> &mut StateBag {
        self.global_state
    }
}

/// Turns what a window holds into output when it fires (Flink's `ProcessWindowFunction`;
/// with an incremental aggregation, `input` is the aggregate).
///
/// Implemented for closures `FnMut(&K, &mut WindowContext<W>, In, &mut Collector<O>) ->
/// Result<(), UserError>`.
pub trait WindowFunction<K, In, O, W>: Send + 'static {
    /// Evaluates one window of one key.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, W>,
        input: In,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Called when the window is cleaned up.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn clear(&mut self, key: &K, ctx: &mut WindowContext<'_, W>) -> Result<(), UserError> {
        let _ = (key, ctx);
        Ok(())
    }

    /// Called once per subtask before the first record (Flink's `open` of a rich
    /// `ProcessWindowFunction`).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }

    /// Called once when the subtask ends, is cancelled or fails (Flink's `close`).
    ///
    /// # Errors
    ///
    /// An error fails a subtask that was finishing normally.
    fn close(&mut self) -> Result<(), UserError> {
        Ok(())
    }
}

impl<K, In, O, W, F> WindowFunction<K, In, O, W> for F
where
    F: FnMut(&K, &mut WindowContext<'_, W>, In, &mut Collector<O>) -> Result<(), UserError>
        + Send
        + 'static,
{
    fn process(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, W>,
        input: In,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(key, ctx, input, out)
    }
}

/// Emits the aggregate as it is (`reduce` / `aggregate` without a process function).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

impl<K, O, W> WindowFunction<K, O, O, W> for PassThrough {
    #[inline]
    fn process(
        &mut self,
        _: &K,
        _: &mut WindowContext<'_, W>,
        input: O,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        out.collect(input);
        Ok(())
    }
}

/// One open window of one key.
#[derive(Clone)]
struct Slot<W, A, S> {
    window: W,
    acc: Option<A>,
    trigger: S,
    state: StateBag,
    /// Timers known to be registered for this key and window: registering them again is
    /// skipped without touching the timer queue (the hot path of every record).
    timers: Vec<TimerRequest>,
}

/// Drops register requests for timers the slot already has, and keeps the slot's list of
/// registered timers up to date; what remains must go to the timer queue.
fn filter_known_timers(known: &mut Vec<TimerRequest>, requests: &mut Vec<TimerRequest>) {
    requests.retain(|r| match *r {
        TimerRequest::RegisterEvent(_) | TimerRequest::RegisterProcessing(_) => {
            if known.contains(r) {
                false
            } else {
                known.push(*r);
                true
            }
        }
        TimerRequest::DeleteEvent(t) => {
            known.retain(|k| *k != TimerRequest::RegisterEvent(t));
            true
        }
        TimerRequest::DeleteProcessing(t) => {
            known.retain(|k| *k != TimerRequest::RegisterProcessing(t));
            true
        }
    });
}

/// The open windows of one key.
#[derive(Clone)]
struct KeyWindows<W, A, S> {
    slots: Vec<Slot<W, A, S>>,
    global: StateBag,
    /// Sliced windows: contents per pane `(start, contents)`; a window's contents are those of
    /// the panes inside it.
    panes: Vec<(i64, Option<A>)>,
}

impl<W, A, S> Default for KeyWindows<W, A, S> {
    fn default() -> Self {
        KeyWindows {
            slots: Vec::new(),
            global: StateBag::default(),
            panes: Vec::new(),
        }
    }
}

impl<W: PartialEq, A, S: Default> KeyWindows<W, A, S> {
    fn position(&self, w: &W) -> Option<usize> {
        self.slots.iter().position(|s| s.window == *w)
    }

    fn slot_index(&mut self, w: &W) -> usize
    where
        W: Clone,
    {
        match self.position(w) {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    window: w.clone(),
                    acc: None,
                    trigger: S::default(),
                    state: StateBag::default(),
                    timers: Vec::new(),
                });
                self.slots.len() - 1
            }
        }
    }
}

/// Every key's open windows, per key group.
type WindowTable<K, W, A, S> = KeyedTable<K, KeyWindows<W, A, S>>;

/// One window of one key in a checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct SlotSnap<W, A, S> {
    window: W,
    acc: Option<A>,
    trigger: S,
    timers: Vec<TimerRequest>,
    /// The window function's per-window state, by name.
    #[serde(with = "crate::checkpoint::bytes::tagged")]
    state: Vec<(String, Vec<u8>)>,
}

/// One key's windows, panes and timers in a checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeySnap<W, A, S> {
    slots: Vec<SlotSnap<W, A, S>>,
    /// The window function's per-key state, by name.
    #[serde(with = "crate::checkpoint::bytes::tagged")]
    global: Vec<(String, Vec<u8>)>,
    panes: Vec<(i64, Option<A>)>,
    event_timers: Vec<(i64, W)>,
    processing_timers: Vec<(i64, W)>,
}

/// The window operator's settings.
#[derive(Debug, Clone)]
pub struct WindowSettings<T> {
    /// Records later than this (in ms of event time) are still added and re-fire the window.
    pub allowed_lateness: i64,
    /// Where late records go; `None` drops them (and counts them).
    pub late_output: Option<OutputTag<T>>,
}

impl<T> Default for WindowSettings<T> {
    fn default() -> Self {
        WindowSettings {
            allowed_lateness: 0,
            late_output: None,
        }
    }
}

/// Runs keyed windows: assigner `A`, trigger `Tr`, contents `Ag`, window function `F`.
pub struct WindowOperator<T, S: KeySelector<T>, A: WindowAssigner<T>, Tr, Ag, F, O>
where
    Tr: Trigger<T, A::W>,
    Ag: WindowAgg<T, A::W>,
{
    key: S,
    assigner: A,
    trigger: Tr,
    agg: Ag,
    function: F,
    settings: WindowSettings<T>,
    #[allow(clippy::type_complexity)] // the table's types are the operator's parameters
    table: Option<WindowTable<S::Key, A::W, Ag::Acc, Tr::State>>,
    timers: Timers<S::Key, A::W>,
    watermark: Watermark,
    info: Option<TaskInfo>,
    windows: Vec<A::W>,
    requests: Vec<TimerRequest>,
    /// Sliced mode: windows share panes (see [`WindowAssigner::pane_start`]).
    sliced: bool,
    /// Sliced mode: timer requests and trigger results gathered per window of a record.
    pending: Vec<(usize, TriggerResult, Vec<TimerRequest>)>,
    /// Event-time timers being fired, a chunk at a time.
    firing: Firing<S::Key, A::W>,
    /// Merging windows: reused buffers.
    merge_all: Vec<A::W>,
    merge_groups: Vec<(A::W, Vec<usize>)>,
    /// Incremental checkpoints: the chains of key groups later checkpoints build on.
    incremental: crate::checkpoint::incremental::Incremental,
    _out: PhantomData<fn() -> O>,
}

impl<T, S, A, Tr, Ag, F, O> WindowOperator<T, S, A, Tr, Ag, F, O>
where
    S: KeySelector<T>,
    A: WindowAssigner<T>,
    Tr: Trigger<T, A::W>,
    Ag: WindowAgg<T, A::W>,
{
    /// A window operator.
    pub fn new(
        key: S,
        assigner: A,
        trigger: Tr,
        agg: Ag,
        function: F,
        settings: WindowSettings<T>,
    ) -> Self {
        WindowOperator {
            key,
            assigner,
            trigger,
            agg,
            function,
            settings,
            table: None,
            timers: Timers::default(),
            watermark: Watermark::MIN,
            info: None,
            windows: Vec::new(),
            requests: Vec::new(),
            sliced: false,
            pending: Vec::new(),
            firing: Firing::default(),
            merge_all: Vec::new(),
            merge_groups: Vec::new(),
            incremental: Default::default(),
            _out: PhantomData,
        }
    }

    /// Records dropped as late (without a late side output).
    pub fn late_records_dropped(&self) -> u64 {
        self.info
            .as_ref()
            .map_or(0, |i| i.counters.late_records_dropped())
    }
}

fn not_open() -> UserError {
    "window operator called before open()".into()
}

/// Applies timer requests for `key` and `window` to the timer queues.
fn apply_timer_requests<K: Hash + Eq + Clone, W: Hash + Eq + Clone>(
    timers: &mut Timers<K, W>,
    requests: &mut Vec<TimerRequest>,
    key: &K,
    window: &W,
) {
    for r in requests.drain(..) {
        match r {
            TimerRequest::RegisterEvent(t) => {
                timers.event.register(t, key, window);
            }
            TimerRequest::DeleteEvent(t) => {
                timers.event.delete(t, key, window);
            }
            TimerRequest::RegisterProcessing(t) => {
                timers.processing.register(t, key, window);
            }
            TimerRequest::DeleteProcessing(t) => {
                timers.processing.delete(t, key, window);
            }
        }
    }
}

/// The request registering (or deleting) a window's cleanup timer; none for a window that
/// never ends (Flink does not register it).
fn cleanup_timer<W: Window>(
    event: bool,
    w: &W,
    lateness: i64,
    register: bool,
) -> Option<TimerRequest> {
    let t = cleanup_time(event, w, lateness);
    (t != Timestamp::MAX).then_some(match (event, register) {
        (true, true) => TimerRequest::RegisterEvent(t),
        (true, false) => TimerRequest::DeleteEvent(t),
        (false, true) => TimerRequest::RegisterProcessing(t),
        (false, false) => TimerRequest::DeleteProcessing(t),
    })
}

/// True if pane `p` lies in `[start, end)`, with Java's wrapping arithmetic (a window at the
/// end of the timeline can wrap around, as it does in Flink).
fn covers(start: i64, end: i64, p: i64) -> bool {
    (p.wrapping_sub(start) as u64) < (end.wrapping_sub(start) as u64)
}

/// Flink's `cleanupTime`: when a window's state is dropped.
fn cleanup_time<W: Window>(event_time: bool, w: &W, lateness: i64) -> Timestamp {
    let max = w.max_timestamp().0;
    if event_time {
        let t = max.wrapping_add(lateness);
        Timestamp(if t >= max { t } else { i64::MAX })
    } else {
        Timestamp(max)
    }
}

impl<T, S, A, Tr, Ag, F, O> WindowOperator<T, S, A, Tr, Ag, F, O>
where
    T: Data,
    O: Data,
    S: KeySelector<T>,
    A: WindowAssigner<T>,
    Tr: Trigger<T, A::W>,
    Ag: WindowAgg<T, A::W>,
    F: WindowFunction<S::Key, Ag::Out, O, A::W>,
{
    fn now(&self) -> Timestamp {
        self.info.as_ref().map_or(Timestamp(0), |i| i.clock.now())
    }

    fn is_window_late(&self, w: &A::W) -> bool {
        self.assigner.is_event_time()
            && cleanup_time(true, w, self.settings.allowed_lateness).0 <= self.watermark.0
    }

    fn is_element_late(&self, ts: Option<Timestamp>) -> bool {
        self.assigner.is_event_time()
            && ts.is_some_and(|t| {
                t.0.wrapping_add(self.settings.allowed_lateness) <= self.watermark.0
            })
    }

    /// Applies the trigger's timer requests for `key` and `window`.
    fn apply_requests(&mut self, key: &S::Key, window: &A::W) {
        apply_timer_requests(&mut self.timers, &mut self.requests, key, window);
    }

    /// Evaluates slot `i` of `key` and emits the result.
    fn emit_window(
        &mut self,
        key: &S::Key,
        i: usize,
        now: Timestamp,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let Some(kw) = table.get_mut(key) else {
            return Ok(());
        };
        let KeyWindows {
            slots,
            global,
            panes,
        } = kw;
        let Some(slot) = slots.get_mut(i) else {
            return Ok(());
        };
        let mut merged = None;
        if self.sliced {
            // The window's contents: its panes, merged.
            if let Some((start, end)) = slot.window.interval() {
                let inside = panes.iter().filter(|(p, _)| covers(start, end, *p));
                for acc in inside.filter_map(|(_, acc)| acc.as_ref()) {
                    match merged.as_mut() {
                        None => merged = Some(acc.clone()),
                        Some(m) => self.agg.merge(m, acc.clone())?,
                    }
                }
            }
        }
        let acc = match merged.as_mut() {
            Some(m) => m,
            None => match slot.acc.as_mut() {
                Some(a) => a,
                None => return Ok(()),
            },
        };
        let fired = self.agg.fire(acc, &slot.window)?;
        if let Some(input) = fired {
            out.set_timestamp(Some(slot.window.max_timestamp()));
            let mut ctx = WindowContext {
                window: &slot.window,
                watermark: self.watermark,
                processing_time: now,
                window_state: &mut slot.state,
                global_state: global,
            };
            self.function.process(key, &mut ctx, input, out)?;
        }
        self.agg.after_fire(acc, &slot.window);
        Ok(())
    }

    /// Adds `w` to the key's windows, merging as the assigner says; returns the window the
    /// record belongs to now (Flink's `MergingWindowSet.addWindow`). Merged windows' contents
    /// and trigger state move to the merged window, their timers are deleted, the merged
    /// window's registered (`Trigger::on_merge`).
    fn add_merging_window(
        &mut self,
        key: &S::Key,
        w: &A::W,
        now: Timestamp,
    ) -> Result<A::W, UserError> {
        let lateness = self.settings.allowed_lateness;
        let event = self.assigner.is_event_time();
        let watermark = self.watermark;
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let kw = table.get_or_insert_with(key, KeyWindows::default)?;
        if kw.slots.is_empty() {
            // Nothing to merge with.
            kw.slot_index(w);
            return Ok(w.clone());
        }
        let mut all = std::mem::take(&mut self.merge_all);
        all.clear();
        all.extend(kw.slots.iter().map(|s| s.window.clone()));
        all.push(w.clone());
        let new_index = all.len() - 1;
        let mut groups = std::mem::take(&mut self.merge_groups);
        groups.clear();
        self.assigner.merge_windows(&all, &mut groups);
        let mut result = w.clone();
        let mut merged_new = false;
        let mut outcome = Ok(());
        for (merged, members) in groups.iter_mut() {
            if let Some(p) = members.iter().position(|&m| m == new_index) {
                members.remove(p);
                merged_new = true;
                result = merged.clone();
            }
            if members.len() == 1 && all[members[0]] == *merged {
                continue; // the new window fell inside an existing one
            }
            if event && cleanup_time(true, &*merged, lateness).0 <= watermark.0 {
                outcome = Err(format!(
                    "a merge gives the late window {merged:?}; the assigner must not merge \
                     into late windows"
                )
                .into());
                break;
            }
            let mut acc: Option<Ag::Acc> = None;
            let mut trigger_state = Tr::State::default();
            let mut state = StateBag::default();
            let mut removed = Vec::with_capacity(members.len());
            for &m in members.iter() {
                let Some(p) = kw.position(&all[m]) else {
                    continue;
                };
                let slot = kw.slots.swap_remove(p);
                if let Some(a) = slot.acc {
                    match acc.as_mut() {
                        None => acc = Some(a),
                        Some(into) => {
                            if let Err(e) = self.agg.merge(into, a) {
                                outcome = Err(e);
                            }
                        }
                    }
                }
                self.trigger
                    .merge_state(&mut trigger_state, slot.trigger.clone());
                if state.is_empty() {
                    state = slot.state;
                }
                removed.push((slot.window, slot.trigger));
            }
            let mut ctx = TriggerContext {
                watermark,
                processing_time: now,
                requests: &mut self.requests,
            };
            self.trigger.on_merge(merged, &mut trigger_state, &mut ctx);
            let mut timers = Vec::new();
            filter_known_timers(&mut timers, &mut self.requests);
            kw.slots.push(Slot {
                window: merged.clone(),
                acc,
                trigger: trigger_state,
                state,
                timers,
            });
            apply_timer_requests(&mut self.timers, &mut self.requests, key, merged);
            for (m, mut m_state) in removed {
                let mut ctx = TriggerContext {
                    watermark,
                    processing_time: now,
                    requests: &mut self.requests,
                };
                self.trigger.clear(&m, &mut m_state, &mut ctx);
                self.requests
                    .extend(cleanup_timer(event, &m, lateness, false));
                apply_timer_requests(&mut self.timers, &mut self.requests, key, &m);
            }
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() && !merged_new {
            kw.slot_index(w);
        }
        self.merge_all = all;
        self.merge_groups = groups;
        outcome.map(|()| result)
    }

    fn process_element(
        &mut self,
        value: T,
        ts: Option<Timestamp>,
        now: Timestamp,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        let actx = AssignerContext {
            processing_time: now,
        };
        self.assigner
            .assign_windows(&value, ts, &actx, &mut windows)?;
        let result = if self.assigner.is_merging() {
            self.process_merging(value, ts, now, &mut windows, out)
        } else {
            windows.retain(|w| !self.is_window_late(w));
            self.add_to_windows(value, ts, now, &windows, out)
        };
        self.windows = windows;
        result
    }

    /// A record all of whose windows are late: side output or dropped (if the record itself
    /// is late; otherwise silently left out, as Flink does).
    fn late(&mut self, value: T, ts: Option<Timestamp>, out: &mut Collector<O>) {
        if self.is_element_late(ts) {
            match &self.settings.late_output {
                Some(tag) => out.output_with_timestamp(tag, value, ts),
                None => {
                    if let Some(info) = &self.info {
                        info.counters.add_late_records_dropped(1);
                    }
                }
            }
        }
    }

    fn process_merging(
        &mut self,
        value: T,
        ts: Option<Timestamp>,
        now: Timestamp,
        windows: &mut Vec<A::W>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let key = self.key.key(&value);
        let mut actual = Vec::with_capacity(windows.len());
        for w in windows.iter() {
            let a = self.add_merging_window(&key, w, now)?;
            if self.is_window_late(&a) {
                // Flink retires the window: it holds nothing yet.
                let table = self.table.as_mut().ok_or_else(not_open)?;
                if let Some(kw) = table.get_mut(&key)
                    && let Some(p) = kw.position(&a)
                    && kw.slots[p].acc.is_none()
                {
                    kw.slots.swap_remove(p);
                }
                continue;
            }
            actual.push(a);
        }
        windows.clear();
        windows.extend(actual);
        if windows.is_empty() {
            self.remove_key_if_empty(&key);
        }
        self.add_to_windows(value, ts, now, windows, out)
    }

    /// Adds a record to its (not late) windows: trigger, contents, timers, firing. The key is
    /// borrowed from the record for the lookup and cloned only when a timer must be
    /// registered or the window fires.
    fn add_to_windows(
        &mut self,
        value: T,
        ts: Option<Timestamp>,
        now: Timestamp,
        windows: &[A::W],
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        if windows.is_empty() {
            self.late(value, ts, out);
            return Ok(());
        }
        if self.sliced {
            return self.add_to_panes(value, ts, now, windows, out);
        }
        let event = self.assigner.is_event_time();
        let n = windows.len();
        let mut value = Some(value);
        for (idx, w) in windows.iter().enumerate() {
            let v_ref = value.as_ref().ok_or_else(not_open)?;
            let table = self.table.as_mut().ok_or_else(not_open)?;
            let kw = self
                .key
                .with_key(v_ref, |k| table.get_or_insert_with(k, KeyWindows::default))?;
            let i = kw.slot_index(w);
            let slot = &mut kw.slots[i];
            let mut ctx = TriggerContext {
                watermark: self.watermark,
                processing_time: now,
                requests: &mut self.requests,
            };
            let result = self
                .trigger
                .on_element(v_ref, ts, w, &mut slot.trigger, &mut ctx);
            self.requests.extend(cleanup_timer(
                event,
                w,
                self.settings.allowed_lateness,
                true,
            ));
            filter_known_timers(&mut slot.timers, &mut self.requests);
            let key = (!self.requests.is_empty() || result.is_fire() || result.is_purge())
                .then(|| self.key.key(v_ref));
            let v = if idx + 1 == n {
                value.take().ok_or_else(not_open)?
            } else {
                v_ref.clone()
            };
            self.agg.add(&mut slot.acc, v, ts)?;
            if let Some(key) = key {
                self.after_trigger(&key, i, result, now, out)?;
                self.apply_requests(&key, w);
            }
        }
        Ok(())
    }

    /// Sliced windows: runs every window's trigger, stores the record once in its pane, then
    /// fires what the triggers asked for.
    fn add_to_panes(
        &mut self,
        value: T,
        ts: Option<Timestamp>,
        now: Timestamp,
        windows: &[A::W],
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let event = self.assigner.is_event_time();
        let time = if event {
            ts.map_or(i64::MIN, |t| t.0)
        } else {
            now.0
        };
        let Some(pane) = self.assigner.pane_start(time) else {
            return Err("sliced windows need an assigner with panes".into());
        };
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let kw = self
            .key
            .with_key(&value, |k| table.get_or_insert_with(k, KeyWindows::default))?;
        let mut need_key = false;
        for w in windows {
            let i = kw.slot_index(w);
            let slot = &mut kw.slots[i];
            let mut ctx = TriggerContext {
                watermark: self.watermark,
                processing_time: now,
                requests: &mut self.requests,
            };
            let result = self
                .trigger
                .on_element(&value, ts, w, &mut slot.trigger, &mut ctx);
            self.requests.extend(cleanup_timer(
                event,
                w,
                self.settings.allowed_lateness,
                true,
            ));
            filter_known_timers(&mut slot.timers, &mut self.requests);
            if !self.requests.is_empty() || result != TriggerResult::Continue {
                need_key = true;
                pending.push((i, result, self.requests.drain(..).collect()));
            }
        }
        let key = need_key.then(|| self.key.key(&value));
        // Records arrive roughly in time order, and new panes are appended: search backwards.
        let at = match kw.panes.iter().rposition(|(p, _)| *p == pane) {
            Some(at) => at,
            None => {
                kw.panes.push((pane, None));
                kw.panes.len() - 1
            }
        };
        self.agg.add(&mut kw.panes[at].1, value, ts)?;
        if let Some(key) = key {
            for (i, result, requests) in pending.drain(..) {
                let w = {
                    let table = self.table.as_mut().ok_or_else(not_open)?;
                    match table.get_mut(&key).and_then(|kw| kw.slots.get(i)) {
                        Some(slot) => slot.window.clone(),
                        None => continue,
                    }
                };
                self.after_trigger(&key, i, result, now, out)?;
                self.requests.extend(requests);
                self.apply_requests(&key, &w);
            }
        }
        self.pending = pending;
        Ok(())
    }

    fn after_trigger(
        &mut self,
        key: &S::Key,
        i: usize,
        result: TriggerResult,
        now: Timestamp,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        if result.is_fire() {
            self.emit_window(key, i, now, out)?;
        }
        if result.is_purge() {
            let table = self.table.as_mut().ok_or_else(not_open)?;
            if let Some(slot) = table.get_mut(key).and_then(|kw| kw.slots.get_mut(i)) {
                slot.acc = None;
            }
        }
        Ok(())
    }

    fn remove_key_if_empty(&mut self, key: &S::Key) {
        if let Some(table) = self.table.as_mut()
            && table
                .get(key)
                .is_some_and(|kw| kw.slots.is_empty() && kw.global.is_empty())
        {
            table.remove(key);
        }
    }

    /// Fires up to a chunk of the event-time timers due at the current watermark.
    fn fire_chunk(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let now = self.now();
        for _ in 0..TIMERS_PER_CHUNK {
            let Some((time, key, window)) = self.firing.next(&mut self.timers.event) else {
                break;
            };
            self.on_timer(&key, &window, time, true, now, out)?;
        }
        Ok(())
    }

    /// A timer of `key` and `window` fired at `time`.
    fn on_timer(
        &mut self,
        key: &S::Key,
        window: &A::W,
        time: Timestamp,
        event: bool,
        now: Timestamp,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let table = self.table.as_mut().ok_or_else(not_open)?;
        // No slot: the window was merged away or already cleaned up; nothing to evaluate.
        let Some(kw) = table.get_mut(key) else {
            return Ok(());
        };
        let Some(i) = kw.position(window) else {
            return Ok(());
        };
        let slot = &mut kw.slots[i];
        // This timer is gone from the queue now.
        let fired = if event {
            TimerRequest::RegisterEvent(time)
        } else {
            TimerRequest::RegisterProcessing(time)
        };
        slot.timers.retain(|t| *t != fired);
        let mut ctx = TriggerContext {
            watermark: self.watermark,
            processing_time: now,
            requests: &mut self.requests,
        };
        let result = if event {
            self.trigger
                .on_event_time(time, window, &mut slot.trigger, &mut ctx)
        } else {
            self.trigger
                .on_processing_time(time, window, &mut slot.trigger, &mut ctx)
        };
        filter_known_timers(&mut slot.timers, &mut self.requests);
        self.apply_requests(key, window);
        self.after_trigger(key, i, result, now, out)?;
        let is_cleanup = self.assigner.is_event_time() == event
            && time == cleanup_time(event, window, self.settings.allowed_lateness);
        if is_cleanup {
            self.clear_all_state(key, i, now)?;
        }
        Ok(())
    }

    /// Flink's `clearAllState`: contents, trigger state and timers, per-window state.
    fn clear_all_state(&mut self, key: &S::Key, i: usize, now: Timestamp) -> Result<(), UserError> {
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let Some(kw) = table.get_mut(key) else {
            return Ok(());
        };
        if i >= kw.slots.len() {
            return Ok(());
        }
        let mut slot = kw.slots.swap_remove(i);
        let mut ctx = TriggerContext {
            watermark: self.watermark,
            processing_time: now,
            requests: &mut self.requests,
        };
        self.trigger
            .clear(&slot.window, &mut slot.trigger, &mut ctx);
        let mut wctx = WindowContext {
            window: &slot.window,
            watermark: self.watermark,
            processing_time: now,
            window_state: &mut slot.state,
            global_state: &mut kw.global,
        };
        self.function.clear(key, &mut wctx)?;
        if self.sliced {
            // Panes no remaining window covers are never read again.
            let spans: Vec<(i64, i64)> = kw
                .slots
                .iter()
                .filter_map(|s| s.window.interval())
                .collect();
            kw.panes
                .retain(|(p, _)| spans.iter().any(|(s, e)| covers(*s, *e, *p)));
        }
        self.apply_requests(key, &slot.window);
        self.remove_key_if_empty(key);
        Ok(())
    }
}

impl<T, S, A, Tr, Ag, F, O> Operator for WindowOperator<T, S, A, Tr, Ag, F, O>
where
    T: Data,
    O: Data,
    S: KeySelector<T>,
    A: WindowAssigner<T>,
    Tr: Trigger<T, A::W>,
    Ag: WindowAgg<T, A::W>,
    F: WindowFunction<S::Key, Ag::Out, O, A::W>,
{
    type In = T;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        if self.assigner.is_merging() && !self.trigger.can_merge() {
            return Err("the trigger does not support merging windows (sessions)".into());
        }
        self.table = Some(KeyedTable::new(
            info.max_parallelism,
            info.key_group_range(),
        ));
        self.info = Some(info.clone());
        self.sliced = !self.assigner.is_merging()
            && self.assigner.pane_start(0).is_some()
            && self.trigger.keeps_contents()
            && self.agg.sliceable();
        self.function.open(info)
    }

    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }

    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<O>) -> Result<(), UserError> {
        let now = self.now();
        for (v, ts) in batch.into_iter_timestamped() {
            self.process_element(v, ts, now, out)?;
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        wm: Watermark,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        if wm <= self.watermark {
            return Ok(());
        }
        self.watermark = wm;
        self.firing.start(Timestamp(wm.0));
        self.fire_chunk(out)
    }

    fn has_more(&self) -> bool {
        self.firing.is_active()
    }

    fn key_count(&self) -> Option<usize> {
        self.table.as_ref().map(KeyedTable::len)
    }

    fn resume(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        self.fire_chunk(out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        // In BATCH mode processing-time timers fire only at the end of input (`finish`).
        if self
            .info
            .as_ref()
            .is_some_and(|i| i.runtime_mode == crate::types::RuntimeMode::Batch)
        {
            return None;
        }
        self.timers.processing.peek()
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        while let Some((time, timers)) = self.timers.processing.pop_due(now) {
            for (key, window) in timers {
                self.on_timer(&key, &window, time, false, now, out)?;
            }
        }
        Ok(())
    }

    /// Per key group, each key's windows, contents, window state and timers. With incremental
    /// checkpoints the timers are written whole (as the keyed process function's) and the
    /// rest of each group as a chain of a base and deltas of the keys touched since the
    /// checkpoint before (see [`incremental`](crate::checkpoint::incremental)).
    #[allow(clippy::type_complexity)] // the snapshot's types are the operator's parameters
    fn snapshot_state(
        &mut self,
        id: crate::types::CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(not_open)?;
        let index = info.subtask_index;
        let max_parallelism = info.max_parallelism;
        let table = self.table.as_mut().ok_or_else(not_open)?;
        let (plan, changes) = self.incremental.plan_table(id, state.context(), table);
        // The pause at the barrier: share the key groups, copy the timers. Windows, their
        // contents and state are encoded later, off the subtask.
        let frozen = table.freeze();
        let event: Vec<(i64, S::Key, A::W)> = self
            .timers
            .event
            .iter()
            .map(|(t, k, w)| (t.0, k.clone(), w.clone()))
            .collect();
        let processing: Vec<(i64, S::Key, A::W)> = self
            .timers
            .processing
            .iter()
            .map(|(t, k, w)| (t.0, k.clone(), w.clone()))
            .collect();
        state.put_parts_later(move || {
            let empty = || KeySnap {
                slots: Vec::new(),
                global: Vec::new(),
                panes: Vec::new(),
                event_timers: Vec::new(),
                processing_timers: Vec::new(),
            };
            let contents = |kw: &KeyWindows<A::W, Ag::Acc, Tr::State>| -> Result<KeySnap<A::W, Ag::Acc, Tr::State>, UserError> {
                Ok(KeySnap {
                    global: kw.global.encode()?,
                    slots: kw
                        .slots
                        .iter()
                        .map(|s| {
                            Ok(SlotSnap {
                                window: s.window.clone(),
                                acc: s.acc.clone(),
                                trigger: s.trigger.clone(),
                                timers: s.timers.clone(),
                                state: s.state.encode()?,
                            })
                        })
                        .collect::<Result<_, UserError>>()?,
                    panes: kw.panes.clone(),
                    ..empty()
                })
            };
            // Whole: every key's contents and timers. Incremental: the timers only.
            let mut snap: KeyedSnapshot<S::Key, KeySnap<A::W, Ag::Acc, Tr::State>> =
                KeyedSnapshot::new(max_parallelism);
            if !plan.is_incremental() {
                for (key, kw) in frozen.iter() {
                    *snap.entry(key, empty) = contents(kw)?;
                }
            }
            for (t, key, w) in event {
                snap.entry(&key, empty).event_timers.push((t, w));
            }
            for (t, key, w) in processing {
                snap.entry(&key, empty).processing_timers.push((t, w));
            }
            let whole = snap.into_groups()?;
            if !plan.is_incremental() {
                return plan.finish(whole, Vec::new(), Vec::new());
            }
            let (chunks, unchanged) = crate::checkpoint::incremental::table_groups(
                &frozen,
                &changes,
                &plan,
                |_| true,
                contents,
            )?;
            plan.finish(whole, chunks, unchanged)
        });
        state.push_union(index, &self.watermark.0)
    }

    #[allow(clippy::type_complexity)] // the snapshot types are the operator's parameters
    fn restore_state(
        &mut self,
        restored: crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        if let Some(wm) = restored.own_union::<i64>(|all| all.into_iter().min())? {
            self.watermark = Watermark(wm);
        }
        restored.state.check_resolved()?;
        // The next checkpoint writes every group whole (a new chain).
        self.incremental.reset();
        // Whole groups (or, incremental, the timers), then the chains of window contents.
        let mut keys =
            KeyedSnapshot::<S::Key, KeySnap<A::W, Ag::Acc, Tr::State>>::read(&restored.state)?;
        for (kg, layers) in &restored.state.layers {
            keys.extend(crate::checkpoint::incremental::merge_chain::<
                S::Key,
                KeySnap<A::W, Ag::Acc, Tr::State>,
            >(*kg, layers)?);
        }
        let table = self.table.as_mut().ok_or_else(not_open)?;
        for (key, snap) in keys {
            for (t, w) in &snap.event_timers {
                self.timers.event.register(Timestamp(*t), &key, w);
            }
            for (t, w) in &snap.processing_timers {
                self.timers.processing.register(Timestamp(*t), &key, w);
            }
            if snap.slots.is_empty() && snap.panes.is_empty() && snap.global.is_empty() {
                continue;
            }
            let kw = table
                .get_or_insert_with(&key, KeyWindows::default)
                .map_err(|e| format!("restoring window state: {e}"))?;
            kw.panes = snap.panes;
            kw.global = StateBag::restored(snap.global);
            kw.slots = snap
                .slots
                .into_iter()
                .map(|s| Slot {
                    window: s.window,
                    acc: s.acc,
                    trigger: s.trigger,
                    state: StateBag::restored(s.state),
                    timers: s.timers,
                })
                .collect();
        }
        Ok(())
    }

    /// Checkpoint `checkpoint` completed: later incremental checkpoints build on its chains.
    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: crate::types::CheckpointId,
    ) -> Result<(), UserError> {
        self.incremental.confirm(checkpoint);
        Ok(())
    }

    /// In BATCH mode every pending processing-time timer fires at the end of input (so
    /// processing-time windows emit once, at the end), and what their firing registers is
    /// ignored — as Flink's BATCH time service. In STREAMING mode they end with the job.
    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let dropped = self.late_records_dropped();
        if dropped > 0 {
            tracing::debug!(dropped, "late records dropped");
        }
        let info = self.info.as_ref().ok_or_else(not_open)?;
        if info.runtime_mode == crate::types::RuntimeMode::Batch {
            let now = info.clock.now();
            let mut due = Vec::new();
            while let Some(timers) = self.timers.processing.pop_due(Timestamp(i64::MAX)) {
                due.push(timers);
            }
            for (time, timers) in due {
                for (key, window) in timers {
                    self.on_timer(&key, &window, time, false, now, out)?;
                }
            }
            while self
                .timers
                .processing
                .pop_due(Timestamp(i64::MAX))
                .is_some()
            {}
        }
        Ok(())
    }
}
