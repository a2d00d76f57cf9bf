//! What operators, sources and sinks put into a checkpoint, and what they get back on restore.
//!
//! An operator instance writes an [`OperatorState`]:
//!
//! * **keyed state per key group** ([`put_group`](OperatorState::put_group)): keyed state and
//!   timers of the keys in one group, as one blob. On restore — at any parallelism — each
//!   instance gets the groups of its [`KeyGroupRange`](crate::state::keygroup::KeyGroupRange).
//! * **list items** ([`push_item`](OperatorState::push_item)): operator (non-keyed) state such
//!   as a source's splits or a sink's pending transactions. On restore the items of every old
//!   instance are split evenly over the new ones (Flink's even-split redistribution).
//! * **union items** ([`push_union`](OperatorState::push_union)): every new instance gets every
//!   old instance's union items, with the old instance's index (for a watermark, say).
//!
//! Values are serialized with postcard ([`encode`], [`decode`]); the snapshot store adds a
//! version and checksums around them.
//!
//! **Asynchronous snapshots.** Keyed state can be handed over *unencoded*:
//! [`put_groups_later`](OperatorState::put_groups_later) takes a closure over a frozen view of
//! the state ([`FrozenTable`](crate::state::table::FrozenTable)) that produces the key group
//! blobs. The subtask's pause at the barrier ends once every operator has frozen its state;
//! the closures run on a blocking thread, and the subtask acknowledges the checkpoint when
//! they are done.

use crate::checkpoint::coordinator::CheckpointSettings;
use crate::checkpoint::restart::RestartStrategy;
use crate::checkpoint::snapshot::{BlobEntry, SnapshotStore};
use crate::dataplane::message::CheckpointKind;
use crate::error::UserError;
use crate::types::{CheckpointId, KeyGroup};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Serializes a state value.
///
/// # Errors
///
/// A message naming the type if it cannot be serialized.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, UserError> {
    postcard::to_allocvec(value).map_err(|e| {
        format!(
            "cannot serialize state of type `{}`: {e}",
            std::any::type_name::<T>()
        )
        .into()
    })
}

/// Reads a state value written by [`encode`].
///
/// # Errors
///
/// A message naming the type if the bytes do not hold one.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, UserError> {
    postcard::from_bytes(bytes).map_err(|e| {
        format!(
            "cannot read state of type `{}` from a snapshot: {e}",
            std::any::type_name::<T>()
        )
        .into()
    })
}

/// The state of one operator instance in a checkpoint. See the [module docs](self).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::checkpoint::types::OperatorState;
/// use actorflow_runtime::KeyGroup;
/// let mut s = OperatorState::default();
/// s.put_group(KeyGroup(3), &vec![("a".to_string(), 5u64)]).unwrap();
/// s.push_item(&42u64).unwrap();
/// let groups: Vec<(KeyGroup, Vec<(String, u64)>)> = s.groups().unwrap();
/// assert_eq!(groups, vec![(KeyGroup(3), vec![("a".to_string(), 5)])]);
/// assert_eq!(s.items::<u64>().unwrap(), vec![42]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorState {
    /// Keyed state by key group.
    #[serde(with = "crate::checkpoint::bytes::map")]
    pub keyed: BTreeMap<KeyGroup, Vec<u8>>,
    /// List items, redistributed evenly.
    #[serde(with = "crate::checkpoint::bytes::vec_of")]
    pub items: Vec<Vec<u8>>,
    /// Union items with the index of the instance that wrote them; every instance gets all.
    #[serde(with = "crate::checkpoint::bytes::tagged")]
    pub union: Vec<(usize, Vec<u8>)>,
    /// Keyed state kept incrementally (see [`incremental`](crate::checkpoint::incremental)):
    /// per key group, the chunks to read in order — a full base, then deltas — each a blob
    /// of the checkpoint that wrote it.
    pub chains: BTreeMap<KeyGroup, Vec<BlobEntry>>,
    /// Keyed state still to be encoded (asynchronous snapshots); never stored.
    #[serde(skip)]
    pending: Pending,
    /// Chunks this snapshot wrote, to be stored as blobs beside it; never in the state blob.
    #[serde(skip)]
    pub(crate) new_chunks: Vec<(BlobEntry, Vec<u8>)>,
    /// On restore: the bytes of each key group's chain, in order.
    #[serde(skip)]
    pub layers: BTreeMap<KeyGroup, Vec<Vec<u8>>>,
    /// How this snapshot may be written (set by the subtask before `snapshot_state`).
    #[serde(skip)]
    context: SnapshotContext,
}

/// How an operator may write its keyed state in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotContext {
    /// Incremental checkpoints are on and this is a checkpoint (not a savepoint, not a final
    /// state): unchanged key groups may be listed from earlier checkpoints.
    pub incremental: bool,
    /// Prefix of the names of the chunks this operator writes (unique per operator).
    pub chunk_prefix: String,
}

/// What encoding frozen keyed state produces, off the subtask.
#[derive(Debug, Default)]
pub struct KeyedParts {
    /// Key groups stored whole, inside the subtask's state blob.
    pub groups: Vec<(KeyGroup, Vec<u8>)>,
    /// Key groups kept as chains of chunks.
    pub chains: Vec<(KeyGroup, Vec<BlobEntry>)>,
    /// The chunks written for this snapshot (each also named by a chain).
    pub chunks: Vec<(BlobEntry, Vec<u8>)>,
}

impl From<Vec<(KeyGroup, Vec<u8>)>> for KeyedParts {
    fn from(groups: Vec<(KeyGroup, Vec<u8>)>) -> Self {
        KeyedParts {
            groups,
            ..KeyedParts::default()
        }
    }
}

/// Produces key group blobs from frozen state, off the subtask.
type GroupsLater = Box<dyn FnOnce() -> Result<KeyedParts, UserError> + Send>;

/// The not yet encoded parts of an [`OperatorState`]. Clones share them (whoever finishes
/// first encodes them), and two states compare equal only if they share the same parts.
#[derive(Clone, Default)]
struct Pending(Option<Arc<std::sync::Mutex<Vec<GroupsLater>>>>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .0
            .as_ref()
            .and_then(|p| p.lock().ok().map(|p| p.len()))
            .unwrap_or(0);
        write!(f, "Pending({n})")
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Pending {}

impl OperatorState {
    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
            && self.items.is_empty()
            && self.union.is_empty()
            && self.chains.is_empty()
            && self.layers.is_empty()
            && self.pending.0.is_none()
    }

    /// How this snapshot may be written.
    pub fn context(&self) -> &SnapshotContext {
        &self.context
    }

    /// Sets how this snapshot may be written (the subtask does, before `snapshot_state`).
    pub fn set_context(&mut self, context: SnapshotContext) {
        self.context = context;
    }

    /// An error if chains were not resolved into [`layers`](Self::layers) (their state would
    /// be missing).
    ///
    /// # Errors
    ///
    /// Naming the first such key group.
    pub fn check_resolved(&self) -> Result<(), UserError> {
        match self.chains.keys().next() {
            None => Ok(()),
            Some(kg) => Err(format!(
                "key group {kg} is kept in chunks that were not read (resolve_chains); its state would be lost"
            )
            .into()),
        }
    }

    /// Takes the chunks this snapshot wrote (to store them as blobs).
    pub fn take_new_chunks(&mut self) -> Vec<(BlobEntry, Vec<u8>)> {
        std::mem::take(&mut self.new_chunks)
    }

    /// Replaces every chain by the bytes of its chunks, found in `blobs` by name, for a
    /// restore ([`layers`](Self::layers)).
    ///
    /// # Errors
    ///
    /// If a chunk is missing or fails its length or checksum.
    pub fn resolve_chains(&mut self, blobs: &BTreeMap<String, Vec<u8>>) -> Result<(), UserError> {
        for (kg, chain) in std::mem::take(&mut self.chains) {
            let mut layers = Vec::with_capacity(chain.len());
            for e in chain {
                let bytes = blobs.get(&e.name).ok_or_else(|| {
                    format!(
                        "key group {kg}: chunk {:?} (of checkpoint {}) is missing",
                        e.name, e.owner
                    )
                })?;
                if bytes.len() as u64 != e.len || crc32fast::hash(bytes) != e.crc32 {
                    return Err(format!(
                        "key group {kg}: chunk {:?} (of checkpoint {}) fails its checksum",
                        e.name, e.owner
                    )
                    .into());
                }
                layers.push(bytes.clone());
            }
            self.layers.insert(kg, layers);
        }
        Ok(())
    }

    /// Adds key group blobs that `encode` produces later, on another thread (see the
    /// [module docs](self)). `encode` must read only state frozen for this checkpoint.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow_runtime::checkpoint::types::{encode, OperatorState};
    /// use actorflow_runtime::KeyGroup;
    /// let mut s = OperatorState::default();
    /// s.put_groups_later(|| Ok(vec![(KeyGroup(1), encode(&7u64)?)]));
    /// assert!(s.has_pending());
    /// s.finish_pending().unwrap();
    /// assert_eq!(s.groups::<u64>().unwrap(), vec![(KeyGroup(1), 7)]);
    /// ```
    pub fn put_groups_later(
        &mut self,
        encode: impl FnOnce() -> Result<Vec<(KeyGroup, Vec<u8>)>, UserError> + Send + 'static,
    ) {
        self.put_parts_later(move || encode().map(KeyedParts::from));
    }

    /// Like [`put_groups_later`](Self::put_groups_later), for an encoding that may also keep
    /// key groups as chains of chunks (incremental checkpoints).
    pub fn put_parts_later(
        &mut self,
        encode: impl FnOnce() -> Result<KeyedParts, UserError> + Send + 'static,
    ) {
        let parts = self
            .pending
            .0
            .get_or_insert_with(|| Arc::new(std::sync::Mutex::new(Vec::new())));
        if let Ok(mut parts) = parts.lock() {
            parts.push(Box::new(encode));
        }
    }

    /// True if [`put_groups_later`](Self::put_groups_later) parts are still to be encoded.
    pub fn has_pending(&self) -> bool {
        self.pending.0.is_some()
    }

    /// Encodes the parts added by [`put_groups_later`](Self::put_groups_later) (this can
    /// take long: call it off the subtask).
    ///
    /// # Errors
    ///
    /// The first error of an encoding closure.
    pub fn finish_pending(&mut self) -> Result<(), UserError> {
        let Some(parts) = self.pending.0.take() else {
            return Ok(());
        };
        let parts = match parts.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Err("a state encoding thread panicked".into()),
        };
        for part in parts {
            let out = part()?;
            self.keyed.extend(out.groups);
            self.chains.extend(out.chains);
            self.new_chunks.extend(out.chunks);
        }
        Ok(())
    }

    /// Stores the keyed state of key group `kg`.
    ///
    /// # Errors
    ///
    /// If `value` cannot be serialized.
    pub fn put_group<T: Serialize>(&mut self, kg: KeyGroup, value: &T) -> Result<(), UserError> {
        self.keyed.insert(kg, encode(value)?);
        Ok(())
    }

    /// Every key group's state, in group order.
    ///
    /// # Errors
    ///
    /// If a group's bytes do not hold a `T`.
    pub fn groups<T: DeserializeOwned>(&self) -> Result<Vec<(KeyGroup, T)>, UserError> {
        self.keyed
            .iter()
            .map(|(kg, b)| Ok((*kg, decode(b)?)))
            .collect()
    }

    /// Appends a list item.
    ///
    /// # Errors
    ///
    /// If `value` cannot be serialized.
    pub fn push_item<T: Serialize>(&mut self, value: &T) -> Result<(), UserError> {
        self.items.push(encode(value)?);
        Ok(())
    }

    /// Every list item.
    ///
    /// # Errors
    ///
    /// If an item does not hold a `T`.
    pub fn items<T: DeserializeOwned>(&self) -> Result<Vec<T>, UserError> {
        self.items.iter().map(|b| decode(b)).collect()
    }

    /// Appends a union item written by instance `index`.
    ///
    /// # Errors
    ///
    /// If `value` cannot be serialized.
    pub fn push_union<T: Serialize>(&mut self, index: usize, value: &T) -> Result<(), UserError> {
        self.union.push((index, encode(value)?));
        Ok(())
    }

    /// Every union item with the index of the instance that wrote it.
    ///
    /// # Errors
    ///
    /// If an item does not hold a `T`.
    pub fn union_items<T: DeserializeOwned>(&self) -> Result<Vec<(usize, T)>, UserError> {
        self.union
            .iter()
            .map(|(i, b)| Ok((*i, decode(b)?)))
            .collect()
    }
}

/// Gathers a keyed operator's snapshot: one entry per key, grouped by key group, written as
/// one keyed blob per group (what a restore at another parallelism moves around).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::checkpoint::types::{KeyedSnapshot, OperatorState};
/// let mut snap: KeyedSnapshot<String, Vec<u64>> = KeyedSnapshot::new(128);
/// snap.entry(&"a".to_string(), Vec::new).push(1);
/// snap.entry(&"a".to_string(), Vec::new).push(2);
/// let mut state = OperatorState::default();
/// snap.write(&mut state).unwrap();
/// let groups: Vec<(_, Vec<(String, Vec<u64>)>)> = state.groups().unwrap();
/// assert_eq!(groups[0].1, vec![("a".to_string(), vec![1, 2])]);
/// ```
#[derive(Debug)]
pub struct KeyedSnapshot<K, V> {
    max_parallelism: u32,
    groups: BTreeMap<KeyGroup, Vec<(K, V)>>,
    index: std::collections::HashMap<K, (KeyGroup, usize)>,
}

impl<K: crate::state::key::Key, V> KeyedSnapshot<K, V> {
    /// An empty snapshot for an operator with `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        KeyedSnapshot {
            max_parallelism,
            groups: BTreeMap::new(),
            index: std::collections::HashMap::new(),
        }
    }

    /// The entry of `key`, created by `make` the first time.
    pub fn entry(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        let (kg, i) = match self.index.get(key) {
            Some(at) => *at,
            None => {
                let kg = crate::state::keygroup::assign_to_key_group(key, self.max_parallelism);
                let list = self.groups.entry(kg).or_default();
                list.push((key.clone(), make()));
                let at = (kg, list.len() - 1);
                self.index.insert(key.clone(), at);
                at
            }
        };
        let list = self.groups.entry(kg).or_default();
        &mut list[i].1
    }

    /// The `(key, entry)` pairs of restored keyed state written by [`write`](Self::write)
    /// (every key group the restored instance owns).
    ///
    /// # Errors
    ///
    /// If a group does not decode as such pairs.
    pub fn read(state: &OperatorState) -> Result<Vec<(K, V)>, UserError>
    where
        V: DeserializeOwned,
    {
        let groups: Vec<(KeyGroup, Vec<(K, V)>)> = state.groups()?;
        Ok(groups.into_iter().flat_map(|(_, list)| list).collect())
    }

    /// Writes one keyed blob per key group: the `(key, entry)` pairs of that group.
    ///
    /// # Errors
    ///
    /// If an entry cannot be serialized.
    pub fn write(self, state: &mut OperatorState) -> Result<(), UserError>
    where
        V: Serialize,
    {
        for (kg, list) in &self.groups {
            state.put_group(*kg, list)?;
        }
        Ok(())
    }

    /// The blobs [`write`](Self::write) would write, one per key group, for
    /// [`OperatorState::put_groups_later`].
    ///
    /// # Errors
    ///
    /// If an entry cannot be serialized.
    pub fn into_groups(self) -> Result<Vec<(KeyGroup, Vec<u8>)>, UserError>
    where
        V: Serialize,
    {
        self.groups
            .iter()
            .map(|(kg, list)| Ok((*kg, encode(list)?)))
            .collect()
    }
}

/// What an operator instance gets back on restore: its share of the state, and whether the
/// parallelism is the one the checkpoint was taken at (then `union` items of its own old index
/// are exactly its own state).
#[derive(Debug, Clone, Default)]
pub struct RestoredState {
    /// The state: the key groups of this instance's range, its share of the list items, every
    /// union item.
    pub state: OperatorState,
    /// This instance's index if the parallelism did not change, `None` after rescaling.
    pub same_index: Option<usize>,
}

impl RestoredState {
    /// The union item written by this same instance before the restore, or, after rescaling,
    /// the one `pick` chooses from all of them.
    ///
    /// # Errors
    ///
    /// If an item does not hold a `T`.
    pub fn own_union<T: DeserializeOwned>(
        &self,
        pick: impl FnOnce(Vec<T>) -> Option<T>,
    ) -> Result<Option<T>, UserError> {
        let all = self.state.union_items::<T>()?;
        match self.same_index {
            Some(i) => Ok(all.into_iter().find(|(j, _)| *j == i).map(|(_, v)| v)),
            None => Ok(pick(all.into_iter().map(|(_, v)| v).collect())),
        }
    }
}

/// Something that happened to a running job, for a [`JobListener`] (a metrics file, a demo
/// that narrates recovery).
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A checkpoint or savepoint was stored and published.
    CheckpointCompleted {
        /// Its id.
        id: CheckpointId,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// True if any subtask took it unaligned (configured so, or after the alignment
        /// timeout).
        unaligned: bool,
        /// From the trigger to the last acknowledgement, in ms.
        duration_ms: u64,
        /// The longest alignment of any subtask (first barrier to snapshot), in ms.
        alignment_ms: u64,
        /// The longest pause of any subtask at the barrier (the synchronous part of its
        /// snapshot: freezing state, pre-committing sinks), in ms.
        sync_ms: u64,
        /// The longest asynchronous part of any subtask's snapshot (encoding the frozen
        /// state off the subtask), in ms.
        async_ms: u64,
        /// Bytes written by this checkpoint.
        bytes: u64,
        /// Bytes it lists from earlier checkpoints instead of writing them again (the final
        /// state of finished subtasks); the checkpoint's full size is `bytes + shared_bytes`.
        shared_bytes: u64,
        /// True for the final checkpoint after end of input.
        is_final: bool,
    },
    /// A checkpoint was given up.
    CheckpointAborted {
        /// Its id.
        id: CheckpointId,
        /// Why, in words.
        reason: String,
    },
    /// A failure: the failed pipelined region (the whole job if it is connected) restarts
    /// from `from_checkpoint` (or from the beginning) after `delay_ms`.
    Restart {
        /// Restarts so far, this one included.
        attempt: u32,
        /// The root cause.
        cause: String,
        /// The checkpoint the job restarts from.
        from_checkpoint: Option<CheckpointId>,
        /// The restart strategy's delay, in ms.
        delay_ms: u64,
        /// The generation the restarted subtasks run as.
        generation: u64,
    },
    /// Subtasks were deployed with the state of `checkpoint` (at start with a restore, or
    /// after a restart).
    Restored {
        /// The checkpoint, `None` for a fresh start.
        checkpoint: Option<CheckpointId>,
        /// The generation now running.
        generation: u64,
    },
}

/// Receives [`JobEvent`]s, on the coordinator's or supervisor's task: keep it short.
pub type JobListener = Arc<dyn Fn(&JobEvent) + Send + Sync>;

/// Where a job's initial state comes from.
#[derive(Clone)]
pub enum RestoreFrom {
    /// The newest completed checkpoint of the job's own store
    /// ([`newest_completed`](crate::checkpoint::snapshot::newest_completed)). The job refuses
    /// to start if there is none or the store is damaged: asking to restore never turns into
    /// a fresh start.
    Latest,
    /// As [`Latest`](Self::Latest), but a store that never completed a checkpoint (no head
    /// record, no checkpoints: the job's first run died before its first checkpoint) starts
    /// the job fresh, with a WARN. A damaged store still refuses. For restart scripts that
    /// always pass a restore.
    LatestOrFresh,
    /// This checkpoint of the job's own store. Restoring one older than the newest completed
    /// checkpoint is allowed (it is how a user goes back past a damaged one), with a WARN:
    /// output committed after it may be produced again.
    Checkpoint(CheckpointId),
    /// The newest completed checkpoint or savepoint of another store (a savepoint
    /// directory), by the same rules as [`Latest`](Self::Latest).
    Store(Arc<dyn SnapshotStore>),
}

impl std::fmt::Debug for RestoreFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreFrom::Latest => f.write_str("Latest"),
            RestoreFrom::LatestOrFresh => f.write_str("LatestOrFresh"),
            RestoreFrom::Checkpoint(id) => write!(f, "Checkpoint({id})"),
            RestoreFrom::Store(_) => f.write_str("Store(..)"),
        }
    }
}

/// Checkpointing of a job: the coordinator's settings, where snapshots go, how failures
/// restart the job, and where its initial state comes from.
#[derive(Clone)]
pub struct CheckpointConfig {
    /// Interval, mode, alignment, timeouts, retention.
    pub settings: CheckpointSettings,
    /// Where checkpoints are stored (default: in memory, lost with the process).
    pub store: Arc<dyn SnapshotStore>,
    /// How failures restart the job (default: exponential backoff with jitter).
    pub restart: RestartStrategy,
    /// Start from a checkpoint or savepoint instead of from scratch.
    pub restore: Option<RestoreFrom>,
    /// Start even if the snapshot holds state of an operator the job no longer has (Flink's
    /// `--allowNonRestoredState`); otherwise that refuses to start.
    pub allow_non_restored_state: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            settings: CheckpointSettings::default(),
            store: Arc::new(crate::checkpoint::snapshot::MemoryStore::new()),
            restart: RestartStrategy::default(),
            restore: None,
            allow_non_restored_state: false,
        }
    }
}

impl std::fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointConfig")
            .field("settings", &self.settings)
            .field("restart", &self.restart)
            .field("restore", &self.restore)
            .field("allow_non_restored_state", &self.allow_non_restored_state)
            .finish_non_exhaustive()
    }
}
