//! Kafka connectors (cargo feature `kafka`, client: the `rdkafka` crate with its bundled
//! librdkafka): a partitioned source with exactly-once offsets and per-partition watermarks
//! ([`KafkaSource`]), and an at-least-once sink ([`KafkaSink`]). How each guarantee is
//! reached, every option, and why there is no transactional sink yet, is in
//! `docs/connectors.md`.
//!
//! * **Source.** Partitions are splits, each owned by one source subtask (Flink's
//!   assignment, [`split_owner`]). Each partition's next offset is in every checkpoint and
//!   reading resumes exactly there after a restore; offsets go to the consumer group only
//!   once a checkpoint completes, for monitoring. The watermark strategy runs per partition
//!   inside the source and the subtask emits the minimum, so a silent partition holds event
//!   time back until [`with_idleness`](crate::watermark::WatermarkStrategy::with_idleness)
//!   releases it. New partitions are discovered at an interval. Nothing unbounded sits
//!   between the broker and the job: librdkafka's prefetch queue is bounded (16 MB per
//!   subtask by default) and fills up when the job is backpressured, which stops fetching.
//! * **Sink.** At least once: before the subtask acknowledges a checkpoint, every record it
//!   was given is acknowledged by the broker, so a completed checkpoint means every earlier
//!   record is in Kafka. After a failure, records since the last checkpoint are written
//!   again: duplicates, never losses.

mod sink;
mod source;

pub use sink::{
    KafkaSerializer, KafkaSink, KafkaSinkBuilder, PartitionFn, RecordBuilder, SinkPartitioner,
};
pub use source::{
    KafkaDeserializer, KafkaRecord, KafkaSource, KafkaSourceBuilder, KafkaSourceReader,
    MalformedRecord, OffsetReset, OffsetsInitializer, OnMalformed, ValueString, split_owner,
};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// Why a Kafka connector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// The configuration is incomplete or inconsistent.
    #[error("Kafka {0}")]
    Config(String),
}

/// Sends librdkafka's log lines and errors to `tracing` (the `rdkafka` crate uses `log`).
pub(crate) fn forward_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac}: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
    }
}

/// Drops a librdkafka client on a thread of its own: closing one can block for seconds
/// (longer with unreachable brokers), which must never stall a runtime worker.
pub(crate) fn close_in_background<C: Send + 'static>(what: &'static str, client: C) {
    let spawned = std::thread::Builder::new()
        .name(format!("kafka-{what}-close"))
        .spawn(move || drop(client));
    if let Err(e) = spawned {
        tracing::warn!("Kafka: cannot start a thread to close the {what}: {e}");
    }
}

/// Is this a transient error librdkafka retries by itself (a broker down or moving)?
pub(crate) fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::NetworkException
                | C::RequestTimedOut
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::Resolve
                | C::BrokerNotAvailable
                | C::ReplicaNotAvailable
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
        )
    )
}
