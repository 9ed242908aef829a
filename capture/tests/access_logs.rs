//! Access-log imports go through capture's selection and redaction like live traffic,
//! on the real broker (`kafka::*`) and the file log (`file::*`).

mod common;

use std::path::{Path, PathBuf};

use reprise_capture::CaptureConfig;
use tokio_util::sync::CancellationToken;

/// What the logs below carry that must never be stored.
const SECRETS: [&str; 6] = ["s3cr3t-t0ken", "c00kie-value", "hunter2-pw", "r3f3rer-c0de", "qu3ry-t0ken", "/forget-me"];

/// Secrets the ways access logs carry them: request headers and a JSON body (in JSON
/// logs that log them), the Referer and the query (combined); plus a DELETE. Stamped an
/// hour ago, as a broker's time-based retention would delete records stamped long ago.
fn write_logs(dir: &Path) -> Vec<PathBuf> {
    let at = reprise_store::now_ns() / 1_000_000_000 - 3600;
    let json = [
        format!(
            r#"{{"msec":"{at}.001","method":"GET","url":"/me","headers":{{"Authorization":"Bearer s3cr3t-t0ken","Cookie":"session=c00kie-value","X-Trace":"t-1"}}}}"#
        ),
        format!(
            r#"{{"msec":"{at}.002","method":"POST","url":"/login","headers":{{"Content-Type":"application/json"}},"request_body":"{{\"user\":\"ann\",\"password\":\"hunter2-pw\"}}"}}"#
        ),
        format!(r#"{{"msec":"{at}.003","method":"DELETE","url":"/forget-me"}}"#),
    ];
    let stamp = |s: i64| {
        let date = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{s}"), "+%d/%b/%Y:%H:%M:%S +0000"])
            .output()
            .unwrap();
        String::from_utf8(date.stdout).unwrap().trim().to_string()
    };
    let combined = [
        format!(
            r#"10.0.0.1 - - [{}] "GET /from-link HTTP/1.1" 200 5 "https://idp.example/cb?code=r3f3rer-c0de" "curl/8""#,
            stamp(at + 1)
        ),
        format!(r#"10.0.0.1 - - [{}] "GET /reset?token=qu3ry-t0ken HTTP/1.1" 200 5 "-" "curl/8""#, stamp(at + 2)),
    ];
    let paths = vec![dir.join("app.jsonl"), dir.join("access.log")];
    std::fs::write(&paths[0], json.join("\n")).unwrap();
    std::fs::write(&paths[1], combined.join("\n")).unwrap();
    paths
}

/// The secrets given are masked in the stored log (headers, JSON body fields, the
/// Referer with `--redact-header`), a query secret is kept out with `--deny-url` (no
/// redaction rewrites a target), a denied method is left out, and a bad `--allow-url`
/// regex is refused before anything is read.
async fn an_access_log_import_is_selected_and_redacted_like_live_traffic(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::log_url(kind, &dir, "access-secrets");
    let mut config = CaptureConfig::for_log(&log);
    (config.access_log, config.node, config.spool_dir) =
        (write_logs(dir.path()), Some("import".into()), Some(dir.path().join("spool")));
    config.deny_method = vec!["DELETE".into()];
    config.deny_url = vec!["[?&]token=".into()];
    config.redact_header.push("Referer".into());
    config.redact_json_field = vec!["password".into()];
    let report = reprise_capture::run(config.clone(), CancellationToken::new()).await.unwrap();
    let counts = (report.requests, report.filtered, report.records_stored, report.unparseable_lines);
    assert_eq!(counts, (5, 2, 3, 0), "{report:?}");
    let kept = [
        "GET /me HTTP/1.1\r\n",
        "Authorization: [REDACTED]\r\n",
        "Cookie: [REDACTED]\r\n",
        "X-Trace: t-1\r\n",
        "POST /login HTTP/1.1\r\n",
        r#"{"password":"[REDACTED]","user":"ann"}"#,
        "GET /from-link HTTP/1.1\r\n",
        "Referer: [REDACTED]\r\n",
    ];
    common::grep_stored_log(&log, &kept, &SECRETS).await;

    config.allow_url = vec!["(".into()];
    let refused = reprise_capture::run(config, CancellationToken::new()).await.unwrap_err();
    assert_eq!(format!("{refused:#}"), r#"bad URL pattern "(": unclosed group"#);
}

reprise_store::on_backends!(
    [kafka => "kafka", file => "file"]
    [an_access_log_import_is_selected_and_redacted_like_live_traffic]
);
