//! The process plumbing shared by Reprise's binaries, none of it storage:
//!
//! * [`parse_layered`]: configuration from flags, `REPRISE_*` environment variables and a
//!   TOML file, in that order of precedence, over the defaults.
//! * [`LogArgs`] and [`init_logging`]: logs on stderr, text or JSON.
//! * [`exit_code`] and [`shutdown_signal`]: how a binary ends.
//! * [`parse_label`]: the `KEY=VALUE` value parser of every `--label`-like flag.
//! * [`token::Token`]: the controller's shared secret, never printed.
//! * [`tls::TlsArgs`]: the certificate flags of every gRPC party (mutual TLS).
//! * [`metrics`]: Prometheus families built at scrape time, OpenMetrics or Prometheus
//!   text, the `/metrics` server, histograms in seconds from the workers' HDR histograms.
//! * [`testing`]: checks each daemon runs over its own configuration (every flag has an
//!   environment variable; the example config file is complete and parses).

mod layered;
mod logging;
pub mod metrics;
pub mod testing;
pub mod tls;
pub mod token;

pub use layered::{parse_layered, parse_layered_from, try_parse_layered_from};
pub use logging::{LogArgs, LogFormat, init_logging};

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

/// `T` with its defaults and `args` (no program name), reading neither the environment
/// nor a config file: the in-process daemons of tests and `ctl demo` must not pick up the
/// `REPRISE_*` variables meant for the real ones. Panics on arguments that do not parse
/// (a programming error).
pub fn parse_defaults_with<'a, T: clap::Parser>(args: impl IntoIterator<Item = &'a str>) -> T {
    let command = T::command().mut_args(|a| a.env(None));
    let name = command.get_name().to_string();
    let matches = command.get_matches_from(std::iter::once(name).chain(args.into_iter().map(String::from)));
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// This machine's host name (what others may call it by), `localhost` if unknown.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |h| h.trim().to_string())
}

/// Parses a `KEY=VALUE` label (clap value parser); both sides are trimmed, the key must
/// not be empty, the value may be.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("label {s:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_equals_value() {
        assert_eq!(parse_label("zone=a"), Ok(("zone".into(), "a".into())));
        assert_eq!(parse_label(" zone = a=b "), Ok(("zone".into(), "a=b".into())));
        assert_eq!(parse_label("zone="), Ok(("zone".into(), String::new())));
        assert!(parse_label("zone").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_label("=a").is_err());
    }
}
