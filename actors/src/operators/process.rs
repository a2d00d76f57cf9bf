//! `process`: the general per-record function with a context (Flink's `ProcessFunction` and
//! `KeyedProcessFunction`).

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::{Operator, TaskInfo};
use crate::operators::rich::FunctionState;
use crate::state::key::KeySelector;
use crate::state::keyed_state::{KeyState, StateAccess, StateRegistry};
use crate::state::table::KeyedTable;
use crate::time::timer::{Firing, TIMERS_PER_CHUNK, TimeDomain, Timers};
use crate::types::{CheckpointId, Timestamp, Watermark};
use serde::{Deserialize, Serialize};
use std::hash::Hash;
use std::marker::PhantomData;

/// What a [`ProcessFunction`] can see about the record being processed.
#[derive(Debug)]
pub struct Context<'a> {
    timestamp: Option<Timestamp>,
    watermark: Watermark,
    processing_time: Timestamp,
    info: &'a TaskInfo,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        timestamp: Option<Timestamp>,
        watermark: Watermark,
        processing_time: Timestamp,
        info: &'a TaskInfo,
    ) -> Self {
        Context {
            timestamp,
            watermark,
            processing_time,
            info,
        }
    }

    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.watermark
    }

    /// The current processing time (ms).
    pub fn current_processing_time(&self) -> Timestamp {
        self.processing_time
    }

    /// This operator instance.
    pub fn task(&self) -> &TaskInfo {
        self.info
    }
}

/// A function called for every record, with a [`Context`] and a [`Collector`].
///
/// Implemented for closures `FnMut(I, &mut Context, &mut Collector<O>) -> Result<(), UserError>`.
pub trait ProcessFunction<I, O>: Send + 'static {
    /// Processes one record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut Context<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Called once before the first record.
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

    /// Writes the function's non-keyed state into checkpoint `checkpoint` (Flink's
    /// `CheckpointedFunction.snapshotState`); see [`FunctionState`].
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint.
    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut FunctionState,
    ) -> Result<(), UserError> {
        let _ = (checkpoint, state);
        Ok(())
    }

    /// Reads the state back on restore, after `open` (Flink's `initializeState`).
    ///
    /// # Errors
    ///
    /// Any error fails the restore.
    fn restore_state(&mut self, state: &FunctionState) -> Result<(), UserError> {
        let _ = state;
        Ok(())
    }
}

impl<I, O, F> ProcessFunction<I, O> for F
where
    F: FnMut(I, &mut Context<'_>, &mut Collector<O>) -> Result<(), UserError> + Send + 'static,
{
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut Context<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(value, ctx, out)
    }
}

/// One key of a keyed process operator in a snapshot: the format. Snapshots are written by
/// [`KeySnapView`] and read by [`ProcessKeySnapRef`] without building one; the tests check
/// that all three agree.
#[cfg(test)]
#[derive(Debug, Default, Serialize, Deserialize)]
struct ProcessKeySnap {
    /// `(state name, bytes)` per state that holds something.
    #[serde(with = "crate::checkpoint::bytes::tagged")]
    states: Vec<(String, Vec<u8>)>,
    event_timers: Vec<i64>,
    processing_timers: Vec<i64>,
}

/// Per key group of `frozen`, the bytes of a `Vec<(K, ProcessKeySnap)>` holding every key's
/// state and timers, written straight from the frozen tables (no `ProcessKeySnap` is built:
/// one pass, one scratch buffer, so encoding costs little more than copying the bytes).
fn encode_process_groups<K: crate::state::key::Key>(
    frozen: &crate::state::table::FrozenTable<K, KeyState>,
    names: &[String],
    event: Vec<(i64, K)>,
    processing: Vec<(i64, K)>,
    max_parallelism: u32,
) -> Result<Vec<(crate::types::KeyGroup, Vec<u8>)>, UserError> {
    encode_process_tables(frozen.groups(), names, event, processing, max_parallelism)
}

/// [`encode_process_groups`] over any key group tables.
fn encode_process_tables<'a, K: crate::state::key::Key>(
    groups: impl Iterator<
        Item = (
            crate::types::KeyGroup,
            &'a hashbrown::HashTable<(K, KeyState)>,
        ),
    >,
    names: &[String],
    event: Vec<(i64, K)>,
    processing: Vec<(i64, K)>,
    max_parallelism: u32,
) -> Result<Vec<(crate::types::KeyGroup, Vec<u8>)>, UserError> {
    use crate::state::keygroup::assign_to_key_group;
    use std::collections::{BTreeMap, HashMap};
    // Timers by key group and key; most keys have none.
    type KeyTimers = (Vec<i64>, Vec<i64>);
    let mut timers: BTreeMap<crate::types::KeyGroup, HashMap<K, KeyTimers>> = BTreeMap::new();
    for (domain, list) in [(0, event), (1, processing)] {
        for (t, key) in list {
            let kg = assign_to_key_group(&key, max_parallelism);
            let entry = timers.entry(kg).or_default().entry(key).or_default();
            if domain == 0 {
                entry.0.push(t);
            } else {
                entry.1.push(t);
            }
        }
    }
    let mut out = Vec::new();
    for (kg, table) in groups {
        let group_timers = timers.remove(&kg).unwrap_or_default();
        if table.is_empty() && group_timers.is_empty() {
            continue;
        }
        let view = GroupView {
            table,
            names,
            timers: &group_timers,
        };
        let bytes = postcard::to_allocvec(&view)
            .map_err(|e| format!("cannot serialize the keyed state of key group {kg}: {e}"))?;
        out.push((kg, bytes));
    }
    Ok(out)
}

/// Incremental: the timers of every key group whole (as `ProcessKeySnap`s without state), and
/// each key group's state as the plan asks, a base (`Vec<(K, ProcessKeySnap)>` without
/// timers) or a [`Delta`](crate::checkpoint::incremental::Delta) of the keys in `changes`.
fn encode_process_chains<K: crate::state::key::Key>(
    frozen: &crate::state::table::FrozenTable<K, KeyState>,
    names: &[String],
    event: Vec<(i64, K)>,
    processing: Vec<(i64, K)>,
    max_parallelism: u32,
    plan: crate::checkpoint::incremental::Plan,
    changes: crate::checkpoint::incremental::Changes<K>,
) -> Result<crate::checkpoint::types::KeyedParts, UserError> {
    use crate::checkpoint::incremental::GroupWrite;
    let empty_table = hashbrown::HashTable::new();
    let no_timers = std::collections::HashMap::new();
    let timers = encode_process_tables(
        frozen.range().iter().map(|kg| (kg, &empty_table)),
        names,
        event,
        processing,
        max_parallelism,
    )?;
    let mut chunks = Vec::new();
    let mut unchanged = Vec::new();
    for (kg, table) in frozen.groups() {
        let changed = changes.get(&kg);
        let write = plan.write_of(kg, changed.is_some(), table.is_empty());
        let serialized = match write {
            GroupWrite::Unchanged => {
                unchanged.push(kg);
                continue;
            }
            _ if table.is_empty() => continue,
            GroupWrite::Delta => postcard::to_allocvec(&DeltaView {
                kg,
                frozen,
                keys: changed,
                names,
            }),
            GroupWrite::Base | GroupWrite::Whole => postcard::to_allocvec(&GroupView {
                table,
                names,
                timers: &no_timers,
            }),
        };
        let bytes = serialized
            .map_err(|e| format!("cannot serialize the keyed state of key group {kg}: {e}"))?;
        chunks.push((kg, write, bytes));
    }
    plan.finish(timers, chunks, unchanged)
}

/// The changed keys of one group, serialized as a `Delta<K, ProcessKeySnap>`: the keys no
/// longer in the frozen table as removed, the others with their state (no timers).
struct DeltaView<'a, K> {
    kg: crate::types::KeyGroup,
    frozen: &'a crate::state::table::FrozenTable<K, KeyState>,
    keys: Option<&'a crate::state::table::ChangedKeys<K>>,
    names: &'a [String],
}

impl<K: crate::state::key::Key> Serialize for DeltaView<'_, K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        struct Removed<'b, K>(Vec<&'b K>);
        impl<K: Serialize> Serialize for Removed<'_, K> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }
        struct Changed<'b, K>(Vec<(&'b K, &'b KeyState)>, &'b [String]);
        impl<K: Serialize> Serialize for Changed<'_, K> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                const NONE: &(Vec<i64>, Vec<i64>) = &(Vec::new(), Vec::new());
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for (k, ks) in &self.0 {
                    seq.serialize_element(&(
                        k,
                        KeySnapView {
                            state: Some(ks),
                            names: self.1,
                            timers: NONE,
                        },
                    ))?;
                }
                seq.end()
            }
        }
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        for k in self.keys.into_iter().flat_map(|c| c.iter()) {
            match self.frozen.get_in(self.kg, k) {
                Some(ks) => changed.push((k, ks)),
                None => removed.push(k),
            }
        }
        let mut st = serializer.serialize_struct("Delta", 2)?;
        st.serialize_field("removed", &Removed(removed))?;
        st.serialize_field("changed", &Changed(changed, self.names))?;
        st.end()
    }
}

/// One key group serialized as `Vec<(K, ProcessKeySnap)>`: the keys with state (and their
/// timers), then the keys with timers only.
struct GroupView<'a, K> {
    table: &'a hashbrown::HashTable<(K, KeyState)>,
    names: &'a [String],
    timers: &'a std::collections::HashMap<K, (Vec<i64>, Vec<i64>)>,
}

impl<K: crate::state::key::Key> Serialize for GroupView<'_, K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let timer_only: Vec<&K> = if self.timers.is_empty() {
            Vec::new()
        } else {
            let in_table: std::collections::HashSet<&K> =
                self.table.iter().map(|(k, _)| k).collect();
            self.timers
                .keys()
                .filter(|k| !in_table.contains(k))
                .collect()
        };
        let none = (Vec::new(), Vec::new());
        let mut seq = serializer.serialize_seq(Some(self.table.len() + timer_only.len()))?;
        for (key, ks) in self.table.iter() {
            let t = self.timers.get(key).unwrap_or(&none);
            seq.serialize_element(&(
                key,
                KeySnapView {
                    state: Some(ks),
                    names: self.names,
                    timers: t,
                },
            ))?;
        }
        for key in timer_only {
            let t = self.timers.get(key).unwrap_or(&none);
            seq.serialize_element(&(
                key,
                KeySnapView {
                    state: None,
                    names: self.names,
                    timers: t,
                },
            ))?;
        }
        seq.end()
    }
}

/// Serializes like a [`ProcessKeySnap`].
struct KeySnapView<'a> {
    state: Option<&'a KeyState>,
    names: &'a [String],
    timers: &'a (Vec<i64>, Vec<i64>),
}

impl Serialize for KeySnapView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("ProcessKeySnap", 3)?;
        st.serialize_field(
            "states",
            &StatesView {
                state: self.state,
                names: self.names,
            },
        )?;
        st.serialize_field("event_timers", &self.timers.0)?;
        st.serialize_field("processing_timers", &self.timers.1)?;
        st.end()
    }
}

/// Serializes like `ProcessKeySnap::states`, a `Vec<(String, Vec<u8>)>`.
struct StatesView<'a> {
    state: Option<&'a KeyState>,
    names: &'a [String],
}

thread_local! {
    /// Scratch space for one state value's bytes while a group is encoded.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Serialize for StatesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq, SerializeTuple};
        let Some(ks) = self.state else {
            return serializer.serialize_seq(Some(0))?.end();
        };
        let mut seq = serializer.serialize_seq(Some(ks.filled().count()))?;
        for (slot, value) in ks.filled() {
            let name = self.names.get(slot).ok_or_else(|| {
                S::Error::custom(format!("keyed state slot {slot} has no registered name"))
            })?;
            struct Entry<'b>(&'b str, &'b crate::state::keyed_state::Slot);
            impl Serialize for Entry<'_> {
                fn serialize<S2: serde::Serializer>(&self, s: S2) -> Result<S2::Ok, S2::Error> {
                    SCRATCH.with(|scratch| {
                        let mut buf = std::mem::take(&mut *scratch.borrow_mut());
                        buf.clear();
                        let buf = self.1.encode_into(buf).map_err(|e| {
                            S2::Error::custom(format!(
                                "cannot serialize keyed state {:?}: {e}",
                                self.0
                            ))
                        })?;
                        let mut t = s.serialize_tuple(2)?;
                        t.serialize_element(self.0)?;
                        t.serialize_element(&crate::checkpoint::bytes::Bytes(&buf))?;
                        let r = t.end();
                        *scratch.borrow_mut() = buf;
                        r
                    })
                }
            }
            seq.serialize_element(&Entry(name, value))?;
        }
        seq.end()
    }
}

/// A [`ProcessKeySnap`] read in place: names and values borrowed from the snapshot.
#[derive(Deserialize)]
struct ProcessKeySnapRef<'a> {
    #[serde(borrow)]
    states: Vec<(&'a str, &'a [u8])>,
    event_timers: Vec<i64>,
    processing_timers: Vec<i64>,
}

fn missing_open() -> UserError {
    "process function called before open()".into()
}

/// Runs a [`ProcessFunction`].
pub struct ProcessOperator<I, O, P> {
    function: P,
    info: Option<TaskInfo>,
    watermark: Watermark,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, P> ProcessOperator<I, O, P> {
    /// An operator running `function`.
    pub fn new(function: P) -> Self {
        ProcessOperator {
            function,
            info: None,
            watermark: Watermark::MIN,
            _types: PhantomData,
        }
    }
}

impl<I: Data, O: Data, P: ProcessFunction<I, O>> Operator for ProcessOperator<I, O, P> {
    type In = I;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.info = Some(info.clone());
        self.function.open(info)
    }

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        let processing_time = info.clock.now();
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            let mut ctx = Context {
                timestamp: ts,
                watermark: self.watermark,
                processing_time,
                info,
            };
            self.function.process_element(v, &mut ctx, out)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, wm: Watermark, _: &mut Collector<O>) -> Result<(), UserError> {
        self.watermark = wm;
        Ok(())
    }

    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        let index = self.info.as_ref().map_or(0, |i| i.subtask_index);
        let mut fs = FunctionState::wrap(std::mem::take(state), index);
        self.function.snapshot_state(checkpoint, &mut fs)?;
        *state = fs.into_inner();
        Ok(())
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let index = self.info.as_ref().map_or(0, |i| i.subtask_index);
        self.function
            .restore_state(&FunctionState::wrap(restored.state, index))
    }
}

/// What a [`KeyedProcessFunction`] can see and do: the [`Context`], the current key, its
/// state, and timers (Flink's `KeyedProcessFunction.Context` with its `TimerService`).
#[derive(Debug)]
pub struct KeyedContext<'a, K> {
    base: Context<'a>,
    key: &'a K,
    timers: &'a mut Timers<K, ()>,
    state: StateAccess<'a>,
    domain: Option<TimeDomain>,
}

impl<'a, K: Hash + Eq + Clone> KeyedContext<'a, K> {
    /// The key of the record (or timer) being processed.
    pub fn current_key(&self) -> &K {
        self.key
    }

    /// The record's event timestamp, or the firing timer's timestamp in `on_timer`.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.base.timestamp
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.base.watermark
    }

    /// The current processing time (ms).
    pub fn current_processing_time(&self) -> Timestamp {
        self.state.now
    }

    /// In `on_timer`: which clock the firing timer follows.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }

    /// This operator instance.
    pub fn task(&self) -> &TaskInfo {
        self.base.info
    }

    /// The current key's state; pass it to state handles.
    pub fn state(&mut self) -> &mut StateAccess<'a> {
        &mut self.state
    }

    /// Calls `on_timer` for this key when the watermark reaches `time`. Registering the
    /// same key and time twice gives one call.
    pub fn register_event_time_timer(&mut self, time: Timestamp) {
        self.timers.event.register(time, self.key, &());
    }

    /// Calls `on_timer` for this key when processing time reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: Timestamp) {
        self.timers.processing.register(time, self.key, &());
    }

    /// Deletes this key's event-time timer at `time`, if any.
    pub fn delete_event_time_timer(&mut self, time: Timestamp) {
        self.timers.event.delete(time, self.key, &());
    }

    /// Deletes this key's processing-time timer at `time`, if any.
    pub fn delete_processing_time_timer(&mut self, time: Timestamp) {
        self.timers.processing.delete(time, self.key, &());
    }
}

/// What `open` of a keyed function gets: the task, and the registry that declares keyed state.
#[derive(Debug)]
pub struct OpenContext<'a> {
    /// This operator instance.
    pub info: &'a TaskInfo,
    /// Declares keyed state; keep the returned handles.
    pub state: &'a mut StateRegistry,
}

/// A function called for every record of a keyed stream, with keyed state and timers
/// (Flink's `KeyedProcessFunction`).
///
/// Implemented for closures `FnMut(I, &mut KeyedContext<K>, &mut Collector<O>) -> Result<(),
/// UserError>` (no state, no timers); implement the trait for more.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::keyed_state::ValueState;
/// use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
/// use actorflow_runtime::{Collector, Timestamp, UserError};
/// /// Counts records per key and reports the count 10 ms (event time) after each record.
/// #[derive(Clone, Default)]
/// struct CountThenReport { count: Option<ValueState<u64>> }
/// impl KeyedProcessFunction<String, String, (String, u64)> for CountThenReport {
///     fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
///         self.count = Some(ctx.state.value_state("count", None)?);
///         Ok(())
///     }
///     fn process_element(&mut self, _: String, ctx: &mut KeyedContext<'_, String>, _: &mut Collector<(String, u64)>) -> Result<(), UserError> {
///         let count = self.count.as_ref().ok_or("not open")?;
///         let n = count.value(ctx.state())?.unwrap_or(0) + 1;
///         count.update(ctx.state(), n)?;
///         let at = Timestamp(ctx.timestamp().map_or(0, |t| t.0) + 10);
///         ctx.register_event_time_timer(at);
///         Ok(())
///     }
///     fn on_timer(&mut self, _: Timestamp, ctx: &mut KeyedContext<'_, String>, out: &mut Collector<(String, u64)>) -> Result<(), UserError> {
///         let count = self.count.as_ref().ok_or("not open")?;
///         let n = count.value(ctx.state())?.unwrap_or(0);
///         out.collect((ctx.current_key().clone(), n));
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction<K, I, O>: Send + 'static {
    /// Processes one record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Called when a timer of the current key fires; `ctx.time_domain()` says which kind.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn on_timer(
        &mut self,
        timestamp: Timestamp,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let _ = (timestamp, ctx, out);
        Ok(())
    }

    /// Called once before the first record: declare keyed state here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let _ = ctx;
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

impl<K, I, O, F> KeyedProcessFunction<K, I, O> for F
where
    F: FnMut(I, &mut KeyedContext<'_, K>, &mut Collector<O>) -> Result<(), UserError>
        + Send
        + 'static,
{
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(value, ctx, out)
    }
}

/// The keyed half of a keyed operator: per-key state, timers, the watermark and their
/// snapshot. [`KeyedProcessOperator`] is this plus a function; the keyed broadcast operator
/// uses it too.
pub(crate) struct KeyedCore<K> {
    pub(crate) info: Option<TaskInfo>,
    pub(crate) watermark: Watermark,
    registry: StateRegistry,
    states: Option<KeyedTable<K, KeyState>>,
    timers: Timers<K, ()>,
    firing: Firing<K, ()>,
    incremental: crate::checkpoint::incremental::Incremental,
}

impl<K: crate::state::key::Key> KeyedCore<K> {
    pub(crate) fn new() -> Self {
        KeyedCore {
            info: None,
            watermark: Watermark::MIN,
            registry: StateRegistry::default(),
            states: None,
            timers: Timers::default(),
            firing: Firing::default(),
            incremental: Default::default(),
        }
    }

    /// Keys that hold state now.
    pub(crate) fn key_count(&self) -> Option<usize> {
        self.states.as_ref().map(KeyedTable::len)
    }

    /// Checkpoint `id` completed: later incremental checkpoints build on it.
    pub(crate) fn confirm(&mut self, id: CheckpointId) {
        self.incremental.confirm(id);
    }

    /// Opens the state table for this subtask's key groups; `open` declares keyed state.
    pub(crate) fn open(
        &mut self,
        info: &TaskInfo,
        open: impl FnOnce(&mut OpenContext<'_>) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.info = Some(info.clone());
        self.states = Some(KeyedTable::new(
            info.max_parallelism,
            info.key_group_range(),
        ));
        let mut ctx = OpenContext {
            info,
            state: &mut self.registry,
        };
        open(&mut ctx)
    }

    /// Calls `f` with a context for `key`; drops the key's state entry if it ends up empty.
    pub(crate) fn with_context<R>(
        &mut self,
        key: &K,
        timestamp: Option<Timestamp>,
        domain: Option<TimeDomain>,
        now: Timestamp,
        f: impl FnOnce(&mut KeyedContext<'_, K>) -> Result<R, UserError>,
    ) -> Result<R, UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        let table = self.states.as_mut().ok_or_else(missing_open)?;
        let mut scratch = KeyState::default();
        let stateful = !self.registry.is_empty();
        // With incremental checkpoints, only writes count as changes of the key.
        let tracking = table.tracks_changes();
        let state = if !stateful {
            &mut scratch
        } else if tracking {
            table.get_or_insert_untracked(key, KeyState::default)?
        } else {
            table.get_or_insert_with(key, KeyState::default)?
        };
        let mut ctx = KeyedContext {
            base: Context {
                timestamp,
                watermark: self.watermark,
                processing_time: now,
                info,
            },
            key,
            timers: &mut self.timers,
            state: StateAccess { state, now },
            domain,
        };
        let r = f(&mut ctx);
        let modified = ctx.state.state.take_modified();
        let empty = stateful && ctx.state.state.is_empty();
        if stateful && tracking {
            if modified {
                table.mark_changed(key);
            }
            if empty {
                if modified {
                    table.remove(key);
                } else {
                    // Created for this call and never written: nothing changed.
                    table.remove_untracked(key);
                }
            }
        } else if empty {
            table.remove(key);
        }
        r
    }

    pub(crate) fn now(&self) -> Result<Timestamp, UserError> {
        Ok(self.info.as_ref().ok_or_else(missing_open)?.clock.now())
    }

    /// Advances the watermark; true if it moved (then event-time timers start firing).
    pub(crate) fn advance(&mut self, wm: Watermark) -> bool {
        if wm > self.watermark {
            self.watermark = wm;
            self.firing.start(Timestamp(wm.0));
            true
        } else {
            false
        }
    }

    /// Whether event-time timers are still due at the current watermark.
    pub(crate) fn has_more(&self) -> bool {
        self.firing.is_active()
    }

    /// Fires up to a chunk of the event-time timers due at the current watermark, calling
    /// `on_timer`; their output carries the timer's time.
    pub(crate) fn fire_chunk<O>(
        &mut self,
        out: &mut Collector<O>,
        mut on_timer: impl FnMut(
            Timestamp,
            &mut KeyedContext<'_, K>,
            &mut Collector<O>,
        ) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let now = self.now()?;
        for _ in 0..TIMERS_PER_CHUNK {
            let Some((time, key, ())) = self.firing.next(&mut self.timers.event) else {
                break;
            };
            out.set_timestamp(Some(time));
            self.with_context(&key, Some(time), Some(TimeDomain::EventTime), now, |ctx| {
                on_timer(time, ctx, out)
            })?;
        }
        Ok(())
    }

    /// Fires the processing-time timers due at `now`; their output carries no timestamp (as in
    /// Flink).
    pub(crate) fn fire_processing<O>(
        &mut self,
        now: Timestamp,
        out: &mut Collector<O>,
        mut on_timer: impl FnMut(
            Timestamp,
            &mut KeyedContext<'_, K>,
            &mut Collector<O>,
        ) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        while let Some((time, keys)) = self.timers.processing.pop_due(now) {
            for (key, ()) in keys {
                out.set_timestamp(None);
                self.with_context(&key, None, Some(TimeDomain::ProcessingTime), now, |ctx| {
                    on_timer(time, ctx, out)
                })?;
            }
        }
        Ok(())
    }

    /// End of input in BATCH mode: every pending processing-time timer fires now, whatever
    /// its time, and timers registered meanwhile are ignored — Flink's BATCH time service,
    /// which fires a key's processing-time timers after its event-time ones when the key is
    /// done and quiesces registration while it does. In STREAMING mode nothing fires: the
    /// pending timers end with the job, as in Flink.
    pub(crate) fn fire_all_processing_at_batch_end<O>(
        &mut self,
        out: &mut Collector<O>,
        mut on_timer: impl FnMut(
            Timestamp,
            &mut KeyedContext<'_, K>,
            &mut Collector<O>,
        ) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        if info.runtime_mode != crate::types::RuntimeMode::Batch {
            return Ok(());
        }
        let now = info.clock.now();
        let mut due = Vec::new();
        while let Some(timers) = self.timers.processing.pop_due(Timestamp(i64::MAX)) {
            due.push(timers);
        }
        for (time, keys) in due {
            for (key, ()) in keys {
                out.set_timestamp(None);
                self.with_context(&key, None, Some(TimeDomain::ProcessingTime), now, |ctx| {
                    on_timer(time, ctx, out)
                })?;
            }
        }
        // Quiesced: what the timers registered is not fired (nothing follows the end).
        while self
            .timers
            .processing
            .pop_due(Timestamp(i64::MAX))
            .is_some()
        {}
        Ok(())
    }

    /// The next processing-time timer; none in BATCH mode, where they all fire at the end of
    /// input (see [`fire_all_processing_at_batch_end`](Self::fire_all_processing_at_batch_end)).
    pub(crate) fn next_processing_time(&self) -> Option<Timestamp> {
        if self
            .info
            .as_ref()
            .is_some_and(|i| i.runtime_mode == crate::types::RuntimeMode::Batch)
        {
            return None;
        }
        self.timers.processing.peek()
    }

    /// Calls `f` with every key's state (Flink's `applyToKeyedState`); keys whose state ends
    /// up empty are dropped. Stops at the first error.
    pub(crate) fn for_each_key(
        &mut self,
        now: Timestamp,
        mut f: impl FnMut(&K, &mut StateAccess<'_>) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let table = self.states.as_mut().ok_or_else(missing_open)?;
        let mut failed = None;
        table.retain(|key, state| {
            if failed.is_some() {
                return true;
            }
            let mut access = StateAccess { state, now };
            if let Err(e) = f(key, &mut access) {
                failed = Some(e);
            }
            !access.state.is_empty()
        });
        failed.map_or(Ok(()), Err)
    }

    /// Per key group, each key's state (by state name, so registrations may be reordered)
    /// and timers.
    pub(crate) fn snapshot_keys(
        &mut self,
        id: CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        let max_parallelism = info.max_parallelism;
        let table = self.states.as_mut().ok_or_else(missing_open)?;
        let (plan, changes) = self.incremental.plan_table(id, state.context(), table);
        // The pause at the barrier: share the key groups, copy the timers (as Flink's heap
        // timers are copied synchronously). Encoding runs later, off the subtask.
        let frozen = table.freeze();
        let names = self.registry.names().to_vec();
        let event: Vec<(i64, K)> = self
            .timers
            .event
            .iter()
            .map(|(t, k, ())| (t.0, k.clone()))
            .collect();
        let processing: Vec<(i64, K)> = self
            .timers
            .processing
            .iter()
            .map(|(t, k, ())| (t.0, k.clone()))
            .collect();
        state.put_parts_later(move || {
            if !plan.is_incremental() {
                let whole =
                    encode_process_groups(&frozen, &names, event, processing, max_parallelism)?;
                return plan.finish(whole, Vec::new(), Vec::new());
            }
            encode_process_chains(
                &frozen,
                &names,
                event,
                processing,
                max_parallelism,
                plan,
                changes,
            )
        });
        Ok(())
    }

    /// Restores what [`snapshot_keys`](Self::snapshot_keys) wrote, for this subtask's key
    /// groups.
    pub(crate) fn restore_keys(
        &mut self,
        restored: &crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        restored.state.check_resolved()?;
        let table = self.states.as_mut().ok_or_else(missing_open)?;
        // The next checkpoint writes every group whole (a new chain).
        self.incremental.reset();
        let registry = &self.registry;
        // Large state is decoded on several threads, key group by key group (each group's
        // table written by one thread); timers are registered afterwards.
        let bytes: usize = restored.state.keyed.values().map(Vec::len).sum::<usize>()
            + restored
                .state
                .layers
                .values()
                .flatten()
                .map(Vec::len)
                .sum::<usize>();
        let threads = if bytes < 4 << 20 {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
        };
        type Restored<K> = (Vec<(K, Vec<i64>, Vec<i64>)>, Vec<String>);
        let groups = table.restore_groups(threads, |kg, w| -> Result<Restored<K>, UserError> {
            let mut timers = Vec::new();
            let mut dropped: Vec<String> = Vec::new();
            // Borrowing names and bytes from the group's blob: one allocation per restored
            // value, none per name. The whole group (or, with incremental checkpoints, its
            // timers), then its chain.
            let mut lists = Vec::new();
            if let Some(bytes) = restored.state.keyed.get(&kg) {
                lists.push(
                    postcard::from_bytes::<Vec<(K, ProcessKeySnapRef<'_>)>>(bytes).map_err(
                        |e| format!("cannot read the keyed state of key group {kg}: {e}"),
                    )?,
                );
            }
            if let Some(layers) = restored.state.layers.get(&kg) {
                lists.push(crate::checkpoint::incremental::merge_chain(kg, layers)?);
            }
            for keys in lists {
                w.reserve(keys.len());
                for (key, snap) in keys {
                    if !snap.event_timers.is_empty() || !snap.processing_timers.is_empty() {
                        timers.push((key.clone(), snap.event_timers, snap.processing_timers));
                    }
                    if snap.states.is_empty() {
                        continue;
                    }
                    let ks = w
                        .get_or_insert_with(&key, KeyState::default)
                        .map_err(|e| format!("restoring keyed state: {e}"))?;
                    for (name, value) in snap.states {
                        match registry.slot_of(name) {
                            Some(slot) => ks.restore_slot(slot, value.to_vec()),
                            None if !dropped.iter().any(|d| d == name) => {
                                dropped.push(name.to_string());
                            }
                            None => {}
                        }
                    }
                }
            }
            Ok((timers, dropped))
        })?;
        let mut dropped: Vec<String> = Vec::new();
        for (timers, names) in groups {
            for (key, event, processing) in timers {
                for t in event {
                    self.timers.event.register(Timestamp(t), &key, &());
                }
                for t in processing {
                    self.timers.processing.register(Timestamp(t), &key, &());
                }
            }
            for n in names {
                if !dropped.contains(&n) {
                    dropped.push(n);
                }
            }
        }
        for name in dropped {
            tracing::warn!(
                state = %name,
                "the checkpoint holds keyed state the function no longer registers; it is dropped"
            );
        }
        Ok(())
    }
}

/// Runs a [`KeyedProcessFunction`]; `key` extracts each record's key.
pub struct KeyedProcessOperator<I, O, S: KeySelector<I>, P> {
    key: S,
    function: P,
    core: KeyedCore<S::Key>,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, S: KeySelector<I>, P> KeyedProcessOperator<I, O, S, P> {
    /// An operator running `function` on records keyed by `key`.
    pub fn new(key: S, function: P) -> Self {
        KeyedProcessOperator {
            key,
            function,
            core: KeyedCore::new(),
            _types: PhantomData,
        }
    }
}

impl<I, O, S, P> Operator for KeyedProcessOperator<I, O, S, P>
where
    I: Data,
    O: Data,
    S: KeySelector<I>,
    P: KeyedProcessFunction<S::Key, I, O>,
{
    type In = I;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let function = &mut self.function;
        self.core.open(info, |ctx| function.open(ctx))
    }

    fn close(&mut self) -> Result<(), UserError> {
        self.function.close()
    }

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        // Processing time is read once per batch, not per record.
        let now = self.core.now()?;
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            let key = self.key.key(&v);
            let f = &mut self.function;
            self.core
                .with_context(&key, ts, None, now, |ctx| f.process_element(v, ctx, out))?;
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        wm: Watermark,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        if self.core.advance(wm) {
            self.resume(out)?;
        }
        Ok(())
    }

    fn key_count(&self) -> Option<usize> {
        self.core.key_count()
    }

    fn has_more(&self) -> bool {
        self.core.has_more()
    }

    fn resume(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let f = &mut self.function;
        self.core
            .fire_chunk(out, |time, ctx, out| f.on_timer(time, ctx, out))
    }

    /// Per key group, each key's state and timers; the watermark as union state.
    fn snapshot_state(
        &mut self,
        id: crate::types::CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        self.core.snapshot_keys(id, state)?;
        let info = self.core.info.as_ref().ok_or_else(missing_open)?;
        state.push_union(info.subtask_index, &self.core.watermark.0)
    }

    fn restore_state(
        &mut self,
        restored: crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        if let Some(wm) = restored.own_union::<i64>(|all| all.into_iter().min())? {
            self.core.watermark = Watermark(wm);
        }
        self.core.restore_keys(&restored)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<(), UserError> {
        self.core.confirm(checkpoint);
        Ok(())
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.core.next_processing_time()
    }

    fn on_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let f = &mut self.function;
        self.core
            .fire_processing(now, out, |time, ctx, out| f.on_timer(time, ctx, out))
    }

    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let f = &mut self.function;
        self.core
            .fire_all_processing_at_batch_end(out, |time, ctx, out| f.on_timer(time, ctx, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::types::KeyedSnapshot;
    use crate::state::keygroup::key_group_range_for_subtask;

    /// The direct encoder writes exactly what building a `ProcessKeySnap` per key would:
    /// keys with state, with state and timers, and with timers only; empty groups left out.
    #[test]
    fn process_groups_encode_as_key_snapshots() {
        let mp = 16;
        let mut table: KeyedTable<u64, KeyState> =
            KeyedTable::new(mp, key_group_range_for_subtask(mp, 1, 0));
        for k in 0..40u64 {
            let ks = table.get_or_insert_with(&k, KeyState::default).unwrap();
            ks.restore_slot(0, vec![k as u8; 3]);
            if k % 3 == 0 {
                ks.restore_slot(2, vec![7, k as u8]);
            }
        }
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let event: Vec<(i64, u64)> = vec![(5, 1), (9, 1), (4, 100), (6, 101)];
        let processing: Vec<(i64, u64)> = vec![(3, 2), (8, 100)];
        let frozen = table.freeze();
        let direct =
            encode_process_groups(&frozen, &names, event.clone(), processing.clone(), mp).unwrap();
        // The reference: one ProcessKeySnap per key, as snapshots were built before.
        let mut snap: KeyedSnapshot<u64, ProcessKeySnap> = KeyedSnapshot::new(mp);
        for (key, ks) in frozen.iter() {
            let e = snap.entry(key, ProcessKeySnap::default);
            for (slot, bytes) in ks.encode().unwrap() {
                e.states.push((names[slot].clone(), bytes));
            }
        }
        for (t, k) in &event {
            snap.entry(k, ProcessKeySnap::default).event_timers.push(*t);
        }
        for (t, k) in &processing {
            snap.entry(k, ProcessKeySnap::default)
                .processing_timers
                .push(*t);
        }
        let reference = snap.into_groups().unwrap();
        let decode = |groups: &[(crate::types::KeyGroup, Vec<u8>)]| {
            let mut all: Vec<(crate::types::KeyGroup, u64, String)> = Vec::new();
            for (kg, bytes) in groups {
                let list: Vec<(u64, ProcessKeySnap)> = postcard::from_bytes(bytes).unwrap();
                for (k, s) in list {
                    all.push((*kg, k, format!("{s:?}")));
                }
            }
            all.sort();
            all
        };
        let groups =
            |g: &[(crate::types::KeyGroup, Vec<u8>)]| g.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(groups(&direct), groups(&reference));
        assert_eq!(decode(&direct), decode(&reference));
        assert_eq!(
            decode(&direct).len(),
            42,
            "40 keys with state, 2 with timers only"
        );
        // Read in place, the same keys, states and timers.
        let mut borrowed = Vec::new();
        for (_, bytes) in &direct {
            let list: Vec<(u64, ProcessKeySnapRef<'_>)> = postcard::from_bytes(bytes).unwrap();
            for (k, s) in list {
                let states: Vec<(String, Vec<u8>)> = s
                    .states
                    .iter()
                    .map(|(n, b)| (n.to_string(), b.to_vec()))
                    .collect();
                borrowed.push((k, states, s.event_timers, s.processing_timers));
            }
        }
        let mut owned = Vec::new();
        for (_, bytes) in &reference {
            let list: Vec<(u64, ProcessKeySnap)> = postcard::from_bytes(bytes).unwrap();
            for (k, s) in list {
                owned.push((k, s.states, s.event_timers, s.processing_timers));
            }
        }
        borrowed.sort();
        owned.sort();
        assert_eq!(borrowed, owned);
    }
}
