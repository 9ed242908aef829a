//! The dashboard in a real browser: headless Chromium (Debian's) loads the controller's
//! page after a replay on an in-process cluster; the DOM it rendered must show the
//! replay, its state, its per-endpoint table and its workers by name.

use std::time::Duration;

use reprise_loadtests::cluster::{TestCluster, replay_request};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::ReplayState;

/// Chromium's flags for a closed machine (no background connections, a fresh profile).
fn chromium(profile: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed (deploy/local/setup.sh)");
    assert!(out.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_renders_a_finished_replay_in_headless_chromium() {
    let cluster = TestCluster::start("file", "dashboard", 2, |_| {}).await.unwrap();
    let log_url = cluster.log_url.clone();
    let profile = Profile::constant(400, reprise_store::now_ns() - 60_000_000_000, 1_000_000_000, 8, 16);
    let recording = cluster.record(&log_url, &profile).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    let status = cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.state(), ReplayState::Done);

    let url = format!("http://{}/", cluster.controller.http_addr);
    let dir = tempfile::tempdir().unwrap();
    // UPDATE_DASHBOARD_SCREENSHOT=1 writes the picture docs/ shows.
    let screenshot = match std::env::var_os("UPDATE_DASHBOARD_SCREENSHOT") {
        Some(_) => concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dashboard.png").into(),
        None => dir.path().join("dashboard.png"),
    };
    let page = tokio::task::spawn_blocking(move || {
        let profile = dir.path().join("profile");
        let shot = format!("--screenshot={}", screenshot.display());
        chromium(&profile, &["--virtual-time-budget=10000", "--window-size=1400,1300", &shot, &url]);
        assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000), "a screenshot of the page");
        chromium(&profile, &["--virtual-time-budget=10000", "--dump-dom", &url])
    })
    .await
    .unwrap();
    assert!(page.contains(&id), "the replay is listed: {page}");
    assert!(page.contains("GET /items/{id}") && page.contains("POST /items/{id}"), "the endpoint table: {page}");
    assert!(page.contains("s-done"), "a done badge");
    let workers = status.workers.iter().map(|w| w.id.clone()).collect::<Vec<_>>();
    assert!(workers.iter().all(|w| page.contains(w.as_str())), "the workers by name {workers:?}");
    cluster.stop().await;
}
