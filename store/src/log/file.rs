//! The file-backed traffic log: the embedded default for one machine.
//!
//! Layout of a log directory:
//! * `topic.json`: `{"partitions": N}`, written once by [`TrafficLog::ensure_topic`].
//! * `partition-NNNNN.data`: frames `crc32 | key_len u32 | payload_len u32 | ts_ms i64 | key | payload`
//!   (little-endian; the crc covers everything after itself).
//! * `partition-NNNNN.index`: 16 bytes per record: end position of its frame in the data
//!   file (u64) and its timestamp (i64). The record at offset `o` is index entry `o`; the
//!   high watermark is the number of entries.
//! * `partition-NNNNN.lock`: held (flock) by an appender, so several processes may append.
//!
//! A record becomes visible only when its index entry is written, after its frame, so
//! readers in other processes never see a half-written record. An appender repairs a torn
//! tail (from a crash) before writing.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::url::StoreUrl;

use super::{
    BatchSender, LogError, LogRecord, NewRecord, Position, READ_BATCH, RangeSpec, RecordStream, TrafficLog, Watermarks,
    batch_channel, check_range, partition_for_key, unbatched,
};

const INDEX_ENTRY: u64 = 16;
const FRAME_HEADER: usize = 20;

/// A traffic log kept in a local directory (`file://PATH[?fsync=false]`).
#[derive(Clone)]
pub struct FileLog {
    url: String,
    dir: PathBuf,
    /// Whether appends are fsynced before they are acknowledged.
    fsync: bool,
}

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: i32,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.display().to_string(), source }
}

impl FileLog {
    pub(crate) fn open(url: &str, parsed: &StoreUrl) -> Result<Self, LogError> {
        let fsync = parsed.params.get("fsync").is_none_or(|v| v != "false");
        Ok(FileLog { url: url.to_string(), dir: PathBuf::from(&parsed.path), fsync })
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join("topic.json")
    }

    fn partition_path(&self, partition: i32, ext: &str) -> PathBuf {
        self.dir.join(format!("partition-{partition:05}.{ext}"))
    }

    fn partitions(&self) -> Result<i32, LogError> {
        let path = self.meta_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LogError::NoTopic(self.url.clone()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let meta: TopicMeta = serde_json::from_str(&text).map_err(|e| LogError::Corrupt {
            partition: -1,
            offset: -1,
            reason: format!("{}: {e}", path.display()),
        })?;
        Ok(meta.partitions)
    }

    fn high_watermark(&self, partition: i32) -> Result<i64, LogError> {
        let path = self.partition_path(partition, "index");
        match fs::metadata(&path) {
            Ok(m) => Ok((m.len() / INDEX_ENTRY) as i64),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn checked_partition(&self, partition: i32) -> Result<(), LogError> {
        let partitions = self.partitions()?;
        if partition < 0 || partition >= partitions {
            return Err(LogError::NoPartition { partition, partitions });
        }
        Ok(())
    }

    fn watermarks_blocking(&self) -> Result<Vec<Watermarks>, LogError> {
        (0..self.partitions()?)
            .map(|partition| Ok(Watermarks { partition, low: 0, high: self.high_watermark(partition)? }))
            .collect()
    }

    fn append_blocking(&self, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError> {
        let partitions = self.partitions()?;
        let mut positions = vec![Position { partition: 0, offset: 0 }; records.len()];
        let mut by_partition: Vec<Vec<usize>> = vec![Vec::new(); partitions as usize];
        for (i, record) in records.iter().enumerate() {
            by_partition[partition_for_key(&record.key, partitions) as usize].push(i);
        }
        for (partition, indices) in by_partition.iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let partition = partition as i32;
            let batch = indices.iter().map(|&i| &records[i]);
            let first = self.append_partition(partition, batch)?;
            for (n, &i) in indices.iter().enumerate() {
                positions[i] = Position { partition, offset: first + n as i64 };
            }
        }
        Ok(positions)
    }

    /// Appends to one partition under its lock; returns the first new offset.
    fn append_partition<'a>(
        &self,
        partition: i32,
        records: impl Iterator<Item = &'a NewRecord>,
    ) -> Result<i64, LogError> {
        let lock_path = self.partition_path(partition, "lock");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;

        let index_path = self.partition_path(partition, "index");
        let data_path = self.partition_path(partition, "data");
        let open_rw = |path: &Path| {
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(io_err(path))
        };
        let index = open_rw(&index_path)?;
        let data = open_rw(&data_path)?;

        // Repair a torn tail left by a crashed appender: a partial index entry, or frames
        // written without their index entries.
        let index_len = index.metadata().map_err(io_err(&index_path))?.len();
        let whole_entries = index_len / INDEX_ENTRY;
        if index_len != whole_entries * INDEX_ENTRY {
            index.set_len(whole_entries * INDEX_ENTRY).map_err(io_err(&index_path))?;
        }
        let data_end = if whole_entries == 0 {
            0
        } else {
            let mut entry = [0u8; 8];
            index.read_exact_at(&mut entry, (whole_entries - 1) * INDEX_ENTRY).map_err(io_err(&index_path))?;
            u64::from_le_bytes(entry)
        };
        if data.metadata().map_err(io_err(&data_path))?.len() != data_end {
            data.set_len(data_end).map_err(io_err(&data_path))?;
        }

        let mut data_out = BufWriter::with_capacity(1 << 16, &data);
        data_out.seek(SeekFrom::Start(data_end)).map_err(io_err(&data_path))?;
        let mut entries = Vec::new();
        let mut pos = data_end;
        for record in records {
            let frame = encode_frame(record);
            data_out.write_all(&frame).map_err(io_err(&data_path))?;
            pos += frame.len() as u64;
            entries.extend_from_slice(&pos.to_le_bytes());
            entries.extend_from_slice(&record.timestamp_ms.to_le_bytes());
        }
        data_out.flush().map_err(io_err(&data_path))?;
        drop(data_out);
        if self.fsync {
            data.sync_data().map_err(io_err(&data_path))?;
        }
        index.write_all_at(&entries, whole_entries * INDEX_ENTRY).map_err(io_err(&index_path))?;
        if self.fsync {
            index.sync_data().map_err(io_err(&index_path))?;
        }
        Ok(whole_entries as i64)
    }

    fn offsets_for_time_blocking(&self, timestamp_ms: i64) -> Result<Vec<Position>, LogError> {
        let mut positions = Vec::new();
        for partition in 0..self.partitions()? {
            let high = self.high_watermark(partition)?;
            let path = self.partition_path(partition, "index");
            let offset = if high == 0 {
                0
            } else {
                let index = File::open(&path).map_err(io_err(&path))?;
                let ts_at = |offset: i64| -> Result<i64, LogError> {
                    let mut ts = [0u8; 8];
                    index.read_exact_at(&mut ts, offset as u64 * INDEX_ENTRY + 8).map_err(io_err(&path))?;
                    Ok(i64::from_le_bytes(ts))
                };
                // Capture timestamps are non-decreasing within a partition (one appender
                // per connection, in capture order), so the first match is a binary search.
                let (mut lo, mut hi) = (0i64, high);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if ts_at(mid)? < timestamp_ms {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo
            };
            positions.push(Position { partition, offset });
        }
        Ok(positions)
    }
}

fn encode_frame(record: &NewRecord) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + record.key.len() + record.payload.len());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    frame.extend_from_slice(&record.key);
    frame.extend_from_slice(&record.payload);
    let crc = crc32fast::hash(&frame[4..]);
    frame[..4].copy_from_slice(&crc.to_le_bytes());
    frame
}

fn decode_frame(partition: i32, offset: i64, frame: &[u8]) -> Result<LogRecord, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt { partition, offset, reason: reason.to_string() };
    if frame.len() < FRAME_HEADER {
        return Err(corrupt("frame shorter than its header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes")) as usize;
    if u32_at(0) as u32 != crc32fast::hash(&frame[4..]) {
        return Err(corrupt("checksum mismatch"));
    }
    let (key_len, payload_len) = (u32_at(4), u32_at(8));
    if FRAME_HEADER + key_len + payload_len != frame.len() {
        return Err(corrupt("frame length disagrees with the index"));
    }
    let timestamp_ms = i64::from_le_bytes(frame[12..20].try_into().expect("8 bytes"));
    let key = &frame[FRAME_HEADER..FRAME_HEADER + key_len];
    Ok(LogRecord {
        partition,
        offset,
        timestamp_ms,
        key: (!key.is_empty()).then(|| Bytes::copy_from_slice(key)),
        payload: Bytes::copy_from_slice(&frame[FRAME_HEADER + key_len..]),
    })
}

/// Reads `range` sequentially, sending selected records into `tx` until the range ends
/// or the receiver is gone. Unselected records (other phases of a stride) are skipped
/// without reading their bytes.
fn read_range_blocking(
    data_path: PathBuf,
    index_path: PathBuf,
    range: RangeSpec,
    tx: BatchSender,
) -> Result<(), LogError> {
    let mut index = BufReader::with_capacity(1 << 16, File::open(&index_path).map_err(io_err(&index_path))?);
    let mut data = BufReader::with_capacity(1 << 16, File::open(&data_path).map_err(io_err(&data_path))?);
    let mut pos = 0u64;
    if range.start > 0 {
        index.seek(SeekFrom::Start((range.start as u64 - 1) * INDEX_ENTRY)).map_err(io_err(&index_path))?;
        let mut entry = [0u8; 16];
        index.read_exact(&mut entry).map_err(io_err(&index_path))?;
        pos = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        data.seek(SeekFrom::Start(pos)).map_err(io_err(&data_path))?;
    }
    let mut frame = Vec::new();
    let mut batch = Vec::with_capacity(READ_BATCH);
    for offset in range.start..range.end {
        let mut entry = [0u8; 16];
        index.read_exact(&mut entry).map_err(io_err(&index_path))?;
        let end = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let len = end.checked_sub(pos).ok_or_else(|| LogError::Corrupt {
            partition: range.partition,
            offset,
            reason: "index positions go backwards".into(),
        })?;
        if range.selects(offset) {
            frame.resize(len as usize, 0);
            data.read_exact(&mut frame).map_err(io_err(&data_path))?;
            batch.push(decode_frame(range.partition, offset, &frame)?);
            if batch.len() == READ_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
                if tx.blocking_send(Ok(full)).is_err() {
                    return Ok(());
                }
            }
        } else {
            data.seek_relative(len as i64).map_err(io_err(&data_path))?;
        }
        pos = end;
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LogError> + Send + 'static) -> Result<T, LogError> {
    crate::run_blocking(f).await.unwrap_or(Err(LogError::ShuttingDown))
}

#[async_trait]
impl TrafficLog for FileLog {
    fn url(&self) -> &str {
        &self.url
    }

    async fn ensure_topic(&self, partitions: i32) -> Result<i32, LogError> {
        let log = self.clone();
        blocking(move || {
            match log.partitions() {
                Ok(existing) => return Ok(existing),
                Err(LogError::NoTopic(_)) => {}
                Err(e) => return Err(e),
            }
            fs::create_dir_all(&log.dir).map_err(io_err(&log.dir))?;
            let meta = serde_json::to_vec(&TopicMeta { partitions: partitions.max(1) }).expect("serialisable");
            // Write then rename, and never replace: two processes racing to create the
            // topic agree on whichever landed first.
            let tmp = log.dir.join(format!(".topic.json.{}", std::process::id()));
            fs::write(&tmp, meta).map_err(io_err(&tmp))?;
            let linked = fs::hard_link(&tmp, log.meta_path());
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&log.meta_path())(e)),
            }
            log.partitions()
        })
        .await
    }

    async fn watermarks(&self) -> Result<Vec<Watermarks>, LogError> {
        let log = self.clone();
        blocking(move || log.watermarks_blocking()).await
    }

    async fn offsets_for_time(&self, timestamp_ms: i64) -> Result<Vec<Position>, LogError> {
        let log = self.clone();
        blocking(move || log.offsets_for_time_blocking(timestamp_ms)).await
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let log = self.clone();
        blocking(move || log.append_blocking(records)).await
    }

    async fn read_range(&self, range: RangeSpec, read_ahead: usize) -> Result<RecordStream, LogError> {
        let log = self.clone();
        let (data_path, index_path) =
            (self.partition_path(range.partition, "data"), self.partition_path(range.partition, "index"));
        blocking(move || {
            log.checked_partition(range.partition)?;
            let marks = Watermarks { partition: range.partition, low: 0, high: log.high_watermark(range.partition)? };
            check_range(&range, marks)
        })
        .await?;
        let (tx, rx) = batch_channel(read_ahead);
        if !range.is_empty() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = read_range_blocking(data_path, index_path, range, tx.clone()) {
                    let _ = tx.blocking_send(Err(e));
                }
            });
        }
        Ok(unbatched(rx))
    }
}
