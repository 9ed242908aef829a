//! Where the real test servers are, for integration tests of every crate:
//! `KAFKA_BOOTSTRAP` / `ETCD_ENDPOINTS` from the environment, else the env file that
//! `deploy/local/services.sh up` writes.

use std::sync::atomic::{AtomicU32, Ordering};

/// The value of a service variable; panics with how to start the servers if unknown.
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

/// A name no other test (or earlier run) uses: for topics and catalog prefixes.
pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = crate::now_ns();
    format!("{name}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh Kafka traffic log URL on the test broker.
pub fn kafka_log_url(name: &str) -> String {
    format!("kafka://{}/{}", service("KAFKA_BOOTSTRAP"), unique(name))
}

/// A fresh etcd catalog URL (own prefix) on the test etcd.
pub fn etcd_catalog_url(name: &str) -> String {
    format!("etcd://{}/{}", service("ETCD_ENDPOINTS"), unique(name))
}

/// Generates one `#[tokio::test]` per backend and case: for every `module => "kind"`,
/// a module whose tests call `super::case("kind")`. Used by the suites that run the
/// same cases on the real servers and on the file twins.
///
/// ```ignore
/// reprise_store::on_backends!([kafka => "kafka", file => "file"] [case_one, case_two]);
/// ```
#[macro_export]
macro_rules! on_backends {
    ([$($module:ident => $kind:literal),+ $(,)?] $cases:tt) => {
        $( $crate::on_backend!($module, $kind, $cases); )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! on_backend {
    ($module:ident, $kind:literal, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($kind).await
                }
            )*
        }
    };
}
