//! An HTTP/1.1 and h2c server that answers every request with `200 ok` and counts what
//! arrives: in total, per client IP and second (workers bound to distinct loopback
//! addresses are told apart), and optionally which request ids (`X-Request-Id: N`) came,
//! to find duplicates and losses. `GET /_sink/report` answers the counts as JSON (and is
//! not counted). Counting is a handful of atomic increments per request: the sink must
//! not be the bottleneck of a benchmark.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::task::JoinHandle;

/// Seconds of per-second counts kept (arrivals later than this count in the last one).
const SECONDS: usize = 7200;
/// Distinct client IPs told apart (more share the last slot).
const MAX_CLIENTS: usize = 256;

pub struct SinkCounts {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    started_sec: i64,
    clients: RwLock<Vec<(IpAddr, Arc<[AtomicU64]>)>>,
    first_ns: AtomicI64,
    last_ns: AtomicI64,
    /// One bit per expected request id, when checking ids.
    ids: Option<Vec<AtomicU64>>,
    expected_ids: u64,
    duplicate_ids: AtomicU64,
    bad_ids: AtomicU64,
}

/// What the sink saw, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    pub requests: u64,
    pub body_bytes: u64,
    pub per_ip: BTreeMap<IpAddr, u64>,
    /// Requests per whole second (Unix seconds) per client IP: the arrival histogram.
    pub per_second: BTreeMap<i64, BTreeMap<IpAddr, u64>>,
    /// First and last arrival, ns since the epoch.
    pub first_arrival_ns: Option<i64>,
    pub last_arrival_ns: Option<i64>,
    /// With id checking: ids never seen, ids seen more than once, requests without a
    /// valid id.
    pub missing_ids: Option<u64>,
    pub duplicate_ids: Option<u64>,
    pub bad_ids: Option<u64>,
}

impl SinkCounts {
    fn new(expected_ids: u64) -> Self {
        SinkCounts {
            requests: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            started_sec: reprise_store::now_ns() / 1_000_000_000,
            clients: RwLock::new(Vec::new()),
            first_ns: AtomicI64::new(i64::MAX),
            last_ns: AtomicI64::new(i64::MIN),
            ids: (expected_ids > 0).then(|| (0..expected_ids.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()),
            expected_ids,
            duplicate_ids: AtomicU64::new(0),
            bad_ids: AtomicU64::new(0),
        }
    }

    /// The per-second counters of a client IP (looked up once per connection).
    fn seconds_of(&self, ip: IpAddr) -> Arc<[AtomicU64]> {
        if let Some((_, slots)) = self.clients.read().expect("lock").iter().find(|(i, _)| *i == ip) {
            return slots.clone();
        }
        let mut clients = self.clients.write().expect("lock");
        if let Some((_, slots)) = clients.iter().find(|(i, _)| *i == ip) {
            return slots.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            return clients.last().expect("non-empty").1.clone();
        }
        let slots: Arc<[AtomicU64]> = (0..SECONDS).map(|_| AtomicU64::new(0)).collect();
        clients.push((ip, slots.clone()));
        slots
    }

    fn count(&self, seconds: &[AtomicU64], body: usize, id: Option<&[u8]>) {
        let now = reprise_store::now_ns();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.body_bytes.fetch_add(body as u64, Ordering::Relaxed);
        let second = ((now / 1_000_000_000 - self.started_sec).max(0) as usize).min(SECONDS - 1);
        seconds[second].fetch_add(1, Ordering::Relaxed);
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        if let Some(bits) = &self.ids {
            let id = id.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse::<u64>().ok());
            match id.filter(|id| *id < self.expected_ids) {
                Some(id) => {
                    let bit = 1u64 << (id % 64);
                    if bits[(id / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
                        self.duplicate_ids.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    self.bad_ids.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn report(&self) -> SinkReport {
        let mut per_ip = BTreeMap::new();
        let mut per_second: BTreeMap<i64, BTreeMap<IpAddr, u64>> = BTreeMap::new();
        for (ip, seconds) in self.clients.read().expect("lock").iter() {
            for (i, n) in seconds.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    *per_ip.entry(*ip).or_default() += n;
                    *per_second.entry(self.started_sec + i as i64).or_default().entry(*ip).or_default() += n;
                }
            }
        }
        let (first, last) = (self.first_ns.load(Ordering::Relaxed), self.last_ns.load(Ordering::Relaxed));
        let seen_ids = self
            .ids
            .as_ref()
            .map(|bits| bits.iter().map(|b| u64::from(b.load(Ordering::Relaxed).count_ones())).sum::<u64>());
        SinkReport {
            requests: self.requests.load(Ordering::Relaxed),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            per_ip,
            per_second,
            first_arrival_ns: (first != i64::MAX).then_some(first),
            last_arrival_ns: (last != i64::MIN).then_some(last),
            missing_ids: seen_ids.map(|seen| self.expected_ids - seen),
            duplicate_ids: self.ids.as_ref().map(|_| self.duplicate_ids.load(Ordering::Relaxed)),
            bad_ids: self.ids.as_ref().map(|_| self.bad_ids.load(Ordering::Relaxed)),
        }
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    pub counts: Arc<SinkCounts>,
    server: JoinHandle<()>,
}

impl Sink {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Sink> {
        Self::start_checking_ids(addr, 0).await
    }

    /// A sink that also checks `X-Request-Id` values in `0..expected_ids`.
    pub async fn start_checking_ids(addr: SocketAddr, expected_ids: u64) -> std::io::Result<Sink> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(SinkCounts::new(expected_ids));
        let server = {
            let counts = counts.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, peer)) = listener.accept().await else { continue };
                    let _ = stream.set_nodelay(true);
                    let counts = counts.clone();
                    tokio::spawn(async move {
                        let seconds = counts.seconds_of(peer.ip());
                        let service = service_fn(move |request| handle(counts.clone(), seconds.clone(), request));
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Sink { addr, counts, server })
    }

    pub fn report(&self) -> SinkReport {
        self.counts.report()
    }

    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    counts: Arc<SinkCounts>,
    seconds: Arc<[AtomicU64]>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/_sink/report" {
        let report = serde_json::to_vec(&counts.report()).expect("serialisable");
        return Ok(Response::new(Full::new(Bytes::from(report))));
    }
    let id = request.headers().get("x-request-id").map(|v| v.as_bytes().to_vec());
    let body = request.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    counts.count(&seconds, body, id.as_deref());
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
