//! Faults done to the real daemons as processes (SIGKILL, a frozen catalog), on a private
//! etcd and broker per test (see `reprise_loadtests::procs`). Needs the binaries built:
//! `cargo build -p reprise-controller -p reprise-worker --bins`.

use std::time::Duration;

use reprise_loadtests::cluster::replay_request;
use reprise_loadtests::procs::{self, Daemon, ProcessCluster, ProcessClusterConfig, Services};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::ReplayState;

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
