//! The dashboard in a real browser: headless Chromium (Debian's) loads the controller's
//! page on an in-process cluster, during a replay and after it. What it renders must show
//! the replay, its state, its live numbers, the controls its state allows (and clicking
//! them must pause, resume and cancel the replay), its per-endpoint table and its workers
//! by name.

use std::net::SocketAddr;
use std::time::Duration;

use reprise_loadtests::browser::{Browser, Page};
use reprise_loadtests::cluster::{TestCluster, replay_request};
use reprise_loadtests::http;
use reprise_loadtests::procs::{ProcessCluster, ProcessClusterConfig};
use reprise_loadtests::synth::Profile;
use reprise_proto::v1::ReplayState;
use serde_json::json;

/// How long the page may take to show what a step awaits.
const SHOWN: Duration = Duration::from_secs(15);

/// Script: the replays-list row of replay `id` as [state, sent], once rendered.
fn row_of(id: &str) -> String {
    format!(
        r##"(() => {{ const tr = document.querySelector('#replays tr[data-id="{id}"]');
            return tr && [tr.querySelector(".badge").textContent, tr.cells[5].textContent]; }})()"##
    )
}

/// Script: the controls the selected replay's heading offers.
const CONTROLS: &str =
    r##"Array.from(document.querySelectorAll("#d-actions button")).map((b) => b.dataset.action).join(",")"##;

/// Script: the header's count of running replays.
const RUNNING: &str = r##"document.getElementById("h-running").textContent"##;

/// "1.20k" is 1,200.
fn count(text: &str) -> f64 {
    match text.trim().strip_suffix('k') {
        Some(thousands) => thousands.parse::<f64>().unwrap() * 1e3,
        None => text.trim().parse().unwrap_or_else(|_| panic!("not a count: {text}")),
    }
}

/// Waits until the page shows replay `id` in `state`; its sends then.
fn shown_in_state(page: &mut Page, id: &str, state: &str) -> f64 {
    let script = format!("(() => {{ const row = {}; return row && row[0] === '{state}' && row[1]; }})()", row_of(id));
    let sent = page.wait_for(&script, SHOWN).unwrap_or_else(|e| panic!("{id} shown {state}: {e}"));
    count(sent.as_str().unwrap())
}

/// An in-process cluster of `workers` on the file log replaying `requests` recorded over
/// `span` to `target` (the cluster's sink if `None`): the cluster and the replay's id.
async fn replaying(
    name: &str,
    workers: usize,
    requests: u64,
    span: Duration,
    target: Option<String>,
) -> (TestCluster, String) {
    let cluster = TestCluster::start("file", name, workers, |_| {}).await.unwrap();
    let log_url = cluster.log_url.clone();
    let profile = Profile::constant(requests, reprise_store::now_ns() - 60_000_000_000, span.as_nanos() as i64, 8, 16);
    let recording = cluster.record(&log_url, &profile).await.unwrap();
    let target = target.unwrap_or_else(|| cluster.sink_url());
    let id = cluster.replay(replay_request(&recording.id, &target, 1)).await.unwrap();
    (cluster, id)
}

/// Runs `steps` with the controller's page open in a new headless Chromium.
async fn with_page<T: Send + 'static>(http: SocketAddr, steps: impl FnOnce(&mut Page) -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::launch().unwrap();
        let mut page = browser.open(&format!("http://{http}/")).unwrap();
        steps(&mut page)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_renders_a_finished_replay_in_headless_chromium() {
    let (cluster, id) = replaying("dashboard", 2, 400, Duration::from_secs(1), None).await;
    let status = cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.state(), ReplayState::Done);
    let workers: Vec<String> = status.workers.iter().map(|w| w.id.clone()).collect();

    let http = cluster.controller.http_addr;
    let shown = id.clone();
    let (endpoints, worker_cells, controls, running) = with_page(http, move |page| {
        assert_eq!(shown_in_state(page, &shown, "done"), 400.0, "every send counted");
        let endpoints = page.wait_for(r##"document.querySelectorAll("#d-endpoints tbody tr").length > 0 && Array.from(document.querySelectorAll("#d-endpoints tbody td:first-child")).map((td) => td.textContent).join("|")"##, SHOWN).unwrap();
        let workers = page.eval(r##"Array.from(document.querySelectorAll("#d-workers tbody tr")).map((tr) => tr.cells[0].title).join("|")"##).unwrap();
        (endpoints, workers, page.eval(CONTROLS).unwrap(), page.eval(RUNNING).unwrap())
    })
    .await;
    let endpoints = endpoints.as_str().unwrap().to_string();
    assert!(endpoints.contains("GET /items/{id}") && endpoints.contains("POST /items/{id}"), "{endpoints}");
    let worker_cells = worker_cells.as_str().unwrap().to_string();
    assert!(
        workers.iter().all(|w| worker_cells.contains(w.as_str())),
        "the workers by name {workers:?}: {worker_cells}"
    );
    assert_eq!((controls, running), (json!(""), json!("0")), "no controls, nothing counted running");

    // The picture docs/ shows: UPDATE_DASHBOARD_SCREENSHOT=1 writes it.
    let dir = tempfile::tempdir().unwrap();
    let screenshot = match std::env::var_os("UPDATE_DASHBOARD_SCREENSHOT") {
        Some(_) => concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dashboard.png").into(),
        None => dir.path().join("dashboard.png"),
    };
    let shot = format!("--screenshot={}", screenshot.display());
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .args(["--virtual-time-budget=10000", "--window-size=1400,1300", &shot, &format!("http://{http}/")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000), "a screenshot of the page");
    cluster.stop().await;
}

/// A replay of 30 s on two workers, followed in the page: it shows the replay running with
/// its sends growing, counts it in the header and offers pause and cancel; clicking pause
/// pauses it (the target hears nothing more), resume resumes it, cancel (confirmed) ends
/// it, and the page shows each state and the controls it allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_replay_is_shown_live_and_controlled_from_the_dashboard() {
    let (cluster, id) = replaying("controls", 2, 3_000, Duration::from_secs(30), None).await;
    let sink = cluster.sink.counts.clone();
    let shown = id.clone();
    let heard_while_paused = with_page(cluster.controller.http_addr, move |page| {
        let first = shown_in_state(page, &shown, "running");
        std::thread::sleep(Duration::from_secs(2));
        let later = count(page.eval(&format!("{}[1]", row_of(&shown))).unwrap().as_str().unwrap());
        assert!(first < later && later < 3_000.0, "live sends: {first} then {later}");
        assert_eq!(page.eval(RUNNING).unwrap(), json!("1"), "one replay counted running");
        assert_eq!(page.wait_for(CONTROLS, SHOWN).unwrap(), json!("pause,cancel"));

        let click = |page: &mut Page, action: &str| {
            page.eval(&format!(r##"document.querySelector('#d-actions button[data-action="{action}"]').click()"##))
                .unwrap();
        };
        click(page, "pause");
        shown_in_state(page, &shown, "paused");
        assert_eq!(page.wait_for(&format!("{CONTROLS} === 'resume,cancel' && 'yes'"), SHOWN).unwrap(), json!("yes"));
        std::thread::sleep(Duration::from_secs(1));
        let at_pause = sink.report().requests;
        std::thread::sleep(Duration::from_millis(1500));
        let heard = sink.report().requests - at_pause;

        click(page, "resume");
        shown_in_state(page, &shown, "running");
        page.eval("window.confirm = () => true").unwrap();
        click(page, "cancel");
        shown_in_state(page, &shown, "cancelled");
        assert_eq!(
            page.wait_for(&format!("{CONTROLS} === '' && {RUNNING} === '0' && 'yes'"), SHOWN).unwrap(),
            json!("yes")
        );
        heard
    })
    .await;
    assert_eq!(heard_while_paused, 0, "nothing sent while paused");
    let status = cluster.wait_final(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.state(), ReplayState::Cancelled);
    assert!(status.sent > 0 && status.sent < 3_000, "{}", status.sent);
    cluster.stop().await;
}

/// A replay whose every request failed (nothing listens at the target) is not shown as a
/// success: a red "breached" badge (it ran to its end, but its outcome fails), why, and
/// no latency, there being none to measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_where_every_request_failed_is_shown_breached_without_a_latency() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (cluster, id) =
        replaying("dash-failed", 1, 50, Duration::from_millis(500), Some(format!("http://{closed}"))).await;
    let status = cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!((status.state(), status.ok), (ReplayState::Done, 0), "{status:?}");
    let (shown, problem) = with_page(cluster.controller.http_addr, move |page| {
        shown_in_state(page, &id, "breached");
        let row = format!(r##"document.querySelector('#replays tr[data-id="{id}"]')"##);
        let shown =
            page.eval(&format!("[getComputedStyle({row}.querySelector('.badge')).color, {row}.cells[7].textContent]"));
        let problem = page.wait_for(r##"(document.querySelector("#d-error .msg") || {}).textContent"##, SHOWN);
        (shown.unwrap(), problem.unwrap())
    })
    .await;
    // --bad (#ff5c5c), not --ok.
    assert_eq!(shown, json!(["rgb(255, 92, 92)", "–"]), "a red badge and no latency");
    assert!(problem.as_str().unwrap().contains("no request succeeded: 50 sends, connect 50"), "{problem}");
    cluster.stop().await;
}

/// A page left open while its controller is SIGKILLed mid-replay and started again: the
/// page says it lost the API, then, once the restarted controller has taken the replay
/// over and seen it end, shows it done and counts nothing running. (Needs the binaries:
/// `cargo build --bins`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_page_follows_a_replay_across_a_controller_restart() {
    let n = 4_000;
    let config = ProcessClusterConfig { election_ttl_secs: 2, ..ProcessClusterConfig::new("dash-restart", 1, 2) };
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let profile = Profile::constant(n, reprise_store::now_ns() - 60_000_000_000, 8_000_000_000, 8, 16);
    let recording = cluster.record(&profile).await.unwrap();
    let id = cluster.replay(replay_request(&recording.id, &cluster.sink_url(), 1)).await.unwrap();
    let http = cluster.controllers[0].http_addr().expect("the controller's stats API");
    let runtime = tokio::runtime::Handle::current();
    let cluster = with_page(http, move |page| {
        let mut cluster = cluster;
        shown_in_state(page, &id, "running");
        assert_eq!(page.eval(RUNNING).unwrap(), json!("1"));
        cluster.controllers[0].kill().unwrap();
        let lost =
            page.wait_for(r##"document.getElementById("conn").textContent.startsWith("API error") && "yes""##, SHOWN);
        assert_eq!(lost.unwrap(), json!("yes"), "the page says it lost the API");
        let status = runtime.block_on(async {
            cluster.controllers[0].restart().await.unwrap();
            cluster.wait_final(&id, Duration::from_secs(60)).await.unwrap()
        });
        assert_eq!((status.state(), status.sent), (ReplayState::Done, n), "{status:?}");
        assert_eq!(shown_in_state(page, &id, "done"), n as f64);
        let calm = page.wait_for(
            &format!("{RUNNING} === '0' && !document.getElementById('conn').classList.contains('err') && 'yes'"),
            SHOWN,
        );
        assert_eq!(calm.unwrap(), json!("yes"), "nothing counted running, the API reached again");
        cluster
    })
    .await;
    drop(cluster);
}

/// The controls' API as a page elsewhere or a wrong click would call it: another origin
/// is refused, an unknown action is not found, an ended replay stays ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controls_api_refuses_other_origins_unknown_actions_and_ended_replays() {
    let (cluster, id) = replaying("controls-api", 1, 100, Duration::from_millis(500), None).await;
    let http = cluster.controller.http_addr;
    let control = async |action: &str, origin: &str| {
        let path = format!("/api/replays/{id}/{action}");
        http::request(http, "POST", &path, &[("Origin", origin)]).await.unwrap()
    };
    let refused = control("cancel", "http://elsewhere.test").await;
    assert_eq!(refused.status, 403, "another origin: {}", refused.body);
    assert_eq!(control("stop", "http://test").await.status, 404, "an unknown action");
    let status = cluster.wait_final(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.state(), ReplayState::Done, "the refused cancel changed nothing");
    let ended = control("resume", "http://test").await;
    assert_eq!(ended.status, 409, "an ended replay stays ended: {}", ended.body);
    assert!(ended.json().unwrap()["error"].as_str().unwrap().contains("already ended"), "{}", ended.body);
    cluster.stop().await;
}
