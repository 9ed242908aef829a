//! The documents kept in the catalog, stored as JSON under `<collection>/<id>` so that
//! `etcdctl get --prefix` shows them readably and new optional fields stay compatible.
//! Recordings, workers and capture nodes are wire types too (reprise-proto's
//! `catalog.proto`): ctl and the stats API see exactly what the catalog holds.

use serde::{Deserialize, Serialize};

/// A catalog document type and the collection it lives in.
pub trait Entity: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Key prefix of the collection, e.g. `recordings`.
    const COLLECTION: &'static str;
    fn id(&self) -> &str;
}

pub use reprise_proto::v1::{
    CaptureCounters, CaptureInfo, Ledger, LedgerEntry, PartitionRange, Recording, RecordingState, ReplayState,
    WorkerInfo,
};

impl Entity for Recording {
    const COLLECTION: &'static str = "recordings";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Entity for WorkerInfo {
    const COLLECTION: &'static str = "workers";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Entity for CaptureInfo {
    const COLLECTION: &'static str = "captures";
    fn id(&self) -> &str {
        &self.id
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
    /// A user asked to cancel: whoever follows the replay (this controller, or the next
    /// leader) sends the cancel to its workers until they have all reported.
    #[serde(default)]
    pub cancel_requested: bool,
}

impl Entity for Replay {
    const COLLECTION: &'static str = "replays";
    fn id(&self) -> &str {
        &self.id
    }
}
