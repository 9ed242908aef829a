//! `ctl demo` as a newcomer runs it: one process, no Kafka or etcd, a live capture of
//! real traffic (needs root or CAP_NET_RAW, as the README says), a replay x5, and a
//! summary the demo service confirms.

#[test]
fn the_demo_records_and_replays_five_times_over() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctl")).args(["demo", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ctl demo failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recorded = summary["recorded_requests"].as_u64().unwrap();
    assert!(recorded > 0);
    assert_eq!(summary["state"], "done");
    assert_eq!(summary["sent"].as_u64(), Some(5 * recorded));
    assert_eq!(summary["ok"].as_u64(), Some(5 * recorded));
    assert_eq!(summary["service_received"].as_u64(), Some(5 * recorded));
    assert_eq!(summary["all_answered"], true);
}
