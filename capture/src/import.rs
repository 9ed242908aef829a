//! Imports: pcap files, GoReplay files and access logs, read in a blocking thread, and
//! the recording an import can make of itself (`--recording`).
//!
//! An import's log messages are stamped with the time they are written (see
//! [`crate::output::Stamp`]), so a broker's retention counts from the import, not from
//! when the traffic happened; each record keeps its capture time for pacing.
//!
//! An import that makes a recording writes into a topic of its own beside `--log`
//! (`<topic>-<recording id>`): no other writer (a live capture, another import) can
//! interleave with it, so the recording is exactly the topic's offsets, one contiguous
//! range per partition.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use reprise_proto::v1::TrafficRecord;
use reprise_store::gor::{GorError, GorReader};
use reprise_store::log::{TrafficLog, sibling_topic};
use reprise_store::recording::{new_id, new_recording, tally};
use reprise_store::schema::{PartitionRange, Recording, RecordingState};
use tokio::sync::mpsc;

use crate::records::{RecordFilter, Unparseable};
use crate::source::{link_type, send_all, timestamp_ns};
use crate::{CaptureConfig, Counters, Pipeline};

/// Reads the file input of `config` into `tx`.
pub(crate) fn read_files(
    config: &CaptureConfig,
    tx: &mpsc::Sender<TrafficRecord>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    if let Some(path) = &config.pcap_file {
        read_pcap_file(config, path, tx, counters)
    } else if let Some(path) = &config.gor_file {
        import_gor(config, path, tx, &counters)
    } else {
        let http = Arc::new(config.http_config()?);
        crate::access_log::import(&config.access_log, &config.access, http, tx, &counters)
    }
}

fn read_pcap_file(
    config: &CaptureConfig,
    path: &Path,
    tx: &mpsc::Sender<TrafficRecord>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut capture =
        pcap::Capture::from_file(path).with_context(|| format!("cannot read pcap file {}", path.display()))?;
    if config.filter.is_some() || !config.port.is_empty() {
        capture.filter(&config.bpf(), true).with_context(|| format!("bad filter {:?}", config.bpf()))?;
    }
    let mut pipeline = Pipeline::new(config, link_type(capture.get_datalink())?, counters)?;
    let mut n = 0u64;
    loop {
        let packet = match capture.next_packet() {
            Ok(packet) => packet,
            Err(pcap::Error::NoMorePackets) => break,
            // A file cut short (tcpdump killed, a copy interrupted): keep everything before.
            Err(e) => {
                tracing::warn!("{} stops short after {n} packets ({e}): imported everything before", path.display());
                break;
            }
        };
        let ts = timestamp_ns(packet.header);
        pipeline.packet(ts, packet.data);
        n += 1;
        if n.is_multiple_of(256) {
            pipeline.expire(ts);
            send_all(tx, pipeline.take_records())?;
        }
    }
    pipeline.finish();
    send_all(tx, pipeline.take_records())
}

fn import_gor(
    config: &CaptureConfig,
    path: &Path,
    tx: &mpsc::Sender<TrafficRecord>,
    counters: &Counters,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read GoReplay file {}", path.display()))?;
    let http = config.http_config()?;
    let node = http.node.clone();
    let mut filter = RecordFilter::new(Arc::new(http));
    let (mut parsed, mut unparseable) = (0u64, Unparseable::default());
    for message in GorReader::new(std::io::BufReader::new(file)) {
        let message = match message {
            Ok(message) => message,
            // A malformed message is skipped: the reader goes on after its separator.
            Err(e @ GorError::BadHeader { .. }) => {
                unparseable.note(format!("{}: {e}", path.display()));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        parsed += 1;
        if let Some(record) = message.to_record(&node).and_then(|r| filter.apply(r)) {
            tx.blocking_send(record).map_err(|_| anyhow::anyhow!("the output stopped"))?;
        }
    }
    *counters.http.lock().expect("lock") = filter.stats;
    counters.unparseable_messages.store(unparseable.count, Ordering::Relaxed);
    unparseable.finish("GoReplay message", parsed)
}

/// The recording an import makes of itself.
pub(crate) struct ImportRecording {
    catalog: reprise_store::Catalog,
    id: String,
    name: String,
    /// What the input was: `pcap`, `gor` or `access-log` (the recording's `import` label).
    kind: &'static str,
    /// The import's own topic, as the recording names it (the URL given, not the
    /// capture's producer settings).
    log_url: String,
    /// The same topic with the producer settings, to write to.
    pub write_url: String,
}

impl ImportRecording {
    /// With `--recording`: checks the settings, opens the catalog and picks the id (and
    /// so the topic) before anything is imported.
    pub(crate) async fn prepare(config: &CaptureConfig) -> anyhow::Result<Option<ImportRecording>> {
        // `CaptureConfig::check` refused a recording without a catalog, or of a live capture.
        let (Some(name), Some(catalog_url)) = (&config.recording, &config.catalog) else { return Ok(None) };
        let catalog = reprise_store::Catalog::open(catalog_url)
            .await
            .with_context(|| format!("cannot open the catalog {}", reprise_store::redact_url(catalog_url)))?;
        let id = new_id("rec");
        let kind = match (&config.pcap_file, &config.gor_file) {
            (Some(_), _) => "pcap",
            (_, Some(_)) => "gor",
            _ => "access-log",
        };
        Ok(Some(ImportRecording {
            catalog,
            log_url: sibling_topic(&config.log, &id)?,
            write_url: sibling_topic(&config.log_url(), &id)?,
            id,
            name: name.clone(),
            kind,
        }))
    }

    /// The recording's own spool, so that nothing spooled by another run on this node
    /// ends up in its topic.
    pub(crate) fn spool_dir(&self, spool_dir: &Path) -> std::path::PathBuf {
        spool_dir.join(&self.id)
    }

    /// Once every record is stored: describes the import's topic as a complete recording
    /// and stores it in the catalog.
    pub(crate) async fn finish(self, log: &dyn TrafficLog, counters: &Counters) -> anyhow::Result<Recording> {
        let output = &counters.output;
        let (received, stored) = (output.received.load(Ordering::Relaxed), output.records.load(Ordering::Relaxed));
        if stored != received {
            anyhow::bail!(
                "{} of the {received} imported records are not in the traffic log (spooled or dropped): \
                 no recording was made",
                received - stored
            );
        }
        if stored == 0 {
            anyhow::bail!("the import stored no records: no recording was made");
        }
        let marks = log.watermarks().await.context("reading the import's topic")?;
        let ranges =
            marks.iter().map(|m| PartitionRange { partition: m.partition, start: m.low, end: m.high }).collect();
        let labels = BTreeMap::from([("import".to_string(), self.kind.to_string())]);
        let mut recording = new_recording(self.id, &self.name, labels, &self.log_url, ranges, RecordingState::Complete);
        tally(&mut recording, &marks);
        if recording.record_count != stored {
            anyhow::bail!("the import's topic holds {} records, {stored} were written", recording.record_count);
        }
        // The import saw every record: its exact time span (capture time) and size.
        let span = *output.span_ns.lock().expect("lock");
        recording.first_timestamp_ns = span.map(|(first, _)| first);
        recording.last_timestamp_ns = span.map(|(_, last)| last);
        recording.bytes = Some(output.bytes.load(Ordering::Relaxed));
        let ledger =
            reprise_store::recording::ledger_entry(&format!("import:{}", self.kind), &counters.catalog_counters());
        recording.ledger = Some(reprise_proto::v1::Ledger { nodes: vec![ledger] });
        self.catalog
            .put_if(&recording, 0)
            .await?
            .with_context(|| format!("a recording {} exists already", recording.id))?;
        tracing::info!(id = %recording.id, records = stored, log = %reprise_store::redact_url(&recording.log_url), "recording created");
        Ok(recording)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use reprise_proto::v1::{HttpProtocol, MessageKind};

    use super::*;
    use crate::h2::real_peers;
    use crate::pcap_writer::PcapWriter;
    use crate::reassembly::Direction;

    /// hyper's HTTP/2 client and server (prior knowledge) written to a pcap file, one
    /// segment per 1448 bytes of each write, then imported: every request and response
    /// comes out as an HTTP/2 record.
    #[tokio::test]
    async fn an_http2_exchange_in_a_pcap_file_becomes_its_records() {
        let (wire, received, responses) = real_peers::exchange().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h2.pcap");
        let mut pcap = PcapWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        // The server's port above the client's, as gRPC's is.
        let (client, server) = ((Ipv4Addr::new(10, 0, 0, 1), 40_000), (Ipv4Addr::new(10, 0, 0, 2), 50_051));
        let mut next_seq = [1u32, 1u32];
        pcap.segment(client, server, 0, true, false, b"").unwrap();
        pcap.segment(server, client, 0, true, false, b"").unwrap();
        for (direction, bytes) in &wire {
            let (side, src, dst) = match direction {
                Direction::ClientToServer => (0, client, server),
                Direction::ServerToClient => (1, server, client),
            };
            for payload in bytes.chunks(1448) {
                pcap.segment(src, dst, next_seq[side], false, false, payload).unwrap();
                next_seq[side] = next_seq[side].wrapping_add(payload.len() as u32);
            }
        }
        pcap.segment(client, server, next_seq[0], false, true, b"").unwrap();
        pcap.segment(server, client, next_seq[1], false, true, b"").unwrap();
        pcap.flush().unwrap();

        let mut config = CaptureConfig::for_log("file:///not-written");
        config.pcap_file = Some(path);
        config.track_responses = true;
        let counters = Arc::new(Counters::default());
        let (tx, mut rx) = mpsc::channel(1 << 10);
        let read = counters.clone();
        tokio::task::spawn_blocking(move || read_files(&config, &tx, read)).await.unwrap().unwrap();
        let mut records = Vec::new();
        while let Some(record) = rx.recv().await {
            records.push(record);
        }
        let requests = records.iter().filter(|r| r.kind() == MessageKind::Request).count();
        assert_eq!((requests, records.len() - requests), (received.len(), responses.len()));
        assert!(records.iter().all(|r| r.protocol() == HttpProtocol::Http2 && r.format_version == 2));
        assert!(records.iter().all(|r| r.connection_id == records[0].connection_id));
        let client_address = records.iter().find(|r| r.kind() == MessageKind::Request).unwrap().source.clone();
        assert_eq!(client_address, "10.0.0.1:40000");
        let report = counters.report();
        assert_eq!((report.h2_connections, report.requests, report.h2_mid_stream), (1, received.len() as u64, 0));
    }
}
