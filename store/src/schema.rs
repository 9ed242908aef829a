//! The documents kept in the catalog, stored as JSON under `<collection>/<id>` so that
//! `etcdctl get --prefix` shows them readably and new optional fields stay compatible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A catalog document type and the collection it lives in.
pub trait Entity: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Key prefix of the collection, e.g. `recordings`.
    const COLLECTION: &'static str;
    fn id(&self) -> &str;
}

/// The `[start, end)` offsets a recording holds in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl PartitionRange {
    pub fn len(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Started, not stopped: its ranges end at the live high watermarks.
    Recording,
    Complete,
    /// Retention deleted part of its ranges; `missing_records` says how much.
    Expired,
}

/// A named set of offset ranges of the traffic log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The traffic log (URL) holding the records.
    pub log_url: String,
    pub ranges: Vec<PartitionRange>,
    /// First and last capture timestamps in the ranges, ns since the epoch.
    pub first_timestamp_ns: Option<i64>,
    pub last_timestamp_ns: Option<i64>,
    pub record_count: u64,
    /// Total size of the records, when known (a capture that wrote them counts it;
    /// a Kafka range is not read just to measure it).
    #[serde(default)]
    pub bytes: Option<u64>,
    pub state: RecordingState,
    #[serde(default)]
    pub missing_records: u64,
    pub created_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
}

impl Entity for Recording {
    const COLLECTION: &'static str = "recordings";
    fn id(&self) -> &str {
        &self.id
    }
}

/// A live worker; kept under the worker's lease, so it vanishes when the worker dies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    /// gRPC address the controller dials, `host:port`.
    pub address: String,
    pub version: String,
    pub protocol_version: u32,
    /// CPU cores the worker may use, a hint for planning.
    pub cores: u32,
    /// Requests/s the worker is expected to sustain (0 = unknown).
    #[serde(default)]
    pub max_rate: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub started_at_ms: i64,
}

impl Entity for WorkerInfo {
    const COLLECTION: &'static str = "workers";
    fn id(&self) -> &str {
        &self.id
    }
}

/// Running totals of a capture node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCounters {
    pub packets: u64,
    pub kernel_drops: u64,
    pub own_drops: u64,
    pub records: u64,
    pub bytes: u64,
    pub spool_bytes: u64,
}

/// A live capture node; kept under its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub id: String,
    pub interface: String,
    pub filter: String,
    pub log_url: String,
    pub counters: CaptureCounters,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Entity for CaptureInfo {
    const COLLECTION: &'static str = "captures";
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    Planning,
    Running,
    Paused,
    Done,
    Cancelled,
    Failed,
}

impl ReplayState {
    pub fn is_final(self) -> bool {
        matches!(self, ReplayState::Done | ReplayState::Cancelled | ReplayState::Failed)
    }
}

/// A replay: what to send where, the plan, and how it went. Persisted so that another
/// controller can carry on after a failover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    pub id: String,
    pub recording_id: String,
    pub target: String,
    pub state: ReplayState,
    /// Options and plan, owned by the controller (kept as JSON so the catalog does not
    /// pin their shape).
    #[serde(default)]
    pub options: serde_json::Value,
    #[serde(default)]
    pub plan: serde_json::Value,
    #[serde(default)]
    pub summary: serde_json::Value,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl Entity for Replay {
    const COLLECTION: &'static str = "replays";
    fn id(&self) -> &str {
        &self.id
    }
}
