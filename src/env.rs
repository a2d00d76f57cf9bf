//! The execution environment: settings, sources, and running the job.

use crate::datastream::{DataStream, Port};
use crate::sources::{
    CollectionSource, GeneratorSource, IterSource, SequenceSource, SocketSource, TextFileOptions,
    TextFileSource,
};
use actorflow_runtime::dataplane::partition::TypedWriterFactory;
use actorflow_runtime::error::BuildError;
use actorflow_runtime::operators::operator::TaskInfo;
use actorflow_runtime::operators::source::{ErasedSource, SourceFactory, erase_source};
use actorflow_runtime::runtime::graph::{NodeKind, StreamGraph};
use actorflow_runtime::{
    Data, JobConfig, JobError, JobHandle, JobResult, NodeId, RuntimeMode, Source,
};
use std::panic::Location;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Creates the per-subtask instances of a source. Implemented by the built-in sources and by
/// closures `Fn(&TaskInfo) -> S` for any [`Source`] `S`.
///
/// # Examples
///
/// ```
/// use actorflow::prelude::*;
/// /// Emits its subtask index once.
/// struct Hello(Option<u64>);
/// impl Source for Hello {
///     type Output = u64;
///     async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
///         if let Some(i) = self.0.take() { out.collect(i); }
///         Ok(SourceStatus::End)
///     }
/// }
/// let mut out = actorflow::testing::example_with(3, |env| {
///     env.add_source(
///         "hello",
///         actorflow::SourceFn::new(|task: &TaskInfo| Hello(Some(task.subtask_index as u64)))
///             .parallel()
///             .bounded(),
///     )
/// });
/// out.sort();
/// assert_eq!(out, vec![0, 1, 2]);
/// ```
pub trait ParallelSource: Send + Sync + 'static {
    /// The source type.
    type Source: Source;

    /// A fresh instance for one subtask.
    ///
    /// # Errors
    ///
    /// A message saying why the source cannot be set up; the job does not start.
    fn create(&self, task: &TaskInfo) -> Result<Self::Source, String>;

    /// The highest parallelism the source supports (`Some(1)` for a non-parallel source).
    fn max_parallelism(&self) -> Option<u32> {
        None
    }

    /// False for a source that does not end by itself; batch mode refuses it.
    fn is_bounded(&self) -> bool {
        true
    }
}

/// A closure `|task| MySource { .. }` is a source factory as Flink's `SourceFunction` is a
/// source: **non-parallel** (it runs at parallelism 1, so its records are not repeated once
/// per subtask) and **unbounded** (BATCH mode refuses it). Declare otherwise with
/// [`SourceFn`]: `SourceFn::new(f).parallel()` (Flink's `ParallelSourceFunction`: one instance
/// per subtask, each reading its own share) and/or `.bounded()`.
impl<F, S> ParallelSource for F
where
    F: Fn(&TaskInfo) -> S + Send + Sync + 'static,
    S: Source,
{
    type Source = S;
    fn create(&self, task: &TaskInfo) -> Result<S, String> {
        Ok(self(task))
    }
    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }
    fn is_bounded(&self) -> bool {
        false
    }
}

/// A source factory closure with its parallelism and boundedness spelled out.
///
/// # Examples
///
/// ```
/// use actorflow::prelude::*;
/// use actorflow::SourceFn;
/// struct Count { next: u64, end: u64 }
/// impl Source for Count {
///     type Output = u64;
///     async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
///         if self.next == self.end { return Ok(SourceStatus::End); }
///         out.collect(self.next);
///         self.next += 1;
///         Ok(SourceStatus::More)
///     }
/// }
/// // Each of 2 subtasks reads its own half; the source ends, so BATCH mode accepts it.
/// let source = SourceFn::new(|task: &TaskInfo| {
///     let start = task.subtask_index as u64 * 3;
///     Count { next: start, end: start + 3 }
/// })
/// .parallel()
/// .bounded();
/// let mut out = actorflow::testing::example_with(2, |env| {
///     env.set_runtime_mode(RuntimeMode::Batch);
///     env.add_source("count", source)
/// });
/// out.sort();
/// assert_eq!(out, vec![0, 1, 2, 3, 4, 5]);
/// ```
#[derive(Debug, Clone)]
pub struct SourceFn<F> {
    f: F,
    parallel: bool,
    bounded: bool,
}

impl<F> SourceFn<F> {
    /// A non-parallel, unbounded source made by `f` (as a bare closure is).
    pub fn new(f: F) -> Self {
        SourceFn {
            f,
            parallel: false,
            bounded: false,
        }
    }

    /// One instance per subtask, at the stream's parallelism: each must read its own share
    /// (by `TaskInfo::subtask_index`), or its records appear once per subtask.
    pub fn parallel(mut self) -> Self {
        self.parallel = true;
        self
    }

    /// The source ends by itself (`SourceStatus::End`), so BATCH mode may run it.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }
}

impl<F, S> ParallelSource for SourceFn<F>
where
    F: Fn(&TaskInfo) -> S + Send + Sync + 'static,
    S: Source,
{
    type Source = S;
    fn create(&self, task: &TaskInfo) -> Result<S, String> {
        Ok((self.f)(task))
    }
    fn max_parallelism(&self) -> Option<u32> {
        (!self.parallel).then_some(1)
    }
    fn is_bounded(&self) -> bool {
        self.bounded
    }
}

struct SourceAdapter<P>(P);

impl<P: ParallelSource> SourceFactory for SourceAdapter<P> {
    fn create(&self, info: &TaskInfo) -> Result<Box<dyn ErasedSource>, String> {
        self.0.create(info).map(erase_source)
    }
    fn max_parallelism(&self) -> Option<u32> {
        self.0.max_parallelism()
    }
    fn is_bounded(&self) -> bool {
        self.0.is_bounded()
    }
}

static ENV_IDS: AtomicU64 = AtomicU64::new(1);

pub(crate) struct EnvState {
    pub(crate) config: JobConfig,
    pub(crate) graph: StreamGraph,
    pub(crate) errors: Vec<BuildError>,
    pub(crate) generation: u64,
    pub(crate) faults: Option<actorflow_runtime::checkpoint::fault::FaultPlan>,
    /// The web server that shows this environment's jobs.
    #[cfg(feature = "web")]
    pub(crate) web: Option<crate::web::WebServer>,
}

/// The context in which a streaming job is built and run (Flink's
/// `StreamExecutionEnvironment`).
///
/// Cheap to clone: clones share one pipeline. Settings apply to the next `execute`.
///
/// # Examples
///
/// ```
/// use actorflow::prelude::*;
/// # fn main() -> Result<(), JobError> {
/// let env = StreamExecutionEnvironment::new();
/// env.set_parallelism(2);
/// let doubled = env.from_collection(vec![1u64, 2, 3]).map(|x| x * 2).collect();
/// env.execute_blocking("doubling")?;
/// let mut out = doubled.take();
/// out.sort();
/// assert_eq!(out, vec![2, 4, 6]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StreamExecutionEnvironment {
    pub(crate) id: u64,
    pub(crate) state: Arc<Mutex<EnvState>>,
}

impl Default for StreamExecutionEnvironment {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StreamExecutionEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("StreamExecutionEnvironment")
            .field("config", &st.config)
            .field("operators", &st.graph.nodes.len())
            .finish()
    }
}

impl StreamExecutionEnvironment {
    /// A new environment with default settings: parallelism = number of CPUs, buffer timeout
    /// 100 ms, batches of 1024 records, lanes of 16384 records, chaining on.
    pub fn new() -> Self {
        StreamExecutionEnvironment {
            id: ENV_IDS.fetch_add(1, Ordering::Relaxed),
            state: Arc::new(Mutex::new(EnvState {
                config: JobConfig::default(),
                graph: StreamGraph::default(),
                errors: Vec::new(),
                generation: 0,
                faults: None,
                #[cfg(feature = "web")]
                web: None,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, EnvState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn configure(&self, f: impl FnOnce(&mut JobConfig)) -> &Self {
        f(&mut self.lock().config);
        self
    }

    /// Default parallelism of every operator that does not set its own. Must be at least 1
    /// (checked when the job is executed).
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        self.configure(|c| c.default_parallelism = parallelism)
    }

    /// The default parallelism.
    pub fn parallelism(&self) -> u32 {
        self.lock().config.default_parallelism
    }

    /// Default max parallelism (number of key groups, 1..=32768) of every operator that does
    /// not set its own. Without it, each operator derives one from its parallelism, as Flink
    /// does.
    pub fn set_max_parallelism(&self, max_parallelism: u32) -> &Self {
        self.configure(|c| c.max_parallelism = Some(max_parallelism))
    }

    /// How long a partially filled output batch may wait before it is sent (default 100 ms).
    /// Zero sends after every processed input batch: lowest latency, lowest throughput.
    pub fn set_buffer_timeout(&self, timeout: Duration) -> &Self {
        self.configure(|c| c.buffer_timeout = timeout)
    }

    /// Records per batch on the data path (default 1024).
    pub fn set_batch_size(&self, records: usize) -> &Self {
        self.configure(|c| c.batch_size = records)
    }

    /// Capacity of every input lane in records (default 16384). Together with the batch size
    /// it bounds how much data is queued between two subtasks, and so the memory a job uses
    /// and how fast backpressure reaches the sources.
    pub fn set_lane_capacity(&self, records: usize) -> &Self {
        self.configure(|c| c.lane_capacity = records)
    }

    /// Runs every operator in its own subtask (Flink's `disableOperatorChaining`).
    pub fn disable_operator_chaining(&self) -> &Self {
        self.configure(|c| c.chaining = false)
    }

    /// Logs every subtask's metrics through `tracing` (target `actorflow::metrics`) at this
    /// interval.
    pub fn set_metrics_interval(&self, every: Duration) -> &Self {
        self.configure(|c| c.metrics_interval = Some(every))
    }

    /// Streaming (the default) or batch (Flink's `setRuntimeMode`). In batch mode every source
    /// must be bounded and keyed rolling aggregations (`reduce`, `sum`, `min`, …) emit only
    /// their final value per key, at end of input.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::RuntimeMode;
    /// # fn main() -> Result<(), JobError> {
    /// let env = StreamExecutionEnvironment::new();
    /// env.set_parallelism(1).set_runtime_mode(RuntimeMode::Batch);
    /// let totals = env
    ///     .from_collection(vec![('a', 1u64), ('b', 2), ('a', 3)])
    ///     .key_by(|(k, _)| *k)
    ///     .sum(|(_, n)| n)
    ///     .collect();
    /// env.execute_blocking("totals")?;
    /// let mut out = totals.take();
    /// out.sort();
    /// assert_eq!(out, vec![('a', 4), ('b', 2)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_runtime_mode(&self, mode: RuntimeMode) -> &Self {
        self.configure(|c| c.runtime_mode = mode)
    }

    /// How often periodic watermark generators emit (Flink's `setAutoWatermarkInterval`,
    /// default 200 ms; zero turns periodic watermarks off).
    pub fn set_auto_watermark_interval(&self, every: Duration) -> &Self {
        self.configure(|c| c.auto_watermark_interval = every)
    }

    /// Starts the job's processing-time clock at `ms` instead of the wall clock. With tokio's
    /// paused clock (`tokio::time::pause()`), processing-time windows and timers then fire at
    /// exactly reproducible times — meant for tests.
    pub fn set_processing_time_origin(&self, ms: i64) -> &Self {
        self.configure(|c| c.processing_time_origin = Some(ms))
    }

    /// After a cancellation or a failure, how long subtasks get to stop before they are killed
    /// (default 10 s).
    pub fn set_cancel_timeout(&self, timeout: Duration) -> &Self {
        self.configure(|c| c.cancel_timeout = timeout)
    }

    /// Takes a checkpoint every `interval` (Flink's `enableCheckpointing`): exactly-once,
    /// aligned, into memory unless [`set_checkpoint_storage`](Self::set_checkpoint_storage)
    /// says otherwise; failures restart the job from the latest checkpoint with the
    /// default restart strategy (exponential backoff). See `docs/checkpointing.md`.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use std::time::Duration;
    /// let env = StreamExecutionEnvironment::new();
    /// env.enable_checkpointing(Duration::from_millis(500));
    /// let out = env.from_sequence(1, 1000).map(|x| x * 2).collect();
    /// env.execute_blocking("checkpointed").unwrap();
    /// assert_eq!(out.take().len(), 1000);
    /// ```
    pub fn enable_checkpointing(&self, interval: Duration) -> &Self {
        self.checkpointing(|c| c.settings.interval = interval)
    }

    /// Changes the checkpointing settings (enabling checkpointing if it is off): mode,
    /// unaligned, alignment timeout, timeouts, retention, restart strategy, restore source.
    pub fn checkpointing(
        &self,
        f: impl FnOnce(&mut actorflow_runtime::checkpoint::types::CheckpointConfig),
    ) -> &Self {
        self.configure(|c| f(c.checkpointing.get_or_insert_with(Default::default)))
    }

    /// Stores checkpoints in `store` (a `SledStore` for a directory that survives the process).
    pub fn set_checkpoint_storage(
        &self,
        store: std::sync::Arc<dyn actorflow_runtime::checkpoint::snapshot::SnapshotStore>,
    ) -> &Self {
        self.checkpointing(|c| c.store = store)
    }

    /// Starts the job from a checkpoint or savepoint.
    pub fn restore_from(&self, from: actorflow_runtime::checkpoint::types::RestoreFrom) -> &Self {
        self.checkpointing(|c| c.restore = Some(from))
    }

    /// How failures restart the job (needs checkpointing).
    pub fn set_restart_strategy(
        &self,
        strategy: actorflow_runtime::checkpoint::restart::RestartStrategy,
    ) -> &Self {
        self.checkpointing(|c| c.restart = strategy)
    }

    /// Tells `listener` about checkpoints and restarts.
    pub fn set_job_listener(
        &self,
        listener: actorflow_runtime::checkpoint::types::JobListener,
    ) -> &Self {
        self.configure(|c| {
            c.listener = Some(actorflow_runtime::runtime::config::ListenerRef(listener))
        })
    }

    /// Injects these faults into the next job (tests, chaos runs, demos).
    pub fn set_fault_plan(&self, plan: actorflow_runtime::checkpoint::fault::FaultPlan) -> &Self {
        self.lock().faults = Some(plan);
        self
    }

    /// The current settings.
    pub fn config(&self) -> JobConfig {
        self.lock().config.clone()
    }

    /// Adds a source node; the stream of its output.
    #[track_caller]
    pub(crate) fn add_source_node<T: Data>(
        &self,
        name: &str,
        factory: Arc<dyn SourceFactory>,
        parallelism: Option<u32>,
    ) -> DataStream<T> {
        let location = Location::caller();
        let mut st = self.lock();
        let node = st
            .graph
            .add_node(name, NodeKind::Source(factory), Some(location));
        if let Some(n) = st.graph.node_mut(node) {
            n.parallelism = parallelism;
        }
        let generation = st.generation;
        drop(st);
        self.stream_of(node, generation)
    }

    pub(crate) fn stream_of<T: Data>(&self, node: NodeId, generation: u64) -> DataStream<T> {
        DataStream::new(
            self.clone(),
            vec![Port {
                node,
                partitioning: None,
                writer: Arc::new(TypedWriterFactory::<T, _>::basic()),
                tag: None,
            }],
            Some(node),
            generation,
        )
    }

    /// A source built from a [`ParallelSource`] (a custom source).
    #[track_caller]
    pub fn add_source<P: ParallelSource>(
        &self,
        name: &str,
        source: P,
    ) -> DataStream<<P::Source as Source>::Output> {
        // A non-parallel source runs at parallelism 1 whatever the default, as in Flink.
        let parallelism = source.max_parallelism().filter(|&m| m == 1);
        self.add_source_node(name, Arc::new(SourceAdapter(source)), parallelism)
    }

    /// A non-parallel source emitting the elements of `items` in order (Flink's
    /// `fromCollection`). It runs with parallelism 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let out = actorflow::testing::example(|env| {
    ///     env.from_collection(vec!["a".to_string(), "bc".to_string()]).map(|s| s.len())
    /// });
    /// assert_eq!(out, vec![1, 2]);
    /// ```
    #[track_caller]
    pub fn from_collection<T: Data + Sync>(&self, items: Vec<T>) -> DataStream<T> {
        self.add_source_node(
            "Collection Source",
            Arc::new(SourceAdapter(CollectionSource::new(items))),
            Some(1),
        )
    }

    /// A non-parallel source emitting what `iter` yields. The iterable is cloned for each run;
    /// checkpoints record how many items were emitted, and a restored job skips that many
    /// from a fresh clone — exactly once if the iterable yields the same items every time.
    #[track_caller]
    pub fn from_iter<I>(&self, iter: I) -> DataStream<I::Item>
    where
        I: IntoIterator + Clone + Send + Sync + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Data,
    {
        self.add_source_node(
            "Iterator Source",
            Arc::new(SourceAdapter(IterSource::new(iter))),
            Some(1),
        )
    }

    /// A parallel source emitting the numbers `from..=to` (Flink's `fromSequence`); each
    /// subtask emits a contiguous part in ascending order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut out = actorflow::testing::example_with(3, |env| env.from_sequence(1, 10));
    /// out.sort();
    /// assert_eq!(out, (1..=10).collect::<Vec<u64>>());
    /// ```
    #[track_caller]
    pub fn from_sequence(&self, from: u64, to: u64) -> DataStream<u64> {
        self.add_source_node(
            "Sequence Source",
            Arc::new(SourceAdapter(SequenceSource::new(from, to))),
            None,
        )
    }

    /// A parallel source calling a generator function for each index (Flink's
    /// `DataGeneratorSource`), optionally rate limited. See [`GeneratorSource`].
    #[track_caller]
    pub fn from_generator<T, F>(&self, generator: GeneratorSource<T, F>) -> DataStream<T>
    where
        T: Data,
        F: Fn(u64) -> T + Clone + Send + Sync + 'static,
    {
        self.add_source_node("Generator Source", Arc::new(SourceAdapter(generator)), None)
    }

    /// The lines of a text file, or of every file of a directory (Flink's `readTextFile`).
    /// Files are spread over the source subtasks; lines end at `\n` (a trailing `\r` is
    /// removed). Invalid UTF-8 fails the job with the file and line, see
    /// [`read_text_file_with`](Self::read_text_file_with) for the other policies.
    #[track_caller]
    pub fn read_text_file(&self, path: impl Into<PathBuf>) -> DataStream<String> {
        self.read_text_file_with(path, TextFileOptions::default())
    }

    /// [`read_text_file`](Self::read_text_file) with options.
    #[track_caller]
    pub fn read_text_file_with(
        &self,
        path: impl Into<PathBuf>,
        options: TextFileOptions,
    ) -> DataStream<String> {
        self.add_source_node(
            "Text File Source",
            Arc::new(SourceAdapter(TextFileSource::new(path.into(), options))),
            None,
        )
    }

    /// The lines received from a TCP server (Flink's `socketTextStream`): connects to
    /// `host:port`, emits every `\n`-terminated line (a trailing `\r` is removed), and ends
    /// when the server closes the connection. Non-parallel. It cannot replay: after a failure
    /// the lines in flight are lost (at-most-once).
    ///
    /// Try it with `nc -lk 9999` and `cargo run --example socket_wordcount`.
    #[track_caller]
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DataStream<String> {
        self.add_source_node(
            "Socket Stream",
            Arc::new(SourceAdapter(SocketSource::new(host, port))),
            Some(1),
        )
    }

    /// Starts the job and returns a handle to it, without waiting for it to end. The pipeline
    /// is handed over: the environment is empty afterwards, ready for another job (as in
    /// Flink).
    ///
    /// # Errors
    ///
    /// [`JobError::Build`] naming what is wrong and where, if the pipeline is invalid or a
    /// source or sink cannot be set up.
    pub async fn execute_async(&self, job_name: &str) -> Result<JobHandle, JobError> {
        let (graph, config, faults) = {
            let mut st = self.lock();
            st.generation += 1;
            let graph = std::mem::take(&mut st.graph);
            if let Some(err) = st.errors.drain(..).next() {
                return Err(JobError::Build(err));
            }
            (graph, st.config.clone(), st.faults.take())
        };
        let handle =
            actorflow_runtime::runtime::job::submit_with_faults(job_name, &graph, &config, faults)
                .await?;
        #[cfg(feature = "web")]
        if let Some(web) = &self.lock().web {
            web.register(handle.control(), handle.plan().to_string());
        }
        Ok(handle)
    }

    /// Starts the REST API and dashboard (cargo feature `web`) on `config.addr`, at once, and
    /// shows every job this environment runs from now on. Returns the server (its address and
    /// bearer token); calling it again returns the running server.
    ///
    /// # Examples
    ///
    /// ```
    /// use actorflow::prelude::*;
    /// use actorflow::observer::JobStatus;
    /// use actorflow::web::WebConfig;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let env = StreamExecutionEnvironment::new();
    /// // Port 0: any free port; `local_addr` says which.
    /// let web = env.enable_web(WebConfig::new("127.0.0.1:0".parse()?).token("secret"))?;
    /// assert_eq!(web.token(), "secret");
    /// env.from_sequence(1, 100).map(|x: u64| x * 2).print();
    /// let runtime = tokio::runtime::Runtime::new()?;
    /// let status = runtime.block_on(async {
    ///     let handle = env.execute_async("doubled").await?;
    ///     let observer = handle.observer().clone();
    ///     handle.join().await?;
    ///     Ok::<_, JobError>(observer.status())
    /// })?;
    /// // What `GET /jobs/{id}` reports as "state".
    /// assert_eq!(status, JobStatus::Finished);
    /// web.stop();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`WebError`](crate::web::WebError) if the address cannot be bound or the token is
    /// unusable.
    #[cfg(feature = "web")]
    pub fn enable_web(
        &self,
        config: impl Into<crate::web::WebConfig>,
    ) -> Result<crate::web::WebServer, crate::web::WebError> {
        if let Some(web) = &self.lock().web {
            return Ok(web.clone());
        }
        let server = crate::web::WebServer::start(config.into())?;
        self.lock().web = Some(server.clone());
        Ok(server)
    }

    /// Shows this environment's jobs on an already running web server (several environments
    /// can share one).
    #[cfg(feature = "web")]
    pub fn use_web(&self, server: &crate::web::WebServer) -> &Self {
        self.lock().web = Some(server.clone());
        self
    }

    /// Runs the job to its end (Flink's `execute`).
    ///
    /// # Errors
    ///
    /// [`JobError::Build`] if the pipeline is invalid; [`JobError::Failed`] naming the
    /// operator, subtask and cause if a subtask failed; [`JobError::Cancelled`].
    pub async fn execute(&self, job_name: &str) -> Result<JobResult, JobError> {
        self.execute_async(job_name).await?.join().await
    }

    /// Runs the job to its end on a new multi-threaded tokio runtime, for `main` functions and
    /// tests without their own runtime. Inside a tokio runtime (an `async fn main`, a
    /// `#[tokio::test]`) it cannot block: use [`execute`](Self::execute)`.await` there.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute), plus [`JobError::Internal`] if the runtime cannot start
    /// or if called from inside a tokio runtime (which would panic in tokio).
    pub fn execute_blocking(&self, job_name: &str) -> Result<JobResult, JobError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(JobError::Internal(format!(
                "execute_blocking(\"{job_name}\") was called from inside a tokio runtime, where \
                 it cannot block; use `env.execute(\"{job_name}\").await` instead"
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("actorflow-worker")
            .build()
            .map_err(|e| JobError::Internal(format!("cannot start a tokio runtime: {e}")))?;
        runtime.block_on(self.execute(job_name))
    }
}
