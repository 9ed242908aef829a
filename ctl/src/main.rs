//! `ctl`: the command line of a Reprise cluster. Talks to the controller over gRPC;
//! `ctl demo` runs the whole system in this process.

mod demo;
mod demo_service;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use reprise_controller::status::ReplayStatus;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_proto::v1::{
    ControlAction, ControlReplayRequest, CutRecordingRequest, HelloRequest, ListRequest, ReplayRef,
    StartRecordingRequest, StartReplayRequest, StopRecordingRequest,
};
use reprise_store::schema::{Recording, WorkerInfo};
use serde_json::Value;
use tonic::transport::Channel;

/// Record and replay production HTTP traffic on a cluster.
#[derive(Parser, Debug)]
#[command(name = "ctl", version)]
struct Cli {
    /// The controller's gRPC address.
    #[arg(long, global = true, env = "REPRISE_CONTROLLER", default_value = "http://127.0.0.1:7100")]
    controller: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start, stop or cut recordings.
    #[command(subcommand)]
    Record(RecordCommand),
    /// List recordings.
    Recordings(JsonFlag),
    /// List live workers.
    Workers(JsonFlag),
    /// Replay a recording against a target and (by default) wait for the end.
    Replay(ReplayArgs),
    /// List replays, newest first.
    Replays(JsonFlag),
    /// Show one replay.
    Status(IdArgs),
    /// Pause a running replay (its timeline resumes where it stopped).
    Pause(IdArgs),
    /// Resume a paused replay.
    Resume(IdArgs),
    /// Cancel a replay.
    Cancel(IdArgs),
    /// Record and replay on this machine in one process, with nothing installed: a
    /// controller, two workers, a demo service, live capture, a replay with --multiple 5.
    Demo(demo::DemoArgs),
    /// Write a recording to a GoReplay file (read straight from the traffic log).
    Export {
        #[arg(long)]
        recording: String,
        /// The GoReplay file to write.
        #[arg(long)]
        gor: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum RecordCommand {
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
struct JsonFlag {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct IdArgs {
    id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    #[arg(long)]
    recording: String,
    /// Where to send: scheme, host and port replace the recorded ones; a path is a prefix.
    #[arg(long)]
    target: String,
    /// Send every record this many times.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    multiple: u32,
    /// Timeline speed factor (2 = twice as fast), or "max" for as fast as possible.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: Speed,
    /// Cluster-wide cap in requests/s (each worker gets its share); with --constant, the rate.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Send at a constant --rate, ignoring the recorded timestamps.
    #[arg(long, requires = "rate")]
    constant: bool,
    /// Use at most this many workers (default: every live one).
    #[arg(long, default_value_t = 0)]
    workers: u32,
    /// Only workers with this label, KEY=VALUE; repeatable.
    #[arg(long = "worker-label", value_parser = reprise_process::parse_label)]
    worker_labels: Vec<(String, String)>,
    /// Requests awaiting a response, per worker.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Send the recorded Host header instead of the target's.
    #[arg(long)]
    keep_host: bool,
    /// Speak HTTP/2 to the target.
    #[arg(long)]
    http2: bool,
    /// Accept any TLS certificate from an https target (self-signed staging hosts).
    #[arg(long)]
    insecure: bool,
    /// Do everything but write to the socket (capacity planning).
    #[arg(long)]
    dry_run: bool,
    /// Return once the replay has started; print its id.
    #[arg(long)]
    detach: bool,
    /// Print one JSON object at the end instead of the progress bar and table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy)]
enum Speed {
    Factor(f64),
    Max,
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

#[tokio::main]
async fn main() -> ExitCode {
    reprise_process::init_logging("warn", reprise_process::LogFormat::Text);
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub(crate) async fn connect(address: &str) -> anyhow::Result<ControllerClient<Channel>> {
    let endpoint = Channel::from_shared(address.to_string())
        .with_context(|| format!("{address:?} is not a controller URL (e.g. http://127.0.0.1:7100)"))?
        .connect_timeout(Duration::from_secs(5));
    let channel =
        endpoint.connect().await.map_err(|e| anyhow::anyhow!("cannot reach the controller at {address}: {e}"))?;
    let mut client = ControllerClient::new(channel);
    client.hello(HelloRequest { protocol_version: PROTOCOL_VERSION }).await.map_err(status_error)?;
    Ok(client)
}

pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialisable"));
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Demo(args) = cli.command {
        return demo::run(args).await;
    }
    let mut client = connect(&cli.controller).await?;
    match cli.command {
        Command::Record(RecordCommand::Start { name, labels, json }) => {
            let request = StartRecordingRequest {
                protocol_version: PROTOCOL_VERSION,
                name,
                labels: labels.into_iter().collect(),
            };
            let reply = client.start_recording(request).await.map_err(status_error)?.into_inner();
            let recording: Recording = serde_json::from_str(&reply.json)?;
            if json {
                print_json(&serde_json::json!({ "id": recording.id }));
            } else {
                println!("{}", recording.id);
            }
        }
        Command::Record(RecordCommand::Stop { id, json }) => {
            let reply = client.stop_recording(StopRecordingRequest { id }).await.map_err(status_error)?.into_inner();
            print_recording(&reply.json, json)?;
        }
        Command::Record(RecordCommand::Cut { name, from, to, labels, json }) => {
            let request = CutRecordingRequest {
                protocol_version: PROTOCOL_VERSION,
                name,
                from_unix_ms: from,
                to_unix_ms: to,
                labels: labels.into_iter().collect(),
            };
            let reply = client.cut_recording(request).await.map_err(status_error)?.into_inner();
            print_recording(&reply.json, json)?;
        }
        Command::Recordings(JsonFlag { json }) => {
            let items = client.list_recordings(ListRequest {}).await.map_err(status_error)?.into_inner().items;
            let recordings: Vec<Recording> = items.iter().map(|i| serde_json::from_str(i)).collect::<Result<_, _>>()?;
            if json {
                print_json(&serde_json::to_value(&recordings)?);
            } else {
                println!("{:<22} {:<20} {:<9} {:>10} {:>9}", "ID", "NAME", "STATE", "RECORDS", "SPAN_S");
                for r in recordings {
                    let span = match (r.first_timestamp_ns, r.last_timestamp_ns) {
                        (Some(a), Some(b)) => format!("{:.1}", (b - a) as f64 / 1e9),
                        _ => "-".into(),
                    };
                    let state = serde_json::to_value(r.state)?.as_str().unwrap_or_default().to_string();
                    println!("{:<22} {:<20} {:<9} {:>10} {:>9}", r.id, r.name, state, r.record_count, span);
                }
            }
        }
        Command::Workers(JsonFlag { json }) => {
            let items = client.list_workers(ListRequest {}).await.map_err(status_error)?.into_inner().items;
            let workers: Vec<WorkerInfo> = items.iter().map(|i| serde_json::from_str(i)).collect::<Result<_, _>>()?;
            if json {
                print_json(&serde_json::to_value(&workers)?);
            } else {
                println!("{:<20} {:<24} {:>5} {:<10} LABELS", "ID", "ADDRESS", "CORES", "VERSION");
                for w in workers {
                    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{:<20} {:<24} {:>5} {:<10} {}", w.id, w.address, w.cores, w.version, labels.join(","));
                }
            }
        }
        Command::Replay(args) => return replay(&mut client, args).await,
        Command::Replays(JsonFlag { json }) => {
            let items = client.list_replays(ListRequest {}).await.map_err(status_error)?.into_inner().items;
            let list: Vec<ReplayStatus> = items.iter().map(|i| serde_json::from_str(i)).collect::<Result<_, _>>()?;
            if json {
                print_json(&serde_json::to_value(&list)?);
            } else {
                println!(
                    "{:<22} {:<22} {:<10} {:>10} {:>10} {:>8}",
                    "ID", "RECORDING", "STATE", "SENT", "QPS", "ERRORS"
                );
                for s in list {
                    println!(
                        "{:<22} {:<22} {:<10} {:>10} {:>10.0} {:>8}",
                        s.id,
                        s.recording_id,
                        state_name(&s),
                        s.sent,
                        s.qps,
                        s.errors
                    );
                }
            }
        }
        Command::Status(IdArgs { id, json }) => {
            let reply = client.get_replay(ReplayRef { id }).await.map_err(status_error)?.into_inner();
            let status: ReplayStatus = serde_json::from_str(&reply.json)?;
            show_status(&status, json);
        }
        Command::Pause(args) => control(&mut client, args, ControlAction::Pause).await?,
        Command::Resume(args) => control(&mut client, args, ControlAction::Resume).await?,
        Command::Cancel(args) => control(&mut client, args, ControlAction::Cancel).await?,
        Command::Demo(_) => unreachable!("handled before connecting"),
        Command::Export { recording, gor } => {
            let items = client.list_recordings(ListRequest {}).await.map_err(status_error)?.into_inner().items;
            let recording: Recording = items
                .iter()
                .filter_map(|i| serde_json::from_str::<Recording>(i).ok())
                .find(|r| r.id == recording)
                .ok_or_else(|| anyhow::anyhow!("no recording {recording}"))?;
            let log = reprise_store::open_log(&recording.log_url)
                .await
                .with_context(|| format!("cannot open the recording's traffic log {}", recording.log_url))?;
            let file = std::fs::File::create(&gor).with_context(|| format!("cannot create {}", gor.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let written = reprise_store::gor::export(&*log, &recording.ranges, &mut out).await?;
            out.flush()?;
            println!("wrote {written} messages of {} to {}", recording.id, gor.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_recording(json: &str, as_json: bool) -> anyhow::Result<()> {
    let recording: Recording = serde_json::from_str(json)?;
    if as_json {
        print_json(&serde_json::to_value(&recording)?);
    } else {
        let span = match (recording.first_timestamp_ns, recording.last_timestamp_ns) {
            (Some(a), Some(b)) => format!("{:.1} s", (b - a) as f64 / 1e9),
            _ => "-".into(),
        };
        println!("{}: {} records over {span}", recording.id, recording.record_count);
        if recording.missing_records > 0 {
            println!("warning: {} records are already gone from the log (retention)", recording.missing_records);
        }
    }
    Ok(())
}

async fn control(client: &mut ControllerClient<Channel>, args: IdArgs, action: ControlAction) -> anyhow::Result<()> {
    let request = ControlReplayRequest { id: args.id, action: action as i32 };
    let reply = client.control_replay(request).await.map_err(status_error)?.into_inner();
    let mut status: ReplayStatus = serde_json::from_str(&reply.json)?;
    if action == ControlAction::Cancel {
        // Cancelled means the workers have stopped and reported: wait for that.
        status = follow_replay(client, status, false).await?;
    }
    if args.json {
        print_json(&serde_json::to_value(&status)?);
    } else {
        println!("{}: {}", status.id, state_name(&status));
    }
    Ok(())
}

fn state_name(status: &ReplayStatus) -> String {
    serde_json::to_value(status.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

async fn replay(client: &mut ControllerClient<Channel>, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.rate < 0.0 || args.rate.is_nan() {
        bail!("--rate must not be negative");
    }
    let (pacing, speed) = match (args.constant, args.speed) {
        (true, _) => (3, 1.0),
        (false, Speed::Max) => (2, 1.0),
        (false, Speed::Factor(f)) => (1, f),
    };
    let request = StartReplayRequest {
        protocol_version: PROTOCOL_VERSION,
        recording_id: args.recording,
        target: args.target,
        multiple: args.multiple,
        speed,
        pacing,
        rate_per_sec: args.rate,
        workers: args.workers,
        worker_labels: args.worker_labels.into_iter().collect::<HashMap<_, _>>(),
        max_in_flight: args.max_in_flight,
        request_timeout_ms: args.timeout_ms,
        keep_host: args.keep_host,
        insecure_tls: args.insecure,
        http2: args.http2,
        dry_run: args.dry_run,
    };
    let reply = client.start_replay(request).await.map_err(status_error)?.into_inner();
    let started: ReplayStatus = serde_json::from_str(&reply.json)?;
    if args.detach {
        if args.json {
            print_json(&serde_json::json!({ "id": started.id, "state": started.state }));
        } else {
            println!("{}", started.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let last = follow_replay(client, started, !args.json).await?;
    show_status(&last, args.json);
    Ok(if last.state == reprise_store::schema::ReplayState::Done { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// Follows a replay to its end, with a live progress line on a terminal (when
/// `progress`); returns the final status.
pub(crate) async fn follow_replay(
    client: &mut ControllerClient<Channel>,
    started: ReplayStatus,
    progress: bool,
) -> anyhow::Result<ReplayStatus> {
    let show_progress = progress && std::io::stderr().is_terminal();
    let mut last = started;
    let mut stream = client.watch_replay(ReplayRef { id: last.id.clone() }).await.map_err(status_error)?.into_inner();
    while let Some(reply) = stream.message().await.map_err(status_error)? {
        last = serde_json::from_str(&reply.json)?;
        if show_progress {
            eprint!("\r\x1b[2K{}", progress_line(&last));
            let _ = std::io::stderr().flush();
        }
        if last.state.is_final() {
            break;
        }
    }
    if show_progress {
        eprintln!();
    }
    if !last.state.is_final() {
        // The stream ended early (controller restart): report where it stands.
        let reply = client.get_replay(ReplayRef { id: last.id.clone() }).await.map_err(status_error)?.into_inner();
        last = serde_json::from_str(&reply.json)?;
    }
    Ok(last)
}

fn progress_line(s: &ReplayStatus) -> String {
    let width = 24;
    let filled = ((s.progress * width as f64) as usize).min(width);
    let eta = s.eta_s.map_or("-".into(), |e| format!("{e:.0}s"));
    format!(
        "[{}{}] {:>5.1}%  {:>9.0} req/s  p99 {:.1} ms  lag p99 {:.2} ms  errors {}  ETA {eta}",
        "=".repeat(filled),
        " ".repeat(width - filled),
        s.progress * 100.0,
        s.current_qps,
        s.latency_ms.p99,
        s.lag_ms.p99,
        s.errors + s.http_errors,
    )
}

pub(crate) fn show_status(s: &ReplayStatus, json: bool) {
    if json {
        print_json(&serde_json::to_value(s).expect("serialisable"));
        return;
    }
    let speed = s.speed.map_or(s.pacing.clone(), |f| format!("x{f}"));
    println!("replay      {} ({})", s.id, state_name(s));
    println!("recording   {}  ({} records, multiple {}, {speed})", s.recording_id, s.records, s.multiple);
    println!("target      {}", s.target);
    println!("sent        {}  in {:.1} s  ({:.0} req/s)", s.sent, s.duration_s, s.qps);
    println!("responses   ok {}  4xx/5xx {}  {:?}", s.ok, s.http_errors, s.status);
    println!("errors      {}  {:?}", s.errors, s.error_kinds);
    println!(
        "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        s.latency_ms.p50, s.latency_ms.p90, s.latency_ms.p99, s.latency_ms.max
    );
    println!("lag ms      p50 {:.2}  p99 {:.2}  max {:.2}", s.lag_ms.p50, s.lag_ms.p99, s.lag_ms.max);
    if s.skipped > 0 {
        println!("skipped     {} records (undecodable or not a request)", s.skipped);
    }
    for w in &s.workers {
        let error = w.error.as_deref().map(|e| format!("  {e}")).unwrap_or_default();
        println!("worker      {:<16} {:<10} read {:>9} sent {:>9}{error}", w.id, w.state, w.read, w.sent);
    }
    if let Some(error) = &s.error {
        println!("error       {error}");
    }
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
            if sub.has_subcommands() {
                for nested in sub.get_subcommands() {
                    section(&format!("ctl {name} {}", nested.get_name()), nested.clone());
                }
            } else {
                section(&format!("ctl {name}"), sub.clone());
            }
        }
        section("reprise-controller", reprise_controller::ControllerConfig::command());
        section("reprise-worker", reprise_worker::WorkerConfig::command());
        section("reprise-capture", reprise_capture::CaptureConfig::command());
        out
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
