//! A home for blocking code: [`BlockingMapOperator`] runs its function on a thread of its
//! own per subtask, so a function that blocks (a synchronous database driver, a file
//! lookup, a slow library call) costs its own subtask and no other.
//!
//! The subtask hands the thread one input batch at a time and waits — without holding a
//! tokio worker — until the thread has answered; meanwhile it reads no more input
//! (backpressure upstream). Results keep input order and timestamps; watermarks and idleness
//! changes stay behind the batch before them. Throughput is that of the function called in a
//! loop on one thread per subtask (as a Flink subtask's task thread): with a 5 ms call, about
//! 200 records/s per subtask. For more, make the calls concurrent with Async I/O
//! ([`AsyncWaitOperator`](crate::operators::async_io::AsyncWaitOperator)) and an async client.

use crate::checkpoint::types::OperatorState;
use crate::dataplane::data::{Batch, Collector, Data};
use crate::dataplane::message::WatermarkStatus;
use crate::error::{UserError, panic_message};
use crate::operators::operator::{Operator, TaskInfo};
use crate::types::{CheckpointId, Watermark};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// A function that may block, called on a thread of its own (see the [module docs](self)).
///
/// Implemented for closures `FnMut(I) -> Result<O, UserError>`; implement the trait for
/// several outputs per input, `open` or `close`.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::blocking::BlockingFunction;
/// use actorflow_runtime::UserError;
/// /// Splits lines into words, reading a (blocking) stop-word file once in `open`.
/// struct Words { stop: Vec<String> }
/// impl BlockingFunction<String, String> for Words {
///     fn open(&mut self, _: &actorflow_runtime::TaskInfo) -> Result<(), UserError> {
///         self.stop = vec!["the".into()]; // std::fs::read_to_string(..) in real code
///         Ok(())
///     }
///     fn process(&mut self, line: String, out: &mut Vec<String>) -> Result<(), UserError> {
///         out.extend(line.split(' ').filter(|w| !self.stop.iter().any(|s| s == w)).map(String::from));
///         Ok(())
///     }
/// }
/// ```
pub trait BlockingFunction<I, O>: Send + 'static {
    /// Handles one record, pushing its results into `out`. May block.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn process(&mut self, input: I, out: &mut Vec<O>) -> Result<(), UserError>;

    /// Called once on the function's thread before the first record.
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }

    /// Called once on the function's thread when the subtask ends (not while a call runs).
    fn close(&mut self) {}
}

impl<I, O, F> BlockingFunction<I, O> for F
where
    F: FnMut(I) -> Result<O, UserError> + Send + 'static,
{
    fn process(&mut self, input: I, out: &mut Vec<O>) -> Result<(), UserError> {
        out.push(self(input)?);
        Ok(())
    }
}

/// What the thread answers: the batch's results, or the error that stopped it.
type Answer<O> = Arc<Mutex<Option<Result<Batch<O>, UserError>>>>;

enum Work<I> {
    Open(TaskInfo),
    Batch(Batch<I>),
}

#[derive(Debug, Clone, Copy)]
enum Marker {
    Watermark(Watermark),
    Status(WatermarkStatus),
}

enum Waiting<I> {
    Batch(Batch<I>),
    Marker(Marker),
}

/// Runs a [`BlockingFunction`] on a dedicated thread per subtask; see the [module
/// docs](self).
pub struct BlockingMapOperator<I, O, F> {
    function: Option<F>,
    to_thread: Option<SyncSender<Work<I>>>,
    answer: Answer<O>,
    /// A batch (or the open call) is on the thread.
    busy: bool,
    waiting: VecDeque<Waiting<I>>,
    name: Arc<str>,
}

impl<I, O, F> BlockingMapOperator<I, O, F> {
    /// An operator running `function` on a thread of its own.
    pub fn new(function: F) -> Self {
        BlockingMapOperator {
            function: Some(function),
            to_thread: None,
            answer: Arc::default(),
            busy: false,
            waiting: VecDeque::new(),
            name: "blocking".into(),
        }
    }

    fn answered(&self) -> bool {
        self.answer.lock().map_or(true, |a| a.is_some())
    }
}

fn run_thread<I: Data, O: Data, F: BlockingFunction<I, O>>(
    mut function: F,
    work: Receiver<Work<I>>,
    answer: Answer<O>,
    wakeup: Arc<tokio::sync::Notify>,
) {
    let mut opened = false;
    while let Ok(w) = work.recv() {
        let result = catch_unwind(AssertUnwindSafe(|| match w {
            Work::Open(info) => {
                opened = true;
                function.open(&info).map(|()| Batch::new())
            }
            Work::Batch(batch) => {
                let mut out = Batch::with_capacity(batch.len());
                let mut scratch = Vec::new();
                for (v, ts) in batch.into_iter_timestamped() {
                    function.process(v, &mut scratch)?;
                    for o in scratch.drain(..) {
                        out.push_opt(o, ts);
                    }
                }
                Ok(out)
            }
        }))
        .unwrap_or_else(|payload| {
            Err(format!(
                "the blocking function panicked: {}",
                panic_message(payload.as_ref())
            )
            .into())
        });
        if let Ok(mut a) = answer.lock() {
            *a = Some(result);
        }
        wakeup.notify_one();
    }
    if opened {
        let _ = catch_unwind(AssertUnwindSafe(|| function.close()));
    }
}

impl<I: Data, O: Data, F: BlockingFunction<I, O>> BlockingMapOperator<I, O, F> {
    fn send(&mut self, work: Work<I>) -> Result<(), UserError> {
        let tx = self
            .to_thread
            .as_ref()
            .ok_or("the blocking operator was not opened")?;
        tx.try_send(work)
            .map_err(|_| format!("{}: the function's thread is gone", self.name))?;
        self.busy = true;
        Ok(())
    }

    /// Takes the thread's answer in, then hands it the next batch; emits what may leave.
    fn progress(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        if self.busy {
            let answer = match self.answer.lock() {
                Ok(mut a) => a.take(),
                Err(_) => return Err("the blocking function's answer was lost".into()),
            };
            match answer {
                Some(result) => {
                    self.busy = false;
                    let batch = result
                        .map_err(|e| -> UserError { format!("{}: {e}", self.name).into() })?;
                    if !batch.is_empty() {
                        out.collect_batch(batch);
                    }
                }
                None => return Ok(()),
            }
        }
        while !self.busy {
            match self.waiting.pop_front() {
                None => break,
                Some(Waiting::Marker(Marker::Watermark(wm))) => out.emit_watermark(wm),
                Some(Waiting::Marker(Marker::Status(st))) => out.emit_status(st),
                Some(Waiting::Batch(b)) => self.send(Work::Batch(b))?,
            }
        }
        Ok(())
    }
}

impl<I: Data, O: Data, F: BlockingFunction<I, O>> Operator for BlockingMapOperator<I, O, F> {
    type In = I;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.name = info.operator_name.clone();
        let Some(function) = self.function.take() else {
            return Ok(());
        };
        // One batch (or the open call) at a time: a channel of one is enough.
        let (tx, rx) = sync_channel(1);
        let answer = self.answer.clone();
        let wakeup = info.wakeup.clone();
        std::thread::Builder::new()
            .name(format!("{}-{}", info.operator_name, info.subtask_index))
            .spawn(move || run_thread(function, rx, answer, wakeup))
            .map_err(|e| format!("{}: cannot start its thread: {e}", info.operator_name))?;
        self.to_thread = Some(tx);
        // `open` runs on the thread too (it may block); the first batch waits for it.
        self.send(Work::Open(info.clone()))
    }

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        self.waiting.push_back(Waiting::Batch(batch));
        self.progress(out)
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.waiting
            .push_back(Waiting::Marker(Marker::Watermark(watermark)));
        self.progress(out)
    }

    fn process_status(
        &mut self,
        status: WatermarkStatus,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.waiting
            .push_back(Waiting::Marker(Marker::Status(status)));
        self.progress(out)
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }

    fn has_more(&self) -> bool {
        (self.busy && self.answered()) || (!self.busy && !self.waiting.is_empty())
    }

    fn resume(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        self.progress(out)
    }

    fn is_blocked(&self) -> bool {
        self.busy
    }

    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        self.progress(out)
    }

    fn close(&mut self) -> Result<(), UserError> {
        // The thread closes the function and ends once its channel is gone.
        self.to_thread = None;
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        _state: &mut OperatorState,
    ) -> Result<(), UserError> {
        // The runtime reads no barrier while the thread works, so nothing is in flight here.
        if self.busy || !self.waiting.is_empty() {
            return Err(format!(
                "{}: checkpoint {checkpoint} arrived while a batch was on the function's thread",
                self.name
            )
            .into());
        }
        Ok(())
    }
}
