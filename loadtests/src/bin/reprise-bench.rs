//! `reprise-bench`: reproducible performance figures (see docs/BENCHMARKS.md).
//!
//! * `capture`: records per second from a large pcap file, through the whole capture
//!   pipeline (decode, TCP reassembly, HTTP framing, encode) into a file traffic log.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Capture { connections, requests_per_connection, body_bytes, work_dir, json } => {
            let dir = work_dir.join(format!("capture-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let pcap = dir.join("traffic.pcap");
            let profile = PcapProfile { connections, requests_per_connection, body_bytes };
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
            let result = json!({
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
            });
            if json {
                println!("{result}");
            } else {
                println!(
                    "capture: {} records ({} requests + responses) from {:.0} MiB of pcap in {:.2} s: {:.0} records/s, {:.0} packets/s, {:.0} MiB/s, {:.2} CPU s, peak RSS {:.0} MiB",
                    report.records_stored,
                    report.requests,
                    pcap_mib,
                    seconds,
                    report.records_stored as f64 / seconds,
                    report.packets as f64 / seconds,
                    pcap_mib / seconds,
                    cpu,
                    procstat::peak_rss_mib("self").unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}
