//! Each ctl command: one call to the controller (or, for `export`, a read of the log),
//! then output.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{
    ControlAction, ControlReplayRequest, CutRecordingRequest, ListRequest, RecordingRef, ReplayRef, ReplayState,
    ReplayStatus, StartRecordingRequest, StopRecordingRequest,
};

use crate::cli::{Cli, Command, IdArgs, JsonFlag, RecordCommand, RecordingsArgs, RecordingsCommand, ReplayArgs};
use crate::client::{self, Client, Target, status_error};
use crate::{demo, output, recordings};

/// Runs one command; the exit status says whether it did what was asked.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => return demo::run(args).await,
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ctl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let target = Target {
        addresses: cli.controller.clone(),
        timeout: Duration::from_secs(cli.timeout_secs.max(1)),
        token: cli.token()?.map(std::sync::Arc::new),
        tls: cli.tls.client().map_err(|e| client::UsageError(e.to_string()))?,
    };
    let mut client = target.connect().await?;
    match cli.command {
        Command::Record(command) => record(&mut client, command).await?,
        Command::Recordings(RecordingsArgs { command: Some(RecordingsCommand::Delete(args)), .. }) => {
            let id = recordings::lookup(&mut client, &args.recording).await?.id;
            let deleted = client.delete_recording(RecordingRef { id }).await.map_err(status_error)?.into_inner();
            match args.json {
                true => output::print_json(&deleted),
                false => println!(
                    "deleted recording {} ({}) from the catalog; its traffic stays in the log until retention \
                     removes it",
                    deleted.id, deleted.name
                ),
            }
        }
        Command::Recordings(RecordingsArgs { command, list }) => {
            let JsonFlag { json } = match command {
                Some(RecordingsCommand::List(flag)) => flag,
                _ => list,
            };
            let list = client.list_recordings(ListRequest {}).await.map_err(status_error)?.into_inner().recordings;
            if json { output::print_json(&list) } else { output::recordings(&list) }
        }
        Command::Workers(JsonFlag { json }) => {
            let list = client.list_workers(ListRequest {}).await.map_err(status_error)?.into_inner().workers;
            if json { output::print_json(&list) } else { output::workers(&list) }
        }
        Command::Captures(JsonFlag { json }) => {
            let list = client.list_captures(ListRequest {}).await.map_err(status_error)?.into_inner().captures;
            if json { output::print_json(&list) } else { output::captures(&list) }
        }
        Command::Replay(args) => return replay(&target, &mut client, *args).await,
        Command::Replays(JsonFlag { json }) => {
            let list = client.list_replays(ListRequest {}).await.map_err(status_error)?.into_inner().replays;
            if json { output::print_json(&list) } else { output::replays(&list) }
        }
        Command::Status(IdArgs { id, json }) => {
            output::status(&client.get_replay(ReplayRef { id }).await.map_err(status_error)?.into_inner(), json)
        }
        Command::Diff(IdArgs { id, json }) => {
            output::diff(&client.get_replay(ReplayRef { id }).await.map_err(status_error)?.into_inner(), json)
        }
        Command::Pause(args) => control(&target, &mut client, args, ControlAction::Pause).await?,
        Command::Resume(args) => control(&target, &mut client, args, ControlAction::Resume).await?,
        Command::Cancel(args) => control(&target, &mut client, args, ControlAction::Cancel).await?,
        Command::Demo(_) | Command::Completion { .. } => unreachable!("handled before connecting"),
        Command::Export { recording, gor } => export(&mut client, &recording, &gor).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn record(client: &mut Client, command: RecordCommand) -> anyhow::Result<()> {
    let (recording, json) = match command {
        RecordCommand::Start { name, labels, json } => {
            let request = StartRecordingRequest {
                protocol_version: PROTOCOL_VERSION,
                name,
                labels: labels.into_iter().collect(),
            };
            let recording = client.start_recording(request).await.map_err(status_error)?.into_inner();
            // Scripts take the id: `ID=$(ctl record start --name x)`.
            match json {
                true => output::print_json(&serde_json::json!({ "id": recording.id })),
                false => println!("{}", recording.id),
            }
            return Ok(());
        }
        RecordCommand::Stop { id, json } => {
            let id = recordings::lookup(client, &id).await?.id;
            (client.stop_recording(StopRecordingRequest { id }).await.map_err(status_error)?.into_inner(), json)
        }
        RecordCommand::Cut { name, from, to, labels, json } => {
            let request = CutRecordingRequest {
                protocol_version: PROTOCOL_VERSION,
                name,
                from_unix_ms: from,
                to_unix_ms: to,
                labels: labels.into_iter().collect(),
            };
            (client.cut_recording(request).await.map_err(status_error)?.into_inner(), json)
        }
    };
    if json {
        output::print_json(&recording)
    } else {
        output::recording(&recording)
    }
    Ok(())
}

async fn control(target: &Target, client: &mut Client, args: IdArgs, action: ControlAction) -> anyhow::Result<()> {
    let request = ControlReplayRequest { id: args.id, action: action.into() };
    let mut status = client.control_replay(request).await.map_err(status_error)?.into_inner();
    if action == ControlAction::Cancel {
        // Cancelled means the workers have stopped and reported: wait for that.
        status = follow_with_progress(target, client, &status.id, false).await?;
    }
    if args.json {
        output::print_json(&status);
    } else {
        println!("{}: {}", status.id, status.state());
    }
    Ok(())
}

/// Starts a replay and (unless detached) follows it to its end: exit status 0 only if
/// it ran to its end within its thresholds. Ctrl-C cancels it and prints its summary.
async fn replay(target: &Target, client: &mut Client, mut args: ReplayArgs) -> anyhow::Result<ExitCode> {
    args.recording = recordings::lookup(client, &args.recording).await?.id;
    if args.dry_run {
        let plan = client.plan_replay(args.request()?).await.map_err(status_error)?.into_inner();
        output::plan(&plan, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    let started = client.start_replay(args.request()?).await.map_err(status_error)?.into_inner();
    for warning in &started.warnings {
        eprintln!("warning: {warning}");
    }
    if args.detach {
        match args.json {
            true => output::print_json(&serde_json::json!({ "id": started.id, "state": started.state().to_string() })),
            false => println!("{}", started.id),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        // The id, before the wait: to check on it or cancel it from another shell.
        let id = &started.id;
        eprintln!("replay {id} started (ctl status {id}, ctl cancel {id})");
    }
    let followed = tokio::select! {
        last = follow_with_progress(target, client, &started.id, !args.json) => Some(last?),
        _ = tokio::signal::ctrl_c() => None,
    };
    let last = match followed {
        Some(last) => last,
        None => cancel_on_interrupt(target, client, &started.id).await?,
    };
    output::status(&last, args.json);
    let success = last.state() == ReplayState::Done && last.breach.is_none();
    Ok(if success { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Ctrl-C on a followed replay: cancel it, wait for the workers' final reports (a second
/// Ctrl-C stops waiting), and return the final status.
async fn cancel_on_interrupt(target: &Target, client: &mut Client, id: &str) -> anyhow::Result<ReplayStatus> {
    eprintln!("\ninterrupted: cancelling {id} (Ctrl-C again to stop waiting for it)");
    let cancelled = async {
        let request = ControlReplayRequest { id: id.to_string(), action: ControlAction::Cancel.into() };
        client.control_replay(request).await.map_err(status_error)?;
        follow_with_progress(target, client, id, false).await
    };
    tokio::select! {
        last = cancelled => last,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted again: {id} is being cancelled; `ctl status {id}` shows its end"),
    }
}

/// How long ctl keeps looking for a controller that follows the replay (a new leader
/// after a failover) before it gives up.
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

/// Follows a replay to its end, with a live progress line when `progress` and stderr is
/// a terminal; returns the final status. When the controller goes away (a failover), it
/// reconnects to whichever of `target`'s controllers leads and follows on from there.
pub async fn follow_with_progress(
    target: &Target,
    client: &mut Client,
    id: &str,
    progress: bool,
) -> anyhow::Result<ReplayStatus> {
    let show = progress && std::io::stderr().is_terminal();
    // Progress (not a repeated stale status from a standby) keeps ctl waiting.
    let (mut last_progress, mut last_counts) = (Instant::now(), None);
    let result = loop {
        let followed = client::follow(client, id, |status| {
            if last_counts.replace((status.state, status.read, status.sent))
                != Some((status.state, status.read, status.sent))
            {
                last_progress = Instant::now();
            }
            if show {
                eprint!("\r\x1b[2K{}", output::progress_line(status));
                let _ = std::io::stderr().flush();
            }
        })
        .await;
        match followed {
            Ok(status) if status.state().is_final() => break Ok(status),
            Ok(_) | Err(_) if last_progress.elapsed() < FAILOVER_WAIT => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(again) = target.connect().await {
                    *client = again;
                }
            }
            other => break other,
        }
    };
    if show {
        eprintln!();
    }
    result
}

async fn export(client: &mut Client, key: &str, gor: &std::path::Path) -> anyhow::Result<()> {
    let recording = recordings::lookup(client, key).await?;
    let log = reprise_store::open_log(&recording.log_url).await.with_context(|| {
        format!("cannot open the recording's traffic log {}", reprise_store::redact_url(&recording.log_url))
    })?;
    let file = std::fs::File::create(gor).with_context(|| format!("cannot create {}", gor.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = reprise_store::gor::export(&*log, &recording.ranges, &mut out).await?;
    out.flush()?;
    println!("wrote {written} messages of {} to {}", recording.id, gor.display());
    Ok(())
}
