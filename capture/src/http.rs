//! HTTP/1.x framing on reassembled streams: finds where each request and response
//! starts and ends (Content-Length, chunked, no body for HEAD/204/304/1xx, read-until-
//! close responses), pairs responses with requests in order (pipelining), and turns each
//! message into a traffic record.
//!
//! Garbage, a capture that starts mid-connection, or a lost segment put a direction into
//! resync: bytes are skipped until the next line that starts a message. Bodies beyond
//! the limit are cut and flagged with their real length.
//!
//! This module is the connection (its two directions, emitting records, selection);
//! `head` parses message heads, `body` frames bodies.

use std::collections::VecDeque;
use std::sync::Arc;

use reprise_proto::HTTP1_TRAFFIC_FORMAT_VERSION;
use reprise_proto::v1::{MessageKind, TrafficRecord};

mod body;
mod head;

use self::body::Body;
use crate::policy::Redaction;
use crate::reassembly::{Direction, FlowInfo, StreamHandler, looks_like_request};
use reprise_rules::selection::Selection;

/// Longest message head accepted; a longer one is treated as garbage.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Capture node id, stamped on every record.
    pub node: String,
    /// Distinguishes connection ids across capture runs.
    pub run: u64,
    /// Body bytes kept per message; the rest is cut and flagged.
    pub max_body: usize,
    pub track_responses: bool,
    pub selection: Selection,
    pub redaction: Redaction,
}

/// Counters of what the framer met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    pub responses: u64,
    pub truncated_bodies: u64,
    pub malformed: u64,
    pub resyncs: u64,
    pub unpaired_responses: u64,
    /// Messages cut short by a gap or the end of the connection.
    pub incomplete: u64,
    /// Requests (and their responses) left out by the selection rules or sampling.
    pub filtered: u64,
}

/// Where finished records go.
#[derive(Default)]
pub struct Emitted {
    pub records: Vec<TrafficRecord>,
    pub stats: HttpStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Skipping bytes until a line that starts a message.
    Resync,
    Head,
    Body(Body),
    /// After a protocol upgrade (101, CONNECT): no longer HTTP.
    Opaque,
}

/// A message taking shape in one direction.
struct Framer {
    side: Side,
    state: State,
    buf: Vec<u8>,
    head_len: usize,
    body_seen: u64,
    /// Whether the current message's first byte has been seen (and `started_ns` set).
    started: bool,
    started_ns: i64,
    /// Requests: this request's sequence. Responses: the paired request's sequence and
    /// capture time.
    sequence: u64,
    paired: Option<(u64, i64)>,
}

/// A request waiting for its response: sequence, capture time, whether it was HEAD.
type Waiting = (u64, i64, bool);

impl Framer {
    fn new(side: Side) -> Self {
        Framer {
            side,
            state: State::Head,
            buf: Vec::new(),
            head_len: 0,
            body_seen: 0,
            started: false,
            started_ns: 0,
            sequence: 0,
            paired: None,
        }
    }

    fn is_message_start(&self, line: &[u8]) -> bool {
        match self.side {
            Side::Request => looks_like_request(line),
            Side::Response => line.starts_with(b"HTTP/1."),
        }
    }

    fn resync(&mut self, stats: &mut HttpStats) {
        stats.resyncs += 1;
        self.state = State::Resync;
        self.reset_message();
    }

    fn reset_message(&mut self) {
        self.head_len = 0;
        self.body_seen = 0;
        self.started = false;
        self.paired = None;
    }

    /// In resync: drops bytes before the next message start; whether one was found.
    fn find_message_start(&mut self) -> bool {
        let found = (0..self.buf.len())
            .find(|&p| (p == 0 || self.buf[p - 1] == b'\n') && self.is_message_start(&self.buf[p..]));
        match found {
            Some(p) => {
                self.buf.drain(..p);
                true
            }
            None => {
                // Keep a tail in case a message start straddles the next segment.
                let keep = self.buf.len().min(16);
                self.buf.drain(..self.buf.len() - keep);
                false
            }
        }
    }
}

/// One TCP connection's HTTP/1.x traffic.
pub struct HttpConnection {
    config: Arc<HttpConfig>,
    connection_id: String,
    client: String,
    server: String,
    requests: Framer,
    responses: Framer,
    waiting: VecDeque<Waiting>,
    next_sequence: u64,
    /// Whether this connection is in the sample.
    sampled: bool,
    /// Requests left out, whose responses must be left out too.
    dropped: VecDeque<u64>,
}

impl HttpConnection {
    pub fn new(config: Arc<HttpConfig>, flow: &FlowInfo) -> Self {
        let connection_id = format!("{}-{:x}-{:x}", config.node, config.run, flow.number);
        HttpConnection {
            sampled: config.selection.samples(&[connection_id.as_bytes()]),
            dropped: VecDeque::new(),
            connection_id,
            client: flow.client.to_string(),
            server: flow.server.to_string(),
            config,
            requests: Framer::new(Side::Request),
            responses: Framer::new(Side::Response),
            waiting: VecDeque::new(),
            next_sequence: 0,
        }
    }

    fn framer(&mut self, dir: Direction) -> &mut Framer {
        match dir {
            Direction::ClientToServer => &mut self.requests,
            Direction::ServerToClient => &mut self.responses,
        }
    }

    /// Emits the finished message at the front of the buffer.
    fn finish(&mut self, dir: Direction, out: &mut Emitted, complete: bool) {
        let config = self.config.clone();
        let (connection_id, client, server) = (self.connection_id.clone(), self.client.clone(), self.server.clone());
        let framer = self.framer(dir);
        let kept = framer.head_len + framer.body_seen.min(config.max_body as u64) as usize;
        let head_len = framer.head_len;
        let plain_body = matches!(framer.state, State::Body(Body::None | Body::Length(_)));
        let bytes: Vec<u8> = framer.buf.drain(..kept.min(framer.buf.len())).collect();
        let truncated = framer.body_seen > config.max_body as u64 || !complete;
        let (kind, source, destination, sequence, latency_ns) = match framer.side {
            Side::Request => {
                out.stats.requests += 1;
                (MessageKind::Request, client, server, framer.sequence, 0)
            }
            Side::Response => {
                out.stats.responses += 1;
                let (sequence, requested_at) = framer.paired.unwrap_or((u64::MAX, framer.started_ns));
                (MessageKind::Response, server, client, sequence, framer.started_ns - requested_at)
            }
        };
        if truncated {
            out.stats.truncated_bodies += u64::from(framer.body_seen > config.max_body as u64);
            out.stats.incomplete += u64::from(!complete);
        }
        let record = TrafficRecord {
            format_version: HTTP1_TRAFFIC_FORMAT_VERSION,
            capture_node: config.node.clone(),
            connection_id,
            kind: kind as i32,
            timestamp_ns: framer.started_ns,
            source,
            destination,
            http: bytes.into(),
            latency_ns,
            sequence,
            body_truncated: truncated,
            original_body_len: framer.body_seen,
            ..TrafficRecord::default()
        };
        framer.reset_message();
        framer.state = State::Head;
        if !self.selected(&record, head_len, out) {
            return;
        }
        if kind == MessageKind::Request || config.track_responses {
            let masked = config.redaction.apply(&record.http, head_len, plain_body && !truncated);
            out.records.push(match masked {
                Some(http) => TrafficRecord { http: http.into(), ..record },
                None => record,
            });
        }
    }

    /// Applies sampling and the selection rules; a response follows its request.
    fn selected(&mut self, record: &TrafficRecord, head_len: usize, out: &mut Emitted) -> bool {
        if record.kind() == MessageKind::Response {
            let position = self.dropped.iter().position(|s| *s == record.sequence);
            return position.map(|p| self.dropped.remove(p)).is_none();
        }
        let keep = self.sampled && self.config.selection.keeps_head(&record.http[..head_len.min(record.http.len())]);
        if !keep {
            out.stats.filtered += 1;
            if self.config.track_responses {
                self.dropped.push_back(record.sequence);
                // Bounded: responses that never come must not pile up.
                if self.dropped.len() > 1024 {
                    self.dropped.pop_front();
                }
            }
        }
        keep
    }

    /// Frames as many messages as the buffer holds.
    fn run(&mut self, dir: Direction, ts_ns: i64, out: &mut Emitted) {
        loop {
            let framer = self.framer(dir);
            match framer.state {
                State::Opaque => {
                    framer.buf.clear();
                    return;
                }
                State::Resync => {
                    if !framer.find_message_start() {
                        return;
                    }
                    framer.state = State::Head;
                }
                State::Head => {
                    if framer.buf.is_empty() {
                        return;
                    }
                    if !framer.started {
                        framer.started = true;
                        framer.started_ns = ts_ns;
                    }
                    match self.parse_head(dir, out) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(()) => {
                            out.stats.malformed += 1;
                            let framer = self.framer(dir);
                            // Skip the bad line start so resync finds the next message.
                            framer.buf.drain(..1);
                            framer.resync(&mut out.stats);
                            if dir == Direction::ClientToServer {
                                self.waiting.clear();
                            }
                        }
                    }
                }
                State::Body(_) => {
                    if !self.advance_body(dir, out) {
                        return;
                    }
                    self.finish(dir, out, true);
                }
            }
        }
    }
}

impl StreamHandler for HttpConnection {
    type Out = Emitted;

    fn data(&mut self, out: &mut Emitted, dir: Direction, ts_ns: i64, bytes: &[u8]) {
        if dir == Direction::ServerToClient && !self.config.track_responses {
            return;
        }
        let framer = self.framer(dir);
        if framer.state == State::Opaque {
            return;
        }
        framer.buf.extend_from_slice(bytes);
        self.run(dir, ts_ns, out);
    }

    fn gap(&mut self, out: &mut Emitted, dir: Direction) {
        let framer = self.framer(dir);
        if matches!(framer.state, State::Body(_)) {
            self.finish(dir, out, false);
        }
        let framer = self.framer(dir);
        framer.buf.clear();
        if framer.state != State::Opaque {
            framer.resync(&mut out.stats);
        }
        if dir == Direction::ClientToServer {
            self.waiting.clear();
        }
    }

    fn closed(&mut self, out: &mut Emitted, dir: Direction) {
        let framer = self.framer(dir);
        match framer.state {
            State::Body(Body::UntilClose) => self.finish(dir, out, true),
            State::Body(_) => self.finish(dir, out, false),
            State::Head if !framer.buf.is_empty() => {
                out.stats.incomplete += 1;
                framer.buf.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::body::Chunk;
    use super::*;

    fn config(max_body: usize, track_responses: bool) -> Arc<HttpConfig> {
        Arc::new(HttpConfig {
            node: "n".into(),
            run: 1,
            max_body,
            track_responses,
            selection: Selection { sample: 1.0, ..Default::default() },
            redaction: Redaction { headers: vec![], json_fields: vec![], mask: "x".into() },
        })
    }

    fn connection(max_body: usize) -> HttpConnection {
        let flow =
            FlowInfo { number: 7, client: "10.0.0.1:5000".parse().unwrap(), server: "10.0.0.2:80".parse().unwrap() };
        HttpConnection::new(config(max_body, true), &flow)
    }

    const C2S: Direction = Direction::ClientToServer;
    const S2C: Direction = Direction::ServerToClient;

    fn texts(out: &Emitted, kind: MessageKind) -> Vec<String> {
        out.records.iter().filter(|r| r.kind() == kind).map(|r| String::from_utf8_lossy(&r.http).into_owned()).collect()
    }

    #[test]
    fn pipelined_requests_pair_with_responses_in_order() {
        let mut c = connection(1 << 20);
        let mut out = Emitted::default();
        let requests = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloHEAD /c HTTP/1.1\r\n\r\n";
        // Split at awkward places.
        for (i, chunk) in requests.as_bytes().chunks(7).enumerate() {
            c.data(&mut out, C2S, 1000 + i as i64, chunk);
        }
        let responses = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n";
        c.data(&mut out, S2C, 5000, responses.as_bytes());
        assert_eq!(
            texts(&out, MessageKind::Request),
            vec![
                "GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
                "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                "HEAD /c HTTP/1.1\r\n\r\n"
            ]
        );
        let responses: Vec<&TrafficRecord> = out.records.iter().filter(|r| r.kind() == MessageKind::Response).collect();
        assert_eq!(responses.len(), 3, "the HEAD response has no body despite its Content-Length");
        assert_eq!(responses.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(responses[0].latency_ns, 5000 - 1000);
        assert!(String::from_utf8_lossy(&responses[1].http).ends_with("0\r\n\r\n"));
        assert_eq!(out.records[0].timestamp_ns, 1000, "a message is stamped with its first packet");
        assert_eq!(out.stats.unpaired_responses, 0);
    }

    #[test]
    fn expect_continue_204_304_and_close_delimited_bodies() {
        let mut c = connection(1 << 20);
        let mut out = Emitted::default();
        c.data(&mut out, C2S, 1, b"PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
        c.data(&mut out, S2C, 2, b"HTTP/1.1 100 Continue\r\n\r\n");
        c.data(&mut out, C2S, 3, b"dataGET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.0\r\n\r\n");
        c.data(
            &mut out,
            S2C,
            4,
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        );
        c.data(&mut out, S2C, 5, b"HTTP/1.0 200 OK\r\n\r\nuntil the ");
        c.data(&mut out, S2C, 6, b"end");
        c.closed(&mut out, S2C);
        assert_eq!(texts(&out, MessageKind::Request).len(), 3);
        assert_eq!(
            texts(&out, MessageKind::Request)[0],
            "PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata"
        );
        let responses = texts(&out, MessageKind::Response);
        assert_eq!(responses.len(), 3, "{responses:?}");
        assert!(responses[0].starts_with("HTTP/1.1 204"));
        assert!(responses[1].starts_with("HTTP/1.1 304"));
        assert_eq!(responses[2], "HTTP/1.0 200 OK\r\n\r\nuntil the end");
    }

    #[test]
    fn long_bodies_are_cut_and_flagged() {
        let mut c = connection(10);
        let mut out = Emitted::default();
        let body = "x".repeat(100_000);
        let request =
            format!("POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET /after HTTP/1.1\r\n\r\n", body.len());
        for chunk in request.as_bytes().chunks(1460) {
            c.data(&mut out, C2S, 1, chunk);
        }
        let requests: Vec<&TrafficRecord> = out.records.iter().collect();
        assert_eq!(requests.len(), 2, "framing continues after a cut body");
        assert!(requests[0].body_truncated);
        assert_eq!(requests[0].original_body_len, 100_000);
        assert!(String::from_utf8_lossy(&requests[0].http).ends_with("\r\n\r\nxxxxxxxxxx"));
        assert_eq!(requests[1].http, &b"GET /after HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(out.stats.truncated_bodies, 1);
    }

    #[test]
    fn garbage_and_midstream_starts_resynchronise_at_the_next_request() {
        let mut c = connection(1 << 20);
        let mut out = Emitted::default();
        c.gap(&mut out, C2S);
        c.data(&mut out, C2S, 1, b"rest of an earlier body\r\nGET /first-whole HTTP/1.1\r\n\r\n");
        c.data(&mut out, C2S, 2, b"\x16\x03\x01garbage that is not http\r\n\r\nDELETE /z HTTP/1.1\r\n\r\n");
        assert_eq!(
            texts(&out, MessageKind::Request),
            vec!["GET /first-whole HTTP/1.1\r\n\r\n", "DELETE /z HTTP/1.1\r\n\r\n"]
        );
        assert!(out.stats.malformed >= 1 && out.stats.resyncs >= 2);
    }

    #[test]
    fn chunked_scanner_finds_the_end_and_rejects_garbage() {
        let mut chunk = Chunk::start();
        let body = b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let used = chunk.feed(body).unwrap();
        assert_eq!(chunk, Chunk::Done);
        assert_eq!(&body[used..], b"NEXT");
        let mut bad = Chunk::start();
        assert!(bad.feed(b"zz\r\n").is_err());
        // Byte by byte gives the same result.
        let mut slow = Chunk::start();
        let mut total = 0;
        for b in body.iter() {
            if slow == Chunk::Done {
                break;
            }
            total += slow.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(total, used);
    }
}
