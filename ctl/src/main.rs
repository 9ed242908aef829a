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
            // 2 for usage errors only, as clap's own; 1 for everything that went wrong.
            ExitCode::from(if e.downcast_ref::<reprise_ctl::client::UsageError>().is_some() { 2 } else { 1 })
        }
    }
}
