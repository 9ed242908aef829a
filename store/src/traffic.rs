//! Decoding of stored traffic records. The log may hold anything (another producer's
//! messages, a truncated write, a newer format): such messages are skipped and counted,
//! never fatal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use prost::Message;
use reprise_proto::TRAFFIC_FORMAT_VERSION;
use reprise_proto::v1::{MessageKind, TrafficRecord};

use crate::log::{LogError, LogRecord};

/// Why a stored message is not a usable traffic record.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("not a traffic record: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("traffic record format {0} is newer than this build understands ({TRAFFIC_FORMAT_VERSION})")]
    NewerFormat(u32),
    #[error("traffic record has no message kind")]
    NoKind,
}

/// Encodes a record for the log.
pub fn encode(record: &TrafficRecord) -> Vec<u8> {
    record.encode_to_vec()
}

/// Decodes one stored message. From a `Bytes` payload the record's HTTP bytes are a
/// slice of it, not a copy.
pub fn decode(payload: impl bytes::Buf) -> Result<TrafficRecord, DecodeError> {
    let record = TrafficRecord::decode(payload)?;
    if record.format_version > TRAFFIC_FORMAT_VERSION {
        return Err(DecodeError::NewerFormat(record.format_version));
    }
    if record.kind() == MessageKind::Unspecified {
        return Err(DecodeError::NoKind);
    }
    Ok(record)
}

/// A decoded record with its place in the log.
#[derive(Debug, Clone)]
pub struct Located {
    pub partition: i32,
    pub offset: i64,
    pub record: TrafficRecord,
}

/// Decodes a stream of log records, skipping undecodable ones and counting them in
/// `skipped`. Log errors (I/O, broker) pass through.
pub fn decode_stream(
    records: impl Stream<Item = Result<LogRecord, LogError>>,
    skipped: Arc<AtomicU64>,
) -> impl Stream<Item = Result<Located, LogError>> {
    records.filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(raw) => match decode(raw.payload) {
                Ok(record) => Some(Ok(Located { partition: raw.partition, offset: raw.offset, record })),
                Err(e) => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(partition = raw.partition, offset = raw.offset, error = %e, "skipping undecodable log message");
                    None
                }
            },
        };
        std::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_proto::v1::HttpProtocol;

    #[test]
    fn garbage_and_future_formats_are_refused() {
        assert!(matches!(decode(&b"\xff\xff\xff garbage"[..]), Err(DecodeError::Protobuf(_))));
        let mut record = TrafficRecord { format_version: 1, kind: MessageKind::Request as i32, ..Default::default() };
        assert!(decode(&encode(&record)[..]).is_ok());
        record.format_version = TRAFFIC_FORMAT_VERSION + 1;
        assert_eq!(decode(&encode(&record)[..]).unwrap_err(), DecodeError::NewerFormat(TRAFFIC_FORMAT_VERSION + 1));
        assert_eq!(decode(&b""[..]).unwrap_err(), DecodeError::NoKind);
    }

    #[test]
    fn http2_records_are_format_2_and_format_3_is_newer() {
        let record = TrafficRecord {
            format_version: HttpProtocol::Http2.format_version(),
            kind: MessageKind::Response as i32,
            protocol: HttpProtocol::Http2 as i32,
            http: bytes::Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\r\n"),
            trailers: bytes::Bytes::from_static(b"grpc-status: 0\r\n"),
            ..Default::default()
        };
        assert_eq!(record.format_version, 2);
        let decoded = decode(&encode(&record)[..]).unwrap();
        assert_eq!((decoded.protocol(), &decoded.trailers[..]), (HttpProtocol::Http2, &b"grpc-status: 0\r\n"[..]));
        assert_eq!(decoded, record);
        let newer = TrafficRecord { format_version: 3, ..record };
        assert_eq!(decode(&encode(&newer)[..]).unwrap_err(), DecodeError::NewerFormat(3));
    }
}
