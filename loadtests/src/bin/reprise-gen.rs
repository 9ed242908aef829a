//! `reprise-gen`: writes synthetic traffic (real HTTP/1.1 requests in traffic records)
//! into a traffic log, as a capture node would.

use std::time::Duration;

use clap::Parser;
use reprise_loadtests::synth::{self, Profile};

/// Synthetic traffic generator.
#[derive(Parser, Debug)]
#[command(name = "reprise-gen", version)]
struct Cli {
    /// Traffic log URL: kafka://host:port/topic or file://PATH.
    #[arg(long, env = "REPRISE_LOG")]
    log: String,
    /// Requests to write.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Seconds between the first and the last request's capture time.
    #[arg(long, default_value_t = 10.0)]
    span_secs: f64,
    /// Connections the requests are spread over.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Body size of the POST requests (every third request).
    #[arg(long, default_value_t = 128)]
    body_bytes: usize,
    /// Partitions, if the topic must be created.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
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
    if !(cli.span_secs.is_finite() && cli.span_secs >= 0.0) {
        anyhow::bail!("--span-secs must be a non-negative number");
    }
    let log = reprise_store::open_log(&cli.log).await?;
    log.ensure_topic(cli.partitions).await?;
    let span = Duration::from_secs_f64(cli.span_secs);
    let profile = Profile {
        requests: cli.requests,
        start_ns: reprise_store::now_ns() - span.as_nanos() as i64,
        span_ns: span.as_nanos() as i64,
        connections: cli.connections.max(1),
        body_bytes: cli.body_bytes,
    };
    let written = synth::write(&log, &profile).await?;
    println!("wrote {written} requests spanning {:.1} s to {}", cli.span_secs, cli.log);
    Ok(())
}
