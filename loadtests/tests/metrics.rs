//! Prometheus metrics as a scraper sees them, from real processes on a private etcd and
//! broker: a controller and two workers serving `--metrics`, and a capture node on the
//! loopback interface (root, pcap). Needs the binaries built and promtool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reprise_loadtests::cluster::replay_request;
use reprise_loadtests::procs::{self, ProcessCluster, ProcessClusterConfig};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::ReplayState;

const LIMIT: Duration = Duration::from_secs(60);
/// The controller's `--metrics-linger-secs`.
const LINGER_SECS: u64 = 15;

/// What Prometheus sends as `Accept`: OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `GET path` on `addr` as Prometheus asks: the status, the Content-Type and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    get_accepting(addr, path, PROMETHEUS_ACCEPT).await
}

async fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    let got = reprise_loadtests::http::get(addr, path, &[("Accept", accept)]).await.unwrap();
    (got.status, got.header("content-type").unwrap_or_default(), got.body)
}

/// The samples of an OpenMetrics text: `name{labels}` → value, labels as written.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, v)| v)
        .sum()
}

/// The names a scraper stores from an OpenMetrics text: a counter's with `_total`, a
/// histogram's `_bucket`, `_sum` and `_count`, others as typed.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(typed) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = typed.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

/// Every `reprise_...` name a deploy file uses.
fn names_used(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("reprise_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Lints the Prometheus text format of `addr`'s metrics with `promtool check metrics`
/// (Debian `prometheus`): it parses, and its names follow the conventions (`_total`
/// counters, units, help texts).
async fn promtool_check(what: &str, addr: SocketAddr) {
    let (code, content_type, text) = get_accepting(addr, "/metrics", "*/*").await;
    assert_eq!((code, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"), "{what}");
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (deploy/local/setup.sh installs it)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool on {what}'s metrics: {said}\n{text}");
}

/// Checks one histogram's series: buckets never decrease, +Inf equals the count.
fn check_histogram(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)], count: f64) {
    assert_eq!(sum(samples, &format!("{name}_count"), labels), count, "{name} {labels:?}");
    let bucket = |le: &str| sum(samples, &format!("{name}_bucket"), &[labels, &[("le", le)]].concat());
    assert_eq!(bucket("+Inf"), count, "{name} {labels:?}");
    let bounds = reprise_process::metrics::BUCKETS_S.map(|b| format!("{b:?}"));
    let cumulative: Vec<f64> = bounds.iter().map(|le| bucket(le)).collect();
    assert!(cumulative.windows(2).all(|w| w[0] <= w[1]), "{name} {labels:?}: {cumulative:?}");
    assert!(cumulative.last().is_some_and(|c| *c <= count));
}

/// A replay of 400 requests over two workers: the controller's series count every send
/// per worker, with status-class and error-kind labels, as histograms in seconds
/// whose `_count` is the number of sends (lag) and of responses (latency); each worker
/// exports its own share; the capture node's endpoint answers only `/metrics`, with HELP
/// lines; every metric the alert rules and the Grafana dashboard use is exported by
/// one of them; and once the replay has ended, its series stay for the linger time,
/// then go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_every_send_per_worker_and_expire_after_the_replay() {
    let config = ProcessClusterConfig {
        worker_metrics: true,
        controller_flags: vec!["--metrics-linger-secs".into(), LINGER_SECS.to_string()],
        ..ProcessClusterConfig::new("metrics", 1, 2)
    };
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let capture_port = procs::free_ports(2).unwrap();
    let capture_http = SocketAddr::from(([127, 0, 0, 1], capture_port[1]));
    let mut capture = Command::new(procs::binary("reprise-capture").unwrap())
        .args(["--interface", "lo", "--port", &capture_port[0].to_string(), "--log", &cluster.log_url])
        .args(["--http", &capture_http.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let n = 400;
    let profile = Profile::constant(n, reprise_store::now_ns() - 60_000_000_000, 2_000_000_000, 8, 16);
    let recording = cluster.record(&profile).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!((status.state(), status.sent, status.ok), (ReplayState::Done, n, n), "{status:?}");
    let finished_at_ms = status.finished_at_ms.unwrap();

    let http = cluster.controllers[0].http_addr().unwrap();
    let (code, content_type, text) = get(http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let controller = samples(&text);
    assert_eq!(sum(&controller, "reprise_controller_leader", &[]), 1.0, "{text}");
    assert_eq!(sum(&controller, "reprise_workers", &[]), 2.0);
    assert_eq!(sum(&controller, "reprise_replays_running", &[]), 0.0);
    let replay = [("replay", id.as_str())];
    assert_eq!(sum(&controller, "reprise_replay_qps", &replay), 0.0, "an ended replay's rate is 0");
    assert_eq!(sum(&controller, "reprise_replay_sent_total", &replay), n as f64, "{text}");
    assert_eq!(sum(&controller, "reprise_replay_responses_total", &[replay[0], ("class", "2xx")]), n as f64);
    assert_eq!(sum(&controller, "reprise_replay_errors_total", &replay), 0.0);
    assert!(
        text.contains(&format!(
            "reprise_replay_errors_total{{replay=\"{id}\",worker=\"worker-0\",kind=\"connect\"}} 0"
        ))
    );
    assert!(sum(&controller, "reprise_replay_sent_bytes_total", &replay) > 0.0);
    let mut worker_sends = 0.0;
    for worker in &cluster.workers {
        let labels = [replay[0], ("worker", worker.label())];
        let sent = sum(&controller, "reprise_replay_sent_total", &labels);
        assert!(sent > 0.0, "worker {} sent nothing: {text}", worker.label());
        worker_sends += sent;
        for class in ["1xx", "3xx", "4xx", "5xx"] {
            assert_eq!(
                sum(&controller, "reprise_replay_responses_total", &[labels[0], labels[1], ("class", class)]),
                0.0
            );
        }
        let answered = sum(&controller, "reprise_replay_responses_total", &labels);
        assert_eq!(answered, sent, "every send of worker {} was answered", worker.label());
        check_histogram(&controller, "reprise_replay_lag_seconds", &labels, sent);
        check_histogram(&controller, "reprise_replay_latency_seconds", &labels, answered);

        // The worker's own endpoint: its share, under names of its own.
        let (code, content_type, own) = get(worker.http_addr().unwrap(), "/metrics").await;
        assert_eq!(code, 200);
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        let own_samples = samples(&own);
        assert_eq!(sum(&own_samples, "reprise_worker_sent_total", &labels), sent, "{own}");
        check_histogram(&own_samples, "reprise_worker_lag_seconds", &labels, sent);
        assert!(!own.contains("reprise_replay_"), "{own}");
        assert_eq!(get(worker.http_addr().unwrap(), "/").await.0, 404);
    }
    assert_eq!(worker_sends, n as f64);

    // The capture's endpoint: only /metrics, typed and explained.
    let mut capture_text = String::new();
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(capture_http).await {
            drop(stream);
            let (code, content_type, body) = get(capture_http, "/metrics").await;
            assert_eq!(code, 200);
            assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
            capture_text = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(capture_text.contains("# HELP reprise_capture_kernel_drops "), "{capture_text}");
    assert_eq!(get(capture_http, "/anything").await.0, 404);

    promtool_check("the controller", http).await;
    promtool_check("a worker", cluster.workers[0].http_addr().unwrap()).await;
    promtool_check("the capture", capture_http).await;
    let _ = capture.kill();
    let _ = capture.wait();

    // Every name the rules and the dashboard use is exported.
    let worker_text = get(cluster.workers[0].http_addr().unwrap(), "/metrics").await.2;
    let exported: BTreeSet<String> =
        [&text, &worker_text, &capture_text].into_iter().flat_map(|t| exported_names(t)).collect();
    for file in ["deploy/prometheus/rules.yml", "deploy/grafana/reprise.json"] {
        let used = names_used(file);
        assert!(!used.is_empty(), "{file} uses no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} uses metrics nobody exports: {unknown:?}; exported: {exported:?}");
    }

    // Scraped at once, the series were there (above); they go after the linger time.
    let deadline = Instant::now() + LIMIT;
    loop {
        let (_, _, text) = get(http, "/metrics").await;
        let now_ms = reprise_store::now_ms();
        if !text.contains(&id) {
            assert!(now_ms - finished_at_ms >= (LINGER_SECS * 1000) as i64, "gone before the linger time");
            assert!(text.contains("reprise_replay_sent "), "the families stay, empty: {text}");
            break;
        }
        assert!(Instant::now() < deadline, "replay {id}'s series still exported: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
