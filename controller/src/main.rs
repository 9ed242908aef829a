use reprise_controller::{Controller, ControllerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: ControllerConfig = reprise_process::parse_layered();
    config.logging.init("info");
    reprise_process::exit_code(run(config).await)
}

async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let controller = Controller::start(config).await?;
    println!(
        "controller {} serving ctl on {} and the stats API on http://{}/",
        controller.id, controller.grpc_addr, controller.http_addr
    );
    tokio::select! {
        _ = reprise_process::shutdown_signal() => {
            controller.shutdown().await;
            Ok(())
        }
        // A deposed leader stops: restarted (by its supervisor), it campaigns again.
        _ = controller.deposed() => anyhow::bail!("lost the leadership of the controllers (catalog lease); exiting"),
    }
}
