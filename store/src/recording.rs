//! Building recordings: the pieces every writer of a [`Recording`] shares, whether the
//! controller snapshots watermarks (`record start/stop`, `record cut`) or an import
//! makes a recording of the topic it wrote.
//!
//! Two clocks meet here. A record's *capture time* (`TrafficRecord::timestamp_ns`) is
//! when the traffic happened; pacing and a recording's first/last timestamps use it. A
//! log message's *message time* (`LogRecord::timestamp_ms`) is what the broker's
//! retention and offsets-for-times use: the capture time for live capture, the time the
//! record was written for imports (so retention counts from the import).

use std::collections::BTreeMap;

use futures::StreamExt;

use crate::log::{LogError, RangeSpec, TrafficLog, Watermarks};
use crate::now_ms;
use crate::schema::{PartitionRange, Recording, RecordingState};

/// A fresh, sortable id with a prefix (`rec-`, `rep-`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:x}{:04x}", now_ms() / 1000, rand::random::<u16>())
}

/// A recording of `ranges` in the log at `log_url`, not yet described (no counts, no
/// time span): see [`describe`].
pub fn new_recording(
    id: String,
    name: &str,
    labels: BTreeMap<String, String>,
    log_url: &str,
    ranges: Vec<PartitionRange>,
    state: RecordingState,
) -> Recording {
    let now = now_ms();
    Recording {
        id,
        name: name.to_string(),
        labels,
        log_url: log_url.to_string(),
        ranges,
        first_timestamp_ns: None,
        last_timestamp_ns: None,
        record_count: 0,
        bytes: None,
        state: state.into(),
        missing_records: 0,
        created_at_ms: now,
        stopped_at_ms: (state != RecordingState::Recording).then_some(now),
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

/// Fills in a finished recording's record count and retention state (complete, or
/// expired when part of its ranges is below the low watermarks).
pub fn tally(recording: &mut Recording, marks: &[Watermarks]) {
    recording.record_count = recording.ranges.iter().map(PartitionRange::len).sum();
    recording.missing_records = missing_records(&recording.ranges, marks);
    recording.set_state(if recording.missing_records > 0 { RecordingState::Expired } else { RecordingState::Complete });
}

/// [`tally`], and the time span: the capture times of the first and last record of each
/// range (records of a partition are appended in capture order).
pub async fn describe(log: &dyn TrafficLog, recording: &mut Recording, marks: &[Watermarks]) -> Result<(), LogError> {
    tally(recording, marks);
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    let mut deleted_meanwhile = false;
    for range in recording.ranges.iter().filter(|r| !r.is_empty()) {
        let low = marks.iter().find(|m| m.partition == range.partition).map_or(0, |m| m.low);
        if range.end <= low {
            continue;
        }
        let start = range.start.max(low);
        for offset in [start, range.end - 1] {
            match capture_time_at(log, range.partition, offset).await {
                Ok(Some(ts)) => {
                    first = Some(first.map_or(ts, |f| f.min(ts)));
                    last = Some(last.map_or(ts, |l| l.max(ts)));
                }
                Ok(None) => {}
                // Retention ran between reading the watermarks and the record.
                Err(LogError::Expired { .. }) => deleted_meanwhile = true,
                Err(e) => return Err(e),
            }
        }
    }
    if deleted_meanwhile {
        recording.missing_records = missing_records(&recording.ranges, &log.watermarks().await?);
        recording.set_state(RecordingState::Expired);
    }
    recording.first_timestamp_ns = first;
    recording.last_timestamp_ns = last;
    Ok(())
}

/// The capture time of one record; the message time if it is not a traffic record.
pub async fn capture_time_at(log: &dyn TrafficLog, partition: i32, offset: i64) -> Result<Option<i64>, LogError> {
    let mut stream = log.read_range(RangeSpec::whole(partition, offset, offset + 1), 1).await?;
    Ok(match stream.next().await.transpose()? {
        Some(raw) => Some(match crate::traffic::decode(&raw.payload) {
            Ok(record) => record.timestamp_ns,
            Err(_) => raw.timestamp_ms * 1_000_000,
        }),
        None => None,
    })
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
