//! Talking to the controller: connect (with the protocol check) and follow a replay.

use std::sync::Arc;
use std::time::Duration;

use reprise_process::token::Token;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_proto::v1::{HelloRequest, PacingMode, ReplayOptions, ReplayRef, ReplayStatus, StartReplayRequest};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = ControllerClient<InterceptedService<Channel, Credentials>>;

/// How long a call may take by default (a replay's start assigns every worker first).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The controllers to talk to (comma-separated addresses), the bound on every call, and
/// the token to present.
#[derive(Clone)]
pub struct Target {
    pub addresses: String,
    pub timeout: Duration,
    pub token: Option<Arc<Token>>,
}

impl Target {
    /// `addresses` with the default timeout and no token.
    pub fn new(addresses: impl Into<String>) -> Target {
        Target { addresses: addresses.into(), timeout: CALL_TIMEOUT, token: None }
    }

    /// The leader among the addresses, or, when none of them leads, the first that
    /// answers (a standby serves reads). Every call, and the connection itself, is
    /// bounded by the timeout.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let credentials = Credentials::new(self.token.as_deref())?;
        let mut standby = None;
        let mut errors = Vec::new();
        for address in self.addresses.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match connect_one(address, self.timeout, &credentials).await {
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

/// One controller, and whether it leads.
async fn connect_one(address: &str, timeout: Duration, credentials: &Credentials) -> anyhow::Result<(Client, bool)> {
    let endpoint = Channel::from_shared(format_url(address))
        .map_err(|e| UsageError(format!("{address:?} is not a controller URL (e.g. http://127.0.0.1:7100): {e}")))?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout);
    let unreachable = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot reach the controller at {address}: {e}");
    let silent = || unreachable(&format!("no answer within {} s", timeout.as_secs()));
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(connected) => connected.map_err(|e| unreachable(&e))?,
        Err(_) => return Err(silent()),
    };
    let mut client = ControllerClient::with_interceptor(channel, credentials.clone());
    let hello = client.hello(HelloRequest { protocol_version: PROTOCOL_VERSION }).await.map_err(|status| {
        match status.code() {
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded | tonic::Code::Unavailable => silent(),
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

/// `host:port` as a URL; URLs as they are.
fn format_url(address: &str) -> String {
    if address.contains("://") { address.to_string() } else { format!("http://{address}") }
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
