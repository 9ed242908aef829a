//! The file-backed catalog (`file://PATH`): the embedded default for one machine, safe
//! for several processes at once.
//!
//! Layout: `kv/<key>` holds one entry (a JSON header line `{"rev":..,"lease":..}`, then
//! the value); `leases/<id>` holds a lease's TTL and expiry (ms since the epoch);
//! `revision` is the store-wide revision counter. Every mutation holds the `catalog.lock`
//! flock; every file is replaced by rename, so lock-free readers never see a torn write.
//! An entry whose lease has expired reads as absent and is swept by the next lease call.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::{CatalogBackend, CatalogError, KeyValue, LeaseId, WatchEvent, validate_key};
use crate::now_ms;

/// How often a watch re-reads the directory.
const WATCH_POLL: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct FileCatalog {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct EntryHeader {
    rev: i64,
    lease: Option<LeaseId>,
}

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    ttl_ms: i64,
    expires_at_ms: i64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io { path: path.display().to_string(), source }
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl FileCatalog {
    pub fn open(path: &str) -> Result<Self, CatalogError> {
        let dir = PathBuf::from(path);
        for sub in ["kv", "leases", "tmp"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(FileCatalog { dir })
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join("kv").join(key)
    }

    fn lease_path(&self, lease: LeaseId) -> PathBuf {
        self.dir.join("leases").join(lease.to_string())
    }

    /// Runs `f` holding the catalog-wide write lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, CatalogError>) -> Result<T, CatalogError> {
        let path = self.dir.join("catalog.lock");
        let lock =
            fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        lock.lock().map_err(io_err(&path))?;
        f()
    }

    /// Replaces `path` atomically with `contents`.
    fn write_atomic(&self, path: &Path, contents: &[u8]) -> Result<(), CatalogError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let tmp = self.dir.join("tmp").join(format!("{}-{}", std::process::id(), rand::random::<u64>()));
        fs::write(&tmp, contents).map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }

    fn next_revision(&self) -> Result<i64, CatalogError> {
        let path = self.dir.join("revision");
        let current = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().unwrap_or(0),
            Err(e) if not_found(&e) => 0,
            Err(e) => return Err(io_err(&path)(e)),
        };
        self.write_atomic(&path, (current + 1).to_string().as_bytes())?;
        Ok(current + 1)
    }

    fn read_lease(&self, lease: LeaseId) -> Result<Option<LeaseFile>, CatalogError> {
        let path = self.lease_path(lease);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn lease_alive(&self, lease: LeaseId) -> Result<bool, CatalogError> {
        Ok(self.read_lease(lease)?.is_some_and(|l| l.expires_at_ms > now_ms()))
    }

    /// Reads an entry, live or not.
    fn read_entry(&self, key: &str) -> Result<Option<KeyValue>, CatalogError> {
        let path = self.entry_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if not_found(&e) || e.kind() == std::io::ErrorKind::IsADirectory => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let split = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
        let header: EntryHeader = serde_json::from_slice(&bytes[..split])
            .map_err(|source| CatalogError::Corrupt { key: key.to_string(), source })?;
        Ok(Some(KeyValue {
            key: key.to_string(),
            value: bytes.get(split + 1..).unwrap_or_default().to_vec(),
            mod_revision: header.rev,
            lease: header.lease,
        }))
    }

    /// Reads an entry if it exists and its lease (if any) is alive.
    fn read_live(&self, key: &str) -> Result<Option<KeyValue>, CatalogError> {
        match self.read_entry(key)? {
            Some(kv) if kv.lease.map_or(Ok(true), |l| self.lease_alive(l))? => Ok(Some(kv)),
            _ => Ok(None),
        }
    }

    /// Every key (live or not) under `prefix`, in order.
    fn keys(&self, prefix: &str) -> Result<Vec<String>, CatalogError> {
        // Walk the deepest directory the prefix names in full, then filter by prefix.
        let base = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut keys = Vec::new();
        let mut pending = vec![base.to_string()];
        while let Some(rel) = pending.pop() {
            let dir = if rel.is_empty() { self.dir.join("kv") } else { self.entry_path(&rel) };
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if not_found(&e) || e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                if entry.file_type().map_err(io_err(&dir))?.is_dir() {
                    pending.push(key);
                } else if key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn list_live(&self, prefix: &str) -> Result<Vec<KeyValue>, CatalogError> {
        let mut out = Vec::new();
        for key in self.keys(prefix)? {
            if let Some(kv) = self.read_live(&key)? {
                out.push(kv);
            }
        }
        Ok(out)
    }

    fn write_entry(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<i64, CatalogError> {
        if let Some(lease) = lease
            && !self.lease_alive(lease)?
        {
            return Err(CatalogError::LeaseExpired(lease));
        }
        let rev = self.next_revision()?;
        let mut contents = serde_json::to_vec(&EntryHeader { rev, lease }).expect("serialisable");
        contents.push(b'\n');
        contents.extend_from_slice(value);
        self.write_atomic(&self.entry_path(key), &contents)?;
        Ok(rev)
    }

    fn remove_entry(&self, key: &str) -> Result<(), CatalogError> {
        let path = self.entry_path(key);
        match fs::remove_file(&path) {
            Err(e) if !not_found(&e) => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Deletes expired leases and every entry attached to a lease that is gone.
    fn sweep(&self) -> Result<(), CatalogError> {
        let leases_dir = self.dir.join("leases");
        for entry in fs::read_dir(&leases_dir).map_err(io_err(&leases_dir))? {
            let entry = entry.map_err(io_err(&leases_dir))?;
            if let Ok(id) = entry.file_name().to_string_lossy().parse::<LeaseId>()
                && !self.lease_alive(id)?
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        for key in self.keys("")? {
            if let Some(kv) = self.read_entry(&key)?
                && let Some(lease) = kv.lease
                && !self.lease_path(lease).exists()
            {
                self.remove_entry(&key)?;
            }
        }
        Ok(())
    }

    fn write_lease(&self, lease: LeaseId, ttl_ms: i64) -> Result<(), CatalogError> {
        let file = LeaseFile { ttl_ms, expires_at_ms: now_ms() + ttl_ms };
        self.write_atomic(&self.lease_path(lease), &serde_json::to_vec(&file).expect("serialisable"))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    crate::run_blocking(f).await.unwrap_or(Err(CatalogError::ShuttingDown))
}

#[async_trait]
impl CatalogBackend for FileCatalog {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, CatalogError> {
        validate_key(key)?;
        let (this, key) = (self.clone(), key.to_string());
        blocking(move || this.read_live(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, CatalogError> {
        let (this, prefix) = (self.clone(), prefix.to_string());
        blocking(move || this.list_live(&prefix)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, CatalogError> {
        validate_key(key)?;
        let (this, key) = (self.clone(), key.to_string());
        blocking(move || this.locked(|| this.write_entry(&key, &value, lease))).await
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        lease: Option<LeaseId>,
    ) -> Result<Option<i64>, CatalogError> {
        validate_key(key)?;
        let (this, key) = (self.clone(), key.to_string());
        blocking(move || {
            this.locked(|| {
                let current = this.read_live(&key)?.map_or(0, |kv| kv.mod_revision);
                if current != expected {
                    return Ok(None);
                }
                this.write_entry(&key, &value, lease).map(Some)
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, CatalogError> {
        validate_key(key)?;
        let (this, key) = (self.clone(), key.to_string());
        blocking(move || {
            this.locked(|| {
                let existed = this.read_live(&key)?.is_some();
                this.remove_entry(&key)?;
                Ok(existed)
            })
        })
        .await
    }

    async fn delete_if(&self, key: &str, expected: i64) -> Result<bool, CatalogError> {
        validate_key(key)?;
        let (this, key) = (self.clone(), key.to_string());
        blocking(move || {
            this.locked(|| {
                if this.read_live(&key)?.is_none_or(|kv| kv.mod_revision != expected) {
                    return Ok(false);
                }
                this.remove_entry(&key)?;
                Ok(true)
            })
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, CatalogError> {
        let this = self.clone();
        blocking(move || {
            this.locked(|| {
                this.sweep()?;
                let id = rand::random::<u32>() as LeaseId + 1;
                this.write_lease(id, ttl.as_millis().max(1) as i64)?;
                Ok(id)
            })
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, CatalogError> {
        let this = self.clone();
        blocking(move || {
            this.locked(|| match this.read_lease(lease)? {
                Some(file) if file.expires_at_ms > now_ms() => {
                    this.write_lease(lease, file.ttl_ms)?;
                    Ok(true)
                }
                _ => {
                    this.sweep()?;
                    Ok(false)
                }
            })
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), CatalogError> {
        let this = self.clone();
        blocking(move || {
            this.locked(|| {
                let path = this.lease_path(lease);
                match fs::remove_file(&path) {
                    Err(e) if !not_found(&e) => return Err(io_err(&path)(e)),
                    _ => {}
                }
                this.sweep()
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str) -> Result<BoxStream<'static, Result<WatchEvent, CatalogError>>, CatalogError> {
        let (this, prefix) = (self.clone(), prefix.to_string());
        let snapshot = |this: &FileCatalog, prefix: &str| -> Result<BTreeMap<String, KeyValue>, CatalogError> {
            Ok(this.list_live(prefix)?.into_iter().map(|kv| (kv.key.clone(), kv)).collect())
        };
        let mut seen = {
            let (this, prefix) = (this.clone(), prefix.clone());
            blocking(move || snapshot(&this, &prefix)).await?
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_POLL).await;
                let now = {
                    let (this, prefix) = (this.clone(), prefix.clone());
                    blocking(move || snapshot(&this, &prefix)).await
                };
                let now = match now {
                    Ok(now) => now,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let mut events = Vec::new();
                for (key, kv) in &now {
                    if seen.get(key).is_none_or(|old| old.mod_revision != kv.mod_revision) {
                        events.push(WatchEvent::Put(kv.clone()));
                    }
                }
                for key in seen.keys().filter(|k| !now.contains_key(*k)) {
                    events.push(WatchEvent::Delete(key.clone()));
                }
                seen = now;
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
