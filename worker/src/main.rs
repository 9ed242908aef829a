use reprise_worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: WorkerConfig = reprise_process::parse_layered();
    config.logging.init("info");
    reprise_process::exit_code(run(config).await)
}

async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let worker = Worker::start(config).await?;
    println!("worker {} listening on {}", worker.id, worker.local_addr);
    reprise_process::shutdown_signal().await;
    worker.shutdown().await;
    Ok(())
}
