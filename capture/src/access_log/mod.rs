//! Web-server access logs as an input: every line a request, in time order.
//!
//! Lines are read from every file (or stdin; gzip is recognised by its magic bytes),
//! parsed (`parse.rs` for the Common and Combined Log Formats, `json.rs` for JSON lines,
//! `time.rs` for their timestamps), turned into HTTP/1.1 requests, passed through the
//! capture's selection and redaction ([`crate::records::RecordFilter`]) and sorted by
//! (time, file, line) with bounded memory (`sort.rs`) before they are appended: logs of
//! several servers, or one file concatenated from several, are not in time order.
//! Lines that do not parse are counted and the first few reported; only an input where
//! no line parses is an error.

mod json;
pub mod parse;
pub mod sort;
pub mod time;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use reprise_proto::HTTP1_TRAFFIC_FORMAT_VERSION;
use reprise_proto::v1::{MessageKind, TrafficRecord};
use tokio::sync::mpsc;

pub use self::json::JsonFields;
pub use self::parse::{Format, LogLine};
use self::sort::{ExternalSort, Key};
use crate::Counters;
use crate::http::HttpConfig;
use crate::records::{RecordFilter, Unparseable};
use crate::source::send_all;

/// Records handed to the output at once.
const BATCH: usize = 256;

/// How access logs are read.
#[derive(clap::Args, Debug, Clone)]
pub struct AccessLogArgs {
    /// Format of the access logs: auto (per line), combined, common (nginx, Apache) or json.
    #[arg(long, env = "REPRISE_CAPTURE_ACCESS_LOG_FORMAT", value_enum, default_value = "auto")]
    pub access_log_format: Format,
    /// JSON access logs: the field holding a part of the request, as ROLE=NAME (roles: time,
    /// method, url, request, path, query, host, user_agent, referer, headers, body,
    /// client; NAME may be a dotted path); repeatable or comma-separated [default: common
    /// names such as time/msec, method/request_method, url/request_uri].
    #[arg(long, env = "REPRISE_CAPTURE_ACCESS_LOG_FIELD", value_delimiter = ',')]
    pub access_log_field: Vec<String>,
    /// Host header of access-log requests whose log does not name the host.
    #[arg(long, env = "REPRISE_CAPTURE_ACCESS_LOG_HOST", default_value = "localhost")]
    pub access_log_host: String,
    /// Memory for sorting access-log lines by time, MiB; beyond it sorted runs go to disk.
    #[arg(long, env = "REPRISE_CAPTURE_ACCESS_LOG_SORT_MB", default_value_t = 256)]
    pub access_log_sort_mb: usize,
    /// Where sorted runs of access-log lines are spilled [default: TMPDIR].
    #[arg(long, env = "REPRISE_CAPTURE_ACCESS_LOG_SPILL_DIR")]
    pub access_log_spill_dir: Option<PathBuf>,
}

/// Turns lines into requests.
struct Lines {
    format: Format,
    json: JsonFields,
    http: Arc<HttpConfig>,
    default_host: String,
    parsed: u64,
    unparseable: Unparseable,
}

impl Lines {
    fn parse(&self, line: &[u8]) -> Result<LogLine, &'static str> {
        let json = || self.json.parse(line);
        match self.format {
            Format::Json => json(),
            Format::Combined => parse::parse_clf(line, Some(true)),
            Format::Common => parse::parse_clf(line, Some(false)),
            Format::Auto if line.first() == Some(&b'{') => json(),
            Format::Auto => parse::parse_clf(line, None),
        }
    }

    /// The request record of a line, or `None` (counted, maybe reported) if it does not parse.
    fn record(&mut self, path: &Path, number: u64, line: &[u8]) -> Option<TrafficRecord> {
        match self.parse(line) {
            Ok(parsed) => {
                self.parsed += 1;
                Some(self.to_record(parsed))
            }
            Err(why) => {
                self.unparseable.note(format!("{}:{number}: {why}", path.display()));
                None
            }
        }
    }

    fn to_record(&self, line: LogLine) -> TrafficRecord {
        let mut http = parse::to_http(&line, &self.default_host);
        let body_len = line.body.as_ref().map_or(0, Vec::len);
        let truncated = body_len > self.http.max_body;
        if truncated {
            http.truncate(http.len() - body_len + self.http.max_body);
        }
        TrafficRecord {
            format_version: HTTP1_TRAFFIC_FORMAT_VERSION,
            capture_node: self.http.node.clone(),
            // Every line is a request of its own: they spread over the partitions.
            connection_id: format!("{}-{:x}-log-{:x}", self.http.node, self.http.run, self.parsed),
            kind: MessageKind::Request as i32,
            timestamp_ns: line.timestamp_ns,
            source: line.client,
            destination: String::from_utf8_lossy(line.host.as_deref().unwrap_or(self.default_host.as_bytes()))
                .into_owned(),
            http: http.into(),
            body_truncated: truncated,
            original_body_len: body_len as u64,
            ..TrafficRecord::default()
        }
    }
}

/// Opens an input: `-` is stdin; gzip (one or several members) is decompressed.
fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("cannot read access log {}", path.display()))?)
    };
    let mut reader = BufReader::with_capacity(1 << 16, raw);
    let magic = reader.fill_buf().with_context(|| format!("reading {}", path.display()))?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    })
}

/// Reads every line of `paths`, keeps what the policy keeps, sorted by time.
fn read_sorted(
    paths: &[PathBuf],
    args: &AccessLogArgs,
    lines: &mut Lines,
    filter: &mut RecordFilter,
) -> anyhow::Result<sort::Sorted> {
    let spill_dir = args.access_log_spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut sorter = ExternalSort::new(&spill_dir, args.access_log_sort_mb << 20);
    for (file, path) in paths.iter().enumerate() {
        let mut input = open(path)?;
        let mut line = Vec::new();
        for number in 1u64.. {
            line.clear();
            if input.read_until(b'\n', &mut line).with_context(|| format!("reading {}", path.display()))? == 0 {
                break;
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let Some(record) = lines.record(path, number, text).and_then(|r| filter.apply(r)) else { continue };
            let key = Key { timestamp_ns: record.timestamp_ns, file: file as u32, line: number };
            sorter.push(key, reprise_store::traffic::encode(&record)).context("spilling sorted access-log lines")?;
        }
    }
    if sorter.spilled_runs() > 0 {
        tracing::info!(runs = sorter.spilled_runs(), dir = %spill_dir.display(), "access-log lines sorted on disk");
    }
    sorter.finish().context("merging sorted access-log lines")
}

/// Imports access logs: every line that parses (and that the policy keeps) becomes a
/// request record, sent to `tx` in time order.
pub(crate) fn import(
    paths: &[PathBuf],
    args: &AccessLogArgs,
    http: Arc<HttpConfig>,
    tx: &mpsc::Sender<TrafficRecord>,
    counters: &Counters,
) -> anyhow::Result<()> {
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        anyhow::bail!("--access-log - (stdin) can be given only once");
    }
    let mut lines = Lines {
        format: args.access_log_format,
        json: JsonFields::new(&args.access_log_field).map_err(anyhow::Error::msg)?,
        http: http.clone(),
        default_host: args.access_log_host.clone(),
        parsed: 0,
        unparseable: Unparseable::default(),
    };
    let mut filter = RecordFilter::new(http);
    let sorted = read_sorted(paths, args, &mut lines, &mut filter)?;
    counters.unparseable_lines.store(lines.unparseable.count, Ordering::Relaxed);
    *counters.http.lock().expect("lock") = filter.stats;
    lines.unparseable.finish("access-log line", lines.parsed)?;
    let mut batch = Vec::with_capacity(BATCH);
    for entry in sorted {
        let (_, payload) = entry.context("reading sorted access-log lines back")?;
        batch.push(reprise_store::traffic::decode(&payload[..]).context("a sorted access-log line is corrupt")?);
        if batch.len() == BATCH {
            send_all(tx, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
        }
    }
    send_all(tx, batch)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::CaptureConfig;

    const NGINX: &str = r#"10.0.0.1 - - [10/Oct/2000:13:55:37 +0000] "GET /b1 HTTP/1.1" 200 5 "-" "curl/8""#;

    /// Imports `files`; returns the outcome, the request lines in order, and the counters.
    fn import_files(files: &[PathBuf], config: &mut CaptureConfig) -> (anyhow::Result<()>, Vec<String>, Counters) {
        let (tx, mut rx) = mpsc::channel(1 << 12);
        let counters = Counters::default();
        let http = Arc::new(config.http_config().unwrap());
        let result = import(files, &config.access, http, &tx, &counters);
        drop(tx);
        let mut targets = Vec::new();
        while let Ok(record) = rx.try_recv() {
            let line = record.http.split(|&b| b == b'\r').next().unwrap().to_vec();
            targets.push(String::from_utf8(line).unwrap());
        }
        (result, targets, counters)
    }

    #[test]
    fn out_of_order_files_gzip_and_bad_lines_come_out_sorted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // Server A (gzip, two members as `cat a.gz b.gz` makes) and server B, each out
        // of order, one of them with garbage lines.
        let a = dir.path().join("a.log.gz");
        let mut gz = Vec::new();
        for chunk in [
            "10.0.0.1 - - [10/Oct/2000:13:55:38 +0000] \"GET /a3 HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n",
            "10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a1 HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n\
             10.0.0.1 - - [10/Oct/2000:13:55:37 +0000] \"POST /a2?x=%20 HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n",
        ] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(chunk.as_bytes()).unwrap();
            gz.extend(encoder.finish().unwrap());
        }
        std::fs::write(&a, gz).unwrap();
        let b = dir.path().join("b.log");
        let b_lines = [
            NGINX.to_string(),
            "garbage".into(),
            NGINX.replace("/b1", "/b0").replace(":37 ", ":36 "),
            String::new(),
            "{\"broken json".into(),
        ];
        std::fs::write(&b, b_lines.join("\n")).unwrap();
        let mut config = CaptureConfig::for_log("file:///unused");
        config.access.access_log_spill_dir = Some(dir.path().join("spill"));
        // The smallest budget: every line spills a run of its own.
        config.access.access_log_sort_mb = 0;
        let (result, targets, counters) = import_files(&[a.clone(), b.clone()], &mut config);
        result.unwrap();
        // By second, then file (a before b), then line.
        assert_eq!(
            targets,
            ["GET /a1 HTTP/1.1", "GET /b0 HTTP/1.1", "POST /a2?x=%20 HTTP/1.1", "GET /b1 HTTP/1.1", "GET /a3 HTTP/1.1"]
        );
        assert_eq!(counters.unparseable_lines.load(Ordering::Relaxed), 2);
        assert_eq!(counters.http.lock().unwrap().requests, 5);

        // Selection applies: deny POST.
        config.deny_method = vec!["POST".into()];
        let (_, targets, counters) = import_files(&[a, b.clone()], &mut config);
        assert_eq!(targets.len(), 4);
        assert_eq!(counters.http.lock().unwrap().filtered, 1);

        // Nothing parses: an error naming the first bad lines.
        config.access.access_log_format = Format::Json;
        let (result, _, _) = import_files(&[b], &mut config);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.starts_with("no access-log line parses; the first: "), "{error}");
        assert!(error.contains("b.log:1: not a JSON object"), "{error}");
    }
}
