//! Access logs end to end: two real nginx servers on loopback, hit by real clients
//! (curl, ab, python3's urllib) over a few seconds, write their access logs (combined,
//! common and JSON); the combined logs, concatenated, are imported as a recording of
//! their own and replayed at their original pace through an in-process cluster to an
//! origin that notes every request in arrival order. On the real broker and etcd
//! (`kafka_etcd::*`) and on the file twins (`file::*`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reprise_capture::CaptureConfig;
use reprise_capture::access_log::Format;
use reprise_loadtests::cluster::{TestCluster, replay_request};
use reprise_proto::v1::{HttpProtocol, ReplayState};
use tokio_util::sync::CancellationToken;

use crate::common::{Origin, read_log};
use reprise_loadtests::nginx::{AccessLogs, Nginx};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs a client to its end; panics with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn curl(url: &str, extra: &[&str]) {
    let mut args = vec!["-sS", "-g", "--path-as-is", "-o", "/dev/null", "--fail"];
    args.extend_from_slice(extra);
    args.push(url);
    run("curl", &args);
}

fn python_get(url: &str, agent: &str, referer: &str) {
    let script = "import sys, urllib.request\n\
                  r = urllib.request.Request(sys.argv[1], headers={'User-Agent': sys.argv[2], 'Referer': sys.argv[3]})\n\
                  urllib.request.urlopen(r, timeout=10).read()\n";
    run("python3", &["-c", script, url, agent, referer]);
}

/// Sleeps into the next second (access logs have one-second resolution).
fn next_second() {
    let into = reprise_store::now_ns() % 1_000_000_000;
    std::thread::sleep(Duration::from_nanos((1_100_000_000 - into) as u64));
}

/// Real clients against `a` and `b` over three seconds.
fn traffic(a: &str, b: &str) {
    curl(
        &format!("{a}/shop/items?id=1&sort=price"),
        &["-A", "Mozilla/5.0 (reprise test)", "-e", "https://ref.example/a?b=c"],
    );
    curl(&format!("{a}/search?q=caf%C3%A9+au+lait&page=2"), &[]);
    python_get(
        &format!("{b}/py/report?from=2024-01-01T00:00:00Z&tz=%2B02:00"),
        "reprise-python",
        "http://ref.example/",
    );
    next_second();
    run("ab", &["-q", "-n", "20", "-c", "4", &format!("{a}/ab/bench?n=20")]);
    curl(
        &format!("{b}/api/orders?src=curl"),
        &["-X", "POST", "-d", "{\"n\":1}", "-H", "Content-Type: application/json"],
    );
    curl(&format!("{b}/health"), &["-I"]);
    run("ab", &["-q", "-n", "10", "-c", "2", &format!("{b}/ab/other")]);
    next_second();
    python_get(&format!("{a}/py/later?x=1"), "reprise-python", "-");
    curl(&format!("{b}/a/b;jsessionid=XYZ/c?list=1,2,3&t=a:b@c&e="), &["-A", "curl-late"]);
}

/// The requests of a combined log, (second, method, target), by the test's own reading.
fn logged_requests(path: &Path) -> Vec<(i64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let stamp = &line[line.find('[').unwrap() + 1..line.find(']').unwrap()];
            let second = reprise_capture::access_log::time::parse_clf(stamp).unwrap() / 1_000_000_000;
            let request = line.split('"').nth(1).unwrap();
            let mut parts = request.split(' ');
            (second, parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
        })
        .collect()
}

/// Imports access logs; with a catalog, as a recording of their own.
async fn import(
    paths: Vec<PathBuf>,
    format: Format,
    log: &str,
    catalog: Option<&str>,
    spool: &Path,
) -> reprise_capture::CaptureReport {
    let mut config = CaptureConfig::for_log(log);
    config.access_log = paths;
    config.access.access_log_format = format;
    config.node = Some("logs".into());
    config.spool_dir = Some(spool.to_path_buf());
    config.catalog = catalog.map(str::to_string);
    config.recording = catalog.map(|_| "nginx".to_string());
    reprise_capture::run(config, CancellationToken::new()).await.unwrap()
}

/// Whether `arrivals` can be in the order of their seconds: each (method, target) may
/// have been logged in several seconds (ab's requests straddle one), so the check is a
/// greedy assignment of each arrival to the earliest second still possible.
fn in_second_order(arrivals: &[(String, String)], expected: &[(i64, String, String)]) -> Result<(), String> {
    let mut current = i64::MIN;
    for (i, (method, target)) in arrivals.iter().enumerate() {
        let seconds: Vec<i64> =
            expected.iter().filter(|(_, m, t)| m == method && t == target).map(|(s, _, _)| *s).collect();
        let fits = seconds.iter().copied().filter(|s| *s >= current).min();
        current = fits.ok_or_else(|| format!("arrival {i} ({method} {target}) came after second {current}"))?;
    }
    Ok(())
}

async fn two_nginx_logs_replay_in_timestamp_order(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| Nginx::start(&dir.path().join(name), AccessLogs::AllFormats, HttpProtocol::Http1).unwrap();
    let (a, b) = (start("a"), start("b"));
    let (url_a, url_b) = (a.url(), b.url());
    tokio::task::spawn_blocking(move || traffic(&url_a, &url_b)).await.unwrap();
    let logs = [a.stop(), b.stop()];
    let all = dir.path().join("all.log");
    let mut text = std::fs::read_to_string(logs[0].join("combined.log")).unwrap();
    text.push_str(&std::fs::read_to_string(logs[1].join("combined.log")).unwrap());
    std::fs::write(&all, text).unwrap();
    let mut expected = logged_requests(&all);
    expected.sort_by_key(|(second, _, _)| *second);
    let n = expected.len() as u64;
    assert!(n >= 30 && expected.first().unwrap().0 < expected.last().unwrap().0, "{expected:?}");

    let cluster = TestCluster::start(kind, "logs", 3, |_| {}).await.unwrap();
    let report = import(vec![all], Format::Combined, &cluster.log_url, Some(&cluster.catalog_url), dir.path()).await;
    assert_eq!((report.requests, report.records_stored, report.unparseable_lines), (n, n, 0));
    let recording_id = report.recording_id.expect("the import made a recording");

    let origin = Origin::start().await;
    let id = cluster.replay(replay_request(&recording_id, &origin.url(), 1)).await.unwrap();
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!((status.state(), status.sent, status.ok), (ReplayState::Done, n, n), "{status:?}");
    let arrivals: Vec<(String, String)> = origin.seen().into_iter().map(|s| (s.method, s.target)).collect();
    let mut got = arrivals.clone();
    got.sort();
    let mut want: Vec<(String, String)> = expected.iter().map(|(_, m, t)| (m.clone(), t.clone())).collect();
    want.sort();
    assert_eq!(got, want, "every request once, method and target byte for byte");
    in_second_order(&arrivals, &expected).unwrap();
    // Original pace: the last second's requests are due (last - first) s after the start.
    let span_s = (expected.last().unwrap().0 - expected[0].0) as f64;
    assert!(status.duration_s >= span_s - 0.5, "{} s for a span of {span_s} s", status.duration_s);
    cluster.stop().await;

    // The same traffic in nginx's common and JSON formats gives the same requests.
    for (file, format) in [("common.log", Format::Common), ("json.log", Format::Json)] {
        let log = format!("file://{}/{file}-import", dir.path().display());
        let paths = logs.iter().map(|l| l.join(file)).collect();
        let report = import(paths, format, &log, None, dir.path()).await;
        assert_eq!((report.records_stored, report.unparseable_lines), (n, 0), "{file}");
        let mut records: Vec<(String, String)> = read_log(&log)
            .await
            .iter()
            .map(|r| {
                let line =
                    String::from_utf8_lossy(&r.http[..r.http.iter().position(|&c| c == b'\r').unwrap()]).into_owned();
                let mut parts = line.split(' ');
                (parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
            })
            .collect();
        records.sort();
        assert_eq!(records, want, "{file}");
    }
}

reprise_store::on_backends!(
    [kafka_etcd => "kafka_etcd", file => "file"]
    [two_nginx_logs_replay_in_timestamp_order]
);
