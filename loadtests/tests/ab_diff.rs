//! Response diffs end to end, through the real `ctl` and an in-process cluster on the
//! real broker and etcd: an A/B shadow (a target, a candidate that regressed one JSON
//! field on one endpoint, a baseline of the target's version), and `--compare` of a
//! regressed target against the responses tcpdump recorded from real clients. `ctl diff`
//! must name exactly that endpoint and that field, and nothing else.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reprise_loadtests::cluster::TestCluster;
use reprise_loadtests::synth::Profile;
use serde_json::{Value, json};

/// A small JSON shop: `GET /items/{id}` and `POST /items/{id}` answer the item, with the
/// time it was served (different on every response, as real services' are). `price` is
/// the POST's price: the candidate's regression.
struct Shop {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Shop {
    async fn start(price: u64) -> Shop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let id = request.uri().path().rsplit('/').next().unwrap_or("").to_string();
                        let served_at = reprise_store::now_ns();
                        let body = match *request.method() {
                            hyper::Method::POST => {
                                json!({"id": id, "price": price, "currency": "EUR", "served_at": served_at})
                            }
                            _ => json!({"id": id, "name": "item", "tags": ["a", "b"], "served_at": served_at}),
                        };
                        let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                        response.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        response.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                        async { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Shop { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (endpoint, compared, differing, fields, noise): a row of `ctl diff --json`.
type DiffRow = (String, u64, u64, Vec<String>, Vec<String>);

fn rows(diff: &Value) -> Vec<DiffRow> {
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    diff["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let count = |k: &str| e[k].as_u64().unwrap();
            (
                e["endpoint"].as_str().unwrap().into(),
                count("compared"),
                count("differing"),
                strings(&e["fields"]),
                strings(&e["noise"]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ab_replay_names_exactly_the_regressed_endpoint_and_field() {
    let (target, candidate, baseline) = (Shop::start(10).await, Shop::start(11).await, Shop::start(10).await);
    let cluster = TestCluster::start("kafka_etcd", "abdiff", 2, |_| {}).await.unwrap();
    let log_url = cluster.log_url.clone();
    let n = 300;
    let profile = Profile::constant(n, reprise_store::now_ns() - 60_000_000_000, 1_000_000_000, 8, 16);
    let recording = cluster.record(&log_url, &profile).await.unwrap();
    let (posts, gets) = (n / 3, n - n / 3);
    let (post, get) = ("POST /items/{id}".to_string(), "GET /items/{id}".to_string());
    let price = vec!["$.price".to_string()];
    let noise = vec!["$.served_at".to_string()];

    // With a baseline: served_at differs between two instances of one version, so it is
    // noise; price differs only on the candidate's POSTs.
    let ab = ["replay", "--recording", &recording.id, "--target", &target.url(), "--candidate", &candidate.url()];
    let summary = common::ctl(&cluster, &[&ab[..], &["--baseline", &baseline.url()]].concat()).await;
    assert_eq!((summary["state"].as_str(), summary["sent"].as_u64()), (Some("done"), Some(n)), "{summary}");
    let id = summary["id"].as_str().unwrap().to_string();
    let diff = common::ctl(&cluster, &["diff", &id]).await;
    assert_eq!(
        rows(&diff),
        [(post.clone(), posts, posts, price.clone(), noise.clone()), (get.clone(), gets, 0, vec![], noise.clone())],
        "{diff}"
    );
    let sample = &diff["endpoints"][0]["samples"][0];
    assert_eq!(
        (sample["field"].as_str(), sample["expected"].as_str(), sample["actual"].as_str()),
        (Some("$.price"), Some("10"), Some("11"))
    );
    assert!(sample["request"].as_str().unwrap().starts_with("/items/"), "{sample}");
    // The stats API serves the same document.
    let path = format!("/api/replays/{id}/diff");
    let api = reprise_loadtests::http::get(cluster.controller.http_addr, &path, &[]).await.unwrap();
    assert_eq!(api.json().unwrap(), diff);

    // Without a baseline, the volatile field shows on every request...
    let summary = common::ctl(&cluster, &ab).await;
    let diff = common::ctl(&cluster, &["diff", summary["id"].as_str().unwrap()]).await;
    let served_at_price = vec!["$.served_at".to_string(), "$.price".to_string()];
    let mut got = rows(&diff);
    got.iter_mut().for_each(|row| row.3.sort());
    let mut want_post = served_at_price.clone();
    want_post.sort();
    // (most differing requests first)
    assert_eq!(
        got,
        [(get.clone(), gets, gets, noise.clone(), vec![]), (post.clone(), posts, posts, want_post, vec![])]
    );
    // ... until --diff-ignore leaves it out.
    let summary = common::ctl(&cluster, &[&ab[..], &["--diff-ignore", "$.served_at"]].concat()).await;
    let diff = common::ctl(&cluster, &["diff", summary["id"].as_str().unwrap()]).await;
    assert_eq!(rows(&diff), [(post, posts, posts, price, vec![]), (get, gets, 0, vec![], vec![])]);
    cluster.stop().await;
}

/// Real clients against the shop: GETs over one keep-alive connection, POSTs each on
/// their own.
fn shop_clients(base: &str, gets: u64, posts: u64) {
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl").args(["-sS", "--fail", "-o", "/dev/null"]).args(args).output();
        let out = out.expect("curl is installed (deploy/local/setup.sh)");
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let urls: Vec<String> = (0..gets).map(|i| format!("{base}/items/{i}")).collect();
    curl(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    for i in 0..posts {
        curl(&["-H", "Content-Type: application/json", "-d", r#"{"qty":1}"#, &format!("{base}/items/{}", 100 + i)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compare_with_recorded_responses_names_exactly_the_regressed_endpoint_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let (recorded_version, served) =
        (Shop::start(10).await, std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)));
    let (gets, posts) = (20, 10);
    let pcap = dir.path().join("shop.pcap");
    let base = recorded_version.url();
    let done = served.clone();
    let clients = move || {
        shop_clients(&base, gets, posts);
        done.store((gets + posts) as usize, std::sync::atomic::Ordering::SeqCst);
    };
    common::tcpdump_while(recorded_version.addr.port(), &pcap, clients, || {
        served.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;

    let cluster = TestCluster::start("kafka_etcd", "compare", 2, |_| {}).await.unwrap();
    let mut config = reprise_capture::CaptureConfig::for_log(&cluster.log_url);
    config.pcap_file = Some(pcap);
    config.port = vec![recorded_version.addr.port()];
    config.track_responses = true;
    config.node = Some("pcap".into());
    config.spool_dir = Some(dir.path().join("spool"));
    config.catalog = Some(cluster.catalog_url.clone());
    config.recording = Some("shop".into());
    let report = reprise_capture::run(config, tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert_eq!((report.requests, report.responses), (gets + posts, gets + posts));
    let recording = report.recording_id.unwrap();

    // The new version regressed the POST's price; a second instance of the recorded
    // version tells what differs anyway (the time each response was served).
    let (regressed, baseline) = (Shop::start(11).await, Shop::start(10).await);
    let replay = ["replay", "--recording", &recording, "--target", &regressed.url(), "--compare"];
    let summary = common::ctl(&cluster, &[&replay[..], &["--baseline", &baseline.url()]].concat()).await;
    assert_eq!((summary["state"].as_str(), summary["sent"].as_u64()), (Some("done"), Some(gets + posts)), "{summary}");
    assert_eq!(summary["uncompared"].as_u64().unwrap_or(0), 0, "{summary}");
    let diff = common::ctl(&cluster, &["diff", summary["id"].as_str().unwrap()]).await;
    let (noise, price) = (vec!["$.served_at".to_string()], vec!["$.price".to_string()]);
    assert_eq!(
        rows(&diff),
        [
            ("POST /items/{id}".to_string(), posts, posts, price, noise.clone()),
            ("GET /items/{id}".to_string(), gets, 0, vec![], noise)
        ],
        "{diff}"
    );
    let sample = &diff["endpoints"][0]["samples"][0];
    assert_eq!((sample["expected"].as_str(), sample["actual"].as_str()), (Some("10"), Some("11")), "{sample}");
    cluster.stop().await;
}
