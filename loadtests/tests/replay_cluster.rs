//! The replay path end to end: an in-process cluster (controller, 3 workers, sink) on
//! loopback, recording through the controller into the real broker + etcd (`kafka_etcd::*`)
//! and into the file log + file catalog (`file::*`), then replaying.

use std::time::Duration;

use reprise_controller::status::ReplayStatus;
use reprise_loadtests::cluster::{Cluster, ClusterConfig, worker_source_ip};
use reprise_loadtests::synth::{self, Profile};
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_proto::v1::{ReplayRef, StartRecordingRequest, StartReplayRequest, StopRecordingRequest};
use reprise_store::schema::{Recording, ReplayState};
use tonic::transport::Channel;

const WORKERS: usize = 3;

struct Setup {
    cluster: Cluster,
    log_url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn setup(kind: &str, name: &str) -> Setup {
    let (catalog, log, dir) = match kind {
        "kafka_etcd" => {
            (reprise_store::testing::etcd_catalog_url(name), reprise_store::testing::kafka_log_url(name), None)
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().display().to_string();
            (format!("file://{root}/catalog"), format!("file://{root}/log"), Some(dir))
        }
    };
    let config = ClusterConfig { catalog, log: log.clone(), workers: WORKERS, partitions: 6 };
    Setup { cluster: Cluster::start(&config).await.unwrap(), log_url: log, _dir: dir }
}

/// Records `profile` through the controller: start, write the traffic, stop.
async fn record(client: &mut ControllerClient<Channel>, log_url: &str, profile: &Profile) -> Recording {
    let request =
        StartRecordingRequest { protocol_version: PROTOCOL_VERSION, name: "test".into(), labels: Default::default() };
    let started: Recording =
        serde_json::from_str(&client.start_recording(request).await.unwrap().into_inner().json).unwrap();
    let log = reprise_store::open_log(log_url).await.unwrap();
    synth::write(&log, profile).await.unwrap();
    let stopped = client.stop_recording(StopRecordingRequest { id: started.id }).await.unwrap().into_inner();
    let recording: Recording = serde_json::from_str(&stopped.json).unwrap();
    assert_eq!(recording.record_count, profile.requests);
    recording
}

fn replay_request(recording: &str, target: &str, multiple: u32) -> StartReplayRequest {
    StartReplayRequest {
        protocol_version: PROTOCOL_VERSION,
        recording_id: recording.into(),
        target: target.into(),
        multiple,
        speed: 1.0,
        pacing: 1,
        max_in_flight: 256,
        request_timeout_ms: 5_000,
        ..Default::default()
    }
}

async fn wait_final(client: &mut ControllerClient<Channel>, id: &str) -> ReplayStatus {
    let mut stream = client.watch_replay(ReplayRef { id: id.into() }).await.unwrap().into_inner();
    let watch = async {
        let mut last = None;
        while let Some(reply) = stream.message().await.unwrap() {
            let status: ReplayStatus = serde_json::from_str(&reply.json).unwrap();
            let done = status.state.is_final();
            last = Some(status);
            if done {
                break;
            }
        }
        last.unwrap()
    };
    tokio::time::timeout(Duration::from_secs(60), watch).await.expect("replay must end within a minute")
}

fn profile(requests: u64, span: Duration) -> Profile {
    Profile {
        requests,
        start_ns: reprise_store::now_ns() - 60_000_000_000,
        span_ns: span.as_nanos() as i64,
        connections: 40,
        body_bytes: 64,
    }
}

async fn multiple_five_delivers_every_request_five_times_spread_over_workers(kind: &str) {
    let Setup { cluster, log_url, _dir } = setup(kind, "multiple").await;
    let mut client = cluster.client().await.unwrap();
    let n = 600;
    let span = Duration::from_secs(3);
    let recording = record(&mut client, &log_url, &profile(n, span)).await;

    let started =
        client.start_replay(replay_request(&recording.id, &cluster.sink_url(), 5)).await.unwrap().into_inner();
    let id = serde_json::from_str::<ReplayStatus>(&started.json).unwrap().id;
    let status = wait_final(&mut client, &id).await;
    let sink = cluster.sink.report();

    assert_eq!(status.state, ReplayState::Done, "{status:?}");
    assert_eq!(sink.requests, 5 * n, "the sink must receive every request exactly five times");
    assert_eq!(status.sent, sink.requests, "the summary's count must equal the sink's");
    assert_eq!(status.ok, sink.requests);
    assert_eq!(status.errors + status.http_errors, 0);
    assert_eq!(status.read, n);

    // Speed 1 takes at least the recording's span.
    let took = sink.last_arrival_ns.unwrap() - sink.first_arrival_ns.unwrap();
    assert!(took >= span.as_nanos() as i64 - 5_000_000, "replay took {took} ns, recording spans {span:?}");

    // Every worker carries its fair share, within 10%...
    let fair = (5 * n) as f64 / WORKERS as f64;
    for i in 0..WORKERS {
        let got = sink.per_ip.get(&worker_source_ip(i)).copied().unwrap_or(0) as f64;
        assert!((got - fair).abs() <= 0.1 * fair, "worker {i} sent {got}, fair share {fair}");
    }
    // ...at every moment: each second with real traffic has requests from every worker.
    for (second, by_ip) in &sink.per_second {
        if by_ip.values().sum::<u64>() >= 30 {
            for i in 0..WORKERS {
                assert!(
                    by_ip.get(&worker_source_ip(i)).is_some_and(|n| *n > 0),
                    "worker {i} idle in second {second}: {by_ip:?}"
                );
            }
        }
    }
    cluster.stop().await;
}

async fn two_replays_of_one_recording_run_at_once(kind: &str) {
    let Setup { cluster, log_url, _dir } = setup(kind, "concurrent").await;
    let mut client = cluster.client().await.unwrap();
    let n = 300;
    let recording = record(&mut client, &log_url, &profile(n, Duration::from_secs(2))).await;
    let mut ids = Vec::new();
    for multiple in [1, 2] {
        let reply = client.start_replay(replay_request(&recording.id, &cluster.sink_url(), multiple)).await.unwrap();
        ids.push(serde_json::from_str::<ReplayStatus>(&reply.into_inner().json).unwrap().id);
    }
    let (a, b) = {
        let mut other = cluster.client().await.unwrap();
        tokio::join!(wait_final(&mut client, &ids[0]), wait_final(&mut other, &ids[1]))
    };
    assert_eq!((a.state, b.state), (ReplayState::Done, ReplayState::Done));
    assert_eq!((a.sent, b.sent), (n, 2 * n));
    assert_eq!(cluster.sink.report().requests, 3 * n);
    // Both overlapped in time: the second started before the first ended.
    assert!(b.started_at_ms.unwrap() < a.finished_at_ms.unwrap());
    cluster.stop().await;
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod kafka_etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() { super::$case("kafka_etcd").await })*
        }
        mod file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() { super::$case("file").await })*
        }
    };
}

on_both_backends!(
    multiple_five_delivers_every_request_five_times_spread_over_workers,
    two_replays_of_one_recording_run_at_once
);
