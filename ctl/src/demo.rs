//! `ctl demo`: the whole system on this machine in one process, with no Kafka or etcd:
//! a controller and two workers on the file log and file catalog, a demo service, a
//! live capture of real traffic to it, and a replay of that recording five times over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use reprise_controller::ControllerConfig;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{Recording, ReplayState, ReplayStatus, StartRecordingRequest, StopRecordingRequest};
use reprise_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::client::{self, status_error};
use crate::demo_service::DemoService;
use crate::local::LocalCluster;

/// How the demo traffic looks: users browsing the shop at once, each for some requests.
const USERS: usize = 4;
const REQUESTS_PER_USER: usize = 50;
const MULTIPLE: u32 = 5;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the log and catalog here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the dashboard and stats API.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// Print the replay summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Says what happens, unless the output is JSON.
macro_rules! say {
    ($quiet:expr, $($arg:tt)*) => {
        if !$quiet {
            eprintln!($($arg)*);
        }
    };
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let quiet = args.json;
    let temporary = tempfile::Builder::new().prefix("reprise-demo-").tempdir()?;
    let data = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let catalog = format!("file://{}/catalog", data.display());
    let log = format!("file://{}/log", data.display());

    let service = DemoService::start().await.context("cannot start the demo service")?;
    let controller = ControllerConfig {
        http: args.http,
        partitions: 4,
        start_lead_ms: 1000,
        ..ControllerConfig::local(&catalog, &log)
    };
    let workers = (1..=2).map(|i| WorkerConfig::local(&catalog, &format!("demo-w{i}"))).collect();
    let cluster = LocalCluster::start(controller, workers).await?;
    let controller = &cluster.controller;
    say!(quiet, "Reprise demo: everything in this process, data in {}", data.display());
    say!(quiet, "  demo service  http://{}", service.addr);
    say!(quiet, "  controller    {}  (ctl --controller {} ...)", cluster.controller_url(), cluster.controller_url());
    say!(quiet, "  dashboard     http://{}/", controller.http_addr);
    say!(quiet, "  workers       {}", cluster.worker_ids().join(", "));

    let result = record_and_replay(&args, &service, &cluster, &log, &data).await;
    let dashboard = cluster.controller.http_addr;
    cluster.stop().await;
    let (status, recorded) = result?;

    let replayed_received = service.answered() - recorded;
    let expected = recorded * u64::from(MULTIPLE);
    let answered = status.ok + status.http_errors;
    let all_answered = status.state() == ReplayState::Done && answered == expected && replayed_received == expected;
    if args.json {
        let mut summary = serde_json::to_value(&status)?;
        summary["recorded_requests"] = recorded.into();
        summary["service_received"] = replayed_received.into();
        summary["all_answered"] = all_answered.into();
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        crate::output::status(&status, false);
        println!(
            "demo service received {replayed_received} of the {expected} replayed requests ({recorded} recorded x {MULTIPLE})"
        );
        println!("the dashboard was at http://{dashboard}/ while the demo ran");
    }
    Ok(if all_answered { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Records live traffic to the demo service, then replays it; returns the final status
/// and how many requests were recorded.
async fn record_and_replay(
    args: &DemoArgs,
    service: &DemoService,
    cluster: &LocalCluster,
    log: &str,
    data: &std::path::Path,
) -> anyhow::Result<(ReplayStatus, u64)> {
    let quiet = args.json;
    let mut client = cluster.client().await?;
    let (recording, recorded) = record(quiet, &mut client, service, log, data).await?;

    // 2. Replay it five times over against the same service.
    say!(quiet, "2/3 replaying {} with --multiple {MULTIPLE} against http://{}", recording.id, service.addr);
    let request = client::replay_request(&recording.id, &format!("http://{}", service.addr), MULTIPLE);
    let started = client.start_replay(request).await.map_err(status_error)?.into_inner();
    let target = client::Target::new(cluster.controller_url());
    let status = crate::commands::follow_with_progress(&target, &mut client, &started.id, !quiet).await?;
    say!(quiet, "3/3 summary");
    Ok((status, recorded))
}

/// Step 1, record: a live capture on loopback while users browse the service. Returns
/// the recording and how many requests the capture saw.
async fn record(
    quiet: bool,
    client: &mut client::Client,
    service: &DemoService,
    log: &str,
    data: &std::path::Path,
) -> anyhow::Result<(Recording, u64)> {
    let mut capture = reprise_capture::CaptureConfig::for_log(log);
    capture.interface = Some("lo".into());
    capture.port = vec![service.addr.port()];
    capture.track_responses = true;
    capture.node = Some("demo".into());
    capture.spool_dir = Some(data.join("spool"));
    let stop_capture = CancellationToken::new();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let capturing = tokio::spawn(reprise_capture::run_notify(capture, stop_capture.clone(), Some(ready_tx)));
    if ready.await.is_err() {
        let error = capturing.await?.err().map(|e| format!("{e:#}")).unwrap_or_default();
        anyhow::bail!("{error} (live capture on lo needs root or CAP_NET_RAW: run the demo as root or with sudo)");
    }
    let request =
        StartRecordingRequest { protocol_version: PROTOCOL_VERSION, name: "demo".into(), labels: Default::default() };
    let started = client.start_recording(request).await.map_err(status_error)?.into_inner();
    let port = service.addr.port();
    say!(quiet, "1/3 recording {}: capturing on lo port {port} while {USERS} users browse the shop", started.id);
    browse(service.addr).await?;
    // Let the last packets reach the capture before it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_capture.cancel();
    let report = capturing.await??;
    let stopped = client.stop_recording(StopRecordingRequest { id: started.id }).await.map_err(status_error)?;
    let recording = stopped.into_inner();
    let span = match (recording.first_timestamp_ns, recording.last_timestamp_ns) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let (requests, responses, packets) = (report.requests, report.responses, report.packets);
    say!(quiet, "    captured {requests} requests and {responses} responses ({packets} packets) over {span:.1} s");
    let expected = (USERS * REQUESTS_PER_USER) as u64;
    anyhow::ensure!(requests == expected, "captured {requests} of {expected} requests");
    Ok((recording, requests))
}

/// Real HTTP traffic: users on their own keep-alive connections, with think time.
async fn browse(service: SocketAddr) -> anyhow::Result<()> {
    let mut users = Vec::new();
    for user in 0..USERS {
        users.push(tokio::spawn(async move {
            // One connection per user, as a browser would keep.
            let client: Client<_, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
            for i in 0..REQUESTS_PER_USER {
                let (method, path, body) = match i % 4 {
                    0 => ("GET", "/products".to_string(), String::new()),
                    1 => ("GET", format!("/products/{}", (user * 7 + i) % 20), String::new()),
                    2 => ("GET", format!("/search?q=tea&page={}", i / 4), String::new()),
                    _ => ("POST", "/cart".to_string(), format!(r#"{{"product":{},"qty":{}}}"#, i % 20, user + 1)),
                };
                let request = hyper::Request::builder()
                    .method(method)
                    .uri(format!("http://{service}{path}"))
                    .header("user-agent", format!("demo-user-{user}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                let response = client.request(request).await?;
                response.into_body().collect().await?;
                tokio::time::sleep(Duration::from_millis(20 + (user as u64 * 13 + i as u64 * 7) % 40)).await;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for user in users {
        user.await??;
    }
    Ok(())
}
