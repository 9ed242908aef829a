//! The catalog: recordings, workers, capture nodes and replays, with leases (an entry
//! that dies with its owner), watches and leader election.
//!
//! [`CatalogBackend`] is the small key-value boundary (etcd, or files for one machine);
//! [`Catalog`] puts typed collections, lease keep-alive and elections on top of it once,
//! for every backend.

mod etcd;
mod file;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::schema::Entity;

pub use etcd::EtcdCatalog;
pub use file::FileCatalog;

pub type LeaseId = i64;

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last write to this key; the token for [`CatalogBackend::put_if`].
    pub mod_revision: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid catalog URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid catalog key {0:?}")]
    InvalidKey(String),
    /// Displayed in plain words and not given as a source: the client's own text
    /// repeats its whole cause chain.
    #[error("etcd: {}", etcd::describe(.0))]
    Etcd(etcd_client::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog entry {key} does not hold valid JSON: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the watch on {0} ended")]
    WatchEnded(String),
    #[error("lease {0} has expired")]
    LeaseExpired(LeaseId),
    #[error("the process is shutting down")]
    ShuttingDown,
}

/// The key-value store under the catalog. Keys are relative (`recordings/abc`); each
/// backend roots them under its own prefix or directory.
#[async_trait]
pub trait CatalogBackend: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, CatalogError>;
    /// Every key under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, CatalogError>;
    /// Writes a key; returns its new mod revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, CatalogError>;
    /// Writes a key only if its mod revision is still `expected` (0: only if absent).
    /// Returns the new mod revision, or `None` when another write came first.
    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        lease: Option<LeaseId>,
    ) -> Result<Option<i64>, CatalogError>;
    /// Deletes a key; whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, CatalogError>;
    /// Deletes a key only if its mod revision is still `expected`; whether it did.
    async fn delete_if(&self, key: &str, expected: i64) -> Result<bool, CatalogError>;
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, CatalogError>;
    /// Refreshes a lease; `false` when it has already expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, CatalogError>;
    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), CatalogError>;
    /// Changes under `prefix` from now on.
    async fn watch(&self, prefix: &str) -> Result<BoxStream<'static, Result<WatchEvent, CatalogError>>, CatalogError>;
}

impl From<etcd_client::Error> for CatalogError {
    fn from(error: etcd_client::Error) -> Self {
        CatalogError::Etcd(error)
    }
}

/// Opens a catalog backend by URL: `etcd://host:port[,host:port][/prefix]` or `file://PATH`.
/// An etcd URL may name TLS files: `?tls_ca=PATH` (the CA that signed etcd's
/// certificate; turns TLS on) and `&tls_cert=PATH&tls_key=PATH` (a client certificate, for
/// an etcd started with `--client-cert-auth`).
pub async fn open_backend(url: &str) -> Result<Arc<dyn CatalogBackend>, CatalogError> {
    let invalid = |reason: String| CatalogError::InvalidUrl { url: crate::redact_url(url), reason };
    let parsed = crate::url::parse(url, &["etcd", "file"]).map_err(invalid)?;
    match parsed.scheme.as_str() {
        "etcd" => {
            let prefix = if parsed.path.is_empty() { "reprise".to_string() } else { parsed.path.clone() };
            let tls = etcd::tls_options(&parsed.params).map_err(invalid)?;
            Ok(Arc::new(EtcdCatalog::connect(&parsed.hosts, &prefix, tls).await?))
        }
        // `parse` admits only etcd and file.
        _ => Ok(Arc::new(FileCatalog::open(&parsed.path)?)),
    }
}

/// Checks a relative key: `/`-separated segments of `[A-Za-z0-9._:-]`, no `.` or `..`.
pub(crate) fn validate_key(key: &str) -> Result<(), CatalogError> {
    let ok_segment = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    };
    if key.split('/').all(ok_segment) { Ok(()) } else { Err(CatalogError::InvalidKey(key.to_string())) }
}

/// A catalog document with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub value: T,
    pub revision: i64,
}

/// A change to a typed collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    Put(T),
    Deleted(String),
}

/// The typed catalog used by the daemons.
#[derive(Clone)]
pub struct Catalog {
    backend: Arc<dyn CatalogBackend>,
    url: String,
}

fn key_of<T: Entity>(id: &str) -> String {
    format!("{}/{id}", T::COLLECTION)
}

fn decode<T: Entity>(kv: &KeyValue) -> Result<Stored<T>, CatalogError> {
    let value =
        serde_json::from_slice(&kv.value).map_err(|source| CatalogError::Corrupt { key: kv.key.clone(), source })?;
    Ok(Stored { value, revision: kv.mod_revision })
}

fn encode<T: Entity>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("catalog documents serialise")
}

impl Catalog {
    /// Opens the catalog named by `url` (see [`open_backend`]).
    pub async fn open(url: &str) -> Result<Self, CatalogError> {
        Ok(Catalog { backend: open_backend(url).await?, url: url.to_string() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> &Arc<dyn CatalogBackend> {
        &self.backend
    }

    pub async fn get<T: Entity>(&self, id: &str) -> Result<Option<Stored<T>>, CatalogError> {
        let key = key_of::<T>(id);
        validate_key(&key)?;
        self.backend.get(&key).await?.map(|kv| decode(&kv)).transpose()
    }

    /// Every document of the collection, by id. Entries that do not decode are skipped
    /// with a warning, so one bad document cannot hide the others.
    pub async fn list<T: Entity>(&self) -> Result<Vec<Stored<T>>, CatalogError> {
        let prefix = format!("{}/", T::COLLECTION);
        let entries = self.backend.list(&prefix).await?;
        Ok(entries
            .iter()
            .filter_map(|kv| match decode(kv) {
                Ok(stored) => Some(stored),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping undecodable catalog entry");
                    None
                }
            })
            .collect())
    }

    /// Writes a document unconditionally; returns its revision.
    pub async fn put<T: Entity>(&self, value: &T) -> Result<i64, CatalogError> {
        self.put_with(value, None).await
    }

    /// Writes a document that lives only as long as `lease`.
    pub async fn put_leased<T: Entity>(&self, value: &T, lease: &Lease) -> Result<i64, CatalogError> {
        self.put_with(value, Some(lease.id())).await
    }

    /// Creates a document that lives only as long as `lease`, unless one with its id
    /// exists already. Whether it was created.
    pub async fn create_leased<T: Entity>(&self, value: &T, lease: &Lease) -> Result<bool, CatalogError> {
        let key = key_of::<T>(value.id());
        validate_key(&key)?;
        Ok(self.backend.put_if(&key, encode(value), 0, Some(lease.id())).await?.is_some())
    }

    async fn put_with<T: Entity>(&self, value: &T, lease: Option<LeaseId>) -> Result<i64, CatalogError> {
        let key = key_of::<T>(value.id());
        validate_key(&key)?;
        self.backend.put(&key, encode(value), lease).await
    }

    /// Writes a document only if it is still at `revision` (0: only if new). Returns the
    /// new revision, or `None` if someone else wrote it first.
    pub async fn put_if<T: Entity>(&self, value: &T, revision: i64) -> Result<Option<i64>, CatalogError> {
        let key = key_of::<T>(value.id());
        validate_key(&key)?;
        self.backend.put_if(&key, encode(value), revision, None).await
    }

    pub async fn delete<T: Entity>(&self, id: &str) -> Result<bool, CatalogError> {
        let key = key_of::<T>(id);
        validate_key(&key)?;
        self.backend.delete(&key).await
    }

    /// Changes to the collection from now on. Undecodable documents are skipped.
    pub async fn watch<T: Entity>(
        &self,
    ) -> Result<impl Stream<Item = Result<Change<T>, CatalogError>> + use<T>, CatalogError> {
        let prefix = format!("{}/", T::COLLECTION);
        let events = self.backend.watch(&prefix).await?;
        Ok(events.filter_map(move |event| {
            let change = match event {
                Err(e) => Some(Err(e)),
                Ok(WatchEvent::Put(kv)) => match decode::<T>(&kv) {
                    Ok(stored) => Some(Ok(Change::Put(stored.value))),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping undecodable catalog entry");
                        None
                    }
                },
                Ok(WatchEvent::Delete(key)) => {
                    Some(Ok(Change::Deleted(key.strip_prefix(&prefix).unwrap_or(&key).to_string())))
                }
            };
            std::future::ready(change)
        }))
    }

    /// Grants a lease of `ttl` and keeps it alive in the background until the returned
    /// [`Lease`] is revoked or dropped. If the catalog cannot be reached for a whole
    /// `ttl`, the lease is [`LeaseState::Unconfirmed`] (it may have expired there; the
    /// keeper goes on trying: etcd keeps its leases across its own restarts); once the
    /// catalog says it is gone, or after [`UNCONFIRMED_LIMIT`] without an answer, it is
    /// [`LeaseState::Lost`].
    pub async fn lease(&self, ttl: Duration) -> Result<Lease, CatalogError> {
        let id = self.backend.grant_lease(ttl).await?;
        let (state_tx, state_rx) = watch::channel(LeaseState::Held);
        let backend = self.backend.clone();
        let keeper = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(100));
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(period).await;
                let state = match backend.keep_alive(id).await {
                    Ok(true) => {
                        last_ok = tokio::time::Instant::now();
                        LeaseState::Held
                    }
                    Ok(false) => break,
                    Err(e) if last_ok.elapsed() >= UNCONFIRMED_LIMIT => {
                        tracing::warn!(lease = id, error = %e, "no answer from the catalog for {} s", UNCONFIRMED_LIMIT.as_secs());
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(lease = id, error = %e, "lease keep-alive failed");
                        if last_ok.elapsed() >= ttl { LeaseState::Unconfirmed } else { LeaseState::Held }
                    }
                };
                state_tx.send_if_modified(|current| std::mem::replace(current, state) != state);
            }
            tracing::warn!(lease = id, "lease lost");
            let _ = state_tx.send(LeaseState::Lost);
        });
        Ok(Lease { id, backend: self.backend.clone(), keeper, state: state_rx })
    }

    /// Blocks until `candidate` leads `election`, then returns its leadership. The
    /// leadership lasts as long as `lease`; its epoch (the revision of the leader key)
    /// increases with every new leader, so stale leaders can be fenced off.
    pub async fn campaign(&self, election: &str, candidate: &str, lease: &Lease) -> Result<Leadership, CatalogError> {
        let key = format!("elections/{election}");
        validate_key(&key)?;
        loop {
            // Watch before trying, so that a release between the try and the watch is seen.
            let mut changes = self.backend.watch(&key).await?;
            if let Some(epoch) = self.backend.put_if(&key, candidate.as_bytes().to_vec(), 0, Some(lease.id())).await? {
                return Ok(Leadership { key, epoch, candidate: candidate.to_string() });
            }
            if let Some(current) = self.backend.get(&key).await? {
                if current.lease == Some(lease.id()) && current.value == candidate.as_bytes() {
                    // Our own earlier win (a retried campaign).
                    return Ok(Leadership { key, epoch: current.mod_revision, candidate: candidate.to_string() });
                }
            } else {
                continue;
            }
            loop {
                let changed = tokio::select! {
                    event = changes.next() => event,
                    _ = lease.wait_lost() => return Err(CatalogError::LeaseExpired(lease.id())),
                };
                match changed {
                    Some(Ok(WatchEvent::Delete(_))) => break,
                    Some(Ok(WatchEvent::Put(_))) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(CatalogError::WatchEnded(key)),
                }
            }
        }
    }

    /// The current leader of `election` and its epoch.
    pub async fn leader(&self, election: &str) -> Result<Option<(String, i64)>, CatalogError> {
        let key = format!("elections/{election}");
        validate_key(&key)?;
        Ok(self.backend.get(&key).await?.map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision)))
    }

    /// Gives up leadership (if still held) so that another candidate takes over now.
    pub async fn resign(&self, leadership: &Leadership) -> Result<(), CatalogError> {
        self.backend.delete_if(&leadership.key, leadership.epoch).await?;
        Ok(())
    }
}

/// Proof of leadership won by [`Catalog::campaign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    key: String,
    pub epoch: i64,
    pub candidate: String,
}

/// How long a lease's keeper keeps trying an unreachable catalog before it counts the
/// lease as lost.
pub const UNCONFIRMED_LIMIT: Duration = Duration::from_secs(60);

/// Where a lease stands, as its keeper last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewed within its TTL.
    Held,
    /// The catalog has not answered for a whole TTL: the lease may have run out there.
    Unconfirmed,
    /// Gone: entries under it are deleted and must be re-created under a new lease.
    Lost,
}

/// A lease kept alive in the background. Entries written with it vanish when it is
/// revoked, or when its owner stops keeping it alive (the process died, or the lease
/// was dropped without [`Lease::revoke`]) and its TTL runs out.
pub struct Lease {
    id: LeaseId,
    backend: Arc<dyn CatalogBackend>,
    keeper: JoinHandle<()>,
    state: watch::Receiver<LeaseState>,
}

impl Lease {
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Whether the lease is gone for good: entries under it are gone and must be
    /// re-created under a new lease.
    pub fn is_lost(&self) -> bool {
        *self.state.borrow() == LeaseState::Lost
    }

    /// Resolves when the lease is lost.
    pub async fn wait_lost(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s == LeaseState::Lost).await;
    }

    /// The lease's state now, then each change.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Ends the lease now, deleting its entries (a clean shutdown).
    pub async fn revoke(self) -> Result<(), CatalogError> {
        self.keeper.abort();
        self.backend.revoke_lease(self.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("recordings/rec-01J:x").is_ok());
        for bad in ["", "recordings/", "recordings/../x", "a//b", "a/b c", "/abs"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
