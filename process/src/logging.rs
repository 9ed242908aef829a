//! Logs on stderr: plain text (coloured only on a terminal) or one JSON object a line.

use std::io::IsTerminal;

/// The logging settings every daemon flattens into its configuration.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct LogArgs {
    /// Log line format on stderr (level filter: RUST_LOG, e.g. "info,reprise_worker=debug").
    #[arg(long, env = "REPRISE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

impl LogArgs {
    /// [`init_logging`] with these settings.
    pub fn init(&self, default_level: &str) {
        init_logging(default_level, self.log_format);
    }
}

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise. Call once, after
/// the configuration is parsed. librdkafka's own lines come at error level only (its
/// warnings are mostly about properties a client ignores; its errors say why a broker
/// could not be reached, with repeats suppressed), and the rdkafka crate's echo of each
/// error not at all (the caller gets the error itself).
pub fn init_logging(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| format!("{default_level},librdkafka=error,rdkafka=off").into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
