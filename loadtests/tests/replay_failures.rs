//! Replays under bad conditions: garbage in the log, a dead or silent target, a user
//! pausing and cancelling, and a controller that disappears mid-replay. Run on the real
//! broker + etcd (`kafka_etcd::*`) and on the file twins (`file::*`).

use std::time::Duration;

use bytes::Bytes;
use reprise_ctl::local::LocalCluster;
use reprise_loadtests::cluster::{Cluster, TestCluster, options, replay_request};
use reprise_loadtests::synth::{self, Profile};
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::worker_client::WorkerClient;
use reprise_proto::v1::{
    AssignRequest, ControlAction, ControlReplayRequest, PartitionShare, ReplayRef, StartRecordingRequest, StartRequest,
    StatsRequest, StopRecordingRequest, WorkerReplayState,
};
use reprise_proto::v1::{Recording, ReplayState};
use reprise_store::log::NewRecord;
use reprise_store::schema::Replay;

const LIMIT: Duration = Duration::from_secs(60);

async fn setup(kind: &str, name: &str, workers: usize, grace_secs: f64) -> TestCluster {
    TestCluster::start(kind, name, workers, |config| config.controller_grace_secs = grace_secs).await.unwrap()
}

fn profile(requests: u64, span: Duration) -> Profile {
    Profile::constant(requests, reprise_store::now_ns() - 60_000_000_000, span.as_nanos() as i64, 8, 16)
}

fn control(id: &str, action: ControlAction) -> ControlReplayRequest {
    ControlReplayRequest { id: id.into(), action: action.into() }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn garbage_and_a_dead_target_are_counted_not_fatal(kind: &str) {
    let cluster = setup(kind, "garbage", 2, 15.0).await;
    let log_url = cluster.log_url.clone();
    let mut client = cluster.client().await.unwrap();
    let request =
        StartRecordingRequest { protocol_version: PROTOCOL_VERSION, name: "bad".into(), labels: Default::default() };
    let recording: Recording = client.start_recording(request).await.unwrap().into_inner();
    let log = reprise_store::open_log(&log_url).await.unwrap();
    let profile = profile(40, Duration::from_millis(500));
    synth::write(&log, &profile).await.unwrap();
    // Three messages that are not traffic records, two records that are not HTTP.
    let ts = profile.start_ns / 1_000_000;
    let mut junk: Vec<NewRecord> = [&b"\xff\x00garbage"[..], b"", b"{\"json\": true}"]
        .iter()
        .map(|p| NewRecord { key: Bytes::from_static(b"junk"), timestamp_ms: ts, payload: Bytes::copy_from_slice(p) })
        .collect();
    for http in [&b"\x16\x03\x01 TLS hello"[..], b"GET / HTTP/1.1\r\nHost: cut-short"] {
        let mut record = synth::request(&profile, 0, profile.start_ns);
        record.http = Bytes::copy_from_slice(http);
        let payload = Bytes::from(reprise_store::traffic::encode(&record));
        junk.push(NewRecord { key: Bytes::from_static(b"junk"), timestamp_ms: ts, payload });
    }
    // And one request whose body the capture cut at its --max-body.
    let mut cut = synth::request(&profile, 1, profile.start_ns);
    cut.body_truncated = true;
    let payload = Bytes::from(reprise_store::traffic::encode(&cut));
    junk.push(NewRecord { key: Bytes::from_static(b"cut"), timestamp_ms: ts, payload });
    log.append(junk).await.unwrap();
    client.stop_recording(StopRecordingRequest { id: recording.id.clone() }).await.unwrap();

    let dead_target = format!("http://127.0.0.1:{}", closed_port().await);
    let id = cluster.replay(replay_request(&recording.id, &dead_target, 2)).await.unwrap();
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!(status.state(), ReplayState::Done, "a replay against a dead target still ends: {status:?}");
    assert_eq!(status.read, 46);
    assert_eq!(status.skipped, 5, "undecodable and non-HTTP records are skipped and counted");
    assert_eq!(status.sent, 82);
    assert_eq!(status.errors, 82);
    assert_eq!(status.error_kinds["connect"], 82, "{:?}", status.error_kinds);
    assert_eq!(status.sent_cut, 2, "the cut request, twice");
    let said = "2 requests went out with the body cut short, as the capture stored them (its --max-body)";
    assert!(status.warnings.iter().any(|w| w == said), "{:?}", status.warnings);
    assert_eq!(status.ok, 0);
    // Ran to its end, but a replay where nothing succeeded is no success.
    assert_eq!(status.breach.as_deref(), Some("no request succeeded: 82 sends, connect 82"));
    assert_eq!(status.latency_ms, None, "no response, no latency");
    cluster.stop().await;
}

async fn a_silent_target_gives_timeouts(kind: &str) {
    let cluster = setup(kind, "silent", 1, 15.0).await;
    let log_url = cluster.log_url.clone();
    // Accepts connections, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let recording = cluster.record(&log_url, &profile(10, Duration::from_millis(200))).await.unwrap();
    let mut request = replay_request(&recording.id, &target, 1);
    options(&mut request).request_timeout_ms = 300;
    options(&mut request).max_in_flight = 4;
    let id = cluster.replay(request).await.unwrap();
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!(status.state(), ReplayState::Done);
    assert_eq!((status.sent, status.errors, status.error_kinds["timeout"]), (10, 10, 10), "{status:?}");
    assert_eq!(status.breach.as_deref(), Some("no request succeeded: 10 sends, timeout 10"));
    assert_eq!(status.latency_ms, None, "timeouts are counted, never timed as 0 ms");
    assert_eq!(status.in_flight, 0);
    holder.abort();
    cluster.stop().await;
}

async fn pause_holds_the_timeline_and_cancel_stops_it(kind: &str) {
    let cluster = setup(kind, "pause", 2, 15.0).await;
    let log_url = cluster.log_url.clone();
    let n = 200;
    let recording = cluster.record(&log_url, &profile(n, Duration::from_secs(3))).await.unwrap();
    let mut client = cluster.client().await.unwrap();

    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    client.control_replay(control(&id, ControlAction::Pause)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = cluster.sink.report().requests;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.sink.report().requests, held, "nothing is sent while paused");
    assert!(held > 0 && held < n, "{held}");
    let paused = client.get_replay(ReplayRef { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(paused.state(), ReplayState::Paused);
    client.control_replay(control(&id, ControlAction::Resume)).await.unwrap();
    let done = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!((done.state(), done.sent), (ReplayState::Done, n), "resumed where it stopped, nothing lost");
    assert!(done.duration_s >= 4.0, "the pause shifts the timeline: {} s", done.duration_s);

    let before = cluster.sink.report().requests;
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.control_replay(control(&id, ControlAction::Cancel)).await.unwrap();
    let cancelled = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!(cancelled.state(), ReplayState::Cancelled);
    assert!(cancelled.sent < n, "{}", cancelled.sent);
    assert_eq!(cluster.sink.report().requests - before, cancelled.sent);
    assert!(client.control_replay(control(&id, ControlAction::Resume)).await.is_err(), "an ended replay stays ended");
    cluster.stop().await;
}

async fn workers_stop_when_no_controller_is_heard(kind: &str) {
    let cluster = setup(kind, "orphan", 2, 2.0).await;
    let log_url = cluster.log_url.clone();
    let n = 200;
    let recording = cluster.record(&log_url, &profile(n, Duration::from_secs(20))).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let Cluster { local, sink } = cluster.cluster;
    let LocalCluster { controller, workers, .. } = local;
    controller.shutdown().await;
    // Grace (2 s) plus a report interval.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopped_at = sink.report().requests;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.report().requests, stopped_at, "a worker without a controller must stop sending");
    assert!(stopped_at > 0 && stopped_at < n / 2, "{stopped_at}");
    for worker in &workers {
        let mut client = WorkerClient::connect(format!("http://{}", worker.local_addr)).await.unwrap();
        let mut stats =
            client.stats(StatsRequest { replay_id: id.clone(), ..Default::default() }).await.unwrap().into_inner();
        // The stream ends with the final report, which follows the last in-flight send's
        // end: on a loaded machine that can come a while after sending stopped.
        let mut last = stats.message().await.unwrap().unwrap();
        while !last.state().is_final() {
            match tokio::time::timeout(Duration::from_secs(20), stats.message()).await {
                Ok(Ok(Some(report))) => last = report,
                other => panic!("no final report after {:?}: {other:?}", last.state()),
            }
        }
        assert_eq!(last.state(), WorkerReplayState::Failed);
        assert!(last.error.contains("no controller heard"), "{}", last.error);
    }
    for worker in workers {
        worker.shutdown().await;
    }
}

/// The controller's heartbeat names the replays it follows, and only those stay alive on a
/// worker: a replay assigned to the same worker behind the controller's back stops after
/// the grace period, while the controller's own replay there runs on.
async fn the_grace_period_counts_per_replay(kind: &str) {
    let cluster = setup(kind, "per-replay", 1, 2.0).await;
    let log_url = cluster.log_url.clone();
    let n = 200;
    let recording = cluster.record(&log_url, &profile(n, Duration::from_secs(8))).await.unwrap();
    let followed = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();

    let worker = &cluster.workers[0];
    let mut direct = WorkerClient::connect(format!("http://{}", worker.local_addr)).await.unwrap();
    let shares = recording
        .ranges
        .iter()
        .map(|r| PartitionShare::from(reprise_store::log::RangeSpec::whole(r.partition, r.start, r.end)))
        .collect();
    let assign = AssignRequest {
        protocol_version: PROTOCOL_VERSION,
        replay_id: "rep-unfollowed".into(),
        controller_id: "nobody".into(),
        log_url,
        shares,
        options: replay_request(&recording.id, &cluster.sink_url(), 1).options,
        origin_ns: recording.first_timestamp_ns.unwrap(),
        recording_records: n,
        ..Default::default()
    };
    direct.assign(assign).await.unwrap();
    let start_at_unix_ns = reprise_store::now_ns() + 200_000_000;
    direct.start(StartRequest { replay_id: "rep-unfollowed".into(), start_at_unix_ns }).await.unwrap();

    let mut stats = direct
        .stats(StatsRequest { replay_id: "rep-unfollowed".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let last = tokio::time::timeout(LIMIT, async {
        let mut last = None;
        while let Some(report) = stats.message().await.unwrap() {
            last = Some(report);
        }
        last.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(last.state(), WorkerReplayState::Failed, "{last:?}");
    assert!(last.error.contains("no controller heard"), "{}", last.error);
    assert!(last.sent < n, "stopped early: {} of {n}", last.sent);

    let status = cluster.wait_final(&followed, LIMIT).await.unwrap();
    assert_eq!((status.state(), status.sent), (ReplayState::Done, n), "the followed replay ran on: {status:?}");
    cluster.stop().await;
}

/// A controller that stops and starts again carries on what it left: a running replay
/// ends done with complete counts, a cancel asked of the new controller stops its
/// replay, and a replay that never started is failed with the reason, never left running.
async fn a_restarted_controller_carries_on(kind: &str) {
    let cluster = setup(kind, "restart", 2, 15.0).await;
    let log_url = cluster.log_url.clone();
    let n = 300;
    let recording = cluster.record(&log_url, &profile(n, Duration::from_secs(5))).await.unwrap();
    let carried = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    let cancelled = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    // A replay whose controller stopped while planning it.
    let catalog = reprise_store::Catalog::open(&cluster.catalog_url).await.unwrap();
    let mut unstarted = catalog.get::<Replay>(&carried).await.unwrap().unwrap().value;
    (unstarted.id, unstarted.state, unstarted.plan) =
        ("rep-unstarted".into(), ReplayState::Planning, Default::default());
    catalog.put(&unstarted).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let cluster = cluster.restart_controller().await.unwrap();
    let mut client = cluster.client().await.unwrap();
    client.control_replay(control(&cancelled, ControlAction::Cancel)).await.unwrap();
    let status = cluster.wait_final(&cancelled, LIMIT).await.unwrap();
    assert_eq!(status.state(), ReplayState::Cancelled, "{status:?}");
    assert!(status.sent < n, "{}", status.sent);
    let status = cluster.wait_final(&carried, LIMIT).await.unwrap();
    assert_eq!((status.state(), status.sent, status.ok), (ReplayState::Done, n, n), "{status:?}");
    let sent_by_both = n + cluster.wait_final(&cancelled, LIMIT).await.unwrap().sent;
    assert_eq!(cluster.sink.report().requests, sent_by_both, "the counts are complete across the restart");
    let failed = client.get_replay(ReplayRef { id: "rep-unstarted".into() }).await.unwrap().into_inner();
    assert_eq!(failed.state(), ReplayState::Failed);
    assert!(failed.error().contains("stopped before it started"), "{:?}", failed.error);
    cluster.stop().await;
}

/// Two controllers on one catalog: the standby refuses changes and names the leader;
/// when the leader dies mid-replay (no resignation: its lease runs out), the standby
/// leads within 10 s, takes the replay over and it ends done with every request sent
/// once; ctl given both addresses finds the new leader. A leader that stops cleanly hands
/// over at once.
async fn a_standby_takes_over_from_a_dead_leader(kind: &str) {
    let mut cluster = setup(kind, "election", 2, 15.0).await;
    let standby = cluster.start_standby().await.unwrap();
    let (dead, alive) = (cluster.controller_url(), format!("http://{}", standby.grpc_addr));
    let mut through_standby = reprise_ctl::client::connect(&alive).await.unwrap();
    let request =
        StartRecordingRequest { protocol_version: PROTOCOL_VERSION, name: "x".into(), labels: Default::default() };
    let refused = through_standby.start_recording(request).await.unwrap_err();
    assert!(refused.message().contains(&format!("the leader is {}", cluster.controller.id)), "{}", refused.message());

    let log_url = cluster.log_url.clone();
    let n = 400;
    let recording = cluster.record(&log_url, &profile(n, Duration::from_secs(8))).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let died = tokio::time::Instant::now();
    std::mem::replace(&mut cluster.controller, standby).abort();
    let leads = tokio::time::timeout(Duration::from_secs(10), cluster.controller.leading()).await;
    assert_eq!(leads.ok(), Some(true), "the standby leads within 10 s");
    eprintln!("takeover after {:?}", died.elapsed());

    let mut client = reprise_ctl::client::connect_with_timeout(&format!("{dead},{alive}"), LIMIT).await.unwrap();
    let status = reprise_ctl::client::follow(&mut client, &id, |_| {}).await.unwrap();
    assert_eq!((status.state(), status.sent, status.ok), (ReplayState::Done, n, n), "{status:?}");
    assert_eq!(cluster.sink.report().requests, n, "every request once");

    // A leader that stops cleanly resigns: the next standby leads at once.
    let next = cluster.start_standby().await.unwrap();
    std::mem::replace(&mut cluster.controller, next).shutdown().await;
    let leads = tokio::time::timeout(Duration::from_secs(2), cluster.controller.leading()).await;
    assert_eq!(leads.ok(), Some(true), "a resigned leadership passes at once");
    cluster.stop().await;
}

reprise_store::on_backends!(
    [kafka_etcd => "kafka_etcd", file => "file"]
    [
        garbage_and_a_dead_target_are_counted_not_fatal,
        a_silent_target_gives_timeouts,
        pause_holds_the_timeline_and_cancel_stops_it,
        workers_stop_when_no_controller_is_heard,
        the_grace_period_counts_per_replay,
        a_restarted_controller_carries_on,
        a_standby_takes_over_from_a_dead_leader
    ]
);
