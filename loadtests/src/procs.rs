//! A process-level fault harness: the real `reprise-controller` and `reprise-worker`
//! binaries as child processes, on a private etcd and broker, so that tests can do to
//! them what happens to daemons in production: SIGKILL, SIGTERM, SIGSTOP/SIGCONT, a
//! restart on the same ports, a catalog or broker that stops or freezes.
//!
//! * [`Services`]: a private etcd and broker, run by `deploy/local/services.sh` with a
//!   state dir and free ports of their own (fault tests stop them, so they must not be
//!   the shared test servers); each can be stopped and started (data kept) or frozen.
//! * [`Daemon`]: one binary on fixed loopback ports (a restart keeps its address), its
//!   stdout and stderr in a log file; it is killed on drop.
//! * [`ProcessCluster`]: services, N controllers, M workers and an in-process [`Sink`],
//!   with a client that finds the leader among all the controllers.
//!
//! The binaries are taken from the test executable's target dir (or the dir named by
//! `$REPRISE_TEST_BIN_DIR`): build them first (`cargo build --workspace --bins`;
//! `cargo test --workspace --all-targets` does too). Every wait is bounded; all traffic
//! stays on 127.0.0.1.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reprise_ctl::client::{self, Client, Target};
use reprise_ctl::commands::follow_with_progress;
use reprise_process::tls::TlsArgs;
use reprise_process::token::Token;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{HelloRequest, Recording, ReplayStatus, StartReplayRequest};
use reprise_store::schema::WorkerInfo;
use tonic::transport::ClientTlsConfig;

use crate::cluster::{record_synthetic, worker_source_ip};
use crate::pki::{CertFiles, TestCa};
use crate::sink::Sink;
use crate::synth::Profile;

/// How long a daemon may take to accept connections on its gRPC port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first controller may take to win its election.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// The bound of every call the harness makes to a controller.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the harness polls while it waits.
const POLL: Duration = Duration::from_millis(100);

/// `n` distinct free loopback ports: bound together, then released for the caller to use.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a free loopback port")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Sends `signal` to `pid` (kill(2)).
fn send_signal(pid: i32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

// ------------------------------------------------------------------ services

/// A private etcd and broker run by `deploy/local/services.sh` (state in a temporary
/// dir, free ports); `down` on drop.
pub struct Services {
    dir: tempfile::TempDir,
    pub etcd_port: u16,
    pub etcd_peer_port: u16,
    pub kafka_port: u16,
    /// etcd serves TLS and wants client certificates: the files the script and the
    /// catalog URL name.
    etcd_tls: Option<PathBuf>,
}

/// The services script of this repository.
fn services_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/services.sh")
}

impl Services {
    /// Starts both servers (`services.sh up`) and waits until they answer.
    pub async fn start() -> anyhow::Result<Services> {
        Services::start_with(None).await
    }

    /// [`Services::start`] with etcd serving TLS and asking for client certificates,
    /// both signed by `ca`.
    pub async fn start_with_etcd_tls(ca: &TestCa) -> anyhow::Result<Services> {
        Services::start_with(Some(ca)).await
    }

    async fn start_with(etcd_ca: Option<&TestCa>) -> anyhow::Result<Services> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let dir = tempfile::Builder::new().prefix("reprise-services-").tempdir()?;
            let ports = free_ports(3)?;
            let etcd_tls = etcd_ca.map(|ca| write_etcd_tls(ca, &dir.path().join("etcd-tls"))).transpose()?;
            let services =
                Services { dir, etcd_port: ports[0], etcd_peer_port: ports[1], kafka_port: ports[2], etcd_tls };
            match services.run(&["up"]).await {
                Ok(()) => return Ok(services),
                // A free port can be taken by a parallel test before the server binds it:
                // fresh ports (dropping these runs `down` on what did start).
                Err(e) if attempts < 3 && e.to_string().contains("already in use") => {
                    eprintln!("services: a port was taken meanwhile, on fresh ports: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The state dir (pid files, server logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A catalog URL on this etcd under `prefix` (the server is private: no clash).
    pub fn etcd_catalog_url(&self, prefix: &str) -> String {
        let url = format!("etcd://127.0.0.1:{}/{prefix}", self.etcd_port);
        match &self.etcd_tls {
            Some(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                format!(
                    "{url}?tls_ca={}&tls_cert={}&tls_key={}",
                    file("ca.pem"),
                    file("client.pem"),
                    file("client.key")
                )
            }
            None => url,
        }
    }

    /// A traffic log URL on this broker, topic `topic`.
    pub fn kafka_log_url(&self, topic: &str) -> String {
        format!("kafka://127.0.0.1:{}/{topic}", self.kafka_port)
    }

    /// Stops `server` ("etcd" or "kafka"), keeping its data.
    pub async fn stop_server(&self, server: &str) -> anyhow::Result<()> {
        self.run(&["stop", server]).await
    }

    /// Starts `server` again, data kept, and waits until it answers.
    pub async fn start_server(&self, server: &str) -> anyhow::Result<()> {
        self.run(&["start", server]).await
    }

    /// Freezes etcd (SIGSTOP): it accepts connections but never answers.
    pub fn pause_etcd(&self) -> anyhow::Result<()> {
        self.signal("etcd", libc::SIGSTOP)
    }

    pub fn resume_etcd(&self) -> anyhow::Result<()> {
        self.signal("etcd", libc::SIGCONT)
    }

    /// Freezes the broker (SIGSTOP).
    pub fn pause_kafka(&self) -> anyhow::Result<()> {
        self.signal("kafka", libc::SIGSTOP)
    }

    pub fn resume_kafka(&self) -> anyhow::Result<()> {
        self.signal("kafka", libc::SIGCONT)
    }

    /// The script with this instance's state dir and ports.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(services_script())
            .args(args)
            .env("REPRISE_SERVICES_DIR", self.dir.path())
            .env("REPRISE_ETCD_PORT", self.etcd_port.to_string())
            .env("REPRISE_ETCD_PEER_PORT", self.etcd_peer_port.to_string())
            .env("REPRISE_KAFKA_PORT", self.kafka_port.to_string())
            .stdin(Stdio::null());
        if let Some(dir) = &self.etcd_tls {
            command.env("REPRISE_ETCD_TLS_DIR", dir);
        }
        command
    }

    /// Runs the script (its own waits are bounded) off the async threads.
    async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let what = format!("services.sh {}", args.join(" "));
        let mut command = self.command(args);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await?
            .with_context(|| format!("cannot run {what}"))?;
        if !output.status.success() {
            bail!("{what} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Signals the server `name` (`etcd` or `kafka`) by its pid file; its process group
    /// when it leads one (the script starts each server in a session of its own).
    fn signal(&self, name: &str, signal: libc::c_int) -> anyhow::Result<()> {
        let pidfile = self.dir.path().join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&pidfile).with_context(|| format!("{name} is not running"))?;
        let pid: i32 = text.trim().parse().with_context(|| format!("bad pid in {}", pidfile.display()))?;
        // SAFETY: getpgid(2) has no memory-safety preconditions.
        let target = if unsafe { libc::getpgid(pid) } == pid { -pid } else { pid };
        send_signal(target, signal).with_context(|| format!("cannot signal {name} (pid {pid})"))
    }
}

/// The files `services.sh` reads for a TLS etcd (`REPRISE_ETCD_TLS_DIR`), in `dir`.
fn write_etcd_tls(ca: &TestCa, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(&ca.ca_file, dir.join("ca.pem"))?;
    for (who, name) in [("etcd", "server"), ("etcd-client", "client")] {
        let issued = ca.issue(who)?;
        std::fs::rename(issued.cert, dir.join(format!("{name}.pem")))?;
        std::fs::rename(issued.key, dir.join(format!("{name}.key")))?;
    }
    Ok(dir.to_path_buf())
}

impl Drop for Services {
    fn drop(&mut self) {
        // A frozen server would otherwise hold `down` up until its SIGKILL.
        let _ = self.resume_etcd();
        let _ = self.resume_kafka();
        match self.command(&["down"]).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("procs: services.sh down failed: {}", String::from_utf8_lossy(&output.stderr)),
            Err(e) => eprintln!("procs: cannot run services.sh down: {e}"),
        }
    }
}

// ------------------------------------------------------------------ daemons

/// Where [`binary`] looks instead of the test executable's target dir, if set: for
/// binaries built elsewhere (a target dir shared with another checkout holds whichever
/// checkout built last).
/// Starts a third-party server (nginx, Apache) quietly and waits until it accepts
/// connections on `port`; if it does not within 5 s, stops it and says what its
/// `error_log` says.
pub fn start_server(command: &mut Command, port: u16, error_log: &Path) -> anyhow::Result<Child> {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {name} (deploy/local/setup.sh installs it)"))?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("{name} did not start: {}", std::fs::read_to_string(error_log).unwrap_or_default())
}

pub const BIN_DIR_VAR: &str = "REPRISE_TEST_BIN_DIR";

/// A binary of this workspace next to the test executable (`target/debug/NAME`), or in
/// [`BIN_DIR_VAR`].
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().context("cannot locate the test executable")?;
            let dir = exe.parent().context("the test executable has no directory")?;
            if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir }.to_path_buf()
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build the daemons first (`cargo build --workspace --bins`; \
             `cargo test --workspace --all-targets` builds them too) or name their dir in ${BIN_DIR_VAR}",
            path.display()
        );
    }
    Ok(path)
}

/// One real daemon process on fixed ports, its stdout and stderr appended to a log file
/// (restarts included). Killed on drop; a panicking test shows its log's last lines.
pub struct Daemon {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    grpc: SocketAddr,
    /// A controller's HTTP API, a worker's metrics (`--metrics`).
    http: Option<SocketAddr>,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the workspace binary `binary_name` (see [`binary`]) with `args` and extra
    /// `env` (inherited `REPRISE_*` variables are removed); `grpc` is where it will accept
    /// connections. Does not wait: see [`Daemon::ready`].
    pub fn spawn(
        binary_name: &str,
        label: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        grpc: SocketAddr,
    ) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("reprise-daemon-").tempdir()?;
        let log = dir.path().join(format!("{label}.log"));
        let program = binary(binary_name)?;
        let mut daemon =
            Daemon { label: label.into(), program, args, env, grpc, http: None, log, child: None, _dir: dir };
        daemon.spawn_child()?;
        Ok(daemon)
    }

    /// A controller on free loopback ports (gRPC and HTTP) with `extra` flags.
    pub fn controller(label: &str, catalog: &str, log: &str, extra: &[String]) -> anyhow::Result<Daemon> {
        let ports = free_ports(2)?;
        let grpc = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        let mut args: Vec<String> =
            ["--catalog", catalog, "--log", log, "--listen", &grpc.to_string()].into_iter().map(String::from).collect();
        let http = SocketAddr::from(([127, 0, 0, 1], ports[1]));
        args.extend(["--http".into(), http.to_string()]);
        args.extend_from_slice(extra);
        let mut daemon = Daemon::spawn("reprise-controller", label, args, Vec::new(), grpc)?;
        daemon.http = Some(http);
        Ok(daemon)
    }

    /// A worker named `name` on a free loopback port with `extra` flags.
    pub fn worker(name: &str, catalog: &str, extra: &[String]) -> anyhow::Result<Daemon> {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_ports(1)?[0]));
        let mut args: Vec<String> = ["--catalog", catalog, "--listen", &grpc.to_string(), "--name", name]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend_from_slice(extra);
        Daemon::spawn("reprise-worker", name, args, Vec::new(), grpc)
    }

    /// A worker as [`Daemon::worker`] that serves its metrics on a free loopback port.
    pub fn worker_with_metrics(name: &str, catalog: &str, extra: &[String]) -> anyhow::Result<Daemon> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_ports(1)?[0]));
        let extra = [extra, &["--metrics".into(), metrics.to_string()]].concat();
        let mut daemon = Daemon::worker(name, catalog, &extra)?;
        daemon.http = Some(metrics);
        Ok(daemon)
    }

    /// Waits until the daemon accepts connections ([`READY_TIMEOUT`]).
    pub async fn ready(mut self) -> anyhow::Result<Daemon> {
        self.wait_ready(READY_TIMEOUT).await?;
        Ok(self)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A controller's HTTP API address, a worker's metrics address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn_child(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        if self.child.is_some() {
            writeln!(log, "--- procs: {} restarted ---", self.label)?;
        }
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REPRISE_") {
                command.env_remove(key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().with_context(|| format!("cannot start {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits (at most `limit`) until the gRPC port accepts a TCP connection; fails at once
    /// if the process exits first.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status()? {
                bail!("{} exited during startup ({status}); its log ends:\n{}", self.label, self.log_tail(20));
            }
            let probe = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(self.grpc));
            if matches!(probe.await, Ok(Ok(_))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {} within {limit:?}; its log ends:\n{}",
                    self.label,
                    self.grpc,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status if the process has ended (not running counts as ended).
    fn exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was never started", self.label),
        }
    }

    /// Waits (at most `limit`) for the process to exit; returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still runs after {limit:?}; its log ends:\n{}", self.label, self.log_tail(20));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// SIGKILL, as a crash: no clean shutdown, leases run out on their own. Reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                child.kill()?;
            }
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM (and SIGCONT, so that a stopped daemon acts on it); waits at most `limit`
    /// for the exit and returns its status.
    pub async fn term(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        if self.is_running() {
            self.signal(libc::SIGTERM)?;
            self.signal(libc::SIGCONT)?;
        }
        self.wait_exit(limit).await
    }

    /// SIGSTOP: the daemon freezes (its sockets stay open, nothing answers).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT: a stopped daemon runs on.
    pub fn cont(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = self.pid().with_context(|| format!("{} was never started", self.label))?;
        send_signal(pid as i32, signal).with_context(|| format!("cannot signal {} (pid {pid})", self.label))
    }

    /// Kills the daemon if it runs, starts it again with the same arguments and ports,
    /// and waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn_child()?;
        self.wait_ready(READY_TIMEOUT).await
    }

    /// The last `n` lines of the daemon's log (stdout and stderr, every run).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill();
        if std::thread::panicking() {
            eprintln!("--- last lines of {} ({}) ---\n{}", self.label, self.log.display(), self.log_tail(30));
        }
    }
}

// ------------------------------------------------------------------ cluster

#[derive(Debug, Clone)]
pub struct ProcessClusterConfig {
    /// The catalog prefix and traffic topic.
    pub name: String,
    pub controllers: usize,
    pub workers: usize,
    pub partitions: i32,
    pub election_ttl_secs: u64,
    pub controller_grace_secs: f64,
    pub lease_ttl_secs: u64,
    /// The sink checks request ids `0..expected_ids` (0: no checking).
    pub expected_ids: u64,
    /// More flags for every controller; `{sink}` stands for the sink's address.
    pub controller_flags: Vec<String>,
    /// The controllers' token (`--token-file`); the harness presents it on its calls.
    pub token: Option<String>,
    /// TLS on every link but the broker: etcd asks for client certificates, and the
    /// controllers and workers talk mutual TLS, each with a certificate of its own.
    pub tls: bool,
    /// Every worker serves its metrics (`--metrics`, see [`Daemon::http_addr`]).
    pub worker_metrics: bool,
}

impl ProcessClusterConfig {
    /// The binaries' defaults but 6 partitions, as the in-process cluster.
    pub fn new(name: &str, controllers: usize, workers: usize) -> Self {
        ProcessClusterConfig {
            name: name.into(),
            controllers,
            workers,
            partitions: 6,
            election_ttl_secs: 5,
            controller_grace_secs: 15.0,
            lease_ttl_secs: 10,
            expected_ids: 0,
            controller_flags: Vec::new(),
            token: None,
            tls: false,
            worker_metrics: false,
        }
    }

    fn controller_flags(&self, sink: SocketAddr) -> Vec<String> {
        let flags = [
            ("--partitions", self.partitions.to_string()),
            ("--election-ttl-secs", self.election_ttl_secs.to_string()),
            ("--start-lead-ms", "1000".into()),
        ];
        let flags = flags.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]);
        flags.chain(self.controller_flags.iter().map(|f| f.replace("{sink}", &sink.to_string()))).collect()
    }

    /// Worker `i` sends from 127.0.0.`2+i` (see [`worker_source_ip`]).
    fn worker_flags(&self, i: usize) -> Vec<String> {
        let flags = [
            ("--label", format!("index={i}")),
            ("--source-ip", worker_source_ip(i).to_string()),
            ("--controller-grace-secs", self.controller_grace_secs.to_string()),
            ("--lease-ttl-secs", self.lease_ttl_secs.to_string()),
            ("--dispatch-threads", "2".into()),
        ];
        flags.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]).collect()
    }
}

/// Private services, controllers and workers as processes, and an in-process sink.
/// Fields drop in order: the daemons die before the services go down.
pub struct ProcessCluster {
    pub controllers: Vec<Daemon>,
    pub workers: Vec<Daemon>,
    pub sink: Sink,
    pub catalog_url: String,
    pub log_url: String,
    pub services: Services,
    token: Option<Arc<Token>>,
    tls: Option<ClusterTls>,
}

/// The CA of a cluster with TLS, and the certificate ctl presents.
pub struct ClusterTls {
    pub ca: TestCa,
    pub ctl: CertFiles,
    _dir: tempfile::TempDir,
}

impl ClusterTls {
    fn new() -> anyhow::Result<ClusterTls> {
        let dir = tempfile::Builder::new().prefix("reprise-pki-").tempdir()?;
        let ca = TestCa::new(dir.path(), "cluster")?;
        let ctl = ca.issue("ctl")?;
        Ok(ClusterTls { ca, ctl, _dir: dir })
    }

    /// ctl's TLS flags.
    pub fn ctl_flags(&self) -> Vec<String> {
        self.ctl.flags(&self.ca.ca_file)
    }

    /// What ctl's flags make: TLS to the controllers, presenting ctl's certificate.
    pub fn ctl_client(&self) -> ClientTlsConfig {
        let args = TlsArgs {
            cert: Some(self.ctl.cert.clone()),
            key: Some(self.ctl.key.clone()),
            ca: Some(self.ca.ca_file.clone()),
        };
        args.client().expect("the test certificates load").expect("--tls-ca turns TLS on")
    }

    /// A daemon's TLS flags, with a certificate of its own.
    fn daemon_flags(&self, label: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.ca.issue(label)?.flags(&self.ca.ca_file))
    }
}

impl ProcessCluster {
    /// Starts private services, then the controllers (the first one leads before the
    /// others start, as standbys), then the workers, and waits until every worker is
    /// registered in the catalog.
    pub async fn start(config: &ProcessClusterConfig) -> anyhow::Result<ProcessCluster> {
        let tls = config.tls.then(ClusterTls::new).transpose()?;
        let services = match &tls {
            Some(tls) => Services::start_with_etcd_tls(&tls.ca).await?,
            None => Services::start().await?,
        };
        let (catalog_url, log_url) = (services.etcd_catalog_url(&config.name), services.kafka_log_url(&config.name));
        let sink = Sink::start_checking_ids(SocketAddr::from(([127, 0, 0, 1], 0)), config.expected_ids).await?;
        let mut flags = config.controller_flags(sink.addr);
        if let Some(token) = &config.token {
            let path = services.dir().join("token");
            std::fs::write(&path, token)?;
            flags.extend(["--token-file".into(), path.display().to_string()]);
        }
        let token = config.token.as_deref().and_then(Token::new).map(Arc::new);
        let mut cluster = ProcessCluster {
            controllers: Vec::new(),
            workers: Vec::new(),
            sink,
            catalog_url,
            log_url,
            services,
            token,
            tls,
        };
        for i in 0..config.controllers {
            let label = format!("controller-{i}");
            let flags = [flags.clone(), cluster.tls_flags(&label)?].concat();
            let daemon = Daemon::controller(&label, &cluster.catalog_url, &cluster.log_url, &flags)?;
            cluster.controllers.push(daemon.ready().await?);
            if i == 0 {
                cluster.wait_leader(LEADER_TIMEOUT).await?;
            }
        }
        for i in 0..config.workers {
            let label = format!("worker-{i}");
            let flags = [config.worker_flags(i), cluster.tls_flags(&label)?].concat();
            let daemon = if config.worker_metrics {
                Daemon::worker_with_metrics(&label, &cluster.catalog_url, &flags)?
            } else {
                Daemon::worker(&label, &cluster.catalog_url, &flags)?
            };
            cluster.workers.push(daemon.ready().await?);
        }
        let names: Vec<String> = cluster.workers.iter().map(|w| w.label().to_string()).collect();
        wait_registered(&cluster.catalog_url, &names, 0, READY_TIMEOUT).await?;
        Ok(cluster)
    }

    /// The TLS of a cluster started with [`ProcessClusterConfig::tls`].
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The TLS flags of the daemon `label` (none without TLS).
    fn tls_flags(&self, label: &str) -> anyhow::Result<Vec<String>> {
        self.tls.as_ref().map_or(Ok(Vec::new()), |tls| tls.daemon_flags(label))
    }

    /// Every controller's gRPC URL, comma-separated (what `ctl --controller` takes).
    pub fn controller_addresses(&self) -> String {
        self.controllers.iter().map(Daemon::grpc_url).collect::<Vec<_>>().join(",")
    }

    pub fn sink_url(&self) -> String {
        format!("http://{}", self.sink.addr)
    }

    /// How ctl reaches the controllers: every address, the harness's timeout, the token.
    pub fn target(&self) -> Target {
        let tls = self.tls.as_ref().map(ClusterTls::ctl_client);
        Target { addresses: self.controller_addresses(), timeout: CALL_TIMEOUT, token: self.token.clone(), tls }
    }

    /// A client of the leader among all the controllers (else of one that answers).
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.target().connect().await
    }

    /// The index of the controller that says it leads, if one does.
    pub async fn leader(&self) -> Option<usize> {
        self.probe_leader().await.0
    }

    /// The leading controller's index, and why the others did not answer.
    async fn probe_leader(&self) -> (Option<usize>, Vec<String>) {
        let mut errors = Vec::new();
        for (i, controller) in self.controllers.iter().enumerate() {
            match self.leads(controller).await {
                Ok(true) => return (Some(i), errors),
                Ok(false) => {}
                Err(e) => errors.push(format!("{}: {e:#}", controller.label())),
            }
        }
        (None, errors)
    }

    /// Waits (at most `limit`) until a controller leads; returns its index.
    pub async fn wait_leader(&self, limit: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let (leader, errors) = self.probe_leader().await;
            if let Some(i) = leader {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> =
                    self.controllers.iter().map(|c| format!("{}'s log ends:\n{}", c.label(), c.log_tail(20))).collect();
                bail!("no controller leads after {limit:?} ({}); {}", errors.join("; "), logs.join("\n"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Records `profile` through the leader into this cluster's log.
    pub async fn record(&self, profile: &Profile) -> anyhow::Result<Recording> {
        record_synthetic(&mut self.client().await?, &self.log_url, profile, None).await
    }

    /// Whether `controller` says it leads. A controller built from other sources (another
    /// protocol version) is refused here with the versions named.
    async fn leads(&self, controller: &Daemon) -> anyhow::Result<bool> {
        let target = Target { addresses: controller.grpc_url(), ..self.target() };
        let mut client = target.connect().await?;
        let hello =
            client.hello(HelloRequest { protocol_version: PROTOCOL_VERSION }).await.map_err(client::status_error)?;
        Ok(hello.into_inner().leader)
    }

    /// Starts a replay; returns its id.
    pub async fn replay(&self, request: StartReplayRequest) -> anyhow::Result<String> {
        let mut client = self.client().await?;
        Ok(client.start_replay(request).await.map_err(client::status_error)?.into_inner().id)
    }

    /// Follows a replay to its end (at most `limit`) as ctl does, across a failover to
    /// whichever controller leads next; returns the final status.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> anyhow::Result<ReplayStatus> {
        let target = self.target();
        let followed = async {
            let mut client = target.connect().await?;
            follow_with_progress(&target, &mut client, id, false).await
        };
        tokio::time::timeout(limit, followed).await.with_context(|| {
            let logs: Vec<String> =
                self.controllers.iter().map(|c| format!("{}'s log ends:\n{}", c.label(), c.log_tail(30))).collect();
            format!("replay {id} did not end within {limit:?}; {}", logs.join("\n"))
        })?
    }
}

/// The workers registered in the catalog at `catalog_url`.
pub async fn registered_workers(catalog_url: &str) -> anyhow::Result<Vec<WorkerInfo>> {
    let catalog = reprise_store::Catalog::open(catalog_url).await?;
    Ok(catalog.list::<WorkerInfo>().await?.into_iter().map(|stored| stored.value).collect())
}

/// Waits (at most `limit`) until every worker of `names` is registered with a start time
/// at or after `since_ms` (0: any registration).
pub async fn wait_registered(
    catalog_url: &str,
    names: &[String],
    since_ms: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut catalog = None;
    loop {
        if catalog.is_none() {
            let opened = tokio::time::timeout(CALL_TIMEOUT, reprise_store::Catalog::open(catalog_url)).await;
            catalog = opened.ok().and_then(Result::ok);
        }
        let listed = match &catalog {
            Some(catalog) => {
                tokio::time::timeout(CALL_TIMEOUT, catalog.list::<WorkerInfo>()).await.ok().and_then(Result::ok)
            }
            None => None,
        };
        let listed: Vec<WorkerInfo> = listed.unwrap_or_default().into_iter().map(|stored| stored.value).collect();
        let missing: Vec<&String> =
            names.iter().filter(|n| !listed.iter().any(|w| &w.id == *n && w.started_at_ms >= since_ms)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("workers {missing:?} not registered in {catalog_url} after {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
