//! A worker's life in the catalog, on real etcd (`etcd::*`) and the file catalog
//! (`file::*`): registered with the port it really got, re-registered when its lease is
//! lost, gone at a clean shutdown; and its gRPC face refuses a foreign protocol version.

use std::time::Duration;

use reprise_proto::v1::AssignRequest;
use reprise_proto::v1::worker_client::WorkerClient;
use reprise_store::Catalog;
use reprise_store::schema::WorkerInfo;
use reprise_worker::{Worker, WorkerConfig};

struct Setup {
    catalog_url: String,
    _dir: Option<tempfile::TempDir>,
}

fn setup(kind: &str) -> Setup {
    match kind {
        "etcd" => Setup { catalog_url: reprise_store::testing::etcd_catalog_url("worker"), _dir: None },
        _ => {
            let dir = tempfile::tempdir().unwrap();
            Setup { catalog_url: format!("file://{}/catalog", dir.path().display()), _dir: Some(dir) }
        }
    }
}

fn config(catalog: &str) -> WorkerConfig {
    WorkerConfig {
        config: None,
        catalog: catalog.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        name: Some("w-test".into()),
        advertise: None,
        labels: vec![("zone".into(), "a".into())],
        controller_grace_secs: 15.0,
        source_ip: None,
        dispatch_threads: 0,
        lease_ttl_secs: 2,
        metrics: None,
        tls: Default::default(),
        logging: Default::default(),
    }
}

async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn registers_reregisters_and_deregisters(kind: &str) {
    let Setup { catalog_url, _dir } = setup(kind);
    let catalog = Catalog::open(&catalog_url).await.unwrap();
    let worker = Worker::start(config(&catalog_url)).await.unwrap();
    assert_ne!(worker.local_addr.port(), 0);
    let entry = catalog.get::<WorkerInfo>("w-test").await.unwrap().expect("registered at start");
    assert_eq!(entry.value.address, worker.local_addr.to_string(), "registers the port it actually got");
    assert_eq!(entry.value.labels.get("zone").map(String::as_str), Some("a"));

    // The lease is lost (as after a catalog outage longer than its TTL): the entry goes,
    // then the worker registers again under a new lease.
    let lease = catalog.backend().get("workers/w-test").await.unwrap().unwrap().lease.unwrap();
    catalog.backend().revoke_lease(lease).await.unwrap();
    assert!(catalog.get::<WorkerInfo>("w-test").await.unwrap().is_none());
    let back = eventually(|| async {
        catalog.backend().get("workers/w-test").await.unwrap().is_some_and(|kv| kv.lease.is_some_and(|l| l != lease))
    })
    .await;
    assert!(back, "the worker must re-register after losing its lease");

    worker.shutdown().await;
    assert!(catalog.get::<WorkerInfo>("w-test").await.unwrap().is_none(), "a clean shutdown deregisters at once");
}

async fn a_live_name_is_not_taken_twice(kind: &str) {
    let Setup { catalog_url, _dir } = setup(kind);
    let catalog = Catalog::open(&catalog_url).await.unwrap();
    let first = Worker::start(config(&catalog_url)).await.unwrap();
    let error = Worker::start(config(&catalog_url)).await.err().expect("the name is live");
    let message = format!("{error:#}");
    assert!(message.contains("already live") && message.contains(&first.local_addr.to_string()), "{message}");
    let entry = catalog.get::<WorkerInfo>("w-test").await.unwrap().expect("the first stays registered");
    assert_eq!(entry.value.address, first.local_addr.to_string());
    first.shutdown().await;
    let second = Worker::start(config(&catalog_url)).await.expect("the name is free again");
    second.shutdown().await;
}

async fn refuses_a_foreign_protocol_version(kind: &str) {
    let Setup { catalog_url, _dir } = setup(kind);
    let worker = Worker::start(config(&catalog_url)).await.unwrap();
    let mut client = WorkerClient::connect(format!("http://{}", worker.local_addr)).await.unwrap();
    let status = client
        .assign(AssignRequest { protocol_version: 99, replay_id: "r".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("protocol version mismatch"), "{}", status.message());
    worker.shutdown().await;
}

reprise_store::on_backends!(
    [etcd => "etcd", file => "file"]
    [
        registers_reregisters_and_deregisters,
        a_live_name_is_not_taken_twice,
        refuses_a_foreign_protocol_version
    ]
);

#[test]
fn help_describes_the_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprise-worker")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--catalog", "--listen", "--advertise", "--controller-grace-secs", "--config"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_reprise-worker"))
        .args(["--listen", "nowhere"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
