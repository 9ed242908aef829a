//! `reprise-bench`: reproducible performance figures (see docs/BENCHMARKS.md).
//!
//! * `capture`: records per second from a large pcap file, through the whole capture
//!   pipeline (decode, TCP reassembly, HTTP framing, encode) into a file traffic log.
//! * `replay`: a cluster of real processes (controller, workers, sink) replays a
//!   synthetic recording; wrk (and GoReplay, if given) against the same sink.
//! * `stats-plane`: the controller's CPU while following many workers at 1 Hz.
//! * `pacing-curve`: original pace against nginx, offered rate against schedule lag.
//! * `all`: every figure of docs/BENCHMARKS.md, as a markdown table.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use reprise_loadtests::bench::{self, Mode, ReplayBench, TargetKind};
use reprise_loadtests::pcapgen::{self, PcapProfile};
use reprise_loadtests::procstat;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "reprise-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capture throughput from a pcap file.
    Capture {
        #[arg(long, default_value_t = 500)]
        connections: u32,
        #[arg(long, default_value_t = 1000)]
        requests_per_connection: u32,
        #[arg(long, default_value_t = 256)]
        body_bytes: usize,
        /// Where the pcap file and the log go (removed afterwards).
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One replay on a cluster of processes.
    Replay {
        #[command(flatten)]
        bench: ReplayBench,
    },
    /// Controller CPU while following N workers' stats.
    StatsPlane {
        #[arg(long, default_value_t = 64)]
        workers: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Each worker's in-flight bound: it sets how often light reports go out (one
        /// every half of it); the default is ctl's.
        #[arg(long, default_value_t = 1024)]
        max_in_flight: u32,
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
    },
    /// Original pace against nginx at several rates: offered rate against lag.
    PacingCurve {
        /// Recorded rates, requests per second.
        #[arg(long, value_delimiter = ',', default_value = "10000,20000,40000,60000,80000,100000,120000,150000")]
        rates: Vec<f64>,
        /// Seconds of traffic per rate.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
    },
    /// Every benchmark of docs/BENCHMARKS.md.
    All {
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        /// A GoReplay binary for the side-by-side figure.
        #[arg(long)]
        gor: Option<PathBuf>,
        /// A Kafka broker (HOST:PORT) for the Kafka-against-file-log figure; restart it
        /// first (docs/BENCHMARKS.md, "Kafka reads").
        #[arg(long)]
        kafka: Option<String>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reprise_process::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay { bench } => println!("{}", serde_json::to_string_pretty(&bench::run_replay(&bench).await?)?),
        Command::StatsPlane { workers, seconds, max_in_flight, work_dir } => {
            let result = bench::run_stats_plane(workers, seconds, max_in_flight, &work_dir).await?;
            println!("{}", serde_json::to_string_pretty(&result)?)
        }
        Command::All { work_dir, gor, kafka } => all(&work_dir, gor, kafka).await?,
        Command::PacingCurve { rates, seconds, work_dir } => {
            println!("| offered | measured |\n|---|---|");
            for (what, figure, _) in pacing_curve(&work_dir, &rates, seconds).await? {
                println!("| {what} | {figure} |");
            }
        }
        Command::Capture { connections, requests_per_connection, body_bytes, work_dir, json } => {
            let result = capture(&work_dir, PcapProfile { connections, requests_per_connection, body_bytes }).await?;
            if json {
                println!("{result}");
            } else {
                println!("capture: {}", capture_line(&result));
            }
        }
    }
    Ok(())
}

/// Captures a synthetic pcap file into a file log; the figures as JSON.
async fn capture(work_dir: &std::path::Path, profile: PcapProfile) -> anyhow::Result<serde_json::Value> {
    let dir = work_dir.join(format!("capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join("traffic.pcap");
    let requests = pcapgen::write(std::fs::File::create(&pcap)?, &profile)?;
    let pcap_mib = std::fs::metadata(&pcap)?.len() as f64 / (1 << 20) as f64;
    let log = format!("file://{}/log?fsync=false", dir.display());
    let mut config = reprise_capture::CaptureConfig::for_log(&log);
    config.pcap_file = Some(pcap);
    config.track_responses = true;
    config.node = Some("bench".into());
    config.spool_dir = Some(dir.join("spool"));
    let cpu_before = procstat::cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let report = reprise_capture::run(config, tokio_util::sync::CancellationToken::new()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = procstat::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    std::fs::remove_dir_all(&dir)?;
    anyhow::ensure!(report.requests == requests, "captured {} of {requests} requests", report.requests);
    Ok(json!({
        "benchmark": "capture",
        "pcap_mib": pcap_mib,
        "packets": report.packets,
        "requests": report.requests,
        "records": report.records_stored,
        "seconds": seconds,
        "records_per_second": report.records_stored as f64 / seconds,
        "packets_per_second": report.packets as f64 / seconds,
        "mib_per_second": pcap_mib / seconds,
        "cpu_seconds": cpu,
        "peak_rss_mib": procstat::peak_rss_mib("self"),
    }))
}

fn capture_line(r: &serde_json::Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    format!(
        "{:.0} records (requests + responses) from {:.0} MiB of pcap in {:.2} s: {:.0} records/s, {:.0} packets/s, {:.0} MiB/s, {:.2} CPU s, peak RSS {:.0} MiB",
        f("records"),
        f("pcap_mib"),
        f("seconds"),
        f("records_per_second"),
        f("packets_per_second"),
        f("mib_per_second"),
        f("cpu_seconds"),
        f("peak_rss_mib")
    )
}

fn replay_bench(work_dir: &std::path::Path, workers: usize, requests: u64, mode: Mode, dry_run: bool) -> ReplayBench {
    ReplayBench {
        target: TargetKind::Sink,
        workers,
        requests,
        mode,
        rate: 20_000.0,
        multiple: 1,
        passes: 1,
        max_in_flight: 64,
        dry_run,
        dispatch_threads: 0,
        wrk_seconds: 0,
        rounds: 1,
        gor: None,
        work_dir: work_dir.to_path_buf(),
        kafka: None,
        partitions: bench::DEFAULT_PARTITIONS,
        http2: false,
    }
}

/// A replay's rate beside wrk's, with every round's ratio.
fn against_wrk(r: &bench::ReplayResult) -> String {
    let rounds = r.round_ratios.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    format!(
        "{:.0} req/s vs wrk {:.0} req/s: ratio {:.2} (rounds {rounds}); {}",
        r.requests_per_second,
        r.wrk_requests_per_second.unwrap_or(0.0),
        r.ratio_to_wrk.unwrap_or(0.0),
        cpu_costs(r)
    )
}

/// CPU per request, the sender's and the target's apart.
fn cpu_costs(r: &bench::ReplayResult) -> String {
    let target = match r.target_cpu_seconds_per_1k_requests {
        Some(cpu) => format!(", target {:.1} µs", cpu * 1000.0),
        None => String::new(),
    };
    format!("CPU per request: worker {:.1} µs{target}", r.cpu_seconds_per_1k_requests * 1000.0)
}

/// Every figure, printed as the rows of docs/BENCHMARKS.md.
/// A row of the results table: what was measured, the figure, the goal.
type Row = (String, String, &'static str);

async fn all(work_dir: &std::path::Path, gor: Option<PathBuf>, kafka: Option<String>) -> anyhow::Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    // Each figure as soon as it is measured; the table at the end.
    let mut report = |new: Vec<Row>| {
        new.iter().for_each(|(what, figure, _)| eprintln!("{what}: {figure}"));
        rows.extend(new);
    };
    let c = capture(work_dir, PcapProfile { connections: 500, requests_per_connection: 1000, body_bytes: 256 }).await?;
    report(vec![("capture from a pcap file (500 connections x 1000 requests)".into(), capture_line(&c), "measured")]);
    report(throughput_rows(work_dir, gor).await?);
    report(pacing_rows(work_dir).await?);
    report(scale_rows(work_dir).await?);
    report(vec![kafka_row(work_dir, kafka).await?]);
    println!("| benchmark | measured | goal |\n|---|---|---|");
    for (what, figure, goal) in rows {
        println!("| {what} | {figure} | {goal} |");
    }
    Ok(())
}

/// Dry runs read from Kafka and from the file log, alternated over 3 rounds: their ratio
/// per round and the median.
async fn kafka_row(work_dir: &std::path::Path, kafka: Option<String>) -> anyhow::Result<Row> {
    const WHAT: &str = "dry run, 400k records in 16 partitions, read from Kafka against the file log";
    let Some(broker) = kafka else { return Ok((WHAT.into(), "not run (no --kafka broker)".into(), ">= 0.9x")) };
    let mut ratios = Vec::new();
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let from_file = bench::run_replay(&replay_bench(work_dir, 1, 400_000, Mode::Max, true)).await?;
        let mut from_kafka = replay_bench(work_dir, 1, 400_000, Mode::Max, true);
        from_kafka.kafka = Some(broker.clone());
        let from_kafka = bench::run_replay(&from_kafka).await?;
        ratios.push(from_kafka.requests_per_second / from_file.requests_per_second);
        rounds.push(format!("{:.0} / {:.0}", from_kafka.requests_per_second, from_file.requests_per_second));
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let figure = format!(
        "median {:.2}x (rounds, Kafka / file records/s: {}; ratios {})",
        sorted[sorted.len() / 2],
        rounds.join(", "),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
    );
    Ok((WHAT.into(), figure, ">= 0.9x"))
}

/// One worker at max pace against wrk (a dispatch thread per core, then one), and GoReplay.
async fn throughput_rows(work_dir: &std::path::Path, gor: Option<PathBuf>) -> anyhow::Result<Vec<Row>> {
    let mut throughput = replay_bench(work_dir, 1, 400_000, Mode::Max, false);
    (throughput.wrk_seconds, throughput.rounds, throughput.gor) = (8, 3, gor);
    let t = bench::run_replay(&throughput).await?;
    // The same with one dispatch thread: thread for thread against wrk -t1.
    let mut single = replay_bench(work_dir, 1, 400_000, Mode::Max, false);
    (single.dispatch_threads, single.wrk_seconds, single.rounds) = (1, 8, 3);
    let s1 = bench::run_replay(&single).await?;
    // The same against nginx: a target that leaves the sender its share of the CPU.
    let mut on_nginx = replay_bench(work_dir, 1, 400_000, Mode::Max, false);
    (on_nginx.target, on_nginx.wrk_seconds, on_nginx.rounds) = (TargetKind::Nginx, 8, 3);
    let n = bench::run_replay(&on_nginx).await?;
    // HTTP/2 traffic over HTTP/2 (h2c) to nginx: no wrk for it; docs/BENCHMARKS.md has
    // h2load's figure.
    let mut over_http2 = replay_bench(work_dir, 1, 400_000, Mode::Max, false);
    (over_http2.target, over_http2.http2) = (TargetKind::Nginx, true);
    let h2 = bench::run_replay(&over_http2).await?;
    let gor_figure = match t.gor_requests_per_second {
        Some(g) => format!("{g:.0} req/s: Reprise {:.1}x", t.requests_per_second / g),
        None => "not run (no --gor binary on this machine)".into(),
    };
    Ok(vec![
        (
            "1 worker (a dispatch thread per core), max pace, 64 in flight, vs `wrk -t1 -c64`".into(),
            format!("median of 3 alternating rounds: {}; p99 latency {:.2} ms", against_wrk(&t), t.latency_p99_ms),
            ">= 0.7x wrk",
        ),
        ("the same, 1 dispatch thread".into(), against_wrk(&s1), "-"),
        (
            "1 worker, max pace, 64 in flight, vs `wrk -t1 -c64`, against nginx".into(),
            format!("median of 3 alternating rounds: {}; p99 latency {:.2} ms", against_wrk(&n), n.latency_p99_ms),
            ">= 0.95x wrk",
        ),
        (
            "the same as HTTP/2 traffic, over h2c, against nginx".into(),
            format!("{:.0} req/s; p99 latency {:.2} ms; {}", h2.requests_per_second, h2.latency_p99_ms, cpu_costs(&h2)),
            "-",
        ),
        ("the same recording with GoReplay".into(), gor_figure, ">= 5x GoReplay"),
    ])
}

/// Schedule lag at original pace.
async fn pacing_rows(work_dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // With HTTP/1.1 the in-flight bound is also the connection bound: 1024 is ctl's
    // default, 128 leaves room for 6 ms of latency at 20k req/s with far fewer sockets.
    for max_in_flight in [1024, 128] {
        let mut lag_run = replay_bench(work_dir, 1, 600_000, Mode::Original, false);
        lag_run.max_in_flight = max_in_flight;
        let lag = bench::run_replay(&lag_run).await?;
        rows.push((
            format!("1 worker, original pace at 20k req/s (30 s), {max_in_flight} in flight"),
            format!(
                "{:.0} req/s; lag p50 {:.3} ms, p99 {:.3} ms; latency p99 {:.2} ms; {}",
                lag.requests_per_second,
                lag.lag_p50_ms,
                lag.lag_p99_ms,
                lag.latency_p99_ms,
                cpu_costs(&lag)
            ),
            "p99 lag < 1 ms",
        ));
    }
    rows.extend(pacing_curve(work_dir, &[20_000.0, 60_000.0, 100_000.0], 30).await?);
    // The whole curve, shorter: how lag grows with the offered rate, past the capacity.
    rows.extend(pacing_curve(work_dir, &[10_000.0, 40_000.0, 80_000.0, 120_000.0, 150_000.0], 10).await?);
    Ok(rows)
}

/// Original pace against nginx at each of `rates` for `seconds`: offered rate against
/// what was sent and the lag (past its capacity a worker should degrade in proportion).
async fn pacing_curve(work_dir: &std::path::Path, rates: &[f64], seconds: u64) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &rate in rates {
        let mut run = replay_bench(work_dir, 1, (rate * seconds as f64) as u64, Mode::Original, false);
        (run.target, run.rate, run.max_in_flight) = (TargetKind::Nginx, rate, 256);
        let r = bench::run_replay(&run).await?;
        rows.push((
            format!("1 worker, original pace at {:.0}k req/s ({seconds} s), 256 in flight, against nginx", rate / 1e3),
            format!(
                "{:.0} req/s; lag p50 {:.3} ms, p99 {:.3} ms; latency p99 {:.2} ms; {}",
                r.requests_per_second,
                r.lag_p50_ms,
                r.lag_p99_ms,
                r.latency_p99_ms,
                cpu_costs(&r)
            ),
            "p99 lag < 1 ms",
        ));
    }
    Ok(rows)
}

/// Memory on a big recording, many workers' dispatch rate, the controller's stats plane.
async fn scale_rows(work_dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let memory = bench::run_replay(&replay_bench(work_dir, 1, 10_000_000, Mode::Max, true)).await?;
    let scale = bench::run_replay(&replay_bench(work_dir, 8, 4_000_000, Mode::Max, true)).await?;
    let plane = bench::run_stats_plane(256, 30, 1024, work_dir).await?;
    let chatty = bench::run_stats_plane(256, 30, 16, work_dir).await?;
    let plane_row = |plane: &bench::StatsPlaneResult| {
        format!(
            "{:.1}% of a core ({:.2} CPU s in {:.0} s), peak RSS {:.0} MiB",
            plane.controller_core_share * 100.0,
            plane.controller_cpu_seconds,
            plane.seconds,
            plane.controller_peak_rss_mib
        )
    };
    Ok(vec![
        (
            "1 worker, 10M-record recording, dry run".into(),
            format!("peak RSS {:.0} MiB; {:.0} records/s", memory.worker_peak_rss_mib, memory.requests_per_second),
            "< 150 MB RSS",
        ),
        (
            "8 workers on one host, 4M records, dry run".into(),
            format!(
                "{:.0} records/s dispatched in total ({:.3} CPU s per 1k)",
                scale.requests_per_second, scale.cpu_seconds_per_1k_requests
            ),
            ">= 1M records/s",
        ),
        (
            "controller following 256 workers reporting at 1 Hz (1024 in flight), one watcher (as `ctl replay`)".into(),
            plane_row(&plane),
            "< 5% of a core",
        ),
        (
            "the same, 16 in flight: a light report every 8 sends, about 25 a second per worker".into(),
            plane_row(&chatty),
            "-",
        ),
    ])
}
