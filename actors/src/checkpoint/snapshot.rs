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

use crate::dataplane::message::CheckpointKind;
use crate::types::CheckpointId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The snapshot format written by this version. A manifest of another version is refused with
/// an error naming both.
pub const FORMAT_VERSION: u32 = 2;

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
}

/// One blob of a checkpoint, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// The blob's name (for example the operator uid and subtask).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// Its CRC-32.
    pub crc32: u32,
}

impl BlobEntry {
    /// The entry describing `bytes`.
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        BlobEntry {
            name: name.to_string(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
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

    /// Publishes a checkpoint by writing its manifest, atomically and durably.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`].
    fn commit(&self, manifest: &Manifest) -> Result<(), StoreError>;

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

    /// Deletes checkpoint `id` (manifest first, so a crash never leaves a manifest without
    /// its blobs), and any orphan blobs of it.
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

/// Checkpoints in memory (tests, and jobs that restart within one process).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    blobs: BTreeMap<(u64, String), Vec<u8>>,
    manifests: BTreeMap<u64, Vec<u8>>,
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
        Ok(BlobEntry::of(name, bytes))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let bytes = manifest.encode()?;
        self.lock().manifests.insert(manifest.id.0, bytes);
        Ok(())
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
                    .get(&(id.0, e.name.clone()))
                    .map(|b| (e.name.clone(), b.clone()))
            })
            .collect();
        verify(&manifest, &blobs)?;
        Ok(Snapshot { manifest, blobs })
    }

    fn remove(&self, id: CheckpointId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.manifests.remove(&id.0);
        inner.blobs.retain(|(i, _), _| *i != id.0);
        Ok(())
    }
}

/// Checkpoints in an embedded sled database at a path (the default store).
///
/// Blobs go to the `blobs` tree under `id (8 bytes, big endian) ++ name`, manifests to the
/// `manifests` tree under the id; `commit` flushes to disk before it returns.
pub struct SledStore {
    path: PathBuf,
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

impl SledStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] naming the path, if sled cannot open it (for example another
    /// process has it open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let io = |e: sled::Error| StoreError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        // No background flusher: `commit` and `remove` flush explicitly, and without the
        // flusher thread (which holds the database for up to its period) dropping the store
        // releases the directory at once, so it can be reopened right away.
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .open()
            .map_err(io)?;
        let blobs = db.open_tree("blobs").map_err(io)?;
        let manifests = db.open_tree("manifests").map_err(io)?;
        Ok(SledStore {
            path,
            blobs,
            manifests,
            db,
        })
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

    fn manifest(&self, id: CheckpointId) -> Result<Manifest, StoreError> {
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
        Ok(BlobEntry::of(name, bytes))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        // The blobs must be on disk before the manifest that makes them a checkpoint.
        self.db.flush().map_err(|e| self.io(e))?;
        self.manifests
            .insert(manifest.id.0.to_be_bytes(), manifest.encode()?)
            .map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
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

    fn load(&self, id: CheckpointId) -> Result<Snapshot, StoreError> {
        let manifest = self.manifest(id)?;
        let mut blobs = BTreeMap::new();
        for e in &manifest.blobs {
            if let Some(v) = self
                .blobs
                .get(blob_key(id, &e.name))
                .map_err(|e| self.io(e))?
            {
                blobs.insert(e.name.clone(), v.to_vec());
            }
        }
        verify(&manifest, &blobs)?;
        Ok(Snapshot { manifest, blobs })
    }

    fn remove(&self, id: CheckpointId) -> Result<(), StoreError> {
        self.manifests
            .remove(id.0.to_be_bytes())
            .map_err(|e| self.io(e))?;
        let keys: Vec<sled::IVec> = self
            .blobs
            .scan_prefix(id.0.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.io(e))?;
        for k in keys {
            self.blobs.remove(k).map_err(|e| self.io(e))?;
        }
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

    #[test]
    fn missing_blobs_truncated_manifests_and_other_versions_are_refused() {
        let mem = MemoryStore::new();
        let mut m = manifest(&mem, 5, &[("a", b"x")]);
        m.blobs.push(BlobEntry::of("never-written", b"y"));
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
