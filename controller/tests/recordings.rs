//! Recordings against the real broker (`kafka::*`) and the file log (`file::*`): a
//! window cut by timestamp, and (on Kafka) a recording that retention ate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reprise_controller::recordings::Recordings;
use reprise_controller::replays::{ReplayError, ReplayManager, ReplaySpec};
use reprise_proto::v1::{MessageKind, TrafficRecord};
use reprise_proto::v1::{PacingMode, ReplayOptions, StartReplayRequest};
use reprise_store::log::{NewRecord, TrafficLog};
use reprise_store::schema::RecordingState;
use reprise_store::{Catalog, traffic};

struct Setup {
    catalog: Catalog,
    log: Arc<dyn TrafficLog>,
    _dir: tempfile::TempDir,
}

async fn setup(kind: &str, name: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log_url = match kind {
        "kafka" => reprise_store::testing::kafka_log_url(name),
        _ => format!("file://{}/log", dir.path().display()),
    };
    let catalog = Catalog::open(&format!("file://{}/catalog", dir.path().display())).await.unwrap();
    let log = reprise_store::open_log(&log_url).await.unwrap();
    log.ensure_topic(3).await.unwrap();
    Setup { catalog, log, _dir: dir }
}

fn record_at(i: usize, timestamp_ms: i64) -> NewRecord {
    let record = TrafficRecord {
        format_version: 1,
        connection_id: format!("c{i}"),
        kind: MessageKind::Request as i32,
        timestamp_ns: timestamp_ms * 1_000_000,
        http: format!("GET /{i} HTTP/1.1\r\n\r\n").into_bytes().into(),
        ..Default::default()
    };
    NewRecord {
        key: Bytes::from(record.connection_id.clone()),
        timestamp_ms,
        payload: Bytes::from(traffic::encode(&record)),
    }
}

async fn a_cut_holds_exactly_the_window(kind: &str) {
    let s = setup(kind, "cut").await;
    let base = reprise_store::now_ms() - 600_000;
    // Ten records a second apart, over several partitions.
    s.log.append((0..10).map(|i| record_at(i, base + i as i64 * 1000)).collect()).await.unwrap();
    let recordings = Recordings::new(s.catalog.clone(), s.log.clone(), 3);
    let cut = recordings.cut("window", Default::default(), base + 2500, base + 6500).await.unwrap();
    assert_eq!(cut.record_count, 4, "records at +3 s, +4 s, +5 s and +6 s");
    assert_eq!(cut.first_timestamp_ns, Some((base + 3000) * 1_000_000));
    assert_eq!(cut.last_timestamp_ns, Some((base + 6000) * 1_000_000));
    assert_eq!(cut.state(), RecordingState::Complete);
    let empty = recordings.cut("later", Default::default(), base + 60_000, base + 70_000).await.unwrap();
    assert_eq!(empty.record_count, 0);
}

async fn a_recording_eaten_by_retention_is_refused(kind: &str) {
    let s = setup(kind, "retention").await;
    let recordings = Arc::new(Recordings::new(s.catalog.clone(), s.log.clone(), 3));
    let started = recordings.start("old", Default::default()).await.unwrap();
    // Stamped a year ago: the broker's time-based retention (7 days) deletes them.
    let year_ago = reprise_store::now_ms() - 365 * 86_400_000;
    s.log.append((0..6).map(|i| record_at(i, year_ago + i as i64)).collect()).await.unwrap();
    let stopped = recordings.stop(&started.id).await.unwrap();
    assert_eq!(stopped.record_count, 6);
    // Wait for retention to run.
    let mut gone = false;
    for _ in 0..120 {
        let marks = s.log.watermarks().await.unwrap();
        if stopped.ranges.iter().all(|r| marks.iter().any(|m| m.partition == r.partition && m.low >= r.end)) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gone, "the broker did not apply retention within a minute");
    let replays = ReplayManager::new(
        "c".into(),
        s.catalog.clone(),
        recordings.clone(),
        Duration::from_secs(1),
        Default::default(),
        None,
    );
    let request = StartReplayRequest {
        recording_id: stopped.id.clone(),
        options: Some(ReplayOptions {
            target: "http://127.0.0.1:9".into(),
            multiple: 1,
            speed: 1.0,
            pacing: PacingMode::Original.into(),
            max_in_flight: 1,
            request_timeout_ms: 1000,
            simulate: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = ReplaySpec::try_from(request).unwrap();
    let error = replays.start(spec).await.unwrap_err();
    assert!(matches!(error, ReplayError::Expired { missing: 6, .. }), "{error}");
    let stored = s.catalog.get::<reprise_store::schema::Recording>(&stopped.id).await.unwrap().unwrap().value;
    assert_eq!((stored.state(), stored.missing_records), (RecordingState::Expired, 6), "the recording says so");
}

reprise_store::on_backends!([kafka => "kafka", file => "file"] [a_cut_holds_exactly_the_window]);

mod retention {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka() {
        super::a_recording_eaten_by_retention_is_refused("kafka").await
    }
}
