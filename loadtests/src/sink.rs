//! An HTTP/1.1 and h2c server that answers every request with `200 ok` and counts what
//! arrives: in total, per client IP, and per (second, client IP). Workers bound to
//! distinct loopback addresses (`--source-ip`) are thus told apart. `GET /_sink/report`
//! answers the counts as JSON (and is not counted).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct SinkCounts {
    pub requests: AtomicU64,
    pub body_bytes: AtomicU64,
    per_ip_second: Mutex<BTreeMap<(i64, IpAddr), u64>>,
    arrivals: Mutex<Option<(i64, i64)>>,
}

/// What the sink saw, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    pub requests: u64,
    pub body_bytes: u64,
    pub per_ip: BTreeMap<IpAddr, u64>,
    /// Requests per whole second (Unix seconds) per client IP.
    pub per_second: BTreeMap<i64, BTreeMap<IpAddr, u64>>,
    /// First and last arrival, ns since the epoch.
    pub first_arrival_ns: Option<i64>,
    pub last_arrival_ns: Option<i64>,
}

pub struct Sink {
    pub addr: SocketAddr,
    pub counts: Arc<SinkCounts>,
    server: JoinHandle<()>,
}

impl Sink {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Sink> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(SinkCounts::default());
        let server = {
            let counts = counts.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, peer)) = listener.accept().await else { continue };
                    let _ = stream.set_nodelay(true);
                    let counts = counts.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| handle(counts.clone(), peer.ip(), request));
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

impl SinkCounts {
    pub fn report(&self) -> SinkReport {
        let per_ip_second = self.per_ip_second.lock().expect("lock").clone();
        let mut per_ip = BTreeMap::new();
        let mut per_second: BTreeMap<i64, BTreeMap<IpAddr, u64>> = BTreeMap::new();
        for ((second, ip), n) in per_ip_second {
            *per_ip.entry(ip).or_default() += n;
            *per_second.entry(second).or_default().entry(ip).or_default() += n;
        }
        let arrivals = *self.arrivals.lock().expect("lock");
        SinkReport {
            requests: self.requests.load(Ordering::Relaxed),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            per_ip,
            per_second,
            first_arrival_ns: arrivals.map(|a| a.0),
            last_arrival_ns: arrivals.map(|a| a.1),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    counts: Arc<SinkCounts>,
    peer: IpAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/_sink/report" {
        let report = serde_json::to_vec(&counts.report()).expect("serialisable");
        return Ok(Response::new(Full::new(Bytes::from(report))));
    }
    let body = request.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let now = reprise_store::now_ns();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.body_bytes.fetch_add(body as u64, Ordering::Relaxed);
    *counts.per_ip_second.lock().expect("lock").entry((now / 1_000_000_000, peer)).or_default() += 1;
    let mut arrivals = counts.arrivals.lock().expect("lock");
    *arrivals = Some(arrivals.map_or((now, now), |(first, last)| (first.min(now), last.max(now))));
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
