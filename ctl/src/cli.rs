//! The command line: what a user can type, and the one conversion of `ctl replay`'s
//! flags into the controller's request.

use clap::{Args, Parser, Subcommand};
use reprise_process::token::Token;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{DiffOptions, PacingMode, ReplayOptions, StartReplayRequest};

use crate::client::UsageError;
use crate::rules::RuleArgs;

/// Record and replay production HTTP traffic on a cluster.
#[derive(Parser, Debug)]
#[command(name = "ctl", version)]
pub struct Cli {
    /// The controller's gRPC address; several, comma-separated, to find the one that leads
    /// (and to follow a replay across a failover).
    #[arg(long, global = true, env = "REPRISE_CONTROLLER", default_value = "http://127.0.0.1:7100")]
    pub controller: String,
    /// Seconds any call to the controller may take before ctl gives up (a following
    /// replay's stream is not cut; a controller that stops answering is).
    #[arg(long, global = true, env = "REPRISE_CTL_TIMEOUT_SECS", default_value_t = 60)]
    pub timeout_secs: u64,
    /// A file holding the controller's token; without it, the token is taken from
    /// $REPRISE_TOKEN (when set).
    #[arg(long, global = true, env = "REPRISE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: reprise_process::tls::TlsArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The token to present: from --token-file, else from $REPRISE_TOKEN.
    pub fn token(&self) -> anyhow::Result<Option<Token>> {
        match &self.token_file {
            Some(path) => Token::from_file(path).map(Some).map_err(|e| UsageError(e).into()),
            None => Ok(std::env::var("REPRISE_TOKEN").ok().and_then(|t| Token::new(&t))),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start, stop or cut recordings.
    #[command(subcommand)]
    Record(RecordCommand),
    /// List recordings (without a subcommand too), or delete one.
    Recordings(RecordingsArgs),
    /// List live workers.
    Workers(JsonFlag),
    /// List live capture nodes and their counters.
    Captures(JsonFlag),
    /// Replay a recording against a target and (by default) wait for the end.
    Replay(Box<ReplayArgs>),
    /// List replays, newest first.
    Replays(JsonFlag),
    /// Show one replay.
    Status(IdArgs),
    /// Show an A/B replay's diff per endpoint: requests compared, those whose responses
    /// differed, and in which fields.
    Diff(IdArgs),
    /// Pause a running replay (its timeline resumes where it stopped).
    Pause(IdArgs),
    /// Resume a paused replay.
    Resume(IdArgs),
    /// Cancel a replay.
    Cancel(IdArgs),
    /// Record and replay on this machine in one process, with nothing installed: a
    /// controller, two workers, a demo service, live capture, a replay with --multiple 5.
    Demo(crate::demo::DemoArgs),
    /// Write a recording to a GoReplay file (read straight from the traffic log).
    Export {
        /// The recording's id or name.
        #[arg(long, value_name = "ID|NAME")]
        recording: String,
        /// The GoReplay file to write.
        #[arg(long)]
        gor: std::path::PathBuf,
    },
    /// Print a shell completion script, e.g. `ctl completion bash > /etc/bash_completion.d/ctl`
    /// or `ctl completion zsh > "${fpath[1]}/_ctl"`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `ctl recordings [list|delete]`: listing is what it does without a subcommand, so
/// `ctl recordings --json` keeps working.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RecordingsArgs {
    #[command(subcommand)]
    pub command: Option<RecordingsCommand>,
    #[command(flatten)]
    pub list: JsonFlag,
}

#[derive(Subcommand, Debug)]
pub enum RecordingsCommand {
    /// List recordings.
    List(JsonFlag),
    /// Delete a recording from the catalog (its traffic stays in the log).
    ///
    /// Only the catalog entry goes: the traffic stays in the log until the log's retention
    /// removes it. A recording still recording (stop it first) or used by an unfinished
    /// replay is kept.
    Delete(RecordingRef),
}

#[derive(Args, Debug)]
pub struct RecordingRef {
    /// The recording's id or name (a name must belong to one recording only).
    #[arg(value_name = "ID|NAME")]
    pub recording: String,
    /// Print the deleted recording as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RecordCommand {
    /// Start a recording at the current end of the traffic log; prints its id.
    Start {
        #[arg(long)]
        name: String,
        /// KEY=VALUE; repeatable.
        #[arg(long = "label", value_parser = reprise_process::parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
    /// Stop a recording at the current end of the traffic log.
    Stop {
        /// The recording's id or name.
        #[arg(value_name = "ID|NAME")]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a recording of a past time window.
    Cut {
        #[arg(long)]
        name: String,
        /// Start of the window: RFC 3339, Unix seconds or milliseconds, "now", or "-5m".
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        from: i64,
        /// End of the window, same forms as --from.
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        to: i64,
        #[arg(long = "label", value_parser = reprise_process::parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The recording's id, or its name if no other recording has that name.
    #[arg(long, value_name = "ID|NAME")]
    pub recording: String,
    /// Where to send: scheme, host and port replace the recorded ones; a path is a prefix.
    #[arg(long, value_parser = parse_target)]
    pub target: String,
    /// Send every record this many times. The copies leave together, at the record's due
    /// time (a burst of N), from the same worker; with --spread, evenly over the gap to
    /// the next record.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = parse_multiple)]
    pub multiple: u32,
    /// Timeline speed factor (2 = twice as fast), or "max" for as fast as possible.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: Speed,
    /// Cluster-wide cap in requests/s (each worker gets its share); with --constant, the rate.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parse_rate)]
    pub rate: f64,
    /// Send at a constant --rate, ignoring the recorded timestamps.
    #[arg(long, requires = "rate")]
    pub constant: bool,
    /// Use at most this many workers (default: every live one).
    #[arg(long, default_value_t = 0)]
    pub workers: u32,
    /// Only workers with this label, KEY=VALUE; repeatable.
    #[arg(long = "worker-label", value_parser = reprise_process::parse_label)]
    pub worker_labels: Vec<(String, String)>,
    /// Requests awaiting a response, per worker.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Send the recorded Host header (over HTTP/2, the recorded `:authority`) instead of
    /// the target's; connections still go to the target.
    #[arg(long)]
    pub keep_host: bool,
    /// Speak HTTP/2 to the target for every request. Requests recorded on HTTP/2 go
    /// over HTTP/2 anyway: h2c by prior knowledge to http://, ALPN h2 to https://.
    #[arg(long)]
    http2: bool,
    /// Accept any TLS certificate from an https target (self-signed staging hosts).
    #[arg(long)]
    pub insecure: bool,
    /// Print the plan (workers and shares, sends, duration, mean and peak rate,
    /// connections) and exit: nothing is started or sent.
    #[arg(long, conflicts_with_all = ["detach", "simulate"])]
    pub dry_run: bool,
    /// Run the replay on the workers but write nothing to any socket (capacity planning
    /// of the dispatch path): sends are counted, no response is claimed.
    #[arg(long)]
    pub simulate: bool,
    /// Replay the recording this many times, each pass shifted by its span (a soak);
    /// 0: pass after pass until --duration or a cancel.
    #[arg(long = "loop", value_name = "N")]
    pub passes: Option<u32>,
    /// Stop once this much of the replay's timeline has passed (e.g. 90s, 1h); without
    /// --loop, the recording loops until then.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// The share of sends that may fail (transport errors and 5xx) before the replay
    /// counts as breached and ctl exits 1 [default: 0.5]. A replay in which no request
    /// succeeded is breached whatever this says.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_share)]
    pub max_error_rate: Option<f64>,
    /// Return once the replay has started; print its id.
    #[arg(long)]
    pub detach: bool,
    /// Print one JSON object at the end instead of the progress bar and table.
    #[arg(long)]
    pub json: bool,
    /// Spread each record's --multiple copies evenly over the gap to the next record
    /// instead of sending them together (a smoother amplified rate).
    #[arg(long)]
    pub spread: bool,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Session-aware: every request of one original connection goes to one worker and
    /// is sent in order over one connection of its own, each after the previous response,
    /// still on the timeline (a session that falls behind shows as lag). The plan keeps
    /// the log's partitions whole: spread a recording over at least as many partitions
    /// as workers for load to spread. A connection recorded on HTTP/2 gets an HTTP/2
    /// connection, its streams sent one at a time in the order they were opened.
    #[arg(long, conflicts_with_all = ["candidate", "compare"])]
    pub sessions: bool,
    /// An A/B shadow: send every request to this target too, and diff its responses
    /// against --target's per endpoint (status, headers, JSON fields or text).
    #[arg(long, value_parser = parse_target)]
    pub candidate: Option<String>,
    /// Diff each of --target's responses against the one kept in the recording
    /// (recorded with --track-responses), per endpoint as with --candidate.
    #[arg(long, conflicts_with = "candidate")]
    pub compare: bool,
    /// A second instance of the reference's version (--target's with --candidate, the
    /// recorded one with --compare): a field that differs between it and the reference
    /// for a request is noise there, not a difference.
    #[arg(long, value_parser = parse_target)]
    pub baseline: Option<String>,
    /// Leave this out of the diff: a JSON path ($.meta.time, $.items[*].id, with its
    /// children) or a header name (beside Date, Server and the like); repeatable.
    #[arg(long = "diff-ignore", value_name = "PATH|HEADER")]
    pub diff_ignore: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub enum Speed {
    Factor(f64),
    Max,
}

impl ReplayArgs {
    /// The request these flags make; a rule that does not compile is a usage error.
    pub fn request(&self) -> Result<StartReplayRequest, UsageError> {
        let (pacing, speed) = match (self.constant, self.speed) {
            (true, _) => (PacingMode::Constant, 1.0),
            (false, Speed::Max) => (PacingMode::Max, 1.0),
            (false, Speed::Factor(f)) => (PacingMode::Original, f),
        };
        Ok(StartReplayRequest {
            protocol_version: PROTOCOL_VERSION,
            recording_id: self.recording.clone(),
            options: Some(ReplayOptions {
                target: self.target.clone(),
                multiple: self.multiple,
                speed,
                pacing: pacing.into(),
                rate_per_sec: self.rate,
                max_in_flight: self.max_in_flight,
                request_timeout_ms: self.timeout_ms,
                keep_host: self.keep_host,
                http2: self.http2,
                simulate: self.simulate,
                insecure_tls: self.insecure,
                passes: self.passes.unwrap_or(1).max(1),
                endless: self.passes == Some(0) || (self.passes.is_none() && self.duration.is_some()),
                duration_ms: self.duration.map_or(0, |d| d.as_millis().max(1) as u64),
                max_error_rate: self.max_error_rate,
                rules: Some(self.rules.rules()?),
                sessions: self.sessions,
                spread: self.spread,
                diff: (self.candidate.is_some() || self.compare).then(|| DiffOptions {
                    candidate: self.candidate.clone().unwrap_or_default(),
                    baseline: self.baseline.clone().unwrap_or_default(),
                    ignore: self.diff_ignore.clone(),
                    recorded: self.compare,
                }),
            }),
            workers: self.workers,
            worker_labels: self.worker_labels.iter().cloned().collect(),
        })
    }
}

fn parse_target(s: &str) -> Result<String, String> {
    let uri = s.parse::<tonic::codegen::http::Uri>().ok();
    match uri.as_ref().map(|u| (u.scheme_str(), u.host())) {
        Some((Some("http" | "https"), Some(host))) if !host.is_empty() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not a target: give http://host[:port][/prefix] or https://...")),
    }
}

fn parse_multiple(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a multiple: a whole number, 1 or more")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r >= 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{s:?} is not a rate: a number of requests/s, 0 or more")),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a share: a number from 0 to 1 (0.05 is 5%)")),
    }
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
        _ => Err(format!("{s:?} is not a positive number or \"max\"")),
    }
}

/// A time as Unix milliseconds.
fn parse_time(s: &str) -> Result<i64, String> {
    let now = reprise_store::now_ms();
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let (number, unit) = ago.split_at(ago.find(|c: char| !c.is_ascii_digit()).unwrap_or(ago.len()));
        let n: i64 = number.parse().map_err(|_| format!("{s:?}: expected e.g. -30s, -5m, -2h"))?;
        let scale = match unit {
            "s" | "" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
        };
        return Ok(now - n * scale);
    }
    if let Ok(n) = s.parse::<i64>() {
        // Milliseconds have 13 digits today; seconds 10.
        return Ok(if n.abs() >= 100_000_000_000 { n } else { n * 1000 });
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
        .map_err(|e| format!("{s:?} is not a time (RFC 3339, Unix seconds/ms, now, -5m): {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The CLI reference of every binary, from clap itself.
    fn cli_reference() -> String {
        let mut out = String::from(
            "# CLI reference\n\nGenerated from the binaries' own `--help` (a test keeps it current: \
             `UPDATE_CLI_DOCS=1 cargo test -p reprise-ctl cli_reference`).\n",
        );
        let mut section = |title: &str, command: clap::Command| {
            // Values of environment variables set where the test runs must not leak in.
            let mut command = command.mut_args(|a| a.hide_env_values(true));
            let help = command.render_long_help().to_string();
            out.push_str(&format!("\n## `{title}`\n\n```text\n{}\n```\n", help.trim_end()));
        };
        section("ctl", super::Cli::command());
        let ctl = super::Cli::command();
        for sub in ctl.get_subcommands() {
            let name = sub.get_name().to_string();
            section(&format!("ctl {name}"), sub.clone());
            for nested in sub.get_subcommands() {
                section(&format!("ctl {name} {}", nested.get_name()), nested.clone());
            }
        }
        section("reprise-controller", reprise_controller::ControllerConfig::command());
        section("reprise-worker", reprise_worker::WorkerConfig::command());
        section("reprise-capture", reprise_capture::CaptureConfig::command());
        out
    }

    /// The options `ctl replay` sends for these extra flags.
    fn replay_options(flags: &[&str]) -> reprise_proto::v1::ReplayOptions {
        let args = ["ctl", "replay", "--recording", "rec-1", "--target", "http://127.0.0.1:1"];
        let cli = <super::Cli as clap::Parser>::try_parse_from(args.iter().chain(flags)).unwrap();
        let super::Command::Replay(replay) = cli.command else { panic!("not a replay") };
        replay.request().unwrap().options.unwrap()
    }

    #[test]
    fn loop_and_duration_flags_make_passes_or_an_endless_soak() {
        let passes = |o: reprise_proto::v1::ReplayOptions| (o.passes, o.endless, o.duration_ms);
        assert_eq!(passes(replay_options(&[])), (1, false, 0));
        assert_eq!(passes(replay_options(&["--loop", "3"])), (3, false, 0));
        assert_eq!(passes(replay_options(&["--loop", "0"])), (1, true, 0));
        assert_eq!(passes(replay_options(&["--duration", "90s"])), (1, true, 90_000));
        assert_eq!(passes(replay_options(&["--loop", "2", "--duration", "1h"])), (2, false, 3_600_000));
        let bad = ["ctl", "replay", "--recording", "r", "--target", "http://h", "--duration", "soon"];
        assert!(<super::Cli as clap::Parser>::try_parse_from(bad).is_err());
    }

    #[test]
    fn cli_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CLI.md");
        let current = cli_reference();
        if std::env::var_os("UPDATE_CLI_DOCS").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == current,
            "docs/CLI.md is stale: run UPDATE_CLI_DOCS=1 cargo test -p reprise-ctl cli_reference"
        );
    }
}
