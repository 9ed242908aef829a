//! HTTP/2 and gRPC, captured live and replayed: a real tonic client calls a real tonic
//! server on loopback (unary and client-streaming calls, metadata, a body that spans
//! many frames), next to `curl --http2-prior-knowledge` and a hyper HTTP/2 client that
//! sends request trailers. The capture daemon's code captures it all live on `lo` into the
//! real broker, recorded with `ctl record start` and `stop` (the catalog on the real etcd); the real `ctl` replays the recording through
//! an in-process cluster to a second server (comparing every response with the recorded
//! one, gRPC trailers included), and to a third with `--sessions`. Every call must
//! arrive at both as the first server received it: method, path, headers, body and
//! trailers. And an h2c upgrade that Apache takes (nghttp asks for it) is stored once and
//! replayed over HTTP/2.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reprise_capture::CaptureConfig;
use reprise_loadtests::cluster::TestCluster;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

/// The test's gRPC messages, with no codegen: a note, and how many notes and bytes a
/// call carried.
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(bytes = "vec", tag = "2")]
    blob: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Tally {
    #[prost(uint32, tag = "1")]
    notes: u32,
    #[prost(uint64, tag = "2")]
    bytes: u64,
}

fn tally<'a>(notes: impl Iterator<Item = &'a Note>) -> Tally {
    notes.fold(Tally::default(), |t, n| Tally {
        notes: t.notes + 1,
        bytes: t.bytes + (n.text.len() + n.blob.len()) as u64,
    })
}

const SERVICE: &str = "reprise.test.Notes";

/// A call as a server received it, whole.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    method: String,
    /// `:authority` (HTTP/2; an HTTP/1.1 request's host is its `host` header).
    authority: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    trailers: BTreeMap<String, String>,
}

impl std::fmt::Debug for Call {
    /// The body by its length and start: a failure shows which call differs, not 60 KB.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = String::from_utf8_lossy(&self.body[..self.body.len().min(24)]);
        write!(
            f,
            "{} {} {} {:?} body {} bytes {start:?}... trailers {:?}",
            self.method,
            self.authority,
            self.target,
            self.headers,
            self.body.len(),
            self.trailers
        )
    }
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// Every replayed call is a recorded one, marked with the replay (`x-reprise-replay`);
/// none is missing.
fn assert_replayed_whole(replayed: Vec<Call>, recorded: &[Call], replay_id: &str) {
    assert_eq!(replayed.len(), recorded.len(), "calls replayed {replayed:#?}");
    for (mut replayed, recorded) in replayed.into_iter().zip(recorded) {
        assert_eq!(
            replayed.headers.remove(reprise_rules::replay::MARKER.as_str()).as_deref(),
            Some(replay_id),
            "{replayed:?}"
        );
        assert_eq!(&replayed, recorded);
    }
}

/// Keeps the request whole, then hands it on with its body as received.
async fn keep(calls: &Calls, request: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    let (parts, body) = request.into_parts();
    let collected = body.collect().await.expect("a whole request body");
    let fields = |map: &http::HeaderMap| {
        map.iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
    };
    let trailers = collected.trailers().map(fields).unwrap_or_default();
    let body = collected.to_bytes();
    calls.lock().unwrap().push(Call {
        method: parts.method.to_string(),
        authority: parts.uri.authority().map_or(String::new(), |a| a.to_string()),
        target: parts.uri.path_and_query().map_or("/".into(), |p| p.to_string()),
        headers: fields(&parts.headers),
        body: body.to_vec(),
        trailers,
    });
    http::Request::from_parts(parts, tonic::body::Body::new(Full::new(body)))
}

/// The test server's two services, each keeping every call it receives: with `GRPC`,
/// `reprise.test.Notes`: `Say` (unary) and `Collect` (client streaming), served by
/// tonic's own gRPC handling, and `Fail`, which answers UNAVAILABLE; without, everything
/// under `/plain/`, answered `ok`.
#[derive(Clone)]
struct Keeping<const GRPC: bool>(Calls);

impl NamedService for Keeping<true> {
    const NAME: &'static str = SERVICE;
}

impl NamedService for Keeping<false> {
    const NAME: &'static str = "plain";
}

impl<const GRPC: bool> Service<http::Request<tonic::body::Body>> for Keeping<GRPC> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let calls = self.0.clone();
        Box::pin(async move {
            let request = keep(&calls, request).await;
            if !GRPC {
                return Ok(http::Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(b"ok")))));
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Tally, Note>::default());
            Ok(match request.uri().path().rsplit('/').next() {
                Some("Say") => grpc.unary(Say, request).await,
                Some("Collect") => grpc.client_streaming(Collect, request).await,
                Some("Fail") => tonic::Status::unavailable("down, as the test asks").into_http(),
                _ => tonic::Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

#[derive(Clone)]
struct Say;

impl Service<tonic::Request<Note>> for Say {
    type Response = tonic::Response<Tally>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), tonic::Status>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Note>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(tally(std::iter::once(request.get_ref())))))
    }
}

#[derive(Clone)]
struct Collect;

impl Service<tonic::Request<tonic::Streaming<Note>>> for Collect {
    type Response = tonic::Response<Tally>;
    type Error = tonic::Status;
    type Future = BoxFuture<Self::Response, tonic::Status>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), tonic::Status>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Note>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut notes = Vec::new();
            while let Some(note) = stream.message().await? {
                notes.push(note);
            }
            Ok(tonic::Response::new(tally(notes.iter())))
        })
    }
}

/// A tonic server on loopback that keeps every call it receives.
struct Server {
    addr: SocketAddr,
    calls: Calls,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let calls = Calls::default();
        // HTTP/1.1 too: a request captured on HTTP/1.1 is replayed over it.
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_service(Keeping::<true>(calls.clone()))
            .add_service(Keeping::<false>(calls.clone()));
        let task = tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
        Server { addr, calls, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What arrived, in a stable order (a replay's order is not the clients').
    fn calls(&self) -> Vec<Call> {
        let mut calls = self.calls.lock().unwrap().clone();
        calls.sort();
        calls
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn note(text: &str, blob_len: usize) -> Note {
    Note { text: text.into(), blob: (0..blob_len).map(|i| (i % 251) as u8).collect() }
}

/// The clients: tonic (unary calls with metadata, client-streaming calls, one of 60 KB,
/// a call that fails),
/// curl by prior knowledge, and hyper's HTTP/2 client sending request trailers. How
/// many calls they made.
async fn clients(addr: SocketAddr) -> usize {
    let url = format!("http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = |method: &str| format!("/{SERVICE}/{method}").parse::<http::uri::PathAndQuery>().unwrap();
    let codec = || tonic_prost::ProstCodec::<Note, Tally>::default();
    for i in 0..5 {
        let mut request = tonic::Request::new(note(&format!("hello {i}"), i * 10));
        request.metadata_mut().insert("x-tenant", format!("t{i}").parse().unwrap());
        grpc.ready().await.unwrap();
        let reply = grpc.unary(request, path("Say"), codec()).await.unwrap().into_inner();
        assert_eq!(reply, Tally { notes: 1, bytes: (7 + i * 10) as u64 });
    }
    for blob_len in [16, 60_000] {
        let notes = vec![note("a", blob_len), note("b", 1), note("c", 0)];
        let expected = tally(notes.iter());
        grpc.ready().await.unwrap();
        let request = tonic::Request::new(futures::stream::iter(notes));
        let reply = grpc.client_streaming(request, path("Collect"), codec()).await.unwrap().into_inner();
        assert_eq!(reply, expected);
    }
    grpc.ready().await.unwrap();
    let failed = grpc.unary(tonic::Request::new(note("fail", 0)), path("Fail"), codec()).await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    let curl = |args: Vec<String>| {
        let out = std::process::Command::new("curl").args(["-sS", "--http2-prior-knowledge"]).args(&args).output();
        let out = out.expect("curl is installed (deploy/local/setup.sh)");
        assert!(out.status.success() && out.stdout == b"ok", "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (search, post) = (format!("{url}/plain/search?q=rust&page=2"), format!("{url}/plain/items"));
    tokio::task::spawn_blocking(move || {
        curl(vec![search]);
        curl(vec!["-H".into(), "Content-Type: application/json".into(), "-d".into(), r#"{"item":7}"#.into(), post]);
    })
    .await
    .unwrap();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "a1b2".parse().unwrap());
    let body = http_body_util::StreamBody::new(futures::stream::iter([
        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"part one, "))),
        Ok(hyper::body::Frame::data(Bytes::from_static(b"part two"))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]));
    let request = hyper::Request::put(format!("{url}/plain/upload")).body(body).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
    drop(sender);
    connection.await.unwrap().unwrap();
    5 + 2 + 1 + 2 + 1
}

/// Runs `clients` while the capture records `port` live on `lo` into the cluster's log,
/// inside a recording started and stopped with `ctl record`; what the clients returned,
/// the capture's report and the recording (`ctl record stop --json`).
async fn capture_live<T>(
    cluster: &TestCluster,
    port: u16,
    dir: &std::path::Path,
    clients: impl std::future::Future<Output = T>,
) -> (T, reprise_capture::CaptureReport, serde_json::Value) {
    let mut config = CaptureConfig::for_log(&cluster.log_url);
    config.interface = Some("lo".into());
    config.port = vec![port];
    config.track_responses = true;
    config.node = Some("live".into());
    config.spool_dir = Some(dir.join("spool"));
    config.catalog = Some(cluster.catalog_url.clone());
    let shutdown = CancellationToken::new();
    // A failing client must fail the test, not leave the capture running forever.
    let _stop_on_panic = shutdown.clone().drop_guard();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let capture = tokio::spawn(reprise_capture::run_notify(config, shutdown.clone(), Some(ready_tx)));
    if ready.await.is_err() {
        panic!("the capture did not start: {:?}", capture.await.unwrap().err());
    }
    let started = common::ctl(cluster, &["record", "start", "--name", "live"]).await;
    let recording = started["id"].as_str().unwrap().to_string();
    let made = clients.await;
    // The capture sees the last packets a moment after the clients do.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let report = capture.await.unwrap().unwrap();
    let stopped = common::ctl(cluster, &["record", "stop", &recording]).await;
    (made, report, stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_and_http2_traffic_captured_live_replays_complete() {
    let dir = tempfile::tempdir().unwrap();
    let original = Server::start().await;
    let cluster = TestCluster::start("kafka_etcd", "grpc", 2, |_| {}).await.unwrap();

    let (made, report, recording) =
        capture_live(&cluster, original.addr.port(), dir.path(), clients(original.addr)).await;
    assert_eq!(recording["record_count"].as_u64(), Some(2 * made as u64), "a request and a response per call");
    let recording = recording["id"].as_str().unwrap();
    let recorded = original.calls();
    assert_eq!(recorded.len(), made);
    assert_eq!((report.requests, report.responses), (made as u64, made as u64), "{report:?}");
    assert_eq!((report.h2_connections, report.h2_mid_stream, report.h2_errors), (4, 0, 0), "{report:?}");

    // To a second server, each response compared with the recorded one; `:authority`
    // as recorded (`--keep-host`), so that every call must arrive exactly as it did.
    let second = Server::start().await;
    let replay = ["replay", "--recording", recording, "--target", &second.url(), "--compare", "--keep-host"];
    let summary = common::ctl(&cluster, &replay).await;
    assert_eq!(summary["state"], "done", "{summary}");
    // The failed call came with HTTP 200; it counts as the 503 its UNAVAILABLE maps to.
    let answered = (summary["sent"].as_u64(), summary["ok"].as_u64(), summary["status"]["5xx"].as_u64());
    assert_eq!(answered, (Some(made as u64), Some(made as u64 - 1), Some(1)), "{summary}");
    assert_replayed_whole(second.calls(), &recorded, summary["id"].as_str().unwrap());
    let diff = common::ctl(&cluster, &["diff", summary["id"].as_str().unwrap()]).await;
    let endpoints = diff["endpoints"].as_array().unwrap();
    let compared: u64 = endpoints.iter().map(|e| e["compared"].as_u64().unwrap()).sum();
    let differing: u64 = endpoints.iter().map(|e| e["differing"].as_u64().unwrap()).sum();
    assert_eq!((compared, differing), (made as u64, 0), "{diff}");

    // And with sessions: each recorded connection's streams in order over one HTTP/2
    // connection of its own.
    let third = Server::start().await;
    let replay = ["replay", "--recording", recording, "--target", &third.url(), "--sessions", "--keep-host"];
    let summary = common::ctl(&cluster, &replay).await;
    assert_eq!((summary["state"].as_str(), summary["ok"].as_u64()), (Some("done"), Some(made as u64 - 1)), "{summary}");
    assert_replayed_whole(third.calls(), &recorded, summary["id"].as_str().unwrap());
    cluster.stop().await;
}

/// nghttp asks for an h2c upgrade, which Apache takes (a 101, then HTTP/2 on the same
/// connection: its second request is stream 13, after PRIORITY frames on idle streams);
/// curl asks for one with a POST, which Apache declines (a body is in the way).
async fn upgrading_clients(base: String) -> usize {
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program).args(args).output();
        let out = out.unwrap_or_else(|e| panic!("{program}: {e} (deploy/local/setup.sh installs it)"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    tokio::task::spawn_blocking(move || {
        let pages = [format!("{base}/plain/page.html?v=1"), format!("{base}/plain/page.html?v=2")];
        run("nghttp", &["--upgrade", "--null-out", "--header", "user-agent: upgrader", &pages[0], &pages[1]]);
        let form = format!("{base}/plain/form.html");
        run("curl", &["-sS", "-o", "/dev/null", "--http2", "-A", "upgrader", "-d", "a=1&b=2", &form]);
    })
    .await
    .unwrap();
    3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2c_upgrade_taken_by_apache_is_stored_once_and_replayed_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let files = [("plain/page.html", "page\n"), ("plain/form.html", "form\n")];
    let apache = reprise_loadtests::apache::Apache::start(&dir.path().join("apache"), &files).unwrap();
    let cluster = TestCluster::start("kafka_etcd", "h2c-upgrade", 1, |_| {}).await.unwrap();
    let (made, report, recording) =
        capture_live(&cluster, apache.port(), dir.path(), upgrading_clients(apache.url())).await;
    assert_eq!((report.requests, report.responses, report.h2_connections), (made as u64, made as u64, 1), "{report:?}");
    let mut requests: Vec<_> = common::read_log(&cluster.log_url)
        .await
        .into_iter()
        .filter(|r| r.kind() == reprise_proto::v1::MessageKind::Request)
        .map(|r| (String::from_utf8_lossy(&r.http).lines().next().unwrap().to_string(), r.protocol()))
        .collect();
    requests.sort();
    use reprise_proto::v1::HttpProtocol::{Http1, Http2};
    let line = |l: &str| l.to_string();
    assert_eq!(
        requests,
        [
            (line("GET /plain/page.html?v=1 HTTP/1.1"), Http2),
            (line("GET /plain/page.html?v=2 HTTP/1.1"), Http2),
            (line("POST /plain/form.html HTTP/1.1"), Http1)
        ],
        "the upgraded request is stream 1 of the HTTP/2 connection, stored once"
    );

    let target = Server::start().await;
    let recording = recording["id"].as_str().unwrap();
    let summary = common::ctl(&cluster, &["replay", "--recording", recording, "--target", &target.url()]).await;
    assert_eq!((summary["state"].as_str(), summary["ok"].as_u64()), (Some("done"), Some(made as u64)), "{summary}");
    let fields = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let mark = summary["id"].as_str().unwrap();
    let get = |v: &str, more: &[(&str, &str)]| Call {
        method: "GET".into(),
        // The target's: no --keep-host.
        authority: target.addr.to_string(),
        target: format!("/plain/page.html?v={v}"),
        headers: fields(&[&[("accept", "*/*"), ("user-agent", "upgrader"), ("x-reprise-replay", mark)], more].concat()),
        body: vec![],
        trailers: Default::default(),
    };
    let host = target.addr.to_string();
    let post = Call {
        method: "POST".into(),
        authority: String::new(),
        target: "/plain/form.html".into(),
        headers: fields(&[
            ("accept", "*/*"),
            ("content-length", "7"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", &host),
            ("user-agent", "upgrader"),
            ("x-reprise-replay", mark),
        ]),
        body: b"a=1&b=2".to_vec(),
        trailers: Default::default(),
    };
    // The upgrade request's own fields (connection, upgrade, http2-settings) were its
    // hop's; nghttp's HTTP/2 requests add accept-encoding.
    assert_eq!(target.calls(), [get("1", &[]), get("2", &[("accept-encoding", "gzip, deflate")]), post]);
    cluster.stop().await;
}
