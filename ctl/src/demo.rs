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
use reprise_controller::status::ReplayStatus;
use reprise_controller::{Controller, ControllerConfig};
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{StartRecordingRequest, StartReplayRequest, StopRecordingRequest};
use reprise_store::schema::{Recording, ReplayState};
use reprise_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::demo_service::DemoService;

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
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    let service = DemoService::start().await.context("cannot start the demo service")?;
    let controller = Controller::start(ControllerConfig {
        config: None,
        catalog: catalog.clone(),
        log: log.clone(),
        listen: loopback,
        http: args.http,
        partitions: 4,
        start_lead_ms: 1000,
        logging: Default::default(),
    })
    .await?;
    let mut workers = Vec::new();
    for i in 1..=2 {
        workers.push(
            Worker::start(WorkerConfig {
                config: None,
                catalog: catalog.clone(),
                listen: loopback,
                name: Some(format!("demo-w{i}")),
                advertise: None,
                labels: Vec::new(),
                controller_grace_secs: 15.0,
                source_ip: None,
                dispatch_threads: 0,
                lease_ttl_secs: 10,
                logging: Default::default(),
            })
            .await?,
        );
    }
    say!(quiet, "Reprise demo: everything in this process, data in {}", data.display());
    say!(quiet, "  demo service  http://{}", service.addr);
    say!(
        quiet,
        "  controller    http://{}  (ctl --controller http://{} ...)",
        controller.grpc_addr,
        controller.grpc_addr
    );
    say!(quiet, "  dashboard     http://{}/", controller.http_addr);
    say!(quiet, "  workers       {}", workers.iter().map(|w| w.id.as_str()).collect::<Vec<_>>().join(", "));

    let result = record_and_replay(&args, &service, &controller, &log, &data).await;
    for worker in workers {
        worker.shutdown().await;
    }
    let dashboard = controller.http_addr;
    controller.shutdown().await;
    let (status, recorded) = result?;

    let replayed_received = service.answered() - recorded;
    let expected = recorded * u64::from(MULTIPLE);
    let answered = status.ok + status.http_errors;
    let all_answered = status.state == ReplayState::Done && answered == expected && replayed_received == expected;
    if args.json {
        let mut summary = serde_json::to_value(&status)?;
        summary["recorded_requests"] = recorded.into();
        summary["service_received"] = replayed_received.into();
        summary["all_answered"] = all_answered.into();
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        crate::show_status(&status, false);
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
    controller: &Controller,
    log: &str,
    data: &std::path::Path,
) -> anyhow::Result<(ReplayStatus, u64)> {
    let quiet = args.json;
    let mut client = crate::connect(&format!("http://{}", controller.grpc_addr)).await?;

    // 1. Record: a live capture on loopback while users browse the service.
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
    let started: Recording =
        serde_json::from_str(&client.start_recording(request).await.map_err(crate::status_error)?.into_inner().json)?;
    say!(
        quiet,
        "1/3 recording {}: capturing on lo port {} while {USERS} users browse the shop",
        started.id,
        service.addr.port()
    );
    browse(service.addr).await?;
    // Let the last packets reach the capture before it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_capture.cancel();
    let report = capturing.await??;
    let stopped = client.stop_recording(StopRecordingRequest { id: started.id }).await.map_err(crate::status_error)?;
    let recording: Recording = serde_json::from_str(&stopped.into_inner().json)?;
    let recorded = report.requests;
    let span = match (recording.first_timestamp_ns, recording.last_timestamp_ns) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    say!(
        quiet,
        "    captured {} requests and {} responses ({} packets) over {span:.1} s",
        report.requests,
        report.responses,
        report.packets
    );
    anyhow::ensure!(
        recorded == (USERS * REQUESTS_PER_USER) as u64,
        "captured {recorded} of {} requests",
        USERS * REQUESTS_PER_USER
    );

    // 2. Replay it five times over against the same service.
    say!(quiet, "2/3 replaying {} with --multiple {MULTIPLE} against http://{}", recording.id, service.addr);
    let request = StartReplayRequest {
        protocol_version: PROTOCOL_VERSION,
        recording_id: recording.id.clone(),
        target: format!("http://{}", service.addr),
        multiple: MULTIPLE,
        speed: 1.0,
        pacing: 1,
        max_in_flight: 256,
        request_timeout_ms: 5000,
        ..Default::default()
    };
    let reply = client.start_replay(request).await.map_err(crate::status_error)?.into_inner();
    let status = crate::follow_replay(&mut client, serde_json::from_str(&reply.json)?, !quiet).await?;
    say!(quiet, "3/3 summary");
    Ok((status, recorded))
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
