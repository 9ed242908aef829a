//! Safe load, as a user meets it with real processes (controller, workers, ctl) on a
//! private etcd and broker: thresholds and exit codes, Ctrl-C, the token, the target
//! allow-list, TLS.
//! Needs the binaries built (`cargo test --workspace --all-targets` builds them).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reprise_loadtests::pki::{CertFiles, TestCa};
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

/// The issue's guarded controller: `--token-file` and `--allow-target <sink>`. ctl without
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
    assert_eq!(http_call(http, "GET", "/api/replays", None).await.0, 401);
    assert_eq!(http_call(http, "GET", "/api/replays", Some("Bearer nope")).await.0, 401);
    let (code, body) = http_call(http, "GET", "/api/replays", Some(&bearer)).await;
    assert_eq!(code, 200);
    assert!(body.contains(&recording.id), "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cancel = format!("/api/replays/{}/cancel", listed[0]["id"].as_str().unwrap());
    assert_eq!(http_call(http, "POST", &cancel, None).await.0, 401, "the dashboard's controls need the token too");
    assert_eq!(http_call(http, "POST", &cancel, Some(&bearer)).await.0, 409, "with it: the ended replay stays ended");
    for open in ["/metrics", "/healthz", "/"] {
        assert_eq!(http_call(http, "GET", open, None).await.0, 200, "{open}");
    }
    let daemons = cluster.controllers.iter().chain(&cluster.workers);
    for daemon in daemons {
        let log = std::fs::read_to_string(daemon.log_path()).unwrap();
        assert!(!log.contains(&token), "the token is in {}'s log", daemon.label());
    }
}

/// `method path` to `addr` with an optional Authorization header: status and body.
async fn http_call(addr: std::net::SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = authorization.map(|a| ("Authorization", a)).into_iter().collect();
    let got = reprise_loadtests::http::request(addr, method, path, &headers).await.unwrap();
    (got.status, got.body)
}

/// TLS everywhere but the broker (item 2): etcd asks for client certificates, and the
/// controller, the workers and ctl talk mutual TLS with certificates of one CA. ctl with
/// its certificate replays; ctl without TLS, without a certificate, with a certificate
/// of another CA, or trusting another CA fails with one line that says which; a worker's
/// port refuses callers the CA did not certify; a worker whose own certificate comes from
/// another CA is refused by the controller, by name, and nothing is sent; a catalog
/// client without etcd's certificates is told what to add.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_tls_lets_in_only_what_its_ca_signed() {
    let config = ProcessClusterConfig { tls: true, ..ProcessClusterConfig::new("tls", 1, 2) };
    let cluster = ProcessCluster::start(&config).await.unwrap();
    let tls = cluster.tls().unwrap();
    let recording = cluster.record(&profile(30, Duration::from_millis(500))).await.unwrap();
    let replay = ["replay", "--recording", &recording.id, "--target", &cluster.sink_url()];
    let ctl_with = |tls_flags: &[String], args: &[&str]| {
        let all: Vec<&str> = tls_flags.iter().map(String::as_str).chain(args.iter().copied()).collect();
        output(ctl(&cluster, &all, &[]))
    };
    let (code, stdout, stderr) = ctl_with(&tls.ctl_flags(), &replay);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(cluster.sink.report().requests, 30);

    let pki = tempfile::tempdir().unwrap();
    let rogue_ca = TestCa::new(pki.path(), "rogue").unwrap();
    let intruder = rogue_ca.issue("intruder").unwrap();
    let ca = tls.ca.ca_file.display().to_string();
    let wants_certificate =
        "(the controller wants a client certificate signed by its CA: check --tls-cert and --tls-key)";
    let refusals: [(&str, Vec<String>, &str); 4] = [
        ("plain gRPC", Vec::new(), "(if the controller uses TLS, pass --tls-ca)"),
        ("no certificate", vec!["--tls-ca".into(), ca.clone()], wants_certificate),
        ("another CA's certificate", intruder.flags(&tls.ca.ca_file), wants_certificate),
        (
            "trusting another CA",
            tls.ctl.flags(&rogue_ca.ca_file),
            "(the controller's certificate is not one --tls-ca vouches for)",
        ),
    ];
    for (case, flags, hint) in refusals {
        let (code, _, stderr) = ctl_with(&flags, &["workers"]);
        let line = stderr.trim();
        assert_eq!(code, Some(1), "{case}: {stderr}");
        assert!(line.starts_with("error: cannot reach the controller at http://127.0.0.1:"), "{case}: {stderr}");
        assert!(line.ends_with(hint) && !line.contains('\n'), "{case}: {stderr}");
    }

    // A worker's own port: only callers with a certificate of the cluster's CA.
    let worker = cluster.workers[0].grpc_addr();
    let heartbeat = |identity: Option<&reprise_loadtests::pki::CertFiles>, trusted: &std::path::Path| {
        let args = reprise_process::tls::TlsArgs {
            cert: identity.map(|i| i.cert.clone()),
            key: identity.map(|i| i.key.clone()),
            ca: Some(trusted.to_path_buf()),
        };
        let tls = args.client().unwrap().unwrap();
        async move {
            let endpoint = tonic::transport::Channel::from_shared(format!("https://{worker}")).unwrap();
            let channel = endpoint.tls_config(tls).unwrap().connect().await?;
            let request = reprise_proto::v1::HeartbeatRequest { controller_id: "test".into(), ..Default::default() };
            reprise_proto::v1::worker_client::WorkerClient::new(channel).heartbeat(request).await?;
            anyhow::Ok(())
        }
    };
    heartbeat(Some(&tls.ctl), &tls.ca.ca_file).await.expect("a certificate of the cluster's CA is let in");
    assert!(heartbeat(None, &tls.ca.ca_file).await.is_err(), "no certificate, no call");
    assert!(heartbeat(Some(&intruder), &tls.ca.ca_file).await.is_err(), "another CA's certificate, no call");

    // A worker certified by another CA registers (it holds etcd's client certificate)
    // but no controller takes it: a replay over it fails, naming it, and sends nothing.
    let flags: Vec<String> =
        [intruder.flags(&rogue_ca.ca_file), ["--label".to_string(), "role=intruder".to_string()].to_vec()].concat();
    let _intruder = procs::Daemon::worker("intruder", &cluster.catalog_url, &flags).unwrap().ready().await.unwrap();
    procs::wait_registered(&cluster.catalog_url, &["intruder".to_string()], 0, Duration::from_secs(20)).await.unwrap();
    let over_intruder = [&replay[..], &["--worker-label", "role=intruder"]].concat();
    let (code, _, stderr) = ctl_with(&tls.ctl_flags(), &over_intruder);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("worker intruder (127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("refused the replay: invalid peer certificate: UnknownIssuer"), "{stderr}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.sink.report().requests, 30, "nothing was sent through the intruder");

    // etcd itself: a catalog client without its certificates is told what to add.
    let plain = cluster.catalog_url.split_once('?').unwrap().0;
    let refused = match reprise_store::Catalog::open(plain).await {
        Ok(catalog) => catalog.list::<reprise_store::schema::WorkerInfo>().await.map(|_| ()).unwrap_err(),
        Err(e) => e,
    };
    assert!(
        refused.to_string().contains("name them in the catalog URL: ?tls_ca=PATH&tls_cert=PATH&tls_key=PATH"),
        "{refused}"
    );
}

/// A TLS front on a free loopback port that asks for a client certificate of `ca`,
/// presents `cert`, and forwards each connection it lets in to `upstream`: how many
/// connections it let in.
async fn tls_front(ca: &TestCa, cert: &CertFiles, upstream: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&ca.ca_file).unwrap()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(&cert.cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admitted) = (listener.local_addr().unwrap(), Arc::new(AtomicUsize::new(0)));
    let counter = admitted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter, upstream) = (acceptor.clone(), counter.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(stream).await else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(mut broker) = tokio::net::TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            });
        }
    });
    (addr, admitted)
}

/// Kafka's SSL settings reach the broker connection through the log URL's parameters
/// (item 2). The local broker has no TLS listener, so a TLS front that asks for client
/// certificates forwards to it. Metadata calls go over TLS with the client's certificate,
/// checked both ways; a certificate of another CA is refused by the front, and a log
/// trusting another CA refuses the front. (Data calls go to the broker's advertised
/// plaintext address, so only metadata can pass the front; librdkafka logs the TLS
/// failure's reason, the error says only that the broker could not be reached.)
#[tokio::test]
async fn kafka_ssl_settings_reach_the_broker_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, rogue_ca) = (TestCa::new(dir.path(), "kafka").unwrap(), TestCa::new(dir.path(), "rogue").unwrap());
    let (broker_cert, client, intruder) =
        (ca.issue("broker").unwrap(), ca.issue("capture").unwrap(), rogue_ca.issue("intruder").unwrap());
    let plain_url = reprise_store::testing::kafka_log_url("ssl");
    let log = reprise_store::open_log(&plain_url).await.unwrap();
    assert_eq!(log.ensure_topic(3).await.unwrap(), 3);
    let (bootstrap, topic) = plain_url.trim_start_matches("kafka://").split_once('/').unwrap();
    let (front, admitted) = tls_front(&ca, &broker_cert, bootstrap.to_string()).await;

    let ssl_url = |trusted: &TestCa, identity: &CertFiles| {
        format!(
            "kafka://{front}/{topic}?security.protocol=ssl&ssl.ca.location={}&ssl.certificate.location={}\
             &ssl.key.location={}&timeout_ms=3000",
            trusted.ca_file.display(),
            identity.cert.display(),
            identity.key.display()
        )
    };
    // librdkafka may send a metadata request to the broker's advertised (plaintext)
    // address instead, which fails: a fresh client per try, and one success proves the
    // way through the front.
    let metadata_over = |url: String| async move {
        let mut last = None;
        for _ in 0..5 {
            match reprise_store::open_log(&url).await.unwrap().ensure_topic(1).await {
                Ok(partitions) => return Ok(partitions),
                Err(e) => last = Some(e.to_string()),
            }
        }
        Err(last.unwrap())
    };
    assert_eq!(metadata_over(ssl_url(&ca, &client)).await, Ok(3), "the topic's metadata, read over TLS");
    assert!(admitted.load(Ordering::SeqCst) >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = admitted.load(Ordering::SeqCst);
    for (case, url) in
        [("another CA's certificate", ssl_url(&ca, &intruder)), ("trusting another CA", ssl_url(&rogue_ca, &client))]
    {
        let refused = metadata_over(url).await.unwrap_err();
        assert!(refused.contains("BrokerTransportFailure"), "{case}: {refused}");
    }
    assert_eq!(admitted.load(Ordering::SeqCst), before, "neither got through the front");
}
