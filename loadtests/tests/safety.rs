//! Safe load, as a user meets it with real processes (controller, workers, ctl) on a
//! private etcd and broker: thresholds and exit codes, Ctrl-C, the token, the target
//! allow-list.
//! Needs the binaries built (`cargo test --workspace --all-targets` builds them).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reprise_loadtests::procs::{self, ProcessCluster, ProcessClusterConfig};
use reprise_loadtests::synth::Profile;

fn profile(requests: u64, span: Duration) -> Profile {
    Profile::constant(requests, reprise_store::now_ns() - 60_000_000_000, span.as_nanos() as i64, 8, 16)
}

/// `ctl --controller <cluster's controllers> args...` with `env`, its output piped.
fn ctl(cluster: &ProcessCluster, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(procs::binary("ctl").unwrap());
    command.arg("--controller").arg(cluster.controller_addresses()).args(args);
    command.env_remove("REPRISE_TOKEN").env_remove("REPRISE_TOKEN_FILE").envs(env.iter().copied());
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn output(child: Child) -> (Option<i32>, String, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `ctl replay` as a user runs it: exit status 1 when the replay breached its thresholds
/// (here: nothing succeeded against a closed port), and Ctrl-C cancels a followed replay,
/// prints its final summary and exits 1; the target has stopped counting by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctl_replay_exits_1_on_a_breach_and_ctrl_c_cancels_it() {
    let config = ProcessClusterConfig::new("ctl-exit", 1, 2);
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let short = cluster.record(&profile(50, Duration::from_secs(1))).await.unwrap();
    let closed = format!("http://{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let (code, stdout, stderr) = output(ctl(&cluster, &["replay", "--recording", &short.id, "--target", &closed], &[]));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("BREACHED    no request succeeded: 50 sends, connect 50"), "{stdout}");
    assert!(stdout.contains("latency ms  - (no response)"), "{stdout}");
    assert!(stderr.contains("warning: the controller has no --allow-target list"), "{stderr}");

    let long = cluster.record(&profile(2_000, Duration::from_secs(20))).await.unwrap();
    let followed = ctl(&cluster, &["replay", "--recording", &long.id, "--target", &cluster.sink_url()], &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(followed.id() as i32, libc::SIGINT) }, 0);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || output(followed)).await.unwrap();
    let at_exit = cluster.sink.report().requests;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("interrupted: cancelling"), "{stderr}");
    assert!(stdout.contains("(cancelled)") && stdout.contains("sent        "), "the final summary: {stdout}");
    assert!(at_exit > 0 && at_exit < 2_000, "{at_exit}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.sink.report().requests, at_exit, "the target stopped counting when ctl returned");
}

/// The guarded controller: `--token-file` and `--allow-target <sink>`. ctl without
/// the token (or with a wrong one) fails with one line, with it works; the API answers 401
/// without it and 200 with it (/metrics, /healthz and the dashboard's page stay open); a
/// replay to another port is refused, naming the list, and that port sees nothing; the
/// token appears in no daemon's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guarded_controller_needs_its_token_and_replays_only_to_allowed_targets() {
    let token = format!("tok-{:016x}", rand::random::<u64>());
    let config = ProcessClusterConfig {
        controller_flags: ["--allow-target", "{sink}", "--allow-target", "*.staging.internal"]
            .map(String::from)
            .to_vec(),
        token: Some(token.clone()),
        ..ProcessClusterConfig::new("guarded", 1, 1)
    };
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let recording = cluster.record(&profile(20, Duration::from_millis(500))).await.unwrap();
    let token_file = cluster.services.dir().join("token");
    let with_file = |args: &[&str]| {
        let mut all = vec!["--token-file", token_file.to_str().unwrap()];
        all.extend_from_slice(args);
        output(ctl(&cluster, &all, &[]))
    };

    let (code, _, stderr) = output(ctl(&cluster, &["workers"], &[]));
    assert_eq!(
        (code, stderr.trim()),
        (Some(1), "error: this controller needs a token: set REPRISE_TOKEN or pass --token-file")
    );
    let (code, _, stderr) = output(ctl(&cluster, &["workers"], &[("REPRISE_TOKEN", "not-it")]));
    assert_eq!((code, stderr.trim()), (Some(1), "error: the controller refused the token"));
    let (code, stdout, stderr) = output(ctl(&cluster, &["workers", "--json"], &[("REPRISE_TOKEN", &token)]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("worker-0"), "{stdout}");

    // A dry run prints the plan and sends nothing.
    let soak = cluster.record(&profile(100, Duration::from_secs(4))).await.unwrap();
    let dry =
        ["replay", "--recording", &soak.id, "--target", &cluster.sink_url(), "--multiple", "3", "--dry-run", "--json"];
    let (code, stdout, stderr) = with_file(&dry);
    assert_eq!(code, Some(0), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((plan["requests"].as_u64(), plan["sends"].as_u64()), (Some(100), Some(300)), "{plan}");
    assert_eq!(plan["workers"].as_array().unwrap().len(), 1, "{plan}");
    let (mean, peak) = (plan["mean_rate"].as_f64().unwrap(), plan["peak_rate"].as_f64().unwrap());
    assert!((60.0..=90.0).contains(&peak) && (60.0..=90.0).contains(&mean), "{plan}");
    assert!(plan["duration_s"].as_f64().unwrap() > 3.5, "{plan}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.sink.report().requests, 0, "a dry run sends nothing");

    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("http://{}", other.local_addr().unwrap());
    let (code, stdout, stderr) = with_file(&["replay", "--recording", &recording.id, "--target", &other_url]);
    assert_eq!(code, Some(1), "{stdout}");
    let list = format!("{}, *.staging.internal", cluster.sink.addr);
    assert!(
        stderr.contains(&format!("target {other_url} is not allowed: this controller only replays to {list}")),
        "{stderr}"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), other.accept()).await.is_err(),
        "nothing reached the other port"
    );
    let (code, stdout, stderr) = with_file(&["replay", "--recording", &recording.id, "--target", &cluster.sink_url()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stderr.contains("warning") && !stdout.contains("warning"), "an allow-list, no warning: {stderr}");
    assert_eq!(cluster.sink.report().requests, 20);
    let (_, replays, _) = with_file(&["replays", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&replays).unwrap().as_array().unwrap().len(), 1, "{replays}");

    let http = cluster.controllers[0].http_addr().unwrap();
    let bearer = format!("Bearer {token}");
    assert_eq!(http_get(http, "/api/replays", None).await.0, 401);
    assert_eq!(http_get(http, "/api/replays", Some("Bearer nope")).await.0, 401);
    let (code, body) = http_get(http, "/api/replays", Some(&bearer)).await;
    assert_eq!(code, 200);
    assert!(body.contains(&recording.id), "{body}");
    for open in ["/metrics", "/healthz", "/"] {
        assert_eq!(http_get(http, open, None).await.0, 200, "{open}");
    }
    let daemons = cluster.controllers.iter().chain(&cluster.workers);
    for daemon in daemons {
        let log = std::fs::read_to_string(daemon.log_path()).unwrap();
        assert!(!log.contains(&token), "the token is in {}'s log", daemon.label());
    }
}

/// GET `path` from `addr` with an optional Authorization header: status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
}
