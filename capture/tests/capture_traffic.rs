//! Capture on real traffic: a real HTTP server on 127.0.0.1 and real clients, captured
//! live on `lo` into the real broker (`kafka::*`) and into the file log (`file::*`); the
//! same traffic from a tcpdump file; and cleartext HTTP/2.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reprise_capture::CaptureConfig;
use reprise_proto::v1::{HttpProtocol, MessageKind};
use tokio_util::sync::CancellationToken;

struct Setup {
    log_url: String,
    dir: tempfile::TempDir,
}

fn setup(kind: &str, name: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    Setup { log_url: common::log_url(kind, &dir, name), dir }
}

fn config(setup: &Setup, port: u16) -> CaptureConfig {
    let mut config = CaptureConfig::for_log(&setup.log_url);
    config.port = vec![port];
    config.track_responses = true;
    config.node = Some("test".into());
    config.spool_dir = Some(setup.dir.path().join("spool"));
    config
}

/// Captures live on `lo` while `traffic` runs against the test server; the capture's
/// report, with its setup and the server.
async fn capture_live<F: std::future::Future<Output = ()>>(
    kind: &str,
    name: &str,
    traffic: impl FnOnce(std::net::SocketAddr) -> F,
) -> (Setup, common::Server, reprise_capture::CaptureReport) {
    let setup = setup(kind, name);
    let server = common::server().await;
    let mut config = config(&setup, server.addr.port());
    config.interface = Some("lo".into());
    let shutdown = CancellationToken::new();
    // A failing client must fail the test, not leave the capture running forever.
    let _stop_on_panic = shutdown.clone().drop_guard();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let capture = tokio::spawn(reprise_capture::run_notify(config, shutdown.clone(), Some(ready_tx)));
    ready.await.expect("capture must start");

    traffic(server.addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let report = capture.await.unwrap().unwrap();
    (setup, server, report)
}

async fn live_capture_on_loopback_stores_every_request_once(kind: &str) {
    let (setup, server, report) = capture_live(kind, "live", common::send_traffic).await;

    let records = common::read_log(&setup.log_url).await;
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 15);
    common::assert_same_requests(&records, &seen, &common::REDACTED);
    common::grep_stored_log(&setup.log_url, &["/with-cookie", "Cookie: [REDACTED]"], &common::SECRETS).await;
    assert_eq!(report.requests, 15);
    assert_eq!(report.records_stored, records.len() as u64);
    assert_eq!(report.records_dropped, 0);
}

async fn a_tcpdump_file_gives_the_same_records(kind: &str) {
    let setup = setup(kind, "pcap");
    let server = common::server().await;
    let pcap = setup.dir.path().join("traffic.pcap");
    let mut tcpdump = std::process::Command::new("tcpdump")
        .args(["-i", "lo", "-U", "--immediate-mode", "-s", "0", "-w"])
        .arg(&pcap)
        .arg(format!("tcp port {}", server.addr.port()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump must be installed (deploy/local/setup.sh)");
    // tcpdump says "listening on" once it captures.
    let stderr = tcpdump.stderr.take().unwrap();
    let listening = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        lines.any(|l| l.is_ok_and(|l| l.contains("listening on")))
    });
    assert!(listening.await.unwrap(), "tcpdump did not start");
    common::send_traffic(server.addr).await;
    // On SIGINT tcpdump drops what it has not yet read from the kernel, and on a busy
    // machine it can lag by seconds: stop it only once every response (the last packets
    // with data) is in the file.
    let answered = server.seen.lock().unwrap().len();
    let mut written = 0;
    for _ in 0..200 {
        let bytes = std::fs::read(&pcap).unwrap_or_default();
        written = bytes.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
        if written >= answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written >= answered, "tcpdump wrote {written} of {answered} responses in 20 s");
    let _ = std::process::Command::new("kill").args(["-INT", &tcpdump.id().to_string()]).status();
    tcpdump.wait().unwrap();

    let mut config = config(&setup, server.addr.port());
    config.pcap_file = Some(pcap);
    let report = reprise_capture::run(config.clone(), CancellationToken::new()).await.unwrap();
    let records = common::read_log(&setup.log_url).await;
    common::assert_same_requests(&records, &server.seen.lock().unwrap(), &common::REDACTED);
    common::grep_stored_log(&setup.log_url, &["/with-cookie", "Cookie: [REDACTED]"], &common::SECRETS).await;
    assert_eq!(report.requests, 15);

    // Again as a recording of its own: the same records, in a topic of their own.
    let catalog_url = format!("file://{}/catalog", setup.dir.path().display());
    config.catalog = Some(catalog_url.clone());
    config.recording = Some("from-pcap".into());
    let report = reprise_capture::run(config.clone(), CancellationToken::new()).await.unwrap();
    let catalog = reprise_store::Catalog::open(&catalog_url).await.unwrap();
    let id = report.recording_id.expect("a recording id");
    let recording = catalog.get::<reprise_store::schema::Recording>(&id).await.unwrap().unwrap().value;
    assert_eq!(recording.record_count, records.len() as u64);
    assert_eq!(recording.labels.get("import").map(String::as_str), Some("pcap"));
    common::grep_stored_log(&recording.log_url, &["/with-cookie"], &common::SECRETS).await;
    let mut again = common::read_log(&recording.log_url).await;
    let mut first = records;
    for list in [&mut again, &mut first] {
        list.sort_by(|a, b| (a.timestamp_ns, &a.http).cmp(&(b.timestamp_ns, &b.http)));
    }
    assert_eq!(again.iter().map(|r| &r.http).collect::<Vec<_>>(), first.iter().map(|r| &r.http).collect::<Vec<_>>());

    // The same file cut short mid-packet (tcpdump killed): everything before the cut is
    // imported, and the run still ends well.
    let pcap = config.pcap_file.clone().unwrap();
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = setup.dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10 + 3]).unwrap();
    let cut_log = format!("file://{}/cut-log", setup.dir.path().display());
    let cut_config =
        CaptureConfig { pcap_file: Some(cut), log: cut_log.clone(), catalog: None, recording: None, ..config };
    let report = reprise_capture::run(cut_config, CancellationToken::new()).await.unwrap();
    let kept = common::read_log(&cut_log).await;
    assert!(report.requests > 0 && report.requests < 15, "{report:?}");
    assert_eq!(common::requests(&kept).len() as u64, report.requests);
    let (whole, cut): (Vec<_>, Vec<_>) = common::requests(&kept).into_iter().partition(|r| !r.body_truncated);
    assert!(whole.iter().all(|r| first.iter().any(|f| f.http == r.http)), "whole requests as they were");
    assert!(cut.len() <= 1, "at most the request the cut went through, marked truncated: {}", cut.len());
}

/// curl by prior knowledge, and with an h2c upgrade (which this server declines: the
/// request stays HTTP/1.1); hyper's HTTP/2 client with concurrent calls on one
/// connection, a gRPC-shaped one among them.
async fn send_http2_traffic(addr: std::net::SocketAddr) {
    let base = format!("http://{addr}");
    let runs: Vec<Vec<String>> = vec![
        vec!["--http2-prior-knowledge".into(), format!("{base}/h2/search?q=rust")],
        vec![
            "--http2-prior-knowledge".into(),
            "-H".into(),
            "Content-Type: application/json".into(),
            "-H".into(),
            format!("Authorization: Bearer {}", common::SECRETS[1]),
            "-d".into(),
            r#"{"item":1,"qty":2}"#.into(),
            format!("{base}/h2/items"),
        ],
        vec!["--http2".into(), format!("{base}/h2c/declined")],
    ];
    common::run_curl(runs).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let requests = [
        hyper::Request::get(format!("{base}/h2/a")).body(Full::default()),
        hyper::Request::put(format!("{base}/h2/big")).body(Full::new(Bytes::from(vec![b'b'; 50_000]))),
        hyper::Request::post(format!("{base}/pkg.Greeter/SayHello"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x05\x0a\x03ann"))),
    ];
    let calls = requests.into_iter().map(|request| {
        let mut sender = sender.clone();
        async move {
            let response = sender.send_request(request.unwrap()).await.unwrap();
            response.into_body().collect().await.unwrap();
        }
    });
    futures::future::join_all(calls).await;
    drop(sender);
    connection.await.unwrap().unwrap();
}

async fn live_http2_capture_stores_every_request_once(kind: &str) {
    let (setup, server, report) = capture_live(kind, "live-h2", send_http2_traffic).await;

    let records = common::read_log(&setup.log_url).await;
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    common::assert_same_requests(&records, &seen, &common::REDACTED);
    common::grep_stored_log(&setup.log_url, &["/h2/items", "authorization: [REDACTED]"], &common::SECRETS).await;
    let http2: Vec<_> = records.iter().filter(|r| r.protocol() == HttpProtocol::Http2).collect();
    assert_eq!(http2.len(), 2 * 5, "every message but the declined upgrade's two");
    assert!(http2.iter().all(|r| r.format_version == 2));
    let grpc = http2.iter().find(|r| r.kind() == MessageKind::Response && !r.trailers.is_empty()).expect("gRPC");
    assert_eq!(&grpc.trailers[..], b"grpc-status: 0\r\n");
    assert_eq!((report.requests, report.h2_connections, report.h2_mid_stream, report.h2_errors), (6, 3, 0, 0));
}

reprise_store::on_backends!(
    [kafka => "kafka", file => "file"]
    [
        live_capture_on_loopback_stores_every_request_once,
        a_tcpdump_file_gives_the_same_records,
        live_http2_capture_stores_every_request_once
    ]
);

/// The daemon on an idle interface stops promptly on SIGTERM and reports what it did.
#[test]
fn the_daemon_stops_on_a_signal_even_when_idle() {
    for (signal, catalog) in [("-TERM", false), ("-INT", true)] {
        let dir = tempfile::tempdir().unwrap();
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reprise-capture"));
        command.args(["--interface", "lo", "--port", &unused.to_string(), "--log"]);
        command.arg(format!("file://{}/log", dir.path().display())).arg("--spool-dir").arg(dir.path().join("spool"));
        if catalog {
            // Registered in a catalog, it once panicked on Ctrl-C (a catalog call cut off
            // by the runtime's shutdown).
            command.arg("--catalog").arg(format!("file://{}/catalog", dir.path().display()));
        }
        let mut daemon =
            command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let _ = std::process::Command::new("kill").args([signal, &daemon.id().to_string()]).status();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = daemon.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "capture did not stop on {signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut report, mut stderr) = (String::new(), String::new());
        std::io::Read::read_to_string(daemon.stdout.as_mut().unwrap(), &mut report).unwrap();
        std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "{signal}: {stderr}");
        assert!(!stderr.contains("panicked"), "{signal}: {stderr}");
        assert!(report.contains("\"requests\":0"), "{report}");
    }
}

#[test]
fn bad_arguments_are_one_clear_error() {
    let run =
        |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_reprise-capture")).args(args).output().unwrap();
    let none = run(&["--log", "file:///tmp/reprise-unused-log"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("nothing to capture"));
    let both = run(&["--log", "file:///tmp/x", "--interface", "lo", "--pcap-file", "f.pcap"]);
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    let no_device = run(&["--log", "file:///tmp/reprise-unused-log", "--interface", "nosuchif0"]);
    assert!(String::from_utf8_lossy(&no_device.stderr).contains("cannot capture on nosuchif0"));
    let two_inputs = run(&["--log", "file:///tmp/x", "--access-log", "a.log", "--gor-file", "f.gor"]);
    assert!(String::from_utf8_lossy(&two_inputs.stderr).contains("cannot be used with"));
    let no_catalog = run(&["--log", "file:///tmp/x", "--access-log", "a.log", "--recording", "r"]);
    assert!(String::from_utf8_lossy(&no_catalog.stderr).contains("--recording needs --catalog"));
    let live = run(&["--log", "file:///tmp/x", "--interface", "lo", "--recording", "r", "--catalog", "file:///tmp/c"]);
    assert!(String::from_utf8_lossy(&live.stderr).contains("--recording is for imports"));
    let bad_field = run(&[
        "--log",
        "file:///tmp/reprise-unused-log",
        "--access-log",
        "/nonexistent.log",
        "--access-log-field",
        "colour=c",
    ]);
    assert!(String::from_utf8_lossy(&bad_field.stderr).contains("unknown JSON field role"));
    // A broker nobody answers on: one error line, the URL without its client settings,
    // the cause said once.
    let gor = std::env::temp_dir().join(format!("reprise-empty-{}.gor", std::process::id()));
    std::fs::write(&gor, b"").unwrap();
    let dead = run(&["--log", "kafka://127.0.0.1:1/t?timeout_ms=1000", "--gor-file", gor.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&dead.stderr).trim().to_string();
    let error = stderr.lines().last().unwrap_or_default();
    assert!(error.starts_with("error: cannot create the traffic topic in kafka://127.0.0.1:1/t: kafka: "), "{stderr}");
    assert!(error.matches("(Local:").count() == 1, "{stderr}");
    // Before it, only librdkafka's own reason (connection refused), repeats suppressed.
    let reasons: Vec<&str> = stderr.lines().rev().skip(1).collect();
    assert!(reasons.len() <= 3 && reasons.iter().all(|l| l.contains("librdkafka: FAIL")), "{stderr}");
    let _ = std::fs::remove_file(gor);
}
