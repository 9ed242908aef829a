//! Replay-time rules on the wire: real clients (curl) talk to a server on loopback while
//! tcpdump captures them; the pcap file is imported as a recording (capture masks
//! Authorization and Cookie), then replayed by the real `ctl` binary through an
//! in-process cluster on the real broker and etcd with a new token, no cookie, a
//! rewritten path and only GET and POST. What reaches the target is compared, header by
//! header and body, with what the clients sent.

mod common;

use std::path::Path;
use std::time::Duration;

use reprise_capture::CaptureConfig;
use reprise_loadtests::cluster::TestCluster;
use reprise_loadtests::procs::binary;
use tokio_util::sync::CancellationToken;

use crate::common::{Origin, Seen};

/// The test's server: every request whole, answering 200 (404 under /v2/search, for the
/// per-endpoint results).
async fn inspector() -> Origin {
    Origin::answering(|target| if target.starts_with("/v2/search") { 404 } else { 200 }).await
}

/// What `origin` saw, ordered by target and method (the replay's order is not the clients').
fn sorted(seen: Vec<Seen>) -> Vec<Seen> {
    let mut seen = seen;
    seen.sort_by(|a, b| (&a.target, &a.method).cmp(&(&b.target, &b.method)));
    seen
}

fn curl(args: &[&str]) {
    let out = std::process::Command::new("curl").args(["-sS", "-o", "/dev/null"]).args(args).output();
    let out = out.expect("curl is installed (deploy/local/setup.sh)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Bulk GETs over one keep-alive connection, for the sample.
const ITEMS: usize = 40;

/// Real clients: an authenticated user with a session cookie, and a bulk reader.
fn clients(base: &str) {
    let auth = ["-H", "Authorization: Bearer old-token", "-b", "session=s3cr3t"];
    let with_auth = |extra: &[&str], path: &str| {
        let url = format!("{base}{path}");
        curl(&[&auth[..], extra, &[url.as_str()]].concat());
    };
    with_auth(&[], "/v1/users/41/profile?view=full");
    with_auth(&["-H", "Content-Type: application/json", "-d", r#"{"item":7,"qty":2}"#], "/v1/orders");
    with_auth(&["-X", "PUT", "-d", "name=ann"], "/v1/users/41");
    with_auth(&["-X", "DELETE"], "/v1/orders/9");
    with_auth(&[], "/v1/users/42/profile");
    with_auth(&[], "/health");
    with_auth(&["-d", "q=shoes"], "/v2/search?page=2");
    let items: Vec<String> = (0..ITEMS).map(|i| format!("{base}/items/{i}")).collect();
    curl(&items.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Captures the production server's port with tcpdump while the clients run; how many
/// requests it answered.
async fn capture_clients(production: &Origin, pcap: &Path) -> usize {
    let base = production.url();
    common::tcpdump_while(production.addr.port(), pcap, move || clients(&base), production.counter()).await;
    production.seen().len()
}

/// Runs the real `ctl` against the cluster; its exit code, stdout and stderr.
async fn ctl(cluster: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(binary("ctl").unwrap());
    command.arg("--controller").arg(cluster.controller_url()).args(args);
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `ctl replay --json`'s summary.
async fn replay(cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = ctl(cluster, &[&["replay", "--json"], args].concat()).await;
    assert_eq!(code, 0, "ctl replay {args:?}: {stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_rules_change_on_the_wire_exactly_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let production = inspector().await;
    let pcap = dir.path().join("clients.pcap");
    let answered = capture_clients(&production, &pcap).await;
    assert_eq!(answered, 7 + ITEMS);

    let cluster = TestCluster::start("kafka_etcd", "rules", 2, |_| {}).await.unwrap();
    let mut config = CaptureConfig::for_log(&cluster.log_url);
    config.pcap_file = Some(pcap);
    config.port = vec![production.addr.port()];
    config.node = Some("pcap".into());
    config.spool_dir = Some(dir.path().join("spool"));
    config.catalog = Some(cluster.catalog_url.clone());
    config.recording = Some("clients".into());
    let report = reprise_capture::run(config, CancellationToken::new()).await.unwrap();
    assert_eq!(report.requests, answered as u64);
    let recording = report.recording_id.expect("a recording");

    // The rules, half in a file and half as flags.
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "remove-header = [\"Cookie\"]\nmethod = [\"GET\", \"POST\"]\n").unwrap();
    let target = inspector().await;
    let summary = replay(
        &cluster,
        &[
            "--recording",
            &recording,
            "--target",
            &target.url(),
            "--replay-config",
            rules.to_str().unwrap(),
            "--set-header",
            "Authorization: Bearer new-token",
            "--rewrite-url",
            "^/v1/users/([0-9]+)/profile:/v2/profiles/$1",
            "--deny-url",
            "^/health",
        ],
    )
    .await;
    let replay_id = summary["id"].as_str().unwrap().to_string();
    let kept = answered - 3; // PUT, DELETE, /health
    assert_eq!(summary["state"], "done", "{summary}");
    assert_eq!((summary["sent"].as_u64(), summary["filtered"].as_u64()), (Some(kept as u64), Some(3)), "{summary}");

    // Each request the clients sent, as the rules make it: the same method, headers and
    // body, with the new token (on every request), no cookie, the target's host, the marker and the
    // rewritten path.
    let expected: Vec<Seen> = {
        let mut list: Vec<Seen> = production
            .seen()
            .into_iter()
            .filter(|s| (s.method == "GET" || s.method == "POST") && s.target != "/health")
            .map(|mut s| {
                s.headers.remove("cookie");
                s.headers.insert("authorization".into(), "Bearer new-token".into());
                s.headers.insert("host".into(), target.addr.to_string());
                s.headers.insert("x-reprise-replay".into(), replay_id.clone());
                if let Some(user) = s.target.strip_prefix("/v1/users/").and_then(|t| t.strip_suffix("/profile")) {
                    s.target = format!("/v2/profiles/{user}");
                } else if let Some(rest) = s.target.strip_prefix("/v1/users/")
                    && let Some((user, query)) = rest.split_once("/profile?")
                {
                    s.target = format!("/v2/profiles/{user}?{query}");
                }
                s
            })
            .collect();
        list.sort_by(|a, b| (&a.target, &a.method).cmp(&(&b.target, &b.method)));
        list
    };
    // Authorization was masked at capture, so the recorded value is never what arrives.
    let arrived = sorted(target.seen());
    assert_eq!(arrived.len(), kept);
    assert!(arrived.iter().all(|s| !s.headers.contains_key("cookie")));
    assert!(arrived.iter().any(|s| s.target == "/v2/profiles/41?view=full"), "{arrived:#?}");
    for (got, want) in arrived.iter().zip(&expected) {
        assert_eq!(got, want);
    }

    // Results per endpoint as sent: ids folded into {id}, the query gone, busiest first.
    let endpoints: Vec<(String, u64, u64, u64)> = summary["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let class = |c: &str| e["status"][c].as_u64().unwrap_or(0);
            (e["endpoint"].as_str().unwrap().to_string(), e["sent"].as_u64().unwrap(), class("2xx"), class("4xx"))
        })
        .collect();
    let want = [
        ("GET /items/{id}", ITEMS as u64, ITEMS as u64, 0),
        ("GET /v2/profiles/{id}", 2, 2, 0),
        ("POST /v1/orders", 1, 1, 0),
        ("POST /v2/search", 1, 0, 1),
    ];
    assert_eq!(endpoints, want.map(|(e, s, ok, bad)| (e.to_string(), s, ok, bad)), "{summary}");
    assert!(summary["endpoints"][1]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    // A sample sends the same requests every run, and says how many it left out.
    let sampled_run = |marker: &'static str| {
        let (recording, url) = (recording.clone(), target.url());
        let cluster = &cluster;
        async move {
            let args = ["--recording", &recording, "--target", &url, "--allow-url", "^/items/", "--sample", "0.5"];
            let summary = replay(cluster, &[&args[..], &[marker]].concat()).await;
            (summary["sent"].as_u64().unwrap(), summary["filtered"].as_u64().unwrap())
        }
    };
    let before = target.seen().len();
    let (sent, filtered) = sampled_run("--no-marker").await;
    assert_eq!(sent + filtered, answered as u64);
    assert!(sent > 0 && sent < ITEMS as u64, "{sent} of {ITEMS} items in a 0.5 sample");
    let first: Vec<Seen> = target.seen()[before..].to_vec();
    assert!(first.iter().all(|s| s.target.starts_with("/items/") && !s.headers.contains_key("x-reprise-replay")));
    let before = target.seen().len();
    assert_eq!(sampled_run("--no-marker").await, (sent, filtered));
    let mut again: Vec<String> = target.seen()[before..].iter().map(|s| s.target.clone()).collect();
    let mut first: Vec<String> = first.into_iter().map(|s| s.target).collect();
    first.sort();
    again.sort();
    assert_eq!(first, again, "the same requests in both runs");

    // A rule that does not compile stops ctl before anything starts, and the controller
    // refuses it from any client.
    let before = target.seen().len();
    let (code, _, stderr) =
        ctl(&cluster, &["replay", "--recording", &recording, "--target", &target.url(), "--rewrite-url", "([:x"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error: bad --rewrite-url \"([:x\":"), "{stderr}");
    let mut request = reprise_loadtests::cluster::replay_request(&recording, &target.url(), 1);
    reprise_loadtests::cluster::options(&mut request).rules =
        Some(reprise_proto::v1::RequestRules { methods: vec!["GE T".into()], ..Default::default() });
    let refused = cluster.replay(request).await.unwrap_err().to_string();
    assert!(refused.contains("invalid argument") && refused.contains("bad --method"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(target.seen().len(), before, "nothing sent");
    cluster.stop().await;
}
