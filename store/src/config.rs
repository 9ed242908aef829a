//! The daemons' common plumbing: layered configuration, logging, exit status, signals.
//!
//! Layered configuration for every daemon: command-line flags win over environment
//! variables, which win over a TOML file named by `--config`, which wins over defaults.
//! The file's keys are the long flag names (`listen = "0.0.0.0:7100"`,
//! `labels = ["zone=a"]`), so one reference (`--help`) documents all three layers.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;

/// Parses `T` from this process's arguments, environment and config file; on bad input
/// prints one clear error (or the help) and exits, as clap does.
pub fn parse_layered<T: Parser>() -> T {
    parse_layered_from(std::env::args_os().collect())
}

/// [`parse_layered`] over explicit arguments (the first is the program name).
pub fn parse_layered_from<T: Parser>(args: Vec<OsString>) -> T {
    let mut command = T::command();
    let matches = command.clone().get_matches_from(args.clone());
    let Some(path) = matches.try_get_one::<PathBuf>("config").ok().flatten() else {
        return T::parse_from(args);
    };
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| command.error(ErrorKind::Io, format!("cannot read {}: {e}", path.display())).exit());
    let table: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| command.error(ErrorKind::ValueValidation, format!("{}: {e}", path.display())).exit());
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            command.error(ErrorKind::UnknownArgument, format!("{}: unknown setting {key:?}", path.display())).exit()
        };
        let id = arg.get_id().as_str().to_string();
        // Flags and environment variables take precedence over the file.
        if matches!(matches.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Boolean(true) if !arg.get_action().takes_values() => {
                    extra.push(format!("--{long}").into());
                    continue;
                }
                toml::Value::Boolean(false) if !arg.get_action().takes_values() => continue,
                other => other.to_string(),
            };
            extra.push(format!("--{long}={text}").into());
        }
    }
    let mut all = args;
    all.extend(extra);
    T::try_parse_from(all).unwrap_or_else(|e| {
        command = command.about(format!("(with settings from {})", path.display()));
        e.format(&mut command).exit()
    })
}

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .init();
}

/// The exit status of a binary's run: failures are one `error: ...` line on stderr
/// (with the cause chain, no backtrace).
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: the daemons' cue for a clean shutdown.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: String,
        #[arg(long, env = "REPRISE_CONFIG_TEST_NAME")]
        name: Option<String>,
        #[arg(long)]
        labels: Vec<String>,
        #[arg(long)]
        dry_run: bool,
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("prog").chain(list.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9\"\nname = \"from-file\"\nlabels = [\"a=1\", \"b=2\"]\ndry_run = true\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let cli: Cli = parse_layered_from(args(&["--config", config]));
        assert_eq!(cli.listen, "0.0.0.0:9");
        assert_eq!(cli.name.as_deref(), Some("from-file"));
        assert_eq!(cli.labels, vec!["a=1", "b=2"]);
        assert!(cli.dry_run);
        let cli: Cli = parse_layered_from(args(&["--config", config, "--listen", "1.2.3.4:5"]));
        assert_eq!(cli.listen, "1.2.3.4:5", "flags win over the file");
    }
}
