use std::process::ExitCode;

use reprise_worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config: WorkerConfig = reprise_store::config::parse_layered();
    let worker = match Worker::start(config).await {
        Ok(worker) => worker,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("worker {} listening on {}", worker.id, worker.local_addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    worker.shutdown().await;
    ExitCode::SUCCESS
}
