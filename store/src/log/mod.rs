//! The traffic log: an append-only, partitioned log of captured HTTP messages.
//!
//! Offsets follow Kafka's semantics in both implementations: per partition, offsets
//! start at the low watermark and end before the high watermark; a record's offset
//! never changes; a recording is just a set of `[start, end)` ranges of offsets.

mod file;
mod kafka;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use file::FileLog;
pub use kafka::KafkaLog;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch (the Kafka message timestamp).
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub payload: Bytes,
}

/// A record to append. Records with the same key land in the same partition, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Bytes,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// Where an appended record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// The offsets held by one partition: `[low, high)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// Which records of a partition to read: offsets in `[start, end)` with
/// `offset % stride == phase`. Stride 1 and phase 0 read every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub stride: u32,
    pub phase: u32,
}

/// A share of a replay as it travels to a worker.
impl From<RangeSpec> for reprise_proto::v1::PartitionShare {
    fn from(r: RangeSpec) -> Self {
        reprise_proto::v1::PartitionShare {
            partition: r.partition,
            start_offset: r.start,
            end_offset: r.end,
            stride: r.stride,
            phase: r.phase,
            ..Default::default()
        }
    }
}

impl RangeSpec {
    /// Every record of `[start, end)` in `partition`.
    pub fn whole(partition: i32, start: i64, end: i64) -> Self {
        RangeSpec { partition, start, end, stride: 1, phase: 0 }
    }

    /// Whether this range reads `offset`.
    pub fn selects(&self, offset: i64) -> bool {
        offset >= self.start
            && offset < self.end
            && offset.rem_euclid(i64::from(self.stride.max(1))) == i64::from(self.phase)
    }

    /// How many records this range reads.
    pub fn len(&self) -> u64 {
        let stride = i64::from(self.stride.max(1));
        let count = |upto: i64| -> i64 {
            // Offsets in [0, upto) congruent to phase.
            if upto <= i64::from(self.phase) { 0 } else { (upto - i64::from(self.phase) + stride - 1) / stride }
        };
        (count(self.end.max(0)) - count(self.start.max(0))).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This range cut into up to `k` disjoint non-empty ranges that together read
    /// exactly what it reads: stride `stride * k`, phases `phase, phase + stride, ..`.
    /// Fewer when it reads fewer than `k` records (or the stride would overflow).
    pub fn split(&self, k: u32) -> Vec<RangeSpec> {
        let stride = self.stride.max(1);
        let k = k.clamp(1, u32::try_from(self.len()).unwrap_or(u32::MAX).max(1));
        match stride.checked_mul(k) {
            Some(wide) if k > 1 => {
                (0..k).map(|j| RangeSpec { stride: wide, phase: self.phase + j * stride, ..*self }).collect()
            }
            _ => vec![RangeSpec { stride, ..*self }],
        }
    }

    /// The part of this range from `offset` on.
    pub fn from_offset(&self, offset: i64) -> RangeSpec {
        RangeSpec { start: offset.clamp(self.start, self.end), ..*self }
    }

    fn validate(&self) -> Result<(), LogError> {
        if self.stride == 0 || self.phase >= self.stride || self.start > self.end || self.start < 0 {
            return Err(LogError::InvalidRange(*self));
        }
        Ok(())
    }
}

/// A bounded stream of records; reading stops when the consumer stops polling.
pub type RecordStream = BoxStream<'static, Result<LogRecord, LogError>>;

/// Records a reader hands its consumer at once: one wake-up across threads per batch, not
/// per record (a hand-off per record once cost a dispatcher more than half its time).
const READ_BATCH: usize = 256;

/// A channel for batches of records read ahead by about `read_ahead` records.
fn batch_channel(read_ahead: usize) -> (BatchSender, tokio::sync::mpsc::Receiver<Result<Vec<LogRecord>, LogError>>) {
    tokio::sync::mpsc::channel(read_ahead.div_ceil(READ_BATCH).max(1))
}

type BatchSender = tokio::sync::mpsc::Sender<Result<Vec<LogRecord>, LogError>>;

/// The records of the batches `rx` receives, one by one.
fn unbatched(rx: tokio::sync::mpsc::Receiver<Result<Vec<LogRecord>, LogError>>) -> RecordStream {
    use futures::StreamExt;
    let records = tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(|batch| {
        let items: Vec<Result<LogRecord, LogError>> = match batch {
            Ok(records) => records.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    });
    Box::pin(records)
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid traffic log URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the traffic log {0} has no topic yet (nothing was recorded into it)")]
    NoTopic(String),
    #[error("partition {partition} does not exist (the log has {partitions})")]
    NoPartition { partition: i32, partitions: i32 },
    #[error("invalid range {0:?}: need 0 <= start <= end and phase < stride")]
    InvalidRange(RangeSpec),
    #[error(
        "offsets [{start}, {end}) of partition {partition} are partly gone from the log \
         (retention deleted everything below {low})"
    )]
    Expired { partition: i32, start: i64, end: i64, low: i64 },
    #[error("offsets [{start}, {end}) of partition {partition} are not in the log yet (it ends at {high})")]
    NotYetWritten { partition: i32, start: i64, end: i64, high: i64 },
    #[error("corrupt entry in partition {partition} at offset {offset}: {reason}")]
    Corrupt { partition: i32, offset: i64, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    // Not a `source`: librdkafka's error repeats its cause in its own text, so a chain
    // would print it twice more.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error("timed out after {after:?} while {what}")]
    Timeout { after: Duration, what: String },
    #[error("the process is shutting down")]
    ShuttingDown,
    #[error("{} records of the batch were not stored: {first}", failed.len())]
    Partial {
        /// Indices (in the appended batch) of the records that were not stored.
        failed: Vec<usize>,
        first: Box<LogError>,
    },
}

impl From<rdkafka::error::KafkaError> for LogError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        LogError::Kafka(e)
    }
}

impl LogError {
    /// Which records of an appended batch of `len` failed: the listed ones for a
    /// partial failure, else all of them.
    pub fn failed_records(&self, len: usize) -> Vec<usize> {
        match self {
            LogError::Partial { failed, .. } => failed.clone(),
            _ => (0..len).collect(),
        }
    }
}

/// An append-only, partitioned log of traffic records.
#[async_trait]
pub trait TrafficLog: Send + Sync + 'static {
    /// The URL this log was opened from.
    fn url(&self) -> &str;

    /// Creates the topic with `partitions` partitions if it does not exist yet; returns
    /// the number of partitions it has (an existing topic keeps its count).
    async fn ensure_topic(&self, partitions: i32) -> Result<i32, LogError>;

    /// Low and high watermarks of every partition, by partition number.
    async fn watermarks(&self) -> Result<Vec<Watermarks>, LogError>;

    /// For every partition, the first offset whose timestamp is at or after
    /// `timestamp_ms`, or the high watermark when there is none.
    async fn offsets_for_time(&self, timestamp_ms: i64) -> Result<Vec<Position>, LogError>;

    /// Appends records durably (the call returns once they are stored), in order per key.
    /// When only some records could be stored the error is [`LogError::Partial`].
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError>;

    /// Reads exactly the records `range` selects, in offset order. At most
    /// `read_ahead` records are buffered ahead of the consumer. A range that is partly
    /// deleted ([`LogError::Expired`]) or not yet written is refused up front.
    async fn read_range(&self, range: RangeSpec, read_ahead: usize) -> Result<RecordStream, LogError>;
}

/// Opens a traffic log by URL: `kafka://host:port[,host:port]/topic[?librdkafka.property=value]`
/// or `file://PATH`.
pub async fn open_log(url: &str) -> Result<Arc<dyn TrafficLog>, LogError> {
    let invalid = |reason: String| LogError::InvalidUrl { url: crate::redact_url(url), reason };
    let parsed = crate::url::parse(url, &["kafka", "file"]).map_err(invalid)?;
    match parsed.scheme.as_str() {
        "kafka" => Ok(Arc::new(KafkaLog::open(url, &parsed)?)),
        // `parse` admits only kafka and file.
        _ => Ok(Arc::new(FileLog::open(url, &parsed)?)),
    }
}

/// The URL of another topic beside the log at `url`: same brokers (or parent directory)
/// and parameters, topic (or directory) name suffixed with `-suffix`. An import that
/// makes its own recording writes there, so no other writer interleaves with it.
pub fn sibling_topic(url: &str, suffix: &str) -> Result<String, LogError> {
    let invalid = |reason: String| LogError::InvalidUrl { url: crate::redact_url(url), reason };
    let parsed = crate::url::parse(url, &["kafka", "file"]).map_err(invalid)?;
    if parsed.scheme == "kafka" && (parsed.path.is_empty() || parsed.path.contains('/')) {
        return Err(invalid("expected kafka://host:port[,host:port]/topic".into()));
    }
    if !suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(invalid(format!("{suffix:?} cannot name a topic")));
    }
    let (body, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let mut sibling = format!("{}-{suffix}", body.trim_end_matches('/'));
    if let Some(query) = query {
        sibling.push('?');
        sibling.push_str(query);
    }
    Ok(sibling)
}

/// Chooses the partition of a key the same way in every implementation's caller.
pub(crate) fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (crc32fast::hash(key) % partitions.max(1) as u32) as i32
}

/// Checks a range against a partition's watermarks.
pub(crate) fn check_range(range: &RangeSpec, marks: Watermarks) -> Result<(), LogError> {
    range.validate()?;
    let RangeSpec { partition, start, end, .. } = *range;
    if start < end && start < marks.low {
        return Err(LogError::Expired { partition, start, end, low: marks.low });
    }
    if end > marks.high {
        return Err(LogError::NotYetWritten { partition, start, end, high: marks.high });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_range_reads_exactly_what_the_range_reads() {
        for (range, k, parts) in [
            (RangeSpec { partition: 0, start: 3, end: 103, stride: 2, phase: 1 }, 3, 3),
            (RangeSpec::whole(1, 40, 42), 5, 2),
            (RangeSpec::whole(2, 7, 7), 4, 1),
        ] {
            let split = range.split(k);
            assert_eq!(split.len(), parts);
            for offset in 0..110 {
                let readers = split.iter().filter(|r| r.selects(offset)).count();
                assert_eq!(readers, usize::from(range.selects(offset)), "{range:?} offset {offset}");
            }
            assert!(range.is_empty() || split.iter().all(|r| !r.is_empty()));
        }
        let tail = RangeSpec { partition: 0, start: 10, end: 20, stride: 3, phase: 2 }.from_offset(15);
        assert_eq!((tail.start, tail.len()), (15, 1), "of 11, 14 and 17, only 17 is left");
    }

    #[test]
    fn range_len_counts_the_selected_offsets() {
        for (start, end, stride, phase) in [(0, 10, 1, 0), (3, 17, 3, 1), (5, 5, 2, 0), (0, 1, 4, 3), (7, 100, 7, 6)] {
            let r = RangeSpec { partition: 0, start, end, stride, phase };
            let brute = (start..end).filter(|o| r.selects(*o)).count() as u64;
            assert_eq!(r.len(), brute, "{r:?}");
        }
    }

    #[test]
    fn sibling_topics_keep_brokers_and_parameters() {
        assert_eq!(
            sibling_topic("kafka://a:9092,b:9092/traffic?linger.ms=5", "rec-1").unwrap(),
            "kafka://a:9092,b:9092/traffic-rec-1?linger.ms=5"
        );
        assert_eq!(sibling_topic("file:///var/log/t/", "rec-1").unwrap(), "file:///var/log/t-rec-1");
        assert!(sibling_topic("kafka://a:9092/", "x").is_err());
        assert!(sibling_topic("file:///t", "a/b").is_err());
    }

    #[test]
    fn ranges_are_checked_against_watermarks() {
        let marks = Watermarks { partition: 0, low: 10, high: 20 };
        assert!(check_range(&RangeSpec::whole(0, 10, 20), marks).is_ok());
        assert!(matches!(check_range(&RangeSpec::whole(0, 5, 15), marks), Err(LogError::Expired { .. })));
        assert!(matches!(check_range(&RangeSpec::whole(0, 15, 25), marks), Err(LogError::NotYetWritten { .. })));
        let bad_phase = RangeSpec { partition: 0, start: 10, end: 20, stride: 2, phase: 2 };
        assert!(matches!(check_range(&bad_phase, marks), Err(LogError::InvalidRange(_))));
    }
}
