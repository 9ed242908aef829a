//! Talking to the controller: connect (with the protocol check) and follow a replay.

use std::sync::Arc;
use std::time::Duration;

use reprise_process::token::Token;
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_proto::v1::{HelloRequest, PacingMode, ReplayOptions, ReplayRef, ReplayStatus, StartReplayRequest};
use reprise_proto::{PROTOCOL_VERSION, error_causes, reads_as_certificate_refused, reads_as_hang_up};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

pub type Client = ControllerClient<InterceptedService<Channel, Credentials>>;

/// How long a call may take by default (a replay's start assigns every worker first).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The controllers to talk to (comma-separated addresses), the bound on every call, the
/// token to present, and TLS (the controller's CA and, for mutual TLS, ctl's certificate).
#[derive(Clone)]
pub struct Target {
    pub addresses: String,
    pub timeout: Duration,
    pub token: Option<Arc<Token>>,
    pub tls: Option<ClientTlsConfig>,
}

impl Target {
    /// `addresses` with the default timeout, no token and no TLS.
    pub fn new(addresses: impl Into<String>) -> Target {
        Target { addresses: addresses.into(), timeout: CALL_TIMEOUT, token: None, tls: None }
    }

    /// The leader among the addresses, or, when none of them leads, the first that
    /// answers (a standby serves reads). Every call, and the connection itself, is
    /// bounded by the timeout.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let credentials = Credentials::new(self.token.as_deref())?;
        let mut standby = None;
        let mut errors = Vec::new();
        for address in self.addresses.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match self.connect_one(address, &credentials).await {
                Ok((client, true)) => return Ok(client),
                Ok((client, false)) => standby = standby.or(Some(client)),
                Err(e) => errors.push(e),
            }
        }
        match (standby, errors.len()) {
            (Some(client), _) => Ok(client),
            (None, 1) => Err(errors.remove(0)),
            (None, 0) => anyhow::bail!("no controller address given"),
            (None, _) => anyhow::bail!("{}", errors.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>().join("; ")),
        }
    }

    /// One controller, and whether it leads.
    async fn connect_one(&self, address: &str, credentials: &Credentials) -> anyhow::Result<(Client, bool)> {
        let timeout = self.timeout;
        let url = controller_url(address, self.tls.is_some())?;
        let mut endpoint = Channel::from_shared(url)
            .map_err(|e| UsageError(format!("{address:?} is not a controller URL (e.g. http://127.0.0.1:7100): {e}")))?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout);
        if let Some(tls) = &self.tls {
            endpoint =
                endpoint.tls_config(tls.clone()).map_err(|e| UsageError(format!("TLS: {}", error_causes(&e))))?;
        }
        let tls = self.tls.is_some();
        let unreachable = |e: &(dyn std::error::Error + 'static)| {
            anyhow::anyhow!("cannot reach the controller at {address}: {}{}", error_causes(e), tls_hint(e, tls))
        };
        let silent =
            || anyhow::anyhow!("cannot reach the controller at {address}: no answer within {} s", timeout.as_secs());
        let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(connected) => connected.map_err(|e| unreachable(&e))?,
            Err(_) => return Err(silent()),
        };
        let mut client = ControllerClient::with_interceptor(channel, credentials.clone());
        let hello = client.hello(HelloRequest { protocol_version: PROTOCOL_VERSION }).await.map_err(|status| {
            let timed_out = error_causes(&status).contains("Timeout expired");
            match status.code() {
                tonic::Code::DeadlineExceeded => silent(),
                _ if timed_out => silent(),
                // A transport failure (a TLS refusal comes only now, at the first call).
                _ if let Some(transport) = std::error::Error::source(&status) => unreachable(transport),
                tonic::Code::Cancelled | tonic::Code::Unavailable => silent(),
                // An HTTP server that is not a gRPC one (the controller's own HTTP API, say).
                _ if status.message().contains("grpc-status header missing") => anyhow::anyhow!(
                    "{address} answers HTTP but not gRPC: ctl needs the controller's gRPC address (its --listen, \
                     port 7100 by default), not its HTTP API"
                ),
                _ => status_error(status),
            }
        })?;
        Ok((client, hello.into_inner().leader))
    }
}

/// Presents the token (if any) on every call.
#[derive(Clone)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl Credentials {
    fn new(token: Option<&Token>) -> anyhow::Result<Credentials> {
        let header = token.map(|t| t.bearer().parse::<MetadataValue<Ascii>>()).transpose();
        let header = header.map_err(|_| UsageError("the token holds characters a header cannot carry".into()))?;
        Ok(Credentials(header))
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Connects to the controller at `address` and checks that it speaks our protocol.
pub async fn connect(address: &str) -> anyhow::Result<Client> {
    connect_with_timeout(address, CALL_TIMEOUT).await
}

/// [`Target::connect`] without a token.
pub async fn connect_with_timeout(addresses: &str, timeout: Duration) -> anyhow::Result<Client> {
    Target { timeout, ..Target::new(addresses) }.connect().await
}

/// `host:port` as a URL (https with TLS); URLs as they are, if their scheme agrees.
fn controller_url(address: &str, tls: bool) -> Result<String, UsageError> {
    let scheme = if tls { "https" } else { "http" };
    match address.split_once("://") {
        None => Ok(format!("{scheme}://{address}")),
        Some(("https", _)) if !tls => Err(UsageError(format!(
            "{address} is https: pass --tls-ca, the CA that signed the controller's certificate"
        ))),
        Some(("http", rest)) if tls => Ok(format!("https://{rest}")),
        Some(_) => Ok(address.to_string()),
    }
}

/// What a TLS mismatch between ctl and the controller looks like, said plainly.
fn tls_hint(error: &(dyn std::error::Error + 'static), tls: bool) -> &'static str {
    let text = error_causes(error);
    let closed = reads_as_hang_up(&text);
    if !tls && (closed || text.contains("frame with invalid size")) {
        " (if the controller uses TLS, pass --tls-ca)"
    } else if reads_as_certificate_refused(&text) || (tls && closed) {
        // TLS 1.3 refuses a client certificate after the handshake: an alert or a close.
        " (the controller wants a client certificate signed by its CA: check --tls-cert and --tls-key)"
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " (the controller does not speak TLS: drop --tls-ca)"
    } else if text.contains("UnknownIssuer") || text.contains("NotValidForName") {
        " (the controller's certificate is not one --tls-ca vouches for)"
    } else {
        ""
    }
}

/// A controller's refusal as one clear line: its message. A refused argument is a
/// [`UsageError`] (exit status 2).
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::InvalidArgument => UsageError(status.message().to_string()).into(),
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

/// The command was asked for something invalid (as opposed to failing while doing it).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Follows replay `id` to its end; `on_status` sees every status on the way. Returns the
/// final status (or, if the watch broke off early, the status the controller reports).
pub async fn follow(
    client: &mut Client,
    id: &str,
    mut on_status: impl FnMut(&ReplayStatus),
) -> anyhow::Result<ReplayStatus> {
    let reference = || ReplayRef { id: id.to_string() };
    let mut events = client.watch_replay(reference()).await.map_err(status_error)?.into_inner();
    while let Some(event) = events.message().await.map_err(status_error)? {
        let Some(status) = event.status else { continue };
        on_status(&status);
        if status.state().is_final() {
            return Ok(status);
        }
    }
    // The stream ended early (controller restart): report where it stands.
    Ok(client.get_replay(reference()).await.map_err(status_error)?.into_inner())
}

/// A replay of `recording` to `target` at original pace, `multiple` times, with bounds fit
/// for one machine (256 in flight, 5 s timeout): the demo's replay and the tests'.
pub fn replay_request(recording: &str, target: &str, multiple: u32) -> StartReplayRequest {
    StartReplayRequest {
        protocol_version: PROTOCOL_VERSION,
        recording_id: recording.into(),
        options: Some(ReplayOptions {
            target: target.into(),
            multiple,
            speed: 1.0,
            pacing: PacingMode::Original.into(),
            max_in_flight: 256,
            request_timeout_ms: 5_000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_url_follows_tls_and_an_https_url_needs_the_ca() {
        assert_eq!(controller_url("10.0.0.1:7100", false).unwrap(), "http://10.0.0.1:7100");
        assert_eq!(controller_url("10.0.0.1:7100", true).unwrap(), "https://10.0.0.1:7100");
        assert_eq!(controller_url("http://c:7100", true).unwrap(), "https://c:7100");
        assert_eq!(controller_url("https://c:7100", true).unwrap(), "https://c:7100");
        assert_eq!(
            controller_url("https://c:7100", false).unwrap_err().to_string(),
            "https://c:7100 is https: pass --tls-ca, the CA that signed the controller's certificate"
        );
    }
}
