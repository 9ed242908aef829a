//! The boundary where requests leave the worker. [`HttpSender`] is the real one (hyper,
//! pooled keep-alive connections, HTTP/1.1 or HTTP/2, https via rustls); [`SimulatedSender`]
//! does everything but the socket write, to measure the dispatch path alone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reprise_rules::diff::Response;
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// How one send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response arrived: its status (for a failed gRPC call, the one its grpc-status
    /// maps to) and body size.
    Response {
        status: u16,
        body_bytes: u64,
    },
    Error(ErrorKind),
    /// Nothing was sent (a simulated replay): neither a response nor an error.
    Simulated,
}

impl ErrorKind {
    /// As reports and diffs name it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be made (refused, unreachable, TLS handshake).
    Connect,
    /// No complete response within the request timeout.
    Timeout,
    /// The connection broke mid-request (reset, closed early).
    Reset,
    Other,
}

/// A replayed request's body: its bytes, then its trailers (HTTP/2).
#[derive(Debug, Clone, Default)]
pub struct ReplayBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    /// Whether the length is declared up front (`content-length`); if not, an HTTP/2
    /// request goes without one, as gRPC clients send theirs.
    declares_length: bool,
}

impl ReplayBody {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>, declares_length: bool) -> Self {
        ReplayBody { data: Some(data), trailers, declares_length }
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        if self.declares_length {
            SizeHint::with_exact(len)
        } else {
            let mut hint = SizeHint::new();
            hint.set_lower(len);
            hint
        }
    }
}

/// A request as the worker sends it.
pub type ReplayRequest = Request<ReplayBody>;

/// `--keep-host`: the recorded host, sent as the Host header over HTTP/1.1 and as
/// `:authority` over HTTP/2, while the connection goes to the request URI's authority.
#[derive(Debug, Clone)]
pub struct KeptHost(pub http::HeaderValue);

impl KeptHost {
    /// `uri` with the kept host as its authority (what HTTP/2 sends as `:authority`).
    fn as_authority_of(&self, uri: &http::Uri) -> Result<http::Uri, ErrorKind> {
        let mut parts = uri.clone().into_parts();
        parts.authority = Some(http::uri::Authority::try_from(self.0.as_bytes()).map_err(|_| ErrorKind::Other)?);
        http::Uri::from_parts(parts).map_err(|_| ErrorKind::Other)
    }
}

/// Sends one request and classifies how it ended. Never panics on a bad target.
pub trait Sender: Clone + Send + Sync + 'static {
    fn send(&self, request: ReplayRequest) -> impl Future<Output = Outcome> + Send;

    /// Sends and keeps the response (its body up to [`MAX_KEPT_BODY`], its trailers) for
    /// a diff.
    fn send_keeping(&self, request: ReplayRequest) -> impl Future<Output = (Outcome, Response)> + Send;

    /// A connection of its own for one replayed session.
    type Session: Send + 'static;

    /// Sends over the session's connection (a new one if it has none or it closed);
    /// returns the connection for the session's next request, if it can take one.
    fn send_in_session(
        &self,
        session: Option<Self::Session>,
        request: ReplayRequest,
    ) -> impl Future<Output = (Outcome, Option<Self::Session>)> + Send;
}

/// Body bytes a diff keeps of a response; a longer body is compared by this prefix.
pub const MAX_KEPT_BODY: usize = 1 << 20;

/// Sender settings from the assignment.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub timeout: Duration,
    /// Every request over HTTP/2, not only those recorded on it.
    pub http2: bool,
    pub max_idle_per_host: usize,
    /// Local address for outgoing connections (multi-IP load hosts).
    pub source_ip: Option<IpAddr>,
    /// Accept any certificate from an https target.
    pub insecure_tls: bool,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One protocol's pooled client, and its connector for sessions' own connections.
#[derive(Clone)]
struct Pool {
    client: Client<Connector, ReplayBody>,
    connector: Connector,
    http2: bool,
}

impl Pool {
    /// HTTP/1.1 (ALPN `http/1.1` on https), or HTTP/2 only: h2c by prior knowledge on
    /// http, ALPN `h2` on https.
    fn new(config: &SenderConfig, http2: bool) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        http.set_local_address(config.source_ip);
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let builder =
            if config.insecure_tls { tls.with_tls_config(insecure_tls_config()) } else { tls.with_webpki_roots() }
                .https_or_http();
        let connector = if http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(http2)
            .build(connector.clone());
        Pool { client, connector, http2 }
    }

    async fn connect(
        &self,
        uri: &http::Uri,
    ) -> Result<<Connector as tower_service::Service<http::Uri>>::Response, ErrorKind> {
        use tower_service::Service;
        self.connector.clone().call(uri.clone()).await.map_err(|e| classify(e.as_ref()))
    }

    /// A connection of its own (outside the pool) to `uri`'s authority, its driver spawned.
    async fn connect_http1(
        &self,
        uri: &http::Uri,
    ) -> Result<hyper::client::conn::http1::SendRequest<ReplayBody>, ErrorKind> {
        let (send, connection) =
            hyper::client::conn::http1::handshake(self.connect(uri).await?).await.map_err(|e| classify(&e))?;
        tokio::spawn(connection);
        Ok(send)
    }

    async fn connect_http2(&self, uri: &http::Uri) -> Result<Http2Connection, ErrorKind> {
        let io = self.connect(uri).await?;
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| classify(&e))?;
        tokio::spawn(connection);
        Ok(send)
    }
}

#[derive(Clone)]
pub struct HttpSender {
    /// Requests recorded on HTTP/1.x.
    http1: Pool,
    /// Requests recorded on HTTP/2 (every request with `SenderConfig.http2`).
    http2: Pool,
    /// HTTP/2 connections of this sender's own, one per target, for requests whose
    /// `:authority` is not the target's ([`KeptHost`]): hyper's pool dials the
    /// authority it keys a connection by.
    http2_kept_host: Arc<tokio::sync::Mutex<HashMap<(http::uri::Scheme, http::uri::Authority), Http2Connection>>>,
    timeout: Duration,
}

type Http2Connection = hyper::client::conn::http2::SendRequest<ReplayBody>;

impl HttpSender {
    pub fn new(config: &SenderConfig) -> Self {
        let http2 = Pool::new(config, true);
        let http1 = if config.http2 { http2.clone() } else { Pool::new(config, false) };
        HttpSender { http1, http2, http2_kept_host: Default::default(), timeout: config.timeout }
    }

    /// Sends an HTTP/2 request with `host` as its `:authority` over this sender's own
    /// connection to the request URI's authority (made on first use, again once closed).
    async fn send_http2_with_host(
        &self,
        request: ReplayRequest,
        host: KeptHost,
    ) -> Result<http::Response<hyper::body::Incoming>, ErrorKind> {
        let uri = request.uri();
        let key = (
            uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            uri.authority().cloned().ok_or(ErrorKind::Other)?,
        );
        let mut connection = {
            let mut connections = self.http2_kept_host.lock().await;
            match connections.get(&key).filter(|c| !c.is_closed()) {
                Some(connection) => connection.clone(),
                None => {
                    let connection = self.http2.connect_http2(uri).await?;
                    connections.insert(key, connection.clone());
                    connection
                }
            }
        };
        send_http2(&mut connection, request, Some(host)).await
    }

    fn pool_for(&self, request: &ReplayRequest) -> &Pool {
        if request.version() == Version::HTTP_2 { &self.http2 } else { &self.http1 }
    }

    /// A new connection to the request's host for the request's protocol, its driver
    /// spawned.
    async fn session_connection(&self, request: &ReplayRequest) -> Result<SessionConnection, ErrorKind> {
        let pool = self.pool_for(request);
        Ok(match pool.http2 {
            true => SessionConnection::Http2(pool.connect_http2(request.uri()).await?),
            false => SessionConnection::Http1(pool.connect_http1(request.uri()).await?),
        })
    }

    /// One exchange over a session's connection. On HTTP/1.1 the request goes in origin
    /// form with a Host header (the pooled client adds both itself); on HTTP/2 the URI
    /// gives `:scheme` and `:authority`.
    async fn session_exchange(
        &self,
        session: Option<SessionConnection>,
        mut request: ReplayRequest,
    ) -> Result<(Outcome, SessionConnection), ErrorKind> {
        let http2 = self.pool_for(&request).http2;
        let mut connection = match session.filter(|s| !s.is_closed() && s.is_http2() == http2) {
            Some(connection) => connection,
            None => self.session_connection(&request).await?,
        };
        let kept_host = request.extensions_mut().remove::<KeptHost>();
        let response = match &mut connection {
            SessionConnection::Http1(send) => {
                let uri = request.uri().clone();
                if let Some(KeptHost(host)) = kept_host {
                    request.headers_mut().insert(http::header::HOST, host);
                } else if let Some(authority) = uri.authority() {
                    let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| ErrorKind::Other)?;
                    request.headers_mut().entry(http::header::HOST).or_insert(host);
                }
                *request.uri_mut() =
                    uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|_| ErrorKind::Other)?;
                send.ready().await.map_err(|e| classify(&e))?;
                send.send_request(request).await.map_err(|e| classify(&e))?
            }
            SessionConnection::Http2(send) => send_http2(send, request, kept_host).await?,
        };
        Ok((read_response(response, false).await?.0, connection))
    }
}

impl HttpSender {
    /// Sends and reads the whole response (so the connection goes back to the pool); with
    /// `keep`, holds on to its headers, the start of its body and its trailers.
    async fn exchange(&self, mut request: ReplayRequest, keep: bool) -> (Outcome, Response) {
        let exchange = async {
            let pool = self.pool_for(&request);
            let response = match request.extensions_mut().remove::<KeptHost>() {
                Some(host) if pool.http2 => self.send_http2_with_host(request, host).await?,
                Some(KeptHost(host)) => {
                    request.headers_mut().insert(http::header::HOST, host);
                    pool.client.request(request).await.map_err(|e| classify_client_error(&e))?
                }
                None => pool.client.request(request).await.map_err(|e| classify_client_error(&e))?,
            };
            read_response(response, keep).await
        };
        let failed = |kind: ErrorKind| (Outcome::Error(kind), Response::Failed(kind.name().to_string()));
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(done)) => done,
            Ok(Err(kind)) => failed(kind),
            Err(_) => failed(ErrorKind::Timeout),
        }
    }
}

impl Sender for HttpSender {
    async fn send(&self, request: ReplayRequest) -> Outcome {
        self.exchange(request, false).await.0
    }

    async fn send_keeping(&self, request: ReplayRequest) -> (Outcome, Response) {
        self.exchange(request, true).await
    }

    type Session = SessionConnection;

    async fn send_in_session(
        &self,
        session: Option<SessionConnection>,
        request: ReplayRequest,
    ) -> (Outcome, Option<SessionConnection>) {
        match tokio::time::timeout(self.timeout, self.session_exchange(session, request)).await {
            Ok(Ok((outcome, send))) => (outcome, Some(send)),
            // A failed exchange leaves the connection in no state to reuse.
            Ok(Err(kind)) => (Outcome::Error(kind), None),
            Err(_) => (Outcome::Error(ErrorKind::Timeout), None),
        }
    }
}

/// Sends `request` over an HTTP/2 connection of the sender's own, the kept host (if
/// any) as its `:authority`.
async fn send_http2(
    connection: &mut Http2Connection,
    mut request: ReplayRequest,
    kept_host: Option<KeptHost>,
) -> Result<http::Response<hyper::body::Incoming>, ErrorKind> {
    if let Some(host) = kept_host {
        *request.uri_mut() = host.as_authority_of(request.uri())?;
    }
    *request.version_mut() = Version::HTTP_2;
    connection.ready().await.map_err(|e| classify(&e))?;
    connection.send_request(request).await.map_err(|e| classify(&e))
}

/// Reads a whole response; with `keep`, holds on to its headers, the start of its body
/// and its trailers. A gRPC call that failed (`grpc-status` other than 0, in the
/// trailers or in a trailers-only response's headers) counts in the status class
/// `google.rpc.Code` maps its code to, not as the 200 it came with.
async fn read_response(
    response: http::Response<hyper::body::Incoming>,
    keep: bool,
) -> Result<(Outcome, Response), ErrorKind> {
    let (parts, mut body) = response.into_parts();
    let grpc =
        parts.headers.get(http::header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let mut grpc_status = grpc.then(|| parts.headers.get(GRPC_STATUS).cloned()).flatten();
    let mut body_bytes = 0u64;
    let mut kept = Vec::new();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        match frame.map_err(|e| classify(&e))?.into_data() {
            Ok(data) => {
                body_bytes += data.len() as u64;
                if keep && kept.len() < MAX_KEPT_BODY {
                    kept.extend_from_slice(&data[..data.len().min(MAX_KEPT_BODY - kept.len())]);
                }
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    if grpc && let Some(code) = more.get(GRPC_STATUS) {
                        grpc_status = Some(code.clone());
                    }
                    if keep {
                        trailers.extend(more);
                    }
                }
            }
        }
    }
    let status = parts.status.as_u16();
    let class = match grpc_status.as_ref().and_then(|code| std::str::from_utf8(code.as_bytes()).ok()?.parse().ok()) {
        Some(code) => grpc_status_class(code),
        None => status,
    };
    let headers = if keep { parts.headers } else { Default::default() };
    let kept = Response::Answered { status, headers, body: Bytes::from(kept), trailers };
    Ok((Outcome::Response { status: class, body_bytes }, kept))
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The HTTP status `google.rpc.Code` documents for a gRPC status code (200 for OK; an
/// unknown code is 500, as UNKNOWN is).
fn grpc_status_class(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// A session's own connection: HTTP/1.1, or HTTP/2 for requests recorded on it (a
/// session's streams then go one at a time, in the order the client opened them).
pub enum SessionConnection {
    Http1(hyper::client::conn::http1::SendRequest<ReplayBody>),
    Http2(Http2Connection),
}

impl SessionConnection {
    fn is_closed(&self) -> bool {
        match self {
            SessionConnection::Http1(send) => send.is_closed(),
            SessionConnection::Http2(send) => send.is_closed(),
        }
    }

    fn is_http2(&self) -> bool {
        matches!(self, SessionConnection::Http2(_))
    }
}

/// A TLS client that skips certificate checks (the handshake's signatures are still
/// verified), for `--insecure` replays to self-signed staging targets.
fn insecure_tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn classify_client_error(e: &hyper_util::client::legacy::Error) -> ErrorKind {
    if e.is_connect() { ErrorKind::Connect } else { classify(e) }
}

/// Finds the most telling cause in an error chain.
fn classify(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            return match io.kind() {
                Io::ConnectionRefused | Io::AddrNotAvailable | Io::HostUnreachable | Io::NetworkUnreachable => {
                    ErrorKind::Connect
                }
                Io::TimedOut => ErrorKind::Timeout,
                Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof => ErrorKind::Reset,
                _ => ErrorKind::Other,
            };
        }
        if let Some(hyper_error) = err.downcast_ref::<hyper::Error>() {
            if hyper_error.is_timeout() {
                return ErrorKind::Timeout;
            }
            if hyper_error.is_incomplete_message() || hyper_error.is_canceled() || hyper_error.is_closed() {
                return ErrorKind::Reset;
            }
        }
        cause = err.source();
    }
    ErrorKind::Other
}

/// Builds each request and sends nothing: a simulated replay, no response claimed.
#[derive(Clone, Default)]
pub struct SimulatedSender;

impl Sender for SimulatedSender {
    async fn send(&self, request: ReplayRequest) -> Outcome {
        std::hint::black_box(request);
        Outcome::Simulated
    }

    async fn send_keeping(&self, request: ReplayRequest) -> (Outcome, Response) {
        (self.send(request).await, Response::Failed("simulated".into()))
    }

    type Session = ();

    async fn send_in_session(&self, _: Option<()>, request: ReplayRequest) -> (Outcome, Option<()>) {
        (self.send(request).await, Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    #[tokio::test]
    async fn a_replay_body_gives_its_bytes_then_its_trailers_and_declares_its_length_only_if_told() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "7".parse().unwrap());
        let body = ReplayBody::new(Bytes::from_static(b"abc"), Some(trailers.clone()), false);
        assert_eq!((body.size_hint().exact(), body.size_hint().lower(), body.is_end_stream()), (None, 3, false));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "abc");

        let declared = ReplayBody::new(Bytes::from_static(b"abc"), None, true);
        assert_eq!(declared.size_hint().exact(), Some(3));
        let empty = ReplayBody::new(Bytes::new(), None, true);
        assert!(empty.is_end_stream(), "an empty body ends the stream with the headers");
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
    }
}
