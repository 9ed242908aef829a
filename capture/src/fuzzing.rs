//! Entry points for the fuzz targets in `capture/fuzz` (kept in the library so the
//! targets stay one line and the logic is type-checked with everything else).

use std::net::SocketAddr;
use std::sync::Arc;

use reprise_proto::v1::{MessageKind, TrafficRecord};

use crate::access_log::JsonFields;
use crate::access_log::parse::{self, LogLine};
use crate::h2::{H2Config, H2Connection, H2Emitted, Http1RequestParts, PREFACE, Undecodable};
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
    // HTTP/1.x heads are at most 64 KiB; HTTP/2 ones (after a preface or an h2c
    // upgrade) at most the decoder's header list.
    let max_head = (64 << 10).max(H2Config::default().max_header_list);
    for record in &out.records {
        assert!(record.http.len() <= max_head + 64 + 8, "a record beyond the head and body limits");
    }
}

fn h2_config() -> Arc<H2Config> {
    Arc::new(H2Config {
        max_body: 64,
        max_streams: 4,
        max_header_block: 1024,
        max_header_list: 512,
        max_frame_payload: 1 << 16,
        max_header_table: 8192,
    })
}

/// What happens to an HTTP/2 connection, read from fuzz input.
enum H2Event {
    Data(Direction, Vec<u8>),
    Gap(Direction),
    Closed(Direction),
}

/// Reads `data` as a connection's events: 0xFF starts a control, then 0 switches to the
/// server's bytes, 1 to the client's, 2 is a gap, 3 a close, 4 cuts the data there,
/// 0xFF is a 0xFF byte; every other byte is data. (Bytes below 8, which `frame_http`
/// takes as controls, are too common in HTTP/2 frames to serve here.)
fn h2_events(data: &[u8], client_start: Vec<u8>, server_start: Vec<u8>) -> Vec<H2Event> {
    let mut events = vec![H2Event::Data(Direction::ServerToClient, server_start)];
    let (mut dir, mut pending) = (Direction::ClientToServer, client_start);
    let mut bytes = data.iter().copied();
    while let Some(byte) = bytes.next() {
        let control = if byte == 0xff { bytes.next() } else { None };
        match control {
            None | Some(0xff) => pending.push(byte),
            Some(control) => {
                events.push(H2Event::Data(dir, std::mem::take(&mut pending)));
                match control {
                    0 => dir = Direction::ServerToClient,
                    1 => dir = Direction::ClientToServer,
                    2 => events.push(H2Event::Gap(dir)),
                    3 => events.push(H2Event::Closed(dir)),
                    _ => {}
                }
            }
        }
    }
    events.push(H2Event::Data(dir, pending));
    events
}

/// Reads `data` as frames, so that the fuzzer gets to well-framed HEADERS and DATA
/// soon: a byte whose top bit picks the server's direction (else the client's) and whose
/// low 4 bits are the frame type (10 to 14: a type unknown to HTTP/2; 15: a control,
/// whose flags byte says gap (0), close (1) or a cut between calls), then flags, stream
/// id (its low 3 bits: few streams, so frames often meet on one) and payload length
/// bytes, then the payload. Frames in a row in one direction go in one call.
fn h2_frame_events(data: &[u8], client_start: Vec<u8>, server_start: Vec<u8>) -> Vec<H2Event> {
    let mut events = vec![H2Event::Data(Direction::ServerToClient, server_start)];
    let (mut dir, mut pending) = (Direction::ClientToServer, client_start);
    let mut rest = data;
    while let [head, flags, stream_id, len, tail @ ..] = rest {
        let payload = &tail[..(*len as usize).min(tail.len())];
        rest = &tail[payload.len()..];
        let frame_dir = if head & 0x80 != 0 { Direction::ServerToClient } else { Direction::ClientToServer };
        let kind = match head & 0xf {
            15 => {
                events.push(H2Event::Data(dir, std::mem::take(&mut pending)));
                match flags {
                    0 => events.push(H2Event::Gap(frame_dir)),
                    1 => events.push(H2Event::Closed(frame_dir)),
                    _ => {}
                }
                continue;
            }
            kind @ 10.. => 0xf0 | kind,
            kind => kind,
        };
        if frame_dir != dir {
            events.push(H2Event::Data(dir, std::mem::take(&mut pending)));
            dir = frame_dir;
        }
        pending.extend(&(payload.len() as u32).to_be_bytes()[1..]);
        pending.extend([kind, *flags, 0, 0, 0, stream_id & 0x7]);
        pending.extend(payload);
    }
    events.push(H2Event::Data(dir, pending));
    events
}

/// Feeds the events to a connection, the data whole or one byte per call.
fn run_h2(upgrade: bool, events: &[H2Event], bytewise: bool) -> (H2Emitted, Option<Undecodable>) {
    let mut out = H2Emitted::default();
    let mut connection = if upgrade {
        let request = Http1RequestParts {
            method: "POST".into(),
            path: "/upgrade".into(),
            authority: Some("fuzz.example".into()),
            headers: vec![
                ("Connection".into(), "Upgrade, HTTP2-Settings".into()),
                ("HTTP2-Settings".into(), "AAUAAIAA".into()),
            ],
            body: "body".into(),
        };
        H2Connection::after_upgrade(h2_config(), request, 0, &mut out)
    } else {
        H2Connection::new(h2_config())
    };
    for (i, event) in events.iter().enumerate() {
        match event {
            H2Event::Data(dir, bytes) if bytewise => {
                bytes.chunks(1).for_each(|byte| connection.data(&mut out, *dir, i as i64, byte))
            }
            H2Event::Data(dir, bytes) => connection.data(&mut out, *dir, i as i64, bytes),
            H2Event::Gap(dir) => connection.gap(&mut out, *dir),
            H2Event::Closed(dir) => connection.closed(&mut out, *dir),
        }
    }
    connection.closed(&mut out, Direction::ClientToServer);
    connection.closed(&mut out, Direction::ServerToClient);
    (out, connection.undecodable().cloned())
}

/// Feeds `data` to one HTTP/2 connection. The first byte sets up the start: bit 0 an
/// upgrade from HTTP/1.1 (else prior knowledge), bit 1 leaves the client's preface to
/// the input, bit 2 the peers' first SETTINGS frames; bit 3 reads the rest as frames
/// (`h2_frame_events`), else as bytes (`h2_events`).
/// No panic; messages within the limits and counted; and the same messages whichever
/// way the bytes are cut.
pub fn h2_connection(data: &[u8]) {
    let Some((&start, rest)) = data.split_first() else { return };
    let empty_settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    let mut client = if start & 2 == 0 { PREFACE.to_vec() } else { Vec::new() };
    let mut server = Vec::new();
    if start & 4 == 0 {
        client.extend(empty_settings);
        server.extend(empty_settings);
    }
    let events = if start & 8 != 0 { h2_frame_events(rest, client, server) } else { h2_events(rest, client, server) };
    let (whole, undecodable) = run_h2(start & 1 != 0, &events, false);
    for message in &whole.messages {
        assert!(message.body.len() <= 64 && message.body_len >= message.body.len() as u64, "{message:?}");
    }
    let stats = whole.stats;
    assert_eq!(stats.requests + stats.responses, whole.messages.len() as u64);
    let (bytewise, bytewise_undecodable) = run_h2(start & 1 != 0, &events, true);
    assert_eq!(whole.messages, bytewise.messages, "the messages depend on how the bytes are cut");
    assert_eq!((stats, undecodable), (bytewise.stats, bytewise_undecodable));
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
    use crate::h2::{PREFACE, Undecodable};

    /// The fuzz entry points run (a smoke test; the fuzzers explore the rest).
    #[test]
    fn entry_points_accept_anything() {
        super::frame_http(b"GET / HTTP/1.1\r\n\r\n\x00HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx\x02garbage");
        super::frame_http(&[PREFACE, b"not a frame\x00HTTP/1.1 200 OK\r\n\r\n"].concat());
        super::reassemble(&[0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 4, 3, b'G', b'E', b'T']);
        super::parse_access_log(b"10.0.0.1\xff10/Oct/2000:13:55:36 +0000\xffGET /a HTTP/1.1\xff200\xff5\xff-\xffcurl");
        super::parse_access_log(b"971211336\xffPOST\xff/b?c=d\xffshop\xffX-A\xff1\xffbody");
        super::h2_connection(&[&[0][..], &H2_GET, &H2_ANSWER, &[0xff, 2, 0xff, 0xff]].concat());
        super::h2_connection(&[&[1][..], b"garbage \xff\x03", &H2_GET].concat());
    }

    /// A GET on stream 1 (HEADERS of static table entries).
    const H2_GET: [u8; 12] = [0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84];
    /// A switch to the server's bytes, then a 200 on stream 1.
    const H2_ANSWER: [u8; 12] = [0xff, 0, 0, 0, 1, 1, 5, 0, 0, 0, 1, 0x88];

    /// The fuzz input's controls get the fuzzer to messages.
    #[test]
    fn h2_input_reads_as_events() {
        let events = super::h2_events(&[&H2_GET[..], &H2_ANSWER, &[0xff, 0xff]].concat(), Vec::new(), Vec::new());
        let (out, undecodable) = super::run_h2(false, &events, false);
        assert!(matches!(undecodable, Some(Undecodable::JoinedMidStream(_))));
        assert!(out.messages.is_empty());
        let (client, server) = ([PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat(), vec![0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let events =
            super::h2_events(&[&H2_GET[..], &H2_ANSWER, &[0xff, 0xff]].concat(), client.clone(), server.clone());
        let (out, undecodable) = super::run_h2(false, &events, true);
        assert_eq!((undecodable, out.stats.requests, out.stats.responses), (None, 1, 1));
        // The same as frames: HEADERS from the client, HEADERS from the server, a close.
        let frames = [1, 5, 1, 3, 0x82, 0x86, 0x84, 0x81, 5, 1, 1, 0x88, 0x8f, 1, 0, 0];
        let events = super::h2_frame_events(&frames, client, server);
        let (out, undecodable) = super::run_h2(false, &events, false);
        assert_eq!((undecodable, out.stats.requests, out.stats.responses), (None, 1, 1));
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
