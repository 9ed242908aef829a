//! Records leave the capture node here: batched into the traffic log, and spooled to a
//! bounded local directory while the log is unreachable. Once anything is spooled, new
//! records queue behind it, so order per connection is kept; the spool drains, oldest
//! first, as soon as the log takes appends again. Past the spool's budget records are
//! dropped and counted, never silently.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reprise_proto::v1::TrafficRecord;
use reprise_store::log::{NewRecord, TrafficLog};
use reprise_store::traffic;
use tokio::sync::mpsc;

/// Which clock stamps the log messages (the time retention and offsets-for-times go by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// The record's capture time: live capture, where the two are the same moment.
    CaptureTime,
    /// The time the record is written: imports, whose capture times may be long past
    /// (a broker's retention would delete them at once). The record keeps its capture
    /// time for pacing.
    WriteTime,
}

#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub stamp: Stamp,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub batch_records: usize,
    pub linger: Duration,
    /// On shutdown, how long to keep trying to drain the spool before leaving it for the
    /// next run.
    pub drain_on_exit: Duration,
}

#[derive(Debug, Default)]
pub struct OutputCounters {
    /// Records handed to the output.
    pub received: AtomicU64,
    /// Records stored in the log.
    pub records: AtomicU64,
    /// First and last capture time of the stored records.
    pub span_ns: std::sync::Mutex<Option<(i64, i64)>>,
    pub bytes: AtomicU64,
    pub spooled: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub dropped: AtomicU64,
    pub append_errors: AtomicU64,
}

fn to_new(record: &TrafficRecord, stamp: Stamp, now_ms: i64) -> NewRecord {
    NewRecord {
        key: Bytes::from(record.connection_id.clone()),
        timestamp_ms: match stamp {
            Stamp::CaptureTime => record.timestamp_ns / 1_000_000,
            Stamp::WriteTime => now_ms,
        },
        payload: Bytes::from(traffic::encode(record)),
    }
}

impl OutputCounters {
    fn stored(&self, records: &[TrafficRecord]) {
        self.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        let Some(first) = records.iter().map(|r| r.timestamp_ns).min() else { return };
        let last = records.iter().map(|r| r.timestamp_ns).max().unwrap_or(first);
        let mut span = self.span_ns.lock().expect("lock");
        *span = Some(span.map_or((first, last), |(f, l)| (f.min(first), l.max(last))));
    }
}

/// Appends a batch; returns the records that were not stored, in order.
async fn send(
    log: &Arc<dyn TrafficLog>,
    batch: Vec<TrafficRecord>,
    stamp: Stamp,
    counters: &OutputCounters,
) -> Vec<TrafficRecord> {
    let now_ms = reprise_store::now_ms();
    let new: Vec<NewRecord> = batch.iter().map(|r| to_new(r, stamp, now_ms)).collect();
    let bytes: u64 = new.iter().map(|r| r.payload.len() as u64).sum();
    match log.append(new).await {
        Ok(_) => {
            counters.stored(&batch);
            counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            Vec::new()
        }
        Err(e) => {
            counters.append_errors.fetch_add(1, Ordering::Relaxed);
            let failed = e.failed_records(batch.len());
            tracing::warn!(error = %e, failed = failed.len(), "traffic log append failed; spooling");
            let mut batch: Vec<Option<TrafficRecord>> = batch.into_iter().map(Some).collect();
            let failed: Vec<TrafficRecord> = failed.into_iter().filter_map(|i| batch[i].take()).collect();
            counters.stored(&batch.into_iter().flatten().collect::<Vec<_>>());
            failed
        }
    }
}

/// The on-disk spool: one file per batch, named by a growing sequence number.
struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next: u64,
    stamp: Stamp,
}

impl Spool {
    fn open(config: &OutputConfig, counters: &OutputCounters) -> std::io::Result<Spool> {
        let dir = &config.spool_dir;
        fs::create_dir_all(dir)?;
        let mut spool =
            Spool { dir: dir.to_path_buf(), max_bytes: config.spool_max_bytes, next: 0, stamp: config.stamp };
        let files = spool.files()?;
        spool.next = files.last().map_or(0, |(seq, _)| seq + 1);
        let bytes: u64 = files.iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum();
        counters.spool_bytes.store(bytes, Ordering::Relaxed);
        if !files.is_empty() {
            tracing::info!(files = files.len(), bytes, dir = %dir.display(), "found spooled records from an earlier run");
        }
        Ok(spool)
    }

    fn files(&self) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let mut files: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".batch").and_then(|n| n.parse().ok()).map(|n| (n, e.path()))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.files()?.is_empty())
    }

    /// Writes a batch to the spool, or drops it (counted) past the budget.
    fn push(&mut self, batch: &[TrafficRecord], counters: &OutputCounters) -> std::io::Result<()> {
        let mut data = Vec::new();
        for record in batch {
            let encoded = traffic::encode(record);
            data.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            data.extend_from_slice(&encoded);
        }
        if counters.spool_bytes.load(Ordering::Relaxed) + data.len() as u64 > self.max_bytes {
            counters.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::error!(records = batch.len(), "spool budget exhausted: records dropped");
            return Ok(());
        }
        let path = self.dir.join(format!("{:016}.batch", self.next));
        let tmp = self.dir.join(format!("{:016}.tmp", self.next));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&data)?;
        file.sync_data()?;
        fs::rename(&tmp, &path)?;
        self.next += 1;
        counters.spooled.fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters.spool_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends spooled batches, oldest first, until one fails; whether the spool is empty.
    async fn drain(&mut self, log: &Arc<dyn TrafficLog>, counters: &OutputCounters) -> std::io::Result<bool> {
        for (_, path) in self.files()? {
            let data = fs::read(&path)?;
            let mut batch = Vec::new();
            let mut at = 0;
            while at + 4 <= data.len() {
                let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
                let Some(encoded) = data.get(at + 4..at + 4 + len) else { break };
                match traffic::decode(encoded) {
                    Ok(record) => batch.push(record),
                    Err(e) => tracing::error!(error = %e, file = %path.display(), "corrupt spooled record skipped"),
                }
                at += 4 + len;
            }
            let failed = send(log, batch, self.stamp, counters).await;
            counters
                .spool_bytes
                .fetch_sub((data.len() as u64).min(counters.spool_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
            if failed.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            // Keep what is still unsent in place, in order, and stop for now.
            let mut rest = Vec::new();
            for record in &failed {
                let encoded = traffic::encode(record);
                rest.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
                rest.extend_from_slice(&encoded);
            }
            fs::write(&path, &rest)?;
            counters.spool_bytes.fetch_add(rest.len() as u64, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }
}

/// Moves records from `rx` into the log until `rx` closes and everything is stored (or
/// left in the spool after `drain_on_exit`).
pub async fn run(
    log: Arc<dyn TrafficLog>,
    mut rx: mpsc::Receiver<TrafficRecord>,
    config: OutputConfig,
    counters: Arc<OutputCounters>,
) -> std::io::Result<()> {
    let mut spool = Spool::open(&config, &counters)?;
    let mut spooling = !spool.is_empty()?;
    let mut open = true;
    let retry = Duration::from_millis(500);
    while open {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch_records {
            let wait = if spooling { deadline.min(tokio::time::Instant::now() + retry) } else { deadline };
            match tokio::time::timeout_at(wait, rx.recv()).await {
                Ok(Some(record)) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    batch.push(record);
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        if spooling {
            if !batch.is_empty() {
                spool.push(&batch, &counters)?;
            }
            spooling = !spool.drain(&log, &counters).await?;
            if !spooling {
                tracing::info!("spool drained; writing to the traffic log directly again");
            }
        } else if !batch.is_empty() {
            let failed = send(&log, batch, config.stamp, &counters).await;
            if !failed.is_empty() {
                spool.push(&failed, &counters)?;
                spooling = true;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + config.drain_on_exit;
    while spooling && tokio::time::Instant::now() < deadline {
        spooling = !spool.drain(&log, &counters).await?;
        if spooling {
            tokio::time::sleep(retry).await;
        }
    }
    if spooling {
        tracing::warn!(dir = %config.spool_dir.display(), "records left in the spool; the next run sends them first");
    }
    Ok(())
}
