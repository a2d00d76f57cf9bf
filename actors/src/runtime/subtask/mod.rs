//! The subtask loop: what one operator-chain instance does for its whole life.
//!
//! A subtask with inputs takes events from its [`InputGate`] — the priority lane first, then
//! its input lanes round robin — and pushes them through its chain. A source subtask pulls its
//! source instead. After each step it drains its outputs: records go out in batches, and a full
//! downstream lane makes it wait (backpressure) while it still watches its priority lane, so a
//! cancellation is never stuck behind a full lane.

use crate::checkpoint::barrier::{AlignOutcome, BarrierAligner};
use crate::checkpoint::capture::InFlight;
use crate::checkpoint::fault::{FaultAction, FaultHook};
use crate::checkpoint::types::RestoredState;
use crate::dataplane::data::Emission;
use crate::dataplane::gate::{GateEvent, InputGate};
use crate::dataplane::message::{BarrierAlignment, CheckpointBarrier};
use crate::dataplane::message::{PriorityMessage, StreamMessage};
use crate::error::{FailureCause, OperatorLabel, SubtaskFailure};
use crate::operators::operator::TaskInfo;
use crate::operators::source::{ErasedSource, SourceStatus};
use crate::runtime::chain::{
    CatchUnwind, Caught, Fault, Output, Route, Signal, Tail, close_chain, decode_input, emit,
    emit_side, fire_processing_time, guard, guard_async, has_more, is_blocked, key_count,
    next_processing_time, notify_chain, release_sink_ends, restore_chain, resume,
    route_sink_side_outputs, run_sink, settle, side_type_mismatch, signal_outputs,
};
use crate::runtime::control::CoordinatorMsg;
use crate::runtime::metrics::{Phase, SubtaskMetrics, SubtaskStatus};
use crate::time::clock::ProcessingClock;
use crate::time::valve::{ValveOutput, WatermarkValve};
use crate::types::CheckpointId;
use crate::types::Watermark;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, trace};

mod checkpoint;
pub(crate) use checkpoint::Checkpointing;

/// The source at the head of a source subtask.
pub(crate) struct SourceHead {
    pub(crate) label: OperatorLabel,
    pub(crate) info: TaskInfo,
    pub(crate) source: Box<dyn ErasedSource>,
    /// The source's key in checkpoints.
    pub(crate) key: String,
    pub(crate) restored: Option<RestoredState>,
}

/// One running instance of a job vertex.
pub(crate) struct Subtask {
    pub(crate) vertex: Arc<str>,
    pub(crate) index: usize,
    pub(crate) parallelism: u32,
    pub(crate) head_label: OperatorLabel,
    pub(crate) source: Option<SourceHead>,
    pub(crate) gate: InputGate<StreamMessage, PriorityMessage>,
    /// Logical input of each lane.
    pub(crate) lane_inputs: Vec<usize>,
    pub(crate) root: Vec<Route>,
    pub(crate) tails: Vec<Tail>,
    pub(crate) valve: WatermarkValve,
    pub(crate) aligner: BarrierAligner,
    pub(crate) metrics: Arc<SubtaskMetrics>,
    pub(crate) buffer_timeout: Duration,
    /// How long to wait for the supervisor's `Cancel` after a peer vanished.
    pub(crate) cancel_timeout: Duration,
    /// Processing time, for the operators' timers.
    pub(crate) clock: ProcessingClock,
    /// Set when the job checkpoints.
    pub(crate) checkpointing: Option<Checkpointing>,
    /// Failure injection.
    pub(crate) fault: Option<FaultHook>,
    /// Checkpoint messages that arrived while the subtask could only act on cancellation.
    pub(crate) deferred: Vec<PriorityMessage>,
    /// Checkpoints triggered while the source was not ready for one
    /// (`Source::is_ready_for_checkpoint`), oldest first: taken once it is.
    pub(crate) postponed: Vec<CheckpointBarrier>,
    /// Notified by operators whose asynchronous work completed (see `TaskInfo::wakeup`).
    pub(crate) wakeup: Arc<tokio::sync::Notify>,
}

/// The operator chain of a failed subtask, closed but not yet dropped.
///
/// Dropping the state of a large keyed operator takes a while (10 M keys: about a second of
/// freeing memory). A failed subtask's actor drops its chain only after it has reported the
/// failure, so the supervisor reads the checkpoint for the restart while the memory is freed,
/// on the same thread that allocated most of it. Everything with outside resources (sources,
/// sinks, network writers) is dropped before the report, as before; operators released theirs
/// in `close`.
pub(crate) struct Remains {
    _chain: Vec<Route>,
}

/// How a subtask ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Finished,
    Cancelled,
}

/// Why the loop stopped early.
enum Stop {
    Cancelled,
    Failed(Fault),
}

impl From<Fault> for Stop {
    fn from(f: Fault) -> Self {
        Stop::Failed(f)
    }
}

/// Handles a priority message where nothing but cancellation can be acted on (while waiting
/// for room downstream); checkpoint messages are kept for later.
fn on_priority_waiting(
    p: PriorityMessage,
    deferred: &mut Vec<PriorityMessage>,
) -> Result<(), Stop> {
    match p {
        PriorityMessage::Cancel => Err(Stop::Cancelled),
        other => {
            deferred.push(other);
            Ok(())
        }
    }
}

/// What [`Subtask::drain_inner`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Everything pending, network and sinks.
    All,
    /// Everything, unless an unaligned checkpoint's trigger or barrier arrives meanwhile.
    OrUnaligned,
    /// Only the sinks' queued work.
    SinksOnly,
}

/// How long a subtask may keep a tokio worker thread while it always finds input ready.
const BUSY_SLICE: Duration = Duration::from_millis(2);

/// Yields to the tokio scheduler once the subtask has run for [`BUSY_SLICE`] without waiting.
/// Lanes are not tokio resources, so tokio's cooperative budget never forces a busy subtask to
/// yield; without this, subtasks that always have input (a slow operator under backpressure)
/// would keep the worker threads from the coordinator, the supervisor and the other subtasks.
async fn yield_if_busy(since: &mut Instant) {
    if since.elapsed() >= BUSY_SLICE {
        tokio::task::yield_now().await;
        *since = Instant::now();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Polls a source's future; the first time it has to wait, the subtask counts as idle.
struct IdleWhenPending<'a, F> {
    inner: F,
    metrics: &'a SubtaskMetrics,
    pended: bool,
}

impl<F: Future + Unpin> Future for IdleWhenPending<'_, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => {
                if !this.pended {
                    this.pended = true;
                    this.metrics.enter(Some(Phase::Idle));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

/// What one call of a source returned, or its panic payload.
type SourcePoll = Caught<(Vec<Emission>, SourceStatus), crate::error::UserError>;

impl Subtask {
    /// The `tracing` span of this subtask.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("subtask", vertex = %self.vertex, index = self.index)
    }

    /// Runs the subtask to its end. A failed subtask also hands back its operator chain
    /// (closed already, but still holding its state): see [`Remains`].
    pub(crate) async fn run(mut self) -> (Result<Outcome, SubtaskFailure>, Option<Remains>) {
        self.metrics.set_status(SubtaskStatus::Running);
        self.metrics.enter(Some(Phase::Busy));
        debug!("started");
        let mut result = self.run_inner().await;
        // Operators release what they opened, however the subtask ended.
        if let Err(fault) = close_chain(&mut self.root) {
            if result.is_ok() {
                result = Err(Stop::Failed(fault));
            } else {
                tracing::warn!(operator = %fault.operator, cause = %fault.cause, "close failed after the subtask stopped");
            }
        }
        if let Err(Stop::Failed(f)) = &result
            && f.cause.is_secondary()
        {
            // A peer vanished without end of input: the job is failing or being cancelled,
            // and the supervisor is about to cancel this subtask too. Wait for that, so the
            // subtask ends as cancelled rather than as a second failure.
            let wait = async {
                loop {
                    if let PriorityMessage::Cancel = self.gate.next_priority().await {
                        return;
                    }
                }
            };
            if tokio::time::timeout(self.cancel_timeout, wait)
                .await
                .is_ok()
            {
                result = Err(Stop::Cancelled);
            }
        }
        self.metrics.enter(None);
        let (status, ret) = match result {
            Ok(()) => (SubtaskStatus::Finished, Ok(Outcome::Finished)),
            Err(Stop::Cancelled) => (SubtaskStatus::Cancelled, Ok(Outcome::Cancelled)),
            Err(Stop::Failed(fault)) => (
                SubtaskStatus::Failed,
                Err(SubtaskFailure {
                    operator: fault.operator,
                    vertex: self.vertex.clone(),
                    subtask_index: self.index,
                    parallelism: self.parallelism,
                    cause: fault.cause,
                }),
            ),
        };
        self.metrics.set_status(status);
        debug!(?status, "ended");
        let remains = ret.is_err().then(|| Remains {
            _chain: std::mem::take(&mut self.root),
        });
        (ret, remains)
    }

    async fn run_inner(&mut self) -> Result<(), Stop> {
        for o in &mut self.root {
            if let Output::Operator(node, _) = &mut o.to {
                node.open()?;
            }
        }
        for t in &mut self.tails {
            if let Tail::Sink(s) = t {
                s.open().await?;
            }
        }
        restore_chain(&mut self.root)?;
        for t in 0..self.tails.len() {
            if let Tail::Sink(s) = &mut self.tails[t]
                && let Some(r) = s.restored.take()
            {
                guard_async(&s.label, s.sink.restore_state(r)).await?;
                route_sink_side_outputs(&mut self.tails, t)?;
            }
        }
        let mut source = self.source.take();
        if let Some(head) = &mut source {
            guard_async(&head.label, head.source.open(&head.info)).await?;
            if let Some(r) = head.restored.take() {
                let src = &mut head.source;
                guard(&head.label, || src.restore_state(r))?;
            }
        }
        self.replay_in_flight().await?;
        match source {
            Some(mut head) => {
                self.run_source(&mut head).await?;
                self.finish_checkpointing(Some(&mut head)).await
            }
            None => {
                self.run_inputs().await?;
                self.finish_checkpointing(None).await
            }
        }
    }

    /// A failure of the runtime itself (not of user code), named after the chain's head.
    fn internal(&self, message: String) -> Stop {
        Stop::Failed(Fault {
            operator: self.head_label.clone(),
            cause: FailureCause::Internal(message),
        })
    }

    fn peer_gone(&self) -> Stop {
        Stop::Failed(Fault {
            operator: self.head_label.clone(),
            cause: FailureCause::PeerGone,
        })
    }

    fn inject(&mut self, action: FaultAction) -> Result<(), Stop> {
        match action {
            FaultAction::Panic => Err(Stop::Failed(Fault {
                operator: self.head_label.clone(),
                cause: FailureCause::Panic("injected fault".into()),
            })),
            FaultAction::Abort => {
                Err(self.internal("injected fault: the subtask actor was aborted".into()))
            }
            FaultAction::Exit => {
                tracing::error!("injected fault: the process exits now");
                std::process::exit(137)
            }
            FaultAction::Slow(d) => {
                // Stalls the worker thread on purpose: a slow operator, not a slow await.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(d);
                Ok(())
            }
        }
    }

    // ----- checkpoints ----------------------------------------------------------------

    /// Restores the input watermarks and processes the in-flight data of an unaligned
    /// checkpoint before anything new.
    async fn replay_in_flight(&mut self) -> Result<(), Stop> {
        let Some(c) = &mut self.checkpointing else {
            return Ok(());
        };
        if let Some(v) = c.restored_valve.take() {
            for lane in 0..v.channels() {
                if let Some((wm, idle)) = v.channel(lane) {
                    self.metrics.set_channel(lane, wm, idle, false);
                }
            }
            self.valve = v;
        }
        // The overtaken output goes out first, ahead of anything the replay below emits.
        let output = std::mem::take(&mut c.replay_output);
        let replay = std::mem::take(&mut c.replay);
        let label = self.head_label.clone();
        let internal = |message: String| {
            Stop::Failed(Fault {
                operator: label.clone(),
                cause: FailureCause::Internal(message),
            })
        };
        let mut writers: Vec<_> = self
            .tails
            .iter_mut()
            .filter_map(|t| match t {
                Tail::Network { writer, .. } => Some(writer),
                Tail::Sink(_) => None,
            })
            .collect();
        for record in output {
            let writer = writers.get_mut(record.tail).ok_or_else(|| {
                internal(format!(
                    "the checkpoint holds output of network tail {} that the subtask lacks",
                    record.tail
                ))
            })?;
            if writer.channel_count() != record.channels {
                return Err(internal(format!(
                    "the checkpoint's overtaken output went to {} channels, the tail now has {}; \
                     restore an unaligned checkpoint at the same parallelism",
                    record.channels,
                    writer.channel_count()
                )));
            }
            let mut msgs = Vec::with_capacity(record.items.len());
            for item in record.items {
                msgs.push(match item {
                    InFlight::Data(bytes) => StreamMessage::Data(
                        writer
                            .decode_batch(&bytes)
                            .map_err(|e| internal(format!("cannot replay output: {e}")))?,
                    ),
                    InFlight::Watermark(w) => StreamMessage::Watermark(Watermark(w)),
                    InFlight::Status(s) => StreamMessage::Status(s),
                });
            }
            writer.restore_pending(record.channel, msgs);
        }
        for record in replay {
            let input = self.lane_inputs.get(record.lane).copied().unwrap_or(0);
            for item in record.items {
                match item {
                    InFlight::Data(bytes) => {
                        let batch = decode_input(&self.root, input, &bytes).map_err(|e| {
                            self.internal(format!("cannot replay in-flight data: {e}"))
                        })?;
                        emit(&mut self.root, Some(input), batch, &mut self.tails)?;
                    }
                    InFlight::Watermark(wm) => {
                        let out = self.valve.input_watermark(record.lane, Watermark(wm));
                        self.note_channel(record.lane, false);
                        self.apply_valve(out)?;
                    }
                    InFlight::Status(st) => {
                        let out = self.valve.input_status(record.lane, st);
                        self.note_channel(record.lane, false);
                        self.apply_valve(out)?;
                    }
                }
                self.settle_work().await?;
                self.drain().await?;
            }
        }
        Ok(())
    }

    /// Acts on a priority message; `head` is the source of a source subtask.
    async fn on_priority(
        &mut self,
        head: Option<&mut SourceHead>,
        p: PriorityMessage,
    ) -> Result<(), Stop> {
        match p {
            PriorityMessage::Cancel => return Err(Stop::Cancelled),
            // Only sources get triggers (they have no input lanes to align): the barrier
            // starts here, unless the source cannot record a position yet.
            PriorityMessage::Trigger(barrier) => match head {
                Some(h) if !h.source.is_ready_for_checkpoint() => {
                    debug!(checkpoint = %barrier.id, "the source is not ready: the checkpoint waits");
                    self.postponed.push(barrier);
                }
                _ => self.take_checkpoint(head, barrier).await?,
            },
            PriorityMessage::Barrier(barrier) => {
                let out = self.aligner.on_priority_barrier(barrier);
                self.apply_alignment(out).await?;
                // Another upstream took the checkpoint: its lane's barrier is queued now.
                if self.checkpointing.as_ref().is_some_and(|c| {
                    c.recording
                        .as_ref()
                        .is_some_and(|r| r.barrier.id == barrier.id)
                }) {
                    self.scan_in_flight();
                }
            }
            PriorityMessage::Announce(barrier) => {
                if let Some(c) = &mut self.checkpointing
                    && c.alignment_timeout.is_some()
                    && !self.aligner.is_settled(barrier.id)
                    && c.announced.is_none_or(|(b, _)| b.id < barrier.id)
                {
                    c.announced = Some((barrier, Instant::now()));
                }
            }
            PriorityMessage::Complete(id) => {
                if let Some(h) = head {
                    guard_async(&h.label, h.source.notify_checkpoint_complete(id)).await?;
                }
                notify_chain(&mut self.root, id)?;
                self.notify_sinks(id).await?;
            }
            PriorityMessage::Abort(id) => {
                self.postponed.retain(|b| b.id > id);
                let out = self.aligner.abort(id);
                if out.unblock_all {
                    self.gate.unblock_all();
                }
                if let Some(c) = &mut self.checkpointing {
                    if c.recording.as_ref().is_some_and(|r| r.barrier.id == id) {
                        c.recording = None;
                    }
                    if c.announced.is_some_and(|(b, _)| b.id <= id) {
                        c.announced = None;
                    }
                    if out.aborted.is_some() {
                        c.aligning_since = None;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the checkpoint messages put aside while the subtask could only act on
    /// cancellation.
    async fn run_deferred(&mut self, mut head: Option<&mut SourceHead>) -> Result<(), Stop> {
        while !self.deferred.is_empty() {
            let msgs = std::mem::take(&mut self.deferred);
            for m in msgs {
                self.on_priority(head.as_deref_mut(), m).await?;
            }
        }
        Ok(())
    }

    /// With checkpointing, a finished subtask hands its final state to the coordinator; if it
    /// holds transactions (or its source tells an external system about checkpoints), it
    /// waits for the final checkpoint to commit them.
    async fn finish_checkpointing(
        &mut self,
        mut head: Option<&mut SourceHead>,
    ) -> Result<(), Stop> {
        if self.checkpointing.is_none() {
            // No final snapshot: nothing more for the sinks' side outputs.
            release_sink_ends(&mut self.tails)?;
            self.flush_all();
            return self.drain().await;
        }
        let state = match self
            .snapshot(
                head.as_deref_mut(),
                CheckpointId::FINAL,
                crate::dataplane::message::CheckpointKind::Checkpoint,
            )
            .await?
        {
            Ok(s) => s,
            Err(reason) => {
                return Err(self.internal(format!("cannot take the final snapshot: {reason}")));
            }
        };
        // Sinks' side outputs end now, after what the final snapshot set aside.
        release_sink_ends(&mut self.tails)?;
        self.flush_all();
        self.drain().await?;
        // The final state stands alone (not incremental): it has no chunks.
        let bytes = tokio::task::spawn_blocking(move || {
            checkpoint::encode_subtask_state(CheckpointId::FINAL, state)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| self.internal(format!("cannot serialize the final state: {e}")))?
        .state;
        // Acknowledgements of checkpoints this subtask took go first (see
        // `Checkpointing::acks_in_flight`).
        let in_flight = self
            .checkpointing
            .as_mut()
            .map(|c| std::mem::take(&mut c.acks_in_flight))
            .unwrap_or_default();
        for ack in in_flight {
            let _ = ack.await;
        }
        self.send_coordinator(|l| CoordinatorMsg::Finished {
            generation: l.generation,
            task: l.task,
            state: bytes,
        });
        let transactional = self
            .tails
            .iter()
            .any(|t| matches!(t, Tail::Sink(s) if s.sink.is_transactional()));
        let notifying_source = head
            .as_ref()
            .is_some_and(|h| h.source.notifies_external_system());
        if !transactional && !notifying_source {
            return Ok(());
        }
        debug!("waiting for the final checkpoint to commit");
        self.metrics.enter(Some(Phase::Idle));
        loop {
            let p = match self.deferred.pop() {
                Some(p) => p,
                None => self.gate.next_priority().await,
            };
            match p {
                PriorityMessage::Cancel => return Err(Stop::Cancelled),
                PriorityMessage::Complete(id) => {
                    self.metrics.enter(Some(Phase::Busy));
                    if let Some(h) = head.as_deref_mut() {
                        guard_async(&h.label, h.source.notify_checkpoint_complete(id)).await?;
                    }
                    self.notify_sinks(id).await?;
                    if id == CheckpointId::FINAL {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }

    // ----- input subtasks -------------------------------------------------------------

    async fn run_inputs(&mut self) -> Result<(), Stop> {
        if self.gate.lane_count() == 0 {
            return Err(self.internal("an operator subtask without input lanes".into()));
        }
        let mut since_yield = Instant::now();
        loop {
            yield_if_busy(&mut since_yield).await;
            self.run_deferred(None).await?;
            let event = match self.gate.try_next() {
                Some(ev) => ev,
                None => match self.wait_for_input().await? {
                    Some(ev) => ev,
                    // Deferred checkpoint messages wait at the top of the loop.
                    None => continue,
                },
            };
            match event {
                GateEvent::Priority(p) => self.on_priority(None, p).await?,
                GateEvent::Disconnected { .. } => return Err(self.peer_gone()),
                GateEvent::Data { lane, message } => {
                    if self.on_message(lane, message).await? {
                        return Ok(());
                    }
                }
            }
            self.fire_timers_if_due().await?;
            self.flush_if_due().await?;
        }
    }

    /// Lets the chain finish work it does in chunks (a watermark firing many timers): between
    /// chunks the output is drained — waiting for room downstream, so what a firing emits stays
    /// bounded — and the priority lane is checked, so cancellation is not stuck behind it.
    /// Checkpoint messages wait until the work is done.
    ///
    /// While an operator is blocked on asynchronous work (Async I/O at capacity), no input is
    /// read: the subtask waits for the operator's wake-up, flushing partial output batches
    /// when the buffer timeout expires and taking only cancellation meanwhile.
    async fn settle_work(&mut self) -> Result<(), Stop> {
        loop {
            if has_more(&self.root) {
                self.drain().await?;
                if let Some(p) = self.gate.try_priority() {
                    on_priority_waiting(p, &mut self.deferred)?;
                }
                resume(&mut self.root, &mut self.tails)?;
            } else if is_blocked(&self.root) {
                self.drain().await?;
                self.wait_for_wakeup().await?;
            } else {
                return Ok(());
            }
        }
    }

    /// Waits until an operator's asynchronous work wakes the subtask; output batches are
    /// flushed when the buffer timeout expires meanwhile.
    async fn wait_for_wakeup(&mut self) -> Result<(), Stop> {
        loop {
            let flush = self.flush_deadline();
            let wakeup = self.wakeup.clone();
            tokio::select! {
                biased;
                p = self.gate.next_priority() => on_priority_waiting(p, &mut self.deferred)?,
                _ = wakeup.notified() => return Ok(()),
                _ = tokio::time::sleep_until(flush.unwrap_or_else(Instant::now)), if flush.is_some() => {
                    self.flush_all();
                    self.drain().await?;
                }
            }
        }
    }

    /// The tokio instant of the chain's next processing-time callback.
    fn timer_deadline(&self) -> Option<Instant> {
        next_processing_time(&self.root).map(|t| self.clock.instant_of(t))
    }

    /// When the pending aligned checkpoint turns unaligned: the alignment timeout after its
    /// first barrier, or after an upstream announced its barrier (queued behind data).
    fn alignment_deadline(&self) -> Option<Instant> {
        let c = self.checkpointing.as_ref()?;
        let timeout = c.alignment_timeout?;
        let since = match (c.aligning_since, c.announced.map(|(_, t)| t)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(since + timeout)
    }

    /// Runs the chain's processing-time callbacks that are due.
    async fn fire_timers_if_due(&mut self) -> Result<(), Stop> {
        if let Some(d) = self.alignment_deadline()
            && Instant::now() >= d
        {
            self.alignment_timed_out().await?;
        }
        let Some(next) = next_processing_time(&self.root) else {
            return Ok(());
        };
        let now = self.clock.now();
        if next <= now {
            fire_processing_time(&mut self.root, now, &mut self.tails)?;
            self.settle_work().await?;
            if self.buffer_timeout.is_zero() {
                self.flush_all();
            }
            self.drain_or_unaligned().await?;
        }
        Ok(())
    }

    /// The aligned checkpoint waited too long for its barriers: take it unaligned now. If no
    /// barrier arrived in-band yet but one was announced, act on the announcement as on an
    /// unaligned barrier (the data queued before it becomes in-flight data).
    async fn alignment_timed_out(&mut self) -> Result<(), Stop> {
        let announced = match &mut self.checkpointing {
            Some(c) => {
                c.aligning_since = None;
                c.announced.take().map(|(b, _)| b)
            }
            None => None,
        };
        if let Some(barrier) = self.aligner.switch_to_unaligned() {
            debug!(checkpoint = %barrier.id, "alignment timed out; the checkpoint turns unaligned");
            self.gate.unblock_all();
            self.take_checkpoint(None, barrier).await?;
        } else if let Some(barrier) = announced
            && !self.aligner.is_settled(barrier.id)
        {
            debug!(checkpoint = %barrier.id, "barrier queued past the alignment timeout; the checkpoint turns unaligned");
            let out = self.aligner.on_priority_barrier(barrier);
            self.apply_alignment(out).await?;
        }
        Ok(())
    }

    /// Handles one in-band message; `Ok(true)` once every input has ended and the chain is
    /// finished.
    async fn on_message(&mut self, lane: usize, message: StreamMessage) -> Result<bool, Stop> {
        let mut finished = false;
        match message {
            StreamMessage::Data(batch) => {
                let n = batch.len() as u64;
                SubtaskMetrics::add(&self.metrics.records_in, n);
                if self.checkpointing.is_some() {
                    self.record(lane, || batch.encode().map(InFlight::Data));
                }
                let input = self.lane_inputs.get(lane).copied().unwrap_or(0);
                emit(&mut self.root, Some(input), batch, &mut self.tails)?;
                self.metrics.set_keys(key_count(&self.root));
                self.settle_work().await?;
                if let Some(action) = self.fault.as_mut().and_then(|f| f.on_records(n)) {
                    self.inject(action)?;
                }
            }
            StreamMessage::Watermark(wm) => {
                if self.checkpointing.is_some() {
                    self.record(lane, || Ok(InFlight::Watermark(wm.0)));
                }
                let out = self.valve.input_watermark(lane, wm);
                self.note_channel(lane, false);
                self.apply_valve(out)?;
                self.settle_work().await?;
            }
            StreamMessage::Status(status) => {
                if self.checkpointing.is_some() {
                    self.record(lane, || Ok(InFlight::Status(status)));
                }
                let out = self.valve.input_status(lane, status);
                self.note_channel(lane, false);
                self.apply_valve(out)?;
                self.settle_work().await?;
            }
            StreamMessage::Barrier(barrier) => {
                let out = self.aligner.on_barrier(lane, barrier);
                self.apply_alignment(out).await?;
            }
            StreamMessage::EndOfInput => {
                self.gate.end(lane);
                let out = self.aligner.on_lane_ended(lane);
                self.apply_alignment(out).await?;
                let out = self.valve.input_ended(lane);
                self.note_channel(lane, true);
                self.apply_valve(out)?;
                self.settle_work().await?;
                if self.gate.open_lanes() == 0 {
                    signal_outputs(&mut self.root, Signal::EndOfInput, &mut self.tails)?;
                    // Operators with asynchronous work pass end of input on when it is done.
                    self.settle_work().await?;
                    finished = true;
                }
            }
        }
        if finished || self.buffer_timeout.is_zero() {
            self.flush_all();
        }
        if finished {
            self.drain().await?;
        } else {
            self.drain_or_unaligned().await?;
        }
        Ok(finished)
    }

    /// Publishes input channel `lane`'s watermark and status to the metrics.
    fn note_channel(&self, lane: usize, ended: bool) {
        if let Some((wm, idle)) = self.valve.channel(lane) {
            self.metrics.set_channel(lane, wm, idle, ended);
        }
    }

    fn apply_valve(&mut self, out: ValveOutput) -> Result<(), Stop> {
        if let Some(wm) = out.watermark {
            self.metrics.set_input_watermark(wm.0);
            signal_outputs(&mut self.root, Signal::Watermark(wm), &mut self.tails)?;
            // Windows that fired may have cleared their keys.
            self.metrics.set_keys(key_count(&self.root));
        }
        if let Some(status) = out.status {
            signal_outputs(&mut self.root, Signal::Status(status), &mut self.tails)?;
        }
        Ok(())
    }

    async fn apply_alignment(&mut self, out: AlignOutcome) -> Result<(), Stop> {
        if let Some(id) = out.aborted {
            debug!(checkpoint = %id, "alignment aborted by a newer barrier");
            if let Some(c) = &mut self.checkpointing {
                c.aligning_since = None;
                if c.recording.as_ref().is_some_and(|r| r.barrier.id == id) {
                    c.recording = None;
                }
            }
        }
        if out.unblock_all {
            self.gate.unblock_all();
        }
        if let Some(lane) = out.block {
            self.gate.block(lane);
            if let Some(c) = &mut self.checkpointing
                && c.aligning_since.is_none()
            {
                c.aligning_since = Some(Instant::now());
            }
        }
        if let Some(barrier) = out.trigger {
            if self.checkpointing.is_some() {
                self.take_checkpoint(None, barrier).await?;
            } else {
                trace!(checkpoint = %barrier.id, "barrier aligned, forwarding");
                signal_outputs(&mut self.root, Signal::Barrier(barrier), &mut self.tails)?;
            }
        }
        if let Some(id) = out.completed {
            self.finish_recording(id);
        }
        Ok(())
    }

    /// Nothing is ready: wait for input, flushing partial batches when the buffer timeout
    /// expires.
    ///
    /// `None` when priority messages were deferred meanwhile: the main loop runs them first.
    async fn wait_for_input(
        &mut self,
    ) -> Result<Option<GateEvent<StreamMessage, PriorityMessage>>, Stop> {
        loop {
            let deadline = [
                self.flush_deadline(),
                self.timer_deadline(),
                self.alignment_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let now = Instant::now();
            self.metrics.enter(Some(Phase::Idle));
            let wakeup = self.wakeup.clone();
            let event = match deadline {
                Some(d) if d <= now => None,
                Some(d) => tokio::select! {
                    ev = self.gate.next() => Some(ev),
                    _ = wakeup.notified() => None,
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => tokio::select! {
                    ev = self.gate.next() => Some(ev),
                    _ = wakeup.notified() => None,
                },
            };
            self.metrics.enter(Some(Phase::Busy));
            match event {
                Some(ev) => return Ok(Some(ev)),
                None => {
                    // Asynchronous results (if that was the wake-up) go out first.
                    self.settle_work().await?;
                    self.fire_timers_if_due().await?;
                    self.flush_if_due().await?;
                    if self.buffer_timeout.is_zero() {
                        self.flush_all();
                    }
                    self.drain_or_unaligned().await?;
                    if !self.deferred.is_empty() {
                        return Ok(None);
                    }
                    if let Some(ev) = self.gate.try_next() {
                        return Ok(Some(ev));
                    }
                }
            }
        }
    }

    // ----- source subtasks ------------------------------------------------------------

    async fn run_source(&mut self, head: &mut SourceHead) -> Result<(), Stop> {
        enum Polled {
            Priority(PriorityMessage),
            FlushDue,
            Wakeup,
            Done(SourcePoll),
        }
        let mut since_yield = Instant::now();
        loop {
            yield_if_busy(&mut since_yield).await;
            // Results of asynchronous work chained after the source.
            self.settle_work().await?;
            self.run_deferred(Some(head)).await?;
            if let Some(p) = self.gate.try_priority() {
                self.on_priority(Some(head), p).await?;
            }
            self.take_postponed(head).await?;
            self.fire_timers_if_due().await?;
            self.flush_if_due().await?;
            let deadline = match (self.flush_deadline(), self.timer_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let polled = {
                let next = IdleWhenPending {
                    inner: CatchUnwind(head.source.next_batch()),
                    metrics: &self.metrics,
                    pended: false,
                };
                let wakeup = self.wakeup.clone();
                tokio::select! {
                    biased;
                    p = self.gate.next_priority() => Polled::Priority(p),
                    r = next => Polled::Done(r),
                    _ = wakeup.notified() => Polled::Wakeup,
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Polled::FlushDue,
                }
            };
            self.metrics.enter(Some(Phase::Busy));
            let (emitted, status, priority) = match polled {
                Polled::Priority(p) => (head.source.take_leftover(), SourceStatus::More, Some(p)),
                Polled::FlushDue | Polled::Wakeup => {
                    // The flush, a timer or asynchronous results are due; all are handled at
                    // the top of the loop.
                    (head.source.take_leftover(), SourceStatus::More, None)
                }
                Polled::Done(caught) => {
                    let (b, s) = settle(&head.label, caught)?;
                    (b, s, None)
                }
            };
            let mut n = 0u64;
            for e in emitted {
                match e {
                    Emission::Data(batch) => {
                        n += batch.len() as u64;
                        emit(&mut self.root, None, batch, &mut self.tails)?;
                    }
                    // A source emitting event time itself (Flink's `SourceFunction`
                    // `emitWatermark` / `markAsTemporarilyIdle`).
                    Emission::Watermark(wm) => {
                        signal_outputs(&mut self.root, Signal::Watermark(wm), &mut self.tails)?;
                    }
                    Emission::Status(st) => {
                        signal_outputs(&mut self.root, Signal::Status(st), &mut self.tails)?;
                    }
                    // A source's side output (records it could not read, for example).
                    Emission::Side(tag, batch) => {
                        if let Some(cause) = side_type_mismatch(&self.root, &tag, batch.type_name())
                        {
                            return Err(Stop::Failed(Fault {
                                operator: head.label.clone(),
                                cause,
                            }));
                        }
                        emit_side(&mut self.root, &tag, batch, &mut self.tails)?;
                    }
                }
                self.settle_work().await?;
            }
            if n > 0
                && let Some(action) = self.fault.as_mut().and_then(|f| f.on_records(n))
            {
                self.inject(action)?;
            }
            // A priority message is handled after the records emitted before it, so a
            // barrier's position is just after them.
            if let Some(p) = priority {
                self.on_priority(Some(head), p).await?;
            }
            let end = status == SourceStatus::End;
            if end {
                // Checkpoints still waiting for the source are taken before the end if it
                // is ready now; otherwise its final state stands in for them (it emitted
                // none of their barriers, so all it did precedes them).
                self.take_postponed(head).await?;
                self.postponed.clear();
                // A bounded input ends event time: the maximum watermark fires every pending
                // event-time timer downstream, then end of input follows.
                signal_outputs(
                    &mut self.root,
                    Signal::Watermark(Watermark::MAX),
                    &mut self.tails,
                )?;
                self.settle_work().await?;
                signal_outputs(&mut self.root, Signal::EndOfInput, &mut self.tails)?;
                self.settle_work().await?;
            }
            if end || self.buffer_timeout.is_zero() {
                self.flush_all();
            }
            if end {
                self.drain().await?;
                return Ok(());
            }
            self.drain_or_unaligned().await?;
        }
    }

    /// Takes the checkpoints postponed while the source was not ready, if it is now.
    async fn take_postponed(&mut self, head: &mut SourceHead) -> Result<(), Stop> {
        if !self.postponed.is_empty() && head.source.is_ready_for_checkpoint() {
            for barrier in std::mem::take(&mut self.postponed) {
                debug!(checkpoint = %barrier.id, "the source is ready: taking the checkpoint");
                self.take_checkpoint(Some(head), barrier).await?;
            }
        }
        Ok(())
    }

    /// Tells every sink that checkpoint `id` completed (they commit), routing what they
    /// emit to their side outputs.
    async fn notify_sinks(&mut self, id: CheckpointId) -> Result<(), Stop> {
        for t in 0..self.tails.len() {
            if let Tail::Sink(s) = &mut self.tails[t] {
                guard_async(&s.label, s.sink.notify_checkpoint_complete(id)).await?;
                route_sink_side_outputs(&mut self.tails, t)?;
            }
        }
        Ok(())
    }

    // ----- outputs --------------------------------------------------------------------

    fn flush_deadline(&self) -> Option<Instant> {
        self.tails
            .iter()
            .filter_map(|t| match t {
                Tail::Network { writer, .. } => writer.buffered_since(),
                Tail::Sink(_) => None,
            })
            .min()
            .map(|since| since + self.buffer_timeout)
    }

    async fn flush_if_due(&mut self) -> Result<(), Stop> {
        if let Some(deadline) = self.flush_deadline()
            && Instant::now() >= deadline
        {
            self.flush_all();
            self.drain_or_unaligned().await?;
        }
        Ok(())
    }

    fn flush_all(&mut self) {
        for t in &mut self.tails {
            if let Tail::Network { writer, .. } = t {
                writer.flush();
            }
        }
    }

    /// Sends everything pending downstream and runs queued sink work. Waiting for room counts
    /// as backpressured time, sink work as busy time; a priority message is taken meanwhile
    /// (cancellation acts at once, checkpoint messages wait).
    async fn drain(&mut self) -> Result<(), Stop> {
        self.drain_inner(Drain::All).await
    }

    /// [`drain`](Self::drain) for the main loops, which run the deferred priority messages
    /// next: waiting for room ends early when an unaligned checkpoint's trigger or barrier
    /// arrives, so a backpressured subtask takes it at once (its snapshot pushes the pending
    /// output through with the barrier) instead of after the queue downstream has room.
    async fn drain_or_unaligned(&mut self) -> Result<(), Stop> {
        self.drain_inner(Drain::OrUnaligned).await
    }

    async fn drain_inner(&mut self, mode: Drain) -> Result<(), Stop> {
        let interruptible = mode == Drain::OrUnaligned;
        let Subtask {
            tails,
            gate,
            metrics,
            head_label,
            deferred,
            ..
        } = self;
        // By index: a sink's run routes its side outputs into the network tails after it.
        for t in 0..tails.len() {
            match &mut tails[t] {
                Tail::Network { writer, .. } => {
                    if mode == Drain::SinksOnly || !writer.has_pending() {
                        continue;
                    }
                    let peer_gone = || {
                        Stop::Failed(Fault {
                            operator: head_label.clone(),
                            cause: FailureCause::PeerGone,
                        })
                    };
                    match writer.try_drain() {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(_) => return Err(peer_gone()),
                    }
                    metrics.enter(Some(Phase::Backpressured));
                    let result = loop {
                        tokio::select! {
                            biased;
                            p = gate.next_priority() => {
                                let unaligned = matches!(
                                    &p,
                                    PriorityMessage::Trigger(b) | PriorityMessage::Barrier(b)
                                        if b.alignment == BarrierAlignment::Unaligned
                                );
                                on_priority_waiting(p, deferred)?;
                                if interruptible && unaligned {
                                    metrics.enter(Some(Phase::Busy));
                                    return Ok(());
                                }
                            }
                            r = writer.drain() => break r,
                        }
                    };
                    metrics.enter(Some(Phase::Busy));
                    result.map_err(|_| peer_gone())?;
                }
                Tail::Sink(sink) => {
                    if sink.work.is_empty() {
                        continue;
                    }
                    // A slow sink is busy, not backpressured (as in Flink). Its side outputs
                    // are network tails after it, drained next.
                    let run = run_sink(tails, t);
                    tokio::pin!(run);
                    loop {
                        tokio::select! {
                            biased;
                            p = gate.next_priority() => on_priority_waiting(p, deferred)?,
                            r = &mut run => { r?; break; }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
