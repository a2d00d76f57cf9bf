//! Async I/O (Flink's `AsyncWaitOperator`): a user function that returns a future per record
//! (a database lookup, a call to a service), with up to `capacity` requests in flight per
//! subtask, results emitted in input order or as they complete, a timeout per record,
//! optional retries, and the in-flight inputs in every checkpoint.
//!
//! **Order.** [`AsyncOrder::Ordered`] emits results in input order. [`AsyncOrder::Unordered`]
//! emits a result as soon as it completes, but never across a watermark: records between two
//! watermarks may overtake each other, a watermark leaves only after every result of the
//! records before it (as Flink's unordered mode).
//!
//! **Capacity.** Records, watermarks and idleness changes waiting for their turn count
//! against `capacity`. At capacity the operator is *blocked*: its subtask reads no more input
//! (backpressure upstream) until a request completes.
//!
//! **Timeouts and retries.** The timeout covers a record's whole request, retries included.
//! When it expires, [`AsyncFunction::timeout`] decides: by default the job fails with an error
//! naming the timeout. A failed request (an `Err`) fails the job, unless an
//! [`AsyncRetryStrategy`] retries it.
//!
//! **Checkpoints.** A snapshot holds the input of every record whose result has not been
//! emitted (in flight, completed but held back, or waiting for capacity), as list state; on
//! restore — at any parallelism — those records are issued again before new input. Their
//! results were not emitted before the barrier, so every record's result reaches downstream
//! exactly once (as far as the request itself is idempotent: a request may run again after a
//! failure).
//!
//! Requests run as tokio tasks of the job's runtime; the subtask never blocks a worker thread
//! while waiting. A function that can only block belongs on a thread of its own
//! ([`BlockingMapOperator`](crate::operators::blocking::BlockingMapOperator)).

use crate::checkpoint::types::{OperatorState, RestoredState};
use crate::dataplane::data::{Batch, Collector, Data};
use crate::dataplane::message::WatermarkStatus;
use crate::error::{UserError, panic_message};
use crate::operators::operator::{Operator, TaskInfo};
use crate::types::{CheckpointId, Timestamp, Watermark};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// A function that answers each record with a future (Flink's `AsyncFunction`).
///
/// [`invoke`](Self::invoke) runs on the subtask, in input order, and returns a future that
/// the runtime spawns as a tokio task (a retry calls it again from that task); it must not
/// block. Its result — zero, one or several output
/// records — is emitted with the input record's timestamp. Implemented for closures
/// `Fn(I) -> impl Future<Output = Result<Vec<O>, UserError>>`; implement the trait for a
/// timeout handler or `open` (a rich function: create the client there).
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::async_io::AsyncFunction;
/// use actorflow_runtime::TaskInfo;
/// use actorflow_runtime::UserError;
/// use std::future::Future;
///
/// /// Looks a user's name up in a (here simulated) service.
/// struct NameLookup { prefix: String }
/// impl AsyncFunction<u64, (u64, String)> for NameLookup {
///     fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
///         self.prefix = format!("user-{}-", info.subtask_index);
///         Ok(())
///     }
///     fn invoke(&self, id: u64) -> impl Future<Output = Result<Vec<(u64, String)>, UserError>> + Send + 'static {
///         let name = format!("{}{id}", self.prefix);
///         async move {
///             tokio::time::sleep(std::time::Duration::from_millis(5)).await;
///             Ok(vec![(id, name)])
///         }
///     }
///     fn timeout(&self, id: u64) -> Result<Vec<(u64, String)>, UserError> {
///         Ok(vec![(id, "unknown".to_string())]) // a default instead of failing the job
///     }
/// }
/// ```
pub trait AsyncFunction<I, O>: Send + Sync + 'static {
    /// Starts the request for `input`. The future runs on the job's tokio runtime; it may
    /// be dropped unfinished (cancellation, restart, timeout).
    fn invoke(&self, input: I) -> impl Future<Output = Result<Vec<O>, UserError>> + Send + 'static;

    /// The request for `input` did not finish within the timeout (retries included). The
    /// default fails the job.
    ///
    /// # Errors
    ///
    /// An error fails the job; the default's names the timeout.
    fn timeout(&self, input: I) -> Result<Vec<O>, UserError> {
        let _ = input;
        Err("async request timed out (AsyncFunction::timeout was not overridden)".into())
    }

    /// Called once per subtask before the first record (Flink's `RichAsyncFunction.open`).
    ///
    /// # Errors
    ///
    /// Any error fails the subtask.
    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let _ = info;
        Ok(())
    }

    /// Called once when the subtask ends, is cancelled or fails (Flink's
    /// `RichAsyncFunction.close`); requests still in flight are cancelled right after.
    fn close(&self) {}
}

impl<I, O, F, Fut> AsyncFunction<I, O> for F
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<O>, UserError>> + Send + 'static,
{
    fn invoke(&self, input: I) -> impl Future<Output = Result<Vec<O>, UserError>> + Send + 'static {
        self(input)
    }
}

/// In which order results leave the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncOrder {
    /// In input order (Flink's `orderedWait`).
    Ordered,
    /// As requests complete, but not across a watermark (Flink's `unorderedWait`).
    Unordered,
}

/// How long to wait before retry `n` (1 = the first retry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AsyncBackoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `initial × multiplier^(n-1)`, at most `max`.
    Exponential {
        /// Before the first retry.
        initial: Duration,
        /// The longest delay.
        max: Duration,
        /// Growth per retry (≥ 1).
        multiplier: f64,
    },
}

impl AsyncBackoff {
    fn delay(&self, retry: u32) -> Duration {
        match *self {
            AsyncBackoff::Fixed(d) => d,
            AsyncBackoff::Exponential {
                initial,
                max,
                multiplier,
            } => {
                let factor = multiplier.max(1.0).powi(retry.saturating_sub(1) as i32);
                initial.mul_f64(factor.min(1e9)).min(max)
            }
        }
    }
}

type ErrorPredicate = Arc<dyn Fn(&UserError) -> bool + Send + Sync>;
type ResultPredicate<O> = Arc<dyn Fn(&[O]) -> bool + Send + Sync>;

/// When and how often a request is tried again (Flink's `AsyncRetryStrategy`). By default
/// every error is retried and no result is.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::operators::async_io::AsyncRetryStrategy;
/// use std::time::Duration;
/// // Up to 3 attempts in all, 10 ms apart, also when the lookup found nothing.
/// let retry: AsyncRetryStrategy<String> = AsyncRetryStrategy::fixed_delay(3, Duration::from_millis(10))
///     .retry_if_result(|found: &[String]| found.is_empty());
/// assert_eq!(retry.max_attempts(), 3);
/// ```
pub struct AsyncRetryStrategy<O> {
    max_attempts: u32,
    backoff: AsyncBackoff,
    on_error: Option<ErrorPredicate>,
    on_result: Option<ResultPredicate<O>>,
}

impl<O> Clone for AsyncRetryStrategy<O> {
    fn clone(&self) -> Self {
        AsyncRetryStrategy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            on_error: self.on_error.clone(),
            on_result: self.on_result.clone(),
        }
    }
}

impl<O> std::fmt::Debug for AsyncRetryStrategy<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRetryStrategy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl<O> AsyncRetryStrategy<O> {
    /// At most `max_attempts` attempts in all (the first one included), `delay` apart.
    pub fn fixed_delay(max_attempts: u32, delay: Duration) -> Self {
        Self::with_backoff(max_attempts, AsyncBackoff::Fixed(delay))
    }

    /// At most `max_attempts` attempts, the delay growing from `initial` by `multiplier` up
    /// to `max`.
    pub fn exponential_backoff(
        max_attempts: u32,
        initial: Duration,
        max: Duration,
        multiplier: f64,
    ) -> Self {
        Self::with_backoff(
            max_attempts,
            AsyncBackoff::Exponential {
                initial,
                max,
                multiplier,
            },
        )
    }

    fn with_backoff(max_attempts: u32, backoff: AsyncBackoff) -> Self {
        AsyncRetryStrategy {
            max_attempts: max_attempts.max(1),
            backoff,
            on_error: None,
            on_result: None,
        }
    }

    /// Retries only the errors `pred` accepts (default: every error).
    pub fn retry_if_error(
        mut self,
        pred: impl Fn(&UserError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Arc::new(pred));
        self
    }

    /// Also retries successful results `pred` accepts (an empty lookup, say); after the last
    /// attempt such a result is emitted as it is.
    pub fn retry_if_result(mut self, pred: impl Fn(&[O]) -> bool + Send + Sync + 'static) -> Self {
        self.on_result = Some(Arc::new(pred));
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn retries(&self, result: &Result<Vec<O>, UserError>) -> bool {
        match result {
            Err(e) => self.on_error.as_ref().is_none_or(|p| p(e)),
            Ok(v) => self.on_result.as_ref().is_some_and(|p| p(v)),
        }
    }
}

/// Settings of an async operator.
#[derive(Clone)]
pub struct AsyncSettings<O> {
    /// Ordered or unordered output.
    pub order: AsyncOrder,
    /// Per record, retries included.
    pub timeout: Duration,
    /// Records (and watermarks) in the operator's queue per subtask, at least 1.
    pub capacity: usize,
    /// Retries, if any.
    pub retry: Option<AsyncRetryStrategy<O>>,
}

impl<O> std::fmt::Debug for AsyncSettings<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSettings")
            .field("order", &self.order)
            .field("timeout", &self.timeout)
            .field("capacity", &self.capacity)
            .field("retry", &self.retry)
            .finish()
    }
}

/// What a finished request gave.
enum Outcome<O> {
    Done(Result<Vec<O>, UserError>),
    TimedOut,
}

/// Completed requests, by sequence number, until the subtask collects them. Holds at most
/// `capacity` entries: each request in flight completes once.
type Completions<O> = Arc<Mutex<Vec<(u64, Outcome<O>)>>>;

struct InFlight<I, O> {
    input: I,
    ts: Option<Timestamp>,
    result: Option<Vec<O>>,
    abort: Option<tokio::task::AbortHandle>,
}

#[derive(Debug, Clone, Copy)]
enum Marker {
    Watermark(Watermark),
    Status(WatermarkStatus),
}

enum Waiting<I> {
    Record(I, Option<Timestamp>),
    Marker(Marker),
}

/// One record of the checkpointed queue: its input and timestamp.
type QueuedRecord<I> = (I, Option<i64>);

/// The Async I/O operator; see the [module docs](self).
pub struct AsyncWaitOperator<I, O, F> {
    function: Option<F>,
    shared: Option<Arc<F>>,
    settings: AsyncSettings<O>,
    runtime: Option<tokio::runtime::Handle>,
    wakeup: Arc<tokio::sync::Notify>,
    name: Arc<str>,
    completions: Completions<O>,
    next_seq: u64,
    records: BTreeMap<u64, InFlight<I, O>>,
    markers: BTreeMap<u64, Marker>,
    waiting: VecDeque<Waiting<I>>,
    finishing: bool,
}

impl<I, O, F> AsyncWaitOperator<I, O, F> {
    /// An operator calling `function` with `settings`.
    pub fn new(function: F, settings: AsyncSettings<O>) -> Self {
        let mut settings = settings;
        settings.capacity = settings.capacity.max(1);
        AsyncWaitOperator {
            function: Some(function),
            shared: None,
            settings,
            runtime: None,
            wakeup: Arc::new(tokio::sync::Notify::new()),
            name: "async".into(),
            completions: Arc::default(),
            next_seq: 0,
            records: BTreeMap::new(),
            markers: BTreeMap::new(),
            waiting: VecDeque::new(),
            finishing: false,
        }
    }

    fn occupied(&self) -> usize {
        self.records.len() + self.markers.len()
    }

    fn has_completions(&self) -> bool {
        self.completions.lock().map_or(true, |c| !c.is_empty())
    }
}

/// Polls a future, turning a panic into an error naming it.
struct CatchPanic<F>(Pin<Box<F>>);

impl<T, F: Future<Output = Result<T, UserError>>> Future for CatchPanic<F> {
    type Output = Result<T, UserError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(p) => p,
            Err(payload) => Poll::Ready(Err(format!(
                "the async function's future panicked: {}",
                panic_message(payload.as_ref())
            )
            .into())),
        }
    }
}

/// Awaits the first attempt, then retries (calling the function again on the request's task)
/// as the strategy says.
async fn attempt_all<I: Data, O, F: AsyncFunction<I, O>, Fut>(
    first: Fut,
    function: &F,
    input: I,
    retry: Option<&AsyncRetryStrategy<O>>,
) -> Result<Vec<O>, UserError>
where
    Fut: Future<Output = Result<Vec<O>, UserError>>,
{
    let mut result = CatchPanic(Box::pin(first)).await;
    let mut attempt = 1u32;
    while let Some(r) = retry
        && attempt < r.max_attempts
        && r.retries(&result)
    {
        tokio::time::sleep(r.backoff.delay(attempt)).await;
        attempt += 1;
        let again = catch_unwind(AssertUnwindSafe(|| function.invoke(input.clone())));
        result = match again {
            Ok(fut) => CatchPanic(Box::pin(fut)).await,
            Err(payload) => Err(format!(
                "the async function panicked: {}",
                panic_message(payload.as_ref())
            )
            .into()),
        };
    }
    result
}

impl<I: Data, O: Data, F: AsyncFunction<I, O>> AsyncWaitOperator<I, O, F> {
    /// Starts the request of record `seq`.
    fn spawn(&self, seq: u64, input: I) -> Result<tokio::task::AbortHandle, UserError> {
        let (Some(function), Some(runtime)) = (&self.shared, &self.runtime) else {
            return Err("the async operator was not opened".into());
        };
        // The first attempt starts here, on the subtask, in input order (as Flink calls
        // `asyncInvoke` on the task thread); only its future runs on the request's task.
        let first = function.invoke(input.clone());
        let function = function.clone();
        let retry = self.settings.retry.clone();
        let timeout = self.settings.timeout;
        let completions = self.completions.clone();
        let wakeup = self.wakeup.clone();
        let handle = runtime.spawn(async move {
            let attempts = attempt_all(first, &*function, input, retry.as_ref());
            let outcome = match tokio::time::timeout(timeout, attempts).await {
                Ok(result) => Outcome::Done(result),
                Err(_) => Outcome::TimedOut,
            };
            if let Ok(mut c) = completions.lock() {
                c.push((seq, outcome));
            }
            wakeup.notify_one();
        });
        Ok(handle.abort_handle())
    }

    /// Moves waiting records and markers into the queue while there is room.
    fn admit(&mut self) -> Result<(), UserError> {
        while self.occupied() < self.settings.capacity {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            match w {
                Waiting::Record(input, ts) => {
                    let abort = self.spawn(seq, input.clone())?;
                    self.records.insert(
                        seq,
                        InFlight {
                            input,
                            ts,
                            result: None,
                            abort: Some(abort),
                        },
                    );
                }
                Waiting::Marker(m) => {
                    self.markers.insert(seq, m);
                }
            }
        }
        Ok(())
    }

    /// Takes the completed requests in and emits whatever may leave now.
    fn progress(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        let done = match self.completions.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return Err("async results lost: a request task panicked".into()),
        };
        for (seq, outcome) in done {
            let Some(entry) = self.records.get_mut(&seq) else {
                continue; // a request of before a restore of this instance's queue
            };
            entry.abort = None;
            let result = match outcome {
                Outcome::Done(r) => r,
                Outcome::TimedOut => {
                    let function = self.shared.as_ref().ok_or("not opened")?;
                    function
                        .timeout(entry.input.clone())
                        .map_err(|e| -> UserError {
                            format!(
                                "{}: async request timed out after {:?}: {e}",
                                self.name, self.settings.timeout
                            )
                            .into()
                        })
                }
            };
            let values = result.map_err(|e| -> UserError {
                format!("{}: async request failed: {e}", self.name).into()
            })?;
            entry.result = Some(values);
        }
        self.emit_ready(out);
        self.admit()?;
        // A watermark just admitted may already be free to leave.
        self.emit_ready(out);
        Ok(())
    }

    fn emit_record(entry: InFlight<I, O>, out: &mut Collector<O>) {
        out.set_timestamp(entry.ts);
        for v in entry.result.into_iter().flatten() {
            out.collect(v);
        }
    }

    fn emit_marker(marker: Marker, out: &mut Collector<O>) {
        match marker {
            Marker::Watermark(wm) => out.emit_watermark(wm),
            Marker::Status(st) => out.emit_status(st),
        }
    }

    fn emit_ready(&mut self, out: &mut Collector<O>) {
        match self.settings.order {
            AsyncOrder::Ordered => loop {
                let rec = self
                    .records
                    .first_key_value()
                    .map(|(s, e)| (*s, e.result.is_some()));
                let marker = self.markers.first_key_value().map(|(s, _)| *s);
                match (rec, marker) {
                    (Some((r, _)), Some(m)) if m < r => {
                        if let Some((_, mk)) = self.markers.pop_first() {
                            Self::emit_marker(mk, out);
                        }
                    }
                    (Some((_, true)), _) => {
                        if let Some((_, e)) = self.records.pop_first() {
                            Self::emit_record(e, out);
                        }
                    }
                    (None, Some(_)) => {
                        if let Some((_, mk)) = self.markers.pop_first() {
                            Self::emit_marker(mk, out);
                        }
                    }
                    _ => break,
                }
            },
            AsyncOrder::Unordered => loop {
                // Everything completed before the first marker leaves; the marker leaves
                // once nothing is before it, then the next segment's completed records.
                let bound = self.markers.first_key_value().map(|(s, _)| *s);
                let ready: Vec<u64> = self
                    .records
                    .range(..bound.unwrap_or(u64::MAX))
                    .filter(|(_, e)| e.result.is_some())
                    .map(|(s, _)| *s)
                    .collect();
                for seq in ready {
                    if let Some(e) = self.records.remove(&seq) {
                        Self::emit_record(e, out);
                    }
                }
                let Some(m) = bound else { break };
                if self.records.first_key_value().is_some_and(|(r, _)| *r < m) {
                    break;
                }
                if let Some((_, mk)) = self.markers.pop_first() {
                    Self::emit_marker(mk, out);
                }
            },
        }
    }
}

impl<I, O, F> Drop for AsyncWaitOperator<I, O, F> {
    fn drop(&mut self) {
        for e in self.records.values_mut() {
            if let Some(a) = e.abort.take() {
                a.abort();
            }
        }
    }
}

impl<I: Data, O: Data, F: AsyncFunction<I, O>> Operator for AsyncWaitOperator<I, O, F> {
    type In = I;
    type Out = O;

    fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            format!(
                "{}: async I/O needs a tokio runtime (run the job with execute().await or execute_blocking())",
                info.operator_name
            )
        })?;
        self.runtime = Some(runtime);
        self.wakeup = info.wakeup.clone();
        self.name = info.operator_name.clone();
        if let Some(mut f) = self.function.take() {
            f.open(info)?;
            self.shared = Some(Arc::new(f));
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch<I>, out: &mut Collector<O>) -> Result<(), UserError> {
        for (v, ts) in batch.into_iter_timestamped() {
            self.waiting.push_back(Waiting::Record(v, ts));
        }
        self.admit()?;
        self.progress(out)
    }

    fn process_watermark(
        &mut self,
        watermark: Watermark,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.waiting
            .push_back(Waiting::Marker(Marker::Watermark(watermark)));
        self.admit()?;
        self.progress(out)
    }

    fn process_status(
        &mut self,
        status: WatermarkStatus,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.waiting
            .push_back(Waiting::Marker(Marker::Status(status)));
        self.admit()?;
        self.progress(out)
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }

    fn has_more(&self) -> bool {
        self.has_completions()
            || (!self.waiting.is_empty() && self.occupied() < self.settings.capacity)
            || (self.records.is_empty() && !self.markers.is_empty())
    }

    fn resume(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        self.admit()?;
        self.progress(out)
    }

    fn is_blocked(&self) -> bool {
        !self.waiting.is_empty()
            || self.occupied() >= self.settings.capacity
            || (self.finishing && !self.records.is_empty())
    }

    fn close(&mut self) -> Result<(), UserError> {
        if let Some(f) = &self.shared {
            f.close();
        }
        for e in self.records.values_mut() {
            if let Some(a) = e.abort.take() {
                a.abort();
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Collector<O>) -> Result<(), UserError> {
        self.finishing = true;
        self.admit()?;
        self.progress(out)
    }

    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        for e in self.records.values() {
            let item: QueuedRecord<I> = (e.input.clone(), e.ts.map(|t| t.0));
            state.push_item(&item)?;
        }
        for w in &self.waiting {
            if let Waiting::Record(input, ts) = w {
                let item: QueuedRecord<I> = (input.clone(), ts.map(|t| t.0));
                state.push_item(&item)?;
            }
        }
        Ok(())
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let items: Vec<QueuedRecord<I>> = restored.state.items()?;
        let mut again: VecDeque<Waiting<I>> = items
            .into_iter()
            .map(|(v, ts)| Waiting::Record(v, ts.map(Timestamp)))
            .collect();
        again.append(&mut self.waiting);
        self.waiting = again;
        self.admit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::harness::OperatorHarness;

    fn settings(order: AsyncOrder, capacity: usize) -> AsyncSettings<u64> {
        AsyncSettings {
            order,
            timeout: Duration::from_secs(3600),
            capacity,
            retry: None,
        }
    }

    /// Completes request `x` when the test releases it.
    #[derive(Clone, Default)]
    struct Gated(Arc<Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<()>>>>);

    impl Gated {
        fn release(&self, x: u64) {
            if let Some(tx) = self.0.lock().unwrap().remove(&x) {
                let _ = tx.send(());
            }
        }
    }

    impl AsyncFunction<u64, u64> for Gated {
        fn invoke(
            &self,
            x: u64,
        ) -> impl Future<Output = Result<Vec<u64>, UserError>> + Send + 'static {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.0.lock().unwrap().insert(x, tx);
            async move {
                rx.await.map_err(|_| "dropped")?;
                Ok(vec![x * 10])
            }
        }
    }

    async fn wait_outputs(h: &mut OperatorHarness<AsyncWaitOperator<u64, u64, Gated>>, n: usize) {
        tokio::time::timeout(
            Duration::from_secs(10),
            h.run_async_until(|h| h.pending_output() >= n),
        )
        .await
        .unwrap()
        .unwrap();
    }

    #[tokio::test]
    async fn ordered_waits_for_the_head_and_keeps_watermarks_in_place() {
        let g = Gated::default();
        let mut h = OperatorHarness::new(AsyncWaitOperator::new(
            g.clone(),
            settings(AsyncOrder::Ordered, 10),
        ))
        .unwrap();
        h.process(1, Some(1)).unwrap();
        h.process(2, Some(2)).unwrap();
        h.watermark(2).unwrap();
        h.process(3, Some(3)).unwrap();
        g.release(2);
        g.release(3);
        tokio::task::yield_now().await;
        assert!(
            h.take_output().is_empty(),
            "nothing may pass the unfinished head"
        );
        assert!(h.take_watermarks().is_empty());
        g.release(1);
        wait_outputs(&mut h, 3).await;
        assert_eq!(
            h.take_output(),
            vec![(10, Some(1)), (20, Some(2)), (30, Some(3))]
        );
        assert_eq!(h.take_watermarks(), vec![2]);
    }

    #[tokio::test]
    async fn unordered_emits_as_completed_but_not_across_a_watermark() {
        let g = Gated::default();
        let mut h = OperatorHarness::new(AsyncWaitOperator::new(
            g.clone(),
            settings(AsyncOrder::Unordered, 10),
        ))
        .unwrap();
        h.process(1, Some(1)).unwrap();
        h.process(2, Some(2)).unwrap();
        h.watermark(2).unwrap();
        h.process(3, Some(3)).unwrap();
        g.release(3);
        g.release(2);
        wait_outputs(&mut h, 1).await;
        // 2 overtakes 1 within the segment; 3 stays behind the watermark.
        assert_eq!(h.take_output(), vec![(20, Some(2))]);
        assert!(h.take_watermarks().is_empty());
        g.release(1);
        wait_outputs(&mut h, 2).await;
        // 1, then the watermark, then 3 (completed earlier) — in that order.
        assert_eq!(h.take_output(), vec![(10, Some(1)), (30, Some(3))]);
        assert_eq!(h.take_watermarks(), vec![2]);
    }

    #[tokio::test]
    async fn at_capacity_the_operator_blocks_and_the_snapshot_holds_every_unemitted_input() {
        let g = Gated::default();
        let mut h = OperatorHarness::new(AsyncWaitOperator::new(
            g.clone(),
            settings(AsyncOrder::Ordered, 2),
        ))
        .unwrap();
        h.process(1, Some(1)).unwrap();
        assert!(!h.is_blocked());
        h.process(2, Some(2)).unwrap();
        assert!(h.is_blocked(), "two requests in flight at capacity 2");
        // A third record arriving anyway (from a chained operator) waits for room.
        h.process(3, None).unwrap();
        g.release(2); // completed but held behind 1 (ordered)
        tokio::task::yield_now().await;
        let state = h.snapshot(1).unwrap();
        let items: Vec<QueuedRecord<u64>> = state.items().unwrap();
        assert_eq!(items, vec![(1, Some(1)), (2, Some(2)), (3, None)]);

        // A new instance restored from it issues all three again, before anything else.
        let g2 = Gated::default();
        let restored = RestoredState {
            state,
            same_index: Some(0),
        };
        let mut h2 = OperatorHarness::restored(
            AsyncWaitOperator::new(g2.clone(), settings(AsyncOrder::Ordered, 2)),
            restored,
            |_| {},
        )
        .unwrap();
        assert!(h2.is_blocked());
        for x in [1, 2, 3] {
            // Released one by one: the third request starts only when there is room.
            tokio::time::timeout(Duration::from_secs(10), async {
                while !g2.0.lock().unwrap().contains_key(&x) {
                    tokio::task::yield_now().await;
                    h2.run_async_until(|_| true).await.unwrap();
                }
            })
            .await
            .unwrap();
            g2.release(x);
        }
        let mut h2 = h2;
        tokio::time::timeout(
            Duration::from_secs(10),
            h2.run_async_until(|h| h.pending_output() >= 3),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            h2.take_output(),
            vec![(10, Some(1)), (20, Some(2)), (30, None)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_call_the_handler_and_retries_back_off() {
        #[derive(Clone)]
        struct Slow(Arc<std::sync::atomic::AtomicU32>);
        impl AsyncFunction<u64, u64> for Slow {
            fn invoke(
                &self,
                x: u64,
            ) -> impl Future<Output = Result<Vec<u64>, UserError>> + Send + 'static {
                let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if x == 0 {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    if n < 2 {
                        Err("flaky".into())
                    } else {
                        Ok(vec![x])
                    }
                }
            }
            fn timeout(&self, x: u64) -> Result<Vec<u64>, UserError> {
                Ok(vec![x + 1000])
            }
        }
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut s = settings(AsyncOrder::Ordered, 4);
        s.timeout = Duration::from_secs(1);
        s.retry = Some(AsyncRetryStrategy::exponential_backoff(
            5,
            Duration::from_millis(10),
            Duration::from_millis(100),
            2.0,
        ));
        let mut h = OperatorHarness::new(AsyncWaitOperator::new(Slow(calls.clone()), s)).unwrap();
        h.process(7, None).unwrap();
        h.run_async_until(|h| h.pending_output() >= 1)
            .await
            .unwrap();
        assert_eq!(h.take_output(), vec![(7, None)]);
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "two failures, then success"
        );
        h.process(0, None).unwrap();
        h.run_async_until(|h| h.pending_output() >= 1)
            .await
            .unwrap();
        assert_eq!(
            h.take_output(),
            vec![(1000, None)],
            "the timeout handler answered"
        );
    }

    #[test]
    fn exponential_backoff_grows_to_its_maximum() {
        let b = AsyncBackoff::Exponential {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
        };
        let d: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, vec![10, 20, 40, 50, 50]);
    }
}
