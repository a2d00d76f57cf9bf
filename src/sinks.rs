//! The built-in sinks: collect, print, text file, discard.

use actorflow_runtime::CheckpointId;
use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow_runtime::operators::operator::TaskInfo;
use actorflow_runtime::operators::transactional::PendingCommits;
use actorflow_runtime::{Batch, Data, Sink, UserError};
use std::collections::HashSet;
use std::fmt::{Debug, Display};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The records gathered by [`DataStream::collect`](crate::DataStream::collect), shared by all
/// of its sink subtasks. Readable while the job runs and after it ends.
#[derive(Debug)]
pub struct Collected<T> {
    records: Arc<Mutex<Vec<T>>>,
    /// Transactions already committed (with checkpointing), so a repeated commit after a
    /// restore adds nothing.
    committed: Arc<Mutex<HashSet<TxnId>>>,
}

/// A collect transaction: (attempt token, counter). The token is unique to one sink instance
/// (a new one after every restore), so transactions of different runs never collide.
type TxnId = (u64, u64);

static COLLECT_ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected {
            records: self.records.clone(),
            committed: self.committed.clone(),
        }
    }
}

impl<T> Collected<T> {
    pub(crate) fn new() -> Self {
        Collected {
            records: Arc::new(Mutex::new(Vec::new())),
            committed: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn commit(&self, id: TxnId, records: Vec<T>) {
        let fresh = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        if fresh {
            self.lock().extend(records);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every record gathered so far, in arrival order (which, across parallel sink
    /// subtasks, is not deterministic).
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.lock())
    }

    /// Number of records gathered so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if nothing was gathered yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl<T: Clone> Collected<T> {
    /// A copy of the records gathered so far.
    pub fn snapshot(&self) -> Vec<T> {
        self.lock().clone()
    }
}

/// Gathers records into a [`Collected`]. With checkpointing it is exactly-once: records of a
/// checkpoint become visible when the checkpoint completes (a two-phase commit in memory).
pub(crate) struct CollectSink<T> {
    into: Collected<T>,
    checkpointing: bool,
    generation: actorflow_runtime::operators::operator::Generation,
    token: u64,
    counter: u64,
    current: Vec<T>,
    pending: PendingCommits<(TxnId, Vec<T>)>,
}

impl<T> CollectSink<T> {
    pub(crate) fn new(into: Collected<T>, info: &TaskInfo) -> Self {
        CollectSink {
            into,
            checkpointing: info.checkpointing,
            generation: info.generation.clone(),
            token: COLLECT_ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            counter: 0,
            current: Vec::new(),
            pending: PendingCommits::default(),
        }
    }
}

impl<T: Data> Sink for CollectSink<T> {
    type Input = T;
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<(), UserError> {
        if self.checkpointing {
            self.current.extend(batch.into_values());
        } else {
            self.into.lock().extend(batch.into_values());
        }
        Ok(())
    }

    async fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        self.counter += 1;
        let id = (self.token, self.counter);
        self.pending
            .push(checkpoint, (id, std::mem::take(&mut self.current)));
        self.pending.write_items(state)
    }

    async fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let pending = PendingCommits::<(TxnId, Vec<T>)>::restored(&restored)?;
        self.generation.ensure_current()?;
        for (id, records) in pending {
            self.into.commit(id, records);
        }
        Ok(())
    }

    async fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<(), UserError> {
        if !self.pending.has_upto(checkpoint) {
            return Ok(());
        }
        self.generation.ensure_current()?;
        for (id, records) in self.pending.take_upto(checkpoint) {
            self.into.commit(id, records);
        }
        Ok(())
    }

    fn is_transactional(&self) -> bool {
        self.checkpointing
    }
}

/// Flink's print prefix: `id:N> `, `N> ` (parallel), `id> `, or nothing.
pub(crate) fn print_prefix(identifier: Option<&str>, info: &TaskInfo) -> String {
    let mut prefix = identifier.unwrap_or("").to_string();
    if info.parallelism > 1 {
        if !prefix.is_empty() {
            prefix.push(':');
        }
        prefix.push_str(&(info.subtask_index + 1).to_string());
    }
    if !prefix.is_empty() {
        prefix.push_str("> ");
    }
    prefix
}

/// How a print sink writes one record after the prefix.
type Format<T> = fn(&mut String, &T);

pub(crate) struct PrintSink<T> {
    prefix: String,
    format: Format<T>,
}

impl<T> PrintSink<T> {
    /// Prints records with `{:?}` (strings quoted).
    pub(crate) fn new(identifier: Option<String>, info: &TaskInfo) -> Self
    where
        T: Debug,
    {
        PrintSink {
            prefix: print_prefix(identifier.as_deref(), info),
            format: |text, v| {
                use std::fmt::Write as _;
                let _ = write!(text, "{v:?}");
            },
        }
    }

    /// Prints records with `{}` (Flink's `toString`: strings as they are).
    pub(crate) fn display(identifier: Option<String>, info: &TaskInfo) -> Self
    where
        T: std::fmt::Display,
    {
        PrintSink {
            prefix: print_prefix(identifier.as_deref(), info),
            format: |text, v| {
                use std::fmt::Write as _;
                let _ = write!(text, "{v}");
            },
        }
    }
}

impl<T: Data> Sink for PrintSink<T> {
    type Input = T;
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<(), UserError> {
        let mut text = String::new();
        for v in batch.values() {
            text.push_str(&self.prefix);
            (self.format)(&mut text, v);
            text.push('\n');
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        lock.write_all(text.as_bytes())
            .and_then(|_| lock.flush())
            .map_err(|e| format!("cannot write to standard output: {e}").into())
    }
}

/// Whether a file sink may replace an existing output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Refuse to start if the output exists (Flink's default, `NO_OVERWRITE`).
    #[default]
    NoOverwrite,
    /// Replace the output.
    Overwrite,
}

pub(crate) struct TextFileSink<T> {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    _records: PhantomData<fn(T)>,
}

impl<T> TextFileSink<T> {
    /// The file of one subtask: `path` itself at parallelism 1, `path/N` above.
    pub(crate) fn create(path: &Path, mode: WriteMode, info: &TaskInfo) -> Result<Self, String> {
        if info.checkpointing {
            return Err(format!(
                "write_as_text('{}') cannot write exactly once: after a restart it would \
                 rewrite or refuse its file, losing or repeating output. With checkpointing, \
                 use the exactly-once file sink: add_sink(name, |_| \
                 Ok(TwoPhaseCommit::new(FileSink::new(dir)))) from actorflow::transactional",
                path.display()
            ));
        }
        let file = if info.parallelism > 1 {
            if path.is_file() {
                return Err(format!(
                    "'{}' is a file, but a text sink with parallelism {} writes a directory",
                    path.display(),
                    info.parallelism
                ));
            }
            std::fs::create_dir_all(path)
                .map_err(|e| format!("cannot create output directory '{}': {e}", path.display()))?;
            path.join((info.subtask_index + 1).to_string())
        } else {
            path.to_path_buf()
        };
        if mode == WriteMode::NoOverwrite && file.exists() {
            return Err(format!(
                "output '{}' already exists; remove it or use WriteMode::Overwrite",
                file.display()
            ));
        }
        let handle = File::create(&file)
            .map_err(|e| format!("cannot create output file '{}': {e}", file.display()))?;
        Ok(TextFileSink {
            path: file,
            out: Some(BufWriter::with_capacity(256 * 1024, handle)),
            _records: PhantomData,
        })
    }
}

impl<T: Data + Display> Sink for TextFileSink<T> {
    type Input = T;

    async fn write_batch(&mut self, batch: Batch<T>) -> Result<(), UserError> {
        let Some(out) = self.out.as_mut() else {
            return Err(format!("'{}' was already closed", self.path.display()).into());
        };
        for v in batch.values() {
            writeln!(out, "{v}")
                .map_err(|e| format!("cannot write '{}': {e}", self.path.display()))?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), UserError> {
        if let Some(mut out) = self.out.take() {
            out.flush()
                .and_then(|_| out.get_ref().sync_all())
                .map_err(|e| format!("cannot write '{}': {e}", self.path.display()))?;
        }
        Ok(())
    }
}

pub(crate) struct DiscardSink<T>(PhantomData<fn(T)>);

impl<T> DiscardSink<T> {
    pub(crate) fn new() -> Self {
        DiscardSink(PhantomData)
    }
}

impl<T: Data> Sink for DiscardSink<T> {
    type Input = T;
    async fn write_batch(&mut self, _batch: Batch<T>) -> Result<(), UserError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(index: usize, parallelism: u32) -> TaskInfo {
        TaskInfo::standalone("print", index, parallelism, 128)
    }

    #[test]
    fn print_prefix_matches_flink() {
        assert_eq!(print_prefix(None, &info(1, 4)), "2> ");
        assert_eq!(print_prefix(None, &info(0, 1)), "");
        assert_eq!(print_prefix(Some("out"), &info(2, 3)), "out:3> ");
        assert_eq!(print_prefix(Some("out"), &info(0, 1)), "out> ");
    }
}

#[cfg(test)]
mod print_tests {
    use super::*;

    fn line<T>(sink: &PrintSink<T>, v: &T) -> String {
        let mut text = sink.prefix.clone();
        (sink.format)(&mut text, v);
        text
    }

    #[test]
    fn print_quotes_strings_and_print_display_does_not() {
        let info = TaskInfo::standalone("print", 1, 2, 128);
        let v = "hello".to_string();
        assert_eq!(line(&PrintSink::new(None, &info), &v), "2> \"hello\"");
        assert_eq!(line(&PrintSink::display(None, &info), &v), "2> hello");
        let solo = TaskInfo::standalone("print", 0, 1, 128);
        assert_eq!(
            line(&PrintSink::display(Some("out".into()), &solo), &v),
            "out> hello"
        );
    }
}
