//! HTTP/2 connections: how a connection becomes one (prior knowledge, or an h2c
//! upgrade answered by 101), and the records its messages become.
//!
//! A message is stored in HTTP/1.1 form (see `TrafficRecord.http`), so that selection,
//! redaction, the replay's rules and request parser read it as an HTTP/1.x one; its
//! trailers go to `TrafficRecord.trailers`. Client streams are odd-numbered and opened in
//! increasing order, so a request's sequence follows from its stream id (in the order
//! the client opened its streams, left-out streams leaving a hole) and its response
//! carries the same one; the decoder puts a stream's request out before its response,
//! so the selection's verdict on a request is known when its response comes.

use std::sync::Arc;

use reprise_proto::v1::{HttpProtocol, MessageKind, TrafficRecord};

use super::{Emitted, HttpConnection, Protocol, State};
use crate::h2::{Field, H2Config, H2Connection, H2Emitted, H2Message, Http1RequestParts, MessageEnd, Pseudo, Side};
use crate::policy::Redaction;
use crate::reassembly::{Direction, StreamHandler};

/// An HTTP/2 connection's decoder, and where its requests' sequences start.
pub(super) struct Http2 {
    decoder: H2Connection,
    /// Stream 1's sequence: 0 by prior knowledge, the upgrade request's after an h2c
    /// upgrade (HTTP/1.1 requests before it come first).
    first_sequence: u64,
}

/// An HTTP/1.1 request asking for `Upgrade: h2c`, held until the server answers: a 101
/// makes it stream 1 of the HTTP/2 connection that follows, any other answer (or none)
/// lets it out as it is.
pub(super) struct PendingUpgrade {
    record: TrafficRecord,
    head_len: usize,
    plain_body: bool,
    parts: Http1RequestParts,
}

impl PendingUpgrade {
    /// `record` is the request as HTTP/1.x framing finished it; `parts`, its head.
    pub(super) fn new(record: TrafficRecord, head_len: usize, plain_body: bool, parts: Http1RequestParts) -> Self {
        let parts = Http1RequestParts { body: record.http.slice(head_len..), ..parts };
        PendingUpgrade { record, head_len, plain_body, parts }
    }

    pub(super) fn sequence(&self) -> u64 {
        self.record.sequence
    }
}

impl HttpConnection {
    fn h2_config(&self) -> Arc<H2Config> {
        Arc::new(H2Config { max_body: self.config.max_body, ..H2Config::default() })
    }

    /// Holds an `Upgrade: h2c` request until the server answers (see `parse_head`).
    pub(super) fn hold_upgrade(&mut self, out: &mut Emitted, pending: PendingUpgrade) {
        // A client waits for the answer before it asks again; one that does not gets
        // its earlier request stored as it is.
        self.release_upgrade(out);
        self.upgrade = Some(Box::new(pending));
        if !self.config.track_responses {
            // Responses are not framed: the answer is looked for from here on, at the
            // next status line.
            let framer = &mut self.responses;
            framer.buf.clear();
            framer.reset_message();
            framer.state = State::Resync;
        }
    }

    /// Stores a held upgrade request as it is: the server did not switch (or its answer
    /// was lost, or never came).
    pub(super) fn release_upgrade(&mut self, out: &mut Emitted) {
        if let Some(pending) = self.upgrade.take() {
            self.store(pending.record, pending.head_len, true, pending.plain_body, out);
        }
    }

    /// The server switched to h2c: the held request becomes stream 1 of the HTTP/2
    /// connection, and what follows the 101 (and the client's bytes since) is HTTP/2.
    pub(super) fn upgrade_to_h2(&mut self, out: &mut Emitted, pending: PendingUpgrade, ts_ns: i64) {
        let PendingUpgrade { record, head_len, plain_body, parts } = pending;
        let first_sequence = record.sequence;
        let decoder = H2Connection::after_upgrade(self.h2_config(), parts, record.timestamp_ns, &mut out.h2);
        if !plain_body || record.body_truncated {
            // Stream 1's HTTP/2 form would pass a chunk-coded or cut body off as whole:
            // the request keeps its exact HTTP/1.1 bytes instead (stored once all the same).
            out.h2.messages.clear();
            self.store(record, head_len, true, plain_body, out);
        }
        self.switch_to_h2(out, decoder, first_sequence, ts_ns);
    }

    /// The client's bytes start with the HTTP/2 preface.
    pub(super) fn start_h2_prior_knowledge(&mut self, out: &mut Emitted, ts_ns: i64) {
        let decoder = H2Connection::new(self.h2_config());
        self.switch_to_h2(out, decoder, 0, ts_ns);
    }

    /// Hands the connection to `decoder` for the rest of its life, with the bytes the
    /// framers hold (the server's first: its SETTINGS are read before the client's frames).
    fn switch_to_h2(&mut self, out: &mut Emitted, mut decoder: H2Connection, first_sequence: u64, ts_ns: i64) {
        out.stats.h2_connections += 1;
        self.probing = false;
        self.waiting.clear();
        for dir in [Direction::ServerToClient, Direction::ClientToServer] {
            let framer = self.framer(dir);
            framer.state = State::Opaque;
            let held = std::mem::take(&mut framer.buf);
            decoder.data(&mut out.h2, dir, ts_ns, &held);
        }
        self.protocol = Protocol::Http2(Box::new(Http2 { decoder, first_sequence }));
        self.store_h2_messages(first_sequence, out);
    }

    /// Runs `event` on the connection's HTTP/2 decoder, then stores what it put out.
    pub(super) fn h2_event(&mut self, out: &mut Emitted, event: impl FnOnce(&mut H2Connection, &mut H2Emitted)) {
        let Protocol::Http2(h2) = &mut self.protocol else { return };
        event(&mut h2.decoder, &mut out.h2);
        let first_sequence = h2.first_sequence;
        self.store_h2_messages(first_sequence, out);
    }

    fn store_h2_messages(&mut self, first_sequence: u64, out: &mut Emitted) {
        let mut messages = std::mem::take(&mut out.h2.messages);
        for message in messages.drain(..) {
            self.store_h2(message, first_sequence, out);
        }
        // Empty, its capacity kept for the next call.
        out.h2.messages = messages;
    }

    /// An HTTP/2 message as a record, stored as HTTP/1.x records are.
    fn store_h2(&mut self, message: H2Message, first_sequence: u64, out: &mut Emitted) {
        let kind = match message.side() {
            Side::Request => MessageKind::Request,
            Side::Response if self.config.track_responses => MessageKind::Response,
            Side::Response => return,
        };
        let (http, head_len) = http1_form(&message);
        // A reset stream's message is cut short as much as one a close cut.
        let complete = message.end == MessageEnd::Complete;
        let record = TrafficRecord {
            format_version: HttpProtocol::Http2.format_version(),
            protocol: HttpProtocol::Http2 as i32,
            timestamp_ns: message.first_frame_ns,
            http: http.into(),
            trailers: trailer_lines(&message.trailers, &self.config.redaction).into(),
            latency_ns: message.first_frame_ns - message.request_first_frame_ns,
            // Stream 1 is the first, 3 the second, ...
            sequence: first_sequence + u64::from(message.stream_id / 2),
            body_truncated: message.body_truncated() || !complete,
            original_body_len: message.body_len,
            ..self.new_record(kind)
        };
        self.store(record, head_len, complete, true, out);
    }
}

/// The message in HTTP/1.1 form (the start line, `host` from `:authority` if the
/// request has none, the fields in wire order, a blank line, the body as received), and
/// the length of its head.
fn http1_form(message: &H2Message) -> (Vec<u8>, usize) {
    let fields_len: usize = message.headers.iter().map(|(name, value)| name.len() + value.len() + 4).sum();
    let mut http = Vec::with_capacity(64 + fields_len + message.body.len());
    match &message.pseudo {
        Pseudo::Request { method, authority, path, .. } => {
            // The decoder lets no request through without its target: a CONNECT's is
            // its :authority, any other's its :path.
            let target = path.as_ref().or(authority.as_ref()).map_or(&[][..], |target| &target[..]);
            for part in [&method[..], b" ", target, b" HTTP/1.1\r\n"] {
                http.extend_from_slice(part);
            }
            if let Some(authority) = authority
                && message.header(b"host").is_none()
            {
                push_field(&mut http, b"host", authority);
            }
        }
        Pseudo::Response { status } => {
            let reason = ::http::StatusCode::from_u16(*status).ok().and_then(|s| s.canonical_reason());
            http.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason.unwrap_or_default()).as_bytes());
        }
    }
    for (name, value) in &message.headers {
        push_field(&mut http, name, value);
    }
    http.extend_from_slice(b"\r\n");
    let head_len = http.len();
    http.extend_from_slice(&message.body);
    (http, head_len)
}

/// Trailer fields as `name: value\r\n` lines, the values of redacted names masked.
fn trailer_lines(trailers: &[Field], redaction: &Redaction) -> Vec<u8> {
    let mut lines = Vec::new();
    for (name, value) in trailers {
        let value = if redaction.masks_header(name) { redaction.mask.as_bytes() } else { &value[..] };
        push_field(&mut lines, name, value);
    }
    lines
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for part in [name, b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use regex::Regex;
    use reprise_rules::selection::Selection;

    use super::*;
    use crate::h2::PREFACE;
    use crate::h2::real_peers;
    use crate::h2::test_frames::*;
    use crate::http::HttpConfig;
    use crate::reassembly::FlowInfo;

    fn config(track_responses: bool) -> HttpConfig {
        HttpConfig {
            node: "n".into(),
            run: 1,
            max_body: 1 << 20,
            track_responses,
            selection: Selection { sample: 1.0, ..Default::default() },
            redaction: Redaction {
                headers: vec!["authorization".into(), "x-secret".into()],
                json_fields: vec!["password".into()],
                mask: "***".into(),
            },
        }
    }

    fn connection(config: HttpConfig) -> HttpConnection {
        let flow =
            FlowInfo { number: 7, client: "10.0.0.1:5000".parse().unwrap(), server: "10.0.0.2:80".parse().unwrap() };
        HttpConnection::new(Arc::new(config), &flow)
    }

    /// (kind, sequence, format, HTTP bytes as text) of each record.
    fn summary(out: &Emitted) -> Vec<(MessageKind, u64, u32, String)> {
        let text = |r: &TrafficRecord| String::from_utf8_lossy(&r.http).into_owned();
        out.records.iter().map(|r| (r.kind(), r.sequence, r.format_version, text(r))).collect()
    }

    const REQUEST: MessageKind = MessageKind::Request;
    const RESPONSE: MessageKind = MessageKind::Response;

    #[test]
    fn prior_knowledge_messages_become_records_in_http1_form() {
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        let (mut client, mut server) = (Encoder::new(), Encoder::new());
        // The server's SETTINGS first, the preface over two segments.
        c.data(&mut out, S2C, 1, &settings(&[]));
        c.data(&mut out, C2S, 2, &PREFACE[..10]);
        assert!(matches!(c.protocol, Protocol::Undecided { .. }));
        c.data(&mut out, C2S, 3, &[&PREFACE[10..], &settings(&[])].concat());
        let get = [&request("GET", "/items?page=2")[..], &[("x-b", "2"), ("x-a", "1")]].concat();
        c.data(&mut out, C2S, 10, &client.headers(1, true, &get));
        let post = [
            &request("POST", "/orders")[..],
            &[("host", "own.host"), ("content-type", "application/json"), ("content-length", "9")],
        ]
        .concat();
        c.data(&mut out, C2S, 11, &[client.headers(3, false, &post), data(3, true, b"{\"n\":\"7\"}")].concat());
        // The responses in the other order, the second with trailers.
        c.data(&mut out, S2C, 20, &[server.headers(3, false, &[(":status", "201")]), data(3, true, b"made")].concat());
        let response = server.headers(1, false, &[(":status", "200"), ("content-type", "text/plain")]);
        let trailers = server.headers(1, true, &[("x-checksum", "abc"), ("x-secret", "s3cr3t")]);
        c.data(&mut out, S2C, 25, &[response, data(1, false, b"page 2"), trailers].concat());

        assert_eq!(
            summary(&out),
            vec![
                (REQUEST, 0, 2, "GET /items?page=2 HTTP/1.1\r\nhost: api.test\r\nx-b: 2\r\nx-a: 1\r\n\r\n".into()),
                (
                    REQUEST,
                    1,
                    2,
                    "POST /orders HTTP/1.1\r\nhost: own.host\r\ncontent-type: application/json\r\n\
                     content-length: 9\r\n\r\n{\"n\":\"7\"}"
                        .into()
                ),
                (RESPONSE, 1, 2, "HTTP/1.1 201 Created\r\n\r\nmade".into()),
                (RESPONSE, 0, 2, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npage 2".into()),
            ]
        );
        let trailers: Vec<&[u8]> = out.records.iter().map(|r| &r.trailers[..]).collect();
        assert_eq!(trailers, [&b""[..], b"", b"", b"x-checksum: abc\r\nx-secret: ***\r\n"], "a redacted trailer");
        let times: Vec<(i64, i64)> = out.records.iter().map(|r| (r.timestamp_ns, r.latency_ns)).collect();
        assert_eq!(times, [(10, 0), (11, 0), (20, 20 - 11), (25, 25 - 10)]);
        assert!(out.records.iter().all(|r| r.protocol() == HttpProtocol::Http2 && !r.body_truncated));
        assert_eq!(out.records[0].connection_id, "n-1-7");
        assert_eq!(
            (out.records[2].source.as_str(), out.records[2].destination.as_str()),
            ("10.0.0.2:80", "10.0.0.1:5000")
        );
        assert_eq!((out.stats.h2_connections, out.stats.requests, out.stats.responses), (1, 2, 2));
    }

    /// hyper's client and server: every request as the server received it reads back
    /// from its record with httparse (as the replay's request parser reads records),
    /// `host` standing for :authority.
    #[tokio::test]
    async fn hyper_traffic_becomes_records_that_read_as_what_the_server_received() {
        let (wire, received, responses) = real_peers::exchange().await;
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        for (i, (dir, bytes)) in wire.iter().enumerate() {
            c.data(&mut out, *dir, i as i64, bytes);
        }
        c.closed(&mut out, C2S);
        c.closed(&mut out, S2C);
        let (requests, answers): (Vec<&TrafficRecord>, Vec<&TrafficRecord>) =
            out.records.iter().partition(|r| r.kind() == REQUEST);
        assert_eq!((requests.len(), answers.len()), (received.len(), responses.len()));
        for seen in &received {
            let Pseudo::Request { method, authority, path, .. } = &seen.pseudo else { unreachable!() };
            let record = requests
                .iter()
                .find(|r| r.http.starts_with(&[&method[..], b" ", path.as_ref().unwrap(), b" "].concat()))
                .expect("a record of each request");
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut slots);
            let head_len = match parsed.parse(&record.http) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{other:?}: {:?}", String::from_utf8_lossy(&record.http)),
            };
            let headers: Vec<Field> = parsed
                .headers
                .iter()
                .map(|h| (Bytes::copy_from_slice(h.name.as_bytes()), Bytes::copy_from_slice(h.value)))
                .collect();
            let host = (Bytes::from_static(b"host"), authority.clone().unwrap());
            assert_eq!(headers, [&[host][..], &seen.headers].concat());
            assert_eq!(&record.http[head_len..], &seen.body[..]);
            let response = answers.iter().find(|r| r.sequence == record.sequence).expect("its response");
            assert!(response.latency_ns > 0);
        }
        let grpc = answers.iter().find(|r| !r.trailers.is_empty() && r.http.ends_with(b"hello")).expect("gRPC");
        assert_eq!(&grpc.trailers[..], b"grpc-status: 0\r\ngrpc-message: fine\r\n");
        let mut sequences: Vec<u64> = requests.iter().map(|r| r.sequence).collect();
        sequences.sort_unstable();
        assert_eq!(sequences, (0..received.len() as u64).collect::<Vec<_>>());
    }

    const UPGRADE: &str = "POST /submit HTTP/1.1\r\nHost: svc:8080\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                           Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\
                           Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn an_h2c_upgrade_request_becomes_stream_1_stored_once() {
        for track_responses in [true, false] {
            let mut c = connection(config(track_responses));
            let mut out = Emitted::default();
            let (mut client, mut server) = (Encoder::new(), Encoder::new());
            c.data(&mut out, C2S, 1, b"GET /before HTTP/1.1\r\nHost: svc\r\n\r\n");
            c.data(&mut out, S2C, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            c.data(&mut out, C2S, 3, UPGRADE.as_bytes());
            let switched = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
            c.data(&mut out, S2C, 4, &[&switched[..], &settings(&[])].concat());
            c.data(
                &mut out,
                S2C,
                5,
                &[server.headers(1, false, &[(":status", "200")]), data(1, true, b"done")].concat(),
            );
            let after = client.headers(3, true, &request("GET", "/after"));
            c.data(&mut out, C2S, 6, &[PREFACE, &settings(&[]), &settings_ack(), &after].concat());
            c.data(&mut out, S2C, 7, &server.headers(3, true, &[(":status", "204")]));

            let mut expected = vec![
                (REQUEST, 0, 1, "GET /before HTTP/1.1\r\nHost: svc\r\n\r\n".to_string()),
                (RESPONSE, 0, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into()),
                (
                    REQUEST,
                    1,
                    2,
                    "POST /submit HTTP/1.1\r\nhost: svc:8080\r\ncontent-type: text/plain\r\n\
                     content-length: 5\r\n\r\nhello"
                        .into(),
                ),
                (RESPONSE, 1, 2, "HTTP/1.1 200 OK\r\n\r\ndone".into()),
                (REQUEST, 2, 2, "GET /after HTTP/1.1\r\nhost: api.test\r\n\r\n".into()),
                (RESPONSE, 2, 2, "HTTP/1.1 204 No Content\r\n\r\n".into()),
            ];
            if !track_responses {
                expected.retain(|(kind, ..)| *kind == REQUEST);
            }
            assert_eq!(summary(&out), expected, "track_responses: {track_responses}");
            let upgraded = out.records.iter().find(|r| r.http.starts_with(b"POST")).unwrap();
            assert_eq!((upgraded.timestamp_ns, upgraded.protocol()), (3, HttpProtocol::Http2));
            if track_responses {
                assert_eq!(out.records[3].latency_ns, 5 - 3, "stream 1's response against the upgrade request");
            }
            assert_eq!((out.stats.h2_connections, out.stats.malformed, out.stats.resyncs), (1, 0, 0));
        }
    }

    #[test]
    fn a_declined_upgrade_request_is_stored_as_it_was() {
        for track_responses in [true, false] {
            let mut c = connection(config(track_responses));
            let mut out = Emitted::default();
            c.data(&mut out, C2S, 1, UPGRADE.as_bytes());
            assert!(out.records.is_empty(), "held until the server answers");
            c.data(&mut out, S2C, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            c.data(&mut out, C2S, 3, b"GET /next HTTP/1.1\r\nHost: svc\r\n\r\n");
            c.data(&mut out, S2C, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let mut expected = vec![
                (REQUEST, 0, 1, UPGRADE.to_string()),
                (RESPONSE, 0, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into()),
                (REQUEST, 1, 1, "GET /next HTTP/1.1\r\nHost: svc\r\n\r\n".into()),
                (RESPONSE, 1, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into()),
            ];
            if !track_responses {
                expected.retain(|(kind, ..)| *kind == REQUEST);
            }
            assert_eq!(summary(&out), expected, "track_responses: {track_responses}");
            assert_eq!((out.stats.h2_connections, out.stats.requests), (0, 2));
        }
        // Unanswered: stored at the close.
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        c.data(&mut out, C2S, 1, UPGRADE.as_bytes());
        c.closed(&mut out, S2C);
        assert_eq!(summary(&out), vec![(REQUEST, 0, 1, UPGRADE.to_string())]);
    }

    #[test]
    fn a_websocket_upgrade_still_ends_http() {
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        let request = "GET /chat HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        c.data(&mut out, C2S, 1, request.as_bytes());
        let switched = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        c.data(&mut out, S2C, 2, &[&switched[..], b"\x81\x05hello"].concat());
        c.data(&mut out, C2S, 3, b"\x81\x85\x01\x02\x03\x04GET /not-http HTTP/1.1\r\n\r\n");
        assert_eq!(summary(&out), vec![(REQUEST, 0, 1, request.to_string())]);
        assert_eq!((out.stats.h2_connections, out.stats.malformed, out.stats.resyncs), (0, 0, 0));
    }

    #[test]
    fn selection_and_redaction_apply_to_http2_messages() {
        let deny = Selection { sample: 1.0, deny_urls: vec![Regex::new("^/private").unwrap()], ..Default::default() };
        let mut c = connection(HttpConfig { selection: deny, ..config(true) });
        let mut out = Emitted::default();
        let (mut client, mut server) = (Encoder::new(), Encoder::new());
        c.data(&mut out, C2S, 1, &[PREFACE, &settings(&[])].concat());
        let body = br#"{"user":"ann","password":"hunter2"}"#;
        let length = body.len().to_string();
        let login = [
            &request("POST", "/login")[..],
            &[("authorization", "Bearer abc"), ("content-type", "application/json"), ("content-length", &length)],
        ]
        .concat();
        c.data(&mut out, C2S, 2, &[client.headers(1, false, &login), data(1, true, body)].concat());
        c.data(&mut out, C2S, 3, &client.headers(3, true, &request("GET", "/private/keys")));
        c.data(&mut out, S2C, 4, &[settings(&[]), server.headers(3, true, &[(":status", "200")])].concat());
        c.data(&mut out, S2C, 5, &server.headers(1, true, &[(":status", "204")]));

        let stored = summary(&out);
        assert_eq!(stored.len(), 2, "the private request and its response are left out: {stored:?}");
        assert_eq!((stored[0].1, stored[1].1), (0, 0));
        let login = &stored[0].3;
        assert!(login.contains("\r\nauthorization: ***\r\n") && !login.contains("abc"), "{login}");
        assert!(login.contains(r#""password":"***""#) && !login.contains("hunter2"), "{login}");
        let (head, body) = login.split_once("\r\n\r\n").unwrap();
        assert!(head.to_ascii_lowercase().contains(&format!("content-length: {}", body.len())), "{login}");
        assert_eq!(out.stats.filtered, 1);
    }

    #[test]
    fn reset_and_cut_streams_are_stored_flagged_and_counted() {
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        let (mut client, mut server) = (Encoder::new(), Encoder::new());
        c.data(&mut out, C2S, 1, &[PREFACE, &settings(&[])].concat());
        let upload = client.headers(1, false, &request("POST", "/up"));
        c.data(&mut out, C2S, 2, &[upload, data(1, false, b"part"), rst(1, 8)].concat());
        c.data(&mut out, C2S, 3, &client.headers(3, true, &request("GET", "/slow")));
        c.data(&mut out, S2C, 4, &[settings(&[]), server.headers(3, false, &[(":status", "200")])].concat());
        c.data(&mut out, S2C, 5, &data(3, false, b"first"));
        c.closed(&mut out, S2C);
        c.closed(&mut out, C2S);
        let flags: Vec<(MessageKind, u64, bool, u64)> =
            out.records.iter().map(|r| (r.kind(), r.sequence, r.body_truncated, r.original_body_len)).collect();
        assert_eq!(flags, vec![(REQUEST, 0, true, 4), (REQUEST, 1, false, 0), (RESPONSE, 1, true, 5)]);
        assert_eq!((out.stats.incomplete, out.h2.stats.streams_reset), (2, 1));
    }

    #[test]
    fn an_http2_connection_joined_mid_stream_gives_no_records_and_is_counted() {
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        let (mut client, mut server) = (Encoder::new(), Encoder::new());
        c.gap(&mut out, C2S);
        c.gap(&mut out, S2C);
        let upload = client.headers(41, false, &request("POST", "/upload"));
        c.data(&mut out, C2S, 1, &[upload, data(41, true, b"body")].concat());
        c.data(&mut out, S2C, 2, &server.headers(41, true, &[(":status", "200")]));
        c.closed(&mut out, C2S);
        c.closed(&mut out, S2C);
        assert!(out.records.is_empty());
        assert_eq!((out.h2.stats.joined_mid_stream, out.stats.h2_connections, out.stats.resyncs), (1, 0, 0));

        // Joined inside a frame: HTTP/1.x framing resynchronises until a segment that
        // starts on a frame tells.
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        c.gap(&mut out, C2S);
        c.data(&mut out, C2S, 1, b"tail of a DATA payload");
        c.data(&mut out, C2S, 2, &data(43, true, b"more"));
        c.data(&mut out, C2S, 3, b"GET /not-decoded HTTP/1.1\r\n\r\n");
        assert!(out.records.is_empty());
        assert_eq!((out.h2.stats.joined_mid_stream, out.stats.resyncs), (1, 1));

        // An HTTP/1.x connection joined late is framed from its next request on.
        let mut c = connection(config(true));
        let mut out = Emitted::default();
        c.gap(&mut out, C2S);
        c.data(&mut out, C2S, 1, b"rest of a body\r\nGET /whole HTTP/1.1\r\n\r\n");
        c.data(&mut out, C2S, 2, &data(45, true, b"a body that reads as a frame"));
        assert_eq!(summary(&out), vec![(REQUEST, 0, 1, "GET /whole HTTP/1.1\r\n\r\n".into())]);
        assert_eq!(out.h2.stats.joined_mid_stream, 0);
    }
}
