use reprise_controller::{Controller, ControllerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reprise_store::config::init_logging("info");
    let config: ControllerConfig = reprise_store::config::parse_layered();
    reprise_store::config::exit_code(run(config).await)
}

async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let controller = Controller::start(config).await?;
    println!(
        "controller {} serving ctl on {} and the stats API on http://{}/",
        controller.id, controller.grpc_addr, controller.http_addr
    );
    reprise_store::config::shutdown_signal().await;
    controller.shutdown().await;
    Ok(())
}
