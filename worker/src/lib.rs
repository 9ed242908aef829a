//! The Reprise replay worker: registers itself in the catalog, takes assignments from
//! the controller over gRPC, replays its share of a recording on the shared timeline,
//! and streams its statistics back. Runs as the `reprise-worker` binary or in-process
//! (tests, `ctl demo`) through [`Worker::start`].

pub mod replay;
pub mod request;
pub mod sender;
pub mod service;
pub mod stats;
mod timer;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::worker_server::WorkerServer;
use reprise_store::Catalog;
use reprise_store::schema::WorkerInfo;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::replay::HostSettings;
use crate::service::WorkerService;

/// Replay worker: registers in the catalog and replays what the controller assigns.
#[derive(Parser, Debug, Clone)]
#[command(name = "reprise-worker", version)]
pub struct WorkerConfig {
    /// TOML file with any of these settings (keys are the long flag names).
    #[arg(long, env = "REPRISE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Catalog URL: etcd://host:port[,host:port][/prefix] or file://PATH.
    #[arg(long, env = "REPRISE_CATALOG")]
    pub catalog: String,
    /// Address to serve gRPC on; port 0 picks a free port (the one bound is registered).
    #[arg(long, env = "REPRISE_WORKER_LISTEN", default_value = "0.0.0.0:7200")]
    pub listen: SocketAddr,
    /// Worker id in the catalog [default: w-<random>].
    #[arg(long, env = "REPRISE_WORKER_NAME")]
    pub name: Option<String>,
    /// Address the controller should dial [default: the listen address, or the host name
    /// with the bound port when listening on all interfaces].
    #[arg(long, env = "REPRISE_WORKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// A label for worker selection, KEY=VALUE; repeatable or comma-separated.
    #[arg(
        long = "label",
        env = "REPRISE_WORKER_LABELS",
        value_delimiter = ',',
        value_parser = reprise_process::parse_label
    )]
    pub labels: Vec<(String, String)>,
    /// Stop sending when no controller has been heard for this many seconds.
    #[arg(long, env = "REPRISE_CONTROLLER_GRACE_SECS", default_value_t = 15.0)]
    pub controller_grace_secs: f64,
    /// Local IP address for outgoing replay connections (for multi-IP load hosts).
    #[arg(long, env = "REPRISE_SOURCE_IP")]
    pub source_ip: Option<IpAddr>,
    /// Dispatch threads per replay, each with its own runtime and connection pool
    /// [default: one per core].
    #[arg(long, env = "REPRISE_DISPATCH_THREADS", default_value_t = 0, hide_default_value = true)]
    pub dispatch_threads: usize,
    /// TTL of the catalog lease that keeps this worker registered.
    #[arg(long, env = "REPRISE_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// Address to serve this worker's Prometheus metrics on (/metrics): its own counts
    /// per replay [default: none].
    #[arg(long, env = "REPRISE_METRICS")]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: reprise_process::tls::TlsArgs,
    #[command(flatten)]
    pub logging: reprise_process::LogArgs,
}

impl WorkerConfig {
    /// Defaults for everything but the catalog and the name, serving on a free loopback
    /// port (an in-process cluster: tests, `ctl demo`).
    pub fn local(catalog: &str, name: &str) -> WorkerConfig {
        let args = ["--catalog", catalog, "--name", name, "--listen", "127.0.0.1:0"];
        reprise_process::parse_defaults_with(args)
    }
}

/// A running worker.
pub struct Worker {
    pub id: String,
    /// The gRPC address actually bound.
    pub local_addr: SocketAddr,
    service: Arc<WorkerService>,
    shutdown: CancellationToken,
    /// The gRPC server and the watchdog.
    tasks: [JoinHandle<()>; 2],
    registration: JoinHandle<()>,
}

/// How long a stopping worker waits for its sends in flight to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a stopping worker keeps serving for controllers to read its final reports.
const FINAL_REPORTS_LIMIT: Duration = Duration::from_secs(5);

impl Worker {
    /// Binds, registers in the catalog, and serves until [`Worker::shutdown`].
    pub async fn start(config: WorkerConfig) -> anyhow::Result<Worker> {
        if config.controller_grace_secs.is_nan() || config.controller_grace_secs <= 0.0 {
            anyhow::bail!("--controller-grace-secs must be positive");
        }
        // Checked before registering: a worker no controller can call must not be listed.
        let tls = config.tls.mutual()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let metrics_listener = match config.metrics {
            Some(addr) => {
                Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?)
            }
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let id = config.name.clone().unwrap_or_else(|| format!("w-{:08x}", rand::random::<u32>()));
        let address = match &config.advertise {
            Some(advertise) => advertise.clone(),
            None if local_addr.ip().is_unspecified() => {
                format!("{}:{}", reprise_process::host_name(), local_addr.port())
            }
            None => local_addr.to_string(),
        };
        let catalog = Catalog::open(&config.catalog)
            .await
            .with_context(|| format!("cannot open catalog {}", reprise_store::redact_url(&config.catalog)))?;
        let info = WorkerInfo {
            id: id.clone(),
            address,
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: PROTOCOL_VERSION,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            labels: config.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            started_at_ms: reprise_store::now_ms(),
            controller_grace_ms: (config.controller_grace_secs * 1000.0) as u64,
        };
        let ttl = Duration::from_secs(config.lease_ttl_secs.max(1));
        let lease = register(&catalog, &info, ttl).await?;

        let grace = Duration::from_secs_f64(config.controller_grace_secs);
        let host = HostSettings { source_ip: config.source_ip, dispatch_threads: config.dispatch_threads };
        let service = WorkerService::new(id.clone(), grace, host);
        let shutdown = CancellationToken::new();
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls.server).context("cannot use --tls-cert and --tls-key")?;
        }
        let server = {
            let (service, shutdown) = (service.clone(), shutdown.clone());
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let result = server
                    .add_service(WorkerServer::from_arc(service))
                    .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "worker gRPC server failed");
                }
            })
        };
        let watchdog = tokio::spawn(service.clone().watchdog());
        if let Some(listener) = metrics_listener {
            let service = service.clone();
            tokio::spawn(reprise_process::metrics::serve(
                listener,
                move |format| service.metrics(format),
                shutdown.clone().cancelled_owned(),
            ));
        }
        let registration = tokio::spawn(keep_registered(catalog, info, lease, ttl, shutdown.clone()));
        tracing::info!(worker = %id, addr = %local_addr, metrics = ?metrics_addr, "worker started");
        Ok(Worker { id, local_addr, service, shutdown, tasks: [server, watchdog], registration })
    }

    /// A clean stop: no new sends; what is in flight finishes (bounded); the final
    /// reports, whose checkpoints let the controller hand the rest to other workers, go
    /// out on the open stats streams; then the worker deregisters and stops serving.
    pub async fn shutdown(self) {
        let released = self.service.release_all();
        let drained = futures::future::join_all(released.iter().map(|replay| async {
            let mut reports = replay.subscribe();
            let _ = reports.wait_for(|r| r.state().is_final()).await;
        }));
        if tokio::time::timeout(DRAIN_LIMIT, drained).await.is_err() {
            tracing::warn!(worker = %self.id, "sends still in flight after {} s; stopping anyway", DRAIN_LIMIT.as_secs());
        }
        // Stops accepting calls; open stats streams end after their final report.
        self.shutdown.cancel();
        let _ = self.registration.await;
        let [server, watchdog] = self.tasks;
        watchdog.abort();
        let abort = server.abort_handle();
        if tokio::time::timeout(FINAL_REPORTS_LIMIT, server).await.is_err() {
            abort.abort();
        }
        tracing::info!(worker = %self.id, released = released.len(), "worker stopped");
    }
}

/// Registers the worker under a new lease, unless a live worker already has its name: a
/// second worker never replaces the first (which would then vanish when either exits).
async fn register(catalog: &Catalog, info: &WorkerInfo, ttl: Duration) -> anyhow::Result<reprise_store::Lease> {
    let lease = catalog.lease(ttl).await.context("cannot get a catalog lease")?;
    if catalog.create_leased(info, &lease).await.context("cannot register in the catalog")? {
        return Ok(lease);
    }
    let _ = lease.revoke().await;
    let holder = catalog.get::<WorkerInfo>(&info.id).await.ok().flatten().map(|s| s.value.address);
    anyhow::bail!(
        "a worker named {:?} is already live in the catalog (at {}): give this one another --name, or stop that \
         one (a worker that just died leaves the catalog within {} s)",
        info.id,
        holder.as_deref().unwrap_or("an unknown address"),
        ttl.as_secs()
    )
}

/// Keeps the worker's catalog entry alive; re-registers under a new lease after the
/// catalog was unreachable long enough to lose the old one; deregisters on shutdown.
async fn keep_registered(
    catalog: Catalog,
    info: WorkerInfo,
    mut lease: reprise_store::Lease,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = lease.wait_lost() => {}
            _ = shutdown.cancelled() => {
                if let Err(e) = lease.revoke().await {
                    tracing::warn!(error = %e, "could not deregister from the catalog");
                }
                return;
            }
        }
        tracing::warn!(worker = %info.id, "catalog lease lost; re-registering");
        lease = loop {
            match register(&catalog, &info, ttl).await {
                Ok(lease) => break lease,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "re-registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        };
        tracing::info!(worker = %info.id, "re-registered");
    }
}
