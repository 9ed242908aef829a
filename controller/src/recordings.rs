//! Recordings: named offset ranges of the traffic log. `start` and `stop` snapshot the
//! high watermarks; `cut` finds the ranges of a past time window by timestamp.

use std::collections::BTreeMap;
use std::sync::Arc;

use reprise_store::log::{RangeSpec, TrafficLog, Watermarks};
use reprise_store::schema::{PartitionRange, Recording, RecordingState};
use reprise_store::{Catalog, CatalogError, LogError, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("no recording {0}")]
    NotFound(String),
    #[error("recording {0} is already stopped")]
    AlreadyStopped(String),
    #[error("invalid time window: {0}")]
    BadWindow(String),
    #[error("recording {0} changed concurrently; try again")]
    Conflict(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A fresh, sortable id with a prefix (`rec-`, `rep-`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:x}{:04x}", now_ms() / 1000, rand::random::<u16>())
}

pub struct Recordings {
    catalog: Catalog,
    log: Arc<dyn TrafficLog>,
    partitions: i32,
}

impl Recordings {
    pub fn new(catalog: Catalog, log: Arc<dyn TrafficLog>, partitions: i32) -> Self {
        Recordings { catalog, log, partitions }
    }

    pub async fn start(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Recording, RecordingError> {
        self.log.ensure_topic(self.partitions).await?;
        let marks = self.log.watermarks().await?;
        let recording = Recording {
            id: new_id("rec"),
            name: name.to_string(),
            labels,
            log_url: self.log.url().to_string(),
            ranges: marks
                .iter()
                .map(|m| PartitionRange { partition: m.partition, start: m.high, end: m.high })
                .collect(),
            first_timestamp_ns: None,
            last_timestamp_ns: None,
            record_count: 0,
            bytes: None,
            state: RecordingState::Recording.into(),
            missing_records: 0,
            created_at_ms: now_ms(),
            stopped_at_ms: None,
        };
        self.catalog.put_if(&recording, 0).await?.ok_or_else(|| RecordingError::Conflict(recording.id.clone()))?;
        Ok(recording)
    }

    pub async fn stop(&self, id: &str) -> Result<Recording, RecordingError> {
        let stored =
            self.catalog.get::<Recording>(id).await?.ok_or_else(|| RecordingError::NotFound(id.to_string()))?;
        let mut recording = stored.value;
        if recording.state() != RecordingState::Recording {
            return Err(RecordingError::AlreadyStopped(id.to_string()));
        }
        let marks = self.log.watermarks().await?;
        for range in &mut recording.ranges {
            if let Some(m) = marks.iter().find(|m| m.partition == range.partition) {
                range.end = m.high.max(range.start);
            }
        }
        // Partitions added to the topic since the start are recorded from their beginning.
        let added: Vec<PartitionRange> = marks
            .iter()
            .filter(|m| !recording.ranges.iter().any(|r| r.partition == m.partition))
            .map(|m| PartitionRange { partition: m.partition, start: m.low, end: m.high })
            .collect();
        recording.ranges.extend(added);
        recording.stopped_at_ms = Some(now_ms());
        self.describe(&mut recording, &marks).await?;
        self.catalog
            .put_if(&recording, stored.revision)
            .await?
            .ok_or_else(|| RecordingError::Conflict(id.to_string()))?;
        Ok(recording)
    }

    /// A recording of everything captured in `[from_ms, to_ms)`.
    pub async fn cut(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Recording, RecordingError> {
        if from_ms >= to_ms {
            return Err(RecordingError::BadWindow(format!("from ({from_ms}) must be before to ({to_ms})")));
        }
        let marks = self.log.watermarks().await?;
        let starts = self.log.offsets_for_time(from_ms).await?;
        let ends = self.log.offsets_for_time(to_ms).await?;
        let ranges = marks
            .iter()
            .map(|m| {
                let find = |list: &[reprise_store::log::Position]| {
                    list.iter().find(|p| p.partition == m.partition).map(|p| p.offset)
                };
                let start = find(&starts).unwrap_or(m.high).clamp(m.low, m.high);
                let end = find(&ends).unwrap_or(m.high).clamp(start, m.high);
                PartitionRange { partition: m.partition, start, end }
            })
            .collect();
        let now = now_ms();
        let mut recording = Recording {
            id: new_id("rec"),
            name: name.to_string(),
            labels,
            log_url: self.log.url().to_string(),
            ranges,
            first_timestamp_ns: None,
            last_timestamp_ns: None,
            record_count: 0,
            bytes: None,
            state: RecordingState::Complete.into(),
            missing_records: 0,
            created_at_ms: now,
            stopped_at_ms: Some(now),
        };
        self.describe(&mut recording, &marks).await?;
        self.catalog.put_if(&recording, 0).await?.ok_or_else(|| RecordingError::Conflict(recording.id.clone()))?;
        Ok(recording)
    }

    /// Re-checks a recording against the log's retention; marks it expired (and stores
    /// that) when part of it is gone.
    pub async fn check_retention(&self, recording: &mut Recording) -> Result<(), RecordingError> {
        let marks = self.log.watermarks().await?;
        let missing = missing_records(&recording.ranges, &marks);
        if missing > recording.missing_records {
            recording.missing_records = missing;
            recording.set_state(RecordingState::Expired);
            self.catalog.put(recording).await?;
        }
        Ok(())
    }

    /// Fills in counts, the time span and the retention state.
    async fn describe(&self, recording: &mut Recording, marks: &[Watermarks]) -> Result<(), RecordingError> {
        recording.record_count = recording.ranges.iter().map(PartitionRange::len).sum();
        recording.missing_records = missing_records(&recording.ranges, marks);
        recording.set_state(if recording.missing_records > 0 {
            RecordingState::Expired
        } else {
            RecordingState::Complete
        });
        let (mut first, mut last) = (None::<i64>, None::<i64>);
        let mut deleted_meanwhile = false;
        for range in recording.ranges.iter().filter(|r| !r.is_empty()) {
            let low = marks.iter().find(|m| m.partition == range.partition).map_or(0, |m| m.low);
            if range.end <= low {
                continue;
            }
            let start = range.start.max(low);
            for offset in [start, range.end - 1] {
                match self.timestamp_at(range.partition, offset).await {
                    Ok(Some(ts)) => {
                        first = Some(first.map_or(ts, |f| f.min(ts)));
                        last = Some(last.map_or(ts, |l| l.max(ts)));
                    }
                    Ok(None) => {}
                    // Retention ran between reading the watermarks and the record.
                    Err(RecordingError::Log(LogError::Expired { .. })) => deleted_meanwhile = true,
                    Err(e) => return Err(e),
                }
            }
        }
        if deleted_meanwhile {
            recording.missing_records = missing_records(&recording.ranges, &self.log.watermarks().await?);
            recording.set_state(RecordingState::Expired);
        }
        recording.first_timestamp_ns = first;
        recording.last_timestamp_ns = last;
        Ok(())
    }

    /// The capture timestamp of one record (the log timestamp if it does not decode).
    async fn timestamp_at(&self, partition: i32, offset: i64) -> Result<Option<i64>, RecordingError> {
        use futures::StreamExt;
        let mut stream = self.log.read_range(RangeSpec::whole(partition, offset, offset + 1), 1).await?;
        Ok(match stream.next().await.transpose()? {
            Some(raw) => Some(match reprise_store::traffic::decode(&raw.payload) {
                Ok(record) => record.timestamp_ns,
                Err(_) => raw.timestamp_ms * 1_000_000,
            }),
            None => None,
        })
    }
}

/// Records of `ranges` that retention has already deleted.
pub fn missing_records(ranges: &[PartitionRange], marks: &[Watermarks]) -> u64 {
    ranges
        .iter()
        .map(|r| {
            let low = marks.iter().find(|m| m.partition == r.partition).map_or(0, |m| m.low);
            (r.end.min(low) - r.start).max(0) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counts_only_deleted_offsets() {
        let ranges =
            [PartitionRange { partition: 0, start: 5, end: 15 }, PartitionRange { partition: 1, start: 0, end: 3 }];
        let marks = [Watermarks { partition: 0, low: 8, high: 20 }, Watermarks { partition: 1, low: 0, high: 3 }];
        assert_eq!(missing_records(&ranges, &marks), 3);
        let all_gone = [Watermarks { partition: 0, low: 30, high: 30 }, Watermarks { partition: 1, low: 0, high: 3 }];
        assert_eq!(missing_records(&ranges, &all_gone), 10);
    }
}
