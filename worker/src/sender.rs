//! The boundary where requests leave the worker. [`HttpSender`] is the real one (hyper,
//! pooled keep-alive connections, HTTP/1.1 or HTTP/2, https via rustls); [`SimulatedSender`]
//! does everything but the socket write, to measure the dispatch path alone.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
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
    /// A response arrived: its status and body size.
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

/// Sends one request and classifies how it ended. Never panics on a bad target.
pub trait Sender: Clone + Send + Sync + 'static {
    fn send(&self, request: Request<Full<Bytes>>) -> impl Future<Output = Outcome> + Send;

    /// Sends and keeps the response (its body up to [`MAX_KEPT_BODY`]) for a diff.
    fn send_keeping(&self, request: Request<Full<Bytes>>) -> impl Future<Output = (Outcome, Response)> + Send;

    /// A connection of its own for one replayed session.
    type Session: Send + 'static;

    /// Sends over the session's connection (a new one if it has none or it closed);
    /// returns the connection for the session's next request, if it can take one.
    fn send_in_session(
        &self,
        session: Option<Self::Session>,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = (Outcome, Option<Self::Session>)> + Send;
}

/// Body bytes a diff keeps of a response; a longer body is compared by this prefix.
pub const MAX_KEPT_BODY: usize = 1 << 20;

/// Sender settings from the assignment.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub timeout: Duration,
    pub http2: bool,
    pub max_idle_per_host: usize,
    /// Local address for outgoing connections (multi-IP load hosts).
    pub source_ip: Option<IpAddr>,
    /// Accept any certificate from an https target.
    pub insecure_tls: bool,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone)]
pub struct HttpSender {
    client: Client<Connector, Full<Bytes>>,
    /// The client's connector, for sessions' own connections.
    connector: Connector,
    timeout: Duration,
}

impl HttpSender {
    pub fn new(config: &SenderConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        http.set_local_address(config.source_ip);
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let builder =
            if config.insecure_tls { tls.with_tls_config(insecure_tls_config()) } else { tls.with_webpki_roots() }
                .https_or_http();
        let connector = if config.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(config.http2)
            .build(connector.clone());
        HttpSender { client, connector, timeout: config.timeout }
    }

    /// A new HTTP/1.1 connection to the request's host, its driver spawned.
    async fn session_connection(&self, uri: &http::Uri) -> Result<SessionConnection, ErrorKind> {
        use tower_service::Service;
        let io = self.connector.clone().call(uri.clone()).await.map_err(|e| classify(e.as_ref()))?;
        let (send, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| classify(&e))?;
        tokio::spawn(connection);
        Ok(send)
    }

    /// One exchange over a session's connection: the request in origin form, with a Host
    /// header (the pooled client adds both itself).
    async fn session_exchange(
        &self,
        session: Option<SessionConnection>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Outcome, SessionConnection), ErrorKind> {
        let uri = request.uri().clone();
        let mut send = match session.filter(|s| !s.is_closed()) {
            Some(send) => send,
            None => self.session_connection(&uri).await?,
        };
        if let Some(authority) = uri.authority() {
            let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| ErrorKind::Other)?;
            request.headers_mut().entry(http::header::HOST).or_insert(host);
        }
        *request.uri_mut() = uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|_| ErrorKind::Other)?;
        send.ready().await.map_err(|e| classify(&e))?;
        let response = send.send_request(request).await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut body_bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| classify(&e))?;
            body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        Ok((Outcome::Response { status, body_bytes }, send))
    }
}

impl HttpSender {
    /// Sends and reads the whole response (so the connection goes back to the pool); with
    /// `keep`, holds on to its headers and the start of its body.
    async fn exchange(&self, request: Request<Full<Bytes>>, keep: bool) -> (Outcome, Response) {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| classify_client_error(&e))?;
            let status = response.status().as_u16();
            let (parts, mut body) = response.into_parts();
            let mut body_bytes = 0u64;
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| classify(&e))?;
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                    if keep && kept.len() < MAX_KEPT_BODY {
                        kept.extend_from_slice(&data[..data.len().min(MAX_KEPT_BODY - kept.len())]);
                    }
                }
            }
            let headers = if keep { parts.headers } else { Default::default() };
            let kept = Response::Answered { status, headers, body: Bytes::from(kept) };
            Ok::<_, ErrorKind>((Outcome::Response { status, body_bytes }, kept))
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
    async fn send(&self, request: Request<Full<Bytes>>) -> Outcome {
        self.exchange(request, false).await.0
    }

    async fn send_keeping(&self, request: Request<Full<Bytes>>) -> (Outcome, Response) {
        self.exchange(request, true).await
    }

    type Session = SessionConnection;

    async fn send_in_session(
        &self,
        session: Option<SessionConnection>,
        request: Request<Full<Bytes>>,
    ) -> (Outcome, Option<SessionConnection>) {
        match tokio::time::timeout(self.timeout, self.session_exchange(session, request)).await {
            Ok(Ok((outcome, send))) => (outcome, Some(send)),
            // A failed exchange leaves the connection in no state to reuse.
            Ok(Err(kind)) => (Outcome::Error(kind), None),
            Err(_) => (Outcome::Error(ErrorKind::Timeout), None),
        }
    }
}

/// A session's own HTTP/1.1 connection.
pub type SessionConnection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

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
    async fn send(&self, request: Request<Full<Bytes>>) -> Outcome {
        std::hint::black_box(request);
        Outcome::Simulated
    }

    async fn send_keeping(&self, request: Request<Full<Bytes>>) -> (Outcome, Response) {
        (self.send(request).await, Response::Failed("simulated".into()))
    }

    type Session = ();

    async fn send_in_session(&self, _: Option<()>, request: Request<Full<Bytes>>) -> (Outcome, Option<()>) {
        (self.send(request).await, Some(()))
    }
}
