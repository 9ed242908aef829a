//! Shared by the import tests: a real nginx on a loopback port with its own prefix, an
//! origin that notes what it receives in arrival order, and reading a log back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reprise_proto::v1::TrafficRecord;
use reprise_store::log::RangeSpec;

/// A real nginx (Debian's), one process, logging every request in the combined format
/// (`combined.log`), the common format (`common.log`) and JSON lines (`json.log`).
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// A free loopback port (nginx cannot be told to pick one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nginx {
    pub fn start(dir: &Path) -> Nginx {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let port = free_port();
        let d = dir.display();
        let config = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    log_format common_format '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent';
    log_format json_lines escape=json '{{"msec":"$msec","method":"$request_method","url":"$request_uri","host":"$host","user_agent":"$http_user_agent","referer":"$http_referer"}}';
    access_log {d}/combined.log combined;
    access_log {d}/common.log common_format;
    access_log {d}/json.log json_lines;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new("nginx")
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-e", &format!("{d}/error.log")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (deploy/local/setup.sh)");
        let nginx = Nginx { child, dir: dir.to_path_buf(), port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not start: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops nginx; returns the directory of its logs.
    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Every traffic record in a log, partition by partition.
pub async fn read_log(url: &str) -> Vec<TrafficRecord> {
    let log = reprise_store::open_log(url).await.unwrap();
    let mut records = Vec::new();
    for marks in log.watermarks().await.unwrap() {
        let mut stream = log.read_range(RangeSpec::whole(marks.partition, marks.low, marks.high), 256).await.unwrap();
        while let Some(raw) = stream.next().await {
            records.push(reprise_store::traffic::decode(&raw.unwrap().payload).unwrap());
        }
    }
    records
}
