//! Entry points for the fuzz targets in `capture/fuzz` (kept in the library so the
//! targets stay one line and the logic is type-checked with everything else).

use std::net::SocketAddr;
use std::sync::Arc;

use reprise_proto::v1::{MessageKind, TrafficRecord};

use crate::access_log::JsonFields;
use crate::access_log::parse::{self, LogLine};
use crate::http::{Emitted, HttpConfig, HttpConnection};
use crate::packet::Segment;
use crate::policy::Redaction;
use crate::reassembly::{Direction, FlowInfo, Reassembler, ReassemblyConfig, StreamHandler};
use crate::records::RecordFilter;
use reprise_rules::selection::Selection;

fn http_config() -> Arc<HttpConfig> {
    Arc::new(HttpConfig {
        node: "fuzz".into(),
        run: 0,
        max_body: 64,
        track_responses: true,
        selection: Selection { sample: 1.0, ..Default::default() },
        redaction: Redaction { headers: vec!["cookie".into()], json_fields: vec!["password".into()], mask: "x".into() },
    })
}

fn flow() -> FlowInfo {
    FlowInfo {
        number: 1,
        client: SocketAddr::from(([10, 0, 0, 1], 1000)),
        server: SocketAddr::from(([10, 0, 0, 2], 80)),
    }
}

/// Feeds `data` to one connection: control bytes (below 8) switch direction (0, 1) or
/// inject a gap (2) or a close (3); runs of other bytes are data.
pub fn frame_http(data: &[u8]) {
    let mut connection = HttpConnection::new(http_config(), &flow());
    let mut out = Emitted::default();
    let mut dir = Direction::ClientToServer;
    for (i, piece) in data.split_inclusive(|b| *b < 8).enumerate() {
        let (run, control) = match piece.split_last() {
            Some((&c, run)) if c < 8 => (run, Some(c)),
            _ => (piece, None),
        };
        connection.data(&mut out, dir, i as i64, run);
        match control {
            Some(0) => dir = Direction::ServerToClient,
            Some(1) => dir = Direction::ClientToServer,
            Some(2) => connection.gap(&mut out, dir),
            Some(3) => connection.closed(&mut out, dir),
            _ => {}
        }
    }
    connection.closed(&mut out, Direction::ClientToServer);
    connection.closed(&mut out, Direction::ServerToClient);
    for record in &out.records {
        assert!(record.http.len() <= 64 + 64 * 1024 + 8, "a record beyond the head and body limits");
    }
}

/// Interprets `data` as segments: 4 bytes sequence, 1 byte flags, 1 byte length, payload.
pub fn reassemble(data: &[u8]) {
    let config = ReassemblyConfig { max_pending_bytes: 4096, ..Default::default() };
    let shared = http_config();
    let mut reassembler = Reassembler::new(config, move |f: &FlowInfo| HttpConnection::new(shared.clone(), f));
    let mut out = Emitted::default();
    let (client, server) = (flow().client, flow().server);
    let mut rest = data;
    while rest.len() >= 6 {
        let seq = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let flags = rest[4];
        let len = (rest[5] as usize).min(rest.len() - 6);
        let payload = &rest[6..6 + len];
        let (src, dst) = if flags & 1 == 0 { (client, server) } else { (server, client) };
        let segment = Segment {
            ts_ns: seq as i64,
            src,
            dst,
            seq,
            syn: flags & 2 != 0,
            ack: flags & 4 != 0,
            fin: flags & 8 != 0,
            rst: flags & 16 != 0,
            payload,
        };
        reassembler.segment(&segment, &mut out);
        rest = &rest[6 + len..];
    }
    reassembler.flush_all(&mut out);
}

/// Parses `data` as access-log lines: as it is in every format, and cut into fields (at
/// 0xFF bytes) set into a Combined line and a JSON line, so the fuzzer gets past each
/// format's framing. No panic, and every line that parses is stored as a request that
/// httparse reads back whole, with the line's method and target and its Cookie masked.
pub fn parse_access_log(data: &[u8]) {
    let fields: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
    let mut combined = Vec::new();
    for (part, value) in [("", 0), (" - - [", 1), ("] \"", 2), ("\" ", 3), (" ", 4), (" \"", 5), ("\" \"", 6)] {
        combined.extend_from_slice(part.as_bytes());
        combined.extend_from_slice(field(value));
    }
    combined.push(b'"');
    let json = serde_json::json!({
        "time": text(0), "method": text(1), "url": text(2), "host": text(3),
        "headers": { text(4): text(5), "Cookie": "secret" }, "body": text(6),
    })
    .to_string();
    let configured = ["time=t", "request=r.line", "path=r.p", "query=r.q", "headers=h", "body=b"].map(String::from);
    let configured = JsonFields::new(&configured).expect("valid roles");
    let mut filter = RecordFilter::new(http_config());
    for line in [data, &combined, json.as_bytes()] {
        let parsed = [
            parse::parse_clf(line, None),
            parse::parse_clf(line, Some(true)),
            parse::parse_clf(line, Some(false)),
            JsonFields::default().parse(line),
            configured.parse(line),
        ];
        for parsed in parsed.iter().flatten() {
            check_stored_request(parsed, &mut filter);
        }
    }
}

/// The request an access-log line becomes, as stored, must read back as that request.
fn check_stored_request(line: &LogLine, filter: &mut RecordFilter) {
    let record = TrafficRecord {
        kind: MessageKind::Request as i32,
        http: parse::to_http(line, "fuzz.example").into(),
        ..TrafficRecord::default()
    };
    let stored = filter.apply(record).expect("the fuzz policy keeps every request");
    let shown = || String::from_utf8_lossy(&stored.http).into_owned();
    let mut slots = vec![httparse::EMPTY_HEADER; stored.http.split(|&b| b == b'\n').count()];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(&stored.http) {
        Ok(status) => assert!(status.is_complete(), "an incomplete head: {:?}", shown()),
        Err(e) => panic!("a stored request does not parse back ({e}): {:?}", shown()),
    }
    assert_eq!(request.method, Some(line.method.as_str()), "{:?}", shown());
    assert_eq!(request.path.map(str::as_bytes), Some(&line.target[..]), "{:?}", shown());
    for header in request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("cookie")) {
        assert_eq!(header.value, b"x", "an unmasked cookie: {:?}", shown());
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz entry points run (a smoke test; the fuzzers explore the rest).
    #[test]
    fn entry_points_accept_anything() {
        super::frame_http(b"GET / HTTP/1.1\r\n\r\n\x00HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx\x02garbage");
        super::reassemble(&[0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 4, 3, b'G', b'E', b'T']);
        super::parse_access_log(b"10.0.0.1\xff10/Oct/2000:13:55:36 +0000\xffGET /a HTTP/1.1\xff200\xff5\xff-\xffcurl");
        super::parse_access_log(b"971211336\xffPOST\xff/b?c=d\xffshop\xffX-A\xff1\xffbody");
    }

    /// Inputs on which a fuzz target failed, kept once fixed.
    #[test]
    fn fuzz_findings_stay_fixed() {
        // access_log: a JSON line whose host has a control byte (`"host":"4\u0008"`).
        super::parse_access_log(b"2\xff4\xff2\xff4\x08");
        // access_log: a UTC offset with a multi-byte character where its digits are.
        super::parse_access_log(b"1.2.3.4\xff10/Oct/2000:13:55:36 +1\xe2\x82\xac\xffGET / HTTP/1.1\xff200\xff0");
    }
}
