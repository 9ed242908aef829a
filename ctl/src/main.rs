use std::process::ExitCode;

use clap::Parser;
use reprise_ctl::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    reprise_process::init_logging("warn", reprise_process::LogFormat::Text);
    match reprise_ctl::commands::run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
