use reprise_worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reprise_store::config::init_logging("info");
    let config: WorkerConfig = reprise_store::config::parse_layered();
    reprise_store::config::exit_code(run(config).await)
}

async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let worker = Worker::start(config).await?;
    println!("worker {} listening on {}", worker.id, worker.local_addr);
    reprise_store::config::shutdown_signal().await;
    worker.shutdown().await;
    Ok(())
}
