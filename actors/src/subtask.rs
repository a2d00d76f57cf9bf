//! The subtask loop: what one operator-chain instance does for its whole life.
//!
//! A subtask with inputs takes events from its [`InputGate`] — the priority lane first, then
//! its input lanes round robin — and pushes them through its chain. A source subtask pulls its
//! source instead. After each step it drains its outputs: records go out in batches, and a full
//! downstream lane makes it wait (backpressure) while it still watches its priority lane, so a
//! cancellation is never stuck behind a full lane.

use crate::barrier::{AlignOutcome, BarrierAligner};
use crate::chain::{
    CatchUnwind, Caught, Fault, Output, Route, Signal, Tail, emit, fire_processing_time,
    guard_async, has_more, next_processing_time, resume, settle, signal_outputs,
};
use crate::clock::ProcessingClock;
use crate::error::{FailureCause, OperatorLabel, SubtaskFailure};
use crate::gate::{GateEvent, InputGate};
use crate::message::{PriorityMessage, StreamMessage};
use crate::metrics::{Phase, SubtaskMetrics, SubtaskStatus};
use crate::operator::TaskInfo;
use crate::source::{ErasedSource, SourceStatus};
use crate::types::Watermark;
use crate::valve::{ValveOutput, WatermarkValve};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, trace};

/// The source at the head of a source subtask.
pub(crate) struct SourceHead {
    pub(crate) label: OperatorLabel,
    pub(crate) info: TaskInfo,
    pub(crate) source: Box<dyn ErasedSource>,
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

fn on_priority(p: PriorityMessage) -> Result<(), Stop> {
    match p {
        PriorityMessage::Cancel => Err(Stop::Cancelled),
    }
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
type SourcePoll = Caught<(Option<crate::data::DataBatch>, SourceStatus), crate::error::UserError>;

impl Subtask {
    /// The `tracing` span of this subtask.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("subtask", vertex = %self.vertex, index = self.index)
    }

    /// Runs the subtask to its end.
    pub(crate) async fn run(mut self) -> Result<Outcome, SubtaskFailure> {
        self.metrics.set_status(SubtaskStatus::Running);
        self.metrics.enter(Some(Phase::Busy));
        debug!("started");
        let mut result = self.run_inner().await;
        if let Err(Stop::Failed(f)) = &result
            && f.cause.is_secondary()
        {
            // A peer vanished without end of input: the job is failing or being cancelled,
            // and the supervisor is about to cancel this subtask too. Wait for that, so the
            // subtask ends as cancelled rather than as a second failure.
            let cancelled = tokio::time::timeout(self.cancel_timeout, self.gate.next_priority());
            if let Ok(PriorityMessage::Cancel) = cancelled.await {
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
        ret
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
        match self.source.take() {
            Some(head) => self.run_source(head).await,
            None => self.run_inputs().await,
        }
    }

    fn peer_gone(&self) -> Stop {
        Stop::Failed(Fault {
            operator: self.head_label.clone(),
            cause: FailureCause::PeerGone,
        })
    }

    // ----- input subtasks -------------------------------------------------------------

    async fn run_inputs(&mut self) -> Result<(), Stop> {
        if self.gate.lane_count() == 0 {
            return Err(Stop::Failed(Fault {
                operator: self.head_label.clone(),
                cause: FailureCause::Internal("an operator subtask without input lanes".into()),
            }));
        }
        loop {
            let event = match self.gate.try_next() {
                Some(ev) => ev,
                None => self.wait_for_input().await?,
            };
            match event {
                GateEvent::Priority(p) => on_priority(p)?,
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
    async fn settle_work(&mut self) -> Result<(), Stop> {
        while has_more(&self.root) {
            self.drain().await?;
            if let Some(p) = self.gate.try_priority() {
                on_priority(p)?;
            }
            resume(&mut self.root, &mut self.tails)?;
        }
        Ok(())
    }

    /// The tokio instant of the chain's next processing-time callback.
    fn timer_deadline(&self) -> Option<Instant> {
        next_processing_time(&self.root).map(|t| self.clock.instant_of(t))
    }

    /// Runs the chain's processing-time callbacks that are due.
    async fn fire_timers_if_due(&mut self) -> Result<(), Stop> {
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
            self.drain().await?;
        }
        Ok(())
    }

    /// Handles one in-band message; `Ok(true)` once every input has ended and the chain is
    /// finished.
    async fn on_message(&mut self, lane: usize, message: StreamMessage) -> Result<bool, Stop> {
        let mut finished = false;
        match message {
            StreamMessage::Data(batch) => {
                SubtaskMetrics::add(&self.metrics.records_in, batch.len() as u64);
                let input = self.lane_inputs.get(lane).copied().unwrap_or(0);
                emit(&mut self.root, Some(input), batch, &mut self.tails)?;
                self.settle_work().await?;
            }
            StreamMessage::Watermark(wm) => {
                let out = self.valve.input_watermark(lane, wm);
                self.apply_valve(out)?;
                self.settle_work().await?;
            }
            StreamMessage::Status(status) => {
                let out = self.valve.input_status(lane, status);
                self.apply_valve(out)?;
                self.settle_work().await?;
            }
            StreamMessage::Barrier(barrier) => {
                let out = self.aligner.on_barrier(lane, barrier);
                self.apply_alignment(out)?;
            }
            StreamMessage::EndOfInput => {
                self.gate.end(lane);
                let out = self.aligner.on_lane_ended(lane);
                self.apply_alignment(out)?;
                let out = self.valve.input_ended(lane);
                self.apply_valve(out)?;
                self.settle_work().await?;
                if self.gate.open_lanes() == 0 {
                    signal_outputs(&mut self.root, Signal::EndOfInput, &mut self.tails)?;
                    finished = true;
                }
            }
        }
        if finished || self.buffer_timeout.is_zero() {
            self.flush_all();
        }
        self.drain().await?;
        Ok(finished)
    }

    fn apply_valve(&mut self, out: ValveOutput) -> Result<(), Stop> {
        if let Some(wm) = out.watermark {
            self.metrics.set_watermark(wm.0);
            signal_outputs(&mut self.root, Signal::Watermark(wm), &mut self.tails)?;
        }
        if let Some(status) = out.status {
            signal_outputs(&mut self.root, Signal::Status(status), &mut self.tails)?;
        }
        Ok(())
    }

    fn apply_alignment(&mut self, out: AlignOutcome) -> Result<(), Stop> {
        if let Some(id) = out.aborted {
            debug!(checkpoint = %id, "alignment aborted by a newer barrier");
        }
        if out.unblock_all {
            self.gate.unblock_all();
        }
        if let Some(lane) = out.block {
            self.gate.block(lane);
        }
        if let Some(barrier) = out.trigger {
            trace!(checkpoint = %barrier.id, "barrier aligned, forwarding");
            signal_outputs(&mut self.root, Signal::Barrier(barrier), &mut self.tails)?;
        }
        Ok(())
    }

    /// Nothing is ready: wait for input, flushing partial batches when the buffer timeout
    /// expires.
    async fn wait_for_input(&mut self) -> Result<GateEvent<StreamMessage, PriorityMessage>, Stop> {
        loop {
            let deadline = match (self.flush_deadline(), self.timer_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let now = Instant::now();
            self.metrics.enter(Some(Phase::Idle));
            let event = match deadline {
                Some(d) if d <= now => None,
                Some(d) => tokio::select! {
                    ev = self.gate.next() => Some(ev),
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => Some(self.gate.next().await),
            };
            self.metrics.enter(Some(Phase::Busy));
            match event {
                Some(ev) => return Ok(ev),
                None => {
                    self.fire_timers_if_due().await?;
                    self.flush_if_due().await?;
                    if let Some(ev) = self.gate.try_next() {
                        return Ok(ev);
                    }
                }
            }
        }
    }

    // ----- source subtasks ------------------------------------------------------------

    async fn run_source(&mut self, mut head: SourceHead) -> Result<(), Stop> {
        guard_async(&head.label, head.source.open(&head.info)).await?;
        enum Polled {
            Priority(PriorityMessage),
            FlushDue,
            Done(SourcePoll),
        }
        loop {
            if let Some(p) = self.gate.try_priority() {
                on_priority(p)?;
            }
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
                tokio::select! {
                    biased;
                    p = self.gate.next_priority() => Polled::Priority(p),
                    r = next => Polled::Done(r),
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Polled::FlushDue,
                }
            };
            self.metrics.enter(Some(Phase::Busy));
            let (batch, status) = match polled {
                Polled::Priority(p) => {
                    on_priority(p)?;
                    (head.source.take_leftover(), SourceStatus::More)
                }
                Polled::FlushDue => {
                    // The flush or a timer is due; both are handled at the top of the loop.
                    (head.source.take_leftover(), SourceStatus::More)
                }
                Polled::Done(caught) => settle(&head.label, caught)?,
            };
            if let Some(batch) = batch {
                emit(&mut self.root, None, batch, &mut self.tails)?;
                self.settle_work().await?;
            }
            let end = status == SourceStatus::End;
            if end {
                // A bounded input ends event time: the maximum watermark fires every pending
                // event-time timer downstream, then end of input follows.
                self.metrics.set_watermark(Watermark::MAX.0);
                signal_outputs(
                    &mut self.root,
                    Signal::Watermark(Watermark::MAX),
                    &mut self.tails,
                )?;
                self.settle_work().await?;
                signal_outputs(&mut self.root, Signal::EndOfInput, &mut self.tails)?;
            }
            if end || self.buffer_timeout.is_zero() {
                self.flush_all();
            }
            self.drain().await?;
            if end {
                return Ok(());
            }
        }
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
            self.drain().await?;
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
    /// as backpressured time, sink work as busy time; a priority message is taken meanwhile.
    async fn drain(&mut self) -> Result<(), Stop> {
        let Subtask {
            tails,
            gate,
            metrics,
            head_label,
            ..
        } = self;
        for tail in tails.iter_mut() {
            match tail {
                Tail::Network { writer, .. } => {
                    if !writer.has_pending() {
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
                            p = gate.next_priority() => on_priority(p)?,
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
                    // A slow sink is busy, not backpressured (as in Flink).
                    tokio::select! {
                        biased;
                        p = gate.next_priority() => on_priority(p)?,
                        r = sink.run() => r?,
                    }
                }
            }
        }
        Ok(())
    }
}
