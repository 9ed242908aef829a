//! Session-aware replay against a stateful server that checks, per TCP connection, that
//! it carries one original connection's requests, all of them, in their recorded order.
//! An in-process cluster on the real broker and etcd; the recording is synthetic: 8
//! connections, request `i` on connection `i % 8`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reprise_loadtests::cluster::{TestCluster, options, replay_request};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::ReplayState;

const CONNECTIONS: u64 = 8;
const REQUESTS: u64 = 400;
/// The request the server answers slowly, holding its session up.
const SLOW: u64 = 8 * 10 + 3;
const SLOW_FOR: Duration = Duration::from_millis(150);

/// What the server saw: per TCP connection, the request numbers in arrival order.
#[derive(Default)]
struct Seen {
    connections: Vec<Vec<u64>>,
}

struct StatefulServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatefulServer {
    async fn start() -> StatefulServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let connection = {
                    let mut seen = state.lock().unwrap();
                    seen.connections.push(Vec::new());
                    seen.connections.len() - 1
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let i: u64 = request.uri().path().rsplit('/').next().and_then(|i| i.parse().ok()).unwrap();
                        state.lock().unwrap().connections[connection].push(i);
                        async move {
                            if i == SLOW {
                                tokio::time::sleep(SLOW_FOR).await;
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StatefulServer { addr, seen, task }
    }

    /// Why what arrived is not whole sessions in order, one per TCP connection.
    fn violations(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let mut problems = Vec::new();
        let mut sessions: BTreeMap<u64, usize> = BTreeMap::new();
        for (c, requests) in seen.connections.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let session = requests[0] % CONNECTIONS;
            if let Some(other) = sessions.insert(session, c) {
                problems.push(format!("session {session} on TCP connections {other} and {c}"));
            }
            let expected: Vec<u64> = (session..REQUESTS).step_by(CONNECTIONS as usize).collect();
            if requests != &expected {
                problems.push(format!("TCP connection {c} carried {requests:?}, not session {session} in order"));
            }
        }
        if sessions.keys().copied().collect::<BTreeSet<u64>>() != (0..CONNECTIONS).collect() {
            problems.push(format!("sessions seen: {:?}", sessions.keys().collect::<Vec<_>>()));
        }
        problems
    }
}

impl Drop for StatefulServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_go_whole_and_in_order_over_a_connection_each() {
    let cluster = TestCluster::start("kafka_etcd", "sessions", 2, |_| {}).await.unwrap();
    let log_url = cluster.log_url.clone();
    let profile = Profile::constant(REQUESTS, reprise_store::now_ns() - 60_000_000_000, 2_000_000_000, CONNECTIONS, 16);
    let recording = cluster.record(&log_url, &profile).await.unwrap();

    let server = StatefulServer::start().await;
    let mut request = replay_request(&recording.id, &format!("http://{}", server.addr), 1);
    options(&mut request).sessions = true;
    let id = cluster.replay(request).await.unwrap();
    let status = cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!((status.state(), status.sent, status.ok), (ReplayState::Done, REQUESTS, REQUESTS), "{status:?}");
    assert_eq!(server.violations(), Vec::<String>::new());
    // The slow answer held its session's next request (due 40 ms later) back: lag.
    let lag = status.lag();
    assert!(lag.max >= 80.0, "a session behind shows as lag: {lag:?}");

    // Without --sessions the same replay spreads sessions over pooled connections.
    let pooled = StatefulServer::start().await;
    let id = cluster.replay(replay_request(&recording.id, &format!("http://{}", pooled.addr), 1)).await.unwrap();
    let status = cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!((status.state(), status.sent), (ReplayState::Done, REQUESTS));
    assert!(!pooled.violations().is_empty(), "pooled sends keep no session whole");
    cluster.stop().await;
}
