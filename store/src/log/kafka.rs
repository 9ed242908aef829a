//! The Kafka-backed traffic log (`kafka://host:port[,host:port]/topic`), the production path.
//!
//! URL query parameters are passed to librdkafka as client properties (for example
//! `?security.protocol=ssl`), except Reprise's own `replication_factor` (topic creation,
//! default 1), `timeout_ms` (metadata and admin calls, default 10000) and `read_timeout_ms`
//! (how long a range reader waits out an unreachable or silent broker, default 60000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{
    BatchSender, LogError, LogRecord, NewRecord, Position, READ_BATCH, RangeSpec, RecordStream, TrafficLog, Watermarks,
    batch_channel, check_range, unbatched,
};
use crate::url::StoreUrl;

/// How long a range reader waits out a broker it cannot reach, or that sends nothing,
/// before failing the read: long enough for a broker restart. The range was checked
/// against the watermarks, so the records exist and silence means trouble.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between attempts while the broker is unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub struct KafkaLog {
    url: String,
    topic: String,
    config: ClientConfig,
    replication_factor: i32,
    timeout: Duration,
    read_timeout: Duration,
    /// Metadata, watermark and timestamp queries (blocking librdkafka calls).
    meta: Arc<BaseConsumer>,
    producer: OnceCell<FutureProducer>,
}

impl KafkaLog {
    pub(crate) fn open(url: &str, parsed: &StoreUrl) -> Result<Self, LogError> {
        let invalid = |reason: String| LogError::InvalidUrl { url: url.to_string(), reason };
        if parsed.path.is_empty() || parsed.path.contains('/') {
            return Err(invalid("expected kafka://host:port[,host:port]/topic".into()));
        }
        let mut params: BTreeMap<String, String> = parsed.params.clone();
        let parse_param = |params: &mut BTreeMap<String, String>, name: &str, default: i64| {
            params
                .remove(name)
                .map_or(Ok(default), |v| v.parse::<i64>().map_err(|_| invalid(format!("{name}={v:?} is not a number"))))
        };
        let replication_factor = parse_param(&mut params, "replication_factor", 1)? as i32;
        let timeout = Duration::from_millis(parse_param(&mut params, "timeout_ms", 10_000)?.max(1) as u64);
        let read_timeout = Duration::from_millis(
            parse_param(&mut params, "read_timeout_ms", DEFAULT_READ_TIMEOUT.as_millis() as i64)?.max(1) as u64,
        );
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", parsed.hosts.join(","));
        for (k, v) in &params {
            config.set(k, v);
        }
        let meta: BaseConsumer = reader_config(&config).create()?;
        Ok(KafkaLog {
            url: url.to_string(),
            topic: parsed.path.clone(),
            config,
            replication_factor,
            timeout,
            read_timeout,
            meta: Arc::new(meta),
            producer: OnceCell::new(),
        })
    }

    async fn producer(&self) -> Result<&FutureProducer, LogError> {
        self.producer
            .get_or_try_init(|| async {
                let mut config = self.config.clone();
                for (k, v) in
                    [("acks", "all"), ("linger.ms", "5"), ("compression.type", "lz4"), ("message.timeout.ms", "30000")]
                {
                    if config.get(k).is_none() {
                        config.set(k, v);
                    }
                }
                Ok(config.create::<FutureProducer>()?)
            })
            .await
    }

    /// Runs a blocking librdkafka query on the metadata client.
    async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseConsumer, &str, Duration) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        self.query_within(self.timeout, f).await
    }

    async fn query_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&BaseConsumer, &str, Duration) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let (meta, topic) = (self.meta.clone(), self.topic.clone());
        crate::run_blocking(move || {
            let result = f(&meta, &topic, timeout);
            if result.is_err() {
                // Nothing else polls this client: serve its queued log lines now, as they
                // say why (a TLS handshake that failed, a refused login).
                let _ = meta.poll(Duration::ZERO);
            }
            result
        })
        .await
        .unwrap_or(Err(LogError::ShuttingDown))
    }

    /// The partition's watermarks for a range reader, retried while the broker cannot be
    /// reached, for at most the read timeout.
    async fn reader_watermarks(&self, partition: i32) -> Result<Watermarks, LogError> {
        let deadline = Instant::now() + self.read_timeout;
        let what = || format!("checking partition {partition}'s offsets");
        let mut outage = Outage::new(self.read_timeout, &what);
        loop {
            let url = self.url.clone();
            let limit = deadline.saturating_duration_since(Instant::now()).min(self.timeout);
            let marks = self
                .query_within(limit, move |meta, topic, timeout| {
                    let partitions = partition_count(meta, topic, timeout, &url)?;
                    if partition < 0 || partition >= partitions {
                        return Err(LogError::NoPartition { partition, partitions });
                    }
                    let (low, high) = meta.fetch_watermarks(topic, partition, timeout)?;
                    Ok(Watermarks { partition, low, high })
                })
                .await;
            match marks {
                Err(LogError::Kafka(e)) if is_unreachable(&e) => outage.wait(e, deadline).await?,
                other => return other,
            }
        }
    }

    async fn partition_count(&self) -> Result<i32, LogError> {
        let url = self.url.clone();
        self.query(move |meta, topic, timeout| partition_count(meta, topic, timeout, &url)).await
    }
}

/// Properties of every consumer: no group membership, no commits, and an error
/// instead of a silent jump when an offset is out of range.
fn reader_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    for (k, v) in [
        ("group.id", "reprise-reader"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "error"),
        ("allow.auto.create.topics", "false"),
        // Bounds librdkafka's prefetch per reader: memory must not grow with the recording.
        ("queued.max.messages.kbytes", "8192"),
        // Fetch again once fewer than this are queued (the default, 100,000, is never
        // reached under the size bound above, so every consumed message asked for more:
        // fetches of a few records each, 3-10x slower reads; docs/BENCHMARKS.md).
        ("queued.min.messages", "1000"),
    ] {
        if config.get(k).is_none() {
            config.set(k, v);
        }
    }
    config
}

fn partition_count(meta: &BaseConsumer, topic: &str, timeout: Duration, url: &str) -> Result<i32, LogError> {
    let metadata = meta.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(LogError::NoTopic(url.to_string()));
    };
    match t.error() {
        None if !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
        None => Err(LogError::NoTopic(url.to_string())),
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Err(LogError::NoTopic(url.to_string()))
        }
        Some(code) => Err(LogError::Kafka(KafkaError::MetadataFetch(code.into()))),
    }
}

/// Whether a librdkafka error means the broker cannot be reached (yet): worth waiting out.
fn is_unreachable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            BrokerTransportFailure
                | AllBrokersDown
                | OperationTimedOut
                | RequestTimedOut
                | NetworkException
                | BrokerNotAvailable
                | LeaderNotAvailable
                | NotLeaderForPartition
                | Resolve
        )
    )
}

/// One wait for an unreachable broker: warns once, pauses between attempts, and turns
/// into a timeout (with the last error) at the deadline.
/// `what` is formatted only when needed: an outage is made for every record read.
struct Outage<'a> {
    bound: Duration,
    what: &'a (dyn Fn() -> String + Sync),
    last: Option<KafkaError>,
}

impl<'a> Outage<'a> {
    fn new(bound: Duration, what: &'a (dyn Fn() -> String + Sync)) -> Self {
        Outage { bound, what, last: None }
    }

    async fn wait(&mut self, error: KafkaError, deadline: Instant) -> Result<(), LogError> {
        if self.last.is_none() {
            tracing::warn!(error = %error, bound = ?self.bound, "the broker cannot be reached while {}: retrying", (self.what)());
        }
        self.last = Some(error);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timed_out());
        }
        tokio::time::sleep(RETRY_PAUSE.min(remaining)).await;
        Ok(())
    }

    fn timed_out(&self) -> LogError {
        let what = match &self.last {
            Some(e) => format!("{} (the broker could not be reached: {e})", (self.what)()),
            None => format!("{} (the broker sent nothing)", (self.what)()),
        };
        LogError::Timeout { after: self.bound, what }
    }
}

fn to_log_record(message: &impl Message) -> LogRecord {
    LogRecord {
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(Bytes::copy_from_slice),
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    }
}

#[async_trait]
impl TrafficLog for KafkaLog {
    fn url(&self) -> &str {
        &self.url
    }

    async fn ensure_topic(&self, partitions: i32) -> Result<i32, LogError> {
        match self.partition_count().await {
            Ok(n) => return Ok(n),
            Err(LogError::NoTopic(_)) => {}
            Err(e) => return Err(e),
        }
        let admin: AdminClient<DefaultClientContext> = self.config.create()?;
        let topic = NewTopic::new(&self.topic, partitions.max(1), TopicReplication::Fixed(self.replication_factor));
        let options = AdminOptions::new().operation_timeout(Some(Timeout::After(self.timeout)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(LogError::Kafka(KafkaError::AdminOp(code))),
            }
        }
        // Metadata catches up with a new topic shortly after creation.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.partition_count().await {
                Err(LogError::NoTopic(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn watermarks(&self) -> Result<Vec<Watermarks>, LogError> {
        let url = self.url.clone();
        self.query(move |meta, topic, timeout| {
            (0..partition_count(meta, topic, timeout, &url)?)
                .map(|partition| {
                    let (low, high) = meta.fetch_watermarks(topic, partition, timeout)?;
                    Ok(Watermarks { partition, low, high })
                })
                .collect()
        })
        .await
    }

    async fn offsets_for_time(&self, timestamp_ms: i64) -> Result<Vec<Position>, LogError> {
        let url = self.url.clone();
        self.query(move |meta, topic, timeout| {
            let partitions = partition_count(meta, topic, timeout, &url)?;
            let mut request = TopicPartitionList::new();
            for partition in 0..partitions {
                request.add_partition_offset(topic, partition, Offset::Offset(timestamp_ms))?;
            }
            let found = meta.offsets_for_times(request, timeout)?;
            (0..partitions)
                .map(|partition| {
                    let elem = found.find_partition(topic, partition).ok_or_else(|| LogError::Timeout {
                        after: timeout,
                        what: format!("looking up partition {partition} by timestamp"),
                    })?;
                    elem.error()?;
                    let offset = match elem.offset() {
                        Offset::Offset(o) => o,
                        // No record at or after the timestamp: the end of the partition.
                        _ => meta.fetch_watermarks(topic, partition, timeout)?.1,
                    };
                    Ok(Position { partition, offset })
                })
                .collect()
        })
        .await
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError> {
        let producer = self.producer().await?;
        let sends = records.iter().map(|r| {
            let record =
                FutureRecord::to(&self.topic).key(&r.key[..]).payload(&r.payload[..]).timestamp(r.timestamp_ms);
            producer.send(record, Timeout::After(self.timeout))
        });
        let results = join_all(sends).await;
        let failed: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
        let mut positions = Vec::with_capacity(results.len());
        let mut first = None;
        for result in results {
            match result {
                Ok(delivery) => positions.push(Position { partition: delivery.partition, offset: delivery.offset }),
                Err((e, _)) => {
                    first.get_or_insert(LogError::Kafka(e));
                }
            }
        }
        match first {
            None => Ok(positions),
            Some(first) => Err(LogError::Partial { failed, first: Box::new(first) }),
        }
    }

    async fn read_range(&self, range: RangeSpec, read_ahead: usize) -> Result<RecordStream, LogError> {
        let partition = range.partition;
        check_range(&range, self.reader_watermarks(partition).await?)?;
        let (tx, rx) = batch_channel(read_ahead);
        if range.is_empty() {
            return Ok(unbatched(rx));
        }
        let consumer: Arc<StreamConsumer> = Arc::new(reader_config(&self.config).create()?);
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(range.start))?;
        consumer.assign(&assignment)?;
        let (topic, read_timeout) = (self.topic.clone(), self.read_timeout);
        tokio::spawn(async move {
            let error = match pump_range(&consumer, range, read_timeout, &tx).await {
                Ok(()) => return,
                // Retention deleted the offsets after the range was checked: the same
                // error as when it had before.
                Err(LogError::Kafka(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    let low = tokio::task::spawn_blocking(move || {
                        consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)).map(|(low, _)| low)
                    })
                    .await;
                    let low = low.ok().and_then(Result::ok).unwrap_or(range.end);
                    LogError::Expired { partition, start: range.start, end: range.end, low }
                }
                Err(e) => e,
            };
            let _ = tx.send(Err(error)).await;
        });
        Ok(unbatched(rx))
    }
}

/// Moves the selected records of `range` from the consumer into `tx`, in offset order
/// and in batches (what the consumer already holds goes at once, up to [`READ_BATCH`]),
/// until the range is done or the receiver is dropped. While the broker cannot be reached
/// the consumer reconnects by itself; the read fails once nothing has arrived for
/// `read_timeout`.
async fn pump_range(
    consumer: &StreamConsumer,
    range: RangeSpec,
    read_timeout: Duration,
    tx: &BatchSender,
) -> Result<(), LogError> {
    let what = || format!("reading partition {} at offsets [{}, {})", range.partition, range.start, range.end);
    loop {
        let deadline = Instant::now() + read_timeout;
        let mut outage = Outage::new(read_timeout, &what);
        let message = loop {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => return Err(outage.timed_out()),
                Ok(Err(e)) if is_unreachable(&e) => outage.wait(e, deadline).await?,
                Ok(received) => break received?,
            }
        };
        let mut batch = Vec::new();
        let mut done = take(&message, &range, &mut batch);
        drop(message);
        let mut failure = None;
        while !done && batch.len() < READ_BATCH {
            match futures::FutureExt::now_or_never(consumer.recv()) {
                Some(Ok(message)) => done = take(&message, &range, &mut batch),
                // Waited out above, after what was read goes.
                Some(Err(e)) if is_unreachable(&e) => break,
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                None => break,
            }
        }
        if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
            return Ok(());
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        if done {
            return Ok(());
        }
    }
}

/// Adds `message` to `batch` if `range` selects it; whether the range is done.
fn take(message: &impl Message, range: &RangeSpec, batch: &mut Vec<LogRecord>) -> bool {
    let offset = message.offset();
    if offset >= range.end {
        return true;
    }
    if range.selects(offset) {
        batch.push(to_log_record(message));
    }
    // Offsets can have gaps (transaction markers), so the end is detected by offset.
    offset + 1 >= range.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_is_waited_out_and_other_errors_are_not() {
        let consumption = |code| KafkaError::MessageConsumption(code);
        assert!(is_unreachable(&KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(is_unreachable(&consumption(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!is_unreachable(&consumption(RDKafkaErrorCode::AutoOffsetReset)));
        assert!(!is_unreachable(&consumption(RDKafkaErrorCode::TopicAuthorizationFailed)));
    }
}
