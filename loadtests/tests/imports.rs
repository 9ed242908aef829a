//! Imports as recordings of their own (`--recording`): a week-old GoReplay file replays
//! from the real broker (its messages are stamped with the import time, so retention
//! does not eat them), and an import's recording holds exactly its own records while
//! another writer appends to the same log.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reprise_capture::CaptureConfig;
use reprise_loadtests::cluster::{TestCluster, replay_request};
use reprise_loadtests::synth::{self, Profile};
use reprise_proto::v1::ReplayState;
use reprise_store::log::RangeSpec;
use reprise_store::schema::{Recording, RecordingState};
use tokio_util::sync::CancellationToken;

use crate::common::read_log;

const DAY_NS: i64 = 86_400_000_000_000;

/// Writes `profile` as a GoReplay file (through a scratch file log).
async fn gor_file(dir: &Path, profile: &Profile) -> std::path::PathBuf {
    let scratch = reprise_store::open_log(&format!("file://{}/scratch", dir.display())).await.unwrap();
    scratch.ensure_topic(1).await.unwrap();
    let path = dir.join("traffic.gor");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    synth::write_with_gor(&scratch, profile, Some(&mut out)).await.unwrap();
    std::io::Write::flush(&mut out).unwrap();
    path
}

/// Imports a GoReplay file as a recording; returns the recording from the catalog.
async fn import_gor(cluster: &TestCluster, gor: &Path, dir: &Path) -> Recording {
    let mut config = CaptureConfig::for_log(&cluster.log_url);
    config.gor_file = Some(gor.to_path_buf());
    config.node = Some("import".into());
    config.spool_dir = Some(dir.join("spool"));
    config.catalog = Some(cluster.catalog_url.clone());
    config.recording = Some("gor".into());
    let report = reprise_capture::run(config, CancellationToken::new()).await.unwrap();
    let id = report.recording_id.expect("a recording");
    let catalog = reprise_store::Catalog::open(&cluster.catalog_url).await.unwrap();
    catalog.get::<Recording>(&id).await.unwrap().expect("stored").value
}

/// The `X-Request-Id`s of records.
fn request_ids(records: &[reprise_proto::v1::TrafficRecord]) -> BTreeSet<u64> {
    records
        .iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.http);
            let id = text.split("X-Request-Id: ").nth(1).unwrap().split('\r').next().unwrap();
            id.parse().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_week_old_gor_file_replays_from_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200;
    let week_ago = reprise_store::now_ns() - 7 * DAY_NS;
    let profile = Profile::constant(n, week_ago, 2_000_000_000, 8, 64);
    let gor = gor_file(dir.path(), &profile).await;
    let cluster = TestCluster::start("kafka_etcd", "weekold", 2, |_| {}).await.unwrap();
    let imported_at_ms = reprise_store::now_ms();
    let recording = import_gor(&cluster, &gor, dir.path()).await;
    assert_eq!((recording.state(), recording.record_count), (RecordingState::Complete, n));
    assert_eq!(recording.first_timestamp_ns, Some(week_ago), "the span is the capture time");
    assert_ne!(recording.log_url, cluster.log_url, "an import has a topic of its own");

    // Message time is the import's, capture time the traffic's.
    let log = reprise_store::open_log(&recording.log_url).await.unwrap();
    let range = recording.ranges.iter().find(|r| r.end > r.start).unwrap();
    let mut stream = log.read_range(RangeSpec::whole(range.partition, range.start, range.end), 16).await.unwrap();
    let raw = stream.next().await.unwrap().unwrap();
    assert!(raw.timestamp_ms >= imported_at_ms - 1000, "message time {} is the import's", raw.timestamp_ms);
    let record = reprise_store::traffic::decode(&raw.payload[..]).unwrap();
    assert!(record.timestamp_ns < week_ago + 3_000_000_000, "capture time {} kept", record.timestamp_ns);

    // The broker enforces a 7-day retention within seconds (records stamped a week ago
    // are gone that fast): after a while, nothing of the import is.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(log.watermarks().await.unwrap().iter().all(|m| m.low == 0), "retention deleted part of the import");

    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    let status = cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!((status.state(), status.sent, status.ok), (ReplayState::Done, n, n), "{status:?}");
    assert_eq!(cluster.sink.report().requests, n);
    cluster.stop().await;
}

async fn an_import_recording_holds_only_its_records_while_another_writer_appends(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let n = 500;
    let profile = Profile::constant(n, reprise_store::now_ns() - 3_600_000_000_000, 5_000_000_000, 16, 32);
    let gor = gor_file(dir.path(), &profile).await;
    let cluster = TestCluster::start(kind, "concurrent-import", 1, |_| {}).await.unwrap();

    // Another writer (a live capture, say) appends to the same log all along.
    let log = reprise_store::open_log(&cluster.log_url).await.unwrap();
    log.ensure_topic(6).await.unwrap();
    let (stop, written) = (CancellationToken::new(), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        tokio::spawn(async move {
            let other = Profile::constant(50, reprise_store::now_ns(), 1_000_000, 4, 16);
            while !stop.is_cancelled() {
                written.fetch_add(synth::write(&log, &other).await.unwrap(), Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = written.load(Ordering::Relaxed);
    let recording = import_gor(&cluster, &gor, dir.path()).await;
    let during = written.load(Ordering::Relaxed) - before;
    stop.cancel();
    writer.await.unwrap();
    assert!(during > 0, "the other writer appended while the import ran");

    assert_eq!((recording.state(), recording.record_count), (RecordingState::Complete, n));
    let records = read_log(&recording.log_url).await;
    assert_eq!(records.len() as u64, n);
    assert_eq!(request_ids(&records), (0..n).collect(), "exactly the imported requests");
    cluster.stop().await;
}

reprise_store::on_backends!(
    [kafka_etcd => "kafka_etcd", file => "file"]
    [an_import_recording_holds_only_its_records_while_another_writer_appends]
);
