//! A TCP connection's HTTP: which protocol it speaks, HTTP/1.x framing, and the records
//! its messages become.
//!
//! The client's first bytes decide the protocol: the HTTP/2 preface hands the connection
//! to the HTTP/2 decoder for its life (`h2_records`), anything else is HTTP/1.x. An
//! HTTP/1.1 request asking for `Upgrade: h2c` is held until the server answers: `101
//! Switching Protocols` makes it stream 1 of the HTTP/2 connection that follows (stored
//! once, in its HTTP/2 form), any other answer lets it out as it is. A connection the
//! capture joined after its start whose segments read as HTTP/2 frames is counted and
//! left alone: without its start, its HPACK state is unknown.
//!
//! HTTP/1.x framing finds where each request and response starts and ends
//! (Content-Length, chunked, no body for HEAD/204/304/1xx, read-until-close responses)
//! and pairs responses with requests in order (pipelining). Garbage, a capture that
//! starts mid-connection, or a lost segment put a direction into resync: bytes are
//! skipped until the next line that starts a message. Bodies beyond the limit are cut
//! and flagged with their real length.
//!
//! Every message, HTTP/1.x or HTTP/2, goes through the same selection and redaction
//! (`HttpConnection::store`). This module is the connection (its two directions, the
//! protocol, storing records); `head` parses message heads, `body` frames bodies,
//! `h2_records` turns HTTP/2 messages into records.

use std::collections::VecDeque;
use std::sync::Arc;

use reprise_proto::HTTP1_TRAFFIC_FORMAT_VERSION;
use reprise_proto::v1::{MessageKind, TrafficRecord};

mod body;
mod h2_records;
mod head;

use self::body::Body;
use self::h2_records::{Http2, PendingUpgrade};
use crate::h2::{H2Emitted, Http1RequestParts, PREFACE, starts_with_frames};
use crate::policy::Redaction;
use crate::reassembly::{Direction, FlowInfo, StreamHandler, looks_like_request};
use reprise_rules::selection::Selection;

/// Longest message head accepted; a longer one is treated as garbage.
const MAX_HEAD: usize = 64 << 10;
/// Server bytes held before the client's first tell the protocol: an HTTP/2 server sends
/// no more than its SETTINGS (and a WINDOW_UPDATE) before the preface comes. Beyond, the
/// connection is taken for HTTP/1.x.
const MAX_SERVER_FIRST: usize = 4 << 10;
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

/// Counters of what the framing met, HTTP/1.x and HTTP/2 messages alike (the HTTP/2
/// decoder's own are in [`Emitted::h2`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    pub responses: u64,
    pub truncated_bodies: u64,
    pub malformed: u64,
    pub resyncs: u64,
    pub unpaired_responses: u64,
    /// Messages cut short by a gap, the end of the connection or an HTTP/2 stream reset.
    pub incomplete: u64,
    /// Requests (and their responses) left out by the selection rules or sampling.
    pub filtered: u64,
    /// Connections decoded as HTTP/2 (prior knowledge or an h2c upgrade).
    pub h2_connections: u64,
}

/// Where finished records go.
#[derive(Default)]
pub struct Emitted {
    pub records: Vec<TrafficRecord>,
    pub stats: HttpStats,
    /// The HTTP/2 decoder's counters. Its messages only pass through: each becomes a
    /// record as soon as it is out.
    pub h2: H2Emitted,
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
    /// After a protocol upgrade (101, CONNECT): no longer HTTP/1.x.
    Opaque,
}

/// What a connection speaks.
enum Protocol {
    /// Not known yet: the client's bytes so far are a prefix of the HTTP/2 preface. Both
    /// directions' bytes wait in their framers' buffers; `held_ns` is when the latest
    /// came.
    Undecided {
        held_ns: i64,
    },
    Http1,
    Http2(Box<Http2>),
    /// HTTP/2 joined after its start: counted, never decoded.
    Http2MidStream,
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
    /// Requests: this request asks for `Upgrade: h2c`; its parts, should it become
    /// stream 1 of an HTTP/2 connection.
    h2c_upgrade: Option<Box<Http1RequestParts>>,
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
            h2c_upgrade: None,
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
        self.h2c_upgrade = None;
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

/// One TCP connection's HTTP traffic.
pub struct HttpConnection {
    config: Arc<HttpConfig>,
    connection_id: String,
    client: String,
    server: String,
    protocol: Protocol,
    /// The capture joined the connection after its start (a gap came before its first
    /// bytes): until HTTP/1.x framing finds a message, each segment is checked for
    /// HTTP/2 frames.
    probing: bool,
    requests: Framer,
    responses: Framer,
    waiting: VecDeque<Waiting>,
    next_sequence: u64,
    /// An `Upgrade: h2c` request held until the server answers.
    upgrade: Option<Box<PendingUpgrade>>,
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
            protocol: Protocol::Undecided { held_ns: 0 },
            probing: false,
            requests: Framer::new(Side::Request),
            responses: Framer::new(Side::Response),
            waiting: VecDeque::new(),
            next_sequence: 0,
            upgrade: None,
        }
    }

    fn framer(&mut self, dir: Direction) -> &mut Framer {
        match dir {
            Direction::ClientToServer => &mut self.requests,
            Direction::ServerToClient => &mut self.responses,
        }
    }

    /// A record of this connection with its ids and endpoints; the caller fills in the
    /// message.
    fn new_record(&self, kind: MessageKind) -> TrafficRecord {
        let (source, destination) = match kind {
            MessageKind::Response => (&self.server, &self.client),
            _ => (&self.client, &self.server),
        };
        TrafficRecord {
            format_version: HTTP1_TRAFFIC_FORMAT_VERSION,
            capture_node: self.config.node.clone(),
            connection_id: self.connection_id.clone(),
            kind: kind as i32,
            source: source.clone(),
            destination: destination.clone(),
            ..TrafficRecord::default()
        }
    }

    /// Emits the finished message at the front of the buffer.
    fn finish(&mut self, dir: Direction, out: &mut Emitted, complete: bool) {
        let max_body = self.config.max_body;
        let framer = self.framer(dir);
        let kept = framer.head_len + framer.body_seen.min(max_body as u64) as usize;
        let head_len = framer.head_len;
        let plain_body = matches!(framer.state, State::Body(Body::None | Body::Length(_)));
        let bytes: Vec<u8> = framer.buf.drain(..kept.min(framer.buf.len())).collect();
        let truncated = framer.body_seen > max_body as u64 || !complete;
        let (kind, sequence, latency_ns) = match framer.side {
            Side::Request => (MessageKind::Request, framer.sequence, 0),
            Side::Response => {
                let (sequence, requested_at) = framer.paired.unwrap_or((u64::MAX, framer.started_ns));
                (MessageKind::Response, sequence, framer.started_ns - requested_at)
            }
        };
        let (timestamp_ns, original_body_len) = (framer.started_ns, framer.body_seen);
        let h2c_upgrade = framer.h2c_upgrade.take().filter(|_| complete);
        framer.reset_message();
        framer.state = State::Head;
        let record = TrafficRecord {
            timestamp_ns,
            http: bytes.into(),
            latency_ns,
            sequence,
            body_truncated: truncated,
            original_body_len,
            ..self.new_record(kind)
        };
        match h2c_upgrade {
            Some(parts) => self.hold_upgrade(out, PendingUpgrade::new(record, head_len, plain_body, *parts)),
            None => self.store(record, head_len, complete, plain_body, out),
        }
    }

    /// Counts a finished message and stores its record, redacted, unless the selection
    /// leaves it out: the one way every HTTP/1.x and HTTP/2 message is stored.
    /// `plain_body`: the body after the head is the body itself (not chunked).
    fn store(&mut self, record: TrafficRecord, head_len: usize, complete: bool, plain_body: bool, out: &mut Emitted) {
        match record.kind() {
            MessageKind::Response => out.stats.responses += 1,
            _ => out.stats.requests += 1,
        }
        out.stats.truncated_bodies += u64::from(record.original_body_len > self.config.max_body as u64);
        out.stats.incomplete += u64::from(!complete);
        if !self.selected(&record, head_len, out) {
            return;
        }
        let masked = self.config.redaction.apply(&record.http, head_len, plain_body && !record.body_truncated);
        out.records.push(match masked {
            Some(http) => TrafficRecord { http: http.into(), ..record },
            None => record,
        });
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
                    match self.parse_head(dir, ts_ns, out) {
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

    /// Keeps the bytes of a connection whose protocol is not decided yet, then decides
    /// if they tell: the client's bytes start with the HTTP/2 preface, or with anything
    /// else (then HTTP/1.x; so too when the server sent more than `MAX_SERVER_FIRST`
    /// before the client spoke).
    fn hold(&mut self, out: &mut Emitted, dir: Direction, ts_ns: i64, bytes: &[u8]) {
        self.protocol = Protocol::Undecided { held_ns: ts_ns };
        let framer = self.framer(dir);
        if framer.state == State::Head && !framer.started {
            framer.started = true;
            framer.started_ns = ts_ns;
        }
        framer.buf.extend_from_slice(bytes);
        let client = &self.requests.buf;
        let compared = client.len().min(PREFACE.len());
        if client[..compared] != PREFACE[..compared] || self.responses.buf.len() > MAX_SERVER_FIRST {
            self.start_http1(out, ts_ns);
        } else if compared == PREFACE.len() {
            self.start_h2_prior_knowledge(out, ts_ns);
        }
    }

    /// The connection is HTTP/1.x: frames what was held (which came at `held_ns`).
    fn start_http1(&mut self, out: &mut Emitted, held_ns: i64) {
        self.protocol = Protocol::Http1;
        // A gap before a direction's first bytes put its framer in resync (see `gap`),
        // which counts now that the connection is HTTP/1.x's.
        out.stats.resyncs +=
            [&self.requests, &self.responses].iter().filter(|f| f.state == State::Resync).count() as u64;
        self.run(Direction::ClientToServer, held_ns, out);
        if self.config.track_responses {
            self.run(Direction::ServerToClient, held_ns, out);
        } else {
            self.responses.buf = Vec::new();
        }
    }

    /// The capture joined an HTTP/2 connection after its start: it is counted, and
    /// nothing of it is decoded (its HPACK state is unknown).
    fn joined_h2_mid_stream(&mut self, out: &mut Emitted) {
        out.h2.stats.joined_mid_stream += 1;
        self.protocol = Protocol::Http2MidStream;
        self.probing = false;
        self.waiting.clear();
        for framer in [&mut self.requests, &mut self.responses] {
            *framer = Framer::new(framer.side);
        }
    }
}

impl StreamHandler for HttpConnection {
    type Out = Emitted;

    fn data(&mut self, out: &mut Emitted, dir: Direction, ts_ns: i64, bytes: &[u8]) {
        if self.probing && starts_with_frames(bytes) {
            self.joined_h2_mid_stream(out);
        }
        match self.protocol {
            Protocol::Http2(_) => return self.h2_event(out, |decoder, h2| decoder.data(h2, dir, ts_ns, bytes)),
            Protocol::Http2MidStream => return,
            Protocol::Undecided { .. } => return self.hold(out, dir, ts_ns, bytes),
            Protocol::Http1 => {}
        }
        // Responses are framed only when tracked, or to find the answer to an upgrade.
        if dir == Direction::ServerToClient && !self.config.track_responses && self.upgrade.is_none() {
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
        match self.protocol {
            Protocol::Http2(_) => return self.h2_event(out, |decoder, h2| decoder.gap(h2, dir)),
            Protocol::Http2MidStream => return,
            Protocol::Undecided { held_ns } => {
                let framer = self.framer(dir);
                if framer.buf.is_empty() {
                    // Before the direction's first bytes: the capture joined the
                    // connection after its start. HTTP/1.x resynchronises (counted once
                    // the connection is known to be HTTP/1.x); HTTP/2 shows in the bytes.
                    framer.state = State::Resync;
                    self.probing = true;
                    return;
                }
                self.start_http1(out, held_ns);
            }
            Protocol::Http1 => {}
        }
        self.release_upgrade(out);
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
        match self.protocol {
            Protocol::Http2(_) => return self.h2_event(out, |decoder, h2| decoder.closed(h2, dir)),
            Protocol::Http2MidStream => return,
            Protocol::Undecided { held_ns } => self.start_http1(out, held_ns),
            Protocol::Http1 => {}
        }
        self.release_upgrade(out);
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
