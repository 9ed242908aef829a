//! The broker goes away for 20 s in the middle of a live capture and comes back:
//! nothing is lost and every connection's requests stay in order. Runs its own broker
//! (the same Kafka-compatible server as deploy/local/services.sh) so that stopping it
//! disturbs no other test.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reprise_capture::CaptureConfig;
use reprise_proto::v1::MessageKind;
use tokio_util::sync::CancellationToken;

const CONNECTIONS: usize = 4;
const PER_CONNECTION: usize = 120;

fn broker_binary() -> String {
    let out = Command::new("python3")
        .args(["-c", "import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "the noida-db package is needed (deploy/local/services.sh installs it)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn start_broker(port: u16, data: &std::path::Path) -> Child {
    Command::new(broker_binary())
        .args(["start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port", &port.to_string(), "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("broker starts")
}

fn stop_broker(mut broker: Child) {
    let _ = Command::new("kill").args(["-TERM", &broker.id().to_string()]).status();
    broker.wait().unwrap();
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("broker did not come up on {port}");
}

/// Sends `PER_CONNECTION` requests on each of `CONNECTIONS` keep-alive connections,
/// spread over about 30 s.
async fn steady_traffic(addr: SocketAddr) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut stream = BufReader::new(stream);
            for i in 0..PER_CONNECTION {
                let request = format!("GET /c{c}/{i} HTTP/1.1\r\nHost: t\r\n\r\n");
                stream.get_mut().write_all(request.as_bytes()).await.unwrap();
                // Read one "200 ok" response (Content-Length: 2).
                let mut line = String::new();
                loop {
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = [0u8; 2];
                stream.read_exact(&mut body).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = dir.path().join("broker");
    let broker = start_broker(port, &data);
    wait_for_port(port).await;

    let server = common::server().await;
    let log_url = format!("kafka://127.0.0.1:{port}/outage");
    let mut config = CaptureConfig::for_log(&log_url);
    config.interface = Some("lo".into());
    config.port = vec![server.addr.port()];
    config.node = Some("outage".into());
    config.spool_dir = Some(dir.path().join("spool"));
    config.partitions = 4;
    let shutdown = CancellationToken::new();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let capture = tokio::spawn(reprise_capture::run_notify(config, shutdown.clone(), Some(ready_tx)));
    ready.await.unwrap();

    let traffic = tokio::spawn(steady_traffic(server.addr));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_broker(broker);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let broker = start_broker(port, &data);
    wait_for_port(port).await;
    traffic.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    let report = capture.await.unwrap().unwrap();

    assert!(report.records_spooled > 0, "the outage must have been bridged by the spool: {report:?}");
    assert_eq!(report.records_dropped, 0);
    let records = common::read_log(&log_url).await;
    let requests: Vec<_> = records.iter().filter(|r| r.kind() == MessageKind::Request).collect();
    assert_eq!(requests.len(), CONNECTIONS * PER_CONNECTION, "every request once: {report:?}");
    assert_eq!(server.seen.lock().unwrap().len(), CONNECTIONS * PER_CONNECTION);
    // In log order (a connection lives in one partition), each connection's requests
    // come in the order they were sent.
    for c in 0..CONNECTIONS {
        let prefix = format!("GET /c{c}/");
        let order: Vec<usize> = requests
            .iter()
            .filter_map(|r| {
                let text = String::from_utf8_lossy(&r.http).into_owned();
                text.strip_prefix(&prefix).and_then(|rest| rest.split(' ').next()?.parse().ok())
            })
            .collect();
        assert_eq!(order, (0..PER_CONNECTION).collect::<Vec<_>>(), "connection {c} out of order");
    }
    stop_broker(broker);
}
