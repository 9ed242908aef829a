//! Synthetic traffic: real HTTP/1.1 request bytes wrapped in traffic records, written to
//! a traffic log as a capture node would write them (and, for side-by-side runs, to a
//! GoReplay file). Every request carries `X-Request-Id: N` (N = 0, 1, ...), so a sink can
//! check for losses and duplicates.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use reprise_proto::v1::{HttpProtocol, MessageKind, TrafficRecord};
use reprise_store::log::{LogError, NewRecord, TrafficLog};
use reprise_store::traffic;

/// How the request rate moves over the recording's span.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Shape {
    /// The same rate throughout.
    Constant,
    /// From a tenth of the peak rate up to the peak, linearly.
    Ramp,
    /// A base rate with bursts of five times as much for 10% of every 10 seconds.
    Spikes,
}

impl Shape {
    /// Relative rate at `t` (0..1 of the span, `seconds` long).
    fn weight(self, t: f64, seconds: f64) -> f64 {
        match self {
            Shape::Constant => 1.0,
            Shape::Ramp => 0.1 + 0.9 * t,
            Shape::Spikes => {
                if (t * seconds) % 10.0 < 1.0 {
                    5.0
                } else {
                    1.0
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub requests: u64,
    /// Capture time of the first request, ns since the epoch.
    pub start_ns: i64,
    /// Time between the first and the last request.
    pub span_ns: i64,
    pub connections: u64,
    /// Body bytes of each POST.
    pub body_bytes: usize,
    /// Share of requests that are POSTs (the rest are GETs).
    pub post_share: f64,
    pub shape: Shape,
    /// What the requests were captured on: an HTTP/2 record is replayed over HTTP/2.
    pub protocol: HttpProtocol,
}

impl Profile {
    /// Requests spread evenly over `span_ns`, a third of them POSTs of `body_bytes`.
    pub fn constant(requests: u64, start_ns: i64, span_ns: i64, connections: u64, body_bytes: usize) -> Self {
        Profile {
            requests,
            start_ns,
            span_ns,
            connections,
            body_bytes,
            post_share: 1.0 / 3.0,
            shape: Shape::Constant,
            protocol: HttpProtocol::Http1,
        }
    }
}

/// Capture timestamps following the profile's shape: the span is cut into 10 ms buckets
/// weighted by the shape, and requests are placed by the cumulative weight.
pub struct Timestamps {
    profile: Profile,
    cumulative: Vec<f64>,
    bucket: usize,
    next: u64,
}

const BUCKET_NS: i64 = 10_000_000;

impl Timestamps {
    pub fn new(profile: &Profile) -> Self {
        let buckets = (profile.span_ns / BUCKET_NS).max(1) as usize;
        let seconds = profile.span_ns as f64 / 1e9;
        let mut total = 0.0;
        let cumulative = (0..buckets)
            .map(|b| {
                total += profile.shape.weight((b as f64 + 0.5) / buckets as f64, seconds);
                total
            })
            .collect();
        Timestamps { profile: profile.clone(), cumulative, bucket: 0, next: 0 }
    }
}

impl Iterator for Timestamps {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        let p = &self.profile;
        if self.next >= p.requests {
            return None;
        }
        if p.requests == 1 || p.span_ns == 0 {
            self.next += 1;
            return Some(p.start_ns);
        }
        let total = *self.cumulative.last().expect("at least one bucket");
        let target = total * self.next as f64 / (p.requests - 1) as f64;
        while self.bucket + 1 < self.cumulative.len() && self.cumulative[self.bucket] < target {
            self.bucket += 1;
        }
        let before = if self.bucket == 0 { 0.0 } else { self.cumulative[self.bucket - 1] };
        let width = self.cumulative[self.bucket] - before;
        let within = if width > 0.0 { ((target - before) / width).clamp(0.0, 1.0) } else { 0.0 };
        let span_of_bucket = p.span_ns as f64 / self.cumulative.len() as f64;
        let at = (self.bucket as f64 + within) * span_of_bucket;
        self.next += 1;
        Some(p.start_ns + (at as i64).min(p.span_ns))
    }
}

/// The `i`th request of a profile, stamped `timestamp_ns`.
pub fn request(profile: &Profile, i: u64, timestamp_ns: i64) -> TrafficRecord {
    let connection = i % profile.connections.max(1);
    // Spread POSTs evenly: request i is a POST when the running share crosses a step.
    let is_post = ((i + 1) as f64 * profile.post_share).floor() > (i as f64 * profile.post_share).floor();
    let http = if is_post {
        let body = "x".repeat(profile.body_bytes);
        format!(
            "POST /items/{i}?src=gen HTTP/1.1\r\nHost: shop.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Request-Id: {i}\r\n\r\n{body}",
            body.len()
        )
    } else {
        format!("GET /items/{i}?src=gen HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\nX-Request-Id: {i}\r\n\r\n")
    };
    TrafficRecord {
        format_version: profile.protocol.format_version(),
        protocol: profile.protocol as i32,
        capture_node: "gen".into(),
        connection_id: format!("gen-{connection}"),
        kind: MessageKind::Request as i32,
        timestamp_ns,
        source: format!("10.0.0.{}:{}", connection % 250 + 1, 40000 + connection % 20000),
        destination: "10.0.1.1:80".into(),
        http: http.into_bytes().into(),
        latency_ns: 0,
        sequence: i / profile.connections.max(1),
        body_truncated: false,
        original_body_len: 0,
        ..TrafficRecord::default()
    }
}

/// Appends the whole profile to `log` in batches (and to `gor`, if given); returns how
/// many records were written.
pub async fn write(log: &Arc<dyn TrafficLog>, profile: &Profile) -> Result<u64, LogError> {
    write_with_gor(log, profile, None::<&mut std::io::Sink>).await
}

pub async fn write_with_gor(
    log: &Arc<dyn TrafficLog>,
    profile: &Profile,
    mut gor: Option<&mut impl Write>,
) -> Result<u64, LogError> {
    const BATCH: usize = 2000;
    let mut written = 0;
    let mut timestamps = Timestamps::new(profile);
    while written < profile.requests {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH
            && let Some(ts) = timestamps.next()
        {
            let record = request(profile, written + batch.len() as u64, ts);
            if let Some(out) = gor.as_mut() {
                reprise_store::gor::write_record(out, &record)
                    .map_err(|e| LogError::Io { path: "GoReplay file".into(), source: e })?;
            }
            batch.push(NewRecord {
                key: Bytes::from(record.connection_id.clone()),
                timestamp_ms: record.timestamp_ns / 1_000_000,
                payload: Bytes::from(traffic::encode(&record)),
            });
        }
        written += batch.len() as u64;
        log.append(batch).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(shape: Shape) -> Profile {
        Profile { shape, ..Profile::constant(1000, 1_000_000_000, 20_000_000_000, 4, 8) }
    }

    #[test]
    fn timestamps_follow_the_shape_and_stay_in_the_span() {
        for shape in [Shape::Constant, Shape::Ramp, Shape::Spikes] {
            let p = profile(shape);
            let ts: Vec<i64> = Timestamps::new(&p).collect();
            assert_eq!(ts.len(), 1000);
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{shape:?}: non-decreasing");
            assert!(ts[0] >= p.start_ns && *ts.last().unwrap() <= p.start_ns + p.span_ns);
        }
        let ramp: Vec<i64> = Timestamps::new(&profile(Shape::Ramp)).collect();
        let half = profile(Shape::Ramp).start_ns + 10_000_000_000;
        let early = ramp.iter().filter(|t| **t < half).count();
        assert!(early < 400, "a ramp puts fewer requests in its first half: {early}");
        let spikes: Vec<i64> = Timestamps::new(&profile(Shape::Spikes)).collect();
        let in_spikes = spikes.iter().filter(|t| ((**t - 1_000_000_000) / 1_000_000_000) % 10 == 0).count();
        assert!(in_spikes > 300, "a tenth of the time carries about 5/14 of the requests: {in_spikes}");
    }

    #[test]
    fn post_share_is_respected() {
        let p = Profile { post_share: 0.25, ..profile(Shape::Constant) };
        let posts = (0..1000).filter(|i| request(&p, *i, 0).http.starts_with(b"POST")).count();
        assert_eq!(posts, 250);
    }
}
