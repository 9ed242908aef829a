//! Live capture on an interface: one thread only moves packets out of the kernel, a
//! second one parses them.
//!
//! The reading thread uses libpcap with immediate mode off, so that on Linux the kernel
//! hands over whole TPACKET_V3 blocks, and copies packets into batches. It reads in
//! non-blocking mode and waits in poll(2) when nothing is ready: a blocking read may
//! never return on an idle interface, and the thread must see the stop signal.
//! A bounded queue ([`QUEUE_BATCHES`]) hands them to the parsing thread. When parsing falls
//! behind, the queue fills and the reading thread waits: the kernel buffer (`--buffer-mb`)
//! absorbs the burst, and what does not fit there is counted as kernel drops, never lost
//! silently.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Context;
use reprise_proto::v1::TrafficRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::source::{link_type, send_all, timestamp_ns};
use crate::{CaptureConfig, Counters, Pipeline};

/// Batches waiting for the parser: at most this many, each at most [`BATCH_BYTES`].
const QUEUE_BATCHES: usize = 64;
const BATCH_PACKETS: usize = 2048;
const BATCH_BYTES: usize = 1 << 20;
/// A batch goes to the parser at least this often, full or not.
const BATCH_AGE: Duration = Duration::from_millis(10);
/// libpcap's read timeout: how long the kernel lets a block fill before handing it over;
/// also the longest wait in poll(2).
const READ_TIMEOUT_MS: i32 = 20;
/// How often the kernel's drop counters and idle connections are looked at.
const TICK: Duration = Duration::from_millis(200);
/// After the stop signal, packets already captured are still read for at most this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Packets copied out of libpcap's buffer, back to back.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    /// (timestamp, end offset in `data`) per packet.
    packets: Vec<(i64, usize)>,
}

impl Batch {
    fn push(&mut self, ts_ns: i64, frame: &[u8]) {
        self.data.extend_from_slice(frame);
        self.packets.push((ts_ns, self.data.len()));
    }

    fn is_full(&self) -> bool {
        self.packets.len() >= BATCH_PACKETS || self.data.len() >= BATCH_BYTES
    }

    fn frames(&self) -> impl Iterator<Item = (i64, &[u8])> {
        let starts = std::iter::once(0).chain(self.packets.iter().map(|&(_, end)| end));
        self.packets.iter().zip(starts).map(|(&(ts, end), start)| (ts, &self.data[start..end]))
    }
}

/// Captures from `interface` until `shutdown`, then reads what the kernel still holds.
pub(crate) async fn capture_live(
    config: &CaptureConfig,
    interface: &str,
    tx: mpsc::Sender<TrafficRecord>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let capture = open(config, interface)?;
    let pipeline = Pipeline::new(config, link_type(capture.get_datalink())?, counters.clone())?;
    tracing::info!(interface, filter = %config.bpf(), "capturing");
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (batches_tx, batches_rx) = sync_channel(QUEUE_BATCHES);
    let reader = {
        let (stop, counters, interface) = (stop.clone(), counters.clone(), interface.to_string());
        tokio::task::spawn_blocking(move || {
            read_packets(capture, &batches_tx, &counters, &stop)
                .with_context(|| format!("cannot capture on {interface}"))
        })
    };
    let parser = tokio::task::spawn_blocking(move || parse_batches(pipeline, &batches_rx, &tx));
    let stopper = tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.store(true, Ordering::Relaxed);
    });
    // The parser ends when the reader does (the queue closes), or when the output stops.
    let (read, parsed) = (reader.await?, parser.await?);
    stopper.abort();
    read.and(parsed)
}

fn open(config: &CaptureConfig, interface: &str) -> anyhow::Result<pcap::Capture<pcap::Active>> {
    let cannot = || format!("cannot capture on {interface}");
    let mut capture = pcap::Capture::from_device(interface)
        .with_context(cannot)?
        .promisc(config.promisc)
        .snaplen(config.snaplen)
        .buffer_size(config.buffer_mb.saturating_mul(1 << 20))
        .immediate_mode(false)
        .timeout(READ_TIMEOUT_MS)
        .open()
        .with_context(cannot)?;
    capture.filter(&config.bpf(), true).with_context(|| format!("bad filter {:?}", config.bpf()))?;
    capture.setnonblock().with_context(cannot)
}

/// The reading thread: packets into batches, batches to the parser, and the kernel's
/// drop counters into `counters`; after `stop`, what the kernel still holds (bounded).
fn read_packets(
    mut capture: pcap::Capture<pcap::Active>,
    batches: &SyncSender<Batch>,
    counters: &Counters,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut batch = Batch::default();
    let (mut sent_at, mut ticked_at) = (Instant::now(), Instant::now());
    let mut drain_until: Option<Instant> = None;
    loop {
        let idle = match capture.next_packet() {
            Ok(packet) => {
                batch.push(timestamp_ns(packet.header), packet.data);
                false
            }
            Err(pcap::Error::TimeoutExpired) => true,
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if !batch.packets.is_empty() && (idle || batch.is_full() || now - sent_at >= BATCH_AGE) {
            if batches.send(std::mem::take(&mut batch)).is_err() {
                return Ok(()); // the parser stopped, and says why
            }
            sent_at = now;
        }
        if now - ticked_at >= TICK {
            ticked_at = now;
            record_drops(&mut capture, counters);
        }
        if stop.load(Ordering::Relaxed) {
            let until = *drain_until.get_or_insert(now + DRAIN_LIMIT);
            if idle || now >= until {
                record_drops(&mut capture, counters);
                let _ = batches.send(batch);
                return Ok(());
            }
        }
        if idle {
            wait_readable(capture.as_fd());
        }
    }
}

/// Waits until the capture has packets to read, at most [`READ_TIMEOUT_MS`].
fn wait_readable(fd: BorrowedFd<'_>) {
    let mut ready = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, alive for the whole call; the fd is borrowed from the
    // open capture. An error or a timeout only means the next read finds nothing.
    unsafe { libc::poll(&mut ready, 1, READ_TIMEOUT_MS) };
}

fn record_drops(capture: &mut pcap::Capture<pcap::Active>, counters: &Counters) {
    if let Ok(stats) = capture.stats() {
        counters.kernel_drops.store(u64::from(stats.dropped), Ordering::Relaxed);
        counters.interface_drops.store(u64::from(stats.if_dropped), Ordering::Relaxed);
    }
}

/// The parsing thread: every packet through the pipeline, records to the output.
fn parse_batches(
    mut pipeline: Pipeline,
    batches: &Receiver<Batch>,
    tx: &mpsc::Sender<TrafficRecord>,
) -> anyhow::Result<()> {
    let mut expired_at = Instant::now();
    loop {
        match batches.recv_timeout(TICK) {
            Ok(batch) => batch.frames().for_each(|(ts, frame)| pipeline.packet(ts, frame)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if expired_at.elapsed() >= TICK {
            expired_at = Instant::now();
            pipeline.expire(reprise_store::now_ns());
        }
        send_all(tx, pipeline.take_records())?;
    }
    pipeline.finish();
    send_all(tx, pipeline.take_records())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_each_frame_with_its_timestamp() {
        let mut batch = Batch::default();
        for (ts, frame) in [(1, &b"abc"[..]), (2, b""), (3, b"defg")] {
            batch.push(ts, frame);
        }
        let frames: Vec<(i64, &[u8])> = batch.frames().collect();
        assert_eq!(frames, vec![(1, &b"abc"[..]), (2, b""), (3, b"defg")]);
        assert!(!batch.is_full());
    }
}
