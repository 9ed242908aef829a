use std::process::ExitCode;

use reprise_controller::{Controller, ControllerConfig};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config: ControllerConfig = reprise_store::config::parse_layered();
    let controller = match Controller::start(config).await {
        Ok(controller) => controller,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "controller {} serving ctl on {} and the stats API on http://{}/",
        controller.id, controller.grpc_addr, controller.http_addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    controller.shutdown().await;
    ExitCode::SUCCESS
}
