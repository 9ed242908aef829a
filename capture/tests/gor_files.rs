//! GoReplay files: import into the traffic log, export back, on the real broker
//! (`kafka::*`) and the file log (`file::*`).

mod common;

use reprise_capture::CaptureConfig;
use reprise_proto::v1::TrafficRecord;
use reprise_store::schema::PartitionRange;
use tokio_util::sync::CancellationToken;

/// A GoReplay file as GoReplay writes it, stamped an hour ago (a broker's time-based
/// retention would delete records stamped long ago).
fn gor_file(base_ns: i64) -> String {
    format!(
        "1 a1a1a1a1a1a1a1a1a1a1a1a1 {} 0\nGET /one?x=1 HTTP/1.1\r\nHost: shop\r\n\r\n\n🐵🙈🙉\n\
         2 a1a1a1a1a1a1a1a1a1a1a1a1 {} 5000000\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\n🐵🙈🙉\n\
         3 a1a1a1a1a1a1a1a1a1a1a1a1 {} 4000000\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\n🐵🙈🙉\n\
         1 b2b2b2b2b2b2b2b2b2b2b2b2 {} 0\nPOST /two HTTP/1.1\r\nContent-Length: 11\r\n\r\nline1\nline2\n🐵🙈🙉\n",
        base_ns + 1,
        base_ns + 5_000_001,
        base_ns + 9_000_001,
        base_ns + 10_000_001
    )
}

async fn import(
    gor: &std::path::Path,
    log: &str,
    dir: &tempfile::TempDir,
) -> anyhow::Result<reprise_capture::CaptureReport> {
    let mut config = CaptureConfig::for_log(log);
    config.gor_file = Some(gor.to_path_buf());
    config.node = Some("import".into());
    config.spool_dir = Some(dir.path().join("spool"));
    reprise_capture::run(config, CancellationToken::new()).await
}

/// What must survive a round trip: kind, capture time, bytes, latency.
fn essence(records: &[TrafficRecord]) -> Vec<(i32, i64, Vec<u8>, i64)> {
    let mut out: Vec<_> = records.iter().map(|r| (r.kind, r.timestamp_ns, r.http.to_vec(), r.latency_ns)).collect();
    out.sort();
    out
}

async fn import_then_export_then_import_keeps_every_record(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("in.gor");
    let base_ns = reprise_store::now_ns() - 3_600_000_000_000;
    std::fs::write(&first, gor_file(base_ns)).unwrap();
    let log_a = common::log_url(kind, &dir, "gor-a");
    import(&first, &log_a, &dir).await.unwrap();
    let imported = common::read_log(&log_a).await;
    assert_eq!(imported.len(), 3, "requests and responses; replayed responses are not traffic");
    let post = imported.iter().find(|r| r.http.starts_with(b"POST")).unwrap();
    assert_eq!(post.http, &b"POST /two HTTP/1.1\r\nContent-Length: 11\r\n\r\nline1\nline2"[..]);
    assert_eq!(post.timestamp_ns, base_ns + 10_000_001);
    let response = imported.iter().find(|r| r.http.starts_with(b"HTTP")).unwrap();
    assert_eq!(response.latency_ns, 5_000_000);

    // Export the whole log, import the export: the same records.
    let log = reprise_store::open_log(&log_a).await.unwrap();
    let ranges: Vec<PartitionRange> = log
        .watermarks()
        .await
        .unwrap()
        .iter()
        .map(|m| PartitionRange { partition: m.partition, start: m.low, end: m.high })
        .collect();
    let exported = dir.path().join("out.gor");
    let mut file = std::fs::File::create(&exported).unwrap();
    assert_eq!(reprise_store::gor::export(&*log, &ranges, &mut file).await.unwrap(), 3);
    drop(file);
    let log_b = common::log_url(kind, &dir, "gor-b");
    import(&exported, &log_b, &dir).await.unwrap();
    assert_eq!(essence(&common::read_log(&log_b).await), essence(&imported));
}

/// A malformed message is skipped and counted, the messages around it imported; a file
/// in which nothing parses is one clear error, naming where.
async fn malformed_messages_are_skipped_and_a_file_of_garbage_is_a_clear_error(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = reprise_store::now_ns() - 3_600_000_000_000;
    let bad = dir.path().join("bad.gor");
    let text = format!(
        "1 a1 {} 0\nGET /before HTTP/1.1\r\n\r\n\n🐵🙈🙉\nnot a header\nx\n🐵🙈🙉\n1 b2 {} 0\nGET /after HTTP/1.1\r\n\r\n",
        base + 1,
        base + 2
    );
    std::fs::write(&bad, text).unwrap();
    let log = common::log_url(kind, &dir, "gor-bad");
    let report = import(&bad, &log, &dir).await.unwrap();
    assert_eq!((report.requests, report.records_stored, report.unparseable_messages), (2, 2, 1));
    common::grep_stored_log(&log, &["GET /before ", "GET /after "], &[]).await;

    let garbage = dir.path().join("garbage.gor");
    std::fs::write(&garbage, "not a header\nx\n").unwrap();
    let error = import(&garbage, &common::log_url(kind, &dir, "gor-garbage"), &dir).await.unwrap_err();
    let expected = format!(
        "no GoReplay message parses; the first: {}: message 1 (byte 0): bad header line \"not a header\": \
         type must be 1, 2 or 3",
        garbage.display()
    );
    assert_eq!(format!("{error:#}"), expected);
    let missing =
        import(&dir.path().join("nope.gor"), &common::log_url(kind, &dir, "gor-none"), &dir).await.unwrap_err();
    assert!(format!("{missing:#}").contains("cannot read GoReplay file"), "{missing:#}");
}

/// A GoReplay file goes through capture's selection and redaction like live traffic:
/// the secrets it holds (Authorization, Cookie) are masked in the stored log, a denied
/// method is left out, and a bad `--allow-url` regex is refused before anything is read.
async fn a_gor_import_is_selected_and_redacted_like_live_traffic(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let gor = dir.path().join("secrets.gor");
    let base = reprise_store::now_ns() - 3_600_000_000_000;
    let text = format!(
        "1 c3c3c3c3c3c3c3c3c3c3c3c3 {} 0\nGET /me HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer s3cr3t-t0ken\r\n\
         Cookie: session=c00kie-value\r\n\r\n\n🐵🙈🙉\n\
         1 d4d4d4d4d4d4d4d4d4d4d4d4 {} 0\nDELETE /me HTTP/1.1\r\nHost: shop\r\n\r\n\n🐵🙈🙉\n",
        base + 1,
        base + 2
    );
    std::fs::write(&gor, text).unwrap();
    let log = common::log_url(kind, &dir, "gor-secrets");
    let mut config = CaptureConfig::for_log(&log);
    (config.gor_file, config.node, config.spool_dir) =
        (Some(gor.clone()), Some("import".into()), Some(dir.path().join("spool")));
    config.deny_method = vec!["DELETE".into()];
    reprise_capture::run(config.clone(), CancellationToken::new()).await.unwrap();
    let stored = common::read_log(&log).await;
    assert_eq!(stored.len(), 1, "the DELETE is left out");
    let http = String::from_utf8_lossy(&stored[0].http).into_owned();
    assert!(http.starts_with("GET /me HTTP/1.1\r\n"), "{http}");
    let masked = ["GET /me HTTP/1.1", "Authorization: [REDACTED]\r\n", "Cookie: [REDACTED]\r\n"];
    common::grep_stored_log(&log, &masked, &["s3cr3t-t0ken", "c00kie-value", "DELETE"]).await;
    config.allow_url = vec!["(".into()];
    let refused = reprise_capture::run(config, CancellationToken::new()).await.unwrap_err();
    assert_eq!(format!("{refused:#}"), r#"bad URL pattern "(": unclosed group"#);
}

reprise_store::on_backends!(
    [kafka => "kafka", file => "file"]
    [
        import_then_export_then_import_keeps_every_record,
        malformed_messages_are_skipped_and_a_file_of_garbage_is_a_clear_error,
        a_gor_import_is_selected_and_redacted_like_live_traffic
    ]
);
