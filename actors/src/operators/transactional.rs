//! Exactly-once sinks: the two-phase-commit protocol ([`TwoPhaseCommitSink`], adapted to a
//! [`Sink`] by [`TwoPhaseCommit`]) and an exactly-once file sink built on it ([`FileSink`]).
//!
//! Records go into the current transaction. At a checkpoint's barrier the transaction is
//! **pre-committed** (made durable, not yet visible) and kept, with the checkpoint's id, in
//! the snapshot; a new one begins with the next record. When the checkpoint **completes**, every
//! pre-committed transaction up to it is **committed** (made visible). After a failure, the
//! restored snapshot's pending transactions are committed again — so commits must be
//! idempotent — and nothing of the failed attempt after the checkpoint becomes visible. Before
//! committing, the sink checks that its generation is still the job's: a subtask from before a
//! restart never commits.
//!
//! Without checkpointing, the transaction is pre-committed and committed at end of input.

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Data};
use crate::error::UserError;
use crate::operators::operator::{Generation, TaskInfo};
use crate::operators::sink::Sink;
use crate::types::CheckpointId;
use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// A sink that writes in transactions (Flink's `TwoPhaseCommitSinkFunction`).
pub trait TwoPhaseCommitSink: Send + 'static {
    /// The records it takes.
    type Input: Data;
    /// A transaction handle, stored in checkpoints while pending.
    type Txn: Data;

    /// Called once before anything else.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }
    /// Starts a transaction.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn begin(&mut self) -> Result<Self::Txn, UserError>;
    /// Writes records into `txn`.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn write(&mut self, txn: &mut Self::Txn, batch: Batch<Self::Input>) -> Result<(), UserError>;
    /// Makes `txn` durable without making it visible.
    ///
    /// # Errors
    ///
    /// Any error declines the checkpoint.
    fn pre_commit(&mut self, txn: &mut Self::Txn) -> Result<(), UserError>;
    /// Makes a pre-committed `txn` visible. Must be idempotent: it is called again for the
    /// pending transactions of a restored snapshot.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn commit(&mut self, txn: Self::Txn) -> Result<(), UserError>;
    /// Drops `txn` (not pre-committed, or of an aborted attempt).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn abort(&mut self, txn: Self::Txn) -> Result<(), UserError>;
}

/// Pre-committed transactions waiting for their checkpoint to complete: the bookkeeping every
/// transactional sink shares.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::transactional::PendingCommits;
/// use actorflow_runtime::CheckpointId;
/// let mut p = PendingCommits::default();
/// p.push(CheckpointId(1), "a");
/// p.push(CheckpointId(2), "b");
/// assert_eq!(p.take_upto(CheckpointId(1)), vec!["a"]);
/// assert_eq!(p.take_upto(CheckpointId::FINAL), vec!["b"]);
/// ```
#[derive(Debug, Clone)]
pub struct PendingCommits<Txn> {
    pending: Vec<(CheckpointId, Txn)>,
}

impl<Txn> Default for PendingCommits<Txn> {
    fn default() -> Self {
        PendingCommits {
            pending: Vec::new(),
        }
    }
}

impl<Txn> PendingCommits<Txn> {
    /// `txn` was pre-committed at checkpoint `id`.
    pub fn push(&mut self, id: CheckpointId, txn: Txn) {
        self.pending.push((id, txn));
    }

    /// True if a transaction of checkpoint `id` or older waits.
    pub fn has_upto(&self, id: CheckpointId) -> bool {
        self.pending.iter().any(|(c, _)| *c <= id)
    }

    /// Removes and returns the transactions of checkpoint `id` and older, oldest first.
    pub fn take_upto(&mut self, id: CheckpointId) -> Vec<Txn> {
        let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(c, _)| *c <= id);
        self.pending = keep;
        ready.into_iter().map(|(_, t)| t).collect()
    }

    /// Writes every pending transaction, with its checkpoint, as a list item of `state`.
    ///
    /// # Errors
    ///
    /// If a transaction cannot be serialized.
    pub fn write_items(&self, state: &mut OperatorState) -> Result<(), UserError>
    where
        Txn: serde::Serialize,
    {
        for p in &self.pending {
            state.push_item(p)?;
        }
        Ok(())
    }

    /// The transactions of a restored snapshot (written by [`write_items`](Self::write_items)).
    ///
    /// # Errors
    ///
    /// If the items are not transactions of this type.
    pub fn restored(restored: &RestoredState) -> Result<Vec<Txn>, UserError>
    where
        Txn: serde::de::DeserializeOwned,
    {
        let items: Vec<(CheckpointId, Txn)> = restored.state.items()?;
        Ok(items.into_iter().map(|(_, t)| t).collect())
    }
}

/// Runs a [`TwoPhaseCommitSink`] as a [`Sink`]. See the [module docs](self).
pub struct TwoPhaseCommit<S: TwoPhaseCommitSink> {
    sink: S,
    current: Option<S::Txn>,
    pending: PendingCommits<S::Txn>,
    generation: Generation,
    checkpointing: bool,
}

impl<S: TwoPhaseCommitSink> TwoPhaseCommit<S> {
    /// Wraps `sink`.
    pub fn new(sink: S) -> Self {
        TwoPhaseCommit {
            sink,
            current: None,
            pending: PendingCommits::default(),
            generation: Generation::default(),
            checkpointing: false,
        }
    }

    fn commit_upto(&mut self, id: CheckpointId) -> Result<(), UserError> {
        if !self.pending.has_upto(id) {
            return Ok(());
        }
        self.generation.ensure_current()?;
        for txn in self.pending.take_upto(id) {
            self.sink.commit(txn)?;
        }
        Ok(())
    }
}

impl<S: TwoPhaseCommitSink> Sink for TwoPhaseCommit<S> {
    type Input = S::Input;

    async fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.generation = info.generation.clone();
        self.checkpointing = info.checkpointing;
        self.sink.open(info)
    }

    async fn write_batch(&mut self, batch: Batch<S::Input>) -> Result<(), UserError> {
        let txn = match &mut self.current {
            Some(t) => t,
            None => self.current.insert(self.sink.begin()?),
        };
        self.sink.write(txn, batch)
    }

    async fn finish(&mut self) -> Result<(), UserError> {
        if !self.checkpointing
            && let Some(mut txn) = self.current.take()
        {
            self.sink.pre_commit(&mut txn)?;
            self.sink.commit(txn)?;
        }
        Ok(())
    }

    async fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        if let Some(mut txn) = self.current.take() {
            self.sink.pre_commit(&mut txn)?;
            self.pending.push(checkpoint, txn);
        }
        self.pending.write_items(state)
    }

    async fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let pending = PendingCommits::<S::Txn>::restored(&restored)?;
        self.generation.ensure_current()?;
        for txn in pending {
            self.sink.commit(txn)?;
        }
        Ok(())
    }

    async fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<(), UserError> {
        self.commit_upto(checkpoint)
    }

    fn is_transactional(&self) -> bool {
        true
    }
}

/// A transaction of a [`FileSink`]: one part file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartFile {
    /// The committed file's name in the directory.
    pub name: String,
}

/// Writes each record's `Display` as a line into part files of a directory, exactly once:
/// `.NAME.inprogress` while written, `.NAME.pending` once pre-committed, `NAME` once
/// committed. Readers take only committed files (names not starting with `.`).
///
/// Part names carry the subtask index, a token unique to the attempt, and a counter, so a new
/// attempt never reuses an old attempt's names. When a subtask opens, the `.inprogress` files
/// of other processes and generations (killed runs, attempts before a restart) are deleted:
/// nothing refers to them, so they no longer pile up.
///
/// **A fresh start refuses old output.** Started without restored state
/// ([`TaskInfo::restored_from`] is `None`), the sink fails if the directory already holds
/// committed parts: they are the output of another attempt, and adding to them would repeat
/// it. Restore that attempt's checkpoint to continue it, or opt in to
/// [`discard_existing`](Self::discard_existing) to delete them first.
pub struct FileSink<T> {
    dir: PathBuf,
    prefix: String,
    counter: u64,
    discard_existing: bool,
    file: Option<std::io::BufWriter<std::fs::File>>,
    _t: PhantomData<fn(T)>,
}

impl<T> FileSink<T> {
    /// A sink writing into directory `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink {
            dir: dir.into(),
            prefix: String::new(),
            counter: 0,
            discard_existing: false,
            file: None,
            _t: PhantomData,
        }
    }

    /// On a fresh start, delete the committed parts of earlier attempts instead of refusing
    /// the directory.
    pub fn discard_existing(mut self, discard: bool) -> Self {
        self.discard_existing = discard;
        self
    }

    /// A fresh start: refuse (or, if asked, delete) committed parts of earlier attempts.
    fn check_fresh_start(&self) -> Result<(), UserError> {
        refuse_or_discard(
            &self.dir,
            committed_parts(&self.dir)?,
            self.discard_existing,
            "FileSink::discard_existing, --discard-output",
        )
    }

    fn path(&self, name: &str, state: &str) -> PathBuf {
        match state {
            "" => self.dir.join(name),
            s => self.dir.join(format!(".{name}.{s}")),
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> UserError {
    format!("cannot {what} '{}': {e}", path.display()).into()
}

/// A fresh start of a file sink over `dir`, which holds the committed `parts` of earlier
/// attempts: refused (adding to them would repeat their output), or, if `discard`, they
/// are deleted first. `how` names the option that discards.
fn refuse_or_discard(
    dir: &Path,
    parts: Vec<PathBuf>,
    discard: bool,
    how: &str,
) -> Result<(), UserError> {
    let Some(first) = parts.first() else {
        return Ok(());
    };
    if !discard {
        return Err(format!(
            "the output directory '{}' holds {} committed part file(s) of an earlier attempt \
             (for example '{}'), and this attempt starts fresh: adding to them would repeat \
             their output. Restore the earlier attempt's checkpoint to continue it, or \
             discard the old output ({how})",
            dir.display(),
            parts.len(),
            first.display()
        )
        .into());
    }
    for p in &parts {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            // Another subtask of this attempt removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", p, e)),
        }
    }
    tracing::warn!(dir = %dir.display(), parts = parts.len(), "discarded the committed output of an earlier attempt (fresh start)");
    Ok(())
}

/// Deletes the `.inprogress` part files that no live writer owns: those of another process
/// or another generation (a killed run, an attempt before a restart). Their records were
/// never pre-committed, so no checkpoint refers to them, and the records come again from the
/// restored position. The subtasks of the running attempt share its process and generation,
/// so their files stay; each subtask may run this (a file already gone is fine).
fn remove_stale_in_progress(dir: &Path, pid: u32, generation: u64) -> Result<(), UserError> {
    let live = |name: &str| {
        // .part-{subtask}-{pid}-{nanos}-g{generation}-{counter}.inprogress
        let mut fields = name.trim_start_matches(".part-").split('-');
        let (_, p, _, g) = (fields.next(), fields.next(), fields.next(), fields.next());
        p == Some(pid.to_string().as_str()) && g == Some(format!("g{generation}").as_str())
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))?;
    let mut removed = 0usize;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(".part-") && name.ends_with(".inprogress")) || live(name) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &entry.path(), e)),
        }
    }
    if removed > 0 {
        tracing::debug!(dir = %dir.display(), removed, "removed in-progress part files of earlier attempts");
    }
    Ok(())
}

/// The committed part files of a [`FileSink`] directory, sorted by name.
///
/// # Errors
///
/// If the directory cannot be listed.
pub fn committed_parts(dir: &Path) -> Result<Vec<PathBuf>, UserError> {
    let mut parts = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with("part-")) {
            parts.push(entry.path());
        }
    }
    parts.sort();
    Ok(parts)
}

impl<T: Data + Display> TwoPhaseCommitSink for FileSink<T> {
    type Input = T;
    type Txn = PartFile;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("create", &self.dir, e))?;
        if info.restored_from.is_none() {
            self.check_fresh_start()?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.prefix = format!(
            "part-{}-{}-{:x}-g{}",
            info.subtask_index,
            std::process::id(),
            nanos,
            info.generation.get()
        );
        remove_stale_in_progress(&self.dir, std::process::id(), info.generation.get())
    }

    fn begin(&mut self) -> Result<PartFile, UserError> {
        self.counter += 1;
        let name = format!("{}-{:06}", self.prefix, self.counter);
        let path = self.path(&name, "inprogress");
        let f = std::fs::File::create(&path).map_err(|e| io_err("create", &path, e))?;
        self.file = Some(std::io::BufWriter::new(f));
        Ok(PartFile { name })
    }

    fn write(&mut self, txn: &mut PartFile, batch: Batch<T>) -> Result<(), UserError> {
        let path = self.path(&txn.name, "inprogress");
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| format!("no open part file for '{}'", path.display()))?;
        for v in batch {
            writeln!(f, "{v}").map_err(|e| io_err("write", &path, e))?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut PartFile) -> Result<(), UserError> {
        let from = self.path(&txn.name, "inprogress");
        if let Some(f) = self.file.take() {
            let f = f
                .into_inner()
                .map_err(|e| io_err("flush", &from, e.into_error()))?;
            f.sync_all().map_err(|e| io_err("sync", &from, e))?;
        }
        let to = self.path(&txn.name, "pending");
        std::fs::rename(&from, &to).map_err(|e| io_err("rename", &from, e))
    }

    fn commit(&mut self, txn: PartFile) -> Result<(), UserError> {
        let from = self.path(&txn.name, "pending");
        let to = self.path(&txn.name, "");
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            // Already committed (a commit repeated after a restore).
            Err(_) if to.exists() => Ok(()),
            Err(e) => Err(io_err("commit", &from, e)),
        }
    }

    fn abort(&mut self, txn: PartFile) -> Result<(), UserError> {
        self.file = None;
        for state in ["inprogress", "pending"] {
            let _ = std::fs::remove_file(self.path(&txn.name, state));
        }
        Ok(())
    }
}

/// How a [`PartitionedFileSink`] picks a record's partition: a relative directory such as
/// `dt=2025-01-01/hm=00:00`.
pub type PartitionFn<T> = std::sync::Arc<dyn Fn(&T) -> String + Send + Sync>;

/// A transaction of a [`PartitionedFileSink`]: one part file in each partition it wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartitionedParts {
    /// The part files' name (the same in every partition).
    pub name: String,
    /// The partitions (relative directories) written, filled at pre-commit.
    pub partitions: Vec<String>,
}

/// A [`FileSink`] whose records go into partition directories chosen per record (Flink's
/// `FileSink` with a bucket assigner, or a partitioned filesystem table): each transaction
/// writes one part file per partition it touches, `.NAME.inprogress`, `.NAME.pending` once
/// pre-committed and `NAME` once committed, exactly once as [`FileSink`]. Partitions are
/// relative paths without `..` (a record naming another fails the subtask).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::transactional::{PartitionedFileSink, committed_parts_under};
/// let dir = std::env::temp_dir().join(format!("pfs-doc-{}", std::process::id()));
/// let sink = PartitionedFileSink::<String>::new(&dir, |line: &String| {
///     format!("first={}", &line[..1])
/// });
/// # let _ = sink;
/// # let _ = committed_parts_under(&std::env::temp_dir().join("surely-missing-pfs-dir"));
/// ```
pub struct PartitionedFileSink<T> {
    dir: PathBuf,
    partition: PartitionFn<T>,
    prefix: String,
    counter: u64,
    discard_existing: bool,
    files: std::collections::HashMap<String, std::io::BufWriter<std::fs::File>>,
}

impl<T> Clone for PartitionedFileSink<T> {
    /// A new, unopened sink with the same directory and partitions.
    fn clone(&self) -> Self {
        PartitionedFileSink {
            dir: self.dir.clone(),
            partition: self.partition.clone(),
            prefix: String::new(),
            counter: 0,
            discard_existing: self.discard_existing,
            files: std::collections::HashMap::new(),
        }
    }
}

impl<T> PartitionedFileSink<T> {
    /// A sink writing under `dir`, into the partition `partition(record)` of each record.
    pub fn new(
        dir: impl Into<PathBuf>,
        partition: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Self {
        PartitionedFileSink {
            dir: dir.into(),
            partition: std::sync::Arc::new(partition),
            prefix: String::new(),
            counter: 0,
            discard_existing: false,
            files: std::collections::HashMap::new(),
        }
    }

    /// On a fresh start, delete the committed parts of earlier attempts instead of refusing
    /// the directory.
    pub fn discard_existing(mut self, discard: bool) -> Self {
        self.discard_existing = discard;
        self
    }

    fn path(&self, partition: &str, name: &str, state: &str) -> PathBuf {
        let d = self.dir.join(partition);
        match state {
            "" => d.join(name),
            s => d.join(format!(".{name}.{s}")),
        }
    }
}

/// The committed part files under a directory and its subdirectories (a
/// [`PartitionedFileSink`]'s output), sorted by path.
///
/// # Errors
///
/// If a directory cannot be listed.
pub fn committed_parts_under(dir: &Path) -> Result<Vec<PathBuf>, UserError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| io_err("list", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &d, e))?;
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("part-"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every directory under `dir` (itself included).
fn dirs_under(dir: &Path) -> Result<Vec<PathBuf>, UserError> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while let Some(d) = out.get(i).cloned() {
        i += 1;
        let entries = std::fs::read_dir(&d).map_err(|e| io_err("list", &d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io_err("list", &d, e))?.path();
            if path.is_dir() {
                out.push(path);
            }
        }
    }
    Ok(out)
}

impl<T: Data + Display> TwoPhaseCommitSink for PartitionedFileSink<T> {
    type Input = T;
    type Txn = PartitionedParts;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("create", &self.dir, e))?;
        if info.restored_from.is_none() {
            refuse_or_discard(
                &self.dir,
                committed_parts_under(&self.dir)?,
                self.discard_existing,
                "PartitionedFileSink::discard_existing",
            )?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.prefix = format!(
            "part-{}-{}-{:x}-g{}",
            info.subtask_index,
            std::process::id(),
            nanos,
            info.generation.get()
        );
        for d in dirs_under(&self.dir)? {
            remove_stale_in_progress(&d, std::process::id(), info.generation.get())?;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<PartitionedParts, UserError> {
        self.counter += 1;
        self.files.clear();
        Ok(PartitionedParts {
            name: format!("{}-{:06}", self.prefix, self.counter),
            partitions: Vec::new(),
        })
    }

    fn write(&mut self, txn: &mut PartitionedParts, batch: Batch<T>) -> Result<(), UserError> {
        for v in batch {
            let partition = (self.partition)(&v);
            let relative = Path::new(&partition);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "the partition {partition:?} is not a relative path inside the output \
                     directory"
                )
                .into());
            }
            if !self.files.contains_key(&partition) {
                let dir = self.dir.join(&partition);
                std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
                let path = self.path(&partition, &txn.name, "inprogress");
                let f = std::fs::File::create(&path).map_err(|e| io_err("create", &path, e))?;
                self.files
                    .insert(partition.clone(), std::io::BufWriter::new(f));
            }
            let path_of = |p: &str| self.dir.join(p);
            let f = self.files.get_mut(&partition).ok_or_else(|| {
                format!("no open part file in '{}'", path_of(&partition).display())
            })?;
            writeln!(f, "{v}").map_err(|e| io_err("write", &self.dir.join(&partition), e))?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut PartitionedParts) -> Result<(), UserError> {
        let mut files: Vec<(String, std::io::BufWriter<std::fs::File>)> =
            self.files.drain().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (partition, f) in files {
            let from = self.path(&partition, &txn.name, "inprogress");
            let f = f
                .into_inner()
                .map_err(|e| io_err("flush", &from, e.into_error()))?;
            f.sync_all().map_err(|e| io_err("sync", &from, e))?;
            let to = self.path(&partition, &txn.name, "pending");
            std::fs::rename(&from, &to).map_err(|e| io_err("rename", &from, e))?;
            txn.partitions.push(partition);
        }
        Ok(())
    }

    fn commit(&mut self, txn: PartitionedParts) -> Result<(), UserError> {
        for partition in &txn.partitions {
            let from = self.path(partition, &txn.name, "pending");
            let to = self.path(partition, &txn.name, "");
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                // Already committed (a commit repeated after a restore).
                Err(_) if to.exists() => {}
                Err(e) => return Err(io_err("commit", &from, e)),
            }
        }
        Ok(())
    }

    fn abort(&mut self, txn: PartitionedParts) -> Result<(), UserError> {
        let open: Vec<String> = self.files.drain().map(|(p, _)| p).collect();
        for partition in open.iter().chain(txn.partitions.iter()) {
            for state in ["inprogress", "pending"] {
                let _ = std::fs::remove_file(self.path(partition, &txn.name, state));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod partitioned_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn sink(d: &Path) -> PartitionedFileSink<String> {
        PartitionedFileSink::new(d, |l: &String| format!("k={}", &l[..1]))
    }

    fn lines(d: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for p in committed_parts_under(d).unwrap() {
            let part = p
                .parent()
                .unwrap()
                .strip_prefix(d)
                .unwrap()
                .display()
                .to_string();
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                out.push(format!("{part}:{l}"));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn records_become_visible_per_partition_only_when_committed() {
        let d = dir("commit");
        let mut s = sink(&d);
        s.open(&TaskInfo::standalone("t", 0, 1, 128)).unwrap();
        let mut txn = s.begin().unwrap();
        let batch: Batch<String> = ["a1", "b1", "a2"].iter().map(|x| x.to_string()).collect();
        s.write(&mut txn, batch).unwrap();
        assert!(lines(&d).is_empty());
        s.pre_commit(&mut txn).unwrap();
        assert!(lines(&d).is_empty(), "pre-committed is not visible");
        assert_eq!(txn.partitions, vec!["k=a", "k=b"]);
        s.commit(txn.clone()).unwrap();
        s.commit(txn).unwrap(); // again, after a restore: idempotent
        assert_eq!(lines(&d), vec!["k=a:a1", "k=a:a2", "k=b:b1"]);
        // A fresh start refuses the directory, unless told to discard it.
        let mut again = sink(&d);
        let e = again
            .open(&TaskInfo::standalone("t", 0, 1, 128))
            .unwrap_err();
        assert!(e.to_string().contains("earlier attempt"), "{e}");
        let mut discard = sink(&d).discard_existing(true);
        discard.open(&TaskInfo::standalone("t", 0, 1, 128)).unwrap();
        assert!(lines(&d).is_empty());
    }

    #[test]
    fn a_partition_outside_the_directory_is_refused_and_aborts_clean_up() {
        let d = dir("escape");
        let mut s = PartitionedFileSink::new(&d, |l: &String| l.clone());
        s.open(&TaskInfo::standalone("t", 0, 1, 128)).unwrap();
        let mut txn = s.begin().unwrap();
        let bad: Batch<String> = ["../up".to_string()].into_iter().collect();
        assert!(
            s.write(&mut txn, bad)
                .unwrap_err()
                .to_string()
                .contains("relative")
        );
        let ok: Batch<String> = ["x/y".to_string()].into_iter().collect();
        s.write(&mut txn, ok).unwrap();
        s.abort(txn).unwrap();
        assert!(lines(&d).is_empty());
        let left: Vec<_> = std::fs::read_dir(d.join("x/y")).unwrap().collect();
        assert!(left.is_empty(), "aborted files are removed");
    }
}
