//! `reprise-sink`: an HTTP/1.1 + h2c server that answers `200 ok` and counts requests.
//! `GET /_sink/report` returns the counts as JSON; the report is also printed on exit.

use std::net::SocketAddr;

use clap::Parser;
use reprise_loadtests::sink::Sink;

/// Counting HTTP sink for replays and benchmarks.
#[derive(Parser, Debug)]
#[command(name = "reprise-sink", version)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Check X-Request-Id values 0..N for duplicates and losses.
    #[arg(long, default_value_t = 0)]
    check_ids: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reprise_process::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sink = Sink::start_checking_ids(cli.listen, cli.check_ids).await?;
    println!("sink listening on http://{}/ (report: /_sink/report)", sink.addr);
    reprise_process::shutdown_signal().await;
    println!("{}", serde_json::to_string(&sink.report())?);
    Ok(())
}
