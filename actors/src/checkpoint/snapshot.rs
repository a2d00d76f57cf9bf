//! Where checkpoints live: the [`SnapshotStore`] trait, an in-memory store and the default
//! [`SledStore`] (embedded, at a path), and [`latest_valid`], which finds the checkpoint to
//! restore from.
//!
//! # The guarantees a store gives
//!
//! * **Blobs first, manifest last.** A checkpoint's state is written as named blobs
//!   ([`put_blob`](SnapshotStore::put_blob)), invisible until its [`Manifest`] is committed
//!   ([`commit`](SnapshotStore::commit)) — one atomic write, durable when `commit` returns. A
//!   crash before that leaves only orphan blobs, never a half checkpoint.
//! * **Everything is checked on the way back.** The manifest carries a format version, the
//!   length and CRC-32 of every blob, and its own CRC-32. [`load`](SnapshotStore::load) verifies
//!   all of them; a checkpoint that fails is reported, not restored. sled 0.34 is old and a
//!   crash may leave a torn tail, so this is expected to happen: [`latest_valid`] then logs the
//!   problem and falls back to the previous complete checkpoint.
//! * Checkpoint ids only increase; [`list`](SnapshotStore::list) gives the committed ones,
//!   newest first.
//! * **The store knows what it completed.** Besides the checkpoints, a store keeps a
//!   [`HeadRecord`] — the id and CRC-32 of the newest completed checkpoint's manifest — written
//!   (and, for durable stores, fsynced) by [`commit`](SnapshotStore::commit) after the manifest.
//!   It lives apart from the checkpoints, so a store that lost data (sled's recovery truncating
//!   its log, a deleted file, a torn write) is recognised as **damaged**, never taken for an
//!   empty one: [`newest_completed`] refuses to restore anything older than the head record
//!   names, because sinks may already have committed that checkpoint's output.
//!
//! # What survives what
//!
//! * A process crash (`kill -9`): every checkpoint whose `commit` returned, with either store.
//! * A machine crash or power loss: with [`SledStore`], every checkpoint whose `commit`
//!   returned — sled's `flush` writes its files, the store then `fsync`s every file and
//!   directory of the database, and only then replaces the head record (a temporary file
//!   written, fsynced, renamed, and the directory fsynced). [`MemoryStore`] keeps nothing.
//! * Damage: detected by the checksums and the head record, reported as an error naming what
//!   is wrong and how to go on; never a silent fresh start.

use crate::dataplane::message::CheckpointKind;
use crate::types::CheckpointId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The snapshot format written by this version. A manifest of another version is refused with
/// an error naming both.
pub const FORMAT_VERSION: u32 = 3;

const MANIFEST_MAGIC: &[u8; 4] = b"AFCK";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage itself failed (I/O, sled).
    #[error("snapshot store {path}: {message}")]
    Io {
        /// The store's location.
        path: String,
        /// What failed.
        message: String,
    },
    /// A checkpoint is incomplete or damaged.
    #[error("checkpoint {id} is unusable: {reason}")]
    Corrupt {
        /// The checkpoint.
        id: CheckpointId,
        /// What is wrong.
        reason: String,
    },
    /// No such checkpoint.
    #[error("checkpoint {0} does not exist")]
    Missing(CheckpointId),
    /// The store lost or damaged what it had completed: restoring from it could repeat or lose
    /// output. The message says what was found and how to go on.
    #[error("the checkpoint store {store} is damaged: {message}")]
    Damaged {
        /// The store's location.
        store: String,
        /// What was found, and how to proceed.
        message: String,
    },
}

const HEAD_MAGIC: &[u8; 4] = b"AFHD";

/// A store's record of its newest completed checkpoint: the checkpoint's id and the CRC-32 of
/// its encoded manifest. Written by [`SnapshotStore::commit`] after the manifest, kept apart
/// from the checkpoints, so that losing a completed checkpoint is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRecord {
    /// The newest completed checkpoint.
    pub id: CheckpointId,
    /// The CRC-32 that [`Manifest::encode`] writes at the end of its manifest.
    pub manifest_crc32: u32,
}

impl HeadRecord {
    /// The record of a store that has completed no checkpoint yet (id 0: real ids start at
    /// 1). A durable store writes it when it is created, so that a process killed between
    /// its first manifest and its first head record leaves a store recognisably *new* (that
    /// manifest is complete and restored, as any newer than the head record), while a store
    /// whose head record was deleted still reads as damaged.
    pub const NONE_YET: HeadRecord = HeadRecord {
        id: CheckpointId(0),
        manifest_crc32: 0,
    };

    /// The record naming `manifest`.
    ///
    /// # Errors
    ///
    /// If the manifest cannot be encoded.
    pub fn of(manifest: &Manifest) -> Result<Self, StoreError> {
        // The manifest's own checksum, over everything before it. (Not a CRC of the whole
        // encoding: a CRC over data followed by its own CRC is the same constant for every
        // input.)
        let bytes = manifest.encode()?;
        let crc = bytes.len().checked_sub(4).map_or(0, |at| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        });
        Ok(HeadRecord {
            id: manifest.id,
            manifest_crc32: crc,
        })
    }

    /// 20 bytes: magic, id, manifest CRC-32, CRC-32 of the first 16 bytes.
    pub fn encode(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..4].copy_from_slice(HEAD_MAGIC);
        out[4..12].copy_from_slice(&self.id.0.to_le_bytes());
        out[12..16].copy_from_slice(&self.manifest_crc32.to_le_bytes());
        let crc = crc32fast::hash(&out[..16]);
        out[16..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a record written by [`encode`](Self::encode).
    ///
    /// # Errors
    ///
    /// A description of what is wrong: wrong length or magic, or a checksum mismatch.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Ok(b) = <&[u8; 20]>::try_from(bytes) else {
            return Err(format!("it has {} bytes instead of 20", bytes.len()));
        };
        if &b[..4] != HEAD_MAGIC {
            return Err("it is not a head record".into());
        }
        let le4 = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        if crc32fast::hash(&b[..16]) != le4(&b[16..]) {
            return Err("its checksum does not match".into());
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[4..12]);
        Ok(HeadRecord {
            id: CheckpointId(u64::from_le_bytes(id)),
            manifest_crc32: le4(&b[12..16]),
        })
    }
}

/// One blob of a checkpoint, as its manifest records it.
///
/// A blob is stored under the checkpoint that wrote it, its `owner`. A later checkpoint may
/// list the same entry again instead of writing the bytes a second time (a **shared** blob,
/// for example the final state of a subtask that finished): the store then keeps the bytes
/// for as long as any manifest lists them (see [`SnapshotStore::remove`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// The checkpoint under which the bytes are stored.
    pub owner: CheckpointId,
    /// The blob's name (for example the operator uid and subtask).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// Its CRC-32.
    pub crc32: u32,
}

impl BlobEntry {
    /// The entry describing `bytes`, stored as blob `name` of checkpoint `owner`.
    pub fn of(owner: CheckpointId, name: &str, bytes: &[u8]) -> Self {
        BlobEntry {
            owner,
            name: name.to_string(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }

    /// True if the bytes belong to another checkpoint than `id` (shared with it).
    pub fn is_shared_in(&self, id: CheckpointId) -> bool {
        self.owner != id
    }
}

/// The blobs (as `(owner, name)`) that stay after checkpoint `removed` is deleted: what the
/// remaining `manifests` list. A store deletes the rest of `removed`'s own blobs and the
/// shared blobs its manifest listed that nothing lists any more.
pub fn still_listed<'a>(
    manifests: impl IntoIterator<Item = &'a Manifest>,
) -> std::collections::HashSet<(CheckpointId, String)> {
    manifests
        .into_iter()
        .flat_map(|m| m.blobs.iter().map(|e| (e.owner, e.name.clone())))
        .collect()
}

/// What makes a checkpoint complete: written last, after every blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The checkpoint.
    pub id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// When the coordinator triggered it, ms since the Unix epoch.
    pub triggered_ms: u64,
    /// Every blob of the checkpoint.
    pub blobs: Vec<BlobEntry>,
    /// Job-level metadata (the job's shape, generation...), opaque to the store.
    pub metadata: Vec<u8>,
}

impl Manifest {
    /// Encodes the manifest: magic, version, postcard body, CRC-32 of all that.
    ///
    /// # Errors
    ///
    /// If postcard cannot encode it.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let body = postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt {
            id: self.id,
            reason: format!("cannot encode the manifest: {e}"),
        })?;
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes and checks a manifest written by [`encode`](Self::encode).
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a bad magic, checksum or version, or an undecodable body.
    pub fn decode(id: CheckpointId, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { id, reason };
        if bytes.len() < 12 || &bytes[..4] != MANIFEST_MAGIC {
            return Err(corrupt(
                "the manifest is truncated or not a manifest".into(),
            ));
        }
        let (payload, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(payload) != stored {
            return Err(corrupt("the manifest's checksum does not match".into()));
        }
        let version = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}; this build reads version {FORMAT_VERSION}"
            )));
        }
        let manifest: Manifest = postcard::from_bytes(&payload[8..])
            .map_err(|e| corrupt(format!("the manifest does not decode: {e}")))?;
        if manifest.id != id {
            return Err(corrupt(format!(
                "the manifest names checkpoint {}",
                manifest.id
            )));
        }
        Ok(manifest)
    }
}

/// A verified checkpoint: its manifest and every blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The manifest.
    pub manifest: Manifest,
    /// The blobs by name.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

/// Storage for checkpoints. See the [module docs](self) for the guarantees it must give.
pub trait SnapshotStore: Send + Sync {
    /// Writes blob `name` of checkpoint `id` (invisible until the manifest is committed) and
    /// returns its manifest entry.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    fn put_blob(&self, id: CheckpointId, name: &str, bytes: &[u8])
    -> Result<BlobEntry, StoreError>;

    /// Publishes a checkpoint: writes its manifest, atomically and durably, then replaces the
    /// [`HeadRecord`] with one naming it. When this returns the checkpoint is completed —
    /// sinks are told to commit only after it — so it must survive whatever the store
    /// promises to survive (see the module docs).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    fn commit(&self, manifest: &Manifest) -> Result<(), StoreError>;

    /// The record of the newest completed checkpoint; `None` if this store never completed
    /// one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`], or [`StoreError::Damaged`] if the record is unreadable.
    fn head(&self) -> Result<Option<HeadRecord>, StoreError>;

    /// Where the store is, for messages (a path, or "in memory").
    fn location(&self) -> String {
        "(in memory)".into()
    }

    /// The committed checkpoints, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    fn list(&self) -> Result<Vec<CheckpointId>, StoreError>;

    /// Reads checkpoint `id` and verifies its manifest and every blob.
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`], [`StoreError::Corrupt`] or [`StoreError::Io`].
    fn load(&self, id: CheckpointId) -> Result<Snapshot, StoreError>;

    /// Reads and checks checkpoint `id`'s manifest only (not its blobs): its kind, its
    /// entries. The default loads the whole checkpoint; stores override it with a cheap read.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    fn manifest(&self, id: CheckpointId) -> Result<Manifest, StoreError> {
        self.load(id).map(|s| s.manifest)
    }

    /// Deletes checkpoint `id` (manifest first, so a crash never leaves a manifest without
    /// its blobs), and any orphan blobs of it. Blobs another checkpoint's manifest still lists
    /// (shared blobs, [`BlobEntry::owner`]) are kept; shared blobs of older checkpoints that
    /// only `id` listed are deleted with it, so retention never deletes what a retained
    /// checkpoint needs and never leaks what none needs.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    fn remove(&self, id: CheckpointId) -> Result<(), StoreError>;
}

/// Checks `blobs` against the manifest's entries.
fn verify(manifest: &Manifest, blobs: &BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
    for e in &manifest.blobs {
        let corrupt = |reason: String| StoreError::Corrupt {
            id: manifest.id,
            reason,
        };
        let Some(bytes) = blobs.get(&e.name) else {
            return Err(corrupt(format!("blob {:?} is missing", e.name)));
        };
        if bytes.len() as u64 != e.len {
            return Err(corrupt(format!(
                "blob {:?} has {} bytes, the manifest says {}",
                e.name,
                bytes.len(),
                e.len
            )));
        }
        if crc32fast::hash(bytes) != e.crc32 {
            return Err(corrupt(format!("blob {:?} fails its checksum", e.name)));
        }
    }
    Ok(())
}

/// The newest committed checkpoint that verifies. A damaged one is logged (`tracing` error)
/// and skipped in favour of the previous one; `Ok(None)` when there is none.
///
/// # Errors
///
/// [`StoreError::Io`] if the store cannot be read at all.
pub fn latest_valid(store: &dyn SnapshotStore) -> Result<Option<Snapshot>, StoreError> {
    for id in store.list()? {
        match store.load(id) {
            Ok(s) => return Ok(Some(s)),
            Err(e @ (StoreError::Corrupt { .. } | StoreError::Missing(_))) => {
                tracing::error!(checkpoint = %id, error = %e, "skipping a damaged checkpoint, trying the previous one");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The checkpoint to restore when a job asks for "the latest": the newest complete one that
/// verifies, provided it is at least as new as the store's [`HeadRecord`]. `Ok(None)` only for
/// a store that never completed a checkpoint (no head record, no checkpoints).
///
/// A checkpoint newer than the head record (its manifest was committed, the head record not
/// yet replaced when the process died) is complete and is preferred; if it is damaged, the one
/// the head record names is restored instead, with a WARN naming both: nothing of the damaged
/// one was committed by sinks (they commit only after the head record), so nothing is seen
/// twice.
///
/// # Errors
///
/// [`StoreError::Damaged`] with what was found and how to go on, when the checkpoint the head
/// record names is missing, damaged or not the one recorded (sinks may have committed its
/// output: restoring an older one could repeat it), when the head record is unreadable, or
/// when the store holds checkpoints but no head record; [`StoreError::Io`] if the store cannot
/// be read.
pub fn newest_completed(store: &dyn SnapshotStore) -> Result<Option<Snapshot>, StoreError> {
    let damaged = |message: String| StoreError::Damaged {
        store: store.location(),
        message,
    };
    let ids = store.list()?;
    let Some(head) = store.head()? else {
        if ids.is_empty() {
            return Ok(None);
        }
        return Err(damaged(format!(
            "it holds checkpoints {} but no record of which one it completed last (the record \
             was deleted, or the store was written by an older version), so it cannot tell \
             whether a newer one was lost. Restore one of them explicitly by id, accepting that \
             output committed after it is produced again, or start the job fresh",
            list_ids(&ids)
        )));
    };
    let mut skipped: Vec<(CheckpointId, String)> = Vec::new();
    if head == HeadRecord::NONE_YET {
        // No checkpoint completed (sinks committed nothing); a manifest written by a commit
        // that was cut short before its head record is complete if it verifies.
        for &id in &ids {
            match store.load(id) {
                Ok(s) => return Ok(Some(s)),
                Err(e @ (StoreError::Corrupt { .. } | StoreError::Missing(_))) => {
                    tracing::warn!(checkpoint = %id, error = %e, "skipping a damaged checkpoint that never completed (nothing of it was committed)");
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(None);
    }
    for &id in ids.iter().filter(|&&id| id >= head.id) {
        match store.load(id) {
            Ok(s) if id == head.id && HeadRecord::of(&s.manifest)? != head => {
                skipped.push((
                    id,
                    "its manifest is not the one the head record names".into(),
                ));
                break;
            }
            Ok(s) => {
                for (bad, why) in &skipped {
                    tracing::warn!(
                        damaged = %bad,
                        restoring = %id,
                        reason = %why,
                        "checkpoint {bad} is damaged ({why}); restoring checkpoint {id}, the newest completed one: {bad} never completed, so sinks committed none of its output and nothing is seen twice"
                    );
                }
                return Ok(Some(s));
            }
            Err(StoreError::Corrupt { reason, .. }) => skipped.push((id, reason)),
            Err(StoreError::Missing(_)) => skipped.push((id, "its manifest is gone".into())),
            Err(e) => return Err(e),
        }
    }
    let what = match skipped.iter().find(|(id, _)| *id == head.id) {
        Some((_, why)) => format!("is unusable: {why}"),
        None => "is missing".into(),
    };
    let older: Vec<CheckpointId> = ids.iter().copied().filter(|&id| id < head.id).collect();
    let fallback = older.iter().find(|&&id| store.load(id).is_ok());
    let hint = match fallback {
        Some(id) => format!(
            "The newest older checkpoint that verifies is {id}: restore it explicitly (by id) to \
             accept that output committed after it is produced again, or start the job fresh"
        ),
        None => "No older checkpoint verifies either: start the job fresh".into(),
    };
    Err(damaged(format!(
        "its newest completed checkpoint {} {what}. Sinks may have committed output up to \
         checkpoint {}, so restoring an older one would produce that output again. {hint}",
        head.id, head.id
    )))
}

/// The checkpoint [`newest_completed`] would most likely restore, without reading it: the
/// newest committed one if it is at least as new as the head record. For messages; `None`
/// if the store never completed one or cannot be read.
pub fn restore_candidate(store: &dyn SnapshotStore) -> Option<CheckpointId> {
    let head = store.head().ok().flatten()?;
    let newest = store.list().ok()?.into_iter().next()?;
    Some(newest.max(head.id))
}

fn list_ids(ids: &[CheckpointId]) -> String {
    let v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.join(", ")
}

/// Checkpoints in memory (tests, and jobs that restart within one process).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    blobs: BTreeMap<(u64, String), Vec<u8>>,
    manifests: BTreeMap<u64, Vec<u8>>,
    head: Option<HeadRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave the maps half-updated (every write is
        // one insert or remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Failure injection: forgets the head record, as a deleted head file would.
    pub fn forget_head(&self) {
        self.lock().head = None;
    }

    /// Failure injection: publishes `manifest` without replacing the head record, as a crash
    /// between the two would.
    ///
    /// # Errors
    ///
    /// If the manifest cannot be encoded.
    pub fn commit_without_head(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let bytes = manifest.encode()?;
        self.lock().manifests.insert(manifest.id.0, bytes);
        Ok(())
    }

    /// Failure injection: overwrites the first byte of a blob, as a torn write would.
    pub fn corrupt_blob(&self, id: CheckpointId, name: &str) {
        if let Some(b) = self.lock().blobs.get_mut(&(id.0, name.to_string()))
            && let Some(first) = b.first_mut()
        {
            *first ^= 0xff;
        }
    }
}

impl SnapshotStore for MemoryStore {
    fn put_blob(
        &self,
        id: CheckpointId,
        name: &str,
        bytes: &[u8],
    ) -> Result<BlobEntry, StoreError> {
        self.lock()
            .blobs
            .insert((id.0, name.to_string()), bytes.to_vec());
        Ok(BlobEntry::of(id, name, bytes))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let bytes = manifest.encode()?;
        let head = HeadRecord::of(manifest)?;
        let mut inner = self.lock();
        inner.manifests.insert(manifest.id.0, bytes);
        inner.head = Some(head);
        Ok(())
    }

    fn head(&self) -> Result<Option<HeadRecord>, StoreError> {
        Ok(self.lock().head)
    }

    fn list(&self) -> Result<Vec<CheckpointId>, StoreError> {
        Ok(self
            .lock()
            .manifests
            .keys()
            .rev()
            .map(|&i| CheckpointId(i))
            .collect())
    }

    fn manifest(&self, id: CheckpointId) -> Result<Manifest, StoreError> {
        let inner = self.lock();
        let bytes = inner.manifests.get(&id.0).ok_or(StoreError::Missing(id))?;
        Manifest::decode(id, bytes)
    }

    fn load(&self, id: CheckpointId) -> Result<Snapshot, StoreError> {
        let inner = self.lock();
        let bytes = inner.manifests.get(&id.0).ok_or(StoreError::Missing(id))?;
        let manifest = Manifest::decode(id, bytes)?;
        let blobs: BTreeMap<String, Vec<u8>> = manifest
            .blobs
            .iter()
            .filter_map(|e| {
                inner
                    .blobs
                    .get(&(e.owner.0, e.name.clone()))
                    .map(|b| (e.name.clone(), b.clone()))
            })
            .collect();
        verify(&manifest, &blobs)?;
        Ok(Snapshot { manifest, blobs })
    }

    fn remove(&self, id: CheckpointId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let removed = inner
            .manifests
            .remove(&id.0)
            .and_then(|b| Manifest::decode(id, &b).ok());
        let others: Vec<Manifest> = inner
            .manifests
            .iter()
            .filter_map(|(&i, b)| Manifest::decode(CheckpointId(i), b).ok())
            .collect();
        let keep = still_listed(&others);
        let shared: std::collections::HashSet<(u64, String)> = removed
            .iter()
            .flat_map(|m| m.blobs.iter().map(|e| (e.owner.0, e.name.clone())))
            .collect();
        inner.blobs.retain(|(i, name), _| {
            let listed = keep.contains(&(CheckpointId(*i), name.clone()));
            listed || (*i != id.0 && !shared.contains(&(*i, name.clone())))
        });
        Ok(())
    }
}

/// Checkpoints in an embedded sled database at a path (the default store).
///
/// Blobs go to the `blobs` tree under `id (8 bytes, big endian) ++ name`, manifests to the
/// `manifests` tree under the id. The [`HeadRecord`] is the file `HEAD.actorflow` in the same
/// directory, outside sled's own files. `commit` is durable when it returns: sled's `flush`
/// writes its files, but sled 0.34 does not `fsync` all of them (its separate blob files, for
/// one), so the store `fsync`s every file and directory under the path itself after the
/// manifest, and then replaces the head record (temporary file, fsync, rename, fsync of the
/// directory).
pub struct SledStore {
    path: PathBuf,
    /// `fsync` before the head record (the default); off only for tests and benchmarks.
    durable: bool,
    blobs: sled::Tree,
    manifests: sled::Tree,
    db: sled::Db,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

fn blob_key(id: CheckpointId, name: &str) -> Vec<u8> {
    let mut k = id.0.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The head record's file name in a store's directory.
pub const HEAD_FILE: &str = "HEAD.actorflow";

fn io_at(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        message: format!("cannot {what}: {e}"),
    }
}

/// `fsync`s every file and directory under `dir` (and `dir` itself).
///
/// # Errors
///
/// [`StoreError::Io`] naming the first path that fails.
pub fn fsync_tree(dir: &Path) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_at(dir, "list the directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_at(dir, "list the directory", e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| io_at(&path, "read the file type", e))?;
        if kind.is_dir() {
            fsync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_at(&path, "fsync", e))?;
        }
    }
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_at(dir, "fsync the directory", e))
}

/// Replaces `dir/name` with `bytes` durably: a temporary file written and fsynced, renamed
/// over the old one, then the directory fsynced.
///
/// # Errors
///
/// [`StoreError::Io`] naming the path that fails.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    replace_file(dir, name, bytes, true)
}

/// Replaces `dir/name` with `bytes` atomically (a temporary file renamed over it, so a crash
/// leaves the old or the new version, never a torn one); `fsync` makes it durable too.
fn replace_file(dir: &Path, name: &str, bytes: &[u8], fsync: bool) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_at(&tmp, "create", e))?;
        std::io::Write::write_all(&mut f, bytes).map_err(|e| io_at(&tmp, "write", e))?;
        if fsync {
            f.sync_all().map_err(|e| io_at(&tmp, "fsync", e))?;
        }
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| io_at(&path, "rename the new version into place", e))?;
    if fsync {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Reads the head record file `dir/HEAD.actorflow`; `None` if there is none.
fn read_head(dir: &Path) -> Result<Option<HeadRecord>, StoreError> {
    let path = dir.join(HEAD_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => HeadRecord::decode(&bytes)
            .map(Some)
            .map_err(|why| StoreError::Damaged {
                store: dir.display().to_string(),
                message: format!(
                    "its record of the newest completed checkpoint ({}) is unreadable: {why}. It \
                 cannot tell whether a checkpoint was lost: restore a checkpoint explicitly by \
                 id, accepting that output committed after it may be produced again, or start \
                 the job fresh",
                    path.display()
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path, "read", e)),
    }
}

/// Whether sled failed to open only because the directory's lock is held (by another
/// process, or by this one's I/O threads still closing a dropped handle). sled 0.34 reports it
/// as `ErrorKind::Other` with this message, so the message is what we can match.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl SledStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] naming the path, if sled cannot open it (for example another
    /// process has it open: the store waits up to [`LOCK_WAIT`](Self::LOCK_WAIT) for the
    /// directory's lock, then gives up). While it waits it blocks the calling thread; from
    /// async code that must not stall, open it in `tokio::task::spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_waiting(path.as_ref(), Self::LOCK_WAIT)
    }

    /// How long [`open`](Self::open) waits for the directory's lock. sled 0.34 releases it
    /// from its I/O threads shortly *after* the last handle is dropped (sled issues #1234,
    /// #1289), so a store dropped and reopened at once (a job restarted in the same process)
    /// can find it still held for a few milliseconds.
    pub const LOCK_WAIT: Duration = Duration::from_secs(2);

    fn open_waiting(path: &Path, lock_wait: Duration) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let io = |e: sled::Error| StoreError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        // No background flusher: `commit` and `remove` flush explicitly, and without the
        // flusher thread (which holds the database for up to its period) dropping the store
        // releases the directory sooner.
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        let db = loop {
            match sled::Config::new().path(&path).flush_every_ms(None).open() {
                Ok(db) => break db,
                Err(e) if is_lock_contention(&e) && started.elapsed() + pause <= lock_wait => {
                    // Opening is synchronous and rare (once per job, before it runs); the
                    // wait is bounded and happens only while the lock is held.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(io(e)),
            }
        };
        let blobs = db.open_tree("blobs").map_err(io)?;
        let manifests = db.open_tree("manifests").map_err(io)?;
        if manifests.is_empty() && read_head(&path)?.is_none() {
            // A new store: say so durably before the first checkpoint (see
            // `HeadRecord::NONE_YET`).
            replace_file(&path, HEAD_FILE, &HeadRecord::NONE_YET.encode(), true)?;
        }
        Ok(SledStore {
            path,
            durable: true,
            blobs,
            manifests,
            db,
        })
    }

    /// Opens the store at `path` without the store's own `fsync`s: completed checkpoints
    /// survive a process crash (sled's `flush` has written them to the operating system) but
    /// not a machine crash. For tests and for measuring what durability costs.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_without_fsync(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let mut store = Self::open(path)?;
        store.durable = false;
        Ok(store)
    }

    fn io(&self, e: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Failure injection: overwrites the first byte of a blob, as a torn write would.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    pub fn corrupt_blob(&self, id: CheckpointId, name: &str) -> Result<(), StoreError> {
        let key = blob_key(id, name);
        if let Some(v) = self.blobs.get(&key).map_err(|e| self.io(e))? {
            let mut bytes = v.to_vec();
            if let Some(first) = bytes.first_mut() {
                *first ^= 0xff;
            }
            self.blobs.insert(key, bytes).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn read_manifest(&self, id: CheckpointId) -> Result<Manifest, StoreError> {
        let bytes = self
            .manifests
            .get(id.0.to_be_bytes())
            .map_err(|e| self.io(e))?
            .ok_or(StoreError::Missing(id))?;
        Manifest::decode(id, &bytes)
    }

    /// Failure injection: damages the first blob of the newest checkpoint (as a torn write
    /// would), so that restoring falls back to the previous one. The damaged checkpoint's id,
    /// `None` if the store is empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`], or [`StoreError::Corrupt`] if the newest manifest is unreadable
    /// already.
    pub fn corrupt_newest(&self) -> Result<Option<CheckpointId>, StoreError> {
        let Some(id) = self.list()?.into_iter().max() else {
            return Ok(None);
        };
        let manifest = self.manifest(id)?;
        if let Some(first) = manifest.blobs.first() {
            self.corrupt_blob(id, &first.name)?;
        }
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(Some(id))
    }
}

impl SnapshotStore for SledStore {
    fn put_blob(
        &self,
        id: CheckpointId,
        name: &str,
        bytes: &[u8],
    ) -> Result<BlobEntry, StoreError> {
        self.blobs
            .insert(blob_key(id, name), bytes)
            .map_err(|e| self.io(e))?;
        Ok(BlobEntry::of(id, name, bytes))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        // The blobs and the manifest must be on disk before the head record that makes the
        // checkpoint the newest completed one. They need no order among themselves: should a
        // power loss keep the manifest but not a blob, the checkpoint fails its checksums and
        // is newer than the head record, so restoring falls back to the completed one.
        self.manifests
            .insert(manifest.id.0.to_be_bytes(), manifest.encode()?)
            .map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        if self.durable {
            fsync_tree(&self.path)?;
        }
        let head = HeadRecord::of(manifest)?.encode();
        replace_file(&self.path, HEAD_FILE, &head, self.durable)
    }

    fn head(&self) -> Result<Option<HeadRecord>, StoreError> {
        read_head(&self.path)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn list(&self) -> Result<Vec<CheckpointId>, StoreError> {
        let mut ids = Vec::new();
        for kv in self.manifests.iter().keys().rev() {
            let k = kv.map_err(|e| self.io(e))?;
            if let Ok(b) = <[u8; 8]>::try_from(k.as_ref()) {
                ids.push(CheckpointId(u64::from_be_bytes(b)));
            }
        }
        Ok(ids)
    }

    fn manifest(&self, id: CheckpointId) -> Result<Manifest, StoreError> {
        self.read_manifest(id)
    }

    fn load(&self, id: CheckpointId) -> Result<Snapshot, StoreError> {
        let manifest = self.read_manifest(id)?;
        let mut blobs = BTreeMap::new();
        for e in &manifest.blobs {
            if let Some(v) = self
                .blobs
                .get(blob_key(e.owner, &e.name))
                .map_err(|e| self.io(e))?
            {
                blobs.insert(e.name.clone(), v.to_vec());
            }
        }
        verify(&manifest, &blobs)?;
        Ok(Snapshot { manifest, blobs })
    }

    fn remove(&self, id: CheckpointId) -> Result<(), StoreError> {
        let removed = self.manifest(id).ok();
        self.manifests
            .remove(id.0.to_be_bytes())
            .map_err(|e| self.io(e))?;
        let mut others = Vec::new();
        for other in self.list()? {
            // A damaged manifest lists nothing we could honour; its own blobs stay.
            if let Ok(m) = self.manifest(other) {
                others.push(m);
            }
        }
        let keep = still_listed(&others);
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        for kv in self.blobs.scan_prefix(id.0.to_be_bytes()).keys() {
            let k = kv.map_err(|e| self.io(e))?;
            let name = String::from_utf8_lossy(&k[8..]).into_owned();
            if !keep.contains(&(id, name)) {
                doomed.push(k.to_vec());
            }
        }
        for e in removed.iter().flat_map(|m| &m.blobs) {
            if e.is_shared_in(id) && !keep.contains(&(e.owner, e.name.clone())) {
                doomed.push(blob_key(e.owner, &e.name));
            }
        }
        // One batch: `Tree::remove` returns the old value, which for a large blob means
        // reading it back from disk (130 chunk blobs of ~1 MB took 0.95 s that way).
        let mut batch = sled::Batch::default();
        for k in doomed {
            batch.remove(k);
        }
        self.blobs.apply_batch(batch).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(store: &dyn SnapshotStore, id: u64, blobs: &[(&str, &[u8])]) -> Manifest {
        let id = CheckpointId(id);
        Manifest {
            version: FORMAT_VERSION,
            id,
            kind: CheckpointKind::Checkpoint,
            triggered_ms: 1_700_000_000_000 + id.0,
            blobs: blobs
                .iter()
                .map(|(n, b)| store.put_blob(id, n, b).unwrap())
                .collect(),
            metadata: vec![7, 7],
        }
    }

    /// Shared blobs: checkpoints 2 and 3 list the blob checkpoint 1 wrote. Removing 1 keeps
    /// it (2 and 3 still load), removing 2 too, removing 3 deletes it; the own blobs of each
    /// go with it, and nothing is left behind.
    fn shared_blobs_live_as_long_as_a_manifest_lists_them(
        store: &dyn SnapshotStore,
        stored: &dyn Fn() -> usize,
    ) {
        let m1 = manifest(store, 1, &[("final", b"finished state"), ("a", b"one")]);
        store.commit(&m1).unwrap();
        let shared = m1.blobs[0].clone();
        let with_shared = |id: u64, own: &[u8]| {
            let mut m = manifest(store, id, &[("a", own)]);
            m.blobs.push(shared.clone());
            store.commit(&m).unwrap();
        };
        with_shared(2, b"two");
        with_shared(3, b"three");
        assert_eq!(stored(), 4, "the shared blob is stored once");
        store.remove(CheckpointId(1)).unwrap();
        for id in [2, 3] {
            let s = store.load(CheckpointId(id)).unwrap();
            assert_eq!(s.blobs["final"], b"finished state");
        }
        assert_eq!(stored(), 3);
        store.remove(CheckpointId(2)).unwrap();
        assert_eq!(
            store.load(CheckpointId(3)).unwrap().blobs["final"],
            b"finished state"
        );
        assert_eq!(stored(), 2);
        // A pending checkpoint's blobs (no manifest yet) are not touched by a removal.
        store.put_blob(CheckpointId(4), "a", b"four").unwrap();
        store.remove(CheckpointId(3)).unwrap();
        assert_eq!(stored(), 1, "only the pending checkpoint's blob is left");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn shared_blobs_in_memory() {
        let mem = MemoryStore::new();
        shared_blobs_live_as_long_as_a_manifest_lists_them(&mem, &|| mem.lock().blobs.len());
    }

    /// A directory whose lock stays held (another handle open) is an error naming the path
    /// once the wait is over; one whose holder lets go during the wait opens.
    #[test]
    fn a_held_sled_directory_is_waited_for_then_refused() {
        let dir = temp_dir("sled-lock");
        let held = SledStore::open_without_fsync(&dir).unwrap();
        let Err(e) = SledStore::open_waiting(&dir, Duration::from_millis(30)) else {
            panic!("a second handle on a held directory opened");
        };
        let e = e.to_string();
        assert!(e.contains("could not acquire lock"), "{e}");
        assert!(e.contains("actorflow-sled-lock"), "{e}");

        // The holder lets go while we wait (the outcome does not depend on when, as long as
        // it is within the wait).
        let holder = std::thread::spawn(move || {
            #[allow(clippy::disallowed_methods)] // a plain thread, not a runtime worker
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        let store = SledStore::open_waiting(&dir, Duration::from_secs(10)).unwrap();
        assert_eq!(store.head().unwrap(), Some(HeadRecord::NONE_YET));
        holder.join().unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shared_blobs_in_sled() {
        let dir = temp_dir("shared-blobs");
        let sled = SledStore::open_without_fsync(&dir).unwrap();
        shared_blobs_live_as_long_as_a_manifest_lists_them(&sled, &|| sled.blobs.len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("actorflow-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn exercise(store: &dyn SnapshotStore) {
        assert!(latest_valid(store).unwrap().is_none());
        let m1 = manifest(store, 1, &[("map/0", b"one"), ("map/1", b"")]);
        store.commit(&m1).unwrap();
        // Blobs of checkpoint 2 without a manifest: invisible.
        store.put_blob(CheckpointId(2), "map/0", b"orphan").unwrap();
        assert_eq!(store.list().unwrap(), vec![CheckpointId(1)]);
        let m3 = manifest(store, 3, &[("map/0", b"three")]);
        store.commit(&m3).unwrap();
        assert_eq!(
            store.list().unwrap(),
            vec![CheckpointId(3), CheckpointId(1)]
        );
        let latest = latest_valid(store).unwrap().unwrap();
        assert_eq!(latest.manifest, m3);
        assert_eq!(latest.blobs["map/0"], b"three");
        store.remove(CheckpointId(3)).unwrap();
        let s = store.load(CheckpointId(1)).unwrap();
        assert_eq!(s.blobs.len(), 2);
        assert!(matches!(
            store.load(CheckpointId(3)),
            Err(StoreError::Missing(_))
        ));
    }

    #[test]
    fn memory_store_roundtrip() {
        exercise(&MemoryStore::new());
    }

    #[test]
    fn sled_store_roundtrip_and_reopen() {
        let dir = temp_dir("sled-roundtrip");
        {
            let store = SledStore::open(&dir).unwrap();
            exercise(&store);
        }
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.list().unwrap(), vec![CheckpointId(1)]);
        assert_eq!(store.load(CheckpointId(1)).unwrap().blobs["map/0"], b"one");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_latest_checkpoint_falls_back_to_the_previous() {
        let mem = MemoryStore::new();
        mem.commit(&manifest(&mem, 1, &[("a", b"good")])).unwrap();
        mem.commit(&manifest(&mem, 2, &[("a", b"newer")])).unwrap();
        mem.corrupt_blob(CheckpointId(2), "a");
        let err = mem.load(CheckpointId(2)).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let s = latest_valid(&mem).unwrap().unwrap();
        assert_eq!(s.manifest.id, CheckpointId(1));

        let dir = temp_dir("sled-corrupt");
        let sled = SledStore::open(&dir).unwrap();
        sled.commit(&manifest(&sled, 1, &[("a", b"good")])).unwrap();
        sled.commit(&manifest(&sled, 2, &[("a", b"newer")]))
            .unwrap();
        sled.corrupt_blob(CheckpointId(2), "a").unwrap();
        assert_eq!(
            latest_valid(&sled).unwrap().unwrap().manifest.id,
            CheckpointId(1)
        );
        drop(sled);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn damaged(r: Result<Option<Snapshot>, StoreError>) -> String {
        match r {
            Err(e @ StoreError::Damaged { .. }) => e.to_string(),
            other => panic!("expected a damaged store, got {other:?}"),
        }
    }

    /// The restore rules over the head record: an empty store has nothing; the newest
    /// completed checkpoint is restored; losing it, or its record, or a mismatch, is damage
    /// with a way on; a damaged checkpoint newer than the head record falls back to it.
    #[test]
    fn newest_completed_never_takes_a_damaged_store_for_an_empty_one() {
        let mem = MemoryStore::new();
        assert!(newest_completed(&mem).unwrap().is_none(), "never completed");
        mem.commit(&manifest(&mem, 1, &[("a", b"one")])).unwrap();
        mem.commit(&manifest(&mem, 2, &[("a", b"two")])).unwrap();
        assert_eq!(
            mem.head().unwrap(),
            Some(HeadRecord::of(&mem.load(CheckpointId(2)).unwrap().manifest).unwrap())
        );
        let s = newest_completed(&mem).unwrap().unwrap();
        assert_eq!(s.manifest.id, CheckpointId(2));

        // Committed after the head record was last replaced (a crash in between): complete,
        // so restored; damaged, so the completed one is restored instead.
        let three = manifest(&mem, 3, &[("a", b"three")]);
        mem.commit_without_head(&three).unwrap();
        assert_eq!(
            newest_completed(&mem).unwrap().unwrap().manifest.id,
            CheckpointId(3)
        );
        mem.corrupt_blob(CheckpointId(3), "a");
        assert_eq!(
            newest_completed(&mem).unwrap().unwrap().manifest.id,
            CheckpointId(2)
        );

        // The completed one damaged: refused, naming it and the older one that verifies.
        mem.remove(CheckpointId(3)).unwrap();
        mem.corrupt_blob(CheckpointId(2), "a");
        let e = damaged(newest_completed(&mem));
        assert!(e.contains("checkpoint 2 is unusable"), "{e}");
        assert!(e.contains("fails its checksum"), "{e}");
        assert!(e.contains("older checkpoint that verifies is 1"), "{e}");

        // The completed one removed.
        mem.remove(CheckpointId(2)).unwrap();
        let e = damaged(newest_completed(&mem));
        assert!(e.contains("checkpoint 2 is missing"), "{e}");

        // Another manifest under the completed id than the one recorded.
        mem.commit_without_head(&manifest(&mem, 2, &[("a", b"other")]))
            .unwrap();
        let e = damaged(newest_completed(&mem));
        assert!(e.contains("not the one the head record names"), "{e}");

        // Checkpoints without a record of the newest.
        mem.forget_head();
        let e = damaged(newest_completed(&mem));
        assert!(
            e.contains("no record of which one it completed last"),
            "{e}"
        );
    }

    #[test]
    fn the_sled_head_record_is_durable_and_checked() {
        let dir = temp_dir("sled-head");
        {
            let store = SledStore::open(&dir).unwrap();
            assert!(newest_completed(&store).unwrap().is_none());
            store.commit(&manifest(&store, 4, &[("a", b"x")])).unwrap();
        }
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.head().unwrap().map(|h| h.id), Some(CheckpointId(4)));
        assert_eq!(
            newest_completed(&store).unwrap().unwrap().manifest.id,
            CheckpointId(4)
        );
        let head = dir.join(HEAD_FILE);
        let mut bytes = std::fs::read(&head).unwrap();
        bytes[6] ^= 0x40;
        std::fs::write(&head, &bytes).unwrap();
        let e = damaged(newest_completed(&store));
        assert!(e.contains("unreadable: its checksum does not match"), "{e}");
        std::fs::remove_file(&head).unwrap();
        let e = damaged(newest_completed(&store));
        assert!(e.contains("holds checkpoints 4 but no record"), "{e}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);

        // Killed between the first manifest and the first head record: a new store (its
        // head says none completed yet) restores that complete checkpoint.
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.head().unwrap(), Some(HeadRecord::NONE_YET));
        let m = manifest(&store, 1, &[("a", b"x")]);
        store
            .manifests
            .insert(1u64.to_be_bytes(), m.encode().unwrap())
            .unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.head().unwrap(), Some(HeadRecord::NONE_YET));
        assert_eq!(
            newest_completed(&store).unwrap().map(|s| s.manifest.id),
            Some(CheckpointId(1))
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Random and bit-flipped bytes never panic a decoder: every one returns an error (or,
    /// for a flip the checksums cannot see, a value).
    #[test]
    fn decoding_damaged_bytes_never_panics() {
        let mut rng = 0x5eed_u64;
        let mut next = move || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            rng >> 33
        };
        let mem = MemoryStore::new();
        let good = manifest(&mem, 9, &[("a", b"abc"), ("b", b"")])
            .encode()
            .unwrap();
        let head = HeadRecord::of(&Manifest::decode(CheckpointId(9), &good).unwrap())
            .unwrap()
            .encode();
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = Manifest::decode(CheckpointId(9), &random);
            let _ = HeadRecord::decode(&random);
            let mut flipped = if round % 2 == 0 {
                good.clone()
            } else {
                head.to_vec()
            };
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % flipped.len();
                flipped[i] ^= 1 << (next() % 8);
            }
            if round % 2 == 0 {
                assert!(Manifest::decode(CheckpointId(9), &flipped).is_err() || flipped == good);
            } else {
                assert!(HeadRecord::decode(&flipped).is_err() || flipped == head);
            }
            // Unchecksummed postcard bodies: errors, not panics.
            let _ = postcard::from_bytes::<Manifest>(&random);
        }
    }

    #[test]
    fn missing_blobs_truncated_manifests_and_other_versions_are_refused() {
        let mem = MemoryStore::new();
        let mut m = manifest(&mem, 5, &[("a", b"x")]);
        m.blobs
            .push(BlobEntry::of(CheckpointId(5), "never-written", b"y"));
        mem.commit(&m).unwrap();
        let err = mem.load(CheckpointId(5)).unwrap_err();
        assert!(err.to_string().contains("never-written"), "{err}");

        let good = manifest(&mem, 6, &[]).encode().unwrap();
        for cut in [0, 3, 11, good.len() - 1] {
            assert!(
                Manifest::decode(CheckpointId(6), &good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut newer = manifest(&mem, 7, &[]);
        newer.version = FORMAT_VERSION + 1;
        let err = Manifest::decode(CheckpointId(7), &newer.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        assert!(
            Manifest::decode(CheckpointId(8), &good).is_err(),
            "the id must match"
        );
    }
}
