use reprise_capture::{CaptureConfig, UsageError};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: CaptureConfig = reprise_process::parse_layered();
    config.logging.init("info");
    let result = run(config).await;
    // 2 for usage errors only, as clap's own; 1 for everything that went wrong.
    let usage = matches!(&result, Err(e) if e.downcast_ref::<UsageError>().is_some());
    let code = reprise_process::exit_code(result);
    if usage { std::process::ExitCode::from(2) } else { code }
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
