//! `ctl` as a user runs it, against a real controller (file catalog and file log):
//! listings, recordings, and one clear error line for every kind of wrong input.

use std::process::Command;

use bytes::Bytes;
use reprise_controller::{Controller, ControllerConfig};
use reprise_proto::v1::{MessageKind, TrafficRecord};
use reprise_store::log::NewRecord;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(controller: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ctl"))
        .arg("--controller")
        .arg(controller)
        .args(args)
        .env_remove("REPRISE_CONTROLLER")
        .output()
        .expect("ctl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A failure reported as one clear line, without a panic or a backtrace, with its exit
/// status: 2 for a usage error, 1 for anything else.
fn assert_clear_error(run: &Run, expected: &str, code: i32) {
    assert_eq!(run.code, code, "{expected:?}: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(expected), "stderr {:?} must mention {expected:?}", run.stderr);
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"), "{}", run.stderr);
}

async fn controller(dir: &std::path::Path) -> Controller {
    let (catalog, log) = (format!("file://{}/catalog", dir.display()), format!("file://{}/log", dir.display()));
    Controller::start(ControllerConfig { partitions: 2, start_lead_ms: 500, ..ControllerConfig::local(&catalog, &log) })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_manages_recordings_and_explains_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(dir.path()).await;
    let url = format!("http://{}", controller.grpc_addr);
    let ctl = |args: &[&str]| {
        let url = url.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || ctl(&url, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    let empty = ctl(&["workers", "--json"]).await.unwrap();
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&empty.stdout).unwrap(), serde_json::json!([]));

    // A recording with traffic in it.
    let started = ctl(&["record", "start", "--name", "cli", "--json"]).await.unwrap();
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id = serde_json::from_str::<serde_json::Value>(&started.stdout).unwrap()["id"].as_str().unwrap().to_string();
    let log = reprise_store::open_log(&format!("file://{}/log", dir.path().display())).await.unwrap();
    let record = TrafficRecord {
        format_version: 1,
        connection_id: "c1".into(),
        kind: MessageKind::Request as i32,
        timestamp_ns: reprise_store::now_ns(),
        http: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec().into(),
        ..Default::default()
    };
    let payload = Bytes::from(prost::Message::encode_to_vec(&record));
    log.append(vec![NewRecord { key: Bytes::from_static(b"c1"), timestamp_ms: reprise_store::now_ms(), payload }])
        .await
        .unwrap();
    let stopped = ctl(&["record", "stop", &id]).await.unwrap();
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    assert!(stopped.stdout.contains("1 records"), "{}", stopped.stdout);
    let listed = ctl(&["recordings", "--json"]).await.unwrap();
    let recordings: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(recordings[0]["id"], id.as_str());
    assert_eq!(recordings[0]["record_count"], 1);

    assert_clear_error(&ctl(&["record", "stop", &id]).await.unwrap(), "already stopped", 1);

    // Export to a GoReplay file.
    let gor = dir.path().join("out.gor");
    let exported = ctl(&["export", "--recording", &id, "--gor", gor.to_str().unwrap()]).await.unwrap();
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let file = std::fs::read(&gor).unwrap();
    let messages: Vec<_> = reprise_store::gor::GorReader::new(&file[..]).map(Result::unwrap).collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].http, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_clear_error(
        &ctl(&["export", "--recording", "rec-nope", "--gor", "/tmp/x.gor"]).await.unwrap(),
        "no recording rec-nope",
        1,
    );
    let target = "http://127.0.0.1:9";
    assert_clear_error(&ctl(&["replay", "--recording", &id, "--target", target]).await.unwrap(), "no live workers", 1);
    assert_clear_error(
        &ctl(&["replay", "--recording", "rec-nope", "--target", target]).await.unwrap(),
        "no recording rec-nope",
        1,
    );
    assert_clear_error(
        &ctl(&["replay", "--recording", &id, "--target", "ftp://x"]).await.unwrap(),
        "is not a target",
        2,
    );
    assert_clear_error(&ctl(&["status", "rep-nope"]).await.unwrap(), "no replay rep-nope", 1);
    let http = format!("http://{}", controller.http_addr);
    let at_http = tokio::task::spawn_blocking(move || crate::ctl(&http, &["workers"])).await.unwrap();
    assert_clear_error(&at_http, "answers HTTP but not gRPC", 1);
    for (flag, value, says) in [
        ("--target", "http://", "is not a target"),
        ("--target", "staging:8080", "is not a target"),
        ("--multiple", "-1", "is not a multiple"),
        ("--rate", "-5", "is not a rate"),
        ("--max-error-rate", "-0.1", "is not a share"),
    ] {
        let mut args = vec!["replay", "--recording", &id, flag, value];
        if flag != "--target" {
            args.extend(["--target", target]);
        }
        assert_clear_error(&ctl(&args).await.unwrap(), says, 2);
    }
    assert_clear_error(
        &ctl(&["replay", "--recording", &id, "--target", target, "--rate=-5"]).await.unwrap(),
        "not a rate",
        2,
    );
    assert_clear_error(
        &ctl(&["replay", "--recording", &id, "--target", target, "--max-error-rate", "5"]).await.unwrap(),
        "not a share",
        2,
    );
    assert_clear_error(
        &ctl(&["replay", "--recording", &id, "--target", target, "--speed", "0"]).await.unwrap(),
        "--speed",
        2,
    );
    assert_clear_error(
        &ctl(&["replay", "--recording", &id, "--target", target, "--multiple", "0"]).await.unwrap(),
        "--multiple",
        2,
    );
    assert_clear_error(&ctl(&["replay", "--target", target]).await.unwrap(), "--recording", 2);
    assert_clear_error(
        &ctl(&["record", "cut", "--name", "w", "--from", "-1m", "--to", "-2m"]).await.unwrap(),
        "must be before",
        2,
    );
    assert_clear_error(
        &ctl(&["record", "cut", "--name", "w", "--from", "yesterday", "--to", "now"]).await.unwrap(),
        "not a time",
        2,
    );
    controller.shutdown().await;
}

/// A server that accepts connections and never answers: ctl gives up after its timeout.
#[test]
fn a_silent_controller_is_one_clear_line_after_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || listener.incoming().take(2).map(Result::unwrap).collect::<Vec<_>>());
    let started = std::time::Instant::now();
    let run = ctl(&url, &["--timeout-secs", "2", "workers"]);
    assert_clear_error(&run, "no answer within 2 s", 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "bounded: {:?}", started.elapsed());
    drop(held);
}

#[test]
fn an_unreachable_controller_is_one_clear_line() {
    let run = ctl("http://127.0.0.1:9", &["workers"]);
    assert_clear_error(&run, "cannot reach the controller at http://127.0.0.1:9", 1);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert_clear_error(&ctl("not a url", &["workers"]), "not a controller URL", 2);
}

/// Sends `n` HTTP/1.1 GETs to `addr` on one keep-alive connection, reading each answer.
async fn get_times(addr: std::net::SocketAddr, path: &str, n: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..n {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let read = stream.read(&mut buf).await.unwrap();
        assert!(read > 0 && buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..read]));
    }
}

/// `ctl captures` lists the live capture nodes with their counters; a node that stops
/// leaves the list (its lease is revoked). Live capture on lo needs root or CAP_NET_RAW.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_live_capture_nodes_with_their_counters() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(dir.path()).await;
    let url = format!("http://{}", controller.grpc_addr);
    let captures = || {
        let url = url.clone();
        async move {
            let run = tokio::task::spawn_blocking(move || ctl(&url, &["captures", "--json"])).await.unwrap();
            assert_eq!(run.code, 0, "{}", run.stderr);
            serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap().as_array().unwrap().clone()
        }
    };
    // Capture the controller's own stats API: real HTTP on loopback.
    let mut config = reprise_capture::CaptureConfig::for_log(&format!("file://{}/log", dir.path().display()));
    config.catalog = Some(format!("file://{}/catalog", dir.path().display()));
    config.interface = Some("lo".into());
    config.port = vec![controller.http_addr.port()];
    config.node = Some("cli-capture".into());
    let stop = tokio_util::sync::CancellationToken::new();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let capturing = tokio::spawn(reprise_capture::run_notify(config, stop.clone(), Some(ready_tx)));
    ready.await.expect("live capture on lo starts (run as root)");
    get_times(controller.http_addr, "/api/workers", 5).await;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let node = loop {
        let listed = captures().await;
        if let Some(node) = listed.iter().find(|n| n["counters"]["records"].as_u64() == Some(5)) {
            break node.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no capture node with 5 records listed: {listed:?}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!((node["id"].as_str(), node["interface"].as_str()), (Some("cli-capture"), Some("lo")));
    assert!(node["counters"]["packets"].as_u64().unwrap() >= 10, "{node}");
    let table = tokio::task::spawn_blocking({
        let url = url.clone();
        move || ctl(&url, &["captures"])
    })
    .await
    .unwrap();
    assert!(table.stdout.lines().any(|l| l.starts_with("cli-capture") && l.contains(" lo ")), "{}", table.stdout);

    stop.cancel();
    capturing.await.unwrap().unwrap();
    assert_eq!(captures().await, Vec::<serde_json::Value>::new(), "a stopped node leaves the list");
    controller.shutdown().await;
}
