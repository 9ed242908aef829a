//! Shared by the capture tests: a real HTTP server that remembers what it received,
//! real clients (curl, raw sockets), and reading records back from the log.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reprise_proto::v1::{MessageKind, TrafficRecord};
use reprise_store::log::RangeSpec;

/// A request as seen by a server: method, target, headers (lower-case names, sorted), body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on 127.0.0.1 answering `200 ok`: HTTP/1.1 (keep-alive, pipelining) and
/// cleartext HTTP/2 by prior knowledge. A request sent with `te: trailers` (gRPC's)
/// gets `grpc-status: 0` in trailers. An HTTP/2 request is seen with its :authority as
/// `host`, as the capture stores it.
pub async fn server() -> Server {
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
                        let method = request.method().to_string();
                        let uri = request.uri();
                        let target = uri.path_and_query().map_or_else(|| uri.to_string(), |p| p.to_string());
                        let mut headers: Vec<(String, Vec<u8>)> = request
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                            .collect();
                        if let Some(authority) = uri.authority().filter(|_| !request.headers().contains_key("host")) {
                            headers.push(("host".into(), authority.as_str().as_bytes().to_vec()));
                        }
                        headers.sort();
                        let grpc = request.headers().get("te").is_some_and(|te| te == "trailers");
                        let body =
                            request.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        log.lock().unwrap().push(Seen { method, target, headers, body });
                        let reply = Full::new(Bytes::from_static(b"ok"));
                        let reply = if grpc {
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                            reply.with_trailers(async move { Some(Ok(trailers)) }).boxed()
                        } else {
                            reply.boxed()
                        };
                        Ok::<_, Infallible>(hyper::Response::new(reply))
                    }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().pipeline_flush(true);
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Server { addr, seen, task }
}

/// Decodes a chunked body.
pub fn dechunk(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = input.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&input[..end]).unwrap().split(';').next().unwrap().trim(), 16)
                .unwrap();
        input = &input[end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
    out
}

/// A captured request as the server would have seen it.
pub fn as_seen(record: &TrafficRecord) -> Seen {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    let head = match request.parse(&record.http).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("incomplete request: {:?}", String::from_utf8_lossy(&record.http)),
    };
    let mut chunked = false;
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| {
            let name = h.name.to_ascii_lowercase();
            chunked |= name == "transfer-encoding" && h.value.ends_with(b"chunked");
            (name, h.value.to_vec())
        })
        .collect();
    headers.sort();
    let body = &record.http[head..];
    Seen {
        method: request.method.unwrap().to_string(),
        target: request.path.unwrap().to_string(),
        headers,
        body: if chunked { dechunk(body) } else { body.to_vec() },
    }
}

/// A fresh traffic log of the backend `kind`: a topic on the real broker, or a file log
/// in `dir`.
pub fn log_url(kind: &str, dir: &tempfile::TempDir, name: &str) -> String {
    match kind {
        "kafka" => reprise_store::testing::kafka_log_url(name),
        _ => format!("file://{}/{name}", dir.path().display()),
    }
}

/// Every record in the log, in partition and offset order.
pub async fn read_log(url: &str) -> Vec<TrafficRecord> {
    let log = reprise_store::open_log(url).await.unwrap();
    let mut records = Vec::new();
    for marks in log.watermarks().await.unwrap() {
        let stream = log.read_range(RangeSpec::whole(marks.partition, marks.low, marks.high), 64).await.unwrap();
        let raw: Vec<_> = stream.collect().await;
        for r in raw {
            records.push(reprise_store::traffic::decode(&r.unwrap().payload[..]).unwrap());
        }
    }
    records
}

/// What the log holds, undecoded, by where it was read: the key and payload bytes of
/// every message and, for a file log, every file under its directory.
async fn stored_bytes(url: &str) -> Vec<(&'static str, Vec<u8>)> {
    let log = reprise_store::open_log(url).await.unwrap();
    let mut messages = Vec::new();
    for marks in log.watermarks().await.unwrap() {
        let stream = log.read_range(RangeSpec::whole(marks.partition, marks.low, marks.high), 64).await.unwrap();
        for raw in stream.collect::<Vec<_>>().await {
            let raw = raw.unwrap();
            messages.extend_from_slice(raw.key.as_deref().unwrap_or_default());
            messages.extend_from_slice(&raw.payload);
        }
    }
    let mut sources = vec![("messages", messages)];
    if let Some(dir) = url.strip_prefix("file://") {
        let mut files = Vec::new();
        let mut pending = vec![std::path::PathBuf::from(dir)];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            } else {
                files.extend(std::fs::read(&path).unwrap());
            }
        }
        sources.push(("files on disk", files));
    }
    sources
}

/// Greps the stored log, raw: every one of `secrets` must be nowhere in it, and every one
/// of `present` (proof that the grep sees the records) somewhere.
pub async fn grep_stored_log(url: &str, present: &[&str], secrets: &[&str]) {
    let contains = |haystack: &[u8], needle: &str| haystack.windows(needle.len()).any(|w| w == needle.as_bytes());
    for (source, bytes) in stored_bytes(url).await {
        for text in present {
            assert!(contains(&bytes, text), "{text:?} is not in the log's {source} ({} bytes)", bytes.len());
        }
        for secret in secrets {
            assert!(!contains(&bytes, secret), "the secret {secret:?} is in the log's {source}");
        }
    }
}

pub fn requests(records: &[TrafficRecord]) -> Vec<&TrafficRecord> {
    records.iter().filter(|r| r.kind() == MessageKind::Request).collect()
}

/// Checks that the captured requests are exactly the ones the server saw (headers in
/// `redacted` are expected masked), and that every request has its response.
pub fn assert_same_requests(records: &[TrafficRecord], seen: &[Seen], redacted: &[&str]) {
    let mut expected: Vec<Seen> = seen
        .iter()
        .cloned()
        .map(|mut s| {
            for (name, value) in &mut s.headers {
                if redacted.contains(&name.as_str()) {
                    *value = b"[REDACTED]".to_vec();
                }
            }
            s
        })
        .collect();
    let mut captured: Vec<Seen> = requests(records).into_iter().map(as_seen).collect();
    expected.sort();
    captured.sort();
    assert_eq!(captured.len(), expected.len(), "one record per request the server saw");
    for (c, e) in captured.iter().zip(&expected) {
        assert_eq!(c, e);
    }
    for request in requests(records) {
        let paired = records.iter().any(|r| {
            r.kind() == MessageKind::Response
                && r.connection_id == request.connection_id
                && r.sequence == request.sequence
        });
        assert!(paired, "no response for {:?}", String::from_utf8_lossy(&request.http[..40.min(request.http.len())]));
    }
}

/// The secrets `send_traffic` sends (a cookie, a bearer token): never stored.
pub const SECRETS: [&str; 2] = ["c00kie-s3cret", "s3cr3t-t0ken"];
/// The headers carrying them, masked by default.
pub const REDACTED: [&str; 2] = ["cookie", "authorization"];

/// Runs curl once per argument list (quiet, body discarded); each run must succeed.
pub async fn run_curl(runs: Vec<Vec<String>>) {
    for args in runs {
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl").args(["-s", "-o", "/dev/null"]).args(&args).status().unwrap()
        })
        .await
        .unwrap();
        assert!(status.success(), "curl failed: {status}");
    }
}

/// Real clients: curl for the common shapes, a raw socket for pipelining.
pub async fn send_traffic(addr: SocketAddr) {
    let base = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, "b".repeat(100_000)).unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, "chunk me please").unwrap();
    let runs: Vec<Vec<String>> = vec![
        vec![format!("{base}/search?q=rust&page=2")],
        vec![
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            r#"{"item":1,"qty":2}"#.into(),
            format!("{base}/api/items"),
        ],
        vec!["-d".into(), "name=ann&age=3".into(), format!("{base}/form")],
        vec![
            "-H".into(),
            "Transfer-Encoding: chunked".into(),
            "--data-binary".into(),
            format!("@{}", small.display()),
            format!("{base}/upload"),
        ],
        vec!["--data-binary".into(), format!("@{}", big.display()), format!("{base}/big")],
        vec!["-X".into(), "PUT".into(), "-d".into(), "v=1".into(), format!("{base}/put/1")],
        vec!["-X".into(), "DELETE".into(), format!("{base}/thing/1")],
        vec!["-I".into(), format!("{base}/head")],
        vec![
            "-H".into(),
            format!("Cookie: session={}", SECRETS[0]),
            "-H".into(),
            format!("Authorization: Bearer {}", SECRETS[1]),
            format!("{base}/with-cookie"),
        ],
        // Three requests on one keep-alive connection.
        vec![
            format!("{base}/k1"),
            "-o".into(),
            "/dev/null".into(),
            format!("{base}/k2"),
            "-o".into(),
            "/dev/null".into(),
            format!("{base}/k3"),
        ],
    ];
    run_curl(runs).await;
    // Pipelined: three requests in one write, then the three responses.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut responses = Vec::new();
    stream.read_to_end(&mut responses).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&responses).matches("HTTP/1.1 200").count(), 3);
}
