//! Safe load, as a user meets it with real processes (controller, workers, ctl) on a
//! private etcd and broker: thresholds and exit codes, Ctrl-C, the target allow-list.
//! Needs the binaries built (`cargo test --workspace --all-targets` builds them).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reprise_loadtests::procs::{self, ProcessCluster, ProcessClusterConfig};
use reprise_loadtests::synth::Profile;

fn profile(requests: u64, span: Duration) -> Profile {
    Profile::constant(requests, reprise_store::now_ns() - 60_000_000_000, span.as_nanos() as i64, 8, 16)
}

/// `ctl --controller <cluster's controllers> args...`, its output piped.
fn ctl(cluster: &ProcessCluster, args: &[&str]) -> Child {
    let mut command = Command::new(procs::binary("ctl").unwrap());
    command.arg("--controller").arg(cluster.controller_addresses()).args(args);
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
    let (code, stdout, stderr) = output(ctl(&cluster, &["replay", "--recording", &short.id, "--target", &closed]));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("BREACHED    no request succeeded: 50 sends, connect 50"), "{stdout}");
    assert!(stdout.contains("latency ms  - (no response)"), "{stdout}");
    assert!(stderr.contains("warning: the controller has no --allow-target list"), "{stderr}");

    let long = cluster.record(&profile(2_000, Duration::from_secs(20))).await.unwrap();
    let followed = ctl(&cluster, &["replay", "--recording", &long.id, "--target", &cluster.sink_url()]);
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

/// `--allow-target` on the controller: a replay to the sink's address goes ahead, with no
/// warning; one to another port is refused before anything is sent, naming the list, and
/// that port sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_replays_only_to_its_allowed_targets() {
    let config = ProcessClusterConfig {
        controller_flags: vec![
            "--allow-target".into(),
            "{sink}".into(),
            "--allow-target".into(),
            "*.staging.internal".into(),
        ],
        ..ProcessClusterConfig::new("allow", 1, 1)
    };
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let recording = cluster.record(&profile(20, Duration::from_millis(500))).await.unwrap();
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("http://{}", other.local_addr().unwrap());
    let (code, stdout, stderr) =
        output(ctl(&cluster, &["replay", "--recording", &recording.id, "--target", &other_url]));
    assert_eq!(code, Some(1), "{stdout}");
    let expected = format!(
        "target {other_url} is not allowed: this controller only replays to {}, *.staging.internal",
        cluster.sink.addr
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), other.accept()).await.is_err(),
        "nothing reached the other port"
    );

    let (code, stdout, stderr) =
        output(ctl(&cluster, &["replay", "--recording", &recording.id, "--target", &cluster.sink_url()]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stderr.contains("warning") && !stdout.contains("warning"), "{stderr}");
    assert_eq!(cluster.sink.report().requests, 20);
}
