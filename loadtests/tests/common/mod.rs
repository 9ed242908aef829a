//! Shared by the import and replay tests: an origin that keeps what it receives in
//! arrival order, tcpdump around real clients, and reading a log back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reprise_proto::v1::TrafficRecord;
use reprise_store::log::RangeSpec;

/// A request as an [`Origin`] saw it, whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// An HTTP/1.1 origin that keeps every request whole, in arrival order, and answers `ok`
/// with the status its `status_for(target)` gives (200 from [`Origin::start`]).
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Origin {
        Origin::answering(|_| 200).await
    }

    pub async fn answering(status_for: fn(&str) -> u16) -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let headers = parts
                                .headers
                                .iter()
                                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                .collect();
                            let target = parts.uri.path_and_query().map_or("/".into(), |p| p.to_string());
                            let status = hyper::StatusCode::from_u16(status_for(&target)).unwrap();
                            log.lock().unwrap().push(Seen { method: parts.method.to_string(), target, headers, body });
                            let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What arrived so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests arrived so far, as a function another thread may call.
    pub fn counter(&self) -> impl Fn() -> usize + Send + 'static {
        let seen = self.seen.clone();
        move || seen.lock().unwrap().len()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `clients` while tcpdump captures `port` on `lo` into `pcap`; waits until every
/// response they got is in the file (tcpdump may lag on a busy machine), then stops it.
/// `answered()` says how many responses the clients got.
pub async fn tcpdump_while(
    port: u16,
    pcap: &Path,
    clients: impl FnOnce() + Send + 'static,
    answered: impl Fn() -> usize,
) {
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "--immediate-mode", "-s", "0", "-w"])
        .arg(pcap)
        .arg(format!("tcp port {port}"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is installed (deploy/local/setup.sh)");
    let stderr = tcpdump.stderr.take().unwrap();
    let listening = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().any(|l| l.is_ok_and(|l| l.contains("listening on")))
    });
    assert!(listening.await.unwrap(), "tcpdump did not start");
    tokio::task::spawn_blocking(clients).await.unwrap();
    let answered = answered();
    let mut written = 0;
    for _ in 0..200 {
        let bytes = std::fs::read(pcap).unwrap_or_default();
        // Status lines: a request line has no space after its version.
        written = bytes.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        if written >= answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written >= answered, "tcpdump wrote {written} of {answered} responses in 20 s");
    let _ = Command::new("kill").args(["-INT", &tcpdump.id().to_string()]).status();
    tcpdump.wait().unwrap();
}

/// Runs the real `ctl` against the cluster with `--json`; its output, parsed. Fails the
/// test if ctl fails.
pub async fn ctl(cluster: &reprise_loadtests::cluster::TestCluster, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(reprise_loadtests::procs::binary("ctl").unwrap());
    command.arg("--controller").arg(cluster.controller_url()).args(args).arg("--json");
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ctl {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Every traffic record in a log, partition by partition.
pub async fn read_log(url: &str) -> Vec<TrafficRecord> {
    let log = reprise_store::open_log(url).await.unwrap();
    let mut records = Vec::new();
    for marks in log.watermarks().await.unwrap() {
        let mut stream = log.read_range(RangeSpec::whole(marks.partition, marks.low, marks.high), 256).await.unwrap();
        while let Some(raw) = stream.next().await {
            records.push(reprise_store::traffic::decode(&raw.unwrap().payload[..]).unwrap());
        }
    }
    records
}
