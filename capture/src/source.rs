//! The task set of a run: the input (a live interface here; files in `import.rs`), the
//! output, catalog registration, metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
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
        tokio::spawn(serve_metrics(listener, counters.clone(), background.clone()));
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

async fn serve_metrics(listener: tokio::net::TcpListener, counters: Arc<Counters>, stop: CancellationToken) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let counters = counters.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| {
                let body = metrics_text(&counters);
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

fn metrics_text(counters: &Counters) -> String {
    let r = counters.report();
    let spool_bytes = counters.output.spool_bytes.load(Ordering::Relaxed);
    [
        ("capture_packets_total", "counter", r.packets),
        ("capture_kernel_drops_total", "counter", r.kernel_drops),
        ("capture_malformed_packets_total", "counter", r.malformed_packets),
        ("capture_requests_total", "counter", r.requests),
        ("capture_responses_total", "counter", r.responses),
        ("capture_records_stored_total", "counter", r.records_stored),
        ("capture_records_spooled_total", "counter", r.records_spooled),
        ("capture_records_dropped_total", "counter", r.records_dropped),
        ("capture_truncated_bodies_total", "counter", r.truncated_bodies),
        ("capture_spool_bytes", "gauge", spool_bytes),
    ]
    .iter()
    .map(|(name, kind, value)| format!("# TYPE reprise_{name} {kind}\nreprise_{name} {value}\n"))
    .collect()
}

/// A log URL as errors show it: its query holds client settings, the capture's own
/// among them, and may hold secrets.
fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
