//! Broadcast state (Flink's broadcast state pattern): a low-volume stream (rules, thresholds,
//! configuration) is broadcast to every subtask of a two-input operator, where it updates
//! **broadcast state**, a set of named maps that is the same on every subtask; the other input
//! (non-keyed: [`BroadcastProcessFunction`]; keyed: [`KeyedBroadcastProcessFunction`]) reads it.
//!
//! * The element side sees the broadcast state **read-only** ([`ReadOnlyBroadcastState`]), so
//!   the copies cannot drift apart; the broadcast side writes it ([`BroadcastState`]) and, in
//!   the keyed case, can apply a function to **every key's state**
//!   ([`KeyedBroadcastContext::apply_to_keyed_state`]).
//! * Each map is declared by a [`BroadcastStateDescriptor`] (a name and the key and value
//!   types); using an undeclared one is an error, as in Flink.
//! * Every subtask snapshots its copy; on restore each subtask takes its own copy back, or
//!   after rescaling the first one (they are all equal, as in Flink). The keyed operator also
//!   snapshots its keyed state and timers by key group.
//!
//! Like the other two-input operators, these run over [`CoRecord`]`<E, B>` (elements first,
//! broadcast second) through [`erase_two_input`](super::erase_two_input).

use super::co_process::CoRecord;
use super::process::{Context, KeyedContext, KeyedCore, OpenContext};
use crate::dataplane::data::{Batch, Collector, Data};
use crate::error::UserError;
use crate::operators::operator::{Operator, TaskInfo};
use crate::state::key::KeySelector;
use crate::state::keyed_state::StateAccess;
use crate::types::{Timestamp, Watermark};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// Names one map of broadcast state and its key and value types (Flink's
/// `MapStateDescriptor` given to `broadcast(..)`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::BroadcastStateDescriptor;
/// const THRESHOLDS: BroadcastStateDescriptor<String, i64> =
///     BroadcastStateDescriptor::new("thresholds");
/// assert_eq!(THRESHOLDS.name(), "thresholds");
/// ```
pub struct BroadcastStateDescriptor<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for BroadcastStateDescriptor<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for BroadcastStateDescriptor<K, V> {}

impl<K, V> std::fmt::Debug for BroadcastStateDescriptor<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastStateDescriptor")
            .field("name", &self.name)
            .finish()
    }
}

impl<K, V> BroadcastStateDescriptor<K, V> {
    /// A map of broadcast state called `name`.
    pub const fn new(name: &'static str) -> Self {
        BroadcastStateDescriptor {
            name,
            _types: PhantomData,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Key types of broadcast state maps.
pub trait BroadcastKey: Ord + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Ord + Send + Serialize + DeserializeOwned + 'static> BroadcastKey for T {}

/// Value types of broadcast state maps.
pub trait BroadcastValue: Send + Serialize + DeserializeOwned + 'static {}
impl<T: Send + Serialize + DeserializeOwned + 'static> BroadcastValue for T {}

impl<K: BroadcastKey, V: BroadcastValue> BroadcastStateDescriptor<K, V> {
    /// The type-erased form the operator keeps (to create and decode the map).
    pub fn spec(&self) -> StateSpec {
        StateSpec {
            name: self.name,
            empty: || Box::new(BTreeMap::<K, V>::new()),
            decode: |bytes| {
                postcard::from_bytes::<BTreeMap<K, V>>(bytes)
                    .map(|m| Box::new(m) as Box<dyn MapCell>)
                    .map_err(|e| e.to_string())
            },
            type_name: std::any::type_name::<BTreeMap<K, V>>,
        }
    }
}

/// Decodes a map's snapshot bytes.
type DecodeFn = fn(&[u8]) -> Result<Box<dyn MapCell>, String>;

/// A declared broadcast state map with its types erased: what a broadcast stream carries to
/// the operator.
#[derive(Clone, Copy)]
pub struct StateSpec {
    name: &'static str,
    empty: fn() -> Box<dyn MapCell>,
    decode: DecodeFn,
    type_name: fn() -> &'static str,
}

impl std::fmt::Debug for StateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSpec")
            .field("name", &self.name)
            .field("type", &(self.type_name)())
            .finish()
    }
}

impl StateSpec {
    /// The map's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A typed map behind a `dyn`.
pub(crate) trait MapCell: Send {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<K: BroadcastKey, V: BroadcastValue> MapCell for BTreeMap<K, V> {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The broadcast state of one subtask: the declared maps, writable (the broadcast side's
/// view). Reads and writes name their map by its [`BroadcastStateDescriptor`].
///
/// # Errors
///
/// Every method fails if the descriptor was not declared on the broadcast stream, or was
/// declared with other key or value types.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::{BroadcastState, BroadcastStateDescriptor};
/// const LIMITS: BroadcastStateDescriptor<String, i64> = BroadcastStateDescriptor::new("limits");
/// let mut state = BroadcastState::new(&[LIMITS.spec()]);
/// state.put(&LIMITS, "a".to_string(), 10).unwrap();
/// assert_eq!(state.get(&LIMITS, &"a".to_string()).unwrap(), Some(&10));
/// assert_eq!(state.read_only().entries(&LIMITS).unwrap().len(), 1);
/// const OTHER: BroadcastStateDescriptor<String, i64> = BroadcastStateDescriptor::new("other");
/// assert!(state.get(&OTHER, &"a".to_string()).is_err(), "not declared");
/// ```
pub struct BroadcastState {
    maps: Vec<(StateSpec, Box<dyn MapCell>)>,
}

impl std::fmt::Debug for BroadcastState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.maps.iter().map(|(s, _)| s.name))
            .finish()
    }
}

fn undeclared(name: &str, declared: &[(StateSpec, Box<dyn MapCell>)]) -> UserError {
    let names: Vec<&str> = declared.iter().map(|(s, _)| s.name).collect();
    format!(
        "broadcast state {name:?} was not declared on the broadcast stream (declared: {names:?}); \
         pass its descriptor to broadcast_with or with_state"
    )
    .into()
}

fn wrong_type<K, V>(spec: &StateSpec) -> UserError {
    format!(
        "broadcast state {:?} holds {}, not {}",
        spec.name,
        (spec.type_name)(),
        std::any::type_name::<BTreeMap<K, V>>()
    )
    .into()
}

impl BroadcastState {
    /// Empty maps for the declared `specs`.
    pub fn new(specs: &[StateSpec]) -> Self {
        BroadcastState {
            maps: specs.iter().map(|s| (*s, (s.empty)())).collect(),
        }
    }

    /// A read-only view (what the element side gets).
    pub fn read_only(&self) -> ReadOnlyBroadcastState<'_> {
        ReadOnlyBroadcastState { state: self }
    }

    /// The whole map `d`.
    pub fn entries<K: BroadcastKey, V: BroadcastValue>(
        &self,
        d: &BroadcastStateDescriptor<K, V>,
    ) -> Result<&BTreeMap<K, V>, UserError> {
        let (spec, cell) = self
            .maps
            .iter()
            .find(|(s, _)| s.name == d.name)
            .ok_or_else(|| undeclared(d.name, &self.maps))?;
        cell.as_any()
            .downcast_ref()
            .ok_or_else(|| wrong_type::<K, V>(spec))
    }

    /// The whole map `d`, writable.
    pub fn entries_mut<K: BroadcastKey, V: BroadcastValue>(
        &mut self,
        d: &BroadcastStateDescriptor<K, V>,
    ) -> Result<&mut BTreeMap<K, V>, UserError> {
        let pos = self
            .maps
            .iter()
            .position(|(s, _)| s.name == d.name)
            .ok_or_else(|| undeclared(d.name, &self.maps))?;
        let (spec, cell) = &mut self.maps[pos];
        let spec = *spec;
        cell.as_any_mut()
            .downcast_mut()
            .ok_or_else(|| wrong_type::<K, V>(&spec))
    }

    /// The value of `key` in map `d`.
    pub fn get<K: BroadcastKey, V: BroadcastValue>(
        &self,
        d: &BroadcastStateDescriptor<K, V>,
        key: &K,
    ) -> Result<Option<&V>, UserError> {
        Ok(self.entries(d)?.get(key))
    }

    /// True if map `d` holds `key`.
    pub fn contains_key<K: BroadcastKey, V: BroadcastValue>(
        &self,
        d: &BroadcastStateDescriptor<K, V>,
        key: &K,
    ) -> Result<bool, UserError> {
        Ok(self.entries(d)?.contains_key(key))
    }

    /// Sets `key` to `value` in map `d`, returning the previous value.
    pub fn put<K: BroadcastKey, V: BroadcastValue>(
        &mut self,
        d: &BroadcastStateDescriptor<K, V>,
        key: K,
        value: V,
    ) -> Result<Option<V>, UserError> {
        Ok(self.entries_mut(d)?.insert(key, value))
    }

    /// Removes `key` from map `d`, returning its value.
    pub fn remove<K: BroadcastKey, V: BroadcastValue>(
        &mut self,
        d: &BroadcastStateDescriptor<K, V>,
        key: &K,
    ) -> Result<Option<V>, UserError> {
        Ok(self.entries_mut(d)?.remove(key))
    }

    /// Empties map `d`.
    pub fn clear<K: BroadcastKey, V: BroadcastValue>(
        &mut self,
        d: &BroadcastStateDescriptor<K, V>,
    ) -> Result<(), UserError> {
        self.entries_mut(d)?.clear();
        Ok(())
    }

    /// Every map's bytes, by name.
    fn encode(&self) -> Result<Vec<(String, Vec<u8>)>, UserError> {
        self.maps
            .iter()
            .map(|(s, m)| {
                m.encode().map(|b| (s.name.to_string(), b)).map_err(|e| {
                    format!("cannot serialize broadcast state {:?}: {e}", s.name).into()
                })
            })
            .collect()
    }

    /// Replaces the declared maps by their restored bytes; maps the checkpoint holds but no
    /// descriptor declares any more are dropped with a warning.
    fn restore(&mut self, maps: Vec<(String, Vec<u8>)>) -> Result<(), UserError> {
        for (name, bytes) in maps {
            match self.maps.iter_mut().find(|(s, _)| s.name == name) {
                Some((spec, cell)) => {
                    *cell = (spec.decode)(&bytes).map_err(|e| {
                        format!(
                            "restored broadcast state {name:?} does not decode as {}: {e} (did \
                             its type change since the checkpoint?)",
                            (spec.type_name)()
                        )
                    })?;
                }
                None => tracing::warn!(
                    state = %name,
                    "the checkpoint holds broadcast state no descriptor declares any more; it is dropped"
                ),
            }
        }
        Ok(())
    }
}

/// The element side's view of the broadcast state: reads only, so every subtask's copy
/// stays the same (Flink's `ReadOnlyBroadcastState`).
#[derive(Debug, Clone, Copy)]
pub struct ReadOnlyBroadcastState<'a> {
    state: &'a BroadcastState,
}

impl<'a> ReadOnlyBroadcastState<'a> {
    /// The whole map `d`.
    ///
    /// # Errors
    ///
    /// If `d` was not declared, or with other types.
    pub fn entries<K: BroadcastKey, V: BroadcastValue>(
        &self,
        d: &BroadcastStateDescriptor<K, V>,
    ) -> Result<&'a BTreeMap<K, V>, UserError> {
        self.state.entries(d)
    }

    /// The value of `key` in map `d`.
    ///
    /// # Errors
    ///
    /// If `d` was not declared, or with other types.
    pub fn get<K: BroadcastKey, V: BroadcastValue>(
        &self,
        d: &BroadcastStateDescriptor<K, V>,
        key: &K,
    ) -> Result<Option<&'a V>, UserError> {
        self.state.get(d, key)
    }

    /// True if map `d` holds `key`.
    ///
    /// # Errors
    ///
    /// If `d` was not declared, or with other types.
    pub fn contains_key<K: BroadcastKey, V: BroadcastValue>(
        &self,
        d: &BroadcastStateDescriptor<K, V>,
        key: &K,
    ) -> Result<bool, UserError> {
        self.state.contains_key(d, key)
    }
}

/// What a broadcast operator snapshots besides keyed state, once per subtask.
#[derive(Serialize, Deserialize)]
struct BroadcastSnap {
    watermark: i64,
    #[serde(with = "crate::checkpoint::bytes::tagged")]
    maps: Vec<(String, Vec<u8>)>,
}

fn snapshot_broadcast(
    info: &TaskInfo,
    watermark: Watermark,
    state: &BroadcastState,
    out: &mut crate::checkpoint::types::OperatorState,
) -> Result<(), UserError> {
    out.push_union(
        info.subtask_index,
        &BroadcastSnap {
            watermark: watermark.0,
            maps: state.encode()?,
        },
    )
}

/// Every subtask's copy is the same: after rescaling any one does (the first).
fn restore_broadcast(
    restored: &crate::checkpoint::types::RestoredState,
    watermark: &mut Watermark,
    state: &mut BroadcastState,
) -> Result<(), UserError> {
    let Some(snap) = restored.own_union::<BroadcastSnap>(|all| {
        // The watermark: the minimum over the old subtasks; the maps: any copy.
        let min = all.iter().map(|s| s.watermark).min();
        all.into_iter().next().map(|mut s| {
            s.watermark = min.unwrap_or(s.watermark);
            s
        })
    })?
    else {
        return Ok(());
    };
    *watermark = Watermark(snap.watermark);
    state.restore(snap.maps)
}

fn missing_open() -> UserError {
    "broadcast process function called before open()".into()
}

// ----- non-keyed ----------------------------------------------------------------------------

/// What the broadcast side of a [`BroadcastProcessFunction`] sees: the record's context and
/// the writable broadcast state.
#[derive(Debug)]
pub struct BroadcastContext<'a> {
    base: Context<'a>,
    state: &'a mut BroadcastState,
}

impl BroadcastContext<'_> {
    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.base.timestamp()
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.base.current_watermark()
    }

    /// The current processing time (ms).
    pub fn current_processing_time(&self) -> Timestamp {
        self.base.current_processing_time()
    }

    /// This operator instance.
    pub fn task(&self) -> &TaskInfo {
        self.base.task()
    }

    /// The broadcast state, writable.
    pub fn broadcast_state(&mut self) -> &mut BroadcastState {
        self.state
    }
}

/// A function over a non-keyed stream connected to a broadcast stream (Flink's
/// `BroadcastProcessFunction`).
pub trait BroadcastProcessFunction<E, B, O>: Send + 'static {
    /// Processes a record of the non-broadcast input; the broadcast state is read-only.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: E,
        ctx: &mut Context<'_>,
        broadcast: ReadOnlyBroadcastState<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Processes a record of the broadcast input (every subtask gets each one); the broadcast
    /// state is writable. Update it the same way on every subtask (deterministically), so the
    /// copies stay equal.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_broadcast_element(
        &mut self,
        value: B,
        ctx: &mut BroadcastContext<'_>,
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
}

/// Runs a [`BroadcastProcessFunction`] over [`CoRecord`]`<E, B>`.
pub struct BroadcastProcessOperator<E, B, O, P> {
    function: P,
    info: Option<TaskInfo>,
    watermark: Watermark,
    state: BroadcastState,
    _types: PhantomData<fn(E, B) -> O>,
}

impl<E, B, O, P> BroadcastProcessOperator<E, B, O, P> {
    /// An operator running `function` with the broadcast state maps `specs`.
    pub fn new(function: P, specs: &[StateSpec]) -> Self {
        BroadcastProcessOperator {
            function,
            info: None,
            watermark: Watermark::MIN,
            state: BroadcastState::new(specs),
            _types: PhantomData,
        }
    }
}

impl<E, B, O, P> Operator for BroadcastProcessOperator<E, B, O, P>
where
    E: Data,
    B: Data,
    O: Data,
    P: BroadcastProcessFunction<E, B, O>,
{
    type In = CoRecord<E, B>;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.info = Some(info.clone());
        self.function.open(info)
    }

    fn process_batch(
        &mut self,
        batch: Batch<CoRecord<E, B>>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        let now = info.clock.now();
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            let mut base = Context::new(ts, self.watermark, now, info);
            match v {
                CoRecord::First(e) => {
                    self.function
                        .process_element(e, &mut base, self.state.read_only(), out)?;
                }
                CoRecord::Second(b) => {
                    let mut ctx = BroadcastContext {
                        base,
                        state: &mut self.state,
                    };
                    self.function.process_broadcast_element(b, &mut ctx, out)?;
                }
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, wm: Watermark, _: &mut Collector<O>) -> Result<(), UserError> {
        self.watermark = wm;
        Ok(())
    }

    /// The broadcast state and the watermark, on every subtask.
    fn snapshot_state(
        &mut self,
        _: crate::types::CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        let info = self.info.as_ref().ok_or_else(missing_open)?;
        snapshot_broadcast(info, self.watermark, &self.state, state)
    }

    fn restore_state(
        &mut self,
        restored: crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        restore_broadcast(&restored, &mut self.watermark, &mut self.state)
    }
}

// ----- keyed --------------------------------------------------------------------------------

/// What the broadcast side of a [`KeyedBroadcastProcessFunction`] sees: the record's
/// context, the writable broadcast state, and every key's state (Flink's
/// `KeyedBroadcastProcessFunction.Context`).
pub struct KeyedBroadcastContext<'a, K> {
    timestamp: Option<Timestamp>,
    now: Timestamp,
    info: &'a TaskInfo,
    core: &'a mut KeyedCore<K>,
    state: &'a mut BroadcastState,
}

impl<K> std::fmt::Debug for KeyedBroadcastContext<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBroadcastContext")
            .field("timestamp", &self.timestamp)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<K: crate::state::key::Key> KeyedBroadcastContext<'_, K> {
    /// The record's event timestamp, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The operator's current event-time watermark.
    pub fn current_watermark(&self) -> Watermark {
        self.core.watermark
    }

    /// The current processing time (ms).
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// This operator instance.
    pub fn task(&self) -> &TaskInfo {
        self.info
    }

    /// The broadcast state, writable.
    pub fn broadcast_state(&mut self) -> &mut BroadcastState {
        self.state
    }

    /// Calls `f` with every key of this subtask that has keyed state, and that key's state
    /// (Flink's `applyToKeyedState`): pass the access to the state handles registered in
    /// `open` to read, update or clear them. A key whose state ends up empty is dropped.
    ///
    /// # Errors
    ///
    /// The first error `f` returns (the keys after it are not visited).
    pub fn apply_to_keyed_state(
        &mut self,
        f: impl FnMut(&K, &mut StateAccess<'_>) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.core.for_each_key(self.now, f)
    }
}

/// A function over a keyed stream connected to a broadcast stream (Flink's
/// `KeyedBroadcastProcessFunction`): the keyed side has keyed state and timers and reads the
/// broadcast state; the broadcast side writes it and can visit every key's state.
pub trait KeyedBroadcastProcessFunction<K, E, B, O>: Send + 'static {
    /// Processes a record of the keyed input; the broadcast state is read-only.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_element(
        &mut self,
        value: E,
        ctx: &mut KeyedContext<'_, K>,
        broadcast: ReadOnlyBroadcastState<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Processes a record of the broadcast input (every subtask gets each one). Update the
    /// broadcast state the same way on every subtask, so the copies stay equal.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process_broadcast_element(
        &mut self,
        value: B,
        ctx: &mut KeyedBroadcastContext<'_, K>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// A timer of the current key fired; the broadcast state is read-only.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, K>,
        broadcast: ReadOnlyBroadcastState<'_>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let _ = (time, ctx, broadcast, out);
        Ok(())
    }

    /// Called once before the first record: register keyed state here.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        let _ = ctx;
        Ok(())
    }
}

/// Runs a [`KeyedBroadcastProcessFunction`] over [`CoRecord`]`<E, B>`; `key` keys the
/// elements.
pub struct KeyedBroadcastProcessOperator<E, B, O, S: KeySelector<E>, P> {
    key: S,
    function: P,
    core: KeyedCore<S::Key>,
    state: BroadcastState,
    _types: PhantomData<fn(E, B) -> O>,
}

impl<E, B, O, S: KeySelector<E>, P> KeyedBroadcastProcessOperator<E, B, O, S, P> {
    /// An operator running `function` with the broadcast state maps `specs`.
    pub fn new(key: S, function: P, specs: &[StateSpec]) -> Self {
        KeyedBroadcastProcessOperator {
            key,
            function,
            core: KeyedCore::new(),
            state: BroadcastState::new(specs),
            _types: PhantomData,
        }
    }
}

impl<E, B, O, S, P> Operator for KeyedBroadcastProcessOperator<E, B, O, S, P>
where
    E: Data,
    B: Data,
    O: Data,
    S: KeySelector<E>,
    P: KeyedBroadcastProcessFunction<S::Key, E, B, O>,
{
    type In = CoRecord<E, B>;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let function = &mut self.function;
        self.core.open(info, |ctx| function.open(ctx))
    }

    fn process_batch(
        &mut self,
        batch: Batch<CoRecord<E, B>>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let now = self.core.now()?;
        for (v, ts) in batch.into_iter_timestamped() {
            out.set_timestamp(ts);
            match v {
                CoRecord::First(e) => {
                    let key = self.key.key(&e);
                    let (f, state) = (&mut self.function, self.state.read_only());
                    self.core.with_context(&key, ts, None, now, |ctx| {
                        f.process_element(e, ctx, state, out)
                    })?;
                }
                CoRecord::Second(b) => {
                    let info = self.core.info.clone().ok_or_else(missing_open)?;
                    let mut ctx = KeyedBroadcastContext {
                        timestamp: ts,
                        now,
                        info: &info,
                        core: &mut self.core,
                        state: &mut self.state,
                    };
                    self.function.process_broadcast_element(b, &mut ctx, out)?;
                }
            }
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
        let (f, state) = (&mut self.function, self.state.read_only());
        self.core
            .fire_chunk(out, |time, ctx, out| f.on_timer(time, ctx, state, out))
    }

    /// Keyed state and timers per key group; the broadcast state and watermark on every
    /// subtask.
    fn snapshot_state(
        &mut self,
        id: crate::types::CheckpointId,
        state: &mut crate::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        self.core.snapshot_keys(id, state)?;
        let info = self.core.info.as_ref().ok_or_else(missing_open)?;
        snapshot_broadcast(info, self.core.watermark, &self.state, state)
    }

    fn restore_state(
        &mut self,
        restored: crate::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        restore_broadcast(&restored, &mut self.core.watermark, &mut self.state)?;
        self.core.restore_keys(&restored)
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: crate::types::CheckpointId,
    ) -> Result<(), UserError> {
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
        let (f, state) = (&mut self.function, self.state.read_only());
        self.core
            .fire_processing(now, out, |time, ctx, out| f.on_timer(time, ctx, state, out))
    }

    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let (f, state) = (&mut self.function, self.state.read_only());
        self.core
            .fire_all_processing_at_batch_end(out, |time, ctx, out| {
                f.on_timer(time, ctx, state, out)
            })
    }
}
