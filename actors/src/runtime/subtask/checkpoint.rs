//! The checkpoint side of the subtask loop: snapshotting the chain, acknowledging or
//! declining to the coordinator, and recording the in-flight data of an unaligned
//! checkpoint (from the input queues, then as lanes deliver their barriers). The record path
//! that calls into it is in the parent module.

use super::{Drain, SourceHead, Stop, Subtask, millis};
use crate::checkpoint::capture::{
    EncodedState, InFlight, LaneRecord, LaneRestore, OperatorEntry, OutputRecord, SubtaskState,
    capture_queued, in_flight_of,
};
use crate::checkpoint::types::OperatorState;
use crate::dataplane::message::CheckpointKind;
use crate::dataplane::message::{BarrierAlignment, CheckpointBarrier};
use crate::runtime::chain::{
    Signal, Tail, guard, guard_async, route_sink_side_outputs, signal_outputs, snapshot_chain,
};
use crate::runtime::control::{CoordinatorLink, CoordinatorMsg};
use crate::time::valve::WatermarkValve;
use crate::types::CheckpointId;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, trace, warn};

/// An unaligned checkpoint whose in-flight data is being recorded.
pub(super) struct Recording {
    pub(super) barrier: CheckpointBarrier,
    state: SubtaskState,
    lanes: Vec<LaneRecord>,
    alignment_ms: u64,
    sync_ms: u64,
    /// Per lane: messages at the front of its queue already captured from the queue (they
    /// are not recorded again when processed).
    scanned: Vec<usize>,
    /// Per lane: the barrier (or the end of input) was found in the queue, so the lane's
    /// in-flight data is complete.
    complete: Vec<bool>,
}

impl Recording {
    pub(super) fn push(&mut self, lane: usize, item: InFlight) {
        match self.lanes.iter_mut().find(|l| l.lane == lane) {
            Some(l) => l.items.push(item),
            None => self.lanes.push(LaneRecord {
                lane,
                items: vec![item],
            }),
        }
    }
}

/// Checkpointing of one subtask.
pub(crate) struct Checkpointing {
    pub(crate) link: CoordinatorLink,
    /// The key of the chain's head operator (names the lane-level state).
    pub(crate) head_key: String,
    /// After this long aligning, an aligned checkpoint turns unaligned.
    pub(crate) alignment_timeout: Option<Duration>,
    /// Restored lane-level state: input watermarks, in-flight input and overtaken output to
    /// replay first.
    pub(crate) restored_valve: Option<WatermarkValve>,
    pub(crate) replay: Vec<LaneRecord>,
    pub(crate) replay_output: Vec<OutputRecord>,
    pub(super) recording: Option<Recording>,
    /// When the pending aligned checkpoint's first barrier arrived.
    pub(super) aligning_since: Option<Instant>,
    /// An upstream announced an aligned barrier queued behind data, at this instant.
    pub(super) announced: Option<(CheckpointBarrier, Instant)>,
    /// Incremental checkpoints of keyed state are on.
    pub(crate) incremental: bool,
    /// Acknowledgements still being encoded (asynchronous snapshots). The final state waits
    /// for them: it must reach the coordinator after them, or it would stand in for a
    /// checkpoint this subtask did take.
    pub(super) acks_in_flight: Vec<tokio::task::JoinHandle<()>>,
}

impl Checkpointing {
    pub(crate) fn new(
        link: CoordinatorLink,
        head_key: String,
        alignment_timeout: Option<Duration>,
        restored: LaneRestore,
    ) -> Self {
        Checkpointing {
            link,
            head_key,
            alignment_timeout,
            restored_valve: restored.valve,
            replay: restored.input,
            replay_output: restored.output,
            recording: None,
            aligning_since: None,
            announced: None,
            incremental: false,
            acks_in_flight: Vec::new(),
        }
    }

    /// Sets whether checkpoints (not savepoints, not final states) may be incremental.
    pub(crate) fn incremental(mut self, on: bool) -> Self {
        self.incremental = on;
        self
    }
}

/// Encodes a subtask's snapshot for checkpoint `id`, first encoding the keyed state
/// operators froze for it (can take long: off the subtask when there is such state).
pub(super) fn encode_subtask_state(
    id: CheckpointId,
    mut state: SubtaskState,
) -> Result<EncodedState, String> {
    let mut chunks = Vec::new();
    let mut shared = Vec::new();
    for op in &mut state.operators {
        op.state
            .finish_pending()
            .map_err(|e| format!("{}: cannot encode its state: {e}", op.key))?;
        chunks.extend(op.state.take_new_chunks());
        shared.extend(
            op.state
                .chains
                .values()
                .flatten()
                .filter(|e| e.is_shared_in(id))
                .cloned(),
        );
    }
    let in_flight_bytes = state.in_flight_bytes();
    let state = postcard::to_allocvec(&state)
        .map_err(|e| format!("cannot serialize the subtask state: {e}"))?;
    Ok(EncodedState {
        state,
        chunks,
        shared,
        in_flight_bytes,
    })
}

impl Subtask {
    /// Snapshots the whole subtask for checkpoint `id`: the source position, every chained
    /// operator, every sink (which pre-commits), and the input watermarks. `Ok(Err(reason))`
    /// declines the checkpoint.
    pub(super) async fn snapshot(
        &mut self,
        head: Option<&mut SourceHead>,
        id: CheckpointId,
        kind: CheckpointKind,
    ) -> Result<Result<SubtaskState, String>, Stop> {
        // Incremental only for periodic checkpoints: savepoints and final states stand alone.
        let incremental = kind == CheckpointKind::Checkpoint
            && id != CheckpointId::FINAL
            && self.checkpointing.as_ref().is_some_and(|c| c.incremental);
        // Writes queued for sinks belong to the checkpoint: run them first. Output queued for
        // the network needs no waiting: the barrier goes behind it.
        self.drain_inner(Drain::SinksOnly).await?;
        let mut operators = Vec::new();
        let mut declined = None;
        if let Some(h) = head {
            let mut state = OperatorState::default();
            let src = &mut h.source;
            match guard(&h.label, || src.snapshot_state(id, &mut state)) {
                Ok(()) => operators.push(OperatorEntry {
                    key: h.key.clone(),
                    max_parallelism: h.info.max_parallelism,
                    state,
                }),
                Err(f) => declined = Some(format!("{}: {}", f.operator, f.cause)),
            }
        }
        if let Err(f) = snapshot_chain(&mut self.root, id, incremental, &mut operators) {
            declined = Some(format!("{}: {}", f.operator, f.cause));
        }
        for t in 0..self.tails.len() {
            if let Tail::Sink(s) = &mut self.tails[t] {
                let mut state = OperatorState::default();
                match guard_async(&s.label, s.sink.snapshot_state(id, &mut state)).await {
                    Ok(()) => operators.push(OperatorEntry {
                        key: s.key.clone(),
                        max_parallelism: s.info.max_parallelism,
                        state,
                    }),
                    Err(f) => declined = Some(format!("{}: {}", f.operator, f.cause)),
                }
                // What it set aside while pre-committing goes before the barrier.
                route_sink_side_outputs(&mut self.tails, t)?;
            }
        }
        if let Some(d) = declined {
            return Ok(Err(d));
        }
        let head_key = self
            .checkpointing
            .as_ref()
            .map(|c| c.head_key.clone())
            .unwrap_or_default();
        Ok(Ok(SubtaskState {
            head: head_key,
            index: self.index,
            parallelism: self.parallelism,
            lanes: self.gate.lane_count(),
            operators,
            valve: Some(self.valve.clone()),
            in_flight: Vec::new(),
            out_flight: Vec::new(),
        }))
    }

    pub(super) fn send_coordinator(&self, msg: impl FnOnce(&CoordinatorLink) -> CoordinatorMsg) {
        if let Some(c) = &self.checkpointing
            && c.link.coordinator.cast(msg(&c.link)).is_err()
        {
            debug!("the checkpoint coordinator is gone");
        }
    }

    /// Acknowledges checkpoint `id` with `state`. If operators handed over frozen keyed state
    /// to encode ([`OperatorState::put_groups_later`]), the encoding and the acknowledgement
    /// run on a blocking thread and the subtask goes on at once (asynchronous snapshot).
    pub(super) fn acknowledge(
        &mut self,
        id: CheckpointId,
        state: SubtaskState,
        unaligned: bool,
        alignment_ms: u64,
        sync_ms: u64,
    ) {
        let Some(c) = &mut self.checkpointing else {
            return;
        };
        let link = c.link.clone();
        let started = Instant::now();
        let send = move |link: &CoordinatorLink, encoded: Result<EncodedState, String>| {
            let async_ms = millis(started.elapsed());
            let msg = match encoded {
                Ok(encoded) => CoordinatorMsg::Ack {
                    generation: link.generation,
                    task: link.task,
                    id,
                    state: encoded,
                    unaligned,
                    alignment_ms,
                    sync_ms,
                    async_ms,
                },
                Err(reason) => {
                    warn!(checkpoint = %id, %reason, "declining a checkpoint");
                    CoordinatorMsg::Decline {
                        generation: link.generation,
                        task: link.task,
                        id,
                        reason,
                    }
                }
            };
            if link.coordinator.cast(msg).is_err() {
                debug!("the checkpoint coordinator is gone");
            }
        };
        if !state.operators.iter().any(|o| o.state.has_pending()) {
            send(&link, encode_subtask_state(id, state));
            return;
        }
        c.acks_in_flight.retain(|h| !h.is_finished());
        c.acks_in_flight.push(tokio::task::spawn_blocking(move || {
            let encoded = encode_subtask_state(id, state);
            debug!(checkpoint = %id, sync_ms, async_ms = millis(started.elapsed()), "asynchronous part of the snapshot done");
            send(&link, encoded);
        }));
    }

    pub(super) fn decline(&self, id: CheckpointId, reason: String) {
        warn!(checkpoint = %id, %reason, "declining a checkpoint");
        self.send_coordinator(|l| CoordinatorMsg::Decline {
            generation: l.generation,
            task: l.task,
            id,
            reason,
        });
    }

    /// Takes checkpoint `barrier` now and forwards its barrier: aligned (every lane delivered
    /// it), at-least-once, or unaligned (then the lanes still to deliver it are recorded).
    pub(super) async fn take_checkpoint(
        &mut self,
        head: Option<&mut SourceHead>,
        barrier: CheckpointBarrier,
    ) -> Result<(), Stop> {
        if let Some(action) = self
            .fault
            .as_ref()
            .and_then(|f| f.on_checkpoint(barrier.id.0))
        {
            self.inject(action)?;
        }
        let alignment_ms = match self.checkpointing.as_mut() {
            Some(c) => {
                if c.announced.is_some_and(|(b, _)| b.id <= barrier.id) {
                    c.announced = None;
                }
                c.aligning_since.take().map_or(0, |t| millis(t.elapsed()))
            }
            None => 0,
        };
        let paused = Instant::now();
        let snapshot = self.snapshot(head, barrier.id, barrier.kind).await?;
        let sync_ms = millis(paused.elapsed());
        let mut state = match snapshot {
            Ok(s) => s,
            Err(reason) => {
                self.decline(barrier.id, reason);
                // Downstream still gets the barrier, so nobody waits for it forever.
                signal_outputs(&mut self.root, Signal::Barrier(barrier), &mut self.tails)?;
                return Ok(());
            }
        };
        trace!(checkpoint = %barrier.id, "snapshot taken, forwarding the barrier");
        signal_outputs(&mut self.root, Signal::Barrier(barrier), &mut self.tails)?;
        let unaligned = barrier.alignment == BarrierAlignment::Unaligned;
        if unaligned && let Err(e) = self.take_overtaken_output(&mut state) {
            self.decline(barrier.id, e);
            self.flush_all();
            return self.drain().await;
        }
        let recording =
            unaligned && (0..self.gate.lane_count()).any(|l| self.aligner.is_recording(l));
        if recording {
            if let Some(c) = &mut self.checkpointing {
                let lanes = self.gate.lane_count();
                c.recording = Some(Recording {
                    barrier,
                    state,
                    lanes: Vec::new(),
                    alignment_ms,
                    sync_ms,
                    scanned: vec![0; lanes],
                    complete: vec![false; lanes],
                });
            }
            self.scan_in_flight();
        } else {
            self.acknowledge(barrier.id, state, unaligned, alignment_ms, sync_ms);
        }
        // Flush so the barrier leaves at once (it is the point of the checkpoint).
        self.flush_all();
        self.drain().await
    }

    /// Moves the output the unaligned barrier overtook in the network writers into `state`.
    pub(super) fn take_overtaken_output(&mut self, state: &mut SubtaskState) -> Result<(), String> {
        let network = self.tails.iter_mut().filter_map(|t| match t {
            Tail::Network {
                writer, overtaken, ..
            } => Some((writer.channel_count(), std::mem::take(overtaken))),
            Tail::Sink(_) => None,
        });
        for (tail, (channels, overtaken)) in network.enumerate() {
            for (channel, msgs) in overtaken {
                let mut items = Vec::with_capacity(msgs.len());
                for m in &msgs {
                    if let Some(item) = in_flight_of(m) {
                        items.push(item?);
                    }
                }
                state.out_flight.push(OutputRecord {
                    tail,
                    channels,
                    channel,
                    items,
                });
            }
        }
        Ok(())
    }

    /// Every lane delivered the barrier of the checkpoint being recorded: acknowledge it with
    /// its in-flight data.
    pub(super) fn finish_recording(&mut self, id: CheckpointId) {
        let Some(c) = &mut self.checkpointing else {
            return;
        };
        if c.recording.as_ref().is_none_or(|r| r.barrier.id != id) {
            return;
        }
        if let Some(mut r) = c.recording.take() {
            r.state.in_flight = std::mem::take(&mut r.lanes);
            self.acknowledge(id, r.state, true, r.alignment_ms, r.sync_ms);
        }
    }

    /// Captures the in-flight data of the recorded checkpoint straight from the input
    /// queues: on each lane still recording, the queued messages up to the checkpoint's
    /// in-band barrier. Senders push that barrier through at once (over capacity), so
    /// usually every lane is complete at the first scan and the checkpoint is acknowledged
    /// now, without waiting for the queued data to be processed. A lane whose barrier is not
    /// queued yet (its upstream has not taken the checkpoint) is scanned again when that
    /// upstream's priority copy arrives, and recorded as processed meanwhile.
    pub(super) fn scan_in_flight(&mut self) {
        let Some(r) = self
            .checkpointing
            .as_mut()
            .and_then(|c| c.recording.as_mut())
        else {
            return;
        };
        let id = r.barrier.id;
        let mut all = true;
        let mut failed = None;
        for lane in 0..self.gate.lane_count() {
            if !self.aligner.is_recording(lane) || r.complete.get(lane).copied().unwrap_or(true) {
                continue;
            }
            let Some(rx) = self.gate.lane(lane) else {
                continue;
            };
            let (items, done) = match capture_queued(rx, id, r.scanned[lane]) {
                Ok(c) => c,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            r.scanned[lane] += items.len();
            for item in items {
                r.push(lane, item);
            }
            r.complete[lane] = done;
            all &= done;
        }
        trace!(checkpoint = %id, complete = all, scanned = ?r.scanned, "in-flight data scanned from the input queues");
        if let Some(e) = failed {
            if let Some(c) = &mut self.checkpointing {
                c.recording = None;
            }
            self.decline(id, e);
        } else if all {
            self.finish_recording(id);
        }
    }

    pub(super) fn record(&mut self, lane: usize, item: impl FnOnce() -> Result<InFlight, String>) {
        if !self.aligner.is_recording(lane) {
            return;
        }
        let Some(r) = self
            .checkpointing
            .as_mut()
            .and_then(|c| c.recording.as_mut())
        else {
            return;
        };
        if let Some(n) = r.scanned.get_mut(lane)
            && *n > 0
        {
            // Captured from the queue already.
            *n -= 1;
            return;
        }
        match item() {
            Ok(item) => r.push(lane, item),
            Err(e) => {
                let id = r.barrier.id;
                if let Some(c) = &mut self.checkpointing {
                    c.recording = None;
                }
                self.decline(id, e);
            }
        }
    }
}
