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
use crate::schema::{CaptureCounters, CaptureInfo, Ledger, LedgerEntry, PartitionRange, Recording, RecordingState};

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
        ledger: None,
        capture_baseline: Vec::new(),
    }
}

/// A capture node's counters as a ledger entry (absolute, since the node started).
pub fn ledger_entry(node: &str, counters: &CaptureCounters) -> LedgerEntry {
    LedgerEntry {
        node: node.to_string(),
        kernel_drops: counters.kernel_drops,
        own_drops: counters.own_drops,
        gaps: counters.gaps,
        resyncs: counters.resyncs,
        truncated_bodies: counters.truncated_bodies,
        malformed: counters.malformed,
        whole_window: true,
        h2_mid_stream: counters.h2_mid_stream,
        h2_errors: counters.h2_errors,
        h2_streams_reset: counters.h2_streams_reset,
        h2_streams_left_out: counters.h2_streams_left_out,
    }
}

/// The capture nodes that write to `log_url` (the same log, whatever its parameters).
pub fn capture_nodes_of<'a>(log_url: &str, nodes: &'a [CaptureInfo]) -> impl Iterator<Item = &'a CaptureInfo> {
    let base = |url: &str| url.split('?').next().unwrap_or(url).to_string();
    let log = base(log_url);
    nodes.iter().filter(move |node| base(&node.log_url) == log)
}

/// A window's ledger: each node's counters at its end minus those at its start. A node
/// that was not there at both ends counts what it reported (from zero if it started in
/// the window) and is not `whole_window`.
pub fn window_ledger(baseline: &[LedgerEntry], at_end: &[LedgerEntry]) -> Ledger {
    let mut nodes: Vec<LedgerEntry> = at_end
        .iter()
        .map(|end| match baseline.iter().find(|start| start.node == end.node) {
            Some(start) => LedgerEntry {
                node: end.node.clone(),
                kernel_drops: end.kernel_drops.saturating_sub(start.kernel_drops),
                own_drops: end.own_drops.saturating_sub(start.own_drops),
                gaps: end.gaps.saturating_sub(start.gaps),
                resyncs: end.resyncs.saturating_sub(start.resyncs),
                truncated_bodies: end.truncated_bodies.saturating_sub(start.truncated_bodies),
                malformed: end.malformed.saturating_sub(start.malformed),
                whole_window: end.whole_window,
                h2_mid_stream: end.h2_mid_stream.saturating_sub(start.h2_mid_stream),
                h2_errors: end.h2_errors.saturating_sub(start.h2_errors),
                h2_streams_reset: end.h2_streams_reset.saturating_sub(start.h2_streams_reset),
                h2_streams_left_out: end.h2_streams_left_out.saturating_sub(start.h2_streams_left_out),
            },
            None => LedgerEntry { whole_window: false, ..end.clone() },
        })
        .collect();
    let gone = baseline.iter().filter(|start| !at_end.iter().any(|end| end.node == start.node));
    nodes.extend(gone.map(|start| LedgerEntry { node: start.node.clone(), whole_window: false, ..Default::default() }));
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ledger { nodes }
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
        Some(raw) => Some(match crate::traffic::decode(&raw.payload[..]) {
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

    #[test]
    fn a_window_ledger_counts_what_each_node_missed_between_its_ends() {
        let entry = |node: &str, kernel_drops: u64, gaps: u64| LedgerEntry {
            node: node.into(),
            kernel_drops,
            gaps,
            whole_window: true,
            ..Default::default()
        };
        let baseline = [LedgerEntry { h2_mid_stream: 2, ..entry("a", 100, 1) }, entry("gone", 5, 5)];
        let at_end = [LedgerEntry { h2_mid_stream: 5, ..entry("a", 130, 1) }, entry("late", 7, 2)];
        let ledger = window_ledger(&baseline, &at_end);
        let summary: Vec<(&str, u64, u64, bool)> =
            ledger.nodes.iter().map(|e| (e.node.as_str(), e.kernel_drops, e.gaps, e.whole_window)).collect();
        assert_eq!(summary, vec![("a", 30, 0, true), ("gone", 0, 0, false), ("late", 7, 2, false)]);
        assert_eq!(ledger.nodes[0].h2_mid_stream, 3);
    }
}
