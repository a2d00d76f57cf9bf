//! Partitioners and the record writer: how one subtask's output reaches the lanes of the
//! downstream subtasks.
//!
//! A [`RecordWriter`] owns one lane sender per downstream channel and one buffer per channel.
//! Records are routed into the buffers; a buffer that reaches the batch size becomes a pending
//! message; pending messages are sent when the subtask drains its outputs. A partial buffer is
//! flushed on the buffer timeout, before every control message (so watermarks, barriers and end
//! of input stay in order with the data), and at the end.

use crate::dataplane::data::{Batch, Data, DataBatch};
use crate::dataplane::lane::{Closed, LaneSender, TrySendError};
use crate::dataplane::message::StreamMessage;
use crate::state::key::KeySelector;
use crate::state::keygroup::{assign_to_key_group, operator_index_for_key_group};
use crate::types::EdgeId;
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// A boxed, sendable future, as returned by the object-safe runtime traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the records of an edge are spread over the downstream subtasks (Flink's partitioners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Partitioning {
    /// Subtask `i` sends to subtask `i` (equal parallelism); such edges can be chained.
    Forward,
    /// Round robin over every downstream subtask.
    Rebalance,
    /// Round robin over a local subset of downstream subtasks (pointwise connection).
    Rescale,
    /// A uniformly random downstream subtask per record.
    Shuffle,
    /// Every record to every downstream subtask.
    Broadcast,
    /// Every record to downstream subtask 0.
    Global,
    /// By key, through key groups: `key_by`.
    Hash,
    /// A user function of the key picks the subtask.
    Custom,
}

impl Partitioning {
    /// True if upstream subtasks connect to a subset of the downstream subtasks (forward,
    /// rescale) rather than to all of them.
    pub fn is_pointwise(self) -> bool {
        matches!(self, Partitioning::Forward | Partitioning::Rescale)
    }

    /// Flink's name for the partitioner, as shown in plans.
    pub fn name(self) -> &'static str {
        match self {
            Partitioning::Forward => "FORWARD",
            Partitioning::Rebalance => "REBALANCE",
            Partitioning::Rescale => "RESCALE",
            Partitioning::Shuffle => "SHUFFLE",
            Partitioning::Broadcast => "BROADCAST",
            Partitioning::Global => "GLOBAL",
            Partitioning::Hash => "HASH",
            Partitioning::Custom => "CUSTOM",
        }
    }
}

/// A partitioner's choice could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    /// A custom partitioner returned an index outside `0..channels`.
    #[error(
        "custom partitioner returned channel {channel} but there are only {channels} downstream subtasks"
    )]
    OutOfRange {
        /// What it returned.
        channel: usize,
        /// How many channels exist.
        channels: usize,
    },
}

/// Picks the channel of one record, for the partitionings that look at records (hash,
/// custom).
pub trait ChannelSelector<T>: Clone + Send + Sync + 'static {
    /// The channel in `0..channels` for `record`. `max_parallelism` is the downstream
    /// operator's number of key groups.
    ///
    /// # Errors
    ///
    /// [`PartitionError`] if no valid channel can be chosen.
    fn select(
        &mut self,
        record: &T,
        channels: usize,
        max_parallelism: u32,
    ) -> Result<usize, PartitionError>;
}

/// The selector of edges that do not look at records.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSelector;

impl<T> ChannelSelector<T> for NoSelector {
    fn select(&mut self, _: &T, _: usize, _: u32) -> Result<usize, PartitionError> {
        Ok(0)
    }
}

/// Routes by key through key groups (`key_by`).
#[derive(Clone)]
pub struct HashSelector<S> {
    key: S,
}

impl<S> HashSelector<S> {
    /// Routes records by the key `key` selects.
    pub fn new(key: S) -> Self {
        HashSelector { key }
    }
}

impl<T, S: KeySelector<T>> ChannelSelector<T> for HashSelector<S> {
    #[inline]
    fn select(&mut self, record: &T, channels: usize, max_p: u32) -> Result<usize, PartitionError> {
        let kg = self.key.with_key(record, |k| assign_to_key_group(k, max_p));
        Ok(operator_index_for_key_group(max_p, channels as u32, kg))
    }
}

/// Routes by a user function of the key (`partition_custom`).
#[derive(Clone)]
pub struct CustomSelector<F, P> {
    key: F,
    partitioner: P,
}

impl<F, P> CustomSelector<F, P> {
    /// Routes records to `partitioner(&key(record), channels)`.
    pub fn new(key: F, partitioner: P) -> Self {
        CustomSelector { key, partitioner }
    }
}

impl<T, K, F, P> ChannelSelector<T> for CustomSelector<F, P>
where
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    P: Fn(&K, usize) -> usize + Clone + Send + Sync + 'static,
{
    #[inline]
    fn select(&mut self, record: &T, channels: usize, _: u32) -> Result<usize, PartitionError> {
        let channel = (self.partitioner)(&(self.key)(record), channels);
        if channel < channels {
            Ok(channel)
        } else {
            Err(PartitionError::OutOfRange { channel, channels })
        }
    }
}

/// Everything a writer needs to know about its place in the job.
pub struct WriterSpec {
    /// The edge this writer serves.
    pub edge: EdgeId,
    /// The resolved partitioning.
    pub partitioning: Partitioning,
    /// One sender per connected downstream subtask, in downstream index order.
    pub channels: Vec<LaneSender<StreamMessage>>,
    /// The upstream subtask's index.
    pub subtask_index: usize,
    /// The downstream operator's max parallelism (its number of key groups).
    pub target_max_parallelism: u32,
    /// Records per batch.
    pub batch_size: usize,
    /// Counter of records this subtask sent downstream (shared with metrics).
    pub records_out: Arc<AtomicU64>,
}

/// The object-safe face of a record writer, as a subtask drives it.
pub trait NetworkOutput: Send {
    /// Routes a batch into the channel buffers (synchronously; full buffers become pending).
    ///
    /// # Errors
    ///
    /// A [`PartitionError`] from a custom partitioner; or a type mismatch (a wiring bug).
    fn emit(&mut self, batch: DataBatch) -> Result<(), crate::error::FailureCause>;
    /// Flushes every buffer, then queues `msg` for every channel.
    fn emit_control(&mut self, msg: StreamMessage);
    /// Turns every non-empty buffer into a pending message.
    fn flush(&mut self);
    /// When the oldest buffered, unflushed record was buffered.
    fn buffered_since(&self) -> Option<Instant>;
    /// True if messages wait to be sent.
    fn has_pending(&self) -> bool;
    /// Sends what fits now without waiting; `Ok(true)` if nothing is left pending.
    ///
    /// # Errors
    ///
    /// [`Closed`] if a downstream subtask is gone.
    fn try_drain(&mut self) -> Result<bool, Closed>;
    /// Sends every pending message, waiting for room. Cancel-safe: dropping the future loses
    /// nothing; the rest stays pending.
    fn drain(&mut self) -> BoxFuture<'_, Result<(), Closed>>;
    /// Sends an unaligned barrier ahead of the output still pending here: the buffers are
    /// flushed, `barrier` goes into every channel's lane at once (over capacity by that one
    /// message, see [`LaneSender::send_overflow`]), and the pending messages it overtook stay
    /// pending — they are sent after it as usual. Returns copies of them per channel (the
    /// sender's share of the checkpoint's in-flight data, Flink's output channel state).
    fn barrier_ahead(&mut self, barrier: StreamMessage) -> Vec<(usize, Vec<StreamMessage>)>;
    /// Number of channels (downstream subtasks).
    fn channel_count(&self) -> usize;
    /// Decodes a batch of this edge's record type (restored output).
    ///
    /// # Errors
    ///
    /// If the bytes do not decode as a batch of the edge's records.
    fn decode_batch(&self, bytes: &[u8]) -> Result<DataBatch, String>;
    /// Queues restored output for `channel`, to be sent before anything new.
    fn restore_pending(&mut self, channel: usize, messages: Vec<StreamMessage>);
}

/// Creates the typed writer of an edge for each upstream subtask.
pub trait WriterFactory: Send + Sync {
    /// A writer for one upstream subtask.
    fn create(&self, spec: WriterSpec) -> Box<dyn NetworkOutput>;
    /// The type of the records the edge carries (`std::any::type_name`), so a side output
    /// emitted with another type is reported against its tag.
    fn record_type(&self) -> &'static str;
}

/// The writer factory for records of type `T` routed by selector `S` (for hash and custom
/// partitioning; [`NoSelector`] otherwise).
pub struct TypedWriterFactory<T, S> {
    selector: S,
    _records: PhantomData<fn() -> T>,
}

impl<T, S> TypedWriterFactory<T, S> {
    /// A factory whose hash/custom routing uses `selector`.
    pub fn new(selector: S) -> Self {
        TypedWriterFactory {
            selector,
            _records: PhantomData,
        }
    }
}

impl<T: Data> TypedWriterFactory<T, NoSelector> {
    /// A factory for partitionings that do not look at records.
    pub fn basic() -> Self {
        TypedWriterFactory::new(NoSelector)
    }
}

impl<T: Data, S: ChannelSelector<T>> WriterFactory for TypedWriterFactory<T, S> {
    fn create(&self, spec: WriterSpec) -> Box<dyn NetworkOutput> {
        Box::new(RecordWriter::<T, S>::new(spec, self.selector.clone()))
    }

    fn record_type(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

enum Route<S> {
    Fixed(usize),
    Broadcast,
    RoundRobin(usize),
    Random(u64),
    Select(S, u32),
}

/// Routes typed records into per-channel batches and sends them on lanes.
pub struct RecordWriter<T, S> {
    channels: Vec<LaneSender<StreamMessage>>,
    buffers: Vec<Batch<T>>,
    pending: Vec<VecDeque<StreamMessage>>,
    pending_messages: usize,
    route: Route<S>,
    batch_size: usize,
    buffered_since: Option<Instant>,
    records_out: Arc<AtomicU64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<T: Data, S: ChannelSelector<T>> RecordWriter<T, S> {
    /// A writer for one upstream subtask.
    pub fn new(spec: WriterSpec, selector: S) -> Self {
        let n = spec.channels.len().max(1);
        let route = match spec.partitioning {
            Partitioning::Broadcast if n > 1 => Route::Broadcast,
            _ if n == 1 => Route::Fixed(0),
            Partitioning::Forward | Partitioning::Global => Route::Fixed(0),
            // Like Flink, each upstream subtask starts its round robin at a different channel.
            Partitioning::Rebalance => Route::RoundRobin(spec.subtask_index % n),
            Partitioning::Rescale => Route::RoundRobin(0),
            Partitioning::Shuffle => {
                Route::Random(((spec.edge.0 as u64) << 32) ^ spec.subtask_index as u64)
            }
            Partitioning::Broadcast => Route::Broadcast,
            Partitioning::Hash | Partitioning::Custom => {
                Route::Select(selector, spec.target_max_parallelism)
            }
        };
        let channels = spec.channels;
        RecordWriter {
            buffers: (0..channels.len()).map(|_| Batch::new()).collect(),
            pending: (0..channels.len()).map(|_| VecDeque::new()).collect(),
            channels,
            pending_messages: 0,
            route,
            batch_size: spec.batch_size.max(1),
            buffered_since: None,
            records_out: spec.records_out,
        }
    }

    fn route(&mut self, mut batch: Batch<T>) -> Result<(), PartitionError> {
        let n = self.buffers.len();
        match &mut self.route {
            Route::Fixed(c) => {
                let buf = &mut self.buffers[*c];
                if buf.is_empty() {
                    *buf = batch;
                } else {
                    buf.append(&mut batch);
                }
            }
            Route::Broadcast => {
                for buf in &mut self.buffers[..n - 1] {
                    buf.append(&mut batch.clone());
                }
                self.buffers[n - 1].append(&mut batch);
            }
            Route::RoundRobin(next) => {
                for (v, ts) in batch.into_iter_timestamped() {
                    self.buffers[*next].push_opt(v, ts);
                    *next += 1;
                    if *next == n {
                        *next = 0;
                    }
                }
            }
            Route::Random(state) => {
                for (v, ts) in batch.into_iter_timestamped() {
                    let c = (splitmix64(state) % n as u64) as usize;
                    self.buffers[c].push_opt(v, ts);
                }
            }
            Route::Select(selector, max_p) => {
                let (values, stamps) = batch.into_parts();
                match stamps {
                    None => {
                        for v in values {
                            let c = selector.select(&v, n, *max_p)?;
                            self.buffers[c].push(v);
                        }
                    }
                    Some(stamps) => {
                        for (v, ts) in values.into_iter().zip(stamps) {
                            let c = selector.select(&v, n, *max_p)?;
                            self.buffers[c].push_with_timestamp(v, ts);
                        }
                    }
                }
            }
        }
        let size = self.batch_size;
        let mut any_left = false;
        for (buf, pending) in self.buffers.iter_mut().zip(&mut self.pending) {
            buf.drain_full_chunks(size, |full| {
                pending.push_back(StreamMessage::Data(DataBatch::new(full)));
                self.pending_messages += 1;
            });
            any_left |= !buf.is_empty();
        }
        if any_left {
            if self.buffered_since.is_none() {
                self.buffered_since = Some(Instant::now());
            }
        } else {
            self.buffered_since = None;
        }
        Ok(())
    }

    async fn drain_all(&mut self) -> Result<(), Closed> {
        let RecordWriter {
            channels,
            pending,
            pending_messages,
            records_out,
            ..
        } = self;
        for (lane, queue) in channels.iter().zip(pending.iter_mut()) {
            while let Some(front) = queue.front() {
                use crate::dataplane::lane::LaneMessage;
                let permit = lane.reserve(front.cost()).await?;
                if let Some(msg) = queue.pop_front() {
                    if let StreamMessage::Data(b) = &msg {
                        records_out.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    *pending_messages -= 1;
                    permit.send(msg);
                }
            }
        }
        Ok(())
    }
}

impl<T: Data, S: ChannelSelector<T>> NetworkOutput for RecordWriter<T, S> {
    fn emit(&mut self, batch: DataBatch) -> Result<(), crate::error::FailureCause> {
        let batch = batch
            .downcast::<T>()
            .map_err(|e| crate::error::FailureCause::Internal(e.to_string()))?;
        self.route(batch)
            .map_err(|e| crate::error::FailureCause::Error(Arc::new(e)))
    }

    fn emit_control(&mut self, msg: StreamMessage) {
        self.flush();
        for queue in &mut self.pending {
            queue.push_back(msg.clone());
            self.pending_messages += 1;
        }
    }

    fn flush(&mut self) {
        for (buf, queue) in self.buffers.iter_mut().zip(&mut self.pending) {
            if !buf.is_empty() {
                queue.push_back(StreamMessage::Data(DataBatch::new(std::mem::take(buf))));
                self.pending_messages += 1;
            }
        }
        self.buffered_since = None;
    }

    fn buffered_since(&self) -> Option<Instant> {
        self.buffered_since
    }

    fn has_pending(&self) -> bool {
        self.pending_messages > 0
    }

    fn try_drain(&mut self) -> Result<bool, Closed> {
        for (lane, queue) in self.channels.iter().zip(&mut self.pending) {
            while let Some(msg) = queue.pop_front() {
                let len = match &msg {
                    StreamMessage::Data(b) => b.len() as u64,
                    _ => 0,
                };
                match lane.try_send(msg) {
                    Ok(()) => {
                        self.records_out.fetch_add(len, Ordering::Relaxed);
                        self.pending_messages -= 1;
                    }
                    Err(TrySendError::Full(msg)) => {
                        queue.push_front(msg);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => return Err(Closed),
                }
            }
        }
        Ok(self.pending_messages == 0)
    }

    fn drain(&mut self) -> BoxFuture<'_, Result<(), Closed>> {
        Box::pin(self.drain_all())
    }

    fn barrier_ahead(&mut self, barrier: StreamMessage) -> Vec<(usize, Vec<StreamMessage>)> {
        self.flush();
        let mut overtaken = Vec::new();
        for (channel, (lane, queue)) in self.channels.iter().zip(&self.pending).enumerate() {
            if !queue.is_empty() {
                overtaken.push((channel, queue.iter().cloned().collect()));
            }
            // A gone receiver is reported by the next drain.
            let _ = lane.send_overflow(barrier.clone());
        }
        overtaken
    }

    fn channel_count(&self) -> usize {
        self.channels.len()
    }

    fn decode_batch(&self, bytes: &[u8]) -> Result<DataBatch, String> {
        DataBatch::decode::<T>(bytes)
    }

    fn restore_pending(&mut self, channel: usize, messages: Vec<StreamMessage>) {
        if let Some(queue) = self.pending.get_mut(channel) {
            self.pending_messages += messages.len();
            for m in messages.into_iter().rev() {
                queue.push_front(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::gate::{GateEvent, InputGate, InputGateBuilder};
    use crate::dataplane::message::PriorityMessage;
    use crate::state::key::OwnedKey;
    use crate::state::keygroup::assign_to_key_group;

    type Gate = InputGate<StreamMessage, PriorityMessage>;

    fn setup(n: usize, partitioning: Partitioning, batch: usize) -> (Vec<Gate>, WriterSpec) {
        let mut gates = Vec::new();
        let mut channels = Vec::new();
        for _ in 0..n {
            let mut b = InputGateBuilder::new(4);
            channels.push(b.add_lane(1 << 20));
            gates.push(b.build());
        }
        let spec = WriterSpec {
            edge: EdgeId(0),
            partitioning,
            channels,
            subtask_index: 0,
            target_max_parallelism: 128,
            batch_size: batch,
            records_out: Arc::new(AtomicU64::new(0)),
        };
        (gates, spec)
    }

    fn received(gate: &mut Gate) -> (Vec<u64>, Vec<usize>, usize) {
        let (mut values, mut sizes, mut controls) = (Vec::new(), Vec::new(), 0);
        while let Some(ev) = gate.try_next() {
            match ev {
                GateEvent::Data {
                    message: StreamMessage::Data(b),
                    ..
                } => {
                    sizes.push(b.len());
                    values.extend(b.downcast::<u64>().unwrap().into_values());
                }
                GateEvent::Data { .. } => controls += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        (values, sizes, controls)
    }

    fn run(writer: &mut dyn NetworkOutput, records: Vec<u64>) {
        for chunk in records.chunks(7) {
            writer
                .emit(DataBatch::new(Batch::from_values(chunk.to_vec())))
                .unwrap();
        }
        writer.emit_control(StreamMessage::EndOfInput);
        assert!(writer.try_drain().unwrap());
    }

    #[test]
    fn hash_routes_each_key_to_its_key_group_owner() {
        let (mut gates, spec) = setup(3, Partitioning::Hash, 4);
        let factory =
            TypedWriterFactory::<u64, _>::new(HashSelector::new(OwnedKey::new(|v: &u64| *v % 10)));
        let mut w = factory.create(spec);
        run(w.as_mut(), (0..100).collect());
        for (i, gate) in gates.iter_mut().enumerate() {
            let (values, sizes, controls) = received(gate);
            assert_eq!(controls, 1, "end of input reaches every channel");
            assert!(
                sizes.iter().all(|&s| s <= 4),
                "batches cut at the batch size"
            );
            for v in values {
                let kg = assign_to_key_group(&(v % 10), 128);
                assert_eq!(operator_index_for_key_group(128, 3, kg), i);
            }
        }
    }

    /// An unaligned barrier overtakes the output still pending in the writer: it reaches the
    /// lane at once even when the lane is full, the overtaken messages are handed back as the
    /// sender's in-flight data and are sent after the barrier; restored output goes out first.
    #[test]
    fn unaligned_barrier_overtakes_pending_output_and_restored_output_goes_first() {
        use crate::dataplane::message::{BarrierAlignment, CheckpointBarrier, CheckpointKind};
        use crate::types::CheckpointId;
        let mut b = InputGateBuilder::new(4);
        let channels = vec![b.add_lane(8)];
        let mut gate: Gate = b.build();
        let spec = WriterSpec {
            edge: EdgeId(0),
            partitioning: Partitioning::Forward,
            channels,
            subtask_index: 0,
            target_max_parallelism: 128,
            batch_size: 4,
            records_out: Arc::new(AtomicU64::new(0)),
        };
        let mut w = TypedWriterFactory::<u64, _>::basic().create(spec);
        // 8 records fill the lane; 6 more stay pending (one full batch, one partial buffer).
        w.emit(DataBatch::new(Batch::from_values((0..14u64).collect())))
            .unwrap();
        assert!(!w.try_drain().unwrap(), "the lane is full");
        let barrier = CheckpointBarrier {
            id: CheckpointId(3),
            timestamp_ms: 0,
            kind: CheckpointKind::Checkpoint,
            alignment: BarrierAlignment::Unaligned,
        };
        let overtaken = w.barrier_ahead(StreamMessage::Barrier(barrier));
        let values = |msgs: &[StreamMessage]| -> Vec<u64> {
            msgs.iter()
                .filter_map(|m| match m {
                    StreamMessage::Data(b) => {
                        Some(b.clone().downcast::<u64>().unwrap().into_values())
                    }
                    _ => None,
                })
                .flatten()
                .collect()
        };
        assert_eq!(overtaken.len(), 1);
        assert_eq!(values(&overtaken[0].1), (8..14).collect::<Vec<_>>());
        // The receiver's queue: the 8 records, then the barrier (over capacity).
        let mut queue = Vec::new();
        gate.lane(0)
            .unwrap()
            .for_each_queued(|m| queue.push(m.clone()));
        assert_eq!(values(&queue), (0..8).collect::<Vec<_>>());
        assert!(matches!(queue.last(), Some(StreamMessage::Barrier(b)) if b.id == CheckpointId(3)));
        // A restored subtask sends restored output before anything new.
        w.restore_pending(
            0,
            vec![StreamMessage::Data(DataBatch::new(Batch::from_values(
                vec![100u64],
            )))],
        );
        let (received_before, _, controls) = received(&mut gate);
        assert_eq!(received_before, (0..8).collect::<Vec<_>>());
        assert_eq!(controls, 1, "the barrier");
        assert!(w.try_drain().unwrap());
        let (after, _, _) = received(&mut gate);
        assert_eq!(after, [100].into_iter().chain(8..14).collect::<Vec<_>>());
    }

    #[test]
    fn rebalance_is_round_robin_and_keeps_order() {
        let (mut gates, spec) = setup(4, Partitioning::Rebalance, 5);
        let mut w = TypedWriterFactory::<u64, _>::basic().create(spec);
        run(w.as_mut(), (0..40).collect());
        for (i, gate) in gates.iter_mut().enumerate() {
            let (values, _, _) = received(gate);
            let expected: Vec<u64> = (0..40).filter(|v| *v as usize % 4 == i).collect();
            assert_eq!(values, expected);
        }
    }

    #[test]
    fn broadcast_global_and_forward() {
        let (mut gates, spec) = setup(3, Partitioning::Broadcast, 8);
        let mut w = TypedWriterFactory::<u64, _>::basic().create(spec);
        run(w.as_mut(), (0..20).collect());
        for gate in &mut gates {
            assert_eq!(received(gate).0, (0..20).collect::<Vec<_>>());
        }
        let (mut gates, spec) = setup(3, Partitioning::Global, 8);
        let mut w = TypedWriterFactory::<u64, _>::basic().create(spec);
        run(w.as_mut(), (0..20).collect());
        assert_eq!(received(&mut gates[0]).0.len(), 20);
        assert_eq!(received(&mut gates[1]), (vec![], vec![], 1));
    }

    #[test]
    fn shuffle_spreads_roughly_evenly_and_loses_nothing() {
        let (mut gates, spec) = setup(4, Partitioning::Shuffle, 64);
        let mut w = TypedWriterFactory::<u64, _>::basic().create(spec);
        run(w.as_mut(), (0..40_000).collect());
        let mut all = Vec::new();
        for gate in &mut gates {
            let (values, _, _) = received(gate);
            assert!((9_000..11_000).contains(&values.len()), "{}", values.len());
            all.extend(values);
        }
        all.sort_unstable();
        assert_eq!(all, (0..40_000).collect::<Vec<_>>());
    }

    #[test]
    fn custom_partitioner_out_of_range_is_an_error() {
        let (_gates, spec) = setup(2, Partitioning::Custom, 8);
        let factory = TypedWriterFactory::<u64, _>::new(CustomSelector::new(
            |v: &u64| *v,
            |k: &u64, _n: usize| *k as usize,
        ));
        let mut w = factory.create(spec);
        let err = w
            .emit(DataBatch::new(Batch::from_values(vec![0u64, 1, 5])))
            .unwrap_err();
        assert!(err.to_string().contains("channel 5"), "{err}");
    }

    #[test]
    fn partial_batches_wait_for_flush_and_control_flushes_first() {
        let (mut gates, spec) = setup(1, Partitioning::Forward, 10);
        let mut w = TypedWriterFactory::<u64, _>::basic().create(spec);
        w.emit(DataBatch::new(Batch::from_values(vec![1u64, 2, 3])))
            .unwrap();
        assert!(!w.has_pending());
        assert!(w.buffered_since().is_some());
        w.emit_control(StreamMessage::Watermark(crate::types::Watermark(5)));
        assert!(w.try_drain().unwrap());
        let mut order = Vec::new();
        while let Some(GateEvent::Data { message, .. }) = gates[0].try_next() {
            order.push(match message {
                StreamMessage::Data(b) => format!("data{}", b.len()),
                StreamMessage::Watermark(w) => format!("wm{w}"),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(order, vec!["data3", "wm5"]);
    }
}
