//! Talking to services without blocking: Async I/O ([`AsyncDataStream`], Flink's
//! `AsyncDataStream.orderedWait / unorderedWait`) and a dedicated thread for code that can
//! only block ([`DataStream::map_blocking`]).
//!
//! Which to use (`docs/async-io.md` has the long form):
//!
//! | the call                                   | use                                   | per subtask, 5 ms calls |
//! |--------------------------------------------|---------------------------------------|-------------------------|
//! | has an async client (`tokio-postgres`, `reqwest`, any `async fn`) | [`AsyncDataStream`] with a capacity | up to `capacity` / 5 ms |
//! | can only block (a sync driver, a C library) | [`DataStream::map_blocking`]         | 1 / 5 ms (≈ 200/s)      |
//! | is quick and CPU-bound                     | plain `map` / `flat_map`              | —                       |
//!
//! Never block inside `map`: the subtask runs on a shared tokio worker, so a blocking call
//! stalls every subtask scheduled on that worker, not only its own.
//!
//! The runtime side is in [`actorflow_runtime::operators::async_io`] and
//! [`actorflow_runtime::operators::blocking`].

use crate::datastream::DataStream;
use actorflow_runtime::Data;
use actorflow_runtime::operators::async_io::{AsyncOrder, AsyncSettings, AsyncWaitOperator};
use actorflow_runtime::operators::blocking::BlockingMapOperator;
use actorflow_runtime::operators::operator::{OperatorFactory, TaskInfo, erase};
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

pub use actorflow_runtime::operators::async_io::{AsyncBackoff, AsyncFunction, AsyncRetryStrategy};
pub use actorflow_runtime::operators::blocking::BlockingFunction;

/// Adds Async I/O to a stream (Flink's `AsyncDataStream`).
///
/// Each subtask keeps up to `capacity` requests in flight; `timeout` bounds each record's
/// request (retries included), after which [`AsyncFunction::timeout`] decides (by default the
/// job fails). Results carry the input record's timestamp. Requests still in flight at a
/// checkpoint are part of it and are issued again after a restore, so every record's result
/// is emitted exactly once. See [`actorflow_runtime::operators::async_io`] for the rules on
/// order and watermarks.
///
/// # Examples
///
/// ```
/// use actorflow::async_io::AsyncDataStream;
/// use std::time::Duration;
/// let mut out = actorflow::testing::example(|env| {
///     let ids = env.from_sequence(1, 100);
///     // A lookup that takes 5 ms; 50 run at once per subtask.
///     AsyncDataStream::unordered_wait(&ids, |id: u64| async move {
///         tokio::time::sleep(Duration::from_millis(5)).await;
///         Ok(vec![(id, format!("name-{id}"))])
///     }, Duration::from_secs(1), 50)
/// });
/// out.sort();
/// assert_eq!(out.len(), 100);
/// assert_eq!(out[0], (1, "name-1".to_string()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AsyncDataStream;

impl AsyncDataStream {
    /// Results in input order (Flink's `orderedWait`).
    #[track_caller]
    pub fn ordered_wait<T, O, F>(
        stream: &DataStream<T>,
        function: F,
        timeout: Duration,
        capacity: usize,
    ) -> DataStream<O>
    where
        T: Data,
        O: Data,
        F: AsyncFunction<T, O> + Clone,
    {
        add(
            stream,
            function,
            settings(AsyncOrder::Ordered, timeout, capacity, None),
            Location::caller(),
        )
    }

    /// Results as requests complete, never across a watermark (Flink's `unorderedWait`).
    #[track_caller]
    pub fn unordered_wait<T, O, F>(
        stream: &DataStream<T>,
        function: F,
        timeout: Duration,
        capacity: usize,
    ) -> DataStream<O>
    where
        T: Data,
        O: Data,
        F: AsyncFunction<T, O> + Clone,
    {
        add(
            stream,
            function,
            settings(AsyncOrder::Unordered, timeout, capacity, None),
            Location::caller(),
        )
    }

    /// [`ordered_wait`](Self::ordered_wait) with retries (Flink's `orderedWaitWithRetry`).
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::async_io::{AsyncDataStream, AsyncRetryStrategy};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::time::Duration;
    /// let calls = Arc::new(AtomicU64::new(0));
    /// let c = calls.clone();
    /// let out = actorflow::testing::example(move |env| {
    ///     let ids = env.from_sequence(1, 3);
    ///     // Every first attempt fails; the retry 1 ms later succeeds.
    ///     let flaky = move |id: u64| {
    ///         let n = c.fetch_add(1, Ordering::SeqCst);
    ///         async move {
    ///             if n % 2 == 0 { Err("service unavailable".into()) } else { Ok(vec![id]) }
    ///         }
    ///     };
    ///     let retry = AsyncRetryStrategy::fixed_delay(3, Duration::from_millis(1));
    ///     AsyncDataStream::ordered_wait_with_retry(&ids, flaky, Duration::from_secs(5), 1, retry)
    /// });
    /// assert_eq!(out, vec![1, 2, 3]);
    /// assert_eq!(calls.load(Ordering::SeqCst), 6);
    /// ```
    #[track_caller]
    pub fn ordered_wait_with_retry<T, O, F>(
        stream: &DataStream<T>,
        function: F,
        timeout: Duration,
        capacity: usize,
        retry: AsyncRetryStrategy<O>,
    ) -> DataStream<O>
    where
        T: Data,
        O: Data,
        F: AsyncFunction<T, O> + Clone,
    {
        add(
            stream,
            function,
            settings(AsyncOrder::Ordered, timeout, capacity, Some(retry)),
            Location::caller(),
        )
    }

    /// [`unordered_wait`](Self::unordered_wait) with retries (Flink's
    /// `unorderedWaitWithRetry`).
    #[track_caller]
    pub fn unordered_wait_with_retry<T, O, F>(
        stream: &DataStream<T>,
        function: F,
        timeout: Duration,
        capacity: usize,
        retry: AsyncRetryStrategy<O>,
    ) -> DataStream<O>
    where
        T: Data,
        O: Data,
        F: AsyncFunction<T, O> + Clone,
    {
        add(
            stream,
            function,
            settings(AsyncOrder::Unordered, timeout, capacity, Some(retry)),
            Location::caller(),
        )
    }
}

fn settings<O>(
    order: AsyncOrder,
    timeout: Duration,
    capacity: usize,
    retry: Option<AsyncRetryStrategy<O>>,
) -> AsyncSettings<O> {
    AsyncSettings {
        order,
        timeout,
        capacity,
        retry,
    }
}

fn add<T, O, F>(
    stream: &DataStream<T>,
    function: F,
    settings: AsyncSettings<O>,
    location: &'static Location<'static>,
) -> DataStream<O>
where
    T: Data,
    O: Data,
    F: AsyncFunction<T, O> + Clone,
{
    let name = match settings.order {
        AsyncOrder::Ordered => "Async Wait (ordered)",
        AsyncOrder::Unordered => "Async Wait (unordered)",
    };
    let factory: Arc<dyn OperatorFactory> = Arc::new(move |_: &TaskInfo| {
        erase(AsyncWaitOperator::new(function.clone(), settings.clone()))
    });
    stream.add_operator(name, factory, location)
}

impl<T: Data> DataStream<T> {
    /// Applies a function that may block, on a thread of its own per subtask, so it stalls
    /// only its own subtask (see the [module docs](self) for when to use it rather than
    /// Async I/O). Records keep their order and timestamps; an error or a panic fails the
    /// subtask.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_sequence(1, 3).map_blocking(|x: u64| {
    ///         // A synchronous call that waits (a sync database driver, say).
    ///         std::thread::sleep(std::time::Duration::from_millis(1));
    ///         Ok(x * 10)
    ///     })
    /// });
    /// assert_eq!(out, vec![10, 20, 30]);
    /// ```
    #[track_caller]
    pub fn map_blocking<O, F>(&self, function: F) -> DataStream<O>
    where
        O: Data,
        F: BlockingFunction<T, O> + Clone + Sync,
    {
        let factory: Arc<dyn OperatorFactory> =
            Arc::new(move |_: &TaskInfo| erase(BlockingMapOperator::new(function.clone())));
        self.add_operator("Blocking Map", factory, Location::caller())
    }
}
