//! Records and batches: the typed [`Batch`] that operators see, the type-erased [`DataBatch`]
//! that travels on lanes, and the [`Collector`] that user functions emit into.

use crate::types::{Timestamp, Watermark, WatermarkStatus};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

pub use crate::types::Data;

/// A batch of records of one type, with optional per-record event timestamps.
///
/// Values and timestamps are kept as two parallel vectors (a struct of arrays) so that a stream
/// without event time pays nothing for it. Either every record of a batch has a timestamp or
/// none has.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::{Batch, Timestamp};
/// let mut b = Batch::new();
/// b.push_with_timestamp("a", Timestamp(5));
/// b.push_with_timestamp("b", Timestamp(7));
/// assert_eq!(b.len(), 2);
/// let pairs: Vec<_> = b.into_iter_timestamped().collect();
/// assert_eq!(pairs, vec![("a", Some(Timestamp(5))), ("b", Some(Timestamp(7)))]);
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Batch<T> {
    values: Vec<T>,
    timestamps: Option<Vec<Timestamp>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch::new()
    }
}

impl<T> Batch<T> {
    /// An empty batch.
    pub fn new() -> Self {
        Batch {
            values: Vec::new(),
            timestamps: None,
        }
    }

    /// An empty batch with room for `n` records.
    pub fn with_capacity(n: usize) -> Self {
        Batch {
            values: Vec::with_capacity(n),
            timestamps: None,
        }
    }

    /// A batch of records without timestamps.
    pub fn from_values(values: Vec<T>) -> Self {
        Batch {
            values,
            timestamps: None,
        }
    }

    /// A batch whose records all carry timestamps.
    ///
    /// Returns `None` if the two vectors differ in length.
    pub fn from_parts(values: Vec<T>, timestamps: Option<Vec<Timestamp>>) -> Option<Self> {
        match &timestamps {
            Some(ts) if ts.len() != values.len() => None,
            _ => Some(Batch { values, timestamps }),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if the batch holds no records.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The record values.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// The timestamps, parallel to [`values`](Self::values), if the records carry event time.
    pub fn timestamps(&self) -> Option<&[Timestamp]> {
        self.timestamps.as_deref()
    }

    /// Appends a record without a timestamp.
    ///
    /// If the batch already holds timestamped records, the new record gets
    /// [`Timestamp::MIN`], the marker for "no timestamp".
    #[inline]
    pub fn push(&mut self, value: T) {
        self.values.push(value);
        if let Some(ts) = &mut self.timestamps {
            ts.push(Timestamp::MIN);
        }
    }

    /// Appends a record with its event timestamp.
    #[inline]
    pub fn push_with_timestamp(&mut self, value: T, ts: Timestamp) {
        let stamps = self.timestamps.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(self.values.capacity());
            v.resize(self.values.len(), Timestamp::MIN);
            v
        });
        stamps.push(ts);
        self.values.push(value);
    }

    /// Appends a record with an optional timestamp.
    #[inline]
    pub fn push_opt(&mut self, value: T, ts: Option<Timestamp>) {
        match ts {
            Some(ts) => self.push_with_timestamp(value, ts),
            None => self.push(value),
        }
    }

    /// Splits the batch into its values and optional timestamps.
    pub fn into_parts(self) -> (Vec<T>, Option<Vec<Timestamp>>) {
        (self.values, self.timestamps)
    }

    /// The values, dropping timestamps.
    pub fn into_values(self) -> Vec<T> {
        self.values
    }

    /// Iterates over `(value, timestamp)` pairs.
    pub fn into_iter_timestamped(self) -> impl Iterator<Item = (T, Option<Timestamp>)> {
        let Batch { values, timestamps } = self;
        let mut ts = timestamps.map(|t| t.into_iter());
        values.into_iter().map(move |v| {
            let t = ts.as_mut().and_then(|it| it.next());
            (v, t)
        })
    }

    /// Removes and returns the first `n` records (or all, if fewer), keeping the rest.
    pub fn split_front(&mut self, n: usize) -> Batch<T> {
        if n >= self.values.len() {
            return std::mem::take(self);
        }
        let rest_values = self.values.split_off(n);
        let front_values = std::mem::replace(&mut self.values, rest_values);
        let front_ts = self.timestamps.as_mut().map(|ts| {
            let rest = ts.split_off(n);
            std::mem::replace(ts, rest)
        });
        Batch {
            values: front_values,
            timestamps: front_ts,
        }
    }

    /// Cuts off as many full batches of exactly `size` records as the batch holds, front
    /// first, handing each to `f`; the remainder (fewer than `size` records) stays.
    pub fn drain_full_chunks(&mut self, size: usize, mut f: impl FnMut(Batch<T>)) {
        let len = self.values.len();
        if size == 0 || len < size {
            return;
        }
        if len == size {
            f(std::mem::take(self));
            return;
        }
        let full = len / size * size;
        let rest = Batch {
            values: self.values.split_off(full),
            timestamps: self.timestamps.as_mut().map(|ts| ts.split_off(full)),
        };
        let whole = std::mem::replace(self, rest);
        let mut values = whole.values.into_iter();
        let mut stamps = whole.timestamps.map(Vec::into_iter);
        for _ in 0..full / size {
            let v: Vec<T> = values.by_ref().take(size).collect();
            let t = stamps.as_mut().map(|s| s.by_ref().take(size).collect());
            f(Batch {
                values: v,
                timestamps: t,
            });
        }
    }

    /// Moves every record of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut Batch<T>) {
        match (&mut self.timestamps, other.timestamps.take()) {
            (Some(mine), Some(mut theirs)) => mine.append(&mut theirs),
            (Some(mine), None) => mine.resize(mine.len() + other.values.len(), Timestamp::MIN),
            (None, Some(mut theirs)) => {
                let mut stamps = Vec::with_capacity(self.values.len() + theirs.len());
                stamps.resize(self.values.len(), Timestamp::MIN);
                stamps.append(&mut theirs);
                self.timestamps = Some(stamps);
            }
            (None, None) => {}
        }
        self.values.append(&mut other.values);
    }
}

impl<T> FromIterator<T> for Batch<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Batch::from_values(iter.into_iter().collect())
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.values.into_iter()
    }
}

/// A [`Batch`] with its record type erased, as it travels on lanes between subtasks and
/// between chained operators.
///
/// The receiving operator knows the type from the graph and turns it back with
/// [`downcast`](Self::downcast): one check per batch, not per record.
pub struct DataBatch {
    len: usize,
    payload: Box<dyn Any + Send>,
    clone_fn: fn(&(dyn Any + Send)) -> Option<Box<dyn Any + Send>>,
    encode_fn: EncodeFn,
    type_name: fn() -> &'static str,
}

/// Serializes an erased batch; `None` if the payload is not a `Batch<T>`.
type EncodeFn = fn(&(dyn Any + Send)) -> Option<Result<Vec<u8>, postcard::Error>>;

fn encode_batch<T: Data>(payload: &(dyn Any + Send)) -> Option<Result<Vec<u8>, postcard::Error>> {
    payload
        .downcast_ref::<Batch<T>>()
        .map(postcard::to_allocvec)
}

fn clone_batch<T: Data>(payload: &(dyn Any + Send)) -> Option<Box<dyn Any + Send>> {
    payload
        .downcast_ref::<Batch<T>>()
        .map(|b| Box::new(b.clone()) as Box<dyn Any + Send>)
}

/// The record type of a [`DataBatch`] is not the one the receiver expected. This is a bug in
/// how the graph was wired, never a user error.
#[derive(Debug, thiserror::Error)]
#[error("batch of `{found}` where `{expected}` was expected")]
pub struct TypeMismatch {
    /// The type the receiver asked for.
    pub expected: &'static str,
    /// The type the batch holds.
    pub found: &'static str,
}

impl DataBatch {
    /// Erases the type of a batch.
    pub fn new<T: Data>(batch: Batch<T>) -> Self {
        DataBatch {
            len: batch.len(),
            payload: Box::new(batch),
            clone_fn: clone_batch::<T>,
            encode_fn: encode_batch::<T>,
            type_name: std::any::type_name::<T>,
        }
    }

    /// Serializes the records (postcard), for the in-flight data of an unaligned checkpoint.
    /// The receiver turns the bytes back with [`decode`](Self::decode) and the record type.
    ///
    /// # Errors
    ///
    /// The serializer's message if a record cannot be serialized.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        match (self.encode_fn)(self.payload.as_ref()) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(e)) => Err(format!(
                "cannot serialize a batch of `{}`: {e}",
                self.type_name()
            )),
            None => Err(format!(
                "batch of `{}` does not match its encoder",
                self.type_name()
            )),
        }
    }

    /// Turns bytes from [`encode`](Self::encode) back into a batch of `T`.
    ///
    /// # Errors
    ///
    /// The deserializer's message if the bytes are not a batch of `T`.
    pub fn decode<T: Data>(bytes: &[u8]) -> Result<DataBatch, String> {
        postcard::from_bytes::<Batch<T>>(bytes)
            .map(DataBatch::new)
            .map_err(|e| {
                format!(
                    "cannot read a batch of `{}`: {e}",
                    std::any::type_name::<T>()
                )
            })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the batch holds no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Name of the record type, for error messages.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// Recovers the typed batch.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] if the batch does not hold records of type `T`.
    pub fn downcast<T: Data>(self) -> Result<Batch<T>, TypeMismatch> {
        let found = (self.type_name)();
        self.payload
            .downcast::<Batch<T>>()
            .map(|b| *b)
            .map_err(|_| TypeMismatch {
                expected: std::any::type_name::<T>(),
                found,
            })
    }
}

impl Clone for DataBatch {
    fn clone(&self) -> Self {
        // `clone_fn` is built from the same `T` as `payload`, so the downcast inside succeeds;
        // the fallback keeps the signature total without a panic path.
        let payload = (self.clone_fn)(self.payload.as_ref())
            .unwrap_or_else(|| Box::new(Batch::<()>::new()) as Box<dyn Any + Send>);
        DataBatch {
            len: self.len,
            payload,
            clone_fn: self.clone_fn,
            encode_fn: self.encode_fn,
            type_name: self.type_name,
        }
    }
}

impl fmt::Debug for DataBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataBatch")
            .field("type", &self.type_name())
            .field("len", &self.len)
            .finish()
    }
}

/// Where user functions emit records.
///
/// A record emitted while processing an input record inherits that record's timestamp (Flink's
/// `TimestampedCollector`), unless emitted with
/// [`collect_with_timestamp`](Self::collect_with_timestamp).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::Collector;
/// let mut out = Collector::new();
/// for word in "to be or not".split(' ') {
///     out.collect(word.to_string());
/// }
/// assert_eq!(out.len(), 4);
/// ```
#[derive(Debug)]
pub struct Collector<T> {
    batch: Batch<T>,
    current_timestamp: Option<Timestamp>,
    /// Side outputs and emitted watermarks: rare, so kept out of the hot path.
    extra: Option<Box<Extra>>,
}

/// One item an operator emitted, in order: the runtime hands these to the operator's outputs.
#[derive(Debug)]
pub enum Emission {
    /// Records of the main output.
    Data(DataBatch),
    /// Records of the side output with this tag id.
    Side(Arc<str>, DataBatch),
    /// A watermark, after every record emitted before it.
    Watermark(Watermark),
    /// A watermark status change.
    Status(WatermarkStatus),
}

/// A typed, named side output (Flink's `OutputTag`): operators emit into it with
/// [`Collector::output`], and `get_side_output(&tag)` reads it as a stream.
///
/// Two tags are the same side output when their ids are equal.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::{Collector, OutputTag};
/// let late: OutputTag<String> = OutputTag::new("late");
/// let mut out: Collector<u64> = Collector::new();
/// out.collect(1);
/// out.output(&late, "too late".to_string());
/// let mut emitted = Vec::new();
/// out.take_emissions(&mut emitted);
/// assert_eq!(emitted.len(), 2);
/// ```
pub struct OutputTag<T> {
    id: Arc<str>,
    _type: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A tag with this id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        OutputTag {
            id: id.into(),
            _type: PhantomData,
        }
    }

    /// The tag's id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag::new(self.id.clone())
    }
}

impl<T> fmt::Debug for OutputTag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputTag({})", self.id)
    }
}

/// A side output's pending records, typed inside.
trait SideBuffer: Send + Sync {
    fn as_any(&mut self) -> &mut dyn Any;
    fn seal(&mut self) -> Option<DataBatch>;
}

impl<X: Data> SideBuffer for Batch<X> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
    fn seal(&mut self) -> Option<DataBatch> {
        if self.is_empty() {
            None
        } else {
            Some(DataBatch::new(std::mem::take(self)))
        }
    }
}

/// Pending side-output records per tag, in the order the tags were first used (shared by
/// [`Collector`] and [`SideOutputs`]).
#[derive(Default)]
struct SideBuffers(Vec<(Arc<str>, Box<dyn SideBuffer>)>);

impl SideBuffers {
    /// Appends a record to the pending batch of side output `tag`. Two tags with one id but
    /// different types get a batch each rather than mixing types in one; the runtime reports
    /// the type mismatch downstream.
    fn push<X: Data>(&mut self, tag: &OutputTag<X>, value: X, ts: Option<Timestamp>) {
        let found = self
            .0
            .iter_mut()
            .filter(|(id, _)| *id == tag.id)
            .find_map(|(_, buf)| buf.as_any().downcast_mut::<Batch<X>>());
        match found {
            Some(batch) => batch.push_opt(value, ts),
            None => {
                let mut batch = Batch::<X>::new();
                batch.push_opt(value, ts);
                self.0.push((tag.id.clone(), Box::new(batch)));
            }
        }
    }

    /// Moves every non-empty pending batch, as a side emission, to `into`.
    fn seal_into(&mut self, into: &mut Vec<Emission>) {
        for (tag, buf) in &mut self.0 {
            if let Some(b) = buf.seal() {
                into.push(Emission::Side(tag.clone(), b));
            }
        }
    }
}

#[derive(Default)]
struct Extra {
    sealed: Vec<Emission>,
    sides: SideBuffers,
}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extra")
            .field("sealed", &self.sealed.len())
            .field("sides", &self.sides.0.len())
            .finish()
    }
}

impl Extra {
    fn seal_sides(&mut self) {
        self.sides.seal_into(&mut self.sealed);
    }
}

/// Side-output records of code that has no [`Collector`], such as a [`Sink`](crate::Sink)
/// that sets aside the records an external system refused: the runtime takes them after each
/// call into that code and sends them to the readers of each tag, in order with the call.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::{OutputTag, SideOutputs};
/// let refused: OutputTag<String> = OutputTag::new("refused");
/// let mut side = SideOutputs::new();
/// side.output(&refused, "bad row".to_string());
/// assert_eq!(side.len(), 1);
/// ```
#[derive(Default)]
pub struct SideOutputs {
    sides: SideBuffers,
    len: usize,
}

impl fmt::Debug for SideOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SideOutputs")
            .field("records", &self.len)
            .finish()
    }
}

impl SideOutputs {
    /// No records yet.
    pub fn new() -> Self {
        SideOutputs::default()
    }

    /// Emits a record without a timestamp to the side output `tag`.
    pub fn output<X: Data>(&mut self, tag: &OutputTag<X>, value: X) {
        self.output_with_timestamp(tag, value, None);
    }

    /// Emits a record to the side output `tag` with a timestamp (or none).
    pub fn output_with_timestamp<X: Data>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
        ts: Option<Timestamp>,
    ) {
        self.sides.push(tag, value, ts);
        self.len += 1;
    }

    /// Records emitted and not yet taken.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing was emitted since the records were last taken.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves the emitted records, one batch per tag in the order the tags were first used,
    /// into `into`.
    pub fn take_emissions(&mut self, into: &mut Vec<Emission>) {
        self.sides.seal_into(into);
        self.len = 0;
    }
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector::new()
    }
}

impl<T> Collector<T> {
    /// An empty collector.
    pub fn new() -> Self {
        Collector {
            batch: Batch::new(),
            current_timestamp: None,
            extra: None,
        }
    }

    /// Emits a record, with the timestamp of the input record being processed (if any).
    #[inline]
    pub fn collect(&mut self, value: T) {
        self.batch.push_opt(value, self.current_timestamp);
    }

    /// Emits a record with an explicit event timestamp.
    #[inline]
    pub fn collect_with_timestamp(&mut self, value: T, ts: Timestamp) {
        self.batch.push_with_timestamp(value, ts);
    }

    /// Emits a whole batch at once, keeping its timestamps (cheaper than record by record).
    pub fn collect_batch(&mut self, mut batch: Batch<T>) {
        if self.batch.is_empty() {
            self.batch = batch;
        } else {
            self.batch.append(&mut batch);
        }
    }

    /// Number of records emitted and not yet taken.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// True if nothing was emitted since the last [`take`](Self::take).
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Sets the timestamp that [`collect`](Self::collect) attaches. Operators call this before
    /// handing each input record to a user function.
    #[inline]
    pub fn set_timestamp(&mut self, ts: Option<Timestamp>) {
        self.current_timestamp = ts;
    }

    /// The timestamp that [`collect`](Self::collect) attaches.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.current_timestamp
    }

    /// Takes the emitted records, leaving the collector empty.
    pub fn take(&mut self) -> Batch<T> {
        self.current_timestamp = None;
        std::mem::take(&mut self.batch)
    }

    /// Reserves room for `n` more records.
    pub fn reserve(&mut self, n: usize) {
        self.batch.values.reserve(n);
    }
}

impl<T: Data> Collector<T> {
    /// Emits a record to the side output `tag`, with the current timestamp.
    pub fn output<X: Data>(&mut self, tag: &OutputTag<X>, value: X) {
        let ts = self.current_timestamp;
        self.output_with_timestamp(tag, value, ts);
    }

    /// Emits a record to the side output `tag` with an explicit timestamp.
    pub fn output_with_timestamp<X: Data>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
        ts: Option<Timestamp>,
    ) {
        self.extra
            .get_or_insert_with(Box::default)
            .sides
            .push(tag, value, ts);
    }

    /// Emits a watermark after every record emitted so far (operators that generate
    /// watermarks, such as the timestamp assigner, use this).
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.seal();
        if let Some(extra) = &mut self.extra {
            extra.sealed.push(Emission::Watermark(watermark));
        }
    }

    /// Emits a watermark status change after every record emitted so far.
    pub fn emit_status(&mut self, status: WatermarkStatus) {
        self.seal();
        if let Some(extra) = &mut self.extra {
            extra.sealed.push(Emission::Status(status));
        }
    }

    fn seal(&mut self) {
        let extra = self.extra.get_or_insert_with(Box::default);
        if !self.batch.is_empty() {
            extra
                .sealed
                .push(Emission::Data(DataBatch::new(std::mem::take(
                    &mut self.batch,
                ))));
        }
        extra.seal_sides();
    }

    /// True if nothing at all (records, side outputs, watermarks) is pending.
    pub fn is_idle(&self) -> bool {
        self.batch.is_empty()
            && self
                .extra
                .as_ref()
                .is_none_or(|e| e.sealed.is_empty() && e.sides.0.is_empty())
    }

    /// Moves everything emitted, in order, to `into`, leaving the collector empty.
    pub fn take_emissions(&mut self, into: &mut Vec<Emission>) {
        self.current_timestamp = None;
        if let Some(extra) = &mut self.extra {
            extra.seal_sides();
            into.append(&mut extra.sealed);
        }
        if !self.batch.is_empty() {
            into.push(Emission::Data(DataBatch::new(std::mem::take(
                &mut self.batch,
            ))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_front_keeps_timestamps_aligned() {
        let mut b = Batch::new();
        for i in 0..5 {
            b.push_with_timestamp(i, Timestamp(i * 10));
        }
        let front = b.split_front(2);
        assert_eq!(front.values(), &[0, 1]);
        assert_eq!(front.timestamps(), Some(&[Timestamp(0), Timestamp(10)][..]));
        assert_eq!(b.values(), &[2, 3, 4]);
        assert_eq!(b.timestamps().map(|t| t.len()), Some(3));
    }

    #[test]
    fn drain_full_chunks_cuts_exact_sizes() {
        let mut b: Batch<u32> = (0..10).collect();
        let mut chunks = Vec::new();
        b.drain_full_chunks(3, |c| chunks.push(c.into_values()));
        assert_eq!(chunks, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]]);
        assert_eq!(b.values(), &[9]);
        let mut exact: Batch<u32> = (0..3).collect();
        exact.drain_full_chunks(3, |c| chunks.push(c.into_values()));
        assert!(exact.is_empty());
    }

    #[test]
    fn append_mixes_timestamped_and_plain() {
        let mut a: Batch<u8> = Batch::from_values(vec![1, 2]);
        let mut b = Batch::new();
        b.push_with_timestamp(3, Timestamp(30));
        a.append(&mut b);
        assert_eq!(a.values(), &[1, 2, 3]);
        assert_eq!(
            a.timestamps(),
            Some(&[Timestamp::MIN, Timestamp::MIN, Timestamp(30)][..])
        );
    }

    #[test]
    fn data_batch_roundtrip_and_mismatch() {
        let db = DataBatch::new(Batch::from_values(vec![1u64, 2, 3]));
        assert_eq!(db.len(), 3);
        let copy = db.clone();
        assert_eq!(db.downcast::<u64>().unwrap().values(), &[1, 2, 3]);
        let err = copy.downcast::<String>().unwrap_err();
        assert!(err.to_string().contains("u64"), "{err}");
    }
}
