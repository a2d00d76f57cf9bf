//! Keyed state: `ValueState`, `ListState`, `MapState`, `ReducingState` and `AggregatingState`,
//! scoped to the current key, with Flink's basic time-to-live options.
//!
//! A function declares its state in `open()` by registering descriptors with the
//! [`StateRegistry`]; each registration returns a small handle (a slot number). While a record
//! or a timer of key `k` is processed, the operator hands the function the [`KeyState`] of `k`
//! (all of that key's state slots), and handles read and write through it. Keys live in a
//! [`KeyedTable`](crate::state::table::KeyedTable), one hash table per key group, which is what
//! checkpoints snapshot and what rescaling redistributes.
//!
//! # Time to live
//!
//! With [`StateTtlConfig`] a value (or a list element, or a map entry) expires `ttl` after it
//! was last written (or also read, with [`TtlUpdate::OnReadAndWrite`]), measured in processing
//! time. Expired values are never returned (Flink's `NeverReturnExpired`) and are removed when
//! they are next accessed.

use crate::error::UserError;
use crate::types::Data;
use crate::types::Timestamp;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// When a value's time to live restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlUpdate {
    /// On creation and every write (Flink's default `OnCreateAndWrite`).
    #[default]
    OnCreateAndWrite,
    /// Also on every read.
    OnReadAndWrite,
}

/// Time to live for keyed state (Flink's `StateTtlConfig` with `NeverReturnExpired`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::state::keyed_state::{StateTtlConfig, TtlUpdate};
/// use std::time::Duration;
/// let ttl = StateTtlConfig::new(Duration::from_secs(60)).update_on(TtlUpdate::OnReadAndWrite);
/// assert_eq!(ttl.ttl(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtlConfig {
    ttl: Duration,
    update: TtlUpdate,
}

impl StateTtlConfig {
    /// Values expire `ttl` after their last write.
    pub fn new(ttl: Duration) -> Self {
        StateTtlConfig {
            ttl,
            update: TtlUpdate::OnCreateAndWrite,
        }
    }

    /// When the time to live restarts.
    pub fn update_on(mut self, update: TtlUpdate) -> Self {
        self.update = update;
        self
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A stored value with the processing time of its last refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stamped<V> {
    value: V,
    at: i64,
}

/// Everything about TTL one access needs.
#[derive(Debug, Clone, Copy)]
struct Ttl {
    config: Option<StateTtlConfig>,
    now: i64,
}

impl Ttl {
    fn expired(&self, at: i64) -> bool {
        self.config
            .is_some_and(|c| self.now.saturating_sub(at) >= c.ms())
    }
    fn refresh_on_read(&self) -> bool {
        self.config
            .is_some_and(|c| c.update == TtlUpdate::OnReadAndWrite)
    }
}

/// A value a state slot can hold: any serializable type, kept typed while live.
///
/// Cells are `Clone` and `Sync` so that a checkpoint can freeze a key group (share it with
/// the thread that encodes it) and the subtask copies it only if it writes to it before the
/// encoding is done.
pub(crate) trait Cell: Any + Send + Sync {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error>;
    /// Appends the encoding to `out` (no allocation when `out` has room).
    fn encode_into(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_cell(&self) -> Box<dyn Cell>;
}

impl<T: Serialize + Any + Send + Sync + Clone> Cell for T {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }
    fn encode_into(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_extend(self, out)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_cell(&self) -> Box<dyn Cell> {
        Box::new(self.clone())
    }
}

/// One state value: live and typed, or the bytes of a restored snapshot, decoded on first
/// access by whoever knows the type (a state handle, a window function's `StateBag` call).
pub(crate) enum Slot {
    Live(Box<dyn Cell>),
    Raw(Vec<u8>),
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        match self {
            Slot::Live(cell) => Slot::Live(cell.clone_cell()),
            Slot::Raw(bytes) => Slot::Raw(bytes.clone()),
        }
    }
}

impl Slot {
    /// A live value.
    pub(crate) fn new<S: Serialize + Any + Send + Sync + Clone>(value: S) -> Self {
        Slot::Live(Box::new(value))
    }

    /// The value's bytes for a snapshot.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            Slot::Raw(bytes) => Ok(bytes.clone()),
            Slot::Live(cell) => cell.encode(),
        }
    }

    /// Appends the snapshot bytes to `out`.
    pub(crate) fn encode_into(&self, mut out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
        match self {
            Slot::Raw(bytes) => {
                out.extend_from_slice(bytes);
                Ok(out)
            }
            Slot::Live(cell) => cell.encode_into(out),
        }
    }

    /// The typed value, decoding restored bytes first; `what` names it in errors.
    pub(crate) fn typed<S: Serialize + DeserializeOwned + Any + Send + Sync + Clone>(
        &mut self,
        what: &dyn std::fmt::Display,
    ) -> Result<&mut S, UserError> {
        if let Slot::Raw(bytes) = self {
            let value: S = postcard::from_bytes(bytes).map_err(|e| {
                format!(
                    "restored {what} does not decode as {}: {e} (did its type change since the \
                     checkpoint?)",
                    std::any::type_name::<S>()
                )
            })?;
            *self = Slot::new(value);
        }
        let wrong = || -> UserError {
            format!(
                "{what} holds another type than {}",
                std::any::type_name::<S>()
            )
            .into()
        };
        match self {
            Slot::Live(cell) => cell.as_any_mut().downcast_mut::<S>().ok_or_else(wrong),
            Slot::Raw(_) => Err(wrong()),
        }
    }
}

/// All state slots of one key.
#[derive(Default, Clone)]
pub struct KeyState {
    slots: Vec<Option<Slot>>,
    /// Written (or cleared, or touched by TTL) since [`take_modified`](Self::take_modified):
    /// what incremental checkpoints count as a change of the key. Reads leave it alone.
    modified: bool,
}

/// Bounds of a type stored in keyed state: values are snapshotted with postcard.
pub trait StateValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> StateValue for T {}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("slots", &self.slots.iter().filter(|s| s.is_some()).count())
            .finish()
    }
}

impl KeyState {
    /// True if the key holds no state at all (the operator then drops the key).
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// True if the key's state was written since the last call, which resets it.
    pub fn take_modified(&mut self) -> bool {
        std::mem::take(&mut self.modified)
    }

    fn touch(&mut self) {
        self.modified = true;
    }

    fn slot<S: Serialize + DeserializeOwned + Any + Send + Sync + Clone>(
        &mut self,
        i: usize,
    ) -> Result<Option<&mut S>, UserError> {
        match self.slots.get_mut(i).and_then(Option::as_mut) {
            None => Ok(None),
            Some(slot) => slot.typed(&SlotName(i)).map(Some),
        }
    }

    fn slot_or_insert<S: Serialize + DeserializeOwned + Any + Send + Sync + Clone>(
        &mut self,
        i: usize,
        make: impl FnOnce() -> S,
    ) -> Result<&mut S, UserError> {
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.modified = true;
        let slot = self.slots[i].get_or_insert_with(|| Slot::new(make()));
        slot.typed(&SlotName(i))
    }

    /// The key's state for a snapshot: `(slot, bytes)` per slot that holds something.
    ///
    /// # Errors
    ///
    /// If a value cannot be serialized.
    pub fn encode(&self) -> Result<Vec<(usize, Vec<u8>)>, UserError> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(slot) = slot {
                out.push((
                    i,
                    slot.encode()
                        .map_err(|e| format!("cannot serialize keyed state slot {i}: {e}"))?,
                ));
            }
        }
        Ok(out)
    }

    /// The slots that hold something, with their index.
    pub(crate) fn filled(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Puts restored bytes into slot `i`; the handle decodes them on first access.
    pub fn restore_slot(&mut self, i: usize, bytes: Vec<u8>) {
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(Slot::Raw(bytes));
    }

    fn clear_slot(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            if s.is_some() {
                self.modified = true;
            }
            *s = None;
        }
    }
}

/// Names keyed state slot `.0` in errors.
struct SlotName(usize);

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "keyed state slot {}", self.0)
    }
}

/// The current key's state, as a function sees it while processing a record or a timer.
#[derive(Debug)]
pub struct StateAccess<'a> {
    pub(crate) state: &'a mut KeyState,
    pub(crate) now: Timestamp,
}

impl StateAccess<'_> {
    fn ttl(&self, config: Option<StateTtlConfig>) -> Ttl {
        Ttl {
            config,
            now: self.now.0,
        }
    }
}

/// Registers state descriptors in `open()`; each returns the handle to use afterwards.
#[derive(Debug, Default)]
pub struct StateRegistry {
    names: Vec<String>,
}

impl StateRegistry {
    fn register(&mut self, name: &str) -> Result<usize, UserError> {
        if self.names.iter().any(|n| n == name) {
            return Err(format!("keyed state {name:?} is registered twice").into());
        }
        self.names.push(name.to_string());
        Ok(self.names.len() - 1)
    }

    /// The registered names, in slot order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The slot of state `name`, if registered.
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Number of registered states.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if nothing was registered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A single value per key (Flink's `ValueState`).
    ///
    /// # Errors
    ///
    /// If a state of that name is already registered.
    pub fn value_state<V: StateValue>(
        &mut self,
        name: &str,
        ttl: Option<StateTtlConfig>,
    ) -> Result<ValueState<V>, UserError> {
        Ok(ValueState {
            slot: self.register(name)?,
            ttl,
            _v: PhantomData,
        })
    }

    /// A list per key (Flink's `ListState`).
    ///
    /// # Errors
    ///
    /// If a state of that name is already registered.
    pub fn list_state<V: StateValue>(
        &mut self,
        name: &str,
        ttl: Option<StateTtlConfig>,
    ) -> Result<ListState<V>, UserError> {
        Ok(ListState {
            slot: self.register(name)?,
            ttl,
            _v: PhantomData,
        })
    }

    /// A sorted map per key (Flink's `MapState`).
    ///
    /// # Errors
    ///
    /// If a state of that name is already registered.
    pub fn map_state<MK: Ord + StateValue, V: StateValue>(
        &mut self,
        name: &str,
        ttl: Option<StateTtlConfig>,
    ) -> Result<MapState<MK, V>, UserError> {
        Ok(MapState {
            slot: self.register(name)?,
            ttl,
            _v: PhantomData,
        })
    }

    /// A value per key that `reduce(old, new)` folds every added value into (Flink's
    /// `ReducingState`).
    ///
    /// # Errors
    ///
    /// If a state of that name is already registered.
    pub fn reducing_state<V: StateValue>(
        &mut self,
        name: &str,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        ttl: Option<StateTtlConfig>,
    ) -> Result<ReducingState<V>, UserError> {
        Ok(ReducingState {
            inner: ValueState {
                slot: self.register(name)?,
                ttl,
                _v: PhantomData,
            },
            reduce: Arc::new(reduce),
        })
    }

    /// An accumulator per key that added values are aggregated into (Flink's
    /// `AggregatingState`).
    ///
    /// # Errors
    ///
    /// If a state of that name is already registered.
    pub fn aggregating_state<T, A: AggregateFunction<T>>(
        &mut self,
        name: &str,
        function: A,
        ttl: Option<StateTtlConfig>,
    ) -> Result<AggregatingState<T, A>, UserError> {
        Ok(AggregatingState {
            inner: ValueState {
                slot: self.register(name)?,
                ttl,
                _v: PhantomData,
            },
            function,
            _t: PhantomData,
        })
    }
}

/// A handle to one value per key.
#[derive(Debug)]
pub struct ValueState<V> {
    slot: usize,
    ttl: Option<StateTtlConfig>,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for ValueState<V> {
    fn clone(&self) -> Self {
        ValueState {
            slot: self.slot,
            ttl: self.ttl,
            _v: PhantomData,
        }
    }
}

impl<V: StateValue> ValueState<V> {
    /// The current key's value, if set and not expired.
    ///
    /// # Errors
    ///
    /// If the slot holds another type (a wiring bug).
    pub fn value(&self, s: &mut StateAccess<'_>) -> Result<Option<V>, UserError> {
        let ttl = s.ttl(self.ttl);
        let Some(cell) = s.state.slot::<Stamped<V>>(self.slot)? else {
            return Ok(None);
        };
        if ttl.expired(cell.at) {
            s.state.clear_slot(self.slot);
            return Ok(None);
        }
        let value = cell.value.clone();
        if ttl.refresh_on_read() {
            cell.at = ttl.now;
            s.state.touch();
        }
        Ok(Some(value))
    }

    /// Sets the current key's value.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn update(&self, s: &mut StateAccess<'_>, value: V) -> Result<(), UserError> {
        let now = s.now.0;
        let cell = s.state.slot_or_insert(self.slot, || Stamped {
            value: value.clone(),
            at: now,
        })?;
        cell.value = value;
        cell.at = now;
        Ok(())
    }

    /// Changes the current key's value in place (starting from `V::default()` if unset or
    /// expired), without cloning it, and returns what `f` returns. For large values (sets,
    /// maps) that [`value`](Self::value) and [`update`](Self::update) would copy.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn modify<R>(
        &self,
        s: &mut StateAccess<'_>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R, UserError>
    where
        V: Default,
    {
        let ttl = s.ttl(self.ttl);
        let now = s.now.0;
        let cell = s.state.slot_or_insert(self.slot, || Stamped {
            value: V::default(),
            at: now,
        })?;
        if ttl.expired(cell.at) {
            cell.value = V::default();
        }
        cell.at = now;
        Ok(f(&mut cell.value))
    }

    /// Removes the current key's value.
    pub fn clear(&self, s: &mut StateAccess<'_>) {
        s.state.clear_slot(self.slot);
    }
}

/// A handle to one list per key.
#[derive(Debug)]
pub struct ListState<V> {
    slot: usize,
    ttl: Option<StateTtlConfig>,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for ListState<V> {
    fn clone(&self) -> Self {
        ListState {
            slot: self.slot,
            ttl: self.ttl,
            _v: PhantomData,
        }
    }
}

impl<V: StateValue> ListState<V> {
    /// The current key's list (unexpired elements, in insertion order).
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn get(&self, s: &mut StateAccess<'_>) -> Result<Vec<V>, UserError> {
        let ttl = s.ttl(self.ttl);
        let Some(list) = s.state.slot::<Vec<Stamped<V>>>(self.slot)? else {
            return Ok(Vec::new());
        };
        let before = list.len();
        list.retain(|e| !ttl.expired(e.at));
        let mut touched = list.len() != before;
        if ttl.refresh_on_read() {
            list.iter_mut().for_each(|e| e.at = ttl.now);
            touched = true;
        }
        let out = list.iter().map(|e| e.value.clone()).collect();
        if list.is_empty() {
            s.state.clear_slot(self.slot);
        }
        if touched {
            s.state.touch();
        }
        Ok(out)
    }

    /// Appends a value.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn add(&self, s: &mut StateAccess<'_>, value: V) -> Result<(), UserError> {
        let now = s.now.0;
        s.state
            .slot_or_insert(self.slot, Vec::<Stamped<V>>::new)?
            .push(Stamped { value, at: now });
        Ok(())
    }

    /// Replaces the list.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn update(&self, s: &mut StateAccess<'_>, values: Vec<V>) -> Result<(), UserError> {
        let now = s.now.0;
        if values.is_empty() {
            s.state.clear_slot(self.slot);
            return Ok(());
        }
        *s.state.slot_or_insert(self.slot, Vec::<Stamped<V>>::new)? = values
            .into_iter()
            .map(|value| Stamped { value, at: now })
            .collect();
        Ok(())
    }

    /// Removes the current key's list.
    pub fn clear(&self, s: &mut StateAccess<'_>) {
        s.state.clear_slot(self.slot);
    }
}

/// A handle to one sorted map per key.
#[derive(Debug)]
pub struct MapState<MK, V> {
    slot: usize,
    ttl: Option<StateTtlConfig>,
    _v: PhantomData<fn() -> (MK, V)>,
}

impl<MK, V> Clone for MapState<MK, V> {
    fn clone(&self) -> Self {
        MapState {
            slot: self.slot,
            ttl: self.ttl,
            _v: PhantomData,
        }
    }
}

type Map<MK, V> = BTreeMap<MK, Stamped<V>>;

impl<MK: Ord + StateValue, V: StateValue> MapState<MK, V> {
    /// The value under `key`, if present and not expired.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn get(&self, s: &mut StateAccess<'_>, key: &MK) -> Result<Option<V>, UserError> {
        let ttl = s.ttl(self.ttl);
        let Some(map) = s.state.slot::<Map<MK, V>>(self.slot)? else {
            return Ok(None);
        };
        let (out, touched) = match map.get_mut(key) {
            Some(e) if ttl.expired(e.at) => {
                map.remove(key);
                (None, true)
            }
            Some(e) => {
                let refresh = ttl.refresh_on_read();
                if refresh {
                    e.at = ttl.now;
                }
                (Some(e.value.clone()), refresh)
            }
            None => (None, false),
        };
        if touched {
            s.state.touch();
        }
        Ok(out)
    }

    /// Sets the value under `key`.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn put(&self, s: &mut StateAccess<'_>, key: MK, value: V) -> Result<(), UserError> {
        let now = s.now.0;
        s.state
            .slot_or_insert(self.slot, Map::<MK, V>::new)?
            .insert(key, Stamped { value, at: now });
        Ok(())
    }

    /// Changes the value of `key` in place (starting from `V::default()` if absent or
    /// expired), without cloning it; refreshes its time to live.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn modify(
        &self,
        s: &mut StateAccess<'_>,
        key: MK,
        f: impl FnOnce(&mut V),
    ) -> Result<(), UserError>
    where
        V: Default,
    {
        let ttl = s.ttl(self.ttl);
        let now = s.now.0;
        let map = s.state.slot_or_insert(self.slot, Map::<MK, V>::new)?;
        let entry = map.entry(key).or_insert_with(|| Stamped {
            value: V::default(),
            at: now,
        });
        if ttl.expired(entry.at) {
            entry.value = V::default();
        }
        entry.at = now;
        f(&mut entry.value);
        Ok(())
    }

    /// Removes `key` and returns its value, if set and not expired.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn take(&self, s: &mut StateAccess<'_>, key: &MK) -> Result<Option<V>, UserError> {
        let ttl = s.ttl(self.ttl);
        let Some(map) = s.state.slot::<Map<MK, V>>(self.slot)? else {
            return Ok(None);
        };
        let removed = map.remove(key);
        let empty = map.is_empty();
        if removed.is_some() {
            s.state.touch();
        }
        if empty {
            s.state.clear_slot(self.slot);
        }
        Ok(removed.filter(|e| !ttl.expired(e.at)).map(|e| e.value))
    }

    /// Removes `key`.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn remove(&self, s: &mut StateAccess<'_>, key: &MK) -> Result<(), UserError> {
        if let Some(map) = s.state.slot::<Map<MK, V>>(self.slot)? {
            let removed = map.remove(key).is_some();
            let empty = map.is_empty();
            if removed {
                s.state.touch();
            }
            if empty {
                s.state.clear_slot(self.slot);
            }
        }
        Ok(())
    }

    /// Every unexpired entry, in key order.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn entries(&self, s: &mut StateAccess<'_>) -> Result<Vec<(MK, V)>, UserError> {
        let ttl = s.ttl(self.ttl);
        let Some(map) = s.state.slot::<Map<MK, V>>(self.slot)? else {
            return Ok(Vec::new());
        };
        let before = map.len();
        map.retain(|_, e| !ttl.expired(e.at));
        let mut touched = map.len() != before;
        if ttl.refresh_on_read() {
            map.values_mut().for_each(|e| e.at = ttl.now);
            touched = true;
        }
        let out = map
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        if touched {
            s.state.touch();
        }
        Ok(out)
    }

    /// The unexpired entries whose keys fall in `range`, in key order (cloning only those).
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn range(
        &self,
        s: &mut StateAccess<'_>,
        range: impl std::ops::RangeBounds<MK>,
    ) -> Result<Vec<(MK, V)>, UserError> {
        let ttl = s.ttl(self.ttl);
        let Some(map) = s.state.slot::<Map<MK, V>>(self.slot)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let refresh = ttl.refresh_on_read();
        for (k, e) in map.range_mut(range) {
            if ttl.expired(e.at) {
                continue;
            }
            if refresh {
                e.at = ttl.now;
            }
            out.push((k.clone(), e.value.clone()));
        }
        if refresh && !out.is_empty() {
            s.state.touch();
        }
        Ok(out)
    }

    /// Removes the current key's map.
    pub fn clear(&self, s: &mut StateAccess<'_>) {
        s.state.clear_slot(self.slot);
    }
}

/// A handle to a reduced value per key.
pub struct ReducingState<V> {
    inner: ValueState<V>,
    reduce: Arc<dyn Fn(V, V) -> V + Send + Sync>,
}

impl<V> Clone for ReducingState<V> {
    fn clone(&self) -> Self {
        ReducingState {
            inner: self.inner.clone(),
            reduce: self.reduce.clone(),
        }
    }
}

impl<V> std::fmt::Debug for ReducingState<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingState")
            .field("slot", &self.inner.slot)
            .finish()
    }
}

impl<V: StateValue> ReducingState<V> {
    /// The reduced value.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn get(&self, s: &mut StateAccess<'_>) -> Result<Option<V>, UserError> {
        self.inner.value(s)
    }

    /// Folds `value` in.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn add(&self, s: &mut StateAccess<'_>, value: V) -> Result<(), UserError> {
        let next = match self.inner.value(s)? {
            Some(old) => (self.reduce)(old, value),
            None => value,
        };
        self.inner.update(s, next)
    }

    /// Removes the current key's value.
    pub fn clear(&self, s: &mut StateAccess<'_>) {
        self.inner.clear(s);
    }
}

/// A handle to an accumulator per key.
#[derive(Debug)]
pub struct AggregatingState<T, A: AggregateFunction<T>> {
    inner: ValueState<A::Acc>,
    function: A,
    _t: PhantomData<fn(T)>,
}

impl<T, A: AggregateFunction<T>> Clone for AggregatingState<T, A> {
    fn clone(&self) -> Self {
        AggregatingState {
            inner: self.inner.clone(),
            function: self.function.clone(),
            _t: PhantomData,
        }
    }
}

impl<T, A: AggregateFunction<T>> AggregatingState<T, A> {
    /// The aggregate's current result.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn get(&mut self, s: &mut StateAccess<'_>) -> Result<Option<A::Out>, UserError> {
        Ok(self
            .inner
            .value(s)?
            .map(|acc| self.function.get_result(&acc)))
    }

    /// Adds a value.
    ///
    /// # Errors
    ///
    /// If the slot holds another type.
    pub fn add(&mut self, s: &mut StateAccess<'_>, value: T) -> Result<(), UserError> {
        let mut acc = match self.inner.value(s)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.function.add(value, &mut acc);
        self.inner.update(s, acc)
    }

    /// Removes the current key's accumulator.
    pub fn clear(&self, s: &mut StateAccess<'_>) {
        self.inner.clear(s);
    }
}

/// An incremental aggregation with an accumulator (Flink's `AggregateFunction`).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::AggregateFunction;
/// /// Average of the values.
/// #[derive(Clone)]
/// struct Avg;
/// impl AggregateFunction<i64> for Avg {
///     type Acc = (i64, u64);
///     type Out = f64;
///     fn create_accumulator(&mut self) -> (i64, u64) { (0, 0) }
///     fn add(&mut self, v: i64, acc: &mut (i64, u64)) { acc.0 += v; acc.1 += 1; }
///     fn get_result(&mut self, acc: &(i64, u64)) -> f64 { acc.0 as f64 / acc.1 as f64 }
///     fn merge(&mut self, a: &mut (i64, u64), b: (i64, u64)) { a.0 += b.0; a.1 += b.1; }
/// }
/// let mut avg = Avg;
/// let mut acc = avg.create_accumulator();
/// avg.add(1, &mut acc);
/// avg.add(2, &mut acc);
/// assert_eq!(avg.get_result(&acc), 1.5);
/// ```
pub trait AggregateFunction<T>: Clone + Send + Sync + 'static {
    /// The accumulator.
    type Acc: Data;
    /// The result.
    type Out;
    /// A fresh accumulator.
    fn create_accumulator(&mut self) -> Self::Acc;
    /// Adds a record.
    fn add(&mut self, value: T, acc: &mut Self::Acc);
    /// The result of an accumulator.
    fn get_result(&mut self, acc: &Self::Acc) -> Self::Out;
    /// Merges `b` into `a` (session windows).
    fn merge(&mut self, a: &mut Self::Acc, b: Self::Acc);
}
