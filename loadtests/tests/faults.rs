//! Faults done to the real daemons as processes (SIGKILL, SIGTERM, a frozen or stopped
//! catalog), on a private etcd and broker per test (see `reprise_loadtests::procs`).
//! Needs the binaries built: `cargo build -p reprise-controller -p reprise-worker --bins`.

use std::time::Duration;

use futures::TryStreamExt;
use reprise_loadtests::cluster::{options, replay_request};
use reprise_loadtests::procs::{self, Daemon, ProcessCluster, ProcessClusterConfig, Services};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::{ReplayState, ReplayStatus};
use reprise_store::log::{NewRecord, RangeSpec, TrafficLog};

const LIMIT: Duration = Duration::from_secs(60);

fn profile(requests: u64, span: Duration) -> Profile {
    Profile::constant(requests, reprise_store::now_ns() - 60_000_000_000, span.as_nanos() as i64, 8, 16)
}

/// The leader is SIGKILLed 2 s into a replay (no resignation: its election lease runs
/// out); the standby takes over, and the replay ends done with every request sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_hands_over_to_the_standby() {
    let n = 6_000;
    let config = ProcessClusterConfig {
        election_ttl_secs: 2,
        controller_grace_secs: 15.0,
        expected_ids: n,
        ..ProcessClusterConfig::new("failover", 2, 3)
    };
    let mut cluster = ProcessCluster::start(&config).await.unwrap();
    let recording = cluster.record(&profile(n, Duration::from_secs(6))).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.leader().await.expect("a controller leads");
    cluster.controllers[leader].kill().unwrap();
    let before_kill = cluster.sink.report().requests;
    assert!(before_kill < n, "the leader died mid-replay ({before_kill} of {n} sent)");

    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    eprintln!("killed controller-{leader} after {before_kill} of {n} requests; ended {:?}", status.state());
    let standby = cluster.leader().await;
    assert_eq!(standby, Some(1 - leader), "the standby leads");
    assert_eq!((status.state(), status.sent), (ReplayState::Done, n), "{status:?}");
    let sink = cluster.sink.report();
    assert_eq!(sink.missing_ids, Some(0), "every request arrived: {sink:?}");
    assert_eq!(sink.duplicate_ids, Some(0), "none twice");
    assert_eq!(sink.bad_ids, Some(0));
}

/// A controller whose etcd accepts connections but never answers (SIGSTOP) gives up
/// within its start bound and says why in one line naming the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_that_cannot_reach_its_catalog_exits_with_one_clear_line() {
    let services = Services::start().await.unwrap();
    let (catalog, log) = (services.etcd_catalog_url("frozen"), services.kafka_log_url("frozen"));
    services.pause_etcd().unwrap();
    let mut controller = Daemon::controller("controller", &catalog, &log, &[]).unwrap();
    let status = controller.wait_exit(Duration::from_secs(40)).await.unwrap();
    services.resume_etcd().unwrap();
    let tail = controller.log_tail(20);
    assert!(!status.success(), "{status}: {tail}");
    let last = tail.lines().last().unwrap_or_default();
    eprintln!("{status}: {last}");
    assert!(last.starts_with("error: ") && last.contains(&catalog), "the last line names the catalog: {tail}");
}

/// A SIGKILLed worker restarted under its name registers again once the dead one's
/// catalog lease ran out (a restart while it lives is refused: retried, bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_restarted_under_its_name_registers_again() {
    let config = ProcessClusterConfig { lease_ttl_secs: 2, ..ProcessClusterConfig::new("rejoin", 0, 1) };
    let mut cluster = ProcessCluster::start(&config).await.unwrap();
    let catalog = cluster.catalog_url.clone();
    let worker = &mut cluster.workers[0];
    let (name, address) = (worker.label().to_string(), worker.grpc_addr().to_string());
    worker.kill().unwrap();
    let killed_ms = reprise_store::now_ms();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut attempts = 0;
    let registered = loop {
        attempts += 1;
        // Refused (the process exits) while the dead worker's entry lives.
        let restarted = worker.restart().await;
        let names = [name.clone()];
        let waited = procs::wait_registered(&catalog, &names, killed_ms, Duration::from_secs(3)).await;
        if restarted.is_ok() && waited.is_ok() && worker.is_running() {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(registered, "not registered again after {attempts} restarts: {}", worker.log_tail(20));
    let listed = procs::registered_workers(&catalog).await.unwrap();
    let entry = listed.iter().find(|w| w.id == name).expect("listed");
    assert_eq!(entry.address, address, "the same address as before");
    assert!(entry.started_at_ms >= killed_ms, "the new registration, not the dead one's");
    eprintln!("registered again after {attempts} restart(s)");
}

/// Every request of the replay reached the target, the duplicates within the bound the
/// summary states; and which part left (by its state, "lost" or "released").
fn assert_delivered(cluster: &ProcessCluster, status: &ReplayStatus, left_as: &str) -> u64 {
    let seen = cluster.sink.report();
    assert_eq!(status.state(), ReplayState::Done, "{status:?}");
    assert_eq!((seen.missing_ids, seen.bad_ids), (Some(0), Some(0)), "every request arrived: {seen:?}");
    let duplicates = seen.duplicate_ids.unwrap();
    assert!(
        duplicates <= status.duplicates_bound,
        "{duplicates} duplicates over the bound {}",
        status.duplicates_bound
    );
    let left = status.workers.iter().find(|w| w.part == 0 && !w.handed_to.is_empty()).expect("a handed-over part");
    assert_eq!(left.state, left_as, "{status:?}");
    let taken_over: u64 = status.workers.iter().filter(|w| w.part > 0).map(|w| w.planned_records).sum();
    assert!(status.reassigned > 0 && taken_over == status.reassigned, "{status:?}");
    eprintln!(
        "{} {left_as}: reassigned {}, duplicates {duplicates} (bound {}), lag p99 {:.1} ms, took {:.1} s",
        left.id,
        status.reassigned,
        status.duplicates_bound,
        status.lag().p99,
        status.duration_s
    );
    duplicates
}

/// The acceptance: three workers, 48,000 unique requests at 4,000/s on the real
/// broker and etcd, one worker SIGKILLed six seconds in. Its ranges go to the other two
/// from its checkpoints once its grace has passed; the replay ends done, the target saw
/// every request, and duplicates stay within twice the in-flight bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_s_ranges_go_to_the_others() {
    let n = 48_000;
    let max_in_flight = 256;
    let config = ProcessClusterConfig {
        controller_grace_secs: 5.0,
        expected_ids: n,
        ..ProcessClusterConfig::new("kill-worker", 1, 3)
    };
    let mut cluster = ProcessCluster::start(&config).await.unwrap();
    let recording = cluster.record(&profile(n, Duration::from_secs(12))).await.unwrap();
    let mut request = replay_request(&recording.id, &cluster.sink_url(), 1);
    options(&mut request).max_in_flight = max_in_flight;
    let id = cluster.replay(request).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.workers[1].kill().unwrap();
    let status = cluster.wait_final(&id, Duration::from_secs(90)).await.unwrap();
    let duplicates = assert_delivered(&cluster, &status, "lost");
    assert!(duplicates <= 2 * u64::from(max_in_flight), "{duplicates} duplicates");
}

/// SIGTERM on a worker mid-replay: it drains what is in flight, sends its final report,
/// deregisters and exits 0; its ranges go to the others at once, from exact checkpoints,
/// so nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stopped_with_sigterm_hands_its_ranges_over() {
    let n = 8_000;
    let config = ProcessClusterConfig { expected_ids: n, ..ProcessClusterConfig::new("term-worker", 1, 3) };
    let mut cluster = ProcessCluster::start(&config).await.unwrap();
    let recording = cluster.record(&profile(n, Duration::from_secs(8))).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exit = cluster.workers[2].term(Duration::from_secs(40)).await.unwrap();
    assert!(exit.success(), "{exit}: {}", cluster.workers[2].log_tail(20));
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    assert_eq!(assert_delivered(&cluster, &status, "released"), 0, "nothing twice");
    assert_eq!(status.duplicates_bound, 0);
    let listed = procs::registered_workers(&cluster.catalog_url).await.unwrap();
    assert!(listed.iter().all(|w| w.id != "worker-2"), "deregistered: {listed:?}");
}

/// etcd stopped for 30 s during a replay (and started again with its data): the leader
/// cannot confirm its lease, keeps the replay going and decides nothing; the replay ends
/// done with every request once, and the workers are still registered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_outlasts_a_30_s_etcd_outage() {
    let cluster = replay_through_a_30_s_outage_of("etcd").await;
    let names = ["worker-0".to_string(), "worker-1".to_string()];
    procs::wait_registered(&cluster.catalog_url, &names, 0, Duration::from_secs(20)).await.unwrap();
}

/// The broker stopped for 30 s during a replay read from it, 3 s in: the controller and
/// the workers ride it out and the replay ends done with every request once. (The local
/// broker ignores fetch size limits, so the readers already hold their whole ranges here;
/// a reader's own wait is `a_kafka_reader_waits_out_a_broker_outage`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_outlasts_a_30_s_broker_outage() {
    replay_through_a_30_s_outage_of("kafka").await;
}

/// Two workers replay 8,000 requests over 40 s; `server` is stopped 3 s in and started
/// again 30 s later; the replay ends done and the sink saw every request once.
async fn replay_through_a_30_s_outage_of(server: &str) -> ProcessCluster {
    let n = 8_000;
    let config =
        ProcessClusterConfig { expected_ids: n, ..ProcessClusterConfig::new(&format!("{server}-outage"), 1, 2) };
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let recording = cluster.record(&profile(n, Duration::from_secs(40))).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.services.stop_server(server).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    cluster.services.start_server(server).await.unwrap();
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    let seen = cluster.sink.report();
    assert_eq!((status.state(), status.sent), (ReplayState::Done, n), "{status:?}");
    assert_eq!((seen.missing_ids, seen.duplicate_ids), (Some(0), Some(0)), "{seen:?}");
    cluster
}

/// A range reader opened while the broker is down waits it out (retrying, for at most its
/// `read_timeout_ms`) and then reads the whole range once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_reader_waits_out_a_broker_outage() {
    let services = Services::start().await.unwrap();
    let log = written_log(&services, "reader-outage", "?read_timeout_ms=60000").await;
    services.stop_server("kafka").await.unwrap();
    let stopped = std::time::Instant::now();
    let reading = tokio::spawn(async move {
        let records = log.read_range(RangeSpec::whole(0, 0, 100), 16).await?;
        records.map_ok(|r| r.offset).try_collect::<Vec<_>>().await
    });
    tokio::time::sleep(Duration::from_secs(15)).await;
    services.start_server("kafka").await.unwrap();
    let offsets = reading.await.unwrap().unwrap();
    assert_eq!(offsets, (0..100).collect::<Vec<i64>>());
    assert!(stopped.elapsed() >= Duration::from_secs(15));
}

/// Past its read timeout, a reader whose broker stays down fails with one error that
/// says what it was reading, for how long, and the broker's last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_reader_fails_loudly_past_its_read_timeout() {
    let services = Services::start().await.unwrap();
    let log = written_log(&services, "reader-gone", "?read_timeout_ms=3000&timeout_ms=1000").await;
    services.stop_server("kafka").await.unwrap();
    let started = std::time::Instant::now();
    let error = match log.read_range(RangeSpec::whole(0, 0, 100), 16).await {
        Ok(_) => panic!("read a range from a stopped broker"),
        Err(e) => e.to_string(),
    };
    let took = started.elapsed();
    eprintln!("after {took:?}: {error}");
    assert!(error.contains("timed out after 3s") && error.contains("partition 0"), "{error}");
    assert!(error.contains("could not be reached"), "{error}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A one-partition topic on `services`' broker holding 100 records.
async fn written_log(services: &Services, topic: &str, params: &str) -> std::sync::Arc<dyn TrafficLog> {
    let log = reprise_store::open_log(&(services.kafka_log_url(topic) + params)).await.unwrap();
    log.ensure_topic(1).await.unwrap();
    let records = (0..100)
        .map(|i| NewRecord {
            key: format!("k{i}").into(),
            timestamp_ms: reprise_store::now_ms(),
            payload: format!("p{i}").into(),
        })
        .collect();
    log.append(records).await.unwrap();
    log
}
