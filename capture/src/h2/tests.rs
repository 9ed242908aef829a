//! Hand-built frames through the decoder: each frame type, header blocks across
//! CONTINUATION, chunking, HPACK state across streams, limits and the undecodable cases.

use super::test_frames::*;
use super::*;

/// A connection with both sides encoded as its peers would.
struct Exchange {
    connection: H2Connection,
    out: H2Emitted,
    client: Encoder,
    server: Encoder,
}

impl Exchange {
    fn with(config: H2Config) -> Self {
        Exchange {
            connection: H2Connection::new(Arc::new(config)),
            out: H2Emitted::default(),
            client: Encoder::new(),
            server: Encoder::new(),
        }
    }

    /// Past the preface and both peers' first SETTINGS.
    fn started() -> Self {
        let mut exchange = Exchange::with(H2Config::default());
        exchange.send(C2S, 1, &[PREFACE, &settings(&[])].concat());
        exchange.send(S2C, 2, &[settings(&[]), settings_ack()].concat());
        exchange.send(C2S, 3, &settings_ack());
        exchange
    }

    fn send(&mut self, dir: Direction, ts_ns: i64, bytes: &[u8]) {
        self.connection.data(&mut self.out, dir, ts_ns, bytes);
    }

    /// Sends a server HEADERS frame.
    fn respond(&mut self, ts_ns: i64, stream_id: u32, end_stream: bool, fields: &[(&str, &str)]) {
        let headers = self.server.headers(stream_id, end_stream, fields);
        self.send(S2C, ts_ns, &headers);
    }

    fn messages(&self, side: Side) -> Vec<&H2Message> {
        self.out.messages.iter().filter(|m| m.side() == side).collect()
    }
}

fn request_pseudo(method: &str, path: &str) -> Pseudo {
    Pseudo::Request {
        method: Bytes::copy_from_slice(method.as_bytes()),
        scheme: Some(Bytes::from_static(b"http")),
        authority: Some(Bytes::from_static(b"api.test")),
        path: Some(Bytes::copy_from_slice(path.as_bytes())),
    }
}

/// The header block of RFC 7541 C.4.1, Huffman coded: GET http://www.example.com/.
const HUFFMAN_GET: [u8; 17] =
    [0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];

#[test]
fn requests_and_responses_decode_with_bodies_trailers_and_times() {
    let mut x = Exchange::started();
    x.send(C2S, 10, &frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &HUFFMAN_GET));
    let post = x.client.headers(
        3,
        false,
        &[&request("POST", "/orders")[..], &[("content-type", "application/json"), ("x-b", "2"), ("x-a", "1")]]
            .concat(),
    );
    x.send(C2S, 11, &post);
    x.send(C2S, 12, &data(3, false, b"{\"id\":"));
    x.send(C2S, 13, &data(3, true, b"7}"));
    x.respond(20, 3, false, &[(":status", "201"), ("content-type", "application/json")]);
    x.send(S2C, 21, &data(3, false, b"{\"ok\":true}"));
    x.respond(22, 3, true, &[("x-checksum", "abc")]);
    x.respond(30, 1, true, &[(":status", "204")]);

    let requests = x.messages(Side::Request);
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].pseudo,
        Pseudo::Request {
            method: Bytes::from_static(b"GET"),
            scheme: Some(Bytes::from_static(b"http")),
            authority: Some(Bytes::from_static(b"www.example.com")),
            path: Some(Bytes::from_static(b"/")),
        },
        "a Huffman-coded block"
    );
    assert_eq!(
        (requests[0].first_frame_ns, requests[0].last_frame_ns, requests[0].end),
        (10, 10, MessageEnd::Complete)
    );
    assert_eq!(requests[1].pseudo, request_pseudo("POST", "/orders"));
    assert_eq!(
        requests[1].headers,
        vec![field("content-type", "application/json"), field("x-b", "2"), field("x-a", "1")],
        "wire order"
    );
    assert_eq!((&requests[1].body[..], requests[1].body_len), (&b"{\"id\":7}"[..], 8));
    assert_eq!((requests[1].first_frame_ns, requests[1].last_frame_ns), (11, 13));

    let responses = x.messages(Side::Response);
    assert_eq!(responses.len(), 2);
    assert_eq!((responses[0].stream_id, &responses[0].pseudo), (3, &Pseudo::Response { status: 201 }));
    assert_eq!(&responses[0].body[..], b"{\"ok\":true}");
    assert_eq!(responses[0].trailers, vec![field("x-checksum", "abc")]);
    assert_eq!((responses[0].first_frame_ns, responses[0].last_frame_ns), (20, 22));
    assert_eq!(
        (responses[1].stream_id, &responses[1].pseudo, responses[1].body_len),
        (1, &Pseudo::Response { status: 204 }, 0)
    );
    assert_eq!((x.out.stats.requests, x.out.stats.responses), (2, 2));
    assert!(x.connection.undecodable().is_none() && x.connection.streams.is_empty(), "finished streams are forgotten");
}

/// A small exchange's bytes: both directions, every frame type the decoder reads.
fn small_exchange() -> (Vec<u8>, Vec<u8>) {
    let (mut client, mut server) = (Encoder::new(), Encoder::new());
    let mut c2s = [PREFACE, &settings(&[(1, 4096)]), &settings_ack()].concat();
    c2s.extend(client.headers(1, false, &[&request("PUT", "/a")[..], &[("x-id", "1")]].concat()));
    c2s.extend(frame(DATA, FLAG_PADDED, 1, &[&[3][..], b"abc", &[0, 0, 0]].concat()));
    c2s.extend(frame(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()));
    c2s.extend(frame(PING, 0, 0, &[7; 8]));
    c2s.extend(frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]));
    c2s.extend(frame(0xfa, 0x3, 1, b"an extension frame"));
    c2s.extend(data(1, true, b"def"));
    // Stream 3's block in three pieces.
    let block = client.block(&[&request("GET", "/b")[..], &[("x-id", "1")]].concat());
    c2s.extend(frame(HEADERS, FLAG_END_STREAM, 3, &block[..2]));
    c2s.extend(frame(CONTINUATION, 0, 3, &block[2..4]));
    c2s.extend(frame(CONTINUATION, FLAG_END_HEADERS, 3, &block[4..]));
    let mut s2c = [settings(&[(5, 20_000)]), settings_ack()].concat();
    s2c.extend(server.headers(1, false, &[(":status", "200")]));
    s2c.extend(data(1, true, b"ok"));
    s2c.extend(frame(PING, FLAG_ACK, 0, &[7; 8]));
    s2c.extend(server.headers(3, true, &[(":status", "404")]));
    s2c.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0, b'b', b'y', b'e']));
    (c2s, s2c)
}

fn decode_in_chunks(c2s: &[&[u8]], s2c: &[&[u8]]) -> H2Emitted {
    let mut connection = H2Connection::new(Arc::new(H2Config::default()));
    let mut out = H2Emitted::default();
    for chunk in c2s {
        connection.data(&mut out, C2S, 1, chunk);
    }
    for chunk in s2c {
        connection.data(&mut out, S2C, 2, chunk);
    }
    assert_eq!(connection.undecodable(), None);
    out
}

#[test]
fn every_frame_type_reads_and_chunking_does_not_matter() {
    let (c2s, s2c) = small_exchange();
    let whole = decode_in_chunks(&[&c2s], &[&s2c]);
    assert_eq!((whole.stats.requests, whole.stats.responses), (2, 2), "{:?}", whole.stats);
    let put = &whole.messages[0];
    assert_eq!((&put.pseudo, &put.body[..]), (&request_pseudo("PUT", "/a"), &b"abcdef"[..]), "padding left out");
    assert_eq!(whole.messages[1].pseudo, request_pseudo("GET", "/b"), "a block across CONTINUATION frames");
    assert_eq!(whole.messages[1].headers, vec![field("x-id", "1")], "from the dynamic table");
    assert_eq!(whole.messages[3].pseudo, Pseudo::Response { status: 404 });
    for cut in 0..=c2s.len() {
        assert_eq!(
            decode_in_chunks(&[&c2s[..cut], &c2s[cut..]], &[&s2c]).messages,
            whole.messages,
            "client cut at {cut}"
        );
    }
    for cut in 0..=s2c.len() {
        assert_eq!(
            decode_in_chunks(&[&c2s], &[&s2c[..cut], &s2c[cut..]]).messages,
            whole.messages,
            "server cut at {cut}"
        );
    }
    let (c2s_bytes, s2c_bytes): (Vec<&[u8]>, Vec<&[u8]>) = (c2s.chunks(1).collect(), s2c.chunks(1).collect());
    assert_eq!(decode_in_chunks(&c2s_bytes, &s2c_bytes).messages, whole.messages, "byte by byte");
}

#[test]
fn padded_and_prioritised_headers_across_continuation() {
    let mut x = Exchange::started();
    let block = x.client.block(&[&request("GET", "/padded")[..], &[("x-long", &"v".repeat(300))]].concat());
    // PADDED | PRIORITY: pad length, 5 priority bytes, the fragment, the padding.
    let mut payload = vec![4, 0x80, 0, 0, 0, 200];
    payload.extend(&block[..10]);
    payload.extend([0; 4]);
    x.send(C2S, 5, &frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM, 1, &payload));
    x.send(C2S, 6, &frame(CONTINUATION, 0, 1, &block[10..100]));
    assert!(x.out.messages.is_empty(), "the block is not whole yet");
    x.send(C2S, 7, &frame(CONTINUATION, FLAG_END_HEADERS, 1, &block[100..]));
    let request = &x.out.messages[0];
    assert_eq!(request.pseudo, request_pseudo("GET", "/padded"));
    assert_eq!(request.headers[0].1.len(), 300);
    assert_eq!((request.first_frame_ns, request.last_frame_ns, request.end), (5, 7, MessageEnd::Complete));
}

#[test]
fn another_frame_inside_a_header_block_is_a_protocol_error() {
    let mut x = Exchange::started();
    let block = x.client.block(&request("GET", "/"));
    x.send(C2S, 5, &frame(HEADERS, FLAG_END_STREAM, 1, &block[..2]));
    x.send(C2S, 6, &frame(PING, 0, 0, &[0; 8]));
    assert_eq!(
        x.connection.undecodable(),
        Some(&Undecodable::Protocol("a header block interrupted before END_HEADERS"))
    );
    assert_eq!(x.out.stats.protocol_errors, 1);
    x.send(C2S, 7, &frame(CONTINUATION, FLAG_END_HEADERS, 1, &block[2..]));
    assert!(x.out.messages.is_empty(), "later bytes are ignored");
}

#[test]
fn interleaved_streams_each_get_their_own_bytes() {
    let mut x = Exchange::started();
    for stream_id in [1, 3, 5] {
        let headers = x.client.headers(stream_id, false, &request("POST", "/upload"));
        x.send(C2S, 10, &headers);
    }
    for round in 0..3 {
        for stream_id in [5, 1, 3] {
            x.send(C2S, 11, &data(stream_id, round == 2, format!("{stream_id}:{round};").as_bytes()));
        }
    }
    for stream_id in [3, 5, 1] {
        let headers = x.server.headers(stream_id, false, &[(":status", "200")]);
        x.send(S2C, 20, &headers);
    }
    x.send(
        S2C,
        21,
        &[data(1, false, b"one"), data(3, true, b"three"), data(1, true, b"!"), data(5, true, b"five")].concat(),
    );
    let bodies: Vec<(Side, u32, &[u8])> = x.out.messages.iter().map(|m| (m.side(), m.stream_id, &m.body[..])).collect();
    assert_eq!(
        bodies,
        vec![
            (Side::Request, 5, &b"5:0;5:1;5:2;"[..]),
            (Side::Request, 1, b"1:0;1:1;1:2;"),
            (Side::Request, 3, b"3:0;3:1;3:2;"),
            (Side::Response, 3, b"three"),
            (Side::Response, 1, b"one!"),
            (Side::Response, 5, b"five"),
        ]
    );
}

#[test]
fn reset_streams_emit_what_was_open_with_the_error_code() {
    let mut x = Exchange::started();
    let (upload, download) =
        (x.client.headers(1, false, &request("POST", "/up")), x.client.headers(3, true, &request("GET", "/down")));
    x.send(C2S, 10, &[upload, data(1, false, b"part")].concat());
    x.send(C2S, 11, &rst(1, 8));
    x.send(C2S, 12, &download);
    x.respond(20, 3, false, &[(":status", "200")]);
    x.send(S2C, 20, &data(3, false, b"partial"));
    x.send(S2C, 21, &rst(3, 2));
    x.send(S2C, 22, &data(3, true, b"late"));
    let ends: Vec<(Side, u32, MessageEnd, &[u8])> =
        x.out.messages.iter().map(|m| (m.side(), m.stream_id, m.end, &m.body[..])).collect();
    assert_eq!(
        ends,
        vec![
            (Side::Request, 1, MessageEnd::Reset(8), &b"part"[..]),
            (Side::Request, 3, MessageEnd::Complete, b""),
            (Side::Response, 3, MessageEnd::Reset(2), b"partial"),
        ]
    );
    assert_eq!(x.out.stats.streams_reset, 2);
    assert!(x.connection.streams.is_empty());
}

#[test]
fn a_response_that_ends_first_comes_out_after_its_request() {
    let mut x = Exchange::started();
    let upload = x.client.headers(1, false, &request("POST", "/upload"));
    x.send(C2S, 10, &[upload, data(1, false, b"part")].concat());
    // The server refuses before the upload ends.
    x.respond(20, 1, true, &[(":status", "413")]);
    assert!(x.messages(Side::Response).is_empty(), "held until its request is out");
    x.send(C2S, 30, &data(1, true, b" and the rest"));
    let order: Vec<(Side, i64, i64)> =
        x.out.messages.iter().map(|m| (m.side(), m.first_frame_ns, m.request_first_frame_ns)).collect();
    assert_eq!(order, vec![(Side::Request, 10, 10), (Side::Response, 20, 10)]);
    assert_eq!(x.out.messages[1].end, MessageEnd::Complete);
    assert!(x.connection.streams.is_empty());

    // Reset after the early response: the request goes out cut, then the response.
    let upload = x.client.headers(3, false, &request("POST", "/upload"));
    x.send(C2S, 40, &upload);
    x.respond(41, 3, true, &[(":status", "413")]);
    x.send(S2C, 42, &rst(3, 0));
    let ends: Vec<(Side, MessageEnd)> = x.out.messages[2..].iter().map(|m| (m.side(), m.end)).collect();
    assert_eq!(ends, vec![(Side::Request, MessageEnd::Reset(0)), (Side::Response, MessageEnd::Complete)]);
}

#[test]
fn what_would_not_make_an_http1_request_line_or_field_is_malformed() {
    let mut x = Exchange::started();
    let injected = x.client.headers(1, true, &[&request("GET", "/a")[..], &[("x-a", "1\r\nx-forged: 2")]].concat());
    x.send(C2S, 10, &injected);
    let upper = x.client.headers(3, true, &[&request("GET", "/b")[..], &[("X-Upper", "1")]].concat());
    x.send(C2S, 11, &upper);
    let spaced = x.client.headers(5, true, &request("GET", "/c d"));
    x.send(C2S, 12, &spaced);
    let no_path = x.client.headers(7, true, &[(":method", "GET"), (":scheme", "http"), (":authority", "a")]);
    x.send(C2S, 13, &no_path);
    let fine = x.client.headers(9, true, &request("GET", "/fine"));
    x.send(C2S, 14, &fine);
    assert_eq!(x.out.stats.malformed_streams, 4);
    assert_eq!(
        x.messages(Side::Request).iter().map(|m| &m.pseudo).collect::<Vec<_>>(),
        [&request_pseudo("GET", "/fine")]
    );
}

#[test]
fn frames_are_told_from_http1_and_from_noise() {
    let (c2s, s2c) = small_exchange();
    assert!(starts_with_frames(&s2c), "the server's frames");
    let first_len = HEADER_LEN + 6;
    assert!(starts_with_frames(&s2c[..first_len + 5]), "a frame cut by the segment's end after a whole one");
    assert!(!starts_with_frames(&s2c[..first_len - 1]), "no whole frame");
    assert!(!starts_with_frames(&c2s), "the preface is no frame");
    assert!(!starts_with_frames(&c2s[PREFACE.len()..]), "the client's frames include one of an unknown type");
    assert!(!starts_with_frames(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!starts_with_frames(b"HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!starts_with_frames(&data(0, false, b"DATA on stream 0")));
    assert!(!starts_with_frames(&frame(PING, 0, 0, &[0; 7])), "a PING of 7 bytes");
    assert!(!starts_with_frames(&frame(0x20, 0, 1, b"an unknown type")));
    let mut reserved = data(1, false, b"x");
    reserved[5] |= 0x80;
    assert!(!starts_with_frames(&reserved), "the reserved bit set");
}

#[test]
fn push_promise_blocks_keep_the_server_table_in_step() {
    let mut x = Exchange::started();
    let get = x.client.headers(1, true, &request("GET", "/page"));
    x.send(C2S, 10, &get);
    // The promise's block adds entries to the server's dynamic table...
    let promised = x.server.block(&[&request("GET", "/style.css")[..], &[("x-pushed-by", "page")]].concat());
    x.send(S2C, 20, &frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, &[&2u32.to_be_bytes()[..], &promised].concat()));
    let pushed = x.server.headers(2, false, &[(":status", "200"), ("x-pushed-by", "page")]);
    x.send(S2C, 21, &[pushed, data(2, true, b"body{}")].concat());
    // ...that the response then refers to.
    let response = x.server.headers(1, false, &[(":status", "200"), ("x-pushed-by", "page")]);
    assert_eq!(response.len(), HEADER_LEN + 2, "both fields indexed, one from the promise's block");
    x.send(S2C, 22, &[response, data(1, true, b"<html>")].concat());
    let responses = x.messages(Side::Response);
    assert_eq!(responses.len(), 1, "pushed streams are not recorded");
    assert_eq!((responses[0].stream_id, &responses[0].headers), (1, &vec![field("x-pushed-by", "page")]));
    assert_eq!(&responses[0].body[..], b"<html>");
    assert_eq!(x.out.stats.pushed_streams, 1);
}

/// SETTINGS_HEADER_TABLE_SIZE from one peer bounds the other's dynamic table size
/// updates: larger at once, smaller from the acknowledgement on.
#[test]
fn table_size_updates_follow_the_receivers_settings() {
    let mut x = Exchange::started();
    // The server allows the client's encoder a larger table: usable before the ACK.
    x.send(S2C, 10, &settings(&[(1, 8192)]));
    let mut block = vec![0x3f, 0xe1, 0x3f]; // table size update to 8192
    let session = [&request("GET", "/big-table")[..], &[("x-session", "s1")]].concat();
    block.extend(x.client.block(&session));
    x.send(C2S, 11, &frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block));
    assert_eq!(x.out.stats.requests, 1, "{:?}", x.connection.undecodable());
    x.send(C2S, 12, &settings_ack());
    // An update to 0 empties the table: what the encoder indexed before is gone.
    let repeat = x.client.headers(3, true, &session);
    x.send(
        C2S,
        13,
        &frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &[&[0x20][..], &repeat[HEADER_LEN..]].concat()),
    );
    assert_eq!(x.connection.undecodable(), Some(&Undecodable::Hpack(HpackError::IndexOutOfBounds)));
    assert_eq!((x.out.stats.requests, x.out.stats.hpack_errors), (1, 1));

    // Smaller: the client's update beyond the new limit is an error once it has ACKed.
    let mut x = Exchange::started();
    x.send(S2C, 10, &settings(&[(1, 100)]));
    x.send(C2S, 11, &settings_ack());
    let mut block = vec![0x3f, 0xe1, 0x1f]; // table size update to 4096
    block.extend(x.client.block(&request("GET", "/")));
    x.send(C2S, 12, &frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block));
    assert_eq!(x.connection.undecodable(), Some(&Undecodable::Hpack(HpackError::TableSizeOverLimit)));
}

#[test]
fn frames_over_the_peers_max_frame_size_or_the_limit_are_refused() {
    let mut x = Exchange::started();
    let headers = x.client.headers(1, false, &request("POST", "/"));
    x.send(C2S, 10, &[headers, data(1, false, &[b'x'; 16_384])].concat());
    x.send(S2C, 11, &settings(&[(5, 1 << 20)]));
    // Allowed at once, before the client's ACK.
    x.send(C2S, 12, &data(1, true, &vec![b'y'; 100_000]));
    assert_eq!(x.out.messages[0].body_len, 116_384);
    x.send(C2S, 13, &data(3, false, &vec![b'z'; (1 << 20) + 1]));
    assert_eq!(
        x.connection.undecodable(),
        Some(&Undecodable::Protocol("a frame over the peer's SETTINGS_MAX_FRAME_SIZE"))
    );

    let mut x = Exchange::with(H2Config { max_frame_payload: 100, ..H2Config::default() });
    x.send(C2S, 1, &[PREFACE, &settings(&[])].concat());
    x.send(C2S, 2, &data(1, false, &[0; 101]));
    assert_eq!(x.connection.undecodable(), Some(&Undecodable::FrameOverLimit { len: 101, limit: 100 }));
    assert_eq!(x.out.stats.over_limits, 1);
}

#[test]
fn a_connection_joined_mid_stream_is_undecodable() {
    let mut encoder = Encoder::new();
    let headers = encoder.headers(41, true, &request("GET", "/"));
    let mut x = Exchange::with(H2Config::default());
    x.send(C2S, 1, &headers);
    assert_eq!(
        x.connection.undecodable(),
        Some(&Undecodable::JoinedMidStream("the client's first bytes are not the HTTP/2 preface"))
    );
    x.send(C2S, 2, &[PREFACE, &settings(&[]), &headers].concat());
    assert!(x.out.messages.is_empty(), "a preface later does not count");
    assert_eq!(x.out.stats.joined_mid_stream, 1);

    // The server's side seen first, not from its start.
    let mut x = Exchange::with(H2Config::default());
    x.send(S2C, 1, &data(1, false, b"tail of a body"));
    assert_eq!(
        x.connection.undecodable(),
        Some(&Undecodable::JoinedMidStream("the server's first frame is not SETTINGS"))
    );

    // A gap before the first bytes (the reassembler did not see the handshake): the
    // bytes themselves tell whether the connection's start was seen.
    let mut x = Exchange::with(H2Config::default());
    x.connection.gap(&mut x.out, C2S);
    x.send(C2S, 1, &data(1, false, b"tail of a body"));
    assert_eq!(x.out.stats.joined_mid_stream, 1);
    let mut x = Exchange::with(H2Config::default());
    x.connection.gap(&mut x.out, C2S);
    x.connection.gap(&mut x.out, S2C);
    x.send(C2S, 1, &[PREFACE, &settings(&[]), &encoder.headers(1, true, &request("GET", "/"))].concat());
    x.send(S2C, 2, &settings(&[]));
    assert_eq!((x.connection.undecodable(), x.out.stats.requests), (None, 1));
}

#[test]
fn hpack_garbage_is_undecodable_and_earlier_messages_stay() {
    let mut x = Exchange::started();
    let first = x.client.headers(1, true, &request("GET", "/first"));
    x.send(C2S, 10, &first);
    let upload = x.client.headers(3, false, &request("POST", "/upload"));
    x.send(C2S, 11, &[upload, data(3, false, b"so far")].concat());
    // Index 0 does not exist.
    x.send(C2S, 12, &frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 5, &[0x80]));
    x.respond(13, 1, true, &[(":status", "200")]);
    assert!(matches!(x.connection.undecodable(), Some(Undecodable::Hpack(_))));
    let kept: Vec<(u32, MessageEnd, &[u8])> =
        x.out.messages.iter().map(|m| (m.stream_id, m.end, &m.body[..])).collect();
    assert_eq!(kept, vec![(1, MessageEnd::Complete, &b""[..]), (3, MessageEnd::Incomplete, b"so far")]);
    assert_eq!((x.out.stats.hpack_errors, x.out.stats.incomplete), (1, 1));
}

#[test]
fn long_bodies_are_cut_and_keep_their_length() {
    let mut x = Exchange::with(H2Config { max_body: 10, ..H2Config::default() });
    x.send(C2S, 1, &[PREFACE, &settings(&[])].concat());
    let headers = x.client.headers(1, false, &request("POST", "/big"));
    x.send(C2S, 2, &headers);
    let body = vec![b'x'; 100_000];
    for (i, chunk) in body.chunks(16_384).enumerate() {
        x.send(C2S, 3, &data(1, i == 6, chunk));
    }
    let request = &x.out.messages[0];
    assert_eq!((&request.body[..], request.body_len, request.body_truncated()), (&b"xxxxxxxxxx"[..], 100_000, true));
    assert_eq!(x.out.stats.truncated_bodies, 1);
}

#[test]
fn informational_responses_are_not_the_response() {
    let mut x = Exchange::started();
    let put = x.client.headers(1, false, &[&request("PUT", "/doc")[..], &[("expect", "100-continue")]].concat());
    x.send(C2S, 10, &put);
    x.respond(11, 1, false, &[(":status", "100")]);
    x.send(C2S, 12, &data(1, true, b"content"));
    x.respond(13, 1, false, &[(":status", "103"), ("x-hint", "</s.css>")]);
    x.respond(14, 1, true, &[(":status", "200"), ("x-hint", "</s.css>")]);
    let responses = x.messages(Side::Response);
    assert_eq!(responses.len(), 1);
    assert_eq!((&responses[0].pseudo, responses[0].first_frame_ns), (&Pseudo::Response { status: 200 }, 14));
    assert_eq!(responses[0].headers, vec![field("x-hint", "</s.css>")], "indexed by the 103's block");
}

#[test]
fn the_upgrade_request_is_stream_1() {
    let mut out = H2Emitted::default();
    let request = Http1RequestParts {
        method: Bytes::from_static(b"POST"),
        path: Bytes::from_static(b"/submit?x=1"),
        authority: Some(Bytes::from_static(b"svc:8080")),
        headers: vec![
            field("Host", "svc:8080"),
            field("Connection", "Upgrade, HTTP2-Settings, X-Hop"),
            field("Upgrade", "h2c"),
            // SETTINGS_MAX_FRAME_SIZE 32768, base64url.
            field("HTTP2-Settings", "AAUAAIAA"),
            field("X-Hop", "1"),
            field("Content-Type", "text/plain"),
            field("TE", "trailers"),
        ],
        body: Bytes::from_static(b"hello"),
    };
    let config = Arc::new(H2Config::default());
    let mut connection = H2Connection::after_upgrade(config, request, 5, &mut out);
    let upgraded = &out.messages[0];
    assert_eq!((upgraded.stream_id, upgraded.end, &upgraded.body[..]), (1, MessageEnd::Complete, &b"hello"[..]));
    assert_eq!(
        upgraded.pseudo,
        Pseudo::Request {
            method: Bytes::from_static(b"POST"),
            scheme: Some(Bytes::from_static(b"http")),
            authority: Some(Bytes::from_static(b"svc:8080")),
            path: Some(Bytes::from_static(b"/submit?x=1")),
        }
    );
    assert_eq!(upgraded.headers, vec![field("content-type", "text/plain"), field("te", "trailers")]);

    let mut server = Encoder::new();
    connection.data(&mut out, S2C, 6, &settings(&[]));
    connection.data(&mut out, C2S, 7, &[PREFACE, &settings(&[]), &settings_ack()].concat());
    let response = server.headers(1, false, &[(":status", "200")]);
    // Over the default 16384, allowed by the client's HTTP2-Settings.
    connection.data(&mut out, S2C, 8, &[settings_ack(), response, data(1, true, &[b'r'; 30_000])].concat());
    assert_eq!(connection.undecodable(), None);
    let response = &out.messages[1];
    assert_eq!(
        (response.stream_id, &response.pseudo, response.body_len),
        (1, &Pseudo::Response { status: 200 }, 30_000)
    );
}

#[test]
fn streams_left_out_still_feed_the_table() {
    let mut x = Exchange::with(H2Config { max_streams: 1, max_header_list: 300, ..H2Config::default() });
    x.send(C2S, 1, &[PREFACE, &settings(&[])].concat());
    x.send(S2C, 1, &settings(&[]));
    let open = x.client.headers(1, false, &request("POST", "/kept"));
    x.send(C2S, 2, &open);
    // Over the cap: left out, yet its new field is indexed for what follows.
    let over_cap = x.client.headers(3, true, &[&request("GET", "/over-cap")[..], &[("x-tenant", "blue")]].concat());
    x.send(C2S, 3, &over_cap);
    x.send(C2S, 4, &data(1, true, b""));
    x.respond(4, 1, true, &[(":status", "200")]);
    let refers = x.client.headers(5, true, &[&request("GET", "/after")[..], &[("x-tenant", "blue")]].concat());
    x.send(C2S, 5, &refers);
    x.respond(5, 5, true, &[(":status", "200")]);
    // Over the header list limit: left out too.
    let long = x.client.headers(7, true, &[&request("GET", "/long")[..], &[("x-long", &"l".repeat(300))]].concat());
    x.send(C2S, 6, &long);
    let requests = x.messages(Side::Request);
    let paths: Vec<&Pseudo> = requests.iter().map(|m| &m.pseudo).collect();
    assert_eq!(paths, vec![&request_pseudo("POST", "/kept"), &request_pseudo("GET", "/after")]);
    assert_eq!(requests[1].headers, vec![field("x-tenant", "blue")]);
    assert_eq!((x.out.stats.dropped_streams_over_cap, x.out.stats.headers_over_limit), (1, 1));
    assert_eq!(x.connection.undecodable(), None);
}

#[test]
fn malformed_streams_are_left_out_and_the_connection_goes_on() {
    let mut x = Exchange::started();
    let no_method = x.client.headers(1, true, &[(":path", "/"), (":scheme", "http")]);
    x.send(C2S, 10, &no_method);
    let late_pseudo = x.client.headers(3, true, &[(":method", "GET"), ("x-a", "1"), (":path", "/")]);
    x.send(C2S, 11, &late_pseudo);
    let fine = x.client.headers(5, false, &request("GET", "/fine"));
    x.send(C2S, 12, &[fine, data(5, true, b"")].concat());
    x.send(S2C, 13, &data(5, true, b"data before headers"));
    assert_eq!(x.out.stats.malformed_streams, 3);
    assert_eq!(x.out.messages.len(), 1);
    assert_eq!(x.out.messages[0].pseudo, request_pseudo("GET", "/fine"));
    assert_eq!(x.connection.undecodable(), None);
}

#[test]
fn close_and_gap_emit_open_messages_as_incomplete() {
    let mut x = Exchange::started();
    let waiting = x.client.headers(1, true, &request("GET", "/slow"));
    let sending = x.client.headers(3, false, &request("POST", "/stream"));
    x.send(C2S, 10, &[waiting, sending, data(3, false, b"chunk")].concat());
    x.respond(11, 1, false, &[(":status", "200")]);
    x.send(S2C, 11, &data(1, false, b"first"));
    x.connection.closed(&mut x.out, C2S);
    let ends: Vec<(Side, u32, MessageEnd)> = x.out.messages.iter().map(|m| (m.side(), m.stream_id, m.end)).collect();
    assert_eq!(
        ends,
        vec![(Side::Request, 1, MessageEnd::Complete), (Side::Request, 3, MessageEnd::Incomplete)],
        "the client's close cuts its own messages only"
    );
    x.send(S2C, 12, &data(1, false, b", second"));
    x.connection.gap(&mut x.out, S2C);
    let response = x.out.messages.last().unwrap();
    assert_eq!(
        (response.side(), response.end, &response.body[..]),
        (Side::Response, MessageEnd::Incomplete, &b"first, second"[..])
    );
    assert_eq!(response.last_frame_ns, 12);
    assert_eq!(x.connection.undecodable(), Some(&Undecodable::Gap(S2C)));
    assert_eq!((x.out.stats.incomplete, x.out.stats.gaps), (2, 1));
}

#[test]
fn grpc_messages_are_told_apart() {
    let mut x = Exchange::started();
    let call = x.client.headers(
        1,
        false,
        &[&request("POST", "/pkg.Svc/Method")[..], &[("content-type", "application/grpc+proto"), ("te", "trailers")]]
            .concat(),
    );
    // Two length-prefixed messages: a client-streaming call's body.
    x.send(C2S, 10, &[call, data(1, false, &[0, 0, 0, 0, 2, 8, 1]), data(1, true, &[0, 0, 0, 0, 2, 8, 2])].concat());
    let reply = x.server.headers(1, false, &[(":status", "200"), ("content-type", "application/grpc")]);
    let status = x.server.headers(1, true, &[("grpc-status", "0")]);
    x.send(S2C, 11, &[reply, data(1, false, &[0, 0, 0, 0, 2, 8, 3]), status].concat());
    assert!(x.out.messages.iter().all(H2Message::is_grpc));
    assert_eq!(x.out.messages[0].body_len, 14);
    assert_eq!(x.out.messages[1].trailers, vec![field("grpc-status", "0")]);
}
