//! Recordings: named offset ranges of the traffic log. `start` and `stop` snapshot the
//! high watermarks, and the capture nodes' counters for the recording's ledger (what the
//! capture missed in the window); `cut` finds the ranges of a past time window by
//! timestamp (no ledger: the counters of a past window are not known).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reprise_store::log::TrafficLog;
use reprise_store::recording::{capture_nodes_of, describe, ledger_entry, new_recording, window_ledger};
pub use reprise_store::recording::{missing_records, new_id};
use reprise_store::schema::{CaptureInfo, LedgerEntry, PartitionRange, Recording, RecordingState};
use reprise_store::{Catalog, CatalogError, LogError, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("no recording {0}")]
    NotFound(String),
    #[error("recording {0} is already stopped")]
    AlreadyStopped(String),
    #[error("recording {0} is still recording; stop it first (ctl record stop {0})")]
    StillRecording(String),
    #[error("recording {id} is in use by replay {replay}; cancel it or wait for its end (ctl cancel {replay})")]
    InUse { id: String, replay: String },
    #[error("invalid time window: {0}")]
    BadWindow(String),
    #[error("recording {0} changed concurrently; try again")]
    Conflict(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// How long a stop waits for every capture node's report after the stop (they report
/// every 2 s).
const CAPTURE_REPORT_WAIT: Duration = Duration::from_secs(3);

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
        let ranges =
            marks.iter().map(|m| PartitionRange { partition: m.partition, start: m.high, end: m.high }).collect();
        let started_at_ms = now_ms();
        let mut recording =
            new_recording(new_id("rec"), name, labels, self.log.url(), ranges, RecordingState::Recording);
        // Counted from each node's first report after the start: the ledger's ends are
        // as exact as the nodes' 2 s reports.
        recording.capture_baseline = self.capture_counters(started_at_ms).await?;
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
        let stopped_at_ms = now_ms();
        recording.stopped_at_ms = Some(stopped_at_ms);
        describe(&*self.log, &mut recording, &marks).await?;
        let at_end = self.capture_counters(stopped_at_ms).await?;
        recording.ledger = Some(window_ledger(&std::mem::take(&mut recording.capture_baseline), &at_end));
        self.catalog
            .put_if(&recording, stored.revision)
            .await?
            .ok_or_else(|| RecordingError::Conflict(id.to_string()))?;
        Ok(recording)
    }

    /// Removes a recording from the catalog; its traffic stays in the log until retention
    /// removes it. `replays_using` are the unfinished replays of it: while there is one,
    /// or while it records, it stays (the running replay names it, and a recording being
    /// written is surely not done with).
    pub async fn delete(&self, id: &str, replays_using: &[String]) -> Result<Recording, RecordingError> {
        let stored =
            self.catalog.get::<Recording>(id).await?.ok_or_else(|| RecordingError::NotFound(id.to_string()))?;
        if stored.value.state() == RecordingState::Recording {
            return Err(RecordingError::StillRecording(id.to_string()));
        }
        if let Some(replay) = replays_using.first() {
            return Err(RecordingError::InUse { id: id.to_string(), replay: replay.clone() });
        }
        if !self.catalog.delete::<Recording>(id).await? {
            return Err(RecordingError::NotFound(id.to_string()));
        }
        Ok(stored.value)
    }

    /// The counters of the capture nodes writing to this controller's log, once each has
    /// reported at or after `since_ms` (they report every 2 s; a node still silent after
    /// [`CAPTURE_REPORT_WAIT`] counts, but not as covering the whole window).
    async fn capture_counters(&self, since_ms: i64) -> Result<Vec<LedgerEntry>, RecordingError> {
        let deadline = tokio::time::Instant::now() + CAPTURE_REPORT_WAIT;
        loop {
            let nodes: Vec<CaptureInfo> =
                self.catalog.list::<CaptureInfo>().await?.into_iter().map(|s| s.value).collect();
            let ours: Vec<&CaptureInfo> = capture_nodes_of(self.log.url(), &nodes).collect();
            let fresh = |node: &CaptureInfo| node.updated_at_ms >= since_ms;
            if ours.iter().all(|node| fresh(node)) || tokio::time::Instant::now() >= deadline {
                let entry = |node: &CaptureInfo| LedgerEntry {
                    whole_window: fresh(node),
                    ..ledger_entry(&node.id, &node.counters.unwrap_or_default())
                };
                return Ok(ours.into_iter().map(entry).collect());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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
        let mut recording =
            new_recording(new_id("rec"), name, labels, self.log.url(), ranges, RecordingState::Complete);
        describe(&*self.log, &mut recording, &marks).await?;
        self.catalog.put_if(&recording, 0).await?.ok_or_else(|| RecordingError::Conflict(recording.id.clone()))?;
        Ok(recording)
    }

    /// Re-checks a recording against its log's retention; marks it expired (and stores
    /// that) when part of it is gone. An import's recording lives in a topic of its own.
    pub async fn check_retention(&self, recording: &mut Recording) -> Result<(), RecordingError> {
        let marks = if recording.log_url == self.log.url() {
            self.log.watermarks().await?
        } else {
            reprise_store::open_log(&recording.log_url).await?.watermarks().await?
        };
        let missing = missing_records(&recording.ranges, &marks);
        if missing > recording.missing_records {
            recording.missing_records = missing;
            recording.set_state(RecordingState::Expired);
            self.catalog.put(recording).await?;
        }
        Ok(())
    }
}
