//! `reprise-gen`: writes synthetic traffic (real HTTP/1.1 requests in traffic records,
//! each with `X-Request-Id: N`) into a traffic log, as a capture node would, and
//! optionally the same traffic as a GoReplay file for side-by-side runs.

use std::time::Duration;

use clap::Parser;
use reprise_loadtests::synth::{self, Profile, Shape};

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
    /// How the rate moves over the span.
    #[arg(long, value_enum, default_value = "constant")]
    shape: Shape,
    /// Connections the requests are spread over.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Share of POST requests (the rest are GETs), 0 to 1.
    #[arg(long, default_value_t = 0.33)]
    post_share: f64,
    /// Body size of the POST requests.
    #[arg(long, default_value_t = 128)]
    body_bytes: usize,
    /// Partitions, if the topic must be created.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Also write the traffic to this GoReplay file.
    #[arg(long)]
    gor: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reprise_process::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !(cli.span_secs.is_finite() && cli.span_secs >= 0.0) {
        anyhow::bail!("--span-secs must be a non-negative number");
    }
    if !(0.0..=1.0).contains(&cli.post_share) {
        anyhow::bail!("--post-share must be between 0 and 1");
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
        post_share: cli.post_share,
        shape: cli.shape,
        protocol: reprise_proto::v1::HttpProtocol::Http1,
    };
    let written = match &cli.gor {
        Some(path) => {
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            let written = synth::write_with_gor(&log, &profile, Some(&mut out)).await?;
            std::io::Write::flush(&mut out)?;
            written
        }
        None => synth::write(&log, &profile).await?,
    };
    println!("wrote {written} requests spanning {:.1} s to {}", cli.span_secs, cli.log);
    Ok(())
}
