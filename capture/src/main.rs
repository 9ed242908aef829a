use reprise_capture::CaptureConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: CaptureConfig = reprise_process::parse_layered();
    config.logging.init("info");
    reprise_process::exit_code(run(config).await)
}

async fn run(config: CaptureConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        reprise_process::shutdown_signal().await;
        signal.cancel();
    });
    let report = reprise_capture::run(config, shutdown).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
