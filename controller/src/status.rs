//! What the controller tells about a replay: the live or final status and the per-second
//! cluster timeline, merged from the workers' reports. These are the JSON documents of
//! the stats API, `ctl --json`, and the summary stored in the catalog.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use reprise_store::schema::ReplayState;
use serde::{Deserialize, Serialize};

/// Percentiles of a histogram of microseconds, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One worker's part, as last reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerProgress {
    pub id: String,
    pub address: String,
    pub state: String,
    pub planned_records: u64,
    pub read: u64,
    pub sent: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayStatus {
    pub id: String,
    pub recording_id: String,
    pub target: String,
    pub state: ReplayState,
    pub error: Option<String>,
    pub multiple: u32,
    /// Timeline speed; `None` when pacing ignores timestamps.
    pub speed: Option<f64>,
    pub pacing: String,
    /// Cluster rate cap, requests/s.
    pub rate: Option<f64>,
    /// Records in the recording (requests and responses).
    pub records: u64,
    pub read: u64,
    /// Records skipped: undecodable, or not a replayable request.
    pub skipped: u64,
    pub sent: u64,
    /// Responses with a status below 400.
    pub ok: u64,
    /// Sends that got no response (connect, timeout, reset, other).
    pub errors: u64,
    /// Responses with a status of 400 or more.
    pub http_errors: u64,
    pub status: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub in_flight: u64,
    /// Sends per second over the whole run.
    pub qps: f64,
    /// Sends in the last second.
    pub current_qps: f64,
    pub duration_s: f64,
    pub progress: f64,
    pub eta_s: Option<f64>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// From each request's due time to its complete response.
    pub latency_ms: Percentiles,
    /// How late each send left against its due time.
    pub lag_ms: Percentiles,
    pub workers: Vec<WorkerProgress>,
}

/// One second of the cluster's replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the replay's start.
    pub t_s: f64,
    pub at_ms: i64,
    pub qps: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub lag_p99_ms: f64,
    /// Sends per worker in this second.
    pub workers: BTreeMap<String, u64>,
}

/// A status change pushed to live followers (SSE, `ctl` watch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayEvent {
    pub status: ReplayStatus,
    pub point: Option<TimelinePoint>,
}

/// Decodes a serialized histogram from a worker report; an empty or bad one is empty.
pub fn histogram(bytes: &[u8]) -> Histogram<u64> {
    if bytes.is_empty() {
        return empty_histogram();
    }
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "undecodable histogram in a worker report");
        empty_histogram()
    })
}

/// An auto-resizing histogram to merge worker histograms into.
pub fn empty_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("valid histogram")
}
