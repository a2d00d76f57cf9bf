//! [`KafkaSource`]: partitions as splits, exactly-once offsets, per-partition watermarks.

use super::{KafkaConfigError, forward_log, is_transient};
use crate::env::ParallelSource;
use actorflow_runtime::checkpoint::types::{OperatorState, RestoredState};
use actorflow_runtime::operators::operator::OperatorCounters;
use actorflow_runtime::time::splits::{SplitSlot, SplitWatermarks};
use actorflow_runtime::time::watermark::WatermarkStrategy;
use actorflow_runtime::{
    CheckpointId, Collector, Data, OutputTag, RuntimeMode, Source, SourceStatus, TaskInfo,
    Timestamp, UserError, Watermark,
};
use futures_util::{FutureExt, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where reading starts (or, for [`KafkaSourceBuilder::bounded`], stops) in each partition
/// (Flink's `OffsetsInitializer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsInitializer {
    /// The first offset still on the broker.
    Earliest,
    /// The end of the partition when the source resolves it (records written later are read
    /// when starting; are not read when stopping).
    Latest,
    /// The offsets the consumer group committed; `reset` where it committed none.
    Committed {
        /// What to do where the group has no committed offset.
        reset: OffsetReset,
    },
    /// The first offset whose record timestamp is at or after this time (ms since the epoch);
    /// the end of the partition where there is none.
    Timestamp(i64),
    /// These `(topic, partition, offset)`s; `reset` for partitions not listed.
    Explicit {
        /// The offsets.
        offsets: Vec<(String, i32, i64)>,
        /// What to do for a partition not listed.
        reset: OffsetReset,
    },
}

/// What [`OffsetsInitializer::Committed`] and [`OffsetsInitializer::Explicit`] do for a
/// partition they have no offset for (Flink's `OffsetResetStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Start at the earliest offset.
    Earliest,
    /// Start at the end.
    Latest,
    /// Fail, naming the partition.
    None,
}

/// One record as read from Kafka, for a [`KafkaDeserializer`].
#[derive(Clone, Copy)]
pub struct KafkaRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (create or log-append time, ms since the epoch).
    pub timestamp: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: Option<&'a [u8]>,
    headers: HeaderSource<'a>,
}

#[derive(Clone, Copy)]
enum HeaderSource<'a> {
    None,
    Borrowed(&'a BorrowedHeaders),
    Slice(&'a [(String, Option<Vec<u8>>)]),
}

impl std::fmt::Debug for KafkaRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key.map(<[u8]>::len))
            .field("value", &self.value.map(<[u8]>::len))
            .finish()
    }
}

impl<'a> KafkaRecord<'a> {
    /// A record without headers (for testing deserializers).
    pub fn new(
        topic: &'a str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
    ) -> Self {
        KafkaRecord {
            topic,
            partition,
            offset,
            timestamp,
            key,
            value,
            headers: HeaderSource::None,
        }
    }

    /// The same record with these headers.
    pub fn with_headers(mut self, headers: &'a [(String, Option<Vec<u8>>)]) -> Self {
        self.headers = HeaderSource::Slice(headers);
        self
    }

    /// The headers, in order (a name may repeat).
    pub fn headers(&self) -> Vec<(&'a str, Option<&'a [u8]>)> {
        match self.headers {
            HeaderSource::None => Vec::new(),
            HeaderSource::Borrowed(h) => h.iter().map(|h| (h.key, h.value)).collect(),
            HeaderSource::Slice(s) => s.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect(),
        }
    }

    /// The value of the last header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        match self.headers {
            HeaderSource::None => None,
            HeaderSource::Borrowed(h) => h
                .iter()
                .filter(|h| h.key == name)
                .last()
                .and_then(|h| h.value),
            HeaderSource::Slice(s) => s
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_deref()),
        }
    }
}

/// Turns Kafka records into the source's records (Flink's
/// `KafkaRecordDeserializationSchema`). `Ok(None)` skips the record; `Err` is a malformed
/// record, handled by the source's [`OnMalformed`] policy.
///
/// Closures `Fn(&KafkaRecord<'_>) -> Result<Option<T>, String>` are deserializers.
pub trait KafkaDeserializer<T>: Send + Sync + 'static {
    /// The record's value, or `Ok(None)` to skip it.
    ///
    /// # Errors
    ///
    /// A message saying why the record is malformed.
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<T>, String>;
}

impl<T, F> KafkaDeserializer<T> for F
where
    F: Fn(&KafkaRecord<'_>) -> Result<Option<T>, String> + Send + Sync + 'static,
{
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<T>, String> {
        self(record)
    }
}

/// The value as UTF-8 text (a record without a value, or with invalid UTF-8, is malformed).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueString;

impl KafkaDeserializer<String> for ValueString {
    fn deserialize(&self, record: &KafkaRecord<'_>) -> Result<Option<String>, String> {
        let v = record.value.ok_or("the record has no value")?;
        std::str::from_utf8(v)
            .map(|s| Some(s.to_string()))
            .map_err(|e| format!("the value is not UTF-8: {e}"))
    }
}

/// A record the deserializer refused, as sent to the side output of
/// [`OnMalformed::SideOutput`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MalformedRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Option<Vec<u8>>,
    /// The deserializer's message.
    pub error: String,
}

/// What the source does with a record its deserializer refuses.
#[derive(Debug, Clone)]
pub enum OnMalformed {
    /// Fail the subtask with the topic, partition, offset and the deserializer's message
    /// (the default). After a restart the same record fails again, so the job fails once
    /// the restart strategy gives up: nothing is skipped silently.
    Fail,
    /// Skip it, count it (the gauge `numMalformedRecordsSkipped`) and log the first ones.
    Skip,
    /// Send it to this side output (`stream.get_side_output(&tag)`).
    SideOutput(OutputTag<MalformedRecord>),
}

#[derive(Clone)]
enum Topics {
    Names(Vec<String>),
    Pattern(regex::Regex),
}

impl Topics {
    fn matches(&self, topic: &str) -> bool {
        match self {
            Topics::Names(n) => n.iter().any(|t| t == topic),
            Topics::Pattern(p) => p.is_match(topic),
        }
    }
}

struct SourceConfig<T> {
    bootstrap: String,
    topics: Topics,
    group_id: Option<String>,
    starting: OffsetsInitializer,
    stopping: Option<OffsetsInitializer>,
    deserializer: Arc<dyn KafkaDeserializer<T>>,
    strategy: WatermarkStrategy<T>,
    discovery: Option<Duration>,
    on_malformed: OnMalformed,
    properties: Vec<(String, String)>,
    batch_records: usize,
    request_timeout: Duration,
    broker_timeout: Duration,
    poll_timeout: Duration,
}

/// Builds a [`KafkaSource`]; see [`KafkaSource::builder`].
pub struct KafkaSourceBuilder<T> {
    bootstrap: Option<String>,
    topics: Option<Topics>,
    pattern_error: Option<String>,
    group_id: Option<String>,
    starting: OffsetsInitializer,
    stopping: Option<OffsetsInitializer>,
    deserializer: Option<Arc<dyn KafkaDeserializer<T>>>,
    strategy: Option<WatermarkStrategy<T>>,
    discovery: Option<Duration>,
    on_malformed: OnMalformed,
    properties: Vec<(String, String)>,
    batch_records: usize,
    request_timeout: Duration,
    broker_timeout: Duration,
    poll_timeout: Duration,
}

impl<T> std::fmt::Debug for KafkaSourceBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSourceBuilder")
            .field("bootstrap", &self.bootstrap)
            .field("group_id", &self.group_id)
            .field("starting", &self.starting)
            .field("stopping", &self.stopping)
            .finish()
    }
}

impl<T: Data> KafkaSourceBuilder<T> {
    /// The brokers to bootstrap from (`host:port[,host:port…]`). Required.
    pub fn bootstrap_servers(mut self, servers: &str) -> Self {
        self.bootstrap = Some(servers.to_string());
        self
    }

    /// Read these topics.
    pub fn topics(mut self, topics: &[&str]) -> Self {
        self.topics = Some(Topics::Names(
            topics.iter().map(|t| t.to_string()).collect(),
        ));
        self
    }

    /// Read every topic whose whole name matches this regular expression (topics created
    /// later are found by partition discovery).
    pub fn topic_pattern(mut self, pattern: &str) -> Self {
        match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(r) => self.topics = Some(Topics::Pattern(r)),
            Err(e) => self.pattern_error = Some(format!("topic pattern {pattern:?}: {e}")),
        }
        self
    }

    /// The consumer group: offsets are committed to it when checkpoints complete (for
    /// monitoring; the checkpoint, not the group, is what a restore uses), and
    /// [`OffsetsInitializer::Committed`] starts from it.
    pub fn group_id(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_string());
        self
    }

    /// Where to start in partitions the checkpoint does not know (default:
    /// [`OffsetsInitializer::Earliest`]). Partitions found later by discovery start at the
    /// earliest offset, as in Flink.
    pub fn starting_offsets(mut self, offsets: OffsetsInitializer) -> Self {
        self.starting = offsets;
        self
    }

    /// Bounded mode: stop at these offsets, resolved once when each partition is first
    /// assigned and kept in the checkpoint (Flink's `setBounded`; `Latest` reads what was in
    /// the topic when the job started). The source then ends, so BATCH mode can run it;
    /// partition discovery is off.
    pub fn bounded(mut self, stopping: OffsetsInitializer) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// How to turn records into `T`. Required.
    pub fn deserializer(mut self, d: impl KafkaDeserializer<T>) -> Self {
        self.deserializer = Some(Arc::new(d));
        self
    }

    /// The watermark strategy, run **per partition** (default: no watermarks; records carry
    /// the Kafka timestamps). Do not add `assign_timestamps_and_watermarks` after the
    /// source: it would replace these watermarks by ones that ignore partitions.
    pub fn watermark_strategy(mut self, strategy: WatermarkStrategy<T>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Look for new partitions (and topics matching the pattern) this often (default 5
    /// minutes, as Flink; `None` turns it off). Off in bounded mode.
    pub fn partition_discovery_interval(mut self, every: Option<Duration>) -> Self {
        self.discovery = every;
        self
    }

    /// What to do with records the deserializer refuses (default [`OnMalformed::Fail`]).
    pub fn on_malformed(mut self, policy: OnMalformed) -> Self {
        self.on_malformed = policy;
        self
    }

    /// A librdkafka consumer property (`fetch.max.bytes`, `security.protocol`, …). The
    /// source sets `enable.auto.commit=false`, `auto.offset.reset=error` and
    /// `queued.max.messages.kbytes=16384` (the prefetch bound) unless given here.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }

    /// At most this many records per call of the source (default 4096).
    pub fn batch_records(mut self, n: usize) -> Self {
        self.batch_records = n.max(1);
        self
    }

    /// Timeout of metadata and offset requests (default 30 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Fail the subtask once the brokers have been unreachable for this long (default
    /// 60 s); until then librdkafka reconnects by itself and reading goes on where it was.
    pub fn broker_timeout(mut self, t: Duration) -> Self {
        self.broker_timeout = t;
        self
    }

    /// The source.
    ///
    /// # Errors
    ///
    /// [`KafkaConfigError::Config`] without brokers, topics or a deserializer, with a bad
    /// topic pattern, or with `Committed` offsets but no group.
    pub fn build(self) -> Result<KafkaSource<T>, KafkaConfigError> {
        let err = |m: &str| Err(KafkaConfigError::Config(format!("source: {m}")));
        if let Some(e) = self.pattern_error {
            return err(&e);
        }
        let Some(bootstrap) = self.bootstrap.filter(|b| !b.is_empty()) else {
            return err("no bootstrap servers");
        };
        let Some(topics) = self.topics else {
            return err("no topics and no topic pattern");
        };
        if let Topics::Names(n) = &topics
            && n.iter().any(String::is_empty)
        {
            return err("an empty topic name");
        }
        let Some(deserializer) = self.deserializer else {
            return err("no deserializer");
        };
        let committed = |o: &OffsetsInitializer| matches!(o, OffsetsInitializer::Committed { .. });
        if self.group_id.is_none()
            && (committed(&self.starting) || self.stopping.as_ref().is_some_and(committed))
        {
            return err("committed offsets need a group id");
        }
        let bounded = self.stopping.is_some();
        Ok(KafkaSource {
            config: Arc::new(SourceConfig {
                bootstrap,
                topics,
                group_id: self.group_id,
                starting: self.starting,
                stopping: self.stopping,
                deserializer,
                strategy: self
                    .strategy
                    .unwrap_or_else(WatermarkStrategy::no_watermarks),
                discovery: if bounded { None } else { self.discovery },
                on_malformed: self.on_malformed,
                properties: self.properties,
                batch_records: self.batch_records,
                request_timeout: self.request_timeout,
                broker_timeout: self.broker_timeout,
                poll_timeout: self.poll_timeout,
            }),
        })
    }
}

/// A Kafka source (Flink's `KafkaSource`): one reader per source subtask, each owning the
/// partitions [`split_owner`] gives it. Use it with `env.add_source("kafka", source)`.
///
/// See the [module docs](super) for the guarantees and `docs/connectors.md` for every option.
///
/// # Examples
///
/// ```no_run
/// use actorflow::kafka::{KafkaSource, OffsetsInitializer, ValueString};
/// use actorflow::prelude::*;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let source = KafkaSource::<String>::builder()
///     .bootstrap_servers("127.0.0.1:9092")
///     .topics(&["events"])
///     .group_id("my-job")
///     .starting_offsets(OffsetsInitializer::Earliest)
///     .deserializer(ValueString)
///     .watermark_strategy(
///         WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(2))
///             .with_idleness(Duration::from_secs(10)),
///     )
///     .build()?;
/// let env = StreamExecutionEnvironment::new();
/// env.add_source("kafka", source).print();
/// # Ok(())
/// # }
/// ```
pub struct KafkaSource<T> {
    config: Arc<SourceConfig<T>>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        KafkaSource {
            config: self.config.clone(),
        }
    }
}

impl<T> std::fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("bootstrap", &self.config.bootstrap)
            .field("group_id", &self.config.group_id)
            .field("bounded", &self.config.stopping.is_some())
            .finish()
    }
}

impl<T: Data> KafkaSource<T> {
    /// A builder with Flink's defaults: start at the earliest offsets, unbounded, discovery
    /// every 5 minutes, no watermarks, fail on malformed records.
    pub fn builder() -> KafkaSourceBuilder<T> {
        KafkaSourceBuilder {
            bootstrap: None,
            topics: None,
            pattern_error: None,
            group_id: None,
            starting: OffsetsInitializer::Earliest,
            stopping: None,
            deserializer: None,
            strategy: None,
            discovery: Some(Duration::from_secs(300)),
            on_malformed: OnMalformed::Fail,
            properties: Vec::new(),
            batch_records: 4096,
            request_timeout: Duration::from_secs(30),
            broker_timeout: Duration::from_secs(60),
            poll_timeout: Duration::from_millis(100),
        }
    }
}

impl<T: Data + Sync> ParallelSource for KafkaSource<T> {
    type Source = KafkaSourceReader<T>;

    fn create(&self, _task: &TaskInfo) -> Result<KafkaSourceReader<T>, String> {
        Ok(KafkaSourceReader::new(self.config.clone()))
    }

    fn is_bounded(&self) -> bool {
        self.config.stopping.is_some()
    }
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping).
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The source subtask that reads `partition` of `topic` at `parallelism` (Flink's
/// `KafkaSourceEnumerator.getSplitOwner`): the topic's partitions go round robin over the
/// subtasks, starting at a subtask chosen by the topic's hash, so several topics spread
/// evenly. Stable: the same partition always goes to the same subtask at one parallelism,
/// and a restore at another parallelism reassigns by the same rule.
///
/// # Examples
///
/// ```
/// use actorflow::kafka::split_owner;
/// // Partitions of one topic go round robin over the subtasks.
/// let owners: Vec<usize> = (0..4).map(|p| split_owner("events", p, 3)).collect();
/// assert_eq!(owners.len(), 4);
/// assert_eq!(owners[3], owners[0]);
/// assert_ne!(owners[1], owners[0]);
/// ```
pub fn split_owner(topic: &str, partition: i32, parallelism: u32) -> usize {
    let n = i64::from(parallelism.max(1));
    let start = i64::from(java_hash(topic).wrapping_mul(31) & 0x7FFF_FFFF) % n;
    ((start + i64::from(partition.max(0))) % n) as usize
}

/// What a checkpoint holds of a source subtask (union list state: every subtask sees all
/// items after a restore and takes the partitions [`split_owner`] gives it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Item {
    /// A partition: the next offset to read (`None`: not resolved yet, the starting rule
    /// decides after a restore) and, in bounded mode, where it stops (`None`: not resolved
    /// yet).
    Split {
        topic: String,
        partition: i32,
        next: Option<i64>,
        stop: Option<i64>,
    },
    /// The last watermark the subtask emitted.
    Watermark(i64),
}

struct Split {
    topic: Arc<str>,
    partition: i32,
    next: Option<i64>,
    stop: Option<i64>,
    slot: SplitSlot,
    finished: bool,
    /// Gauge names, made once.
    offset_gauge: String,
    committed_gauge: String,
    lag_gauge: String,
}

/// `(topic, partition, next offset)`.
type PartitionOffset = (Arc<str>, i32, i64);

/// The high watermarks librdkafka's statistics report, by partition.
type HighOffsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Since when the brokers have been unreachable (set by librdkafka's error callback,
/// cleared when its statistics show a broker up again or a record arrives), and the last
/// error.
type Trouble = Arc<Mutex<Option<(Instant, String)>>>;

/// The consumer's context: logs through tracing, keeps the statistics' high watermarks and
/// whether the brokers are reachable.
struct ReaderContext {
    high: HighOffsets,
    trouble: Trouble,
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        let mut t = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        if is_transient(&error) {
            match t.as_mut() {
                Some((_, last)) => *last = format!("{error}: {reason}"),
                None => {
                    tracing::warn!(
                        target: "librdkafka",
                        "{error}: {reason} (librdkafka reconnects by itself)"
                    );
                    *t = Some((Instant::now(), format!("{error}: {reason}")));
                }
            }
        } else {
            tracing::warn!(target: "librdkafka", "{error}: {reason}");
        }
    }
    fn stats(&self, statistics: Statistics) {
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        let mut high = self.high.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, topic) in statistics.topics {
            for (p, part) in topic.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    high.insert((name.clone(), p), part.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for ReaderContext {}

type KConsumer = StreamConsumer<ReaderContext>;

/// What a resolution on a blocking thread found.
struct Resolved {
    /// `(topic, partition, next, stop)` of partitions newly resolved or discovered.
    splits: Vec<(String, i32, i64, Option<i64>)>,
}

/// The reader of one source subtask; see [`KafkaSource`].
pub struct KafkaSourceReader<T> {
    config: Arc<SourceConfig<T>>,
    index: usize,
    parallelism: u32,
    counters: OperatorCounters,
    clock: Option<actorflow_runtime::time::clock::ProcessingClock>,
    consumer: Option<Arc<KConsumer>>,
    high: HighOffsets,
    splits: Vec<Split>,
    /// The last split a record belonged to (records come in runs per partition).
    last_split: usize,
    watermarks: SplitWatermarks<T>,
    /// Splits were assigned to the consumer.
    assigned: bool,
    /// Resolving offsets (or discovering) on a blocking thread.
    pending: Option<JoinHandle<Result<Resolved, String>>>,
    pending_is_discovery: bool,
    next_discovery: Option<Instant>,
    next_gauges: Instant,
    /// Offsets of checkpoints not yet committed to the group.
    to_commit: Vec<(CheckpointId, Vec<PartitionOffset>)>,
    malformed_skipped: u64,
    /// Whether the brokers are reachable (see [`Trouble`]).
    trouble: Trouble,
    ended: bool,
}

impl<T> std::fmt::Debug for KafkaSourceReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSourceReader")
            .field("index", &self.index)
            .field("splits", &self.splits.len())
            .finish()
    }
}

impl<T> Drop for KafkaSourceReader<T> {
    /// librdkafka's consumer close blocks (with unreachable brokers, for up to the session
    /// timeout): it happens on a thread of its own, never on a runtime worker, so a failed
    /// subtask restarts at once.
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            super::close_in_background("consumer", c);
        }
    }
}

fn kerr(what: &str, e: impl std::fmt::Display) -> UserError {
    UserError::from(format!("Kafka source: {what}: {e}"))
}

/// Blocking: the partitions of the configured topics (sorted).
fn discover(
    consumer: &KConsumer,
    topics: &Topics,
    timeout: Duration,
) -> Result<Vec<(String, i32)>, String> {
    let mut out = Vec::new();
    let mut fetch = |topic: Option<&str>| -> Result<(), String> {
        let md = consumer
            .fetch_metadata(topic, timeout)
            .map_err(|e| format!("cannot read the metadata of {topic:?}: {e}"))?;
        for t in md.topics() {
            if !topics.matches(t.name()) {
                continue;
            }
            if let Some(e) = t.error() {
                let e = rdkafka::types::RDKafkaErrorCode::from(e);
                return Err(format!("topic {}: {e}", t.name()));
            }
            for p in t.partitions() {
                out.push((t.name().to_string(), p.id()));
            }
        }
        Ok(())
    };
    match topics {
        Topics::Names(names) => {
            for n in names {
                fetch(Some(n))?;
            }
        }
        Topics::Pattern(_) => fetch(None)?,
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Blocking: the offsets `init` gives `parts` (all of one kind of request at once).
fn resolve_offsets(
    consumer: &KConsumer,
    init: &OffsetsInitializer,
    parts: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<i64>, String> {
    let bounds = |t: &str, p: i32| {
        consumer
            .fetch_watermarks(t, p, timeout)
            .map_err(|e| format!("cannot read the offsets of {t}/{p}: {e}"))
    };
    let reset = |r: OffsetReset, t: &str, p: i32, why: &str| -> Result<i64, String> {
        match r {
            OffsetReset::Earliest => Ok(bounds(t, p)?.0),
            OffsetReset::Latest => Ok(bounds(t, p)?.1),
            OffsetReset::None => Err(format!(
                "{t}/{p} has no {why} and the reset strategy is None"
            )),
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    if parts.is_empty() {
        return Ok(out);
    }
    match init {
        OffsetsInitializer::Earliest => {
            for (t, p) in parts {
                out.push(bounds(t, *p)?.0);
            }
        }
        OffsetsInitializer::Latest => {
            for (t, p) in parts {
                out.push(bounds(t, *p)?.1);
            }
        }
        OffsetsInitializer::Committed { reset: r } => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in parts {
                tpl.add_partition(t, *p);
            }
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(|e| format!("cannot read the group's committed offsets: {e}"))?;
            for (t, p) in parts {
                match committed.find_partition(t, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => out.push(o),
                    _ => out.push(reset(*r, t, *p, "committed offset")?),
                }
            }
        }
        OffsetsInitializer::Timestamp(ts) => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in parts {
                tpl.add_partition_offset(t, *p, Offset::Offset(*ts))
                    .map_err(|e| format!("{t}/{p}: {e}"))?;
            }
            let found = consumer
                .offsets_for_times(tpl, timeout)
                .map_err(|e| format!("cannot look up offsets by time {ts}: {e}"))?;
            for (t, p) in parts {
                match found.find_partition(t, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => out.push(o),
                    _ => out.push(bounds(t, *p)?.1),
                }
            }
        }
        OffsetsInitializer::Explicit { offsets, reset: r } => {
            for (t, p) in parts {
                match offsets.iter().find(|(tt, pp, _)| tt == t && pp == p) {
                    Some((_, _, o)) => out.push(*o),
                    None => out.push(reset(*r, t, *p, "explicit offset")?),
                }
            }
        }
    }
    Ok(out)
}

impl<T: Data + Sync> KafkaSourceReader<T> {
    fn new(config: Arc<SourceConfig<T>>) -> Self {
        let watermarks = SplitWatermarks::new(config.strategy.clone());
        KafkaSourceReader {
            config,
            index: 0,
            parallelism: 1,
            counters: OperatorCounters::default(),
            clock: None,
            consumer: None,
            high: Arc::default(),
            splits: Vec::new(),
            last_split: 0,
            watermarks,
            assigned: false,
            pending: None,
            pending_is_discovery: false,
            next_discovery: None,
            next_gauges: Instant::now(),
            to_commit: Vec::new(),
            malformed_skipped: 0,
            trouble: Arc::default(),
            ended: false,
        }
    }

    fn bounded(&self) -> bool {
        self.config.stopping.is_some()
    }

    fn consumer(&self) -> Result<Arc<KConsumer>, UserError> {
        self.consumer
            .clone()
            .ok_or_else(|| UserError::from("Kafka source used before open()"))
    }

    fn add_split(&mut self, topic: &str, partition: i32, next: Option<i64>, stop: Option<i64>) {
        let prefix = format!("KafkaSourceReader.topic.{topic}.partition.{partition}");
        let slot = self.watermarks.add_split();
        self.splits.push(Split {
            topic: topic.into(),
            partition,
            next,
            stop,
            slot,
            finished: false,
            offset_gauge: format!("{prefix}.currentOffset"),
            committed_gauge: format!("{prefix}.committedOffset"),
            lag_gauge: format!("{prefix}.lag"),
        });
    }

    fn find(&mut self, topic: &str, partition: i32) -> Option<usize> {
        let hit = |s: &Split| s.partition == partition && &*s.topic == topic;
        if self.splits.get(self.last_split).is_some_and(hit) {
            return Some(self.last_split);
        }
        let i = self.splits.iter().position(hit)?;
        self.last_split = i;
        Some(i)
    }

    /// Starts resolving the offsets of splits that have none yet, on a blocking thread.
    fn start_resolving(&mut self) -> Result<(), UserError> {
        let consumer = self.consumer()?;
        let config = self.config.clone();
        let need_next: Vec<(String, i32)> = self
            .splits
            .iter()
            .filter(|s| s.next.is_none())
            .map(|s| (s.topic.to_string(), s.partition))
            .collect();
        let need_stop: Vec<(String, i32)> = if self.bounded() {
            self.splits
                .iter()
                .filter(|s| s.stop.is_none())
                .map(|s| (s.topic.to_string(), s.partition))
                .collect()
        } else {
            Vec::new()
        };
        self.pending_is_discovery = false;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let t = config.request_timeout;
            let next = resolve_offsets(&consumer, &config.starting, &need_next, t)?;
            let mut splits: Vec<(String, i32, i64, Option<i64>)> = need_next
                .into_iter()
                .zip(next)
                .map(|((t, p), o)| (t, p, o, None))
                .collect();
            if let Some(stopping) = &config.stopping {
                let stops = resolve_offsets(&consumer, stopping, &need_stop, t)?;
                for ((t, p), stop) in need_stop.into_iter().zip(stops) {
                    match splits.iter_mut().find(|s| s.0 == t && s.1 == p) {
                        Some(s) => s.3 = Some(stop),
                        // The next offset is known (restored); only the stop was missing.
                        None => splits.push((t, p, -1, Some(stop))),
                    }
                }
            }
            Ok(Resolved { splits })
        }));
        Ok(())
    }

    /// Starts looking for new partitions on a blocking thread.
    fn start_discovery(&mut self) -> Result<(), UserError> {
        let consumer = self.consumer()?;
        let config = self.config.clone();
        let (index, parallelism) = (self.index, self.parallelism);
        let known: Vec<(String, i32)> = self
            .splits
            .iter()
            .map(|s| (s.topic.to_string(), s.partition))
            .collect();
        self.pending_is_discovery = true;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let t = config.request_timeout;
            let new: Vec<(String, i32)> = discover(&consumer, &config.topics, t)?
                .into_iter()
                .filter(|(topic, p)| split_owner(topic, *p, parallelism) == index)
                .filter(|tp| !known.contains(tp))
                .collect();
            // New partitions start at the earliest offset (Flink's default), so nothing
            // written to them before they were seen is missed.
            let next = resolve_offsets(&consumer, &OffsetsInitializer::Earliest, &new, t)?;
            Ok(Resolved {
                splits: new
                    .into_iter()
                    .zip(next)
                    .map(|((t, p), o)| (t, p, o, None))
                    .collect(),
            })
        }));
        Ok(())
    }

    /// Takes resolved offsets of known splits (nothing is assigned yet).
    fn apply_resolved(
        &mut self,
        resolved: Resolved,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        self.on_resolved(resolved, None, out)
    }

    /// Takes what a finished blocking task found and, unless `assign` is `None`, assigns
    /// the consumer: `Some(true)` the new partitions of a discovery, `Some(false)` all.
    fn on_resolved(
        &mut self,
        resolved: Resolved,
        assign: Option<bool>,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        let consumer = self.consumer()?;
        let mut added = TopicPartitionList::new();
        for (t, p, next, stop) in resolved.splits {
            match self.find(&t, p) {
                Some(i) => {
                    let s = &mut self.splits[i];
                    if next >= 0 {
                        s.next = Some(next);
                    }
                    if stop.is_some() {
                        s.stop = stop;
                    }
                }
                None => {
                    tracing::info!(
                        subtask = self.index,
                        "Kafka source: new partition {t}/{p}, from offset {next}"
                    );
                    self.add_split(&t, p, Some(next), stop);
                    added
                        .add_partition_offset(&t, p, Offset::Offset(next))
                        .map_err(|e| kerr("cannot assign", e))?;
                }
            }
        }
        let Some(discovery) = assign else {
            return Ok(());
        };
        if discovery {
            if added.count() > 0 {
                consumer
                    .incremental_assign(&added)
                    .map_err(|e| kerr("cannot assign new partitions", e))?;
            }
            return Ok(());
        }
        // The first assignment: every split not already at its stop.
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        for (i, s) in self.splits.iter().enumerate() {
            let next = s.next.unwrap_or(0);
            if s.stop.is_some_and(|stop| next >= stop) {
                done.push(i);
                continue;
            }
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(next))
                .map_err(|e| kerr("cannot assign", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| kerr("cannot assign partitions", e))?;
        for i in done {
            self.finish_split(i, out);
        }
        self.assigned = true;
        Ok(())
    }

    fn finish_split(&mut self, i: usize, out: &mut Collector<T>) {
        let s = &mut self.splits[i];
        if s.finished {
            return;
        }
        s.finished = true;
        tracing::debug!(
            subtask = self.index,
            "Kafka source: {}/{} reached its stop offset {:?}",
            s.topic,
            s.partition,
            s.stop
        );
        if let Some(c) = &self.consumer {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&s.topic, s.partition);
            if let Err(e) = c.pause(&tpl) {
                tracing::debug!(
                    "Kafka source: cannot pause {}/{}: {e}",
                    s.topic,
                    s.partition
                );
            }
        }
        let slot = s.slot;
        self.watermarks.finish_split(slot, out);
    }

    fn all_finished(&self) -> bool {
        self.splits.iter().all(|s| s.finished)
    }

    /// Splits whose consumer position passed their stop without a record at the stop (gaps
    /// in the offsets, such as transaction markers) are finished too.
    fn check_positions(&mut self, out: &mut Collector<T>) {
        if !self.bounded() || !self.assigned {
            return;
        }
        let Some(c) = &self.consumer else { return };
        let Ok(positions) = c.position() else { return };
        let mut done = Vec::new();
        for (i, s) in self.splits.iter().enumerate() {
            if s.finished {
                continue;
            }
            if let (Some(stop), Some(Offset::Offset(pos))) = (
                s.stop,
                positions
                    .find_partition(&s.topic, s.partition)
                    .map(|e| e.offset()),
            ) && pos >= stop
                && s.next.unwrap_or(0) < pos
            {
                done.push(i);
            }
        }
        for i in done {
            self.finish_split(i, out);
        }
    }

    fn publish_gauges(&mut self) {
        let now = Instant::now();
        if now < self.next_gauges {
            return;
        }
        self.next_gauges = now + Duration::from_secs(1);
        let high = self.high.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = 0i64;
        for s in &self.splits {
            let next = s.next.unwrap_or(0);
            self.counters.set_gauge(&s.offset_gauge, next - 1);
            if let Some(h) = high.get(&(s.topic.to_string(), s.partition)) {
                let end = s.stop.map_or(*h, |stop| stop.min(*h));
                let lag = (end - next).max(0);
                pending += lag;
                self.counters.set_gauge(&s.lag_gauge, lag);
            }
        }
        drop(high);
        self.counters
            .set_gauge("KafkaSourceReader.pendingRecords", pending);
        if self.malformed_skipped > 0 {
            self.counters.set_gauge(
                "numMalformedRecordsSkipped",
                i64::try_from(self.malformed_skipped).unwrap_or(i64::MAX),
            );
        }
    }

    /// A transient error in the stream: tolerated while the brokers come back.
    fn on_trouble(&mut self, e: &KafkaError) {
        let mut t = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        if t.is_none() {
            tracing::warn!(
                subtask = self.index,
                "Kafka source: {e} (librdkafka retries; failing after {:?})",
                self.config.broker_timeout
            );
            *t = Some((Instant::now(), e.to_string()));
        }
    }

    /// Fails once the brokers have been unreachable for longer than the broker timeout.
    fn check_trouble(&self) -> Result<(), UserError> {
        let t = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((since, last)) = t.as_ref()
            && since.elapsed() > self.config.broker_timeout
        {
            return Err(UserError::from(format!(
                "Kafka source: the brokers at {} have been unreachable for over {:?}: {last}",
                self.config.bootstrap, self.config.broker_timeout
            )));
        }
        Ok(())
    }

    /// One message into records.
    fn on_message(
        &mut self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let Some(i) = self.find(topic, partition) else {
            return Ok(()); // not ours (any more)
        };
        let s = &self.splits[i];
        if s.finished || s.next.is_some_and(|n| offset < n) {
            return Ok(());
        }
        if let Some(stop) = s.stop
            && offset >= stop
        {
            self.finish_split(i, out);
            return Ok(());
        }
        let slot = s.slot;
        let record = KafkaRecord {
            topic,
            partition,
            offset,
            timestamp: m.timestamp().to_millis(),
            key: m.key(),
            value: m.payload(),
            headers: m
                .headers()
                .map_or(HeaderSource::None, HeaderSource::Borrowed),
        };
        match self.config.deserializer.deserialize(&record) {
            Ok(Some(v)) => {
                let ts = self
                    .watermarks
                    .on_record(slot, &v, record.timestamp.map(Timestamp));
                out.set_timestamp(ts);
                out.collect(v);
                self.watermarks.emit_pending(out);
            }
            Ok(None) => {}
            Err(e) => match &self.config.on_malformed {
                OnMalformed::Fail => {
                    return Err(UserError::from(format!(
                        "Kafka source: malformed record in {topic}/{partition} at offset \
                         {offset}: {e}"
                    )));
                }
                OnMalformed::Skip => {
                    self.malformed_skipped += 1;
                    if self.malformed_skipped <= 10 {
                        tracing::warn!(
                            "Kafka source: skipped a malformed record in {topic}/{partition} \
                             at offset {offset}: {e}"
                        );
                    }
                }
                OnMalformed::SideOutput(tag) => {
                    let bad = MalformedRecord {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        key: record.key.map(<[u8]>::to_vec),
                        value: record.value.map(<[u8]>::to_vec),
                        error: e,
                    };
                    out.output_with_timestamp(tag, bad, record.timestamp.map(Timestamp));
                }
            },
        }
        let s = &mut self.splits[i];
        s.next = Some(offset + 1);
        if s.stop.is_some_and(|stop| offset + 1 >= stop) {
            self.finish_split(i, out);
        }
        Ok(())
    }

    fn now(&self) -> Timestamp {
        self.clock.as_ref().map_or(
            Timestamp(0),
            actorflow_runtime::time::clock::ProcessingClock::now,
        )
    }
}

impl<T: Data + Sync> Source for KafkaSourceReader<T> {
    type Output = T;

    async fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.index = info.subtask_index;
        self.parallelism = info.parallelism;
        self.counters = info.counters.clone();
        self.clock = Some(info.clock.clone());
        let c = self.config.clone();
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &c.bootstrap)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("queued.max.messages.kbytes", "16384")
            .set("statistics.interval.ms", "1000")
            .set(
                "client.id",
                format!("actorflow-{}-{}", info.operator_name, info.subtask_index),
            );
        // librdkafka wants a group id for commits and committed-offset lookups only.
        cfg.set(
            "group.id",
            c.group_id.as_deref().unwrap_or("actorflow-no-group"),
        );
        for (k, v) in &c.properties {
            cfg.set(k, v);
        }
        let consumer: KConsumer = cfg
            .create_with_context(ReaderContext {
                high: self.high.clone(),
                trouble: self.trouble.clone(),
            })
            .map_err(|e| kerr("cannot create the consumer", e))?;
        let consumer = Arc::new(consumer);
        self.consumer = Some(consumer.clone());
        let topics = c.topics.clone();
        let timeout = c.request_timeout;
        let parts = tokio::task::spawn_blocking(move || discover(&consumer, &topics, timeout))
            .await
            .map_err(|e| kerr("partition discovery", e))?
            .map_err(UserError::from)?;
        for (t, p) in parts {
            if split_owner(&t, p, self.parallelism) == self.index {
                self.add_split(&t, p, None, None);
            }
        }
        // A fresh start resolves where each partition starts and (bounded) stops now, before
        // the subtask takes part in any checkpoint, so every checkpoint holds both: the stop
        // offsets are those of the job's first start. A restore takes them from the
        // checkpoint instead (what it lacks is resolved in `next_batch`).
        if info.restored_from.is_none() && !self.splits.is_empty() {
            self.start_resolving()?;
            if let Some(h) = self.pending.take() {
                let r = h
                    .await
                    .map_err(|e| kerr("offset resolution", e))?
                    .map_err(|e| UserError::from(format!("Kafka source: {e}")))?;
                let mut ignored = Collector::new();
                self.apply_resolved(r, &mut ignored)?;
            }
        }
        tracing::info!(
            subtask = self.index,
            partitions = ?self.splits.iter().map(|s| format!("{}/{}", s.topic, s.partition)).collect::<Vec<_>>(),
            "Kafka source: assigned"
        );
        self.next_discovery = c.discovery.map(|d| Instant::now() + d);
        // Periodic emission and idleness count from here, not from before the lookups.
        self.watermarks.start(
            info.clock.now(),
            info.auto_watermark_interval,
            info.runtime_mode == RuntimeMode::Batch,
        );
        Ok(())
    }

    fn restore_state(&mut self, restored: RestoredState) -> Result<(), UserError> {
        let items: Vec<(usize, Item)> = restored.state.union_items()?;
        let mut watermarks = Vec::new();
        for (writer, item) in items {
            match item {
                Item::Split {
                    topic,
                    partition,
                    next,
                    stop,
                } => {
                    if split_owner(&topic, partition, self.parallelism) != self.index {
                        continue;
                    }
                    match self.find(&topic, partition) {
                        Some(i) => {
                            let s = &mut self.splits[i];
                            s.next = next;
                            s.stop = stop;
                        }
                        None => tracing::warn!(
                            "Kafka source: {topic}/{partition} is in the checkpoint but not on \
                             the broker any more: skipped"
                        ),
                    }
                }
                Item::Watermark(w) => watermarks.push((writer, w)),
            }
        }
        let own = match restored.same_index {
            Some(i) => watermarks.iter().find(|(w, _)| *w == i).map(|(_, v)| *v),
            None => watermarks.iter().map(|(_, v)| *v).min(),
        };
        if let Some(w) = own {
            self.watermarks.restore_watermark(Watermark(w));
        }
        Ok(())
    }

    async fn next_batch(&mut self, out: &mut Collector<T>) -> Result<SourceStatus, UserError> {
        if self.ended {
            return Ok(SourceStatus::End);
        }
        // A blocking resolution or discovery in flight: its handle lives in `self`, so a
        // dropped call (a barrier came first) does not start it again.
        if let Some(h) = self.pending.as_mut() {
            let resolved = if self.assigned {
                h.now_or_never()
            } else {
                Some(h.await)
            };
            if let Some(r) = resolved {
                self.pending = None;
                let r = r.map_err(|e| kerr("offset resolution", e))?;
                match r {
                    Ok(r) => {
                        let discovery = self.pending_is_discovery;
                        self.on_resolved(r, Some(discovery), out)?;
                    }
                    Err(e) if self.pending_is_discovery => {
                        tracing::warn!("Kafka source: partition discovery failed: {e}");
                    }
                    Err(e) => return Err(UserError::from(format!("Kafka source: {e}"))),
                }
            }
        }
        if !self.assigned {
            let unresolved = self
                .splits
                .iter()
                .any(|s| s.next.is_none() || (self.bounded() && s.stop.is_none()));
            if !unresolved {
                self.on_resolved(Resolved { splits: Vec::new() }, Some(false), out)?;
            } else {
                if self.pending.is_none() {
                    self.start_resolving()?;
                }
                return Ok(SourceStatus::More);
            }
        }
        if self.bounded() && self.all_finished() {
            self.watermarks.emit_pending(out);
            self.next_gauges = Instant::now();
            self.publish_gauges();
            self.ended = true;
            return Ok(SourceStatus::End);
        }
        if self.pending.is_none()
            && let Some(at) = self.next_discovery
            && Instant::now() >= at
        {
            self.next_discovery = self.config.discovery.map(|d| Instant::now() + d);
            self.start_discovery()?;
        }
        self.check_trouble()?;
        let now = self.now();
        self.watermarks.on_periodic(now, out);
        self.publish_gauges();

        let consumer = self.consumer()?;
        let mut stream = consumer.stream();
        let mut wait = self.config.poll_timeout;
        if let Some(at) = self.watermarks.next_periodic() {
            let until = u64::try_from(at.0.saturating_sub(now.0)).unwrap_or(0);
            wait = wait.min(Duration::from_millis(until.max(1)));
        }
        let first = match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(m)) => Some(m),
            Ok(None) | Err(_) => None,
        };
        let Some(first) = first else {
            self.check_positions(out);
            return Ok(SourceStatus::More);
        };
        let mut next = Some(first);
        let mut n = 0usize;
        while let Some(m) = next.take() {
            match m {
                Ok(m) => {
                    if n == 0 {
                        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    }
                    self.on_message(&m, out)?;
                }
                Err(e) if is_transient(&e) => self.on_trouble(&e),
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => return Err(kerr("cannot read", e)),
            }
            n += 1;
            if n >= self.config.batch_records {
                break;
            }
            next = stream.next().now_or_never().flatten();
        }
        Ok(SourceStatus::More)
    }

    fn snapshot_state(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut OperatorState,
    ) -> Result<(), UserError> {
        let mut offsets = Vec::new();
        for s in &self.splits {
            state.push_union(
                self.index,
                &Item::Split {
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    next: s.next,
                    stop: s.stop,
                },
            )?;
            if let Some(n) = s.next {
                offsets.push((s.topic.clone(), s.partition, n));
            }
        }
        state.push_union(self.index, &Item::Watermark(self.watermarks.current().0))?;
        if self.config.group_id.is_some() && !offsets.is_empty() {
            self.to_commit.push((checkpoint, offsets));
        }
        Ok(())
    }

    async fn notify_checkpoint_complete(
        &mut self,
        checkpoint: CheckpointId,
    ) -> Result<(), UserError> {
        let Some(pos) = self.to_commit.iter().rposition(|(c, _)| *c <= checkpoint) else {
            return Ok(());
        };
        let (_, offsets) = self.to_commit.swap_remove(pos);
        self.to_commit.retain(|(c, _)| *c > checkpoint);
        let Some(consumer) = self.consumer.clone() else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| kerr("cannot commit", e))?;
        }
        // Asynchronous: for monitoring only, a failed commit is logged, not fatal (Flink).
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!("Kafka source: cannot commit offsets of {checkpoint}: {e}");
            return Ok(());
        }
        let names: BTreeMap<(&str, i32), &str> = self
            .splits
            .iter()
            .map(|s| ((&*s.topic, s.partition), s.committed_gauge.as_str()))
            .collect();
        for (t, p, o) in &offsets {
            if let Some(name) = names.get(&(&**t, *p)) {
                self.counters.set_gauge(name, *o);
            }
        }
        Ok(())
    }

    fn notifies_external_system(&self) -> bool {
        self.config.group_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values of Java's "...".hashCode().
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("events"), -1_291_329_255);
        assert_eq!(java_hash("héllo"), 103_094_734);
    }

    #[test]
    fn every_partition_has_one_owner_and_owners_are_balanced() {
        for parallelism in 1..=5u32 {
            let mut counts = vec![0; parallelism as usize];
            for p in 0..7 {
                let o = split_owner("orders", p, parallelism);
                assert!(o < parallelism as usize);
                counts[o] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "{parallelism}: {counts:?}");
        }
    }

    #[test]
    fn the_string_deserializer_refuses_what_is_not_text() {
        let ok = KafkaRecord::new("t", 0, 5, Some(1), None, Some(b"a,1,2"));
        assert_eq!(
            ValueString.deserialize(&ok).unwrap().as_deref(),
            Some("a,1,2")
        );
        let bad = KafkaRecord::new("t", 0, 6, Some(1), None, Some(&[0xff, 0xfe]));
        assert!(ValueString.deserialize(&bad).unwrap_err().contains("UTF-8"));
        let none = KafkaRecord::new("t", 0, 7, Some(1), None, None);
        assert!(ValueString.deserialize(&none).is_err());
        let headers = vec![
            ("h".to_string(), Some(b"1".to_vec())),
            ("h".to_string(), Some(b"2".to_vec())),
        ];
        let with = ok.with_headers(&headers);
        assert_eq!(with.header("h"), Some(&b"2"[..]));
        assert_eq!(with.headers().len(), 2);
    }

    #[test]
    fn checkpoint_items_survive_encoding() {
        let mut state = OperatorState::default();
        let item = Item::Split {
            topic: "t".into(),
            partition: 3,
            next: Some(42),
            stop: None,
        };
        state.push_union(1, &item).unwrap();
        state.push_union(1, &Item::Watermark(-5)).unwrap();
        let back: Vec<(usize, Item)> = state.union_items().unwrap();
        assert_eq!(back, vec![(1, item), (1, Item::Watermark(-5))]);
    }

    #[test]
    fn builder_errors_name_what_is_missing() {
        let e = KafkaSource::<String>::builder()
            .topics(&["t"])
            .deserializer(ValueString)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("bootstrap"), "{e}");
        let e = KafkaSource::<String>::builder()
            .bootstrap_servers("x:1")
            .topics(&["t"])
            .starting_offsets(OffsetsInitializer::Committed {
                reset: OffsetReset::Earliest,
            })
            .deserializer(ValueString)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("group"), "{e}");
        let e = KafkaSource::<String>::builder()
            .bootstrap_servers("x:1")
            .topic_pattern("(")
            .deserializer(ValueString)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("pattern"), "{e}");
    }
}
