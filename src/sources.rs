//! The built-in sources. Each is created through
//! [`StreamExecutionEnvironment`](crate::StreamExecutionEnvironment) methods; the public types
//! carry their options.

use crate::env::ParallelSource;
use actorflow_runtime::operators::operator::TaskInfo;
use actorflow_runtime::{Collector, Data, Source, SourceStatus, UserError};
use std::collections::VecDeque;
use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tracing::warn;

/// Records a source emits per call.
const BATCH: usize = 1024;

/// The part `[start, end)` of `0..count` that subtask `index` of `parallelism` owns.
fn split(count: u64, index: usize, parallelism: u32) -> (u64, u64) {
    let (c, i, p) = (count as u128, index as u128, parallelism.max(1) as u128);
    ((c * i / p) as u64, (c * (i + 1) / p) as u64)
}

/// Paces one source subtask at a rate in records per second, on tokio's clock (so
/// paused-time tests control it).
struct Pacer {
    rate: f64,
    started: Option<Instant>,
    emitted: u64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Pacer {
            rate,
            started: None,
            emitted: 0,
        }
    }

    /// Waits until the next record is due, then says how many may go out now (at least 1,
    /// at most `max`). Cancel-safe: nothing changes before the wait ends.
    async fn permit(&mut self, max: u64) -> u64 {
        let started = *self.started.get_or_insert_with(Instant::now);
        // Record number `emitted` may go out at `started + emitted / rate`.
        tokio::time::sleep_until(
            started + Duration::from_secs_f64(self.emitted as f64 / self.rate),
        )
        .await;
        let due = (started.elapsed().as_secs_f64() * self.rate) as u64 + 1;
        due.saturating_sub(self.emitted).clamp(1, max.max(1))
    }

    fn emitted(&mut self, n: u64) {
        self.emitted += n;
    }
}

/// Checks a rate limit and shares it between `parallelism` subtasks.
fn per_subtask_rate(rate: Option<f64>, parallelism: u32) -> Result<Option<f64>, String> {
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0) => Err(format!(
            "the rate limit must be a positive number of records per second, got {r}"
        )),
        r => Ok(r.map(|r| r / f64::from(parallelism.max(1)))),
    }
}

// ----- collection and iterator --------------------------------------------------------

/// Emits the elements of a vector, in order, from one subtask.
pub(crate) struct CollectionSource<T> {
    items: Arc<Vec<T>>,
}

impl<T> CollectionSource<T> {
    pub(crate) fn new(items: Vec<T>) -> Self {
        CollectionSource {
            items: Arc::new(items),
        }
    }
}

/// The running form of [`CollectionSource`].
pub(crate) struct CollectionReader<T> {
    items: Arc<Vec<T>>,
    next: usize,
}

impl<T: Data + Sync> ParallelSource for CollectionSource<T> {
    type Source = CollectionReader<T>;
    fn create(&self, _: &TaskInfo) -> Result<Self::Source, String> {
        Ok(CollectionReader {
            items: self.items.clone(),
            next: 0,
        })
    }
    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }
}

impl<T: Data + Sync> Source for CollectionReader<T> {
    type Output = T;
    fn snapshot_state(
        &mut self,
        _: actorflow_runtime::CheckpointId,
        state: &mut actorflow_runtime::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        state.push_item(&(self.next as u64))
    }

    fn restore_state(
        &mut self,
        restored: actorflow_runtime::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        // A non-parallel source: at most one item (none once it ended).
        self.next = restored
            .state
            .items::<u64>()?
            .first()
            .map_or(self.items.len(), |n| *n as usize);
        Ok(())
    }
    async fn next_batch(&mut self, out: &mut Collector<T>) -> Result<SourceStatus, UserError> {
        let end = (self.next + BATCH).min(self.items.len());
        for item in &self.items[self.next..end] {
            out.collect(item.clone());
        }
        self.next = end;
        Ok(if end == self.items.len() {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }
}

/// Emits what a cloned iterable yields, from one subtask.
pub(crate) struct IterSource<I> {
    iter: I,
}

impl<I> IterSource<I> {
    pub(crate) fn new(iter: I) -> Self {
        IterSource { iter }
    }
}

/// The running form of [`IterSource`]. Its checkpointed position is the number of items
/// emitted: after a restore, a fresh clone of the iterable skips that many (which is exact
/// when the iterable yields the same items each time, as collections and ranges do).
pub(crate) struct IterReader<It> {
    iter: It,
    emitted: u64,
    skip: u64,
}

impl<I> ParallelSource for IterSource<I>
where
    I: IntoIterator + Clone + Send + Sync + 'static,
    I::IntoIter: Send + 'static,
    I::Item: Data,
{
    type Source = IterReader<I::IntoIter>;
    fn create(&self, _: &TaskInfo) -> Result<Self::Source, String> {
        Ok(IterReader {
            iter: self.iter.clone().into_iter(),
            emitted: 0,
            skip: 0,
        })
    }
    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }
}

impl<It> Source for IterReader<It>
where
    It: Iterator + Send + 'static,
    It::Item: Data,
{
    type Output = It::Item;

    /// One item: how many items were emitted.
    fn snapshot_state(
        &mut self,
        _: actorflow_runtime::CheckpointId,
        state: &mut actorflow_runtime::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        state.push_item(&self.emitted)
    }

    fn restore_state(
        &mut self,
        restored: actorflow_runtime::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        // A non-parallel source: one item.
        self.skip = restored.state.items::<u64>()?.first().copied().unwrap_or(0);
        self.emitted = self.skip;
        Ok(())
    }

    async fn next_batch(
        &mut self,
        out: &mut Collector<It::Item>,
    ) -> Result<SourceStatus, UserError> {
        if self.skip > 0 {
            // Skip what the restored checkpoint already emitted, a chunk per call.
            for _ in 0..self.skip.min(64 * BATCH as u64) {
                self.skip -= 1;
                if self.iter.next().is_none() {
                    self.skip = 0;
                    return Ok(SourceStatus::End);
                }
            }
            if self.skip > 0 {
                return Ok(SourceStatus::More);
            }
        }
        for _ in 0..BATCH {
            match self.iter.next() {
                Some(v) => {
                    self.emitted += 1;
                    out.collect(v);
                }
                None => return Ok(SourceStatus::End),
            }
        }
        Ok(SourceStatus::More)
    }
}

// ----- sequence and generator ---------------------------------------------------------

/// Emits `from..=to`, split into contiguous parts over its subtasks.
pub(crate) struct SequenceSource {
    from: u64,
    count: u64,
}

impl SequenceSource {
    pub(crate) fn new(from: u64, to: u64) -> Self {
        SequenceSource {
            from,
            count: if to >= from {
                (to - from).saturating_add(1)
            } else {
                0
            },
        }
    }
}

fn identity(i: u64) -> u64 {
    i
}

impl ParallelSource for SequenceSource {
    type Source = GeneratorReader<u64, fn(u64) -> u64>;
    fn create(&self, task: &TaskInfo) -> Result<Self::Source, String> {
        let (start, end) = split(self.count, task.subtask_index, task.parallelism);
        Ok(GeneratorReader::new(
            identity,
            self.from,
            (start, end),
            task,
            None,
        ))
    }
}

/// A parallel source that calls `f(i)` for `i` in `0..count` (Flink's `DataGeneratorSource`).
/// Each subtask generates a contiguous part of the indexes, in ascending order.
///
/// # Examples
///
/// ```
/// use actorflow::GeneratorSource;
/// let mut out = actorflow::testing::example_with(2, |env| {
///     env.from_generator(GeneratorSource::new(4, |i| format!("event-{i}")))
/// });
/// out.sort();
/// assert_eq!(out, vec!["event-0", "event-1", "event-2", "event-3"]);
/// ```
#[derive(Clone)]
pub struct GeneratorSource<T, F> {
    f: F,
    count: u64,
    rate: Option<f64>,
    _records: PhantomData<fn() -> T>,
}

impl<T, F> GeneratorSource<T, F>
where
    T: Data,
    F: Fn(u64) -> T + Clone + Send + Sync + 'static,
{
    /// Generates `count` records (`u64::MAX` for an endless stream).
    pub fn new(count: u64, f: F) -> Self {
        GeneratorSource {
            f,
            count,
            rate: None,
            _records: PhantomData,
        }
    }

    /// Limits the whole source (all subtasks together) to `records_per_second`, shared evenly
    /// between subtasks (Flink's `RateLimiterStrategy.perSecond`). The limiter runs on tokio's
    /// clock, so paused-time tests control it.
    pub fn with_rate_limit(mut self, records_per_second: f64) -> Self {
        self.rate = Some(records_per_second);
        self
    }
}

impl<T, F> ParallelSource for GeneratorSource<T, F>
where
    T: Data,
    F: Fn(u64) -> T + Clone + Send + Sync + 'static,
{
    type Source = GeneratorReader<T, F>;
    fn create(&self, task: &TaskInfo) -> Result<Self::Source, String> {
        let rate = per_subtask_rate(self.rate, task.parallelism)?;
        let (start, end) = split(self.count, task.subtask_index, task.parallelism);
        Ok(GeneratorReader::new(
            self.f.clone(),
            0,
            (start, end),
            task,
            rate,
        ))
    }
}

/// The running form of the sequence and generator sources: calls `generate(offset + i)` for
/// its part of the indexes.
///
/// Its position is the list of index ranges it still has to generate. Checkpoints store it as
/// union state; on restore every new subtask reads all old subtasks' remaining ranges and
/// takes an equal share of their total, so at any parallelism each index is generated exactly
/// once and the subtasks share the work (and a rate limit) evenly.
pub struct GeneratorReader<T, F> {
    generate: F,
    offset: u64,
    /// The range being generated: `[next, end)`.
    next: u64,
    end: u64,
    /// Ranges after it, in order.
    queued: std::collections::VecDeque<(u64, u64)>,
    index: usize,
    parallelism: u32,
    pacer: Option<Pacer>,
    _records: PhantomData<fn() -> T>,
}

impl<T, F> GeneratorReader<T, F> {
    fn new(
        generate: F,
        offset: u64,
        (start, end): (u64, u64),
        task: &TaskInfo,
        rate: Option<f64>,
    ) -> Self {
        GeneratorReader {
            generate,
            offset,
            next: start,
            end,
            queued: Default::default(),
            index: task.subtask_index,
            parallelism: task.parallelism,
            pacer: rate.map(Pacer::new),
            _records: PhantomData,
        }
    }

    /// Every range still to generate, in order.
    fn remaining(&self) -> Vec<(u64, u64)> {
        std::iter::once((self.next, self.end))
            .chain(self.queued.iter().copied())
            .filter(|(a, b)| a < b)
            .collect()
    }

    /// This subtask's equal share of `ranges` (all old subtasks' remaining ranges, in order).
    fn take_share(&mut self, ranges: &[(u64, u64)]) {
        let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        let (from, to) = split(total, self.index, self.parallelism);
        let mut mine = std::collections::VecDeque::new();
        let mut seen = 0u64;
        for &(a, b) in ranges {
            let len = b - a;
            // The overlap of [seen, seen + len) with [from, to), mapped back into [a, b).
            let lo = from.max(seen);
            let hi = to.min(seen + len);
            if lo < hi {
                mine.push_back((a + (lo - seen), a + (hi - seen)));
            }
            seen += len;
        }
        let (next, end) = mine.pop_front().unwrap_or((0, 0));
        self.next = next;
        self.end = end;
        self.queued = mine;
    }
}

impl<T: Data, F: Fn(u64) -> T + Send + 'static> Source for GeneratorReader<T, F> {
    type Output = T;
    /// One union item: the ranges this subtask still has to generate.
    fn snapshot_state(
        &mut self,
        _: actorflow_runtime::CheckpointId,
        state: &mut actorflow_runtime::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        state.push_union(self.index, &self.remaining())
    }

    fn restore_state(
        &mut self,
        restored: actorflow_runtime::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        let mut old: Vec<(usize, Vec<(u64, u64)>)> = restored.state.union_items()?;
        if old.is_empty() && !restored.state.items.is_empty() {
            // Written by an earlier version: one `(next, end)` list item per old subtask,
            // already split over the new ones.
            let mine: Vec<(u64, u64)> = restored.state.items()?;
            let mut mine: std::collections::VecDeque<_> = mine.into();
            let (next, end) = mine.pop_front().unwrap_or((0, 0));
            (self.next, self.end, self.queued) = (next, end, mine);
            return Ok(());
        }
        old.sort_by_key(|(i, _)| *i);
        let ranges: Vec<(u64, u64)> = old.into_iter().flat_map(|(_, r)| r).collect();
        self.take_share(&ranges);
        Ok(())
    }

    async fn next_batch(&mut self, out: &mut Collector<T>) -> Result<SourceStatus, UserError> {
        if self.next >= self.end {
            return Ok(SourceStatus::End);
        }
        let mut n = (self.end - self.next).min(BATCH as u64);
        if let Some(pacer) = &mut self.pacer {
            n = pacer.permit(n).await;
            pacer.emitted(n);
        }
        out.reserve(n as usize);
        for i in self.next..self.next + n {
            out.collect((self.generate)(self.offset.wrapping_add(i)));
        }
        self.next += n;
        if self.next >= self.end
            && let Some((next, end)) = self.queued.pop_front()
        {
            self.next = next;
            self.end = end;
        }
        Ok(if self.next >= self.end {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }
}

// ----- text files -----------------------------------------------------------------------

/// What a text source does with a line that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Utf8Policy {
    /// Fail the job with the file, line number and byte offset (the default: nothing is
    /// silently changed or lost).
    #[default]
    Fail,
    /// Replace invalid sequences with U+FFFD and go on (what Java's decoder, and so Flink,
    /// does).
    Replace,
    /// Drop the line, logging a warning with the file and line number.
    Skip,
}

/// Options of [`read_text_file_with`](crate::StreamExecutionEnvironment::read_text_file_with).
#[derive(Debug, Clone, Default)]
pub struct TextFileOptions {
    /// What to do with invalid UTF-8.
    pub utf8: Utf8Policy,
    /// At most this many lines per second, all source subtasks together (`None`: as fast as
    /// the job takes them).
    pub rate_limit: Option<f64>,
}

impl TextFileOptions {
    /// Sets the UTF-8 policy.
    pub fn utf8_policy(mut self, policy: Utf8Policy) -> Self {
        self.utf8 = policy;
        self
    }

    /// Reads at most `lines_per_second` lines per second, shared evenly between the source
    /// subtasks (Flink's `RateLimiterStrategy.perSecond`), to replay a file at a steady rate
    /// in demos and benchmarks. Lines skipped under [`Utf8Policy::Skip`] count too.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::TextFileOptions;
    /// let options = TextFileOptions::default().rate_limit(10_000.0);
    /// assert_eq!(options.rate_limit, Some(10_000.0));
    /// ```
    pub fn rate_limit(mut self, lines_per_second: f64) -> Self {
        self.rate_limit = Some(lines_per_second);
        self
    }
}

/// Lines of a file or of every file in a directory.
pub(crate) struct TextFileSource {
    path: PathBuf,
    options: TextFileOptions,
}

impl TextFileSource {
    pub(crate) fn new(path: PathBuf, options: TextFileOptions) -> Self {
        TextFileSource { path, options }
    }
}

/// The files under `path`: the file itself, or the directory's files sorted by name, skipping
/// hidden ones (starting with `.` or `_`, as Flink's default filter).
fn list_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read input path '{}': {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let entries = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list input directory '{}': {e}", path.display()))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot list input directory '{}': {e}", path.display()))?;
        let name = entry.file_name();
        let hidden = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        if !hidden && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

impl ParallelSource for TextFileSource {
    type Source = TextFileReader;
    fn create(&self, task: &TaskInfo) -> Result<Self::Source, String> {
        let files = list_files(&self.path)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % task.parallelism.max(1) as usize == task.subtask_index)
            .map(|(_, f)| (f, 0, 0))
            .collect();
        let rate = per_subtask_rate(self.options.rate_limit, task.parallelism)?;
        Ok(TextFileReader {
            files,
            current: None,
            policy: self.options.utf8,
            buf: Vec::new(),
            pacer: rate.map(Pacer::new),
        })
    }
}

struct OpenFile {
    path: PathBuf,
    file: std::fs::File,
    /// Lines emitted so far.
    line: u64,
    /// Byte offset of `buf[0]` in the file.
    offset: u64,
}

/// Reads its files one after the other in chunks, cutting lines at `\n`.
///
/// Reads are blocking (`std::fs`) and small (one chunk per call), so the future completes
/// without waiting: it is trivially cancel-safe.
pub(crate) struct TextFileReader {
    /// Files still to read, with the byte offset and line number to start at.
    files: VecDeque<(PathBuf, u64, u64)>,
    current: Option<OpenFile>,
    policy: Utf8Policy,
    /// Bytes read but not emitted yet: at most one partial line, unless the last call
    /// stopped at a batch's worth of lines or at the rate limit.
    buf: Vec<u8>,
    pacer: Option<Pacer>,
}

/// Bytes read per call.
const CHUNK: usize = 256 * 1024;

/// Decodes one line (dropping a trailing `\r`) under `policy`; `None` if it is skipped.
/// `origin` names the file or socket, `offset` is the line's byte offset in a file.
fn decode_line(
    bytes: &[u8],
    policy: Utf8Policy,
    origin: &str,
    line: u64,
    offset: Option<u64>,
) -> Result<Option<String>, UserError> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Some(s.to_owned())),
        Err(e) => match policy {
            Utf8Policy::Fail => {
                let at = match offset {
                    Some(o) => format!(" (byte {} of the file)", o + e.valid_up_to() as u64),
                    None => String::new(),
                };
                Err(format!(
                    "invalid UTF-8 in {origin} at line {line}{at}; use Utf8Policy::Replace or \
                     Utf8Policy::Skip to read it anyway"
                )
                .into())
            }
            Utf8Policy::Replace => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            Utf8Policy::Skip => {
                warn!(%origin, line, "skipping a line that is not valid UTF-8");
                Ok(None)
            }
        },
    }
}

/// Where lines come from, for messages and for counting.
struct LineCursor<'a> {
    origin: &'a str,
    policy: Utf8Policy,
    /// Lines emitted so far.
    line: &'a mut u64,
    /// Byte offset of the buffer's start in its file, if it is a file.
    offset: Option<&'a mut u64>,
}

impl LineCursor<'_> {
    /// Emits the complete lines of `buf` (and the unterminated rest at end of input), at most
    /// `limit` of them, then removes what it took from `buf`; how many lines it took.
    fn emit(
        &mut self,
        buf: &mut Vec<u8>,
        at_end: bool,
        limit: usize,
        out: &mut Collector<String>,
    ) -> Result<usize, UserError> {
        let tail = (at_end && !buf.is_empty() && !buf.ends_with(b"\n")).then_some(buf.len());
        let mut start = 0;
        let mut taken = 0;
        for end in memchr::memchr_iter(b'\n', buf).chain(tail) {
            if taken == limit {
                break;
            }
            taken += 1;
            *self.line += 1;
            let at = self.offset.as_deref().map(|o| o + start as u64);
            if let Some(s) =
                decode_line(&buf[start..end], self.policy, self.origin, *self.line, at)?
            {
                out.collect(s);
            }
            start = (end + 1).min(buf.len());
        }
        buf.drain(..start);
        if let Some(o) = self.offset.as_deref_mut() {
            *o += start as u64;
        }
        Ok(taken)
    }
}

impl Source for TextFileReader {
    type Output = String;

    /// One item per file not yet read to its end: its path, the byte offset just after the
    /// last line emitted, and that line's number.
    fn snapshot_state(
        &mut self,
        _: actorflow_runtime::CheckpointId,
        state: &mut actorflow_runtime::checkpoint::types::OperatorState,
    ) -> Result<(), UserError> {
        if let Some(f) = &self.current {
            state.push_item(&(f.path.to_string_lossy().into_owned(), f.offset, f.line))?;
        }
        for (p, offset, line) in &self.files {
            state.push_item(&(p.to_string_lossy().into_owned(), *offset, *line))?;
        }
        Ok(())
    }

    fn restore_state(
        &mut self,
        restored: actorflow_runtime::checkpoint::types::RestoredState,
    ) -> Result<(), UserError> {
        let items: Vec<(String, u64, u64)> = restored.state.items()?;
        self.current = None;
        self.buf.clear();
        self.files = items
            .into_iter()
            .map(|(p, o, l)| (PathBuf::from(p), o, l))
            .collect();
        Ok(())
    }

    async fn next_batch(&mut self, out: &mut Collector<String>) -> Result<SourceStatus, UserError> {
        let mut budget = match &mut self.pacer {
            Some(p) => p.permit(BATCH as u64).await as usize,
            None => usize::MAX,
        };
        let mut taken = 0;
        let status = self.read_lines(&mut budget, &mut taken, out);
        if let Some(p) = &mut self.pacer {
            p.emitted(taken as u64);
        }
        status
    }
}

impl TextFileReader {
    /// Emits up to `budget` lines (and at most a batch), adding them to `taken`.
    fn read_lines(
        &mut self,
        budget: &mut usize,
        taken: &mut usize,
        out: &mut Collector<String>,
    ) -> Result<SourceStatus, UserError> {
        while out.len() < BATCH && *budget > 0 {
            let Some(file) = self.current.as_mut() else {
                let Some((path, offset, line)) = self.files.pop_front() else {
                    return Ok(SourceStatus::End);
                };
                let mut handle = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
                if offset > 0 {
                    use std::io::Seek;
                    handle.seek(std::io::SeekFrom::Start(offset)).map_err(|e| {
                        format!("cannot seek '{}' to byte {offset}: {e}", path.display())
                    })?;
                }
                self.current = Some(OpenFile {
                    path,
                    file: handle,
                    line,
                    offset,
                });
                self.buf.clear();
                continue;
            };
            // Read more only when no complete line is left (a rate limit can leave some).
            let mut eof = false;
            if memchr::memchr(b'\n', &self.buf).is_none() {
                let old = self.buf.len();
                self.buf.resize(old + CHUNK, 0);
                let read = file.file.read(&mut self.buf[old..]);
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        let msg = format!("cannot read '{}': {e}", file.path.display());
                        self.buf.truncate(old);
                        return Err(msg.into());
                    }
                };
                self.buf.truncate(old + n);
                eof = n == 0;
            }
            let origin = format!("'{}'", file.path.display());
            let n = LineCursor {
                origin: &origin,
                policy: self.policy,
                line: &mut file.line,
                offset: Some(&mut file.offset),
            }
            .emit(&mut self.buf, eof, (*budget).min(BATCH - out.len()), out)?;
            *budget -= n;
            *taken += n;
            if eof && self.buf.is_empty() {
                self.current = None;
            }
        }
        Ok(SourceStatus::More)
    }
}

// ----- socket ---------------------------------------------------------------------------

/// Lines from a TCP server.
pub(crate) struct SocketSource {
    host: String,
    port: u16,
}

impl SocketSource {
    pub(crate) fn new(host: &str, port: u16) -> Self {
        SocketSource {
            host: host.to_string(),
            port,
        }
    }
}

impl ParallelSource for SocketSource {
    type Source = SocketReader;
    fn create(&self, _: &TaskInfo) -> Result<Self::Source, String> {
        Ok(SocketReader {
            address: format!("{}:{}", self.host, self.port),
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
            line: 0,
        })
    }
    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }
    fn is_bounded(&self) -> bool {
        false
    }
}

/// The running form of the socket source. Reading uses `read_buf`, which is cancel-safe.
pub(crate) struct SocketReader {
    address: String,
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
    line: u64,
}

impl Source for SocketReader {
    type Output = String;

    async fn open(&mut self, _: &TaskInfo) -> Result<(), UserError> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        self.stream = Some(stream);
        Ok(())
    }

    async fn next_batch(&mut self, out: &mut Collector<String>) -> Result<SourceStatus, UserError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(SourceStatus::End);
        };
        self.buf.reserve(64 * 1024);
        let n = stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| format!("reading from {}: {e}", self.address))?;
        let eof = n == 0;
        let origin = format!("the stream from {}", self.address);
        LineCursor {
            origin: &origin,
            policy: Utf8Policy::Fail,
            line: &mut self.line,
            offset: None,
        }
        .emit(&mut self.buf, eof, usize::MAX, out)?;
        if eof {
            self.stream = None;
            return Ok(SourceStatus::End);
        }
        Ok(SourceStatus::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(index: usize, parallelism: u32) -> GeneratorReader<u64, fn(u64) -> u64> {
        let task = TaskInfo::standalone("gen", index, parallelism, 128);
        GeneratorReader::new(identity, 0, (0, 0), &task, None)
    }

    /// Restoring at any parallelism hands every remaining index to exactly one subtask, in
    /// equal shares (so a rate limit split evenly keeps the total rate).
    #[test]
    fn restored_ranges_are_shared_evenly_and_exactly_once() {
        let old = [(5u64, 10u64), (20, 21), (40, 60)];
        let total: u64 = old.iter().map(|(a, b)| b - a).sum();
        for p in [1u32, 2, 3, 4, 7, 40] {
            let mut all = Vec::new();
            let mut sizes = Vec::new();
            for i in 0..p as usize {
                let mut r = reader(i, p);
                r.take_share(&old);
                let mine: Vec<u64> = r.remaining().iter().flat_map(|&(a, b)| a..b).collect();
                sizes.push(mine.len() as u64);
                all.extend(mine);
            }
            all.sort();
            let expected: Vec<u64> = old.iter().flat_map(|&(a, b)| a..b).collect();
            assert_eq!(all, expected, "p={p}");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(
                hi - lo <= 1 && sizes.iter().sum::<u64>() == total,
                "p={p}: {sizes:?}"
            );
        }
    }

    /// A checkpoint of the earlier format (one `(next, end)` list item per subtask, split by
    /// the runtime) restores the ranges it hands this subtask.
    #[test]
    fn the_earlier_list_item_format_still_restores() {
        use actorflow_runtime::Source;
        use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
        let mut state = OperatorState::default();
        state.push_item(&(7u64, 9u64)).unwrap();
        let mut r = reader(0, 1);
        r.restore_state(RestoredState {
            state,
            same_index: Some(0),
        })
        .unwrap();
        assert_eq!(r.remaining(), vec![(7, 9)]);
    }
}
