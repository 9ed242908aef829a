//! Prometheus metrics through `prometheus-client`: every daemon builds its families at
//! scrape time from the counters it keeps anyway (a [`Family`] per metric), and this
//! module encodes them (OpenMetrics text for a scraper that asks for it, as Prometheus
//! does, else the Prometheus text format), serves them on `/metrics` alone (workers and
//! capture; the controller serves them from its API router), turns the workers' HDR
//! histograms into cumulative buckets in seconds, and adds up worker reports into the
//! per-replay series that the controller (the cluster) and each worker (itself) export.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
pub use prometheus_client::registry::Unit;
use reprise_proto::v1::WorkerStats;

/// The text format of an answer, by the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0: what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for anything else (curl, promtool, older scrapers).
    Prometheus,
}

impl Format {
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// How long a finished replay's series stay exported, so that a scrape (every 15-60 s)
/// sees its final counts before they go.
pub const LINGER: Duration = Duration::from_secs(120);

/// Upper bounds of the latency and lag buckets, seconds: 0.1 ms to 10 s, then +Inf.
pub const BUCKETS_S: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Label pairs of one sample.
pub type Labels = Vec<(&'static str, String)>;

/// One value of a scrape.
#[derive(Debug, Clone)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Buckets),
}

/// A metric and its samples, one per label set. Names go without the `reprise_` prefix,
/// a counter's `_total` and the unit, which the encoder adds.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family { name, help, unit: None, kind: MetricType::Counter, samples: Vec::new() }
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family { name, help, unit: None, kind: MetricType::Gauge, samples: Vec::new() }
    }

    /// A histogram in seconds.
    pub fn histogram(name: &'static str, help: &'static str) -> Family {
        Family { name, help, unit: Some(Unit::Seconds), kind: MetricType::Histogram, samples: Vec::new() }
    }

    pub fn unit(mut self, unit: Unit) -> Family {
        self.unit = Some(unit);
        self
    }

    pub fn sample(&mut self, labels: Labels, value: Value) {
        self.samples.push((labels, value));
    }

    /// The family with one unlabelled sample.
    pub fn single(mut self, value: Value) -> Family {
        self.sample(Vec::new(), value);
        self
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut metric = encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        for (labels, value) in &self.samples {
            let mut sample = metric.encode_family(labels)?;
            encode_value(&mut sample, value)?;
        }
        Ok(())
    }
}

fn encode_value(encoder: &mut MetricEncoder, value: &Value) -> fmt::Result {
    match value {
        Value::Counter(n) => encoder.encode_counter::<NoLabelSet, _, u64>(n, None),
        Value::Gauge(v) => encoder.encode_gauge(v),
        Value::Histogram(b) => encoder.encode_histogram::<NoLabelSet>(b.sum_s, b.count, &b.buckets(), None),
    }
}

/// A scrape's families, encoded through a registry built for it.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.0.iter().try_for_each(|family| family.encode(&mut encoder))
    }
}

/// The text of `families` in `format`, every name prefixed `reprise_`.
pub fn render(families: Vec<Family>, format: Format) -> String {
    let mut registry = Registry::with_prefix("reprise");
    registry.register_collector(Box::new(Scrape(families)));
    let mut out = String::new();
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
    };
    encoded.expect("writing to a String cannot fail");
    out
}

/// A histogram in seconds from an HDR histogram in microseconds: counts per bucket of
/// [`BUCKETS_S`] (and +Inf). A value lands in the first bucket that holds its whole HDR
/// equivalence range (exact below 2 ms, within 0.1% above), so `le` never overstates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    sum_s: f64,
    count: u64,
    /// Per bucket, not cumulative; the last is +Inf.
    counts: [u64; BUCKETS_S.len() + 1],
}

impl Buckets {
    pub fn from_hdr(h: &Histogram<u64>) -> Buckets {
        let mut buckets = Buckets::default();
        for v in h.iter_recorded() {
            let (value_s, n) = (h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6, v.count_at_value());
            let i = BUCKETS_S.iter().position(|le| value_s <= *le).unwrap_or(BUCKETS_S.len());
            buckets.counts[i] += n;
            buckets.count += n;
            buckets.sum_s += h.median_equivalent(v.value_iterated_to()) as f64 / 1e6 * n as f64;
        }
        buckets
    }

    /// (upper bound, count) per bucket, as the encoder takes them (it accumulates).
    fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS_S.iter().copied().chain([f64::INFINITY]).zip(self.counts).collect()
    }
}

/// Decodes a histogram as the workers send it (V2); empty or unreadable: none.
fn decode_histogram(bytes: &[u8]) -> Option<Histogram<u64>> {
    if bytes.is_empty() {
        return None;
    }
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

/// One worker's counts in one replay: its parts' latest reports added up.
#[derive(Debug, Default)]
pub struct ReplaySeries {
    sent: u64,
    status: [u64; 5],
    errors: [u64; 4],
    sent_bytes: u64,
    received_bytes: u64,
    read: u64,
    skipped: u64,
    in_flight: u64,
    latency: Option<Histogram<u64>>,
    lag: Option<Histogram<u64>>,
}

fn merge(into: &mut Option<Histogram<u64>>, bytes: &[u8]) {
    let Some(h) = decode_histogram(bytes) else { return };
    match into {
        // Every worker uses the same bounds, so adding cannot fail.
        Some(sum) => {
            let _ = sum.add(&h);
        }
        None => *into = Some(h),
    }
}

impl ReplaySeries {
    /// Adds a cumulative report (a full one: a light one carries no histograms).
    pub fn add(&mut self, r: &WorkerStats) {
        self.sent += r.sent;
        let status = [r.status_1xx, r.status_2xx, r.status_3xx, r.status_4xx, r.status_5xx];
        self.status.iter_mut().zip(status).for_each(|(total, n)| *total += n);
        let errors = [r.errors_connect, r.errors_timeout, r.errors_reset, r.errors_other];
        self.errors.iter_mut().zip(errors).for_each(|(total, n)| *total += n);
        self.sent_bytes += r.bytes_sent;
        self.received_bytes += r.bytes_received;
        self.read += r.records_read;
        self.skipped += r.records_skipped;
        self.in_flight += r.in_flight;
        merge(&mut self.latency, &r.latency_us_total);
        merge(&mut self.lag, &r.lag_us_total);
    }
}

/// Status classes and error kinds as labelled, in the order of [`ReplaySeries`]' arrays.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const ERROR_KINDS: [&str; 4] = ["connect", "timeout", "reset", "other"];

/// Which daemon exports the series: the controller the cluster's (`reprise_replay_*`),
/// a worker its own (`reprise_worker_*`), so that a sum over both never counts twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    Controller,
    Worker,
}

/// The per-replay families of `series`, keyed by (replay id, worker id).
pub fn replay_families(exporter: Exporter, series: &BTreeMap<(String, String), ReplaySeries>) -> Vec<Family> {
    use Value::{Counter, Gauge, Histogram};
    let controller = exporter == Exporter::Controller;
    let pick = |replay: &'static str, worker: &'static str| if controller { replay } else { worker };
    let mut sent = Family::counter(pick("replay_sent", "worker_sent"), "Requests sent.");
    let mut responses =
        Family::counter(pick("replay_responses", "worker_responses"), "Responses, by status class (1xx to 5xx).");
    let mut errors = Family::counter(
        pick("replay_errors", "worker_errors"),
        "Sends without a response, by kind (connect, timeout, reset, other).",
    );
    let mut sent_bytes = Family::counter(pick("replay_sent", "worker_sent"), "Request bytes sent.").unit(Unit::Bytes);
    let mut received_bytes =
        Family::counter(pick("replay_received", "worker_received"), "Response body bytes received.").unit(Unit::Bytes);
    let mut read = Family::counter(pick("replay_records_read", "worker_records_read"), "Records read from the log.");
    let mut skipped = Family::counter(
        pick("replay_records_skipped", "worker_records_skipped"),
        "Records read that were not a replayable request.",
    );
    let mut in_flight = Family::gauge(pick("replay_in_flight", "worker_in_flight"), "Requests awaiting a response.");
    let mut latency = Family::histogram(
        pick("replay_latency", "worker_latency"),
        "Time from a request's due time to its response (no coordinated omission).",
    );
    let mut lag = Family::histogram(pick("replay_lag", "worker_lag"), "How late requests left after their due time.");
    for ((replay, worker), s) in series {
        let labels = || vec![("replay", replay.clone()), ("worker", worker.clone())];
        let with = |key: &'static str, value: &str| [labels(), vec![(key, value.to_string())]].concat();
        sent.sample(labels(), Counter(s.sent));
        for (class, n) in CLASSES.iter().zip(s.status) {
            responses.sample(with("class", class), Counter(n));
        }
        for (kind, n) in ERROR_KINDS.iter().zip(s.errors) {
            errors.sample(with("kind", kind), Counter(n));
        }
        sent_bytes.sample(labels(), Counter(s.sent_bytes));
        received_bytes.sample(labels(), Counter(s.received_bytes));
        read.sample(labels(), Counter(s.read));
        skipped.sample(labels(), Counter(s.skipped));
        in_flight.sample(labels(), Gauge(s.in_flight as f64));
        let buckets = |h: &Option<hdrhistogram::Histogram<u64>>| h.as_ref().map(Buckets::from_hdr).unwrap_or_default();
        latency.sample(labels(), Histogram(buckets(&s.latency)));
        lag.sample(labels(), Histogram(buckets(&s.lag)));
    }
    vec![sent, responses, errors, sent_bytes, received_bytes, read, skipped, in_flight, latency, lag]
}

/// Whether a replay that finished at `finished_ms` (if it did) is still exported at
/// `now_ms`: a live one always, a finished one for `linger`.
pub fn exported(finished_ms: Option<i64>, now_ms: i64, linger: Duration) -> bool {
    finished_ms.is_none_or(|at| now_ms - at < linger.as_millis() as i64)
}

/// Serves `render(format)` on `/metrics` (404 elsewhere) until `stop` resolves.
pub async fn serve<R, S>(listener: tokio::net::TcpListener, render: R, stop: S)
where
    R: Fn(Format) -> String + Clone + Send + Sync + 'static,
    S: Future<Output = ()>,
{
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot accept a connection");
                // Out of file descriptors, say: let some close rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let accept = request.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok());
                let response = respond(request.uri().path(), Format::negotiate(accept), &render);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

fn respond(path: &str, format: Format, render: &impl Fn(Format) -> String) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (hyper::StatusCode::OK, format.content_type(), render(format)),
        _ => (hyper::StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found: metrics are on /metrics\n".into()),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    use super::*;

    fn hdr(values_us: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        values_us.iter().for_each(|v| h.record(*v).unwrap());
        h
    }

    fn encoded(values_us: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        V2Serializer::new().serialize(&hdr(values_us), &mut out).unwrap();
        out
    }

    #[test]
    fn hdr_values_land_in_second_buckets() {
        // 50 µs, 100 µs (on the bound: le="0.0001"), 3 ms, 20 s (past 10 s: +Inf only).
        let b = Buckets::from_hdr(&hdr(&[50, 100, 3_000, 20_000_000]));
        assert_eq!(b.count, 4);
        let cumulative: Vec<(f64, u64)> =
            b.buckets().iter().scan(0, |sum, (le, n)| Some((*le, *sum + n)).inspect(|(_, c)| *sum = *c)).collect();
        assert_eq!(cumulative[0], (0.0001, 2));
        assert_eq!(cumulative[5], (0.005, 3), "3 ms is within 5 ms");
        assert_eq!(cumulative[4], (0.0025, 2), "but not within 2.5 ms");
        assert_eq!(cumulative[15], (10.0, 3));
        assert_eq!(cumulative[16], (f64::INFINITY, 4));
        assert!((b.sum_s - 20.00315).abs() < 0.02, "{}", b.sum_s);
    }

    #[test]
    fn reports_add_up_per_worker_and_encode_in_both_formats() {
        let report = |sent: u64, lag_us: &[u64]| WorkerStats {
            sent,
            status_2xx: sent - 1,
            status_5xx: 1,
            errors_reset: 2,
            bytes_sent: 100 * sent,
            latency_us_total: encoded(&[1_000]),
            lag_us_total: encoded(lag_us),
            ..Default::default()
        };
        let mut series = BTreeMap::new();
        let mut w1 = ReplaySeries::default();
        // Two parts of one worker, and a light report (no histograms).
        w1.add(&report(3, &[10, 20, 30]));
        w1.add(&report(2, &[40, 2_000_000]));
        w1.add(&WorkerStats { sent: 1, status_2xx: 1, light: true, ..Default::default() });
        series.insert(("rep-1".to_string(), "w1".to_string()), w1);
        let text = render(replay_families(Exporter::Controller, &series), Format::OpenMetrics);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has("# TYPE reprise_replay_sent counter");
        has("# HELP reprise_replay_sent Requests sent.");
        has(r#"reprise_replay_sent_total{replay="rep-1",worker="w1"} 6"#);
        has(r#"reprise_replay_responses_total{replay="rep-1",worker="w1",class="2xx"} 4"#);
        has(r#"reprise_replay_responses_total{replay="rep-1",worker="w1",class="5xx"} 2"#);
        has(r#"reprise_replay_errors_total{replay="rep-1",worker="w1",kind="reset"} 4"#);
        has(r#"reprise_replay_errors_total{replay="rep-1",worker="w1",kind="connect"} 0"#);
        has(r#"reprise_replay_sent_bytes_total{replay="rep-1",worker="w1"} 500"#);
        has("# TYPE reprise_replay_lag_seconds histogram");
        has("# UNIT reprise_replay_lag_seconds seconds");
        has(r#"reprise_replay_lag_seconds_count{replay="rep-1",worker="w1"} 5"#);
        has(r#"reprise_replay_lag_seconds_bucket{le="0.0001",replay="rep-1",worker="w1"} 4"#);
        has(r#"reprise_replay_lag_seconds_bucket{le="2.5",replay="rep-1",worker="w1"} 5"#);
        has(r#"reprise_replay_latency_seconds_count{replay="rep-1",worker="w1"} 2"#);
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The same samples in the Prometheus text format, named as stored.
        let plain = render(replay_families(Exporter::Controller, &series), Format::Prometheus);
        let has = |line: &str| assert!(plain.lines().any(|l| l == line), "no {line:?} in\n{plain}");
        has("# TYPE reprise_replay_sent_total counter");
        has(r#"reprise_replay_sent_total{replay="rep-1",worker="w1"} 6"#);
        has("# TYPE reprise_replay_lag_seconds histogram");
        has(r#"reprise_replay_lag_seconds_bucket{replay="rep-1",worker="w1",le="2.5"} 5"#);
        assert!(!plain.contains("# EOF") && !plain.contains("# UNIT"), "{plain}");
        let worker = render(replay_families(Exporter::Worker, &series), Format::OpenMetrics);
        assert!(worker.contains(r#"reprise_worker_sent_total{replay="rep-1",worker="w1"} 6"#), "{worker}");
        assert!(!worker.contains("reprise_replay_"), "a worker's names differ from the cluster's: {worker}");
    }

    #[test]
    fn finished_replays_linger_then_go() {
        let linger = Duration::from_secs(120);
        assert!(exported(None, 1_000_000, linger), "a live replay");
        assert!(exported(Some(1_000), 120_999, linger));
        assert!(!exported(Some(1_000), 121_000, linger));
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        // What Prometheus sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }

    #[tokio::test]
    async fn only_metrics_is_served_in_the_format_asked_for() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let render = |format| render(vec![Family::gauge("up_test", "A test gauge.").single(Value::Gauge(1.0))], format);
        let server = tokio::spawn(serve(listener, render, std::future::pending()));
        let get = |path: &'static str, accept: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        for format in [Format::OpenMetrics, Format::Prometheus] {
            let accept = if format == Format::OpenMetrics { "application/openmetrics-text" } else { "*/*" };
            let metrics = get("/metrics", accept).await;
            assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
            let content_type = format!("content-type: {}", format.content_type());
            assert!(metrics.to_lowercase().contains(&content_type), "{metrics}");
            assert!(metrics.contains("# HELP reprise_up_test A test gauge."), "{metrics}");
            assert_eq!(metrics.contains("# EOF"), format == Format::OpenMetrics, "{metrics}");
        }
        for elsewhere in ["/", "/metrics/x", "/healthz"] {
            let response = get(elsewhere, "*/*").await;
            assert!(response.starts_with("HTTP/1.1 404"), "{elsewhere}: {response}");
        }
        server.abort();
    }
}
