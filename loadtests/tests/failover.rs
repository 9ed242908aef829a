//! Worker failover in one process: a worker that stops cleanly mid-replay hands the rest
//! of its ranges to the others, and the replay ends done with every request delivered
//! once. Run on the real broker + etcd (`kafka_etcd::*`) and on the file twins
//! (`file::*`). A worker that crashes (SIGKILL) is in `faults.rs`, with real processes.

use std::net::SocketAddr;
use std::time::Duration;

use reprise_loadtests::cluster::{TestCluster, options, replay_request};
use reprise_loadtests::sink::Sink;
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::ReplayState;

const LIMIT: Duration = Duration::from_secs(90);

/// A worker that stops cleanly drains what it has in flight and gives the rest back at
/// once, with exact checkpoints: nothing is sent twice.
async fn a_stopping_worker_hands_its_ranges_over(kind: &str) {
    stop_a_worker_mid_replay(kind, "failover-stop", 1, 6).await;
}

/// The same in the second of three passes of a loop: the rest of that pass and the
/// whole third pass go to the others; every request is sent exactly three times.
async fn a_stopping_worker_hands_the_rest_of_its_loop_over(kind: &str) {
    stop_a_worker_mid_replay(kind, "failover-loop", 3, 2).await;
}

/// Replays `passes` passes of a recording spanning `span_s`, stops one of three workers
/// 3 s in, and checks that the others sent the rest: each request `passes` times.
async fn stop_a_worker_mid_replay(kind: &str, name: &str, passes: u32, span_s: i64) {
    let mut cluster = TestCluster::start(kind, name, 3, |_| {}).await.unwrap();
    let n = 500 * span_s as u64;
    let profile = Profile::constant(n, reprise_store::now_ns() - 60_000_000_000, span_s * 1_000_000_000, 8, 16);
    let log_url = cluster.log_url.clone();
    let recording = cluster.record(&log_url, &profile).await.unwrap();
    let sink = Sink::start_checking_ids(SocketAddr::from(([127, 0, 0, 1], 0)), n).await.unwrap();
    let mut request = replay_request(&recording.id, &format!("http://{}", sink.addr), 1);
    options(&mut request).passes = passes;
    let id = cluster.replay(request).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.local.workers.remove(1).shutdown().await;
    let status = cluster.wait_final(&id, LIMIT).await.unwrap();
    cluster.stop().await;
    let seen = sink.report();
    let extra = u64::from(passes - 1) * n;
    assert_eq!(status.state(), ReplayState::Done, "{status:?}");
    assert_eq!(seen.missing_ids, Some(0), "every request reached the target: {seen:?}");
    assert_eq!((seen.duplicate_ids, status.duplicates_bound), (Some(extra), 0), "{status:?}");
    assert_eq!(seen.requests, u64::from(passes) * n);
    assert!(status.reassigned > 0, "{status:?}");
    let left = status.workers.iter().find(|w| w.part == 0 && !w.handed_to.is_empty()).expect("a handed-over part");
    assert_eq!(left.state, "released");
    let taken_over: u64 = status.workers.iter().filter(|w| w.part > 0).map(|w| w.planned_records).sum();
    assert_eq!(taken_over, status.reassigned, "{status:?}");
    assert!(status.workers.iter().filter(|w| w.part > 0).all(|w| w.id != left.id && w.state == "done"));
    eprintln!("{} released: reassigned {}, lag p99 {:.1} ms", left.id, status.reassigned, status.lag().p99);
}

reprise_store::on_backends!(
    [kafka_etcd => "kafka_etcd", file => "file"]
    [a_stopping_worker_hands_its_ranges_over, a_stopping_worker_hands_the_rest_of_its_loop_over]
);
