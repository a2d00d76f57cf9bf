//! Chained operators inside one subtask.
//!
//! A chain is a tree: each operator hands its output batch to its chained successors by
//! function call, and to *tails* — network writers (to other subtasks) and sinks. Tails buffer
//! synchronously; the subtask drains them asynchronously after each step, which is where it
//! waits for room downstream.
//!
//! Every call into operator code runs under [`guard`], which turns a panic or an error into a
//! [`Fault`] naming that operator. A chained successor's fault is caught by the successor's own
//! guard first, so the innermost operator is the one named.

use crate::checkpoint::capture::OperatorEntry;
use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{DataBatch, Emission};
use crate::dataplane::lane::LaneSender;
use crate::dataplane::message::{
    BarrierAlignment, CheckpointBarrier, CheckpointKind, PriorityMessage, StreamMessage,
    WatermarkStatus,
};
use crate::dataplane::partition::{BoxFuture, NetworkOutput};
use crate::error::{FailureCause, OperatorLabel, panic_message};
use crate::operators::operator::{ErasedOperator, OperatorFault, TaskInfo};
use crate::operators::sink::ErasedSink;
use crate::types::CheckpointId;
use crate::types::{Timestamp, Watermark};
use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::task::{Context, Poll};

/// A failure inside a subtask, attributed to one operator.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) operator: OperatorLabel,
    pub(crate) cause: FailureCause,
}

impl From<OperatorFault> for FailureCause {
    fn from(f: OperatorFault) -> Self {
        match f {
            OperatorFault::User(e) => FailureCause::Error(Arc::from(e)),
            OperatorFault::Type(t) => FailureCause::Internal(t.to_string()),
        }
    }
}

/// What running user code under `catch_unwind` gave: its result, or a panic payload.
pub(crate) type Caught<R, E> = Result<Result<R, E>, Box<dyn Any + Send>>;

/// Turns caught user code's outcome into a [`Fault`] naming `label`, if it failed.
pub(crate) fn settle<R, E: Into<FailureCause>>(
    label: &OperatorLabel,
    caught: Caught<R, E>,
) -> Result<R, Fault> {
    let cause = match caught {
        Ok(Ok(r)) => return Ok(r),
        Ok(Err(e)) => e.into(),
        Err(payload) => FailureCause::Panic(panic_message(payload.as_ref())),
    };
    Err(Fault {
        operator: label.clone(),
        cause,
    })
}

/// Runs operator code, turning a panic or an error into a [`Fault`] naming `label`.
pub(crate) fn guard<R, E: Into<FailureCause>>(
    label: &OperatorLabel,
    f: impl FnOnce() -> Result<R, E>,
) -> Result<R, Fault> {
    settle(label, catch_unwind(AssertUnwindSafe(f)))
}

/// Polls a future, turning a panic into an `Err` with its payload.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Awaits user async code under `label`: a panic or error becomes a [`Fault`].
pub(crate) async fn guard_async<R, E: Into<FailureCause>>(
    label: &OperatorLabel,
    fut: BoxFuture<'_, Result<R, E>>,
) -> Result<R, Fault> {
    settle(label, CatchUnwind(fut).await)
}

impl From<crate::error::UserError> for FailureCause {
    fn from(e: crate::error::UserError) -> Self {
        FailureCause::Error(Arc::from(e))
    }
}

/// A control signal travelling down a chain in order with the data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    Watermark(Watermark),
    Status(WatermarkStatus),
    Barrier(CheckpointBarrier),
    EndOfInput,
}

/// Where an operator's output goes.
pub(crate) enum Output {
    /// A chained operator, fed on the given logical input.
    Operator(Box<ChainNode>, usize),
    /// A tail of the subtask, by index.
    Tail(usize),
}

/// One output of an operator: its main output (`tag` is `None`) or one side output.
pub(crate) struct Route {
    pub(crate) tag: Option<Arc<str>>,
    pub(crate) to: Output,
    /// The record type the receiver reads (checked for side outputs, whose type the
    /// emitting code picks by its tag).
    pub(crate) record_type: Option<&'static str>,
}

impl Route {
    pub(crate) fn main(to: Output) -> Self {
        Route {
            tag: None,
            to,
            record_type: None,
        }
    }
}

/// One chained operator and its successors.
pub(crate) struct ChainNode {
    pub(crate) label: OperatorLabel,
    pub(crate) info: TaskInfo,
    pub(crate) op: Box<dyn ErasedOperator>,
    pub(crate) outputs: Vec<Route>,
    /// Reused buffer for what the operator emitted.
    pub(crate) scratch: Vec<Emission>,
    /// The operator's key in checkpoints.
    pub(crate) key: String,
    /// State to restore before the first record.
    pub(crate) restored: Option<RestoredState>,
    /// End of input reached this operator while it still had asynchronous work: passed on to
    /// its successors once that is done (see `Operator::is_blocked`).
    pub(crate) end_pending: bool,
    /// `open` was called, so `close` is due.
    pub(crate) opened: bool,
}

impl ChainNode {
    pub(crate) fn open(&mut self) -> Result<(), Fault> {
        let info = &self.info;
        let op = &mut self.op;
        self.opened = true;
        guard(&self.label, || op.open(info))?;
        for o in &mut self.outputs {
            if let Output::Operator(node, _) = &mut o.to {
                node.open()?;
            }
        }
        Ok(())
    }

    /// Closes this node and its chained successors (each once); the first error is returned
    /// after all were closed.
    fn close(&mut self) -> Result<(), Fault> {
        let mut result = Ok(());
        if std::mem::take(&mut self.opened) {
            let op = &mut self.op;
            result = guard(&self.label, || op.close());
        }
        let rest = close_chain(&mut self.outputs);
        result.and(rest)
    }

    fn snapshot(
        &mut self,
        id: CheckpointId,
        incremental: bool,
        into: &mut Vec<OperatorEntry>,
    ) -> Result<(), Fault> {
        let mut state = OperatorState::default();
        state.set_context(crate::checkpoint::types::SnapshotContext {
            incremental,
            chunk_prefix: format!("{}{}/", crate::checkpoint::capture::CHUNK_PREFIX, self.key),
        });
        let op = &mut self.op;
        guard(&self.label, || op.snapshot_state(id, &mut state))?;
        into.push(OperatorEntry {
            key: self.key.clone(),
            max_parallelism: self.info.max_parallelism,
            state,
        });
        snapshot_chain(&mut self.outputs, id, incremental, into)
    }

    fn restore(&mut self) -> Result<(), Fault> {
        if let Some(r) = self.restored.take() {
            let op = &mut self.op;
            guard(&self.label, || op.restore_state(r))?;
        }
        restore_chain(&mut self.outputs)
    }

    fn notify(&mut self, id: CheckpointId) -> Result<(), Fault> {
        let op = &mut self.op;
        guard(&self.label, || op.notify_checkpoint_complete(id))?;
        notify_chain(&mut self.outputs, id)
    }

    pub(crate) fn process(
        &mut self,
        input: usize,
        batch: DataBatch,
        tails: &mut [Tail],
    ) -> Result<(), Fault> {
        let op = &mut self.op;
        guard(&self.label, || op.process(input, batch))?;
        self.dispatch(tails)
    }

    /// Hands what the operator emitted to its outputs, in order.
    fn dispatch(&mut self, tails: &mut [Tail]) -> Result<(), Fault> {
        let mut emitted = std::mem::take(&mut self.scratch);
        self.op.take_emissions(&mut emitted);
        let mut result = Ok(());
        for e in emitted.drain(..) {
            if result.is_err() {
                break;
            }
            result = match e {
                Emission::Data(batch) => emit(&mut self.outputs, None, batch, tails),
                Emission::Side(tag, batch) => {
                    match side_type_mismatch(&self.outputs, &tag, batch.type_name()) {
                        Some(cause) => Err(Fault {
                            operator: self.label.clone(),
                            cause,
                        }),
                        None => emit_side(&mut self.outputs, &tag, batch, tails),
                    }
                }
                Emission::Watermark(wm) => {
                    signal_outputs(&mut self.outputs, Signal::Watermark(wm), tails)
                }
                Emission::Status(st) => {
                    signal_outputs(&mut self.outputs, Signal::Status(st), tails)
                }
            };
            if result.is_ok() {
                result = self.settle_successors(tails);
            }
        }
        emitted.clear();
        self.scratch = emitted;
        result
    }

    /// True if end of input waits here and nothing holds it back any more.
    fn end_ready(&self) -> bool {
        self.end_pending && !self.op.has_more() && !self.op.is_blocked()
    }

    /// True while this node or a chained successor has work left (see `Operator::has_more`).
    pub(crate) fn has_more(&self) -> bool {
        self.op.has_more()
            || self.end_ready()
            || self.outputs.iter().any(|o| match &o.to {
                Output::Operator(node, _) => node.has_more(),
                Output::Tail(_) => false,
            })
    }

    /// True while this node or a chained successor waits for asynchronous work and takes no
    /// input (see `Operator::is_blocked`).
    pub(crate) fn is_blocked(&self) -> bool {
        self.op.is_blocked()
            || self.outputs.iter().any(|o| match &o.to {
                Output::Operator(node, _) => node.is_blocked(),
                Output::Tail(_) => false,
            })
    }

    /// Does one chunk of the pending work, upstream first.
    pub(crate) fn resume(&mut self, tails: &mut [Tail]) -> Result<(), Fault> {
        if self.op.has_more() {
            let op = &mut self.op;
            guard(&self.label, || op.resume())?;
            return self.dispatch(tails);
        }
        if self.end_ready() {
            self.end_pending = false;
            return signal_outputs(&mut self.outputs, Signal::EndOfInput, tails);
        }
        for o in &mut self.outputs {
            if let Output::Operator(node, _) = &mut o.to
                && node.has_more()
            {
                return node.resume(tails);
            }
        }
        Ok(())
    }

    /// Runs chained successors' pending work to its end. Between two emissions of this node a
    /// successor must be done with the previous one (order); only the chain head is resumed
    /// chunk by chunk from the subtask loop.
    fn settle_successors(&mut self, tails: &mut [Tail]) -> Result<(), Fault> {
        for o in &mut self.outputs {
            if let Output::Operator(node, _) = &mut o.to {
                while node.has_more() {
                    node.resume(tails)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn signal(&mut self, signal: Signal, tails: &mut [Tail]) -> Result<(), Fault> {
        let op = &mut self.op;
        match signal {
            Signal::Watermark(wm) => {
                guard(&self.label, || op.process_watermark(wm))?;
                self.dispatch(tails)
            }
            Signal::Status(st) => {
                guard(&self.label, || op.process_status(st))?;
                self.dispatch(tails)
            }
            Signal::EndOfInput => {
                guard(&self.label, || op.finish())?;
                self.dispatch(tails)?;
                if self.op.has_more() || self.op.is_blocked() {
                    // Its asynchronous work ends first; `resume` passes end of input on.
                    self.end_pending = true;
                    Ok(())
                } else {
                    signal_outputs(&mut self.outputs, signal, tails)
                }
            }
            Signal::Barrier(_) => signal_outputs(&mut self.outputs, signal, tails),
        }
    }

    /// Keys with keyed state in this node and its chained successors (`None`: none keeps any).
    pub(crate) fn key_count(&self) -> Option<usize> {
        let mine = self.op.key_count();
        self.outputs
            .iter()
            .filter_map(|o| match &o.to {
                Output::Operator(node, _) => node.key_count(),
                Output::Tail(_) => None,
            })
            .chain(mine)
            .reduce(|a, b| a + b)
    }

    /// The earliest processing time at which this node or a chained successor wants a call.
    pub(crate) fn next_processing_time(&self) -> Option<Timestamp> {
        let mine = self.op.next_processing_time();
        self.outputs
            .iter()
            .filter_map(|o| match &o.to {
                Output::Operator(node, _) => node.next_processing_time(),
                Output::Tail(_) => None,
            })
            .chain(mine)
            .min()
    }

    /// Calls every node whose processing time is due at `now`, upstream first.
    pub(crate) fn fire_processing_time(
        &mut self,
        now: Timestamp,
        tails: &mut [Tail],
    ) -> Result<(), Fault> {
        if self.op.next_processing_time().is_some_and(|t| t <= now) {
            let op = &mut self.op;
            guard(&self.label, || op.on_processing_time(now))?;
            self.dispatch(tails)?;
        }
        for o in &mut self.outputs {
            if let Output::Operator(node, _) = &mut o.to {
                node.fire_processing_time(now, tails)?;
            }
        }
        Ok(())
    }
}

/// Snapshots every chained operator among `outputs` (depth first).
pub(crate) fn snapshot_chain(
    outputs: &mut [Route],
    id: CheckpointId,
    incremental: bool,
    into: &mut Vec<OperatorEntry>,
) -> Result<(), Fault> {
    for o in outputs {
        if let Output::Operator(node, _) = &mut o.to {
            node.snapshot(id, incremental, into)?;
        }
    }
    Ok(())
}

/// Closes every opened chained operator among `outputs` (see `Operator::close`).
pub(crate) fn close_chain(outputs: &mut [Route]) -> Result<(), Fault> {
    let mut result = Ok(());
    for o in outputs {
        if let Output::Operator(node, _) = &mut o.to {
            let r = node.close();
            if result.is_ok() {
                result = r;
            }
        }
    }
    result
}

/// Restores every chained operator among `outputs` that has restored state.
pub(crate) fn restore_chain(outputs: &mut [Route]) -> Result<(), Fault> {
    for o in outputs {
        if let Output::Operator(node, _) = &mut o.to {
            node.restore()?;
        }
    }
    Ok(())
}

/// Tells every chained operator among `outputs` that checkpoint `id` completed.
pub(crate) fn notify_chain(outputs: &mut [Route], id: CheckpointId) -> Result<(), Fault> {
    for o in outputs {
        if let Output::Operator(node, _) = &mut o.to {
            node.notify(id)?;
        }
    }
    Ok(())
}

/// Decodes in-flight bytes of logical input `input` with the type the chain head reads.
pub(crate) fn decode_input(
    outputs: &[Route],
    input: usize,
    bytes: &[u8],
) -> Result<DataBatch, String> {
    for o in outputs {
        if let Output::Operator(node, _) = &o.to {
            return node.op.decode_input(input, bytes);
        }
    }
    Err("in-flight data for a subtask without an operator at its head".into())
}

/// True while an operator among `outputs` has work left.
pub(crate) fn has_more(outputs: &[Route]) -> bool {
    outputs.iter().any(|o| match &o.to {
        Output::Operator(node, _) => node.has_more(),
        Output::Tail(_) => false,
    })
}

/// True while an operator among `outputs` waits for asynchronous work.
pub(crate) fn is_blocked(outputs: &[Route]) -> bool {
    outputs.iter().any(|o| match &o.to {
        Output::Operator(node, _) => node.is_blocked(),
        Output::Tail(_) => false,
    })
}

/// Does one chunk of the first pending work among `outputs`.
pub(crate) fn resume(outputs: &mut [Route], tails: &mut [Tail]) -> Result<(), Fault> {
    for o in outputs {
        if let Output::Operator(node, _) = &mut o.to
            && node.has_more()
        {
            return node.resume(tails);
        }
    }
    Ok(())
}

/// Keys with keyed state among `outputs`' chained operators.
pub(crate) fn key_count(outputs: &[Route]) -> Option<usize> {
    outputs
        .iter()
        .filter_map(|o| match &o.to {
            Output::Operator(node, _) => node.key_count(),
            Output::Tail(_) => None,
        })
        .reduce(|a, b| a + b)
}

/// The earliest processing-time wake-up among `outputs`' chained operators.
pub(crate) fn next_processing_time(outputs: &[Route]) -> Option<Timestamp> {
    outputs
        .iter()
        .filter_map(|o| match &o.to {
            Output::Operator(node, _) => node.next_processing_time(),
            Output::Tail(_) => None,
        })
        .min()
}

/// Fires every due processing-time callback among `outputs`' chained operators.
pub(crate) fn fire_processing_time(
    outputs: &mut [Route],
    now: Timestamp,
    tails: &mut [Tail],
) -> Result<(), Fault> {
    for o in outputs {
        if let Output::Operator(node, _) = &mut o.to {
            node.fire_processing_time(now, tails)?;
        }
    }
    Ok(())
}

/// Hands `batch` to every main output (a clone to all but the last); `input` overrides the
/// logical input of chained operators (see [`deliver`]).
pub(crate) fn emit(
    outputs: &mut [Route],
    input: Option<usize>,
    batch: DataBatch,
    tails: &mut [Tail],
) -> Result<(), Fault> {
    let mut mains = outputs.iter_mut().filter(|o| o.tag.is_none()).peekable();
    while let Some(o) = mains.next() {
        if mains.peek().is_some() {
            deliver(&mut o.to, input, batch.clone(), tails)?;
        } else {
            return deliver(&mut o.to, input, batch, tails);
        }
    }
    Ok(())
}

/// If a reader of side output `tag` reads another type than the `found` one emitted, the
/// failure naming the tag (one tag id used with two `OutputTag` types).
pub(crate) fn side_type_mismatch(
    outputs: &[Route],
    tag: &Arc<str>,
    found: &'static str,
) -> Option<FailureCause> {
    let expected = outputs
        .iter()
        .filter(|o| o.tag.as_ref() == Some(tag))
        .find_map(|o| o.record_type.filter(|t| *t != found))?;
    Some(FailureCause::Error(Arc::from(
        crate::error::UserError::from(format!(
            "side output '{tag}' was emitted with records of type `{found}`, but \
         get_side_output reads it as `{expected}`: two OutputTags with the id '{tag}' and \
         different types; give each type its own tag id"
        )),
    )))
}

/// Hands `batch` to every output reading side output `tag`; dropped if nobody reads it.
pub(crate) fn emit_side(
    outputs: &mut [Route],
    tag: &Arc<str>,
    batch: DataBatch,
    tails: &mut [Tail],
) -> Result<(), Fault> {
    let mut readers = outputs
        .iter_mut()
        .filter(|o| o.tag.as_ref() == Some(tag))
        .peekable();
    while let Some(o) = readers.next() {
        if readers.peek().is_some() {
            deliver(&mut o.to, None, batch.clone(), tails)?;
        } else {
            return deliver(&mut o.to, None, batch, tails);
        }
    }
    Ok(())
}

/// Hands `batch` to one output; `input` overrides the logical input of a chained operator
/// (used for the chain head, fed from input lanes).
pub(crate) fn deliver(
    output: &mut Output,
    input: Option<usize>,
    batch: DataBatch,
    tails: &mut [Tail],
) -> Result<(), Fault> {
    match output {
        Output::Operator(node, i) => node.process(input.unwrap_or(*i), batch, tails),
        Output::Tail(t) => match tails.get_mut(*t) {
            Some(tail) => tail.accept(batch),
            None => Err(Fault {
                operator: OperatorLabel::new(crate::types::NodeId(usize::MAX), "chain"),
                cause: FailureCause::Internal(format!("tail {t} does not exist")),
            }),
        },
    }
}

/// Passes a control signal to every output, main and side.
pub(crate) fn signal_outputs(
    outputs: &mut [Route],
    signal: Signal,
    tails: &mut [Tail],
) -> Result<(), Fault> {
    for o in outputs {
        match &mut o.to {
            Output::Operator(node, _) => node.signal(signal, tails)?,
            Output::Tail(t) => signal_tail(tails, *t, signal)?,
        }
    }
    Ok(())
}

/// Passes a control signal to tail `t`. A sink with side outputs passes it on to them after
/// the work queued before it, so its side records stay in order with the signal.
fn signal_tail(tails: &mut [Tail], t: usize, signal: Signal) -> Result<(), Fault> {
    let Some(tail) = tails.get_mut(t) else {
        return Ok(());
    };
    tail.signal(signal);
    if let Tail::Sink(s) = tail
        && !s.sides.is_empty()
    {
        if s.work.is_empty() {
            // A checkpoint's barrier always takes this way (the sink's queue was run for
            // its snapshot), so an unaligned barrier overtakes the side output at once.
            return forward_sink_signal(tails, t, signal);
        }
        s.work.push_back(SinkWork::Signal(signal));
    }
    Ok(())
}

/// Passes `signal` from sink tail `t` to the readers of its side outputs.
fn forward_sink_signal(tails: &mut [Tail], t: usize, signal: Signal) -> Result<(), Fault> {
    let Some(Tail::Sink(s)) = tails.get_mut(t) else {
        return Ok(());
    };
    if matches!(signal, Signal::EndOfInput) {
        s.sides_ended = true;
    }
    let mut sides = std::mem::take(&mut s.sides);
    let result = signal_outputs(&mut sides, signal, tails);
    if let Some(Tail::Sink(s)) = tails.get_mut(t) {
        s.sides = sides;
    }
    result
}

/// Sends the side-output records sink tail `t` emitted during its last call to their
/// readers. Records nobody reads, or emitted after the side outputs ended, fail the sink:
/// they would be lost.
pub(crate) fn route_sink_side_outputs(tails: &mut [Tail], t: usize) -> Result<(), Fault> {
    let Some(Tail::Sink(s)) = tails.get_mut(t) else {
        return Ok(());
    };
    let mut emitted = std::mem::take(&mut s.side_scratch);
    s.sink.take_side_outputs(&mut emitted);
    if emitted.is_empty() {
        s.side_scratch = emitted;
        return Ok(());
    }
    let label = s.label.clone();
    let fail = |message: String| Fault {
        operator: label.clone(),
        cause: FailureCause::Error(Arc::from(crate::error::UserError::from(message))),
    };
    let ended = s.sides_ended;
    let mut sides = std::mem::take(&mut s.sides);
    let mut result = Ok(());
    for e in emitted.drain(..) {
        let Emission::Side(tag, batch) = e else {
            continue;
        };
        if ended {
            result = Err(fail(format!(
                "the sink emitted {} record(s) to side output '{tag}' after that output \
                 ended: they cannot be delivered",
                batch.len()
            )));
            break;
        }
        if !sides.iter().any(|r| r.tag.as_ref() == Some(&tag)) {
            result = Err(fail(format!(
                "the sink emitted {} record(s) to side output '{tag}', which nobody reads: \
                 they would be lost; read it with get_side_output on the sink",
                batch.len()
            )));
            break;
        }
        if let Some(cause) = side_type_mismatch(&sides, &tag, batch.type_name()) {
            result = Err(Fault {
                operator: label.clone(),
                cause,
            });
            break;
        }
        result = emit_side(&mut sides, &tag, batch, tails);
        if result.is_err() {
            break;
        }
    }
    if let Some(Tail::Sink(s)) = tails.get_mut(t) {
        s.sides = sides;
        s.side_scratch = emitted;
    }
    result
}

/// Runs the work queued for sink tail `t`, routing its side outputs after each call. Only
/// cancellation interrupts it (the in-flight write is then abandoned with the job).
pub(crate) async fn run_sink(tails: &mut [Tail], t: usize) -> Result<(), Fault> {
    loop {
        let Some(Tail::Sink(s)) = tails.get_mut(t) else {
            return Ok(());
        };
        let Some(work) = s.work.pop_front() else {
            return Ok(());
        };
        match work {
            SinkWork::Write(batch) => guard_async(&s.label, s.sink.write(batch)).await?,
            SinkWork::Finish => guard_async(&s.label, s.sink.finish()).await?,
            SinkWork::Signal(Signal::EndOfInput) if s.hold_end => {
                // The final snapshot may still set records aside (a sink that flushes at
                // checkpoints): end of input follows it (`release_sink_ends`).
                s.end_held = true;
                continue;
            }
            SinkWork::Signal(signal) => {
                forward_sink_signal(tails, t, signal)?;
                continue;
            }
        }
        route_sink_side_outputs(tails, t)?;
    }
}

/// Passes the end of input held back by sinks (see `SinkTail::hold_end`) to their side
/// outputs: called after the subtask's final snapshot.
pub(crate) fn release_sink_ends(tails: &mut [Tail]) -> Result<(), Fault> {
    for t in 0..tails.len() {
        if let Tail::Sink(s) = &mut tails[t]
            && std::mem::take(&mut s.end_held)
        {
            forward_sink_signal(tails, t, Signal::EndOfInput)?;
        }
    }
    Ok(())
}

/// Work queued for a sink.
pub(crate) enum SinkWork {
    Write(DataBatch),
    Finish,
    /// A signal for the sink's side outputs, passed on once the work before it is done.
    Signal(Signal),
}

/// A sink at the end of a chain.
pub(crate) struct SinkTail {
    pub(crate) label: OperatorLabel,
    pub(crate) info: TaskInfo,
    pub(crate) sink: Box<dyn ErasedSink>,
    pub(crate) work: VecDeque<SinkWork>,
    /// The sink's key in checkpoints.
    pub(crate) key: String,
    /// State to restore after open.
    pub(crate) restored: Option<RestoredState>,
    /// The subtask's output watermark (metrics), raised by every watermark reaching the sink.
    pub(crate) output_watermark: Arc<AtomicI64>,
    /// The sink's side outputs (network tails of this subtask: a sink has no chained
    /// successors).
    pub(crate) sides: Vec<Route>,
    /// End of input was passed to the side outputs.
    pub(crate) sides_ended: bool,
    /// The subtask takes a final snapshot after end of input (checkpointing is on): end of
    /// input reaches the side outputs after it, with what the sink set aside in it.
    pub(crate) hold_end: bool,
    /// End of input reached the sink and waits for the final snapshot (see `hold_end`).
    pub(crate) end_held: bool,
    /// Reused buffer for the side records taken from the sink.
    pub(crate) side_scratch: Vec<Emission>,
}

impl SinkTail {
    pub(crate) async fn open(&mut self) -> Result<(), Fault> {
        guard_async(&self.label, self.sink.open(&self.info)).await
    }
}

/// The end of a chain: a network writer or a sink.
#[allow(clippy::large_enum_variant)] // a handful per subtask, never moved on the hot path
pub(crate) enum Tail {
    Network {
        /// The operator whose output this is (a custom partitioner runs its code).
        owner: OperatorLabel,
        writer: Box<dyn NetworkOutput>,
        /// Priority lanes of the downstream subtasks, for unaligned barriers.
        priority: Vec<LaneSender<PriorityMessage>>,
        /// Announce aligned checkpoint barriers on the priority lanes (an alignment timeout
        /// is set).
        announce: bool,
        /// The output the last unaligned barrier overtook, per channel, until the subtask
        /// puts it into its snapshot.
        overtaken: Vec<(usize, Vec<StreamMessage>)>,
        /// The subtask's output watermark (metrics), raised by every watermark sent.
        output_watermark: Arc<AtomicI64>,
    },
    Sink(SinkTail),
}

impl Tail {
    fn accept(&mut self, batch: DataBatch) -> Result<(), Fault> {
        match self {
            Tail::Network { owner, writer, .. } => guard(owner, || writer.emit(batch)),
            Tail::Sink(s) => {
                s.work.push_back(SinkWork::Write(batch));
                Ok(())
            }
        }
    }

    fn signal(&mut self, signal: Signal) {
        if let Signal::Watermark(wm) = signal {
            let out = match self {
                Tail::Network {
                    output_watermark, ..
                } => output_watermark,
                Tail::Sink(s) => &s.output_watermark,
            };
            out.fetch_max(wm.0, std::sync::atomic::Ordering::Relaxed);
        }
        match self {
            Tail::Network {
                writer,
                priority,
                announce,
                overtaken,
                ..
            } => writer.emit_control(match signal {
                Signal::Watermark(wm) => StreamMessage::Watermark(wm),
                Signal::Status(s) => StreamMessage::Status(s),
                Signal::Barrier(b) if b.alignment == BarrierAlignment::Unaligned => {
                    // The in-band copy goes into the receivers' queues at once, ahead of the
                    // output still pending here (which this subtask snapshots), so a receiver
                    // finds its whole in-flight data in its queue; then the priority copy
                    // tells it to act.
                    *overtaken = writer.barrier_ahead(StreamMessage::Barrier(b));
                    for p in priority.iter() {
                        let _ = p.try_send(PriorityMessage::Barrier(b));
                    }
                    return;
                }
                Signal::Barrier(b) => {
                    if *announce
                        && b.alignment == BarrierAlignment::Aligned
                        && b.kind == CheckpointKind::Checkpoint
                    {
                        // Savepoints stay aligned whatever the timeout.
                        for p in priority.iter() {
                            let _ = p.try_send(PriorityMessage::Announce(b));
                        }
                    }
                    StreamMessage::Barrier(b)
                }
                Signal::EndOfInput => StreamMessage::EndOfInput,
            }),
            Tail::Sink(s) => {
                if let Signal::EndOfInput = signal {
                    s.work.push_back(SinkWork::Finish);
                }
            }
        }
    }
}
