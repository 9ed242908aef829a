//! The storage boundary of Reprise, shared by every daemon.
//!
//! * [`log`]: the traffic log, an append-only partitioned log of captured HTTP messages
//!   addressed by `(partition, offset)`. Kafka in production, files for one machine.
//! * [`catalog`]: the small, strongly consistent store of recordings, workers, capture
//!   nodes and replays, with leases, watches and leader election. etcd in production,
//!   files for one machine.
//! * [`schema`]: the documents kept in the catalog.
//! * [`recording`]: building recordings (ids, counts, time span, retention state).
//! * [`traffic`]: decoding of stored traffic records, skipping (and counting) garbage.
//!
//! Both boundaries are chosen by URL (`kafka://`, `etcd://`, `file://`) so that daemons,
//! tests and the embedded demo run the same code against either implementation.

pub mod catalog;
pub mod gor;
pub mod log;
pub mod recording;
pub mod schema;
pub mod testing;
pub mod traffic;
mod url;

pub use catalog::{Catalog, CatalogError, Lease, LeaseState};
pub use log::{LogError, LogRecord, NewRecord, RangeSpec, TrafficLog, Watermarks, open_log};
pub use url::redact_url;

/// Runs blocking `f` on tokio's blocking pool: `None` if the runtime shut down before it
/// ran (a process stopping), and a panic in `f` goes on unwinding here.
pub(crate) async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Some(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
