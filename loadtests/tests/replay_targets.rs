//! Where replayed requests go: an https target (HTTP/1.1 and HTTP/2 over TLS; the
//! certificate is checked unless the replay is `insecure_tls`), and which Host header
//! it gets (the target's, or the recorded one with `keep_host`). The target is a small
//! server on loopback that keeps what arrived. The transport is the same on either
//! backend, so these run on the file log and catalog.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use reprise_loadtests::cluster::{TestCluster, options, replay_request};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::{PacingMode, Recording, ReplayState};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

const LIMIT: Duration = Duration::from_secs(60);
const REQUESTS: u64 = 40;

/// What one request looked like on arrival.
#[derive(Debug, Clone)]
struct Arrival {
    version: Version,
    host: String,
    path: String,
}

/// A target server on 127.0.0.1 (TLS when given an acceptor) recording every arrival.
async fn target(tls: Option<TlsAcceptor>) -> (SocketAddr, Arc<Mutex<Vec<Arrival>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, tls) = (seen.clone(), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let host = request.headers().get(hyper::header::HOST).map(|h| h.to_str().unwrap_or("").to_string());
                    // HTTP/2 carries the authority in the URI instead of a Host header.
                    let host = host.or_else(|| request.uri().authority().map(|a| a.to_string())).unwrap_or_default();
                    let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    seen.lock().unwrap().push(Arrival { version: request.version(), host, path });
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
                });
                let server = auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(tls) => {
                        // A client that refuses the certificate ends the handshake: nothing to serve.
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = server.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = server.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    (addr, arrivals)
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1, offering h2 and
/// HTTP/1.1 by ALPN.
fn self_signed_acceptor() -> TlsAcceptor {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

async fn recorded(cluster: &TestCluster) -> Recording {
    let profile = Profile::constant(REQUESTS, reprise_store::now_ns() - 60_000_000_000, 200_000_000, 4, 16);
    cluster.record(&cluster.log_url, &profile).await.unwrap()
}

#[tokio::test]
async fn https_targets_over_http1_and_http2_with_the_certificate_checked_by_default() {
    let cluster = TestCluster::start("file", "https", 2, |_| {}).await.unwrap();
    let recording = recorded(&cluster).await;
    let (addr, arrivals) = target(Some(self_signed_acceptor())).await;
    let url = format!("https://{addr}/tls");

    // Verified by default: a self-signed certificate fails every send as a connect error.
    let mut request = replay_request(&recording.id, &url, 1);
    options(&mut request).pacing = PacingMode::Max.into();
    let id = cluster.replay(request.clone()).await.unwrap();
    let refused = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!(refused.state(), ReplayState::Done, "{refused:?}");
    assert_eq!((refused.ok, refused.error_kinds["connect"]), (0, REQUESTS), "{refused:?}");
    assert!(arrivals.lock().unwrap().is_empty());

    // `insecure_tls` accepts it, over HTTP/1.1 and then over HTTP/2 (ALPN).
    for (http2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
        arrivals.lock().unwrap().clear();
        options(&mut request).insecure_tls = true;
        options(&mut request).http2 = http2;
        let id = cluster.replay(request.clone()).await.unwrap();
        let status = cluster.wait_final(&id, LIMIT).await.unwrap();
        assert_eq!((status.state(), status.ok, status.errors), (ReplayState::Done, REQUESTS, 0), "{status:?}");
        let arrived = arrivals.lock().unwrap().clone();
        assert_eq!(arrived.len() as u64, REQUESTS);
        assert!(arrived.iter().all(|a| a.version == version), "{arrived:?}");
        assert!(arrived.iter().all(|a| a.path.starts_with("/tls/items/")), "the target's path prefix: {arrived:?}");
    }
    cluster.stop().await;
}

#[tokio::test]
async fn the_host_header_is_the_targets_unless_the_recorded_one_is_kept() {
    let cluster = TestCluster::start("file", "host", 2, |_| {}).await.unwrap();
    let recording = recorded(&cluster).await;
    let (addr, arrivals) = target(None).await;

    for (keep_host, expected) in [(false, addr.to_string()), (true, "shop.example".to_string())] {
        arrivals.lock().unwrap().clear();
        let mut request = replay_request(&recording.id, &format!("http://{addr}"), 1);
        options(&mut request).pacing = PacingMode::Max.into();
        options(&mut request).keep_host = keep_host;
        let id = cluster.replay(request).await.unwrap();
        let status = cluster.wait_final(&id, LIMIT).await.unwrap();
        assert_eq!((status.state(), status.ok), (ReplayState::Done, REQUESTS), "{status:?}");
        let arrived = arrivals.lock().unwrap().clone();
        assert_eq!(arrived.len() as u64, REQUESTS);
        assert!(arrived.iter().all(|a| a.host == expected), "keep_host {keep_host}: {arrived:?}");
    }
    cluster.stop().await;
}
