//! The Reprise capture daemon: passive capture of HTTP/1.x and HTTP/2 cleartext
//! traffic (live with libpcap, or from pcap files), and imports of GoReplay files and
//! web-server access logs, into the traffic log. Nothing touches the application:
//! packets are copied by the kernel, reassembled per TCP connection, framed (HTTP/1.x)
//! or decoded (HTTP/2) into requests and responses, filtered and redacted, then appended
//! to the log keyed by connection.

pub mod access_log;
#[doc(hidden)]
pub mod fuzzing;
pub mod h2;
pub mod http;
mod import;
mod live;
pub mod output;
pub mod packet;
pub mod pcap_writer;
pub mod policy;
pub mod reassembly;
pub mod records;
mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use regex::Regex;
use reprise_proto::v1::TrafficRecord;

use crate::h2::H2Stats;
use crate::http::{HttpConfig, HttpConnection, HttpStats};
use crate::output::{OutputConfig, OutputCounters, Stamp};
use crate::packet::{LinkType, Skip};
use crate::policy::Redaction;
use crate::reassembly::{FlowInfo, Reassembler, ReassemblyConfig, ReassemblyStats};
use reprise_rules::selection::{Selection, parse_header_rule, regex_reason};

pub use crate::source::{run, run_notify};

/// Passive HTTP capture into the traffic log.
#[derive(Parser, Debug, Clone)]
#[command(name = "reprise-capture", version)]
pub struct CaptureConfig {
    /// TOML file with any of these settings (keys are the long flag names).
    #[arg(long, env = "REPRISE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Traffic log URL: kafka://host:port[,host:port]/topic or file://PATH.
    #[arg(long, env = "REPRISE_LOG")]
    pub log: String,
    /// Network interface to capture live (e.g. eth0, lo).
    #[arg(long, env = "REPRISE_CAPTURE_INTERFACE", group = "input")]
    pub interface: Option<String>,
    /// Read a pcap file (tcpdump, Wireshark) instead of capturing live.
    #[arg(long, env = "REPRISE_CAPTURE_PCAP_FILE", group = "input")]
    pub pcap_file: Option<PathBuf>,
    /// Import a GoReplay file instead of capturing.
    #[arg(long, env = "REPRISE_CAPTURE_GOR_FILE", group = "input")]
    pub gor_file: Option<PathBuf>,
    /// Import web-server access logs instead of capturing (`-` for stdin, gzip read as
    /// such); repeatable (one in the environment). Lines are sorted by time.
    #[arg(long, env = "REPRISE_CAPTURE_ACCESS_LOG", group = "input")]
    pub access_log: Vec<PathBuf>,
    /// Make the import a recording of its own with this name (needs --catalog): its
    /// records go to a topic of their own beside --log; prints the recording's id.
    #[arg(long, env = "REPRISE_CAPTURE_RECORDING")]
    pub recording: Option<String>,
    #[command(flatten)]
    pub access: access_log::AccessLogArgs,
    /// Server port(s) to capture (builds the BPF filter); repeatable or comma-separated.
    #[arg(long, env = "REPRISE_CAPTURE_PORT", value_delimiter = ',')]
    pub port: Vec<u16>,
    /// BPF filter, instead of --port.
    #[arg(long, env = "REPRISE_CAPTURE_FILTER")]
    pub filter: Option<String>,
    /// Bytes captured per packet.
    #[arg(long, env = "REPRISE_CAPTURE_SNAPLEN", default_value_t = 262_144)]
    pub snaplen: i32,
    /// Kernel capture buffer, MiB.
    #[arg(long, env = "REPRISE_CAPTURE_BUFFER_MB", default_value_t = 64)]
    pub buffer_mb: i32,
    /// Put the interface in promiscuous mode.
    #[arg(long, env = "REPRISE_CAPTURE_PROMISC")]
    pub promisc: bool,
    /// Also store responses, paired with their requests.
    #[arg(long, env = "REPRISE_CAPTURE_TRACK_RESPONSES")]
    pub track_responses: bool,
    /// Body bytes kept per message; longer bodies are cut and flagged.
    #[arg(long, env = "REPRISE_CAPTURE_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Capture node id [default: the host name].
    #[arg(long, env = "REPRISE_CAPTURE_NODE")]
    pub node: Option<String>,
    /// Only these methods; repeatable or comma-separated.
    #[arg(long, env = "REPRISE_CAPTURE_ALLOW_METHOD", value_delimiter = ',')]
    pub allow_method: Vec<String>,
    /// Never these methods; repeatable or comma-separated.
    #[arg(long, env = "REPRISE_CAPTURE_DENY_METHOD", value_delimiter = ',')]
    pub deny_method: Vec<String>,
    /// Only requests whose target matches this regex; repeatable (one in the environment).
    #[arg(long, env = "REPRISE_CAPTURE_ALLOW_URL")]
    pub allow_url: Vec<String>,
    /// Never requests whose target matches this regex; repeatable (one in the environment).
    #[arg(long, env = "REPRISE_CAPTURE_DENY_URL")]
    pub deny_url: Vec<String>,
    /// Only requests with a header matching NAME:REGEX; repeatable (one in the environment).
    #[arg(long, env = "REPRISE_CAPTURE_ALLOW_HEADER")]
    pub allow_header: Vec<String>,
    /// Never requests with a header matching NAME:REGEX; repeatable (one in the environment).
    #[arg(long, env = "REPRISE_CAPTURE_DENY_HEADER")]
    pub deny_header: Vec<String>,
    /// Share of connections to keep, 0 to 1 (by connection hash).
    #[arg(long, env = "REPRISE_CAPTURE_SAMPLE", default_value_t = 1.0)]
    pub sample: f64,
    /// Headers whose values are masked before storage; repeatable or comma-separated.
    #[arg(
        long,
        env = "REPRISE_CAPTURE_REDACT_HEADER",
        value_delimiter = ',',
        default_values_t = ["Authorization".to_string(), "Cookie".into(), "Set-Cookie".into(), "Proxy-Authorization".into()]
    )]
    pub redact_header: Vec<String>,
    /// JSON body fields whose values are masked before storage; repeatable (one in the environment).
    #[arg(long, env = "REPRISE_CAPTURE_REDACT_JSON_FIELD")]
    pub redact_json_field: Vec<String>,
    /// The mask that replaces redacted values.
    #[arg(long, env = "REPRISE_CAPTURE_MASK", default_value = "[REDACTED]")]
    pub mask: String,
    /// Where records wait while the log is unreachable [default: TMPDIR/reprise-spool-NODE].
    #[arg(long, env = "REPRISE_CAPTURE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Spool budget, MiB; beyond it records are dropped and counted.
    #[arg(long, env = "REPRISE_CAPTURE_SPOOL_MAX_MB", default_value_t = 1024)]
    pub spool_max_mb: u64,
    /// Partitions of the traffic topic if the capture creates it.
    #[arg(long, env = "REPRISE_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Catalog URL, to register this capture node and its counters (optional).
    #[arg(long, env = "REPRISE_CATALOG")]
    pub catalog: Option<String>,
    /// Address for Prometheus metrics (/metrics).
    #[arg(long, env = "REPRISE_CAPTURE_HTTP")]
    pub http: Option<SocketAddr>,
    /// Connections idle this long are flushed, seconds.
    #[arg(long, env = "REPRISE_CAPTURE_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_timeout_secs: u64,
    #[command(flatten)]
    pub logging: reprise_process::LogArgs,
}

impl CaptureConfig {
    /// A configuration with defaults for everything but the log (tests, the demo).
    /// The environment is not read: `REPRISE_*` variables are meant for the daemon.
    pub fn for_log(log: &str) -> CaptureConfig {
        reprise_process::parse_defaults_with(["--log", log])
    }

    pub(crate) fn node(&self) -> String {
        self.node.clone().unwrap_or_else(reprise_process::host_name)
    }

    /// The BPF filter for live capture.
    pub(crate) fn bpf(&self) -> String {
        if let Some(filter) = &self.filter {
            return filter.clone();
        }
        if self.port.is_empty() {
            return "tcp".into();
        }
        let ports: Vec<String> = self.port.iter().map(|p| format!("port {p}")).collect();
        format!("tcp and ({})", ports.join(" or "))
    }

    /// Whether this run imports files (rather than capturing live).
    pub(crate) fn is_import(&self) -> bool {
        self.interface.is_none()
    }

    /// Refuses settings that cannot work before anything is opened or read.
    pub(crate) fn check(&self) -> Result<(), UsageError> {
        let inputs = [self.interface.is_some(), self.pcap_file.is_some(), self.gor_file.is_some()];
        if !inputs.contains(&true) && self.access_log.is_empty() {
            return Err(UsageError(
                "nothing to capture: give --interface, --pcap-file, --gor-file or --access-log".into(),
            ));
        }
        self.http_config()?;
        access_log::JsonFields::new(&self.access.access_log_field).map_err(UsageError)?;
        if self.recording.is_some() && !self.is_import() {
            return Err(UsageError(
                "--recording is for imports (--pcap-file, --gor-file, --access-log); \
                 record a live capture with `ctl record start` and `ctl record stop`"
                    .into(),
            ));
        }
        if self.recording.is_some() && self.catalog.is_none() {
            return Err(UsageError("--recording needs --catalog: the recording is kept in the catalog".into()));
        }
        Ok(())
    }

    pub(crate) fn http_config(&self) -> Result<HttpConfig, UsageError> {
        let regexes = |list: &[String]| -> Result<Vec<Regex>, UsageError> {
            list.iter()
                .map(|r| Regex::new(r).map_err(|e| UsageError(format!("bad URL pattern {r:?}: {}", regex_reason(&e)))))
                .collect()
        };
        let headers = |list: &[String]| -> Result<Vec<(String, Regex)>, UsageError> {
            list.iter().map(|r| parse_header_rule(r).map_err(UsageError)).collect()
        };
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(UsageError(format!("--sample must be between 0 and 1, got {}", self.sample)));
        }
        Ok(HttpConfig {
            node: self.node(),
            run: reprise_store::now_ns() as u64 / 1_000_000,
            max_body: self.max_body,
            track_responses: self.track_responses,
            selection: Selection {
                allow_methods: self.allow_method.clone(),
                deny_methods: self.deny_method.clone(),
                allow_urls: regexes(&self.allow_url)?,
                deny_urls: regexes(&self.deny_url)?,
                allow_headers: headers(&self.allow_header)?,
                deny_headers: headers(&self.deny_header)?,
                sample: self.sample,
            },
            redaction: Redaction {
                headers: self.redact_header.clone(),
                json_fields: self.redact_json_field.clone(),
                mask: self.mask.clone(),
            },
        })
    }

    pub(crate) fn output_config(&self) -> OutputConfig {
        OutputConfig {
            stamp: if self.is_import() { Stamp::WriteTime } else { Stamp::CaptureTime },
            spool_dir: self
                .spool_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("reprise-spool-{}", self.node()))),
            spool_max_bytes: self.spool_max_mb << 20,
            batch_records: 1000,
            linger: Duration::from_millis(20),
            drain_on_exit: Duration::from_secs(10),
        }
    }

    /// The log URL with the producer settings capture needs on Kafka: failures surface
    /// within seconds (so records go to the spool), and order per partition is kept.
    pub(crate) fn log_url(&self) -> String {
        if !self.log.starts_with("kafka://") {
            return self.log.clone();
        }
        let mut url = self.log.clone();
        for (key, value) in
            [("message.timeout.ms", "5000"), ("max.in.flight.requests.per.connection", "1"), ("linger.ms", "10")]
        {
            if !url.contains(&format!("{key}=")) {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("{key}={value}"));
            }
        }
        url
    }
}

/// A setting that cannot work, found before anything is opened: the binary exits 2 for
/// it, as for clap's own errors (1 is for what went wrong at run time).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Everything the capture counts.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets: AtomicU64,
    pub kernel_drops: AtomicU64,
    pub interface_drops: AtomicU64,
    pub not_tcp: AtomicU64,
    pub malformed_packets: AtomicU64,
    pub fragments: AtomicU64,
    /// Access-log lines that did not parse.
    pub unparseable_lines: AtomicU64,
    /// GoReplay messages that did not parse.
    pub unparseable_messages: AtomicU64,
    pub http: std::sync::Mutex<HttpStats>,
    pub h2: std::sync::Mutex<H2Stats>,
    pub reassembly: std::sync::Mutex<ReassemblyStats>,
    pub output: Arc<OutputCounters>,
}

/// What a finished capture did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureReport {
    pub packets: u64,
    pub kernel_drops: u64,
    pub malformed_packets: u64,
    pub requests: u64,
    pub responses: u64,
    pub records_stored: u64,
    pub records_spooled: u64,
    pub records_dropped: u64,
    pub truncated_bodies: u64,
    pub filtered: u64,
    pub resyncs: u64,
    pub gaps: u64,
    pub unparseable_lines: u64,
    pub unparseable_messages: u64,
    /// Connections decoded as HTTP/2.
    pub h2_connections: u64,
    /// HTTP/2 connections seen mid-stream: not decoded (HPACK state unknown).
    pub h2_mid_stream: u64,
    /// HTTP/2 connections given up on a protocol or HPACK error, or a frame or header
    /// block over the limits.
    pub h2_errors: u64,
    /// HTTP/2 streams a peer reset.
    pub h2_streams_reset: u64,
    /// HTTP/2 streams left out: malformed, or over the limits (streams open at once,
    /// header list size).
    pub h2_streams_left_out: u64,
    /// The recording an import made (`--recording`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
}

impl CaptureReport {
    /// Input skipped as unreadable: packets, access-log lines, GoReplay messages.
    pub fn malformed(&self) -> u64 {
        self.malformed_packets + self.unparseable_lines + self.unparseable_messages
    }
}

impl Counters {
    /// The counters a capture node publishes in the catalog (and a recording's ledger
    /// is counted from).
    pub fn catalog_counters(&self) -> reprise_proto::v1::CaptureCounters {
        let report = self.report();
        reprise_proto::v1::CaptureCounters {
            packets: report.packets,
            kernel_drops: report.kernel_drops,
            own_drops: report.records_dropped,
            records: report.records_stored,
            bytes: self.output.bytes.load(Ordering::Relaxed),
            spool_bytes: self.output.spool_bytes.load(Ordering::Relaxed),
            gaps: report.gaps,
            resyncs: report.resyncs,
            truncated_bodies: report.truncated_bodies,
            malformed: report.malformed(),
            h2_connections: report.h2_connections,
            h2_mid_stream: report.h2_mid_stream,
            h2_errors: report.h2_errors,
            h2_streams_reset: report.h2_streams_reset,
            h2_streams_left_out: report.h2_streams_left_out,
        }
    }

    pub fn report(&self) -> CaptureReport {
        let http = *self.http.lock().expect("lock");
        let h2 = *self.h2.lock().expect("lock");
        let reassembly = *self.reassembly.lock().expect("lock");
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CaptureReport {
            packets: load(&self.packets),
            kernel_drops: load(&self.kernel_drops),
            malformed_packets: load(&self.malformed_packets),
            requests: http.requests,
            responses: http.responses,
            records_stored: load(&self.output.records),
            records_spooled: load(&self.output.spooled),
            records_dropped: load(&self.output.dropped),
            truncated_bodies: http.truncated_bodies,
            filtered: http.filtered,
            resyncs: http.resyncs,
            gaps: reassembly.gaps,
            unparseable_lines: load(&self.unparseable_lines),
            unparseable_messages: load(&self.unparseable_messages),
            h2_connections: http.h2_connections,
            h2_mid_stream: h2.joined_mid_stream,
            h2_errors: h2.protocol_errors + h2.hpack_errors + h2.over_limits,
            h2_streams_reset: h2.streams_reset,
            h2_streams_left_out: h2.malformed_streams + h2.dropped_streams_over_cap + h2.headers_over_limit,
            recording_id: None,
        }
    }
}

type Handlers = Box<dyn FnMut(&FlowInfo) -> HttpConnection + Send>;

/// Packets in, traffic records out.
pub struct Pipeline {
    link: LinkType,
    reassembler: Reassembler<HttpConnection, Handlers>,
    emitted: http::Emitted,
    counters: Arc<Counters>,
}

impl Pipeline {
    pub fn new(config: &CaptureConfig, link: LinkType, counters: Arc<Counters>) -> anyhow::Result<Pipeline> {
        let http = Arc::new(config.http_config()?);
        let reassembly = ReassemblyConfig {
            idle_timeout_ns: config.idle_timeout_secs as i64 * 1_000_000_000,
            server_ports: config.port.clone(),
            ..ReassemblyConfig::default()
        };
        let handlers: Handlers = Box::new(move |flow| HttpConnection::new(http.clone(), flow));
        Ok(Pipeline {
            link,
            reassembler: Reassembler::new(reassembly, handlers),
            emitted: Default::default(),
            counters,
        })
    }

    pub fn packet(&mut self, ts_ns: i64, frame: &[u8]) {
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        match packet::decode(self.link, ts_ns, frame) {
            Ok(segment) => self.reassembler.segment(&segment, &mut self.emitted),
            Err(Skip::NotTcp) => {
                self.counters.not_tcp.fetch_add(1, Ordering::Relaxed);
            }
            Err(Skip::Malformed) => {
                self.counters.malformed_packets.fetch_add(1, Ordering::Relaxed);
            }
            Err(Skip::Fragment) => {
                self.counters.fragments.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Flushes connections idle since before `now_ns` minus the idle timeout.
    pub fn expire(&mut self, now_ns: i64) {
        self.reassembler.expire(now_ns, &mut self.emitted);
    }

    /// Flushes every connection (end of input).
    pub fn finish(&mut self) {
        self.reassembler.flush_all(&mut self.emitted);
    }

    /// Records completed so far; also publishes the framing counters.
    pub fn take_records(&mut self) -> Vec<TrafficRecord> {
        *self.counters.http.lock().expect("lock") = self.emitted.stats;
        *self.counters.h2.lock().expect("lock") = self.emitted.h2.stats;
        *self.counters.reassembly.lock().expect("lock") = self.reassembler.stats;
        std::mem::take(&mut self.emitted.records)
    }
}
