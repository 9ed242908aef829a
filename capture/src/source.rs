//! The task set of a run: the input (a live interface here; files in `import.rs`), the
//! output, catalog registration, metrics (`/metrics`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use reprise_process::metrics::{Family, Format, Unit, Value};
use reprise_proto::v1::TrafficRecord;
use reprise_store::redact_url;
use reprise_store::schema::CaptureInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::import::{self, ImportRecording};
use crate::packet::LinkType;
use crate::{CaptureConfig, CaptureReport, Counters, output};

/// Runs a capture until its input ends (files) or `shutdown` fires (live); returns what
/// it did once every record is stored (or spooled).
pub async fn run(config: CaptureConfig, shutdown: CancellationToken) -> anyhow::Result<CaptureReport> {
    run_notify(config, shutdown, None).await
}

/// [`run`], telling `ready` once packets are being captured (live) or read (files).
pub async fn run_notify(
    config: CaptureConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<CaptureReport> {
    config.check()?;
    let recording = ImportRecording::prepare(&config).await?;
    let log_url = recording.as_ref().map_or_else(|| config.log_url(), |r| r.write_url.clone());
    let log =
        reprise_store::open_log(&log_url).await.with_context(|| format!("cannot open {}", redact_url(&config.log)))?;
    log.ensure_topic(config.partitions)
        .await
        .with_context(|| format!("cannot create the traffic topic in {}", without_query(&log_url)))?;
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel(1 << 16);
    let mut output_config = config.output_config();
    if let Some(recording) = &recording {
        output_config.spool_dir = recording.spool_dir(&output_config.spool_dir);
    }
    let output = tokio::spawn(output::run(log.clone(), rx, output_config, counters.output.clone()));
    let background = CancellationToken::new();
    if let Some(catalog) = &config.catalog {
        tokio::spawn(register(catalog.clone(), config.clone(), counters.clone(), background.clone()));
    }
    if let Some(addr) = config.http {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let counters = counters.clone();
        let stop = background.clone().cancelled_owned();
        tokio::spawn(reprise_process::metrics::serve(listener, move |format| metrics_text(&counters, format), stop));
    }
    let input = if let Some(interface) = config.interface.clone() {
        crate::live::capture_live(&config, &interface, tx, counters.clone(), shutdown, ready).await
    } else {
        let (config, counters) = (config.clone(), counters.clone());
        tokio::task::spawn_blocking(move || import::read_files(&config, &tx, counters)).await?
    };
    let stored = output.await?;
    background.cancel();
    input?;
    stored.context("writing to the traffic log or its spool failed")?;
    let mut report = counters.report();
    if report.truncated_bodies > 0 {
        // Replays send them cut (and say so); the capture says it first.
        tracing::warn!(
            "{} bodies longer than --max-body ({} bytes) were stored cut, flagged in their records",
            report.truncated_bodies,
            config.max_body
        );
    }
    if let Some(recording) = recording {
        report.recording_id = Some(recording.finish(&*log, &counters).await?.id);
    }
    Ok(report)
}

pub(crate) fn send_all(tx: &mpsc::Sender<TrafficRecord>, records: Vec<TrafficRecord>) -> anyhow::Result<()> {
    for record in records {
        tx.blocking_send(record).map_err(|_| anyhow::anyhow!("the output stopped"))?;
    }
    Ok(())
}

// `timeval` fields are i64 on the 64-bit targets Reprise builds for.
pub(crate) fn timestamp_ns(header: &pcap::PacketHeader) -> i64 {
    header.ts.tv_sec * 1_000_000_000 + header.ts.tv_usec * 1_000
}

pub(crate) fn link_type(linktype: pcap::Linktype) -> anyhow::Result<LinkType> {
    LinkType::from_pcap(linktype.0).ok_or_else(|| {
        anyhow::anyhow!(
            "unsupported link type {} ({}): Ethernet, Linux cooked, loopback and raw IP are supported",
            linktype.0,
            linktype.get_name().unwrap_or_default()
        )
    })
}

/// Keeps this capture node and its counters in the catalog under a lease.
async fn register(catalog_url: String, config: CaptureConfig, counters: Arc<Counters>, stop: CancellationToken) {
    let node = config.node();
    let started_at_ms = reprise_store::now_ms();
    let mut registration: Option<(reprise_store::Catalog, reprise_store::Lease)> = None;
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => break,
        }
        if registration.as_ref().is_none_or(|(_, lease)| lease.is_lost()) {
            let attempt = async {
                let catalog = reprise_store::Catalog::open(&catalog_url).await?;
                let lease = catalog.lease(Duration::from_secs(10)).await?;
                Ok::<_, reprise_store::CatalogError>((catalog, lease))
            };
            match attempt.await {
                Ok(r) => registration = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register in the catalog; retrying");
                    continue;
                }
            }
        }
        let (catalog, lease) = registration.as_ref().expect("registered above");
        let info = CaptureInfo {
            id: node.clone(),
            interface: config.interface.clone().unwrap_or_default(),
            filter: config.bpf(),
            log_url: config.log.clone(),
            counters: Some(counters.catalog_counters()),
            started_at_ms,
            updated_at_ms: reprise_store::now_ms(),
        };
        if let Err(e) = catalog.put_leased(&info, lease).await {
            tracing::warn!(error = %e, "cannot update the catalog");
        }
    }
    if let Some((_, lease)) = registration {
        let _ = lease.revoke().await;
    }
}

/// The capture's counters in `format`.
fn metrics_text(counters: &Counters, format: Format) -> String {
    let r = counters.report();
    let counter = |name, help, n: u64| Family::counter(name, help).single(Value::Counter(n));
    let families = vec![
        counter("capture_packets", "Packets read from the interface or files.", r.packets),
        counter("capture_kernel_drops", "Packets the kernel dropped before the capture read them.", r.kernel_drops),
        counter("capture_malformed_packets", "Packets that did not decode (skipped).", r.malformed_packets),
        counter("capture_requests", "HTTP requests framed.", r.requests),
        counter("capture_responses", "HTTP responses framed.", r.responses),
        counter("capture_records_stored", "Records stored in the traffic log.", r.records_stored),
        counter(
            "capture_records_spooled",
            "Records written to the disk spool (the log was unreachable).",
            r.records_spooled,
        ),
        counter("capture_records_dropped", "Records dropped: the spool was full.", r.records_dropped),
        counter("capture_truncated_bodies", "Bodies stored cut at --max-body.", r.truncated_bodies),
        counter("capture_gaps", "Stream gaps: bytes the capture never saw.", r.gaps),
        counter("capture_resyncs", "Resynchronisations of the HTTP framing after garbage or a gap.", r.resyncs),
        counter("capture_h2_connections", "Connections decoded as HTTP/2.", r.h2_connections),
        counter(
            "capture_h2_mid_stream",
            "HTTP/2 connections seen mid-stream: not decoded (HPACK state unknown).",
            r.h2_mid_stream,
        ),
        counter(
            "capture_h2_errors",
            "HTTP/2 connections given up on a protocol or HPACK error, or a frame over the limits.",
            r.h2_errors,
        ),
        counter("capture_h2_streams_reset", "HTTP/2 streams a peer reset.", r.h2_streams_reset),
        counter(
            "capture_h2_streams_left_out",
            "HTTP/2 streams left out: malformed, or over the limits.",
            r.h2_streams_left_out,
        ),
        Family::gauge("capture_spool", "Bytes waiting in the disk spool.")
            .unit(Unit::Bytes)
            .single(Value::Gauge(counters.output.spool_bytes.load(Ordering::Relaxed) as f64)),
    ];
    reprise_process::metrics::render(families, format)
}

/// A log URL as errors show it: its query holds client settings, the capture's own
/// among them, and may hold secrets.
fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_have_help_types_and_values() {
        let counters = Counters::default();
        counters.output.spool_bytes.store(4096, Ordering::Relaxed);
        let text = metrics_text(&counters, Format::OpenMetrics);
        for line in [
            "# HELP reprise_capture_kernel_drops Packets the kernel dropped before the capture read them.",
            "# TYPE reprise_capture_kernel_drops counter",
            "reprise_capture_kernel_drops_total 0",
            "reprise_capture_records_dropped_total 0",
            "# TYPE reprise_capture_spool_bytes gauge",
            "reprise_capture_spool_bytes 4096.0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
