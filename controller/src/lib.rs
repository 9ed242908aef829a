//! The Reprise controller: keeps the recording catalog, plans replays over the live
//! workers, follows their stats, and serves the stats API and dashboard. Runs as the
//! `reprise-controller` binary or in-process (tests, `ctl demo`) via [`Controller::start`].

pub mod allow;
pub mod election;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod planner;
pub mod recordings;
pub mod replays;
pub mod state;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use reprise_process::token::Token;
use reprise_proto::v1::controller_server::ControllerServer;
use reprise_store::{Catalog, redact_url};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::election::{Candidate, Election, Role};
use crate::grpc::ControllerService;
use crate::recordings::Recordings;
use crate::replays::ReplayManager;
use crate::state::ControllerState;

/// Replay controller: recordings, replay planning, cluster stats.
#[derive(Parser, Debug, Clone)]
#[command(name = "reprise-controller", version)]
pub struct ControllerConfig {
    /// TOML file with any of these settings (keys are the long flag names).
    #[arg(long, env = "REPRISE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Catalog URL: etcd://host:port[,host:port][/prefix] or file://PATH.
    #[arg(long, env = "REPRISE_CATALOG")]
    pub catalog: String,
    /// Traffic log URL: kafka://host:port[,host:port]/topic or file://PATH.
    #[arg(long, env = "REPRISE_LOG")]
    pub log: String,
    /// gRPC address for ctl; port 0 picks a free port.
    #[arg(long, env = "REPRISE_CONTROLLER_LISTEN", default_value = "0.0.0.0:7100")]
    pub listen: SocketAddr,
    /// Host name or IP that ctl uses to reach this controller (with the bound ports)
    /// [default: the listen address, or the host name when listening on all interfaces].
    #[arg(long, env = "REPRISE_CONTROLLER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Seconds without this controller's heartbeat to the catalog after which, if it led,
    /// another controller takes over (keep it well below the workers' grace).
    #[arg(long, env = "REPRISE_ELECTION_TTL_SECS", default_value_t = 5)]
    pub election_ttl_secs: u64,
    /// HTTP address of the stats API and dashboard; port 0 picks a free port.
    #[arg(long, env = "REPRISE_CONTROLLER_HTTP", default_value = "0.0.0.0:7180")]
    pub http: SocketAddr,
    /// Partitions of the traffic topic when the controller creates it.
    #[arg(long, env = "REPRISE_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// How far ahead of "now" a replay's common start is set, in milliseconds (time for
    /// every worker to receive it).
    #[arg(long, env = "REPRISE_START_LEAD_MS", default_value_t = 2000)]
    pub start_lead_ms: u64,
    /// Where replays may be sent: a host, host:port, *.domain or a CIDR network (IP
    /// literals only); repeatable. A replay to anything else is refused. Without any,
    /// every target is allowed and every replay carries a warning.
    #[arg(long = "allow-target", env = "REPRISE_ALLOW_TARGETS", value_delimiter = ',')]
    pub allow_targets: Vec<allow::TargetPattern>,
    /// A file holding the token that ctl and the HTTP API must present (`Authorization:
    /// Bearer ...`; /metrics and /healthz stay open). Without it, anyone who reaches the
    /// ports may start replays.
    #[arg(long, env = "REPRISE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Seconds a finished replay's series stay on /metrics (so that a scrape sees its
    /// final counts) before they are dropped.
    #[arg(long, env = "REPRISE_METRICS_LINGER_SECS", default_value_t = reprise_process::metrics::LINGER.as_secs())]
    pub metrics_linger_secs: u64,
    #[command(flatten)]
    pub tls: reprise_process::tls::TlsArgs,
    #[command(flatten)]
    pub logging: reprise_process::LogArgs,
}

impl ControllerConfig {
    /// Defaults for everything but the catalog and log, serving on free loopback ports
    /// (an in-process cluster: tests, `ctl demo`).
    pub fn local(catalog: &str, log: &str) -> ControllerConfig {
        let args = ["--catalog", catalog, "--log", log, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
        reprise_process::parse_defaults_with(args)
    }
}

/// The longest the catalog may take to answer the controller's first read.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A running controller.
pub struct Controller {
    pub id: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    election: Arc<Election>,
    shutdown: CancellationToken,
    campaign: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Controller {
    pub async fn start(config: ControllerConfig) -> anyhow::Result<Controller> {
        if config.partitions < 1 {
            anyhow::bail!("--partitions must be at least 1");
        }
        let token = config.token_file.as_deref().map(Token::from_file).transpose().map_err(anyhow::Error::msg)?;
        let tls = config.tls.mutual()?;
        if token.is_none() {
            tracing::warn!("no --token-file: anyone who reaches the controller's ports can start replays");
        }
        let catalog = Catalog::open(&config.catalog)
            .await
            .with_context(|| format!("cannot open catalog {}", redact_url(&config.catalog)))?;
        let log = reprise_store::open_log(&config.log)
            .await
            .with_context(|| format!("cannot open traffic log {}", redact_url(&config.log)))?;
        log.ensure_topic(config.partitions)
            .await
            .with_context(|| format!("cannot create the traffic topic in {}", redact_url(&config.log)))?;
        let grpc_listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let http_listener = tokio::net::TcpListener::bind(config.http)
            .await
            .with_context(|| format!("cannot listen on {}", config.http))?;
        let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);

        let id = format!("c-{:08x}", rand::random::<u32>());
        let recordings = Arc::new(Recordings::new(catalog.clone(), log.clone(), config.partitions));
        let allowed = allow::AllowList::new(config.allow_targets.clone());
        if allowed.is_empty() {
            tracing::warn!("{}", allow::NO_ALLOW_LIST);
        }
        let replays = ReplayManager::new(
            id.clone(),
            catalog.clone(),
            recordings.clone(),
            Duration::from_millis(config.start_lead_ms),
            allowed,
            tls.as_ref().map(|tls| tls.client.clone()),
        );
        let me = Candidate {
            id: id.clone(),
            grpc: advertised(config.advertise.as_deref(), grpc_addr),
            http: advertised(config.advertise.as_deref(), http_addr),
        };
        let election = Election::new(catalog.clone(), me);
        let state = Arc::new(ControllerState {
            controller_id: id.clone(),
            catalog,
            recordings,
            replays: replays.clone(),
            election,
            token: token.map(Arc::new),
            metrics_linger: Duration::from_secs(config.metrics_linger_secs),
        });
        let shutdown = CancellationToken::new();

        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            server = server.tls_config(tls.server.clone()).context("cannot use --tls-cert and --tls-key")?;
        }
        let grpc = {
            let (state, shutdown) = (state.clone(), shutdown.clone());
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
                let authorized = state.clone();
                let service = ControllerServer::with_interceptor(ControllerService { state }, move |request| {
                    grpc::authorize(&authorized, request)
                });
                let result = server
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "controller gRPC server failed");
                }
            })
        };
        let http = {
            let (router, shutdown) = (http::router(state.clone()), shutdown.clone());
            tokio::spawn(async move {
                let served =
                    axum::serve(http_listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "stats API server failed");
                }
            })
        };
        // One read proves that the catalog answers, before this controller says it serves.
        tokio::time::timeout(CATALOG_TIMEOUT, state.catalog.list::<reprise_store::schema::Replay>())
            .await
            .map_err(|_| anyhow::anyhow!("the catalog {} did not answer within 10 s", redact_url(&config.catalog)))?
            .with_context(|| format!("cannot read the catalog {}", redact_url(&config.catalog)))?;
        let ttl = Duration::from_secs(config.election_ttl_secs.max(1));
        let campaign = tokio::spawn(state.election.clone().run(replays.clone(), ttl, shutdown.clone()));
        tracing::info!(controller = %id, grpc = %grpc_addr, http = %http_addr, "controller started");
        let election = state.election.clone();
        Ok(Controller { id, grpc_addr, http_addr, election, shutdown, campaign, tasks: vec![grpc, http] })
    }

    /// Whether this controller leads now.
    pub fn is_leader(&self) -> bool {
        self.election.is_leader()
    }

    /// Resolves once this controller leads (true) or was deposed (false).
    pub async fn leading(&self) -> bool {
        self.election.settled().await == Role::Leader
    }

    /// Resolves when this controller lost its leadership and stopped acting on replays.
    pub async fn deposed(&self) {
        while self.election.settled().await != Role::Deposed {
            std::future::pending::<()>().await;
        }
    }

    /// A clean stop: a leader resigns, so that a standby takes over at once.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.campaign.await;
        for task in self.tasks {
            task.abort();
        }
    }

    /// Stops at once without resigning, as a crash would: the leadership passes when
    /// the lease runs out (fault tests).
    pub fn abort(self) {
        self.campaign.abort();
        self.shutdown.cancel();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The address others reach `bound` at: the advertised host with the bound port, else the
/// bound address, with the host name for a wildcard one.
fn advertised(host: Option<&str>, bound: SocketAddr) -> String {
    match host {
        Some(host) => format!("{host}:{}", bound.port()),
        None if bound.ip().is_unspecified() => format!("{}:{}", reprise_process::host_name(), bound.port()),
        None => bound.to_string(),
    }
}
