//! The real `ctl` binary's everyday habits against an in-process controller and worker
//! (file catalog and log, a target on loopback): recordings by name, the replay id as
//! soon as a replay starts, `ctl recordings delete` and what it refuses (behind the token
//! and the leader check like every change), empty lists that say so, and completion.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use reprise_controller::{Controller, ControllerConfig};
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_proto::v1::{MessageKind, RecordingRef, TrafficRecord};
use reprise_store::log::NewRecord;
use reprise_worker::{Worker, WorkerConfig};

const TOKEN: &str = "habits-token";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `ctl --controller <controller> args` with `token` (if any) in $REPRISE_TOKEN.
async fn ctl(controller: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ctl"));
    command.arg("--controller").arg(controller).args(args);
    command.env_remove("REPRISE_CONTROLLER").env_remove("REPRISE_TOKEN").env_remove("REPRISE_TOKEN_FILE");
    if let Some(token) = token {
        command.env("REPRISE_TOKEN", token);
    }
    let out = tokio::task::spawn_blocking(move || command.output().expect("ctl runs")).await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what}: {}{}", run.stdout, run.stderr);
}

fn refused(run: &Run, code: i32, says: &str) {
    assert_eq!(run.code, code, "expected {says:?}: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(says), "stderr {:?} must say {says:?}", run.stderr);
}

/// An HTTP/1.1 target answering `200 ok`, counting requests.
async fn target() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok")))) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, count)
}

/// `n` GET requests into the log, 10 ms apart on the capture clock.
async fn write_traffic(log_url: &str, n: usize) {
    let log = reprise_store::open_log(log_url).await.unwrap();
    let base = reprise_store::now_ns();
    let records = (0..n)
        .map(|i| {
            let record = TrafficRecord {
                format_version: 1,
                connection_id: format!("c{i}"),
                kind: MessageKind::Request as i32,
                timestamp_ns: base + i as i64 * 10_000_000,
                http: format!("GET /items/{i} HTTP/1.1\r\nHost: shop\r\n\r\n").into_bytes().into(),
                ..Default::default()
            };
            NewRecord {
                key: Bytes::from(record.connection_id.clone()),
                timestamp_ms: reprise_store::now_ms(),
                payload: Bytes::from(prost::Message::encode_to_vec(&record)),
            }
        })
        .collect();
    log.append(records).await.unwrap();
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctl_takes_recordings_by_name_says_the_replay_id_deletes_and_says_when_lists_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, log) =
        (format!("file://{}/catalog", dir.path().display()), format!("file://{}/log", dir.path().display()));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = ControllerConfig {
        partitions: 2,
        start_lead_ms: 500,
        token_file: Some(token_file),
        ..ControllerConfig::local(&catalog, &log)
    };
    let controller = Controller::start(config.clone()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(15), controller.leading()).await.unwrap(),
        "a lone controller leads"
    );
    let url = format!("http://{}", controller.grpc_addr);
    let token = Some(TOKEN);

    // Empty lists say so (and what to do); their JSON stays an empty array.
    for (list, says) in [
        ("recordings", "no recordings (start one: ctl record start --name NAME)"),
        ("workers", "no live workers"),
        ("captures", "no live capture nodes"),
        ("replays", "no replays (start one: ctl replay --recording ID|NAME --target URL)"),
    ] {
        let run = ctl(&url, token, &[list]).await;
        ok(&run, list);
        assert!(run.stdout.starts_with(says), "ctl {list}: {:?}", run.stdout);
        assert_eq!(json(&ctl(&url, token, &[list, "--json"]).await), serde_json::json!([]), "ctl {list} --json");
    }
    assert_eq!(json(&ctl(&url, token, &["recordings", "list", "--json"]).await), serde_json::json!([]));

    let worker = Worker::start(WorkerConfig::local(&catalog, "habits-w1")).await.unwrap();
    let (target_addr, answered) = target().await;
    let target = format!("http://{target_addr}");

    // Recorded, stopped and replayed by its name alone.
    let started = ctl(&url, token, &["record", "start", "--name", "checkout"]).await;
    ok(&started, "record start");
    let checkout = started.stdout.trim().to_string();
    write_traffic(&log, 20).await;
    ok(&ctl(&url, token, &["record", "stop", "checkout"]).await, "record stop by name");
    let replayed = ctl(&url, token, &["replay", "--recording", "checkout", "--target", &target]).await;
    ok(&replayed, "replay by name");
    let replays = json(&ctl(&url, token, &["replays", "--json"]).await);
    let (replay_id, recording_id) = (replays[0]["id"].as_str().unwrap(), replays[0]["recording_id"].as_str().unwrap());
    assert_eq!(recording_id, checkout, "the name resolved to the recording's id");
    let started_line = format!("replay {replay_id} started (ctl status {replay_id}, ctl cancel {replay_id})");
    assert!(replayed.stderr.lines().any(|l| l == started_line), "stderr {:?} lacks {started_line:?}", replayed.stderr);
    assert!(replayed.stdout.contains("responses   ok 20  4xx/5xx 0  (2xx 20)"), "{}", replayed.stdout);
    // Endpoints fold ids into `{id}`; a map printed as JSON or Debug would quote its keys.
    assert!(!replayed.stdout.contains('"'), "no JSON in the summary: {}", replayed.stdout);
    assert_eq!(answered.load(Ordering::Relaxed), 20);
    // --json stays one JSON object on stdout, and the id line stays off.
    let as_json = ctl(&url, token, &["replay", "--recording", "checkout", "--target", &target, "--json"]).await;
    ok(&as_json, "replay --json");
    assert_eq!(json(&as_json)["sent"], 20);
    assert!(!as_json.stderr.contains("started"), "{}", as_json.stderr);

    // A second recording of the same name: the name no longer says which (exit 2), the id does.
    let again = ctl(&url, token, &["record", "start", "--name", "checkout"]).await;
    ok(&again, "record start");
    let live = again.stdout.trim().to_string();
    let ambiguous = ctl(&url, token, &["replay", "--recording", "checkout", "--target", &target]).await;
    refused(&ambiguous, 2, "2 recordings are named checkout; give one of their ids");
    assert!(ambiguous.stderr.contains(&checkout) && ambiguous.stderr.contains(&live), "{}", ambiguous.stderr);
    refused(&ctl(&url, token, &["recordings", "delete", "nope"]).await, 1, "error: no recording nope");

    // A recording still recording is kept, with what to do.
    let refused_live = ctl(&url, token, &["recordings", "delete", &live]).await;
    refused(&refused_live, 1, &format!("recording {live} is still recording; stop it first (ctl record stop {live})"));
    write_traffic(&log, 5).await;
    ok(&ctl(&url, token, &["record", "stop", &live]).await, "record stop");

    // So is one an unfinished replay uses, naming the replay.
    let endless =
        ctl(&url, token, &["replay", "--recording", &live, "--target", &target, "--loop", "0", "--detach"]).await;
    ok(&endless, "endless replay");
    let endless_id = endless.stdout.trim();
    let in_use = ctl(&url, token, &["recordings", "delete", &live]).await;
    refused(&in_use, 1, &format!("recording {live} is in use by replay {endless_id}"));
    ok(&ctl(&url, token, &["cancel", endless_id]).await, "cancel");

    // Deleting changes the catalog: the token and the leader are required, as for a stop.
    let mut tokenless = ControllerClient::connect(url.clone()).await.unwrap();
    let unauthenticated = tokenless.delete_recording(RecordingRef { id: live.clone() }).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated, "{unauthenticated}");
    let standby = Controller::start(config).await.unwrap();
    let standby_url = format!("http://{}", standby.grpc_addr);
    refused(&ctl(&standby_url, token, &["recordings", "delete", &live]).await, 1, "is a standby");

    // Deleted by id, then (the only one left of that name) by name.
    let deleted = ctl(&url, token, &["recordings", "delete", &live]).await;
    ok(&deleted, "delete by id");
    assert!(deleted.stdout.contains(&format!("deleted recording {live} (checkout)")), "{}", deleted.stdout);
    assert!(deleted.stdout.contains("its traffic stays in the log"), "{}", deleted.stdout);
    ok(&ctl(&url, token, &["recordings", "delete", "checkout"]).await, "delete by name");
    let listed = ctl(&url, token, &["recordings"]).await;
    ok(&listed, "recordings");
    assert!(listed.stdout.starts_with("no recordings"), "both deleted: {}", listed.stdout);
    let marks = reprise_store::open_log(&log).await.unwrap().watermarks().await.unwrap();
    let kept: i64 = marks.iter().map(|m| m.high - m.low).sum();
    assert_eq!(kept, 25, "the traffic stays in the log");

    standby.shutdown().await;
    worker.shutdown().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn ctl_prints_shell_completion_without_a_controller() {
    // Nothing listens at port 9: completion must not need a controller.
    let bash = ctl("http://127.0.0.1:9", None, &["completion", "bash"]).await;
    ok(&bash, "completion bash");
    assert!(bash.stdout.contains("_ctl()") && bash.stdout.contains("complete -F _ctl"), "{}", bash.stdout);
    assert!(bash.stdout.contains("delete"), "subcommands complete: {}", bash.stdout);
    for shell in ["zsh", "fish"] {
        let run = ctl("http://127.0.0.1:9", None, &["completion", shell]).await;
        ok(&run, shell);
        assert!(run.stdout.contains("recordings"), "{shell}: {}", run.stdout);
    }
    refused(&ctl("http://127.0.0.1:9", None, &["completion", "tcsh"]).await, 2, "invalid value 'tcsh'");
}
