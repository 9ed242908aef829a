//! A recording's ledger, with the real capture daemon on the loopback interface: what the
//! capture missed while the recording was open is stored with the recording and shown by
//! ctl. Needs root (pcap) and the binaries built.

use std::process::{Command, Stdio};
use std::time::Duration;

use reprise_loadtests::cluster::TestCluster;
use reprise_loadtests::procs;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{StartRecordingRequest, StopRecordingRequest};
use reprise_store::schema::CaptureInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `count` POSTs with `body_len`-byte bodies to `addr`, one connection each.
async fn post(addr: std::net::SocketAddr, count: usize, body_len: usize) {
    let body = "b".repeat(body_len);
    for i in 0..count {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /ledger/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

/// The capture records the loopback traffic to the cluster's sink with a tiny kernel
/// buffer and a small --max-body. While the recording is open, 20 bodies are cut, and
/// the capture is frozen while 4 MB pass, so the kernel drops packets. The stopped
/// recording's ledger says so for that node, over the whole window, with the capture's
/// own final count of kernel drops; `ctl recordings` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_s_ledger_shows_what_the_capture_missed() {
    let cluster = TestCluster::start("file", "ledger", 0, |_| {}).await.unwrap();
    let sink = cluster.cluster.sink.addr;
    let capture = Command::new(procs::binary("reprise-capture").unwrap())
        .args(["--interface", "lo", "--port", &sink.port().to_string(), "--log", &cluster.log_url])
        .args(["--catalog", &cluster.catalog_url, "--node", "cap-ledger", "--buffer-mb", "1", "--max-body", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let catalog = reprise_store::Catalog::open(&cluster.catalog_url).await.unwrap();
    let mut registered = false;
    for _ in 0..100 {
        registered = catalog.list::<CaptureInfo>().await.unwrap().iter().any(|c| c.value.id == "cap-ledger");
        if registered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(registered, "the capture node registered");

    let mut client = cluster.cluster.client().await.unwrap();
    let start =
        StartRecordingRequest { protocol_version: PROTOCOL_VERSION, name: "ledger".into(), ..Default::default() };
    let recording = client.start_recording(start).await.unwrap().into_inner();
    post(sink, 20, 5_000).await;
    signal(capture.id(), "STOP");
    post(sink, 200, 20_000).await;
    signal(capture.id(), "CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = client.stop_recording(StopRecordingRequest { id: recording.id.clone() }).await.unwrap().into_inner();

    signal(capture.id(), "INT");
    let output = tokio::task::spawn_blocking(move || capture.wait_with_output()).await.unwrap().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ledger = stopped.ledger.expect("a stopped recording has a ledger");
    assert_eq!(ledger.nodes.len(), 1, "{ledger:?}");
    let node = &ledger.nodes[0];
    eprintln!("ledger: {node:?}");
    assert_eq!((node.node.as_str(), node.whole_window), ("cap-ledger", true), "{node:?}");
    assert!(node.truncated_bodies >= 20, "{node:?}");
    assert!(node.kernel_drops > 0, "a frozen capture with a 1 MiB buffer drops: {node:?}");
    assert_eq!(Some(node.kernel_drops), report["kernel_drops"].as_u64(), "the capture's own count: {report}");

    let ctl = Command::new(procs::binary("ctl").unwrap())
        .args(["--controller", &cluster.cluster.controller_url(), "recordings"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&ctl.stdout);
    let line = listed.lines().find(|l| l.starts_with(&recording.id)).unwrap_or_default();
    assert!(line.contains(&format!("{} kernel drops", node.kernel_drops)), "{listed}");
    assert!(line.contains(&format!("{} cut bodies", node.truncated_bodies)), "{listed}");
    // The stats API (and the dashboard) says it in the same words.
    let api = reprise_loadtests::http::get(cluster.controller.http_addr, "/api/recordings", &[]).await.unwrap();
    let listed = api.json().unwrap();
    let entry = listed.as_array().unwrap().iter().find(|r| r["id"] == recording.id.as_str()).expect("listed");
    assert_eq!(entry["missed"].as_str(), Some(ledger.summary().as_str()), "{entry}");
    assert!(line.ends_with(&ledger.summary()), "{listed}");
}
