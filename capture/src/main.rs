use reprise_capture::CaptureConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reprise_store::config::init_logging("info");
    let config: CaptureConfig = reprise_store::config::parse_layered();
    reprise_store::config::exit_code(run(config).await)
}

async fn run(config: CaptureConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        reprise_store::config::shutdown_signal().await;
        signal.cancel();
    });
    let report = reprise_capture::run(config, shutdown).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
