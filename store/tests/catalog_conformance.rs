//! One conformance suite for the catalog, run against the real etcd (`etcd::*`) and the
//! file catalog (`file::*`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use reprise_store::Catalog;
use reprise_store::catalog::Change;
use reprise_store::schema::{PartitionRange, Recording, RecordingState, WorkerInfo};

struct Fixture {
    catalog: Catalog,
    _dir: Option<tempfile::TempDir>,
}

async fn fresh(kind: &str, name: &str) -> Fixture {
    match kind {
        "etcd" => {
            let url = reprise_store::testing::etcd_catalog_url(name);
            Fixture { catalog: Catalog::open(&url).await.unwrap(), _dir: None }
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("file://{}/catalog", dir.path().display());
            Fixture { catalog: Catalog::open(&url).await.unwrap(), _dir: Some(dir) }
        }
    }
}

fn recording(id: &str) -> Recording {
    Recording {
        id: id.into(),
        name: format!("name of {id}"),
        labels: BTreeMap::from([("env".into(), "test".into())]),
        log_url: "file:///tmp/log".into(),
        ranges: vec![PartitionRange { partition: 0, start: 3, end: 9 }],
        first_timestamp_ns: Some(1),
        last_timestamp_ns: Some(2),
        record_count: 6,
        bytes: Some(600),
        state: RecordingState::Complete.into(),
        missing_records: 0,
        created_at_ms: 1,
        stopped_at_ms: Some(2),
        ledger: None,
        capture_baseline: Vec::new(),
    }
}

fn worker(id: &str) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        address: "127.0.0.1:1".into(),
        version: "test".into(),
        protocol_version: 1,
        cores: 2,
        labels: BTreeMap::new(),
        started_at_ms: 1,
        controller_grace_ms: 15_000,
    }
}

/// Polls `check` until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn typed_documents_round_trip(kind: &str) {
    let f = fresh(kind, "docs").await;
    let c = &f.catalog;
    assert!(c.get::<Recording>("a").await.unwrap().is_none());
    for id in ["b", "a", "c"] {
        c.put(&recording(id)).await.unwrap();
    }
    c.put(&worker("w1")).await.unwrap();
    let got = c.get::<Recording>("a").await.unwrap().unwrap();
    assert_eq!(got.value, recording("a"));
    let ids: Vec<String> = c.list::<Recording>().await.unwrap().into_iter().map(|s| s.value.id).collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    assert_eq!(c.list::<WorkerInfo>().await.unwrap().len(), 1);
    assert!(c.delete::<Recording>("b").await.unwrap());
    assert!(!c.delete::<Recording>("b").await.unwrap());
    assert_eq!(c.list::<Recording>().await.unwrap().len(), 2);
    assert!(c.get::<Recording>("../escape").await.is_err());
}

async fn conditional_writes_detect_conflicts(kind: &str) {
    let f = fresh(kind, "cas").await;
    let c = &f.catalog;
    let mut r = recording("r");
    let rev1 = c.put_if(&r, 0).await.unwrap().expect("created");
    assert_eq!(c.put_if(&r, 0).await.unwrap(), None, "create-only must fail when it exists");
    r.name = "second".into();
    let rev2 = c.put_if(&r, rev1).await.unwrap().expect("updated at the right revision");
    assert!(rev2 > rev1);
    r.name = "stale".into();
    assert_eq!(c.put_if(&r, rev1).await.unwrap(), None, "a stale revision must lose");
    assert_eq!(c.get::<Recording>("r").await.unwrap().unwrap().value.name, "second");
}

async fn leased_entries_vanish_when_their_owner_stops(kind: &str) {
    let f = fresh(kind, "lease").await;
    let c = &f.catalog;
    let lease = c.lease(Duration::from_secs(2)).await.unwrap();
    c.put_leased(&worker("w"), &lease).await.unwrap();
    // Kept alive past several TTLs while the owner lives.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(c.get::<WorkerInfo>("w").await.unwrap().is_some(), "kept alive");
    assert!(!lease.is_lost());
    // The owner stops keeping it alive (as if it died): the entry goes with the TTL.
    drop(lease);
    let gone =
        eventually(Duration::from_secs(10), || async { c.get::<WorkerInfo>("w").await.unwrap().is_none() }).await;
    assert!(gone, "leased entry must disappear after its owner stops");
    assert!(c.list::<WorkerInfo>().await.unwrap().is_empty());
}

async fn revoked_leases_take_their_entries_at_once(kind: &str) {
    let f = fresh(kind, "revoke").await;
    let c = &f.catalog;
    let lease = c.lease(Duration::from_secs(30)).await.unwrap();
    c.put_leased(&worker("w"), &lease).await.unwrap();
    c.put(&worker("unleased")).await.unwrap();
    lease.revoke().await.unwrap();
    assert!(c.get::<WorkerInfo>("w").await.unwrap().is_none());
    assert!(c.get::<WorkerInfo>("unleased").await.unwrap().is_some());
}

async fn a_lease_revoked_elsewhere_is_reported_lost(kind: &str) {
    let f = fresh(kind, "lost").await;
    let c = &f.catalog;
    let lease = c.lease(Duration::from_secs(2)).await.unwrap();
    c.backend().revoke_lease(lease.id()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), lease.wait_lost()).await.expect("lease loss must be noticed");
    assert!(lease.is_lost());
}

async fn watches_see_puts_and_deletes(kind: &str) {
    let f = fresh(kind, "watch").await;
    let c = &f.catalog;
    c.put(&recording("before")).await.unwrap();
    let mut changes = Box::pin(c.watch::<Recording>().await.unwrap());
    let mut next = async || {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next()).await.expect("watch event");
        match change.unwrap().unwrap() {
            Change::Put(r) => format!("put {}", r.id),
            Change::Deleted(id) => format!("delete {id}"),
        }
    };
    c.put(&recording("x")).await.unwrap();
    assert_eq!(next().await, "put x");
    c.delete::<Recording>("x").await.unwrap();
    assert_eq!(next().await, "delete x");
    // Other collections are not seen.
    c.put(&worker("w")).await.unwrap();
    c.put(&recording("y")).await.unwrap();
    assert_eq!(next().await, "put y");
}

async fn one_leader_at_a_time_and_failover(kind: &str) {
    let f = fresh(kind, "elect").await;
    let c = f.catalog.clone();
    let lease_a = c.lease(Duration::from_secs(2)).await.unwrap();
    let a = c.campaign("controller", "a", &lease_a).await.unwrap();
    assert_eq!(c.leader("controller").await.unwrap(), Some(("a".to_string(), a.epoch)));

    let c2 = c.clone();
    let b = tokio::spawn(async move {
        let lease_b = c2.lease(Duration::from_secs(2)).await.unwrap();
        let won = c2.campaign("controller", "b", &lease_b).await.unwrap();
        (won, lease_b)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!b.is_finished(), "b must wait while a leads");
    // a dies (stops keeping its lease alive): b takes over with a higher epoch.
    drop(lease_a);
    let (won, _lease_b) =
        tokio::time::timeout(Duration::from_secs(15), b).await.expect("b must win after a dies").unwrap();
    assert_eq!(won.candidate, "b");
    assert!(won.epoch > a.epoch);
    assert_eq!(c.leader("controller").await.unwrap(), Some(("b".to_string(), won.epoch)));
    c.resign(&won).await.unwrap();
    assert_eq!(c.leader("controller").await.unwrap(), None);
}

reprise_store::on_backends!(
    [etcd => "etcd", file => "file"]
    [
        typed_documents_round_trip,
        conditional_writes_detect_conflicts,
        leased_entries_vanish_when_their_owner_stops,
        revoked_leases_take_their_entries_at_once,
        a_lease_revoked_elsewhere_is_reported_lost,
        watches_see_puts_and_deletes,
        one_leader_at_a_time_and_failover
    ]
);
