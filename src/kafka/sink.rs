//! [`KafkaSink`]: at-least-once writes, every record acknowledged before a checkpoint.

use super::source::ValueString;
use super::{KafkaConfigError, forward_log};
use actorflow_runtime::checkpoint::types::OperatorState;
use actorflow_runtime::{Batch, CheckpointId, Data, Sink, TaskInfo, Timestamp, UserError};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The Kafka record a [`KafkaSerializer`] fills in for one input record (reused from record
/// to record, so serializing allocates nothing once its buffers have grown).
#[derive(Debug, Default)]
pub struct RecordBuilder {
    topic: String,
    has_topic: bool,
    key: Vec<u8>,
    has_key: bool,
    value: Vec<u8>,
    has_value: bool,
    partition: Option<i32>,
    timestamp: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

impl RecordBuilder {
    fn clear(&mut self) {
        self.topic.clear();
        self.has_topic = false;
        self.key.clear();
        self.has_key = false;
        self.value.clear();
        self.has_value = false;
        self.partition = None;
        self.timestamp = None;
        self.headers.clear();
    }

    /// The record's key (records with equal keys go to one partition under the default
    /// partitioner).
    pub fn key(&mut self, key: &[u8]) -> &mut Self {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.has_key = true;
        self
    }

    /// The record's value.
    pub fn value(&mut self, value: &[u8]) -> &mut Self {
        self.value.clear();
        self.value.extend_from_slice(value);
        self.has_value = true;
        self
    }

    /// The value's buffer, emptied, to write into (`write!` through `std::io::Write`).
    pub fn value_buf(&mut self) -> &mut Vec<u8> {
        self.value.clear();
        self.has_value = true;
        &mut self.value
    }

    /// Sends this record to `topic` instead of the sink's topic.
    pub fn topic(&mut self, topic: &str) -> &mut Self {
        self.topic.clear();
        self.topic.push_str(topic);
        self.has_topic = true;
        self
    }

    /// Sends this record to this partition, whatever the partitioner says.
    pub fn partition(&mut self, partition: i32) -> &mut Self {
        self.partition = Some(partition);
        self
    }

    /// The record's timestamp (ms since the epoch; default: the record's event time, if it
    /// has one, else the time of sending).
    pub fn timestamp(&mut self, ms: i64) -> &mut Self {
        self.timestamp = Some(ms);
        self
    }

    /// Adds a header.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }
}

/// Turns the sink's records into Kafka records (Flink's `KafkaRecordSerializationSchema`).
///
/// Closures `Fn(&T, &mut RecordBuilder) -> Result<(), String>` are serializers, and
/// [`ValueString`] writes any `AsRef<str>` as the value.
pub trait KafkaSerializer<T>: Send + Sync + 'static {
    /// Fills in `out` (already emptied) for `record`.
    ///
    /// # Errors
    ///
    /// A message saying why `record` cannot be written; it fails the subtask.
    fn serialize(&self, record: &T, out: &mut RecordBuilder) -> Result<(), String>;
}

impl<T, F> KafkaSerializer<T> for F
where
    F: Fn(&T, &mut RecordBuilder) -> Result<(), String> + Send + Sync + 'static,
{
    fn serialize(&self, record: &T, out: &mut RecordBuilder) -> Result<(), String> {
        self(record, out)
    }
}

impl<T: AsRef<str>> KafkaSerializer<T> for ValueString {
    fn serialize(&self, record: &T, out: &mut RecordBuilder) -> Result<(), String> {
        out.value(record.as_ref().as_bytes());
        Ok(())
    }
}

/// A user partitioner: `(key, value, number of partitions) -> partition`.
pub type PartitionFn = Arc<dyn Fn(Option<&[u8]>, &[u8], i32) -> i32 + Send + Sync>;

/// Which partition a record goes to (unless its serializer set one).
#[derive(Clone, Default)]
pub enum SinkPartitioner {
    /// Kafka's default: by the murmur2 hash of the key, as the Java client (librdkafka's
    /// `murmur2_random`); records without a key spread over the partitions.
    #[default]
    KeyHash,
    /// Each sink subtask writes to one partition: subtask `i` to partition `i % partitions`
    /// (Flink's `FlinkFixedPartitioner`).
    Fixed,
    /// Your function.
    Custom(PartitionFn),
}

impl std::fmt::Debug for SinkPartitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkPartitioner::KeyHash => "KeyHash",
            SinkPartitioner::Fixed => "Fixed",
            SinkPartitioner::Custom(_) => "Custom",
        })
    }
}

struct SinkConfig<T> {
    bootstrap: String,
    topic: Option<String>,
    serializer: Arc<dyn KafkaSerializer<T>>,
    partitioner: SinkPartitioner,
    properties: Vec<(String, String)>,
    request_timeout: Duration,
}

/// Builds a [`KafkaSink`]; see [`KafkaSink::builder`].
pub struct KafkaSinkBuilder<T> {
    bootstrap: Option<String>,
    topic: Option<String>,
    serializer: Option<Arc<dyn KafkaSerializer<T>>>,
    partitioner: SinkPartitioner,
    properties: Vec<(String, String)>,
    request_timeout: Duration,
}

impl<T> std::fmt::Debug for KafkaSinkBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkBuilder")
            .field("bootstrap", &self.bootstrap)
            .field("topic", &self.topic)
            .field("partitioner", &self.partitioner)
            .finish()
    }
}

impl<T: Data> KafkaSinkBuilder<T> {
    /// The brokers (`host:port[,host:port…]`). Required.
    pub fn bootstrap_servers(mut self, servers: &str) -> Self {
        self.bootstrap = Some(servers.to_string());
        self
    }

    /// The topic of every record whose serializer names none.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.to_string());
        self
    }

    /// How records become Kafka records. Required.
    pub fn serializer(mut self, s: impl KafkaSerializer<T>) -> Self {
        self.serializer = Some(Arc::new(s));
        self
    }

    /// The partitioner (default [`SinkPartitioner::KeyHash`]).
    pub fn partitioner(mut self, p: SinkPartitioner) -> Self {
        self.partitioner = p;
        self
    }

    /// A librdkafka producer property. The sink sets `enable.idempotence=true` (no
    /// duplicates or reordering from librdkafka's own retries), `delivery.timeout.ms=30000`
    /// (a record not acknowledged by then fails the job, which restarts from the last
    /// checkpoint) and `partitioner=murmur2_random` unless given here.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }

    /// The sink.
    ///
    /// # Errors
    ///
    /// [`KafkaConfigError::Config`] without brokers or a serializer.
    pub fn build(self) -> Result<KafkaSink<T>, KafkaConfigError> {
        let err = |m: &str| Err(KafkaConfigError::Config(format!("sink: {m}")));
        let Some(bootstrap) = self.bootstrap.filter(|b| !b.is_empty()) else {
            return err("no bootstrap servers");
        };
        let Some(serializer) = self.serializer else {
            return err("no serializer");
        };
        if self.topic.as_deref() == Some("") {
            return err("an empty topic name");
        }
        Ok(KafkaSink {
            config: Arc::new(SinkConfig {
                bootstrap,
                topic: self.topic,
                serializer,
                partitioner: self.partitioner,
                properties: self.properties,
                request_timeout: self.request_timeout,
            }),
            state: None,
        })
    }
}

/// What the delivery callbacks (on librdkafka's polling thread) share with the sink.
#[derive(Default)]
struct Deliveries {
    in_flight: AtomicU64,
    error: Mutex<Option<String>>,
    done: tokio::sync::Notify,
}

struct SinkContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            use rdkafka::message::Message;
            let mut slot = self
                .deliveries
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(format!(
                    "a record to {}/{} was not delivered: {e}",
                    m.topic(),
                    m.partition()
                ));
            }
        }
        self.deliveries.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.deliveries.done.notify_waiters();
    }
}

struct Open {
    producer: ThreadedProducer<SinkContext>,
    deliveries: Arc<Deliveries>,
    builder: RecordBuilder,
    subtask: usize,
    partitions: HashMap<String, i32>,
}

/// An at-least-once Kafka sink (Flink's `KafkaSink` with `DeliveryGuarantee.AT_LEAST_ONCE`):
/// records are sent as they come, and at each checkpoint barrier the subtask waits until
/// the broker acknowledged every one of them before it acknowledges the checkpoint. After a
/// failure the job replays from the last checkpoint, so records sent after it are sent
/// again: **duplicates are possible, losses are not**. There is no transactional
/// (exactly-once) Kafka sink yet: the broker the project tests against does not support
/// Kafka transactions (`docs/connectors.md`).
///
/// Broker errors librdkafka can retry are retried (with the idempotent producer, without
/// duplicates or reordering); a record still not delivered after `delivery.timeout.ms`
/// fails the job, which restarts from the last checkpoint.
///
/// # Examples
///
/// ```no_run
/// use actorflow::kafka::{KafkaSink, ValueString};
/// use actorflow::prelude::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = KafkaSink::<String>::builder()
///     .bootstrap_servers("127.0.0.1:9092")
///     .topic("results")
///     .serializer(ValueString)
///     .build()?;
/// let env = StreamExecutionEnvironment::new();
/// env.from_collection(vec!["a".to_string(), "b".to_string()])
///     .add_sink("kafka", move |_: &TaskInfo| Ok(sink.clone()));
/// env.execute_blocking("to kafka")?;
/// # Ok(())
/// # }
/// ```
pub struct KafkaSink<T> {
    config: Arc<SinkConfig<T>>,
    state: Option<Open>,
}

impl<T> Clone for KafkaSink<T> {
    /// A new, unopened sink with the same configuration.
    fn clone(&self) -> Self {
        KafkaSink {
            config: self.config.clone(),
            state: None,
        }
    }
}

impl<T> std::fmt::Debug for KafkaSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("bootstrap", &self.config.bootstrap)
            .field("topic", &self.config.topic)
            .finish()
    }
}

impl<T> Drop for KafkaSink<T> {
    /// Closing the producer may block (see `close_in_background`).
    fn drop(&mut self) {
        if let Some(open) = self.state.take() {
            super::close_in_background("producer", open.producer);
        }
    }
}

impl<T: Data> KafkaSink<T> {
    /// A builder: key-hash partitioning, at least once.
    pub fn builder() -> KafkaSinkBuilder<T> {
        KafkaSinkBuilder {
            bootstrap: None,
            topic: None,
            serializer: None,
            partitioner: SinkPartitioner::KeyHash,
            properties: Vec::new(),
            request_timeout: Duration::from_secs(30),
        }
    }

    fn open_state(&mut self) -> Result<&mut Open, UserError> {
        self.state
            .as_mut()
            .ok_or_else(|| UserError::from("Kafka sink used before open()"))
    }

    /// The first delivery error, if any.
    fn failed(open: &Open) -> Result<(), UserError> {
        match open
            .deliveries
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(e) => Err(UserError::from(format!("Kafka sink: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits until the broker acknowledged every record sent (or one failed).
    async fn flush(&mut self) -> Result<(), UserError> {
        let open = self.open_state()?;
        let deliveries = open.deliveries.clone();
        loop {
            let done = deliveries.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            Self::failed(open)?;
            if deliveries.in_flight.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            // The timeout only guards against a missed wake-up; deliveries wake us.
            let _ = tokio::time::timeout(Duration::from_millis(100), done).await;
        }
    }

    /// The partition count of `topic` (asked of the broker once per topic).
    async fn partition_count(&mut self, topic: &str) -> Result<i32, UserError> {
        let open = self.open_state()?;
        if let Some(n) = open.partitions.get(topic) {
            return Ok(*n);
        }
        let producer = open.producer.clone();
        let (t, timeout) = (topic.to_string(), self.config.request_timeout);
        let n = tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&t), timeout)
                .map_err(|e| format!("cannot read the metadata of {t}: {e}"))?;
            md.topics()
                .iter()
                .find(|x| x.name() == t)
                .map(|x| x.partitions().len() as i32)
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("the topic {t} has no partitions"))
        })
        .await
        .map_err(|e| UserError::from(format!("Kafka sink: {e}")))?
        .map_err(|e| UserError::from(format!("Kafka sink: {e}")))?;
        self.open_state()?.partitions.insert(topic.to_string(), n);
        Ok(n)
    }

    async fn send_one(&mut self, ts: Option<Timestamp>) -> Result<(), UserError> {
        let config = self.config.clone();
        let partition = {
            let open = self.open_state()?;
            if !open.builder.has_topic && config.topic.is_none() {
                return Err(UserError::from(
                    "Kafka sink: the record names no topic and the sink has no default topic",
                ));
            }
            match (open.builder.partition, &config.partitioner) {
                (Some(p), _) => Some(p),
                (None, SinkPartitioner::KeyHash) => None,
                (None, _) => {
                    let topic = if open.builder.has_topic {
                        open.builder.topic.clone()
                    } else {
                        config.topic.clone().unwrap_or_default()
                    };
                    let n = self.partition_count(&topic).await?;
                    let open = self.open_state()?;
                    Some(match &config.partitioner {
                        SinkPartitioner::Custom(f) => {
                            let key = open.builder.has_key.then_some(&open.builder.key[..]);
                            f(key, &open.builder.value, n).rem_euclid(n)
                        }
                        _ => (open.subtask % n as usize) as i32,
                    })
                }
            }
        };
        let open = self.open_state()?;
        let b = &open.builder;
        let topic = if b.has_topic {
            b.topic.as_str()
        } else {
            config.topic.as_deref().ok_or_else(|| {
                UserError::from(
                    "Kafka sink: the record names no topic and the sink has no default topic",
                )
            })?
        };
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if b.has_value {
            record = record.payload(&b.value[..]);
        }
        if b.has_key {
            record = record.key(&b.key[..]);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(t) = b.timestamp.or(ts.map(|t| t.0).filter(|t| *t >= 0)) {
            record = record.timestamp(t);
        }
        if !b.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(b.headers.len());
            for (k, v) in &b.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            record = record.headers(h);
        }
        open.deliveries.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            match open.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full: wait for deliveries (backpressure).
                    record = back;
                    let done = open.deliveries.done.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(10), done).await;
                }
                Err((e, _)) => {
                    open.deliveries.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(UserError::from(format!(
                        "Kafka sink: cannot send to {topic}: {e}"
                    )));
                }
            }
        }
    }
}

impl<T: Data> Sink for KafkaSink<T> {
    type Input = T;

    async fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        let c = &self.config;
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &c.bootstrap)
            .set("enable.idempotence", "true")
            .set("delivery.timeout.ms", "30000")
            .set("partitioner", "murmur2_random")
            .set(
                "client.id",
                format!("actorflow-{}-{}", info.operator_name, info.subtask_index),
            );
        for (k, v) in &c.properties {
            cfg.set(k, v);
        }
        let deliveries = Arc::new(Deliveries::default());
        let producer: ThreadedProducer<SinkContext> = cfg
            .create_with_context(SinkContext {
                deliveries: deliveries.clone(),
            })
            .map_err(|e| UserError::from(format!("Kafka sink: cannot create the producer: {e}")))?;
        self.state = Some(Open {
            producer,
            deliveries,
            builder: RecordBuilder::default(),
            subtask: info.subtask_index,
            partitions: HashMap::new(),
        });
        Ok(())
    }

    async fn write_batch(&mut self, batch: Batch<T>) -> Result<(), UserError> {
        Self::failed(self.open_state()?)?;
        let serializer = self.config.serializer.clone();
        for (v, ts) in batch.into_iter_timestamped() {
            let open = self.open_state()?;
            open.builder.clear();
            serializer
                .serialize(&v, &mut open.builder)
                .map_err(|e| UserError::from(format!("Kafka sink: cannot serialize: {e}")))?;
            self.send_one(ts).await?;
        }
        Ok(())
    }

    async fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut OperatorState,
    ) -> Result<(), UserError> {
        // At least once: every record before the barrier is acknowledged before the
        // subtask acknowledges the checkpoint.
        self.flush().await
    }

    async fn finish(&mut self) -> Result<(), UserError> {
        self.flush().await
    }
}
