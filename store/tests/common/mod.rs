//! Where the test servers are: `KAFKA_BOOTSTRAP` / `ETCD_ENDPOINTS` from the environment,
//! else the env file written by `deploy/local/services.sh up`.

use std::sync::atomic::{AtomicU32, Ordering};

pub fn service(var: &str) -> String {
    if let Ok(value) = std::env::var(var) {
        return value;
    }
    let dir = std::env::var("REPRISE_SERVICES_DIR").unwrap_or_else(|_| "/tmp/reprise-services".into());
    let env_file = std::fs::read_to_string(format!("{dir}/env")).unwrap_or_default();
    env_file.lines().find_map(|line| line.strip_prefix(&format!("{var}=")).map(str::to_string)).unwrap_or_else(|| {
        panic!(
            "{var} is not set and {dir}/env does not name it: start the test servers with `deploy/local/services.sh up`"
        )
    })
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}
