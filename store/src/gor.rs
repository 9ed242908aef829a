//! GoReplay's file format, for importing GoReplay recordings and exporting ours.
//!
//! Each message is a header line `TYPE ID UNIX_NANOS LATENCY_NANOS`, then the raw HTTP
//! bytes, then the separator `\n🐵🙈🙉\n`. Type 1 is a request, 2 a response, 3 a
//! replayed response; a request and its response share the 24-hex-digit id.

use std::io::{BufRead, Write};

use reprise_proto::HTTP1_TRAFFIC_FORMAT_VERSION;
use reprise_proto::v1::{MessageKind, TrafficRecord};

pub const SEPARATOR: &[u8] = "\n🐵🙈🙉\n".as_bytes();

/// Header bytes shown in an error: enough to recognise the line, never a screenful of
/// binary.
const SHOWN_HEADER_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum GorError {
    /// `line` is the start of the header line, escaped to printable ASCII.
    #[error("message {index} (byte {offset}): bad header line \"{line}\": {reason}")]
    BadHeader { index: u64, offset: u64, line: String, reason: &'static str },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A message read from a GoReplay file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GorMessage {
    /// 1 request, 2 response, 3 replayed response.
    pub kind: u8,
    pub id: String,
    pub timestamp_ns: i64,
    pub latency_ns: i64,
    pub http: Vec<u8>,
}

impl GorMessage {
    /// The traffic record of a request or response (`None` for replayed responses).
    pub fn to_record(&self, node: &str) -> Option<TrafficRecord> {
        let kind = match self.kind {
            1 => MessageKind::Request,
            2 => MessageKind::Response,
            _ => return None,
        };
        Some(TrafficRecord {
            format_version: HTTP1_TRAFFIC_FORMAT_VERSION,
            capture_node: node.to_string(),
            // GoReplay keeps no connection identity; the message id pairs request and response.
            connection_id: self.id.clone(),
            kind: kind as i32,
            timestamp_ns: self.timestamp_ns,
            http: self.http.clone().into(),
            latency_ns: if kind == MessageKind::Response { self.latency_ns } else { 0 },
            ..Default::default()
        })
    }
}

/// Reads messages one by one; a malformed header is an error naming the message and
/// where it starts, and the next message is read after it.
pub struct GorReader<R> {
    input: R,
    index: u64,
    /// Bytes read so far.
    offset: u64,
    done: bool,
}

impl<R: BufRead> GorReader<R> {
    pub fn new(input: R) -> Self {
        GorReader { input, index: 0, offset: 0, done: false }
    }

    /// The next message's bytes and the offset of its header line.
    fn read_message(&mut self) -> Result<Option<(u64, Vec<u8>)>, GorError> {
        let mut message = Vec::new();
        let mut start = self.offset;
        loop {
            let mut line = Vec::new();
            let read = self.input.read_until(b'\n', &mut line)?;
            self.offset += read as u64;
            if read == 0 {
                self.done = true;
                return Ok((!message.iter().all(u8::is_ascii_whitespace)).then_some((start, message)));
            }
            message.extend_from_slice(&line);
            // The separator is "\n" + emoji + "\n": it ends a message when the emoji line
            // follows a newline.
            if message.ends_with(SEPARATOR) {
                message.truncate(message.len() - SEPARATOR.len());
                return Ok(Some((start, message)));
            }
            if message == SEPARATOR[1..] {
                // A file may start with a separator.
                message.clear();
                start = self.offset;
            }
        }
    }
}

impl<R: BufRead> Iterator for GorReader<R> {
    type Item = Result<GorMessage, GorError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (offset, raw) = match self.read_message() {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        self.index += 1;
        Some(parse_message(self.index, offset, raw))
    }
}

fn parse_message(index: u64, offset: u64, raw: Vec<u8>) -> Result<GorMessage, GorError> {
    let newline = raw.iter().position(|&b| b == b'\n');
    let header_end = newline.unwrap_or(raw.len());
    let line = String::from_utf8_lossy(&raw[..header_end]).into_owned();
    let bad = |reason| {
        let header = &raw[..header_end];
        let mut shown = header[..header.len().min(SHOWN_HEADER_BYTES)].escape_ascii().to_string();
        if header.len() > SHOWN_HEADER_BYTES {
            shown.push_str("...");
        }
        GorError::BadHeader { index, offset, line: shown, reason }
    };
    let mut fields = line.split_whitespace();
    let kind = fields
        .next()
        .and_then(|f| f.parse::<u8>().ok())
        .filter(|k| (1..=3).contains(k))
        .ok_or_else(|| bad("type must be 1, 2 or 3"))?;
    let id = fields.next().ok_or_else(|| bad("no id"))?.to_string();
    let timestamp_ns = fields.next().and_then(|f| f.parse::<i64>().ok()).ok_or_else(|| bad("no timestamp"))?;
    let latency_ns = fields.next().and_then(|f| f.parse::<i64>().ok()).unwrap_or(0);
    let http = newline.map_or_else(Vec::new, |n| raw[n + 1..].to_vec());
    Ok(GorMessage { kind, id, timestamp_ns, latency_ns, http })
}

/// The GoReplay id of a record: 24 hex digits shared by a request and its response.
pub fn message_id(record: &TrafficRecord) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(record.connection_id.as_bytes());
    let connection = hasher.finalize();
    format!("{connection:08x}{:016x}", record.sequence)
}

/// Writes one record as a GoReplay message.
pub fn write_record(out: &mut impl Write, record: &TrafficRecord) -> std::io::Result<()> {
    let kind = if record.kind() == MessageKind::Response { 2 } else { 1 };
    writeln!(out, "{kind} {} {} {}", message_id(record), record.timestamp_ns, record.latency_ns)?;
    out.write_all(&record.http)?;
    out.write_all(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_requests_and_responses() {
        let request = TrafficRecord {
            connection_id: "c1".into(),
            kind: MessageKind::Request as i32,
            timestamp_ns: 1_700_000_000_000_000_001,
            http: b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb".to_vec().into(),
            sequence: 4,
            ..Default::default()
        };
        let response = TrafficRecord {
            kind: MessageKind::Response as i32,
            latency_ns: 1234,
            http: b"HTTP/1.1 200 OK\r\n\r\n".to_vec().into(),
            ..request.clone()
        };
        let mut file = Vec::new();
        write_record(&mut file, &request).unwrap();
        write_record(&mut file, &response).unwrap();
        let read: Vec<GorMessage> = GorReader::new(&file[..]).map(Result::unwrap).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].http, request.http, "a body with newlines survives");
        assert_eq!((read[0].kind, read[1].kind, read[1].latency_ns), (1, 2, 1234));
        assert_eq!(read[0].id, read[1].id);
        assert_eq!(read[0].id.len(), 24);
        let back = read[1].to_record("n").unwrap();
        assert_eq!(
            (back.kind(), back.timestamp_ns, back.latency_ns),
            (MessageKind::Response, response.timestamp_ns, 1234)
        );
    }

    #[test]
    fn reads_goreplay_written_files_and_reports_bad_headers() {
        let file = "1 8f2e16d80a2b4c6d8e0f1a2b 1534423123123456789 0\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\n🐵🙈🙉\n3 8f2e16d80a2b4c6d8e0f1a2b 1534423123223456789 100\nHTTP/1.1 200 OK\r\n\r\n\n🐵🙈🙉\nnonsense header\nbody\n🐵🙈🙉\n";
        let read: Vec<_> = GorReader::new(file.as_bytes()).collect();
        assert_eq!(read.len(), 3);
        let first = read[0].as_ref().unwrap();
        assert_eq!((first.kind, first.timestamp_ns), (1, 1534423123123456789));
        assert_eq!(first.http, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(read[1].as_ref().unwrap().to_record("n").is_none(), "replayed responses are not traffic");
        assert!(matches!(read[2], Err(GorError::BadHeader { index: 3, .. })));
        assert_eq!(
            read[2].as_ref().unwrap_err().to_string(),
            "message 3 (byte 174): bad header line \"nonsense header\": type must be 1, 2 or 3"
        );
    }

    /// Binary in a header is shown escaped and cut short, never echoed to a terminal; the
    /// message after it is read.
    #[test]
    fn a_binary_header_is_shown_short_and_escaped() {
        let mut file = b"\x00\x1b[2J\xff\xfe\"quoted\" and then a very long run of text\nbody".to_vec();
        file.extend_from_slice(SEPARATOR);
        file.extend_from_slice(b"1 id 1534423123123456789 0\nGET / HTTP/1.1\r\n\r\n");
        let read: Vec<_> = GorReader::new(&file[..]).collect();
        assert_eq!(
            read[0].as_ref().unwrap_err().to_string(),
            r#"message 1 (byte 0): bad header line "\x00\x1b[2J\xff\xfe\"quoted\" and then a very ...": type must be 1, 2 or 3"#
        );
        assert_eq!(read[1].as_ref().unwrap().http, b"GET / HTTP/1.1\r\n\r\n");
    }
}

/// Writes the records of `ranges` to `out` as a GoReplay file, in timestamp order
/// (partitions are merged as they are read: memory holds one record per partition).
/// Messages that are not traffic records are skipped; returns how many were written.
pub async fn export(
    log: &dyn crate::log::TrafficLog,
    ranges: &[crate::schema::PartitionRange],
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    use futures::StreamExt;
    let skipped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut streams = Vec::new();
    for range in ranges.iter().filter(|r| !r.is_empty()) {
        let raw = log.read_range(crate::log::RangeSpec::whole(range.partition, range.start, range.end), 256).await?;
        streams.push(Box::pin(crate::traffic::decode_stream(raw, skipped.clone())));
    }
    let mut heads: Vec<Option<TrafficRecord>> = Vec::with_capacity(streams.len());
    for stream in &mut streams {
        heads.push(stream.next().await.transpose()?.map(|l| l.record));
    }
    let mut written = 0;
    while let Some(i) =
        (0..heads.len()).filter(|&i| heads[i].is_some()).min_by_key(|&i| heads[i].as_ref().map(|r| r.timestamp_ns))
    {
        let record = heads[i].take().expect("present");
        write_record(out, &record)?;
        written += 1;
        heads[i] = streams[i].next().await.transpose()?.map(|l| l.record);
    }
    Ok(written)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error("writing the GoReplay file: {0}")]
    Io(#[from] std::io::Error),
}
