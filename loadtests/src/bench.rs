//! The cluster benchmark: real processes (controller, workers, a target: the project's
//! counting sink or a real nginx) on loopback, a synthetic recording in a file log, one
//! replay, and the resources each process used; with wrk (and GoReplay, when a binary is
//! given) against the same target for ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reprise_ctl::client::{self, Client};
use reprise_proto::v1::{
    HttpProtocol, ListRequest, PacingMode, Recording, ReplayRef, ReplayState, ReplayStatus, StartReplayRequest,
};
use serde::Serialize;

use crate::cluster::replay_request;
use crate::nginx::{AccessLogs, Nginx};
use crate::procstat;
use crate::synth::{Profile, Shape};

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn cpu_seconds(&self) -> f64 {
        procstat::cpu_seconds(&self.pid()).unwrap_or(0.0)
    }

    pub fn peak_rss_mib(&self) -> f64 {
        procstat::peak_rss_mib(&self.pid()).unwrap_or(0.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binaries next to this one (target/release or target/debug).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.parent().context("no executable directory")?.join(name);
    if !path.exists() {
        bail!("{} not found: build every binary first (cargo build --release --bins)", path.display());
    }
    Ok(path)
}

pub fn spawn(name: &str, binary_name: &str, args: &[String], logs: &Path) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let child = Command::new(binary(binary_name)?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {binary_name}"))?;
    Ok(Proc { name: name.to_string(), child })
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not happen within {limit:?}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// As fast as the in-flight bound allows.
    Max,
    /// At the recorded pace.
    Original,
}

/// What the bench replays to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// `reprise-sink`: counts every request (loss, duplicates, per-second arrivals), at
    /// a CPU cost that competes with the sender on a small machine.
    Sink,
    /// Debian's nginx, one process, `return 200`, no access log: a real target.
    Nginx,
}

/// Partitions of a bench's recording unless told otherwise.
pub const DEFAULT_PARTITIONS: u32 = 16;

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayBench {
    /// What to replay to (and run wrk against).
    #[arg(long, value_enum, default_value = "sink")]
    pub target: TargetKind,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Requests in the recording.
    #[arg(long, default_value_t = 500_000)]
    pub requests: u64,
    #[arg(long, value_enum, default_value = "max")]
    pub mode: Mode,
    /// Recorded rate (requests/s over the recording's span), for original pace.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 1)]
    pub multiple: u32,
    /// Passes over the recording (`ctl replay --loop`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub passes: u32,
    /// In-flight bound per worker.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: u32,
    /// Everything but the socket write (no sink needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Dispatch threads per worker (0: the worker's default, one per core).
    #[arg(long, default_value_t = 0)]
    pub dispatch_threads: usize,
    /// Run wrk -t1 -c<max-in-flight> against the same sink for this many seconds (0: skip).
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u64,
    /// Replays of the recording, each followed by its wrk run: on a noisy machine the
    /// medians of alternating rounds compare better than one run of each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// A GoReplay binary to replay the same traffic with, for a side-by-side figure.
    #[arg(long)]
    pub gor: Option<PathBuf>,
    /// Where the log, catalog and process logs go.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Keep the recording in this Kafka broker (HOST:PORT, a topic of the run's own)
    /// instead of the file log: the workers read it from there.
    #[arg(long)]
    pub kafka: Option<String>,
    /// Partitions of the recording: with `--kafka`, each is read by a librdkafka client
    /// of its own (docs/BENCHMARKS.md shows what that costs).
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Record the traffic as captured on HTTP/2 (h2c), so that it is replayed over
    /// HTTP/2; nginx then listens for h2c (the sink speaks both). wrk and GoReplay speak
    /// HTTP/1.1 only: not with --wrk-seconds or --gor.
    #[arg(long)]
    pub http2: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// `None`: a dry run, sent nowhere.
    pub target: Option<TargetKind>,
    /// The traffic was HTTP/2, replayed over HTTP/2.
    pub http2: bool,
    /// Where the recording was read from: `file` or `kafka`.
    pub log: &'static str,
    pub workers: usize,
    pub mode: Mode,
    pub dry_run: bool,
    pub requests: u64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub sink_requests: Option<u64>,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub worker_cpu_seconds: f64,
    pub cpu_seconds_per_1k_requests: f64,
    /// The target's CPU during the replay, per 1,000 requests it was sent.
    pub target_cpu_seconds_per_1k_requests: Option<f64>,
    pub worker_peak_rss_mib: f64,
    pub controller_cpu_seconds: f64,
    pub controller_peak_rss_mib: f64,
    pub wrk_requests_per_second: Option<f64>,
    pub ratio_to_wrk: Option<f64>,
    /// Per round: the replay's rate over its own wrk run's.
    pub round_ratios: Vec<f64>,
    pub gor_requests_per_second: Option<f64>,
    /// Original pace: the summary's rate against the recording's (0.01 is 1% over).
    pub reported_rate_error: Option<f64>,
    /// Original pace with a sink: the largest difference between the replay's
    /// per-second series and the sink's own counts over the full seconds, and how many.
    pub series_max_deviation: Option<f64>,
    pub series_seconds: Option<usize>,
    /// `--kafka`: what the broker itself serves, the recording read back by a plain
    /// consumer (no decoding, no hand-off), records per second: the reference for the
    /// replay's reads.
    pub broker_read_records_per_second: Option<f64>,
}

/// A running bench cluster: controller and workers as processes, on file log and catalog.
pub struct BenchCluster {
    pub dir: PathBuf,
    pub log: String,
    pub controller: Proc,
    /// The controller's HTTP API port.
    pub http: u16,
    pub workers: Vec<Proc>,
    pub client: Client,
}

impl BenchCluster {
    /// A controller and `workers` workers (each with `dispatch_threads`, 0 for the
    /// default), on a file catalog and a file log (or a topic of `kafka`, HOST:PORT),
    /// recordings cut into `partitions`.
    pub async fn start(
        work_dir: &Path,
        workers: usize,
        dispatch_threads: usize,
        kafka: Option<&str>,
        partitions: u32,
    ) -> anyhow::Result<BenchCluster> {
        let dir = work_dir.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = match kafka {
            Some(broker) => format!("kafka://{broker}/bench-{}-{}", std::process::id(), reprise_store::now_ms()),
            None => format!("file://{}/log?fsync=false", dir.display()),
        };
        let catalog = format!("file://{}/catalog", dir.display());
        let (grpc, http) = (free_port()?, free_port()?);
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let controller = spawn(
            "controller",
            "reprise-controller",
            &args(&[
                "--catalog",
                &catalog,
                "--log",
                &log,
                "--listen",
                &format!("127.0.0.1:{grpc}"),
                "--http",
                &format!("127.0.0.1:{http}"),
                "--partitions",
                &partitions.to_string(),
            ]),
            &dir,
        )?;
        let mut procs = Vec::new();
        for i in 0..workers {
            let name = format!("w{i:02}");
            procs.push(spawn(
                &name,
                "reprise-worker",
                &args(&[
                    "--catalog",
                    &catalog,
                    "--listen",
                    "127.0.0.1:0",
                    "--name",
                    &name,
                    "--dispatch-threads",
                    &dispatch_threads.to_string(),
                ]),
                &dir,
            )?);
        }
        let url = format!("http://127.0.0.1:{grpc}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut client = loop {
            match client::connect(&url).await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => bail!("the controller did not answer at {url}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let listing = client.clone();
        wait_for("every worker to register", Duration::from_secs(30), || {
            let mut c = listing.clone();
            async move { c.list_workers(ListRequest {}).await.is_ok_and(|r| r.into_inner().workers.len() == workers) }
        })
        .await?;
        client.list_workers(ListRequest {}).await?;
        Ok(BenchCluster { dir, log, controller, http, workers: procs, client })
    }

    /// Records `profile` (written straight into the log) between record start and stop.
    pub async fn record(&mut self, profile: &Profile, gor: Option<&Path>) -> anyhow::Result<Recording> {
        crate::cluster::record_synthetic(&mut self.client, &self.log, profile, gor).await
    }

    pub async fn replay(&mut self, request: StartReplayRequest) -> anyhow::Result<ReplayStatus> {
        let id = self.client.start_replay(request).await?.into_inner().id;
        client::follow(&mut self.client, &id, |_| {}).await
    }

    pub fn worker_cpu_seconds(&self) -> f64 {
        self.workers.iter().map(Proc::cpu_seconds).sum()
    }

    pub fn cleanup(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Runs wrk against `url`; its requests per second.
pub fn wrk(url: &str, connections: u32, seconds: u64) -> anyhow::Result<f64> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), url])
        .output()
        .context("cannot run wrk (deploy/local/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

/// A JSON document from a loopback HTTP server (the sink's report, the controller's API).
async fn get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    crate::http::get(([127, 0, 0, 1], port).into(), path, &[]).await?.json()
}

async fn sink_requests(port: u16) -> anyhow::Result<u64> {
    get_json(port, "/_sink/report").await?["requests"].as_u64().context("no request count in the sink report")
}

/// How far the replay's per-second series is from the sink's own per-second counts:
/// the largest relative difference over the full seconds (the first and last are
/// partial), and how many seconds were compared.
async fn series_deviation(cluster: &BenchCluster, replay_id: &str, sink_port: u16) -> anyhow::Result<(f64, usize)> {
    let timeline = get_json(cluster.http, &format!("/api/replays/{replay_id}/timeline")).await?;
    let points = timeline.as_array().context("no timeline")?;
    let sink = get_json(sink_port, "/_sink/report").await?;
    let arrived = |second: i64| -> u64 {
        sink["per_second"][second.to_string()]
            .as_object()
            .map_or(0, |ips| ips.values().filter_map(|n| n.as_u64()).sum())
    };
    let mut worst: f64 = 0.0;
    let full = points.get(1..points.len().saturating_sub(1)).unwrap_or_default();
    for point in full {
        let second = point["at_ms"].as_i64().context("a point without at_ms")? / 1000;
        let (ours, theirs) = (point["qps"].as_f64().unwrap_or(0.0), arrived(second) as f64);
        worst = worst.max((ours - theirs).abs() / theirs.max(1.0));
    }
    Ok((worst, full.len()))
}

pub async fn run_replay(bench: &ReplayBench) -> anyhow::Result<ReplayResult> {
    if bench.http2 && (bench.wrk_seconds > 0 || bench.gor.is_some()) {
        bail!("--http2: wrk and GoReplay speak HTTP/1.1 only; give --wrk-seconds 0 and no --gor");
    }
    let mut cluster = BenchCluster::start(
        &bench.work_dir,
        bench.workers,
        bench.dispatch_threads,
        bench.kafka.as_deref(),
        bench.partitions,
    )
    .await?;
    let target = match bench.dry_run {
        true => None,
        false => Some(Target::start(bench.target, &cluster.dir, bench_profile(bench).protocol).await?),
    };
    let profile = bench_profile(bench);
    let gor_file = bench.gor.as_ref().map(|_| cluster.dir.join("traffic.gor"));
    let recording = cluster.record(&profile, gor_file.as_deref()).await?;
    let broker_read = match &bench.kafka {
        Some(broker) => {
            let (broker, topic) = (broker.clone(), cluster.log.rsplit('/').next().unwrap_or_default().to_string());
            let records = recording.record_count;
            Some(tokio::task::spawn_blocking(move || broker_read_rate(&broker, &topic, records)).await??)
        }
        None => None,
    };

    let mut rounds = Vec::new();
    for _ in 0..bench.rounds {
        rounds.push(replay_round(&mut cluster, bench, &recording.id, target.as_ref()).await?);
    }
    let (median, wrk_rps, round_ratios) = median_round(rounds);
    let (status, seconds, worker_cpu, controller_cpu) =
        (median.status, median.seconds, median.worker_cpu_seconds, median.controller_cpu_seconds);
    let sink_port = target.as_ref().and_then(Target::sink_port);
    let sink_count = match sink_port {
        Some(port) => Some(sink_requests(port).await?),
        None => None,
    };
    let gor_rps = match (&bench.gor, &gor_file, sink_port) {
        (Some(gor), Some(file), Some(port)) => Some(run_gor(gor, file, port, bench.requests).await?),
        _ => None,
    };
    let requests_per_second = median.requests_per_second;
    let result = ReplayResult {
        target: target.as_ref().map(|_| bench.target),
        http2: bench.http2,
        log: if bench.kafka.is_some() { "kafka" } else { "file" },
        workers: bench.workers,
        mode: bench.mode,
        dry_run: bench.dry_run,
        requests: bench.requests,
        sent: status.sent,
        ok: status.ok,
        errors: status.errors,
        sink_requests: sink_count,
        seconds,
        requests_per_second,
        latency_p50_ms: status.latency().p50,
        latency_p99_ms: status.latency().p99,
        lag_p50_ms: status.lag().p50,
        lag_p99_ms: status.lag().p99,
        worker_cpu_seconds: worker_cpu,
        cpu_seconds_per_1k_requests: worker_cpu / (status.sent.max(1) as f64 / 1000.0),
        target_cpu_seconds_per_1k_requests: median
            .target_cpu_seconds
            .map(|cpu| cpu / (status.sent.max(1) as f64 / 1000.0)),
        worker_peak_rss_mib: cluster.workers.iter().map(Proc::peak_rss_mib).fold(0.0, f64::max),
        controller_cpu_seconds: controller_cpu,
        controller_peak_rss_mib: cluster.controller.peak_rss_mib(),
        wrk_requests_per_second: wrk_rps,
        ratio_to_wrk: wrk_rps.map(|w| requests_per_second / w),
        round_ratios,
        gor_requests_per_second: gor_rps,
        reported_rate_error: (bench.mode == Mode::Original).then(|| status.qps / bench.rate - 1.0),
        series_max_deviation: median.series.map(|(deviation, _)| deviation),
        series_seconds: median.series.map(|(_, seconds)| seconds),
        broker_read_records_per_second: broker_read,
    };
    if status.state() != ReplayState::Done {
        bail!("the replay ended {}: {:?}", status.state(), status.error);
    }
    drop(target);
    cluster.cleanup();
    Ok(result)
}

/// The bench's target process.
enum Target {
    Sink { process: Proc, port: u16 },
    Nginx(Nginx),
}

impl Target {
    async fn start(kind: TargetKind, dir: &Path, protocol: HttpProtocol) -> anyhow::Result<Target> {
        Ok(match kind {
            TargetKind::Sink => {
                let port = free_port()?;
                Target::Sink { process: start_sink(port, dir).await?, port }
            }
            TargetKind::Nginx => Target::Nginx(Nginx::start(&dir.join("nginx"), AccessLogs::Off, protocol)?),
        })
    }

    fn port(&self) -> u16 {
        match self {
            Target::Sink { port, .. } => *port,
            Target::Nginx(nginx) => nginx.port(),
        }
    }

    /// The sink's port: only the sink counts what arrives.
    fn sink_port(&self) -> Option<u16> {
        match self {
            Target::Sink { port, .. } => Some(*port),
            Target::Nginx(_) => None,
        }
    }

    fn cpu_seconds(&self) -> f64 {
        match self {
            Target::Sink { process, .. } => process.cpu_seconds(),
            Target::Nginx(nginx) => nginx.cpu_seconds(),
        }
    }
}

/// Every record of `topic` read back by a plain consumer: records per second.
fn broker_read_rate(broker: &str, topic: &str, records: u64) -> anyhow::Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "reprise-bench-ceiling")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut read = 0;
    while read < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => bail!("{topic}: nothing more after {read} of {records} records"),
        }
    }
    Ok(read as f64 / started.elapsed().as_secs_f64())
}

/// Starts `reprise-sink` on `port` and waits until it accepts connections.
async fn start_sink(port: u16, dir: &Path) -> anyhow::Result<Proc> {
    let sink = spawn("sink", "reprise-sink", &["--listen".into(), format!("127.0.0.1:{port}")], dir)?;
    wait_for("the sink", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await?;
    Ok(sink)
}

/// The bench's synthetic traffic: at its rate for original pace, over a minute for max.
fn bench_profile(bench: &ReplayBench) -> Profile {
    let span_ns = match bench.mode {
        Mode::Original => (bench.requests as f64 / bench.rate * 1e9) as i64,
        Mode::Max => 60_000_000_000,
    };
    Profile {
        requests: bench.requests,
        start_ns: reprise_store::now_ns() - span_ns - 60_000_000_000,
        span_ns,
        connections: 1000,
        body_bytes: 128,
        post_share: 0.25,
        shape: Shape::Constant,
        protocol: if bench.http2 { HttpProtocol::Http2 } else { HttpProtocol::Http1 },
    }
}

/// The round with the median replay rate stands for the run; wrk's median is its match.
/// Returns that round, wrk's median rate, and every round's ratio to its own wrk run.
fn median_round(mut rounds: Vec<Round>) -> (Round, Option<f64>, Vec<f64>) {
    rounds.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let round_ratios: Vec<f64> =
        rounds.iter().filter_map(|r| r.wrk_requests_per_second.map(|w| r.requests_per_second / w)).collect();
    let mut wrk_rates: Vec<f64> = rounds.iter().filter_map(|r| r.wrk_requests_per_second).collect();
    wrk_rates.sort_by(f64::total_cmp);
    let wrk_rps = wrk_rates.get(wrk_rates.len() / 2).copied();
    (rounds.swap_remove(rounds.len() / 2), wrk_rps, round_ratios)
}

/// One replay of the bench's recording, then (with a sink) its wrk run.
struct Round {
    status: ReplayStatus,
    seconds: f64,
    requests_per_second: f64,
    worker_cpu_seconds: f64,
    controller_cpu_seconds: f64,
    wrk_requests_per_second: Option<f64>,
    /// See [`series_deviation`].
    series: Option<(f64, usize)>,
    /// The target's CPU during the replay.
    target_cpu_seconds: Option<f64>,
}

async fn replay_round(
    cluster: &mut BenchCluster,
    bench: &ReplayBench,
    recording_id: &str,
    target: Option<&Target>,
) -> anyhow::Result<Round> {
    let cpu_before = cluster.worker_cpu_seconds();
    let controller_cpu_before = cluster.controller.cpu_seconds();
    let target_cpu_before = target.map(Target::cpu_seconds);
    let started = Instant::now();
    // A dry run sends nowhere: the discard port stands in.
    let port = target.map_or(9, Target::port);
    let mut request = replay_request(recording_id, &format!("http://127.0.0.1:{port}"), bench.multiple);
    let options = crate::cluster::options(&mut request);
    options.pacing = match bench.mode {
        Mode::Original => PacingMode::Original,
        Mode::Max => PacingMode::Max,
    }
    .into();
    (options.max_in_flight, options.request_timeout_ms, options.simulate) =
        (bench.max_in_flight, 10_000, bench.dry_run);
    options.passes = bench.passes;
    let status = cluster.replay(request).await?;
    let wall = started.elapsed().as_secs_f64();
    let worker_cpu_seconds = cluster.worker_cpu_seconds() - cpu_before;
    let controller_cpu_seconds = cluster.controller.cpu_seconds() - controller_cpu_before;
    let target_cpu_seconds = target.zip(target_cpu_before).map(|(t, before)| t.cpu_seconds() - before);
    let seconds = if status.duration_s > 0.0 { status.duration_s } else { wall };
    let series = match (bench.mode, target.and_then(Target::sink_port)) {
        (Mode::Original, Some(sink_port)) => Some(series_deviation(cluster, &status.id, sink_port).await?),
        _ => None,
    };
    let wrk_requests_per_second = match (bench.wrk_seconds, target) {
        (s, Some(target)) if s > 0 => {
            Some(wrk(&format!("http://127.0.0.1:{}/", target.port()), bench.max_in_flight, s)?)
        }
        _ => None,
    };
    Ok(Round {
        requests_per_second: status.sent as f64 / seconds,
        status,
        seconds,
        worker_cpu_seconds,
        controller_cpu_seconds,
        wrk_requests_per_second,
        series,
        target_cpu_seconds,
    })
}

/// Replays the same traffic with GoReplay as fast as it goes; its requests per second
/// as counted by the sink.
async fn run_gor(gor: &Path, file: &Path, sink_port: u16, requests: u64) -> anyhow::Result<f64> {
    let before = sink_requests(sink_port).await?;
    let started = Instant::now();
    let status = Command::new(gor)
        .arg("--input-file")
        .arg(format!("{}|100000%", file.display()))
        .args([
            "--input-file-loop=false",
            "--output-http",
            &format!("http://127.0.0.1:{sink_port}"),
            "--exit-after",
            "300s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run GoReplay")?;
    let seconds = started.elapsed().as_secs_f64();
    let delivered = sink_requests(sink_port).await? - before;
    if !status.success() && delivered < requests {
        bail!("GoReplay failed ({status}) after {delivered} requests");
    }
    Ok(delivered as f64 / seconds)
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsPlaneResult {
    pub workers: usize,
    pub max_in_flight: u32,
    pub seconds: f64,
    pub controller_cpu_seconds: f64,
    pub controller_core_share: f64,
    pub controller_peak_rss_mib: f64,
    /// Status events a watcher (as `ctl replay` is) received over the whole run.
    pub status_events: u64,
}

/// The controller following `workers` workers' stats, watched: its CPU share. Each worker
/// sends a full report a second and a light one every `max_in_flight / 2` sends (at most
/// every 20 ms): at this bench's 200 records/s per worker, ctl's default of 1024 makes
/// it 1 Hz, and 16 about 25 reports a second per worker.
pub async fn run_stats_plane(
    workers: usize,
    seconds: u64,
    max_in_flight: u32,
    work_dir: &Path,
) -> anyhow::Result<StatsPlaneResult> {
    let mut cluster = BenchCluster::start(work_dir, workers, 0, None, DEFAULT_PARTITIONS).await?;
    // A slow, long recording: every worker keeps reporting for the whole window.
    let span = Duration::from_secs(seconds + 30);
    let profile = Profile::constant(
        (workers as u64) * 200,
        reprise_store::now_ns() - span.as_nanos() as i64 - 60_000_000_000,
        span.as_nanos() as i64,
        workers as u64 * 4,
        16,
    );
    let recording = cluster.record(&profile, None).await?;
    let mut request = replay_request(&recording.id, "http://127.0.0.1:9", 1);
    let options = crate::cluster::options(&mut request);
    (options.max_in_flight, options.request_timeout_ms, options.simulate) = (max_in_flight, 1000, true);
    let id = cluster.client.start_replay(request).await?.into_inner().id;
    // Watched, as `ctl replay` watches it: a status event built and sent every second.
    let mut events = cluster.client.watch_replay(ReplayRef { id: id.clone() }).await?.into_inner();
    let status_events = Arc::new(AtomicU64::new(0));
    let seen = status_events.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(_)) = events.message().await {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Let every stream attach, then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = cluster.controller.cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cluster.controller.cpu_seconds() - before;
    let elapsed = started.elapsed().as_secs_f64();
    let status = cluster.client.get_replay(ReplayRef { id }).await?.into_inner();
    let reporting = status.workers.iter().filter(|w| w.state == "running").count();
    if reporting != workers {
        bail!("only {reporting} of {workers} workers were reporting");
    }
    watcher.abort();
    // About one a second; far fewer means the watch was broken, and the figure is not
    // the watched case.
    let status_events = status_events.load(Ordering::Relaxed);
    if status_events < seconds / 2 {
        bail!("the watcher saw only {status_events} status events in {seconds} s");
    }
    let result = StatsPlaneResult {
        workers,
        max_in_flight,
        seconds: elapsed,
        controller_cpu_seconds: cpu,
        controller_core_share: cpu / elapsed,
        controller_peak_rss_mib: cluster.controller.peak_rss_mib(),
        status_events,
    };
    cluster.cleanup();
    Ok(result)
}
