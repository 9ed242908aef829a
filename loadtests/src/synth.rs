//! Synthetic traffic: real HTTP/1.1 request bytes wrapped in traffic records, written to
//! a traffic log as a capture node would write them.

use std::sync::Arc;

use bytes::Bytes;
use reprise_proto::TRAFFIC_FORMAT_VERSION;
use reprise_proto::v1::{MessageKind, TrafficRecord};
use reprise_store::log::{LogError, NewRecord, TrafficLog};
use reprise_store::traffic;

/// A constant-rate stream of requests over `connections` connections.
#[derive(Debug, Clone)]
pub struct Profile {
    pub requests: u64,
    /// Capture time of the first request, ns since the epoch.
    pub start_ns: i64,
    /// Time between the first and the last request.
    pub span_ns: i64,
    pub connections: u64,
    /// Body bytes of each POST (every third request is a POST).
    pub body_bytes: usize,
}

/// The `i`th request of a profile: its record.
pub fn request(profile: &Profile, i: u64) -> TrafficRecord {
    let step = if profile.requests > 1 { profile.span_ns / (profile.requests as i64 - 1) } else { 0 };
    let connection = i % profile.connections.max(1);
    let http = if i % 3 == 2 {
        let body = "x".repeat(profile.body_bytes);
        format!(
            "POST /items/{i}?src=gen HTTP/1.1\r\nHost: shop.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Request-Id: {i}\r\n\r\n{body}",
            body.len()
        )
    } else {
        format!("GET /items/{i}?src=gen HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\nX-Request-Id: {i}\r\n\r\n")
    };
    TrafficRecord {
        format_version: TRAFFIC_FORMAT_VERSION,
        capture_node: "gen".into(),
        connection_id: format!("gen-{connection}"),
        kind: MessageKind::Request as i32,
        timestamp_ns: profile.start_ns + step * i as i64,
        source: format!("10.0.0.{}:{}", connection % 250 + 1, 40000 + connection),
        destination: "10.0.1.1:80".into(),
        http: http.into_bytes(),
        latency_ns: 0,
        sequence: i / profile.connections.max(1),
        body_truncated: false,
        original_body_len: 0,
    }
}

/// Appends the whole profile to `log` in batches; returns how many records were written.
pub async fn write(log: &Arc<dyn TrafficLog>, profile: &Profile) -> Result<u64, LogError> {
    const BATCH: u64 = 1000;
    let mut written = 0;
    while written < profile.requests {
        let batch: Vec<NewRecord> = (written..(written + BATCH).min(profile.requests))
            .map(|i| {
                let record = request(profile, i);
                NewRecord {
                    key: Bytes::from(record.connection_id.clone()),
                    timestamp_ms: record.timestamp_ns / 1_000_000,
                    payload: Bytes::from(traffic::encode(&record)),
                }
            })
            .collect();
        written += batch.len() as u64;
        log.append(batch).await?;
    }
    Ok(written)
}
