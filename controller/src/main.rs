use reprise_controller::{Controller, ControllerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config: ControllerConfig = reprise_store::config::parse_layered();
    let controller = Controller::start(config).await?;
    println!(
        "controller {} serving ctl on {} and the stats API on http://{}/",
        controller.id, controller.grpc_addr, controller.http_addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    controller.shutdown().await;
    Ok(())
}
