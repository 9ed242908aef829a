//! HTTP/2 cleartext (h2c) decoding on reassembled streams, sans IO: the bytes of each
//! direction go in as captured, requests and responses come out as they end (a stream's
//! request always before its response, which carries the request's time), gRPC
//! included (a gRPC call is a request and a response whose trailers carry grpc-status).
//! Fields that HTTP/2 forbids (upper-case names, CR, LF or NUL in values) make their
//! stream malformed: messages are rendered as HTTP/1.1 text downstream.
//!
//! Decoded: connections seen from their start, by prior knowledge (the client's first
//! bytes are the preface) or after an HTTP/1.1 `Upgrade: h2c` answered by 101 (the
//! upgrade request is stream 1). Frames per stream (RFC 9113), header blocks across
//! CONTINUATION frames, HPACK (RFC 7541) with one decoder per direction. Every header
//! block goes through its direction's decoder, those of streams left out and of
//! PUSH_PROMISE too, because each block can change the dynamic table the next ones
//! refer to. HPACK is loona-hpack's decoder, which kept to the protocol and never
//! panicked under fuzzing (httlib-hpack, the faster crate, panics on blocks cut short
//! and copies every field), with Huffman-coded strings decoded in `hpack.rs` first,
//! because loona-hpack builds its Huffman table anew for each one (17 µs a string).
//!
//! Not decoded, and never guessed: a connection seen mid-stream, because the HPACK
//! dynamic tables then hold entries nobody saw, so no header block can be trusted. The
//! start shows it (the client's first bytes are not the preface, the server's first
//! frame is not SETTINGS), and so does a gap after bytes were seen. Such a connection,
//! and one that breaks the protocol or HPACK, becomes `Undecodable` with a reason and a
//! counter; its later bytes are ignored, messages completed before are kept, open ones
//! are emitted as incomplete. Pushed streams are counted, not recorded.
//!
//! Bounded per connection: streams tracked at once, a header block's size and its
//! decoded header list, the body kept per message (its length is counted on), the
//! partial frame held between calls (DATA payloads are never held, they go straight to
//! their message), and each HPACK dynamic table.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use crate::reassembly::{Direction, StreamHandler};

mod frame;
mod hpack;
mod message;
mod upgrade;

#[cfg(test)]
pub(crate) mod real_peers;
#[cfg(test)]
pub(crate) mod test_frames;
#[cfg(test)]
mod tests;

use self::frame::*;
pub use self::frame::{LARGEST_FRAME_PAYLOAD, PREFACE, starts_with_frames};
pub use self::hpack::HpackError;
use self::message::Builder;
pub use self::message::{Field, H2Message, MessageEnd, Pseudo, Side};
pub use self::upgrade::Http1RequestParts;

#[derive(Debug, Clone)]
pub struct H2Config {
    /// Body bytes kept per message; the rest is counted, not kept.
    pub max_body: usize,
    /// Streams tracked at once per connection; streams opened beyond are left out (their
    /// header blocks are still decoded).
    pub max_streams: usize,
    /// Longest header block (HEADERS or PUSH_PROMISE and its CONTINUATION frames)
    /// buffered; a longer one makes the connection undecodable.
    pub max_header_block: usize,
    /// Largest decoded header list kept (names, values and 32 bytes each, as SETTINGS_
    /// MAX_HEADER_LIST_SIZE counts); a stream with a larger one is left out.
    pub max_header_list: usize,
    /// Longest frame payload accepted; at most `LARGEST_FRAME_PAYLOAD` (16 MiB - 1) makes
    /// sense. Non-DATA frames are held whole until complete, so this bounds that buffer.
    pub max_frame_payload: u32,
    /// Largest HPACK dynamic table followed, whatever SETTINGS_HEADER_TABLE_SIZE allows
    /// (never below the protocol's initial 4096); an encoder that grows its table beyond
    /// makes the connection undecodable.
    pub max_header_table: usize,
}

impl Default for H2Config {
    fn default() -> Self {
        H2Config {
            max_body: 1 << 20,
            max_streams: 1024,
            max_header_block: 256 << 10,
            max_header_list: 256 << 10,
            max_frame_payload: LARGEST_FRAME_PAYLOAD,
            max_header_table: 64 << 10,
        }
    }
}

/// Counters of what the decoder met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct H2Stats {
    pub requests: u64,
    pub responses: u64,
    /// Tracked streams reset by either peer.
    pub streams_reset: u64,
    /// Streams promised by servers (PUSH_PROMISE): decoded, not recorded.
    pub pushed_streams: u64,
    pub truncated_bodies: u64,
    /// Messages emitted before their end (close, gap, undecodable connection).
    pub incomplete: u64,
    /// Streams left out because they broke HTTP/2's message rules (RFC 9113 §8.1.1).
    pub malformed_streams: u64,
    /// Streams left out because `max_streams` were open.
    pub dropped_streams_over_cap: u64,
    /// Streams left out because a header list was over `max_header_list`.
    pub headers_over_limit: u64,
    /// Connections undecodable because the capture joined them after their start.
    pub joined_mid_stream: u64,
    /// Connections undecodable because bytes were lost.
    pub gaps: u64,
    pub protocol_errors: u64,
    pub hpack_errors: u64,
    /// Connections undecodable because a frame or header block was over the limits.
    pub over_limits: u64,
}

/// Where finished messages go.
#[derive(Debug, Default)]
pub struct H2Emitted {
    pub messages: Vec<H2Message>,
    pub stats: H2Stats,
}

/// Why a connection's traffic cannot be decoded (from that point on).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Undecodable {
    #[error("joined mid-stream ({0}): HPACK state unknown")]
    JoinedMidStream(&'static str),
    #[error("bytes lost {0:?}: HPACK state unknown from there")]
    Gap(Direction),
    #[error("HTTP/2 protocol error: {0}")]
    Protocol(&'static str),
    #[error("HPACK: {0}")]
    Hpack(HpackError),
    #[error("a frame payload of {len} bytes, over the {limit}-byte limit")]
    FrameOverLimit { len: u32, limit: u32 },
    #[error("a header block over the {0}-byte limit")]
    HeaderBlockOverLimit(usize),
}

/// Where the bytes of one direction stand.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Matching the client's connection preface; bytes matched so far.
    Preface(usize),
    /// Collecting a frame header.
    Header,
    /// Collecting a frame payload whole.
    Payload(FrameHeader),
    /// A padded DATA frame's pad length byte is next.
    DataPadLength(FrameHeader),
    /// Passing a DATA payload on to its stream, then skipping its padding.
    Data { stream_id: u32, data_left: u32, padding_left: u32, end_stream: bool },
    /// Skipping a payload nothing is needed from.
    Skip(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Headers,
    PushPromise,
}

/// A header block waiting for its CONTINUATION frames.
struct HeaderBlock {
    stream_id: u32,
    kind: BlockKind,
    end_stream: bool,
    started_ns: i64,
    bytes: Vec<u8>,
}

/// SETTINGS a peer sent that the other has not acknowledged yet, kept at most (peers
/// acknowledge at once; this only bounds a misbehaving one).
const MAX_UNACKED_SETTINGS: usize = 16;

/// A payload buffer this large or smaller is kept for the next frame.
const KEPT_PAYLOAD_CAPACITY: usize = 16 << 10;

/// What one peer sends: its frames as they arrive, and the state needed to read them.
struct Peer {
    reading: Reading,
    head: [u8; HEADER_LEN],
    head_len: usize,
    frame_started_ns: i64,
    payload: Vec<u8>,
    block: Option<HeaderBlock>,
    /// Decodes the header blocks this peer's encoder sends.
    hpack: hpack::Decoder,
    /// Largest dynamic table this peer's encoder may ask for (from the other's SETTINGS).
    table_limit: usize,
    /// Longest frame this peer may send (from the other's SETTINGS).
    max_frame_size: u32,
    /// SETTINGS this peer sent, in order, that the other has not acknowledged yet.
    unacked: VecDeque<Settings>,
    saw_bytes: bool,
    saw_frame: bool,
    closed: bool,
}

impl Peer {
    fn new(reading: Reading) -> Self {
        Peer {
            reading,
            head: [0; HEADER_LEN],
            head_len: 0,
            frame_started_ns: 0,
            payload: Vec::new(),
            block: None,
            hpack: hpack::Decoder::new(DEFAULT_HEADER_TABLE_SIZE as usize),
            table_limit: DEFAULT_HEADER_TABLE_SIZE as usize,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            unacked: VecDeque::new(),
            saw_bytes: false,
            saw_frame: false,
            closed: false,
        }
    }

    /// Applies the other peer's settings to what this one may send. `exact`: they are in
    /// force (acknowledged); otherwise only raised limits are applied, as this peer may
    /// use them before its acknowledgement shows up here.
    fn apply(&mut self, settings: Settings, exact: bool, table_cap: usize) {
        if let Some(size) = settings.max_frame_size {
            self.max_frame_size = if exact { size } else { self.max_frame_size.max(size) };
        }
        if let Some(size) = settings.header_table_size {
            let size = (size as usize).min(table_cap);
            self.table_limit = if exact { size } else { self.table_limit.max(size) };
            self.hpack.set_max_table(self.table_limit);
        }
    }
}

/// One side of a stream.
#[derive(Debug)]
enum Half {
    /// Nothing yet (a response before its final HEADERS).
    Idle,
    Open(Box<Builder>),
    /// A response that ended before its request did (a server may answer before an
    /// upload ends): it is emitted right after the request.
    Waiting(Box<H2Message>),
    /// Emitted, or never coming.
    Closed,
}

#[derive(Debug)]
struct Stream {
    request: Half,
    response: Half,
    /// Capture time of the request's first HEADERS frame, which its response's latency
    /// counts from.
    opened_ns: i64,
}

impl Stream {
    fn half(&mut self, side: Side) -> &mut Half {
        match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
        }
    }
}

/// What a header block is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A tracked stream's side.
    Stream(Side),
    /// Decoded for the HPACK state only.
    Nothing,
}

fn side_of(dir: Direction) -> Side {
    match dir {
        Direction::ClientToServer => Side::Request,
        Direction::ServerToClient => Side::Response,
    }
}

fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::ClientToServer => Direction::ServerToClient,
        Direction::ServerToClient => Direction::ClientToServer,
    }
}

/// The fields of a header block, if they are wanted and fit `max_list`.
enum Decoded {
    Fields(Vec<Field>),
    NotKept,
    OverLimit,
}

/// Runs a header block through its direction's HPACK decoder (always, to keep the
/// dynamic table in step), keeping the fields only if `keep`.
fn decode_block(hpack: &mut hpack::Decoder, block: &[u8], keep: bool, max_list: usize) -> Result<Decoded, HpackError> {
    let mut fields = Vec::new();
    let (mut list_size, mut over) = (0usize, false);
    hpack.decode(block, |name, value| {
        if !keep || over {
            return;
        }
        list_size += name.len() + value.len() + 32;
        if list_size > max_list {
            over = true;
            fields = Vec::new();
        } else {
            fields.push((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)));
        }
    })?;
    Ok(match (keep, over) {
        (false, _) => Decoded::NotKept,
        (true, true) => Decoded::OverLimit,
        (true, false) => Decoded::Fields(fields),
    })
}

/// One TCP connection's HTTP/2 traffic.
pub struct H2Connection {
    config: Arc<H2Config>,
    client: Peer,
    server: Peer,
    streams: HashMap<u32, Stream>,
    /// The highest stream the client opened: a header block for a lower one that is not
    /// tracked belongs to a stream closed or left out.
    last_client_stream: u32,
    /// Capture time of the latest bytes, for messages a gap or close cuts short.
    last_seen_ns: i64,
    undecodable: Option<Undecodable>,
}

impl H2Connection {
    /// A connection by prior knowledge: the client's bytes start with the preface.
    pub fn new(config: Arc<H2Config>) -> Self {
        H2Connection {
            config,
            client: Peer::new(Reading::Preface(0)),
            server: Peer::new(Reading::Header),
            streams: HashMap::new(),
            last_client_stream: 0,
            last_seen_ns: 0,
            undecodable: None,
        }
    }

    /// A connection upgraded from HTTP/1.1 (`Upgrade: h2c` answered by `101 Switching
    /// Protocols`): the client's bytes from right after its request (the preface comes
    /// first), the server's from right after the 101. The upgrade request is stream 1,
    /// complete, and is emitted now; the server's response comes on stream 1.
    pub fn after_upgrade(config: Arc<H2Config>, request: Http1RequestParts, ts_ns: i64, out: &mut H2Emitted) -> Self {
        let request_settings = request.http2_settings();
        let mut connection = H2Connection::new(config);
        connection.last_client_stream = 1;
        connection.last_seen_ns = ts_ns;
        connection.streams.insert(1, Stream { request: Half::Closed, response: Half::Idle, opened_ns: ts_ns });
        let message = request.into_message(connection.config.max_body, ts_ns);
        connection.emit(out, message);
        // The client's HTTP2-Settings are in force from the 101 on, acknowledged.
        match request_settings {
            Ok(settings) => connection.server.apply(settings, true, connection.table_cap()),
            Err(reason) => connection.fail(out, Undecodable::Protocol(reason), ts_ns),
        }
        connection
    }

    /// Why the connection is not (or no longer) decoded.
    pub fn undecodable(&self) -> Option<&Undecodable> {
        self.undecodable.as_ref()
    }

    fn peer(&mut self, dir: Direction) -> &mut Peer {
        match dir {
            Direction::ClientToServer => &mut self.client,
            Direction::ServerToClient => &mut self.server,
        }
    }

    fn table_cap(&self) -> usize {
        self.config.max_header_table.max(DEFAULT_HEADER_TABLE_SIZE as usize)
    }

    /// Gives up on the connection: counted, open messages emitted as incomplete, state
    /// freed; later bytes are ignored.
    fn fail(&mut self, out: &mut H2Emitted, reason: Undecodable, ts_ns: i64) {
        let stats = &mut out.stats;
        match reason {
            Undecodable::JoinedMidStream(_) => stats.joined_mid_stream += 1,
            Undecodable::Gap(_) => stats.gaps += 1,
            Undecodable::Protocol(_) => stats.protocol_errors += 1,
            Undecodable::Hpack(_) => stats.hpack_errors += 1,
            Undecodable::FrameOverLimit { .. } | Undecodable::HeaderBlockOverLimit(_) => stats.over_limits += 1,
        }
        debug!(%reason, "HTTP/2 connection undecodable");
        self.undecodable = Some(reason);
        for id in self.sorted_stream_ids() {
            self.abandon(out, id, MessageEnd::Incomplete, ts_ns);
        }
        for peer in [&mut self.client, &mut self.server] {
            *peer = Peer { closed: peer.closed, ..Peer::new(Reading::Header) };
        }
    }

    fn emit(&mut self, out: &mut H2Emitted, message: H2Message) {
        let stats = &mut out.stats;
        match message.side() {
            Side::Request => stats.requests += 1,
            Side::Response => stats.responses += 1,
        }
        stats.truncated_bodies += u64::from(message.body_truncated());
        stats.incomplete += u64::from(message.end == MessageEnd::Incomplete);
        out.messages.push(message);
    }

    /// Ends a side of a stream: emits it if it is open (a response only once its
    /// request is out, so a stream's request always comes first), closes it, and forgets
    /// the stream once both sides are closed.
    fn end_half(&mut self, out: &mut H2Emitted, stream_id: u32, side: Side, end: MessageEnd, ts_ns: i64) {
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        if matches!(stream.half(side), Half::Waiting(_)) {
            return;
        }
        let ended = match std::mem::replace(stream.half(side), Half::Closed) {
            Half::Open(builder) => Some(builder.finish(stream_id, stream.opened_ns, end, ts_ns)),
            _ => None,
        };
        let waited = match side {
            Side::Response if matches!(stream.request, Half::Open(_)) => {
                if let Some(response) = ended {
                    stream.response = Half::Waiting(Box::new(response));
                }
                return;
            }
            Side::Response => None,
            Side::Request => match std::mem::replace(&mut stream.response, Half::Closed) {
                Half::Waiting(response) => Some(*response),
                response => {
                    stream.response = response;
                    None
                }
            },
        };
        if matches!((&stream.request, &stream.response), (Half::Closed, Half::Closed)) {
            self.streams.remove(&stream_id);
        }
        for message in [ended, waited].into_iter().flatten() {
            self.emit(out, message);
        }
    }

    /// Forgets a stream, emitting its open sides as ended by `end`.
    fn abandon(&mut self, out: &mut H2Emitted, stream_id: u32, end: MessageEnd, ts_ns: i64) {
        self.end_half(out, stream_id, Side::Request, end, ts_ns);
        self.end_half(out, stream_id, Side::Response, end, ts_ns);
    }

    fn malformed(&mut self, out: &mut H2Emitted, stream_id: u32, why: message::Malformed, ts_ns: i64) {
        debug!(stream_id, why, "malformed HTTP/2 stream left out");
        out.stats.malformed_streams += 1;
        self.abandon(out, stream_id, MessageEnd::Incomplete, ts_ns);
    }

    /// Takes as many bytes of `input` as the current step needs.
    fn step(&mut self, out: &mut H2Emitted, dir: Direction, ts_ns: i64, input: &mut &[u8]) -> Result<(), Undecodable> {
        let peer = self.peer(dir);
        match peer.reading {
            Reading::Preface(matched) => {
                let n = (PREFACE.len() - matched).min(input.len());
                if input[..n] != PREFACE[matched..matched + n] {
                    return Err(Undecodable::JoinedMidStream("the client's first bytes are not the HTTP/2 preface"));
                }
                *input = &input[n..];
                peer.reading =
                    if matched + n == PREFACE.len() { Reading::Header } else { Reading::Preface(matched + n) };
            }
            Reading::Header => {
                if peer.head_len == 0 {
                    peer.frame_started_ns = ts_ns;
                }
                let n = (HEADER_LEN - peer.head_len).min(input.len());
                peer.head[peer.head_len..peer.head_len + n].copy_from_slice(&input[..n]);
                peer.head_len += n;
                *input = &input[n..];
                if peer.head_len == HEADER_LEN {
                    peer.head_len = 0;
                    let header = FrameHeader::parse(&peer.head);
                    self.begin_frame(out, dir, header, ts_ns)?;
                }
            }
            Reading::Payload(header) => {
                let n = (header.len as usize - peer.payload.len()).min(input.len());
                peer.payload.extend_from_slice(&input[..n]);
                *input = &input[n..];
                if peer.payload.len() == header.len as usize {
                    self.end_payload(out, dir, header, ts_ns)?;
                }
            }
            Reading::DataPadLength(header) => {
                let padding = u32::from(input[0]);
                *input = &input[1..];
                let data_left = (header.len - 1)
                    .checked_sub(padding)
                    .ok_or(Undecodable::Protocol("DATA padding longer than the frame"))?;
                let end_stream = header.has(FLAG_END_STREAM);
                peer.reading =
                    Reading::Data { stream_id: header.stream_id, data_left, padding_left: padding, end_stream };
                self.end_data_frame(out, dir, ts_ns);
            }
            Reading::Data { stream_id, data_left, padding_left, end_stream } => {
                let n = (data_left as usize).min(input.len());
                let (data, rest) = input.split_at(n);
                let skipped = if n == data_left as usize { (padding_left as usize).min(rest.len()) } else { 0 };
                *input = &rest[skipped..];
                let (data_left, padding_left) = (data_left - n as u32, padding_left - skipped as u32);
                peer.reading = Reading::Data { stream_id, data_left, padding_left, end_stream };
                if !data.is_empty() {
                    let max_body = self.config.max_body;
                    if let Some(builder) = self.open_builder(out, stream_id, side_of(dir), ts_ns) {
                        builder.push_body(data, max_body);
                    }
                }
                self.end_data_frame(out, dir, ts_ns);
            }
            Reading::Skip(left) => {
                let n = (left as usize).min(input.len());
                *input = &input[n..];
                peer.reading = if n == left as usize { Reading::Header } else { Reading::Skip(left - n as u32) };
            }
        }
        Ok(())
    }
}

impl H2Connection {
    /// The open message of a tracked stream's side. Data for a side that is not open
    /// breaks the stream.
    fn open_builder(&mut self, out: &mut H2Emitted, stream_id: u32, side: Side, ts_ns: i64) -> Option<&mut Builder> {
        let open = matches!(self.streams.get_mut(&stream_id)?.half(side), Half::Open(_));
        if !open {
            self.malformed(out, stream_id, "DATA on a stream side that is not open", ts_ns);
            return None;
        }
        match self.streams.get_mut(&stream_id)?.half(side) {
            Half::Open(builder) => Some(builder),
            _ => None,
        }
    }

    /// Ends a DATA frame once its payload is through.
    fn end_data_frame(&mut self, out: &mut H2Emitted, dir: Direction, ts_ns: i64) {
        let peer = self.peer(dir);
        let Reading::Data { stream_id, data_left: 0, padding_left: 0, end_stream } = peer.reading else { return };
        peer.reading = Reading::Header;
        let side = side_of(dir);
        if end_stream && self.open_builder(out, stream_id, side, ts_ns).is_some() {
            self.end_half(out, stream_id, side, MessageEnd::Complete, ts_ns);
        }
    }

    fn begin_frame(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        header: FrameHeader,
        ts_ns: i64,
    ) -> Result<(), Undecodable> {
        let limit = self.config.max_frame_payload.min(LARGEST_FRAME_PAYLOAD);
        let max_header_block = self.config.max_header_block;
        let peer = self.peer(dir);
        if !peer.saw_frame {
            peer.saw_frame = true;
            if header.kind != SETTINGS || header.has(FLAG_ACK) {
                return Err(match dir {
                    Direction::ClientToServer => Undecodable::Protocol("the client's first frame is not SETTINGS"),
                    // With no preface to go by, this is how a server side seen late shows.
                    Direction::ServerToClient => {
                        Undecodable::JoinedMidStream("the server's first frame is not SETTINGS")
                    }
                });
            }
        }
        if header.len > peer.max_frame_size {
            return Err(Undecodable::Protocol("a frame over the peer's SETTINGS_MAX_FRAME_SIZE"));
        }
        if header.len > limit {
            return Err(Undecodable::FrameOverLimit { len: header.len, limit });
        }
        if let Some(block) = &peer.block
            && (header.kind != CONTINUATION || header.stream_id != block.stream_id)
        {
            return Err(Undecodable::Protocol("a header block interrupted before END_HEADERS"));
        }
        match header.kind {
            DATA if header.stream_id == 0 => Err(Undecodable::Protocol("DATA on stream 0")),
            DATA if header.has(FLAG_PADDED) && header.len == 0 => {
                Err(Undecodable::Protocol("a padded DATA frame without its pad length"))
            }
            DATA if header.has(FLAG_PADDED) => {
                peer.reading = Reading::DataPadLength(header);
                Ok(())
            }
            DATA => {
                let end_stream = header.has(FLAG_END_STREAM);
                peer.reading =
                    Reading::Data { stream_id: header.stream_id, data_left: header.len, padding_left: 0, end_stream };
                self.end_data_frame(out, dir, ts_ns);
                Ok(())
            }
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                // Checked before the payload is held: the block it adds to must fit.
                let buffered = peer.block.as_ref().map_or(0, |block| block.bytes.len());
                if buffered + header.len as usize > max_header_block + MAX_BLOCK_OVERHEAD {
                    return Err(Undecodable::HeaderBlockOverLimit(max_header_block));
                }
                self.read_payload(out, dir, header, ts_ns)
            }
            PRIORITY | RST_STREAM | SETTINGS | PING | WINDOW_UPDATE => self.read_payload(out, dir, header, ts_ns),
            GOAWAY if header.stream_id != 0 || header.len < 8 => Err(Undecodable::Protocol("a malformed GOAWAY")),
            // Nothing in GOAWAY changes how what follows reads; frames of unknown types
            // are to be ignored (RFC 9113 §4.1).
            _ => {
                peer.reading = if header.len == 0 { Reading::Header } else { Reading::Skip(header.len) };
                Ok(())
            }
        }
    }

    fn read_payload(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        header: FrameHeader,
        ts_ns: i64,
    ) -> Result<(), Undecodable> {
        let peer = self.peer(dir);
        peer.payload.clear();
        peer.reading = Reading::Payload(header);
        if header.len == 0 { self.end_payload(out, dir, header, ts_ns) } else { Ok(()) }
    }

    fn end_payload(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        header: FrameHeader,
        ts_ns: i64,
    ) -> Result<(), Undecodable> {
        let peer = self.peer(dir);
        peer.reading = Reading::Header;
        let mut payload = std::mem::take(&mut peer.payload);
        let result = self.frame(out, dir, header, &payload, ts_ns);
        // Reused for the next frame unless a rare large one grew it.
        if payload.capacity() <= KEPT_PAYLOAD_CAPACITY {
            payload.clear();
            self.peer(dir).payload = payload;
        }
        result
    }

    /// Acts on a whole frame other than DATA.
    fn frame(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        header: FrameHeader,
        payload: &[u8],
        ts_ns: i64,
    ) -> Result<(), Undecodable> {
        let protocol = Undecodable::Protocol;
        let on_stream_0 = header.stream_id == 0;
        let end_headers = header.has(FLAG_END_HEADERS);
        match header.kind {
            HEADERS if on_stream_0 => Err(protocol("HEADERS on stream 0")),
            HEADERS => {
                let mut fragment = unpad(payload, header.has(FLAG_PADDED)).map_err(protocol)?;
                if header.has(FLAG_PRIORITY) {
                    fragment = fragment.get(5..).ok_or(protocol("HEADERS too short for its priority fields"))?;
                }
                let block = HeaderBlock {
                    stream_id: header.stream_id,
                    kind: BlockKind::Headers,
                    end_stream: header.has(FLAG_END_STREAM),
                    started_ns: self.peer(dir).frame_started_ns,
                    bytes: Vec::new(),
                };
                self.header_fragment(out, dir, block, fragment, end_headers, ts_ns)
            }
            PUSH_PROMISE if dir == Direction::ClientToServer || on_stream_0 => {
                Err(protocol("PUSH_PROMISE from the client or on stream 0"))
            }
            PUSH_PROMISE => {
                let fragment = unpad(payload, header.has(FLAG_PADDED)).map_err(protocol)?;
                let fragment = fragment.get(4..).ok_or(protocol("PUSH_PROMISE too short for its promised stream"))?;
                out.stats.pushed_streams += 1;
                let block = HeaderBlock {
                    stream_id: header.stream_id,
                    kind: BlockKind::PushPromise,
                    end_stream: false,
                    started_ns: self.peer(dir).frame_started_ns,
                    bytes: Vec::new(),
                };
                self.header_fragment(out, dir, block, fragment, end_headers, ts_ns)
            }
            CONTINUATION => {
                let block = self.peer(dir).block.take().ok_or(protocol("CONTINUATION without a header block"))?;
                self.header_fragment(out, dir, block, payload, end_headers, ts_ns)
            }
            PRIORITY if on_stream_0 || payload.len() != 5 => Err(protocol("a malformed PRIORITY")),
            RST_STREAM if on_stream_0 || payload.len() != 4 => Err(protocol("a malformed RST_STREAM")),
            RST_STREAM => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if self.streams.contains_key(&header.stream_id) {
                    out.stats.streams_reset += 1;
                    self.abandon(out, header.stream_id, MessageEnd::Reset(code), ts_ns);
                }
                Ok(())
            }
            SETTINGS if !on_stream_0 => Err(protocol("SETTINGS on a stream")),
            SETTINGS if header.has(FLAG_ACK) => {
                if !payload.is_empty() {
                    return Err(protocol("a SETTINGS acknowledgement with a payload"));
                }
                // The other peer's oldest settings not yet acknowledged bind this one now.
                let table_cap = self.table_cap();
                if let Some(settings) = self.peer(opposite(dir)).unacked.pop_front() {
                    self.peer(dir).apply(settings, true, table_cap);
                }
                Ok(())
            }
            SETTINGS => {
                let settings = parse_settings(payload).map_err(protocol)?;
                let table_cap = self.table_cap();
                self.peer(opposite(dir)).apply(settings, false, table_cap);
                let unacked = &mut self.peer(dir).unacked;
                if unacked.len() == MAX_UNACKED_SETTINGS {
                    unacked.pop_front();
                }
                unacked.push_back(settings);
                Ok(())
            }
            PING if !on_stream_0 || payload.len() != 8 => Err(protocol("a malformed PING")),
            WINDOW_UPDATE if payload.len() != 4 => Err(protocol("a malformed WINDOW_UPDATE")),
            // PRIORITY, PING, WINDOW_UPDATE: nothing to record.
            _ => Ok(()),
        }
    }

    /// Adds a HEADERS, PUSH_PROMISE or CONTINUATION fragment to its header block, and
    /// decodes the block once it is whole.
    fn header_fragment(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        mut block: HeaderBlock,
        fragment: &[u8],
        end_headers: bool,
        ts_ns: i64,
    ) -> Result<(), Undecodable> {
        let max = self.config.max_header_block;
        if block.bytes.len() + fragment.len() > max {
            return Err(Undecodable::HeaderBlockOverLimit(max));
        }
        if !end_headers {
            block.bytes.extend_from_slice(fragment);
            self.peer(dir).block = Some(block);
            return Ok(());
        }
        if block.bytes.is_empty() {
            // A block in one frame, as most are, is decoded where it lies.
            return self.header_block(out, dir, &block, fragment, ts_ns);
        }
        let mut bytes = std::mem::take(&mut block.bytes);
        bytes.extend_from_slice(fragment);
        self.header_block(out, dir, &block, &bytes, ts_ns)
    }

    /// Which stream side a HEADERS block from `dir` is for; a client's block may open a
    /// stream.
    fn headers_target(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        block: &HeaderBlock,
    ) -> Result<Target, Undecodable> {
        let stream_id = block.stream_id;
        if self.streams.contains_key(&stream_id) {
            return Ok(Target::Stream(side_of(dir)));
        }
        if dir == Direction::ServerToClient {
            // A pushed stream, or one closed or left out.
            return Ok(Target::Nothing);
        }
        if stream_id.is_multiple_of(2) {
            return Err(Undecodable::Protocol("the client opened an even-numbered stream"));
        }
        if stream_id <= self.last_client_stream {
            return Ok(Target::Nothing);
        }
        self.last_client_stream = stream_id;
        if self.streams.len() >= self.config.max_streams {
            out.stats.dropped_streams_over_cap += 1;
            return Ok(Target::Nothing);
        }
        let stream = Stream { request: Half::Idle, response: Half::Idle, opened_ns: block.started_ns };
        self.streams.insert(stream_id, stream);
        Ok(Target::Stream(Side::Request))
    }

    /// Decodes a whole header block and applies it to its stream.
    fn header_block(
        &mut self,
        out: &mut H2Emitted,
        dir: Direction,
        block: &HeaderBlock,
        bytes: &[u8],
        ts_ns: i64,
    ) -> Result<(), Undecodable> {
        let target = match block.kind {
            BlockKind::PushPromise => Target::Nothing,
            BlockKind::Headers => self.headers_target(out, dir, block)?,
        };
        let max_list = self.config.max_header_list;
        let keep = target != Target::Nothing;
        let decoded = decode_block(&mut self.peer(dir).hpack, bytes, keep, max_list).map_err(Undecodable::Hpack)?;
        match (target, decoded) {
            (Target::Stream(_), Decoded::OverLimit) => {
                out.stats.headers_over_limit += 1;
                self.abandon(out, block.stream_id, MessageEnd::Incomplete, ts_ns);
            }
            (Target::Stream(side), Decoded::Fields(fields)) => self.stream_headers(out, block, side, fields, ts_ns),
            _ => {}
        }
        Ok(())
    }

    /// A decoded header block on a tracked stream: a message's head (a response's may be
    /// informational first) or its trailers.
    fn stream_headers(&mut self, out: &mut H2Emitted, block: &HeaderBlock, side: Side, fields: Vec<Field>, ts_ns: i64) {
        let stream_id = block.stream_id;
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let half = stream.half(side);
        let applied = match half {
            Half::Idle => {
                let head = match side {
                    Side::Request => message::request_head(fields).map(|(pseudo, headers)| Some((pseudo, headers))),
                    Side::Response => message::response_head(fields).and_then(|(status, headers)| match status {
                        // Informational: the final response is still to come.
                        100..=199 if block.end_stream => Err("an informational response that ends the stream"),
                        100..=199 => Ok(None),
                        _ => Ok(Some((Pseudo::Response { status }, headers))),
                    }),
                };
                head.map(|head| {
                    if let Some((pseudo, headers)) = head {
                        *half = Half::Open(Box::new(Builder::new(pseudo, headers, block.started_ns)));
                    }
                })
            }
            Half::Open(builder) if block.end_stream => {
                message::trailers(fields).map(|trailers| builder.trailers = trailers)
            }
            Half::Open(_) => Err("a header block after the head that does not end the stream"),
            Half::Waiting(_) | Half::Closed => Err("a header block after its side ended"),
        };
        match applied {
            Err(why) => self.malformed(out, stream_id, why, ts_ns),
            Ok(()) if block.end_stream => self.end_half(out, stream_id, side, MessageEnd::Complete, ts_ns),
            Ok(()) => {}
        }
    }

    fn sorted_stream_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

impl StreamHandler for H2Connection {
    type Out = H2Emitted;

    fn data(&mut self, out: &mut H2Emitted, dir: Direction, ts_ns: i64, mut bytes: &[u8]) {
        if self.undecodable.is_some() || self.peer(dir).closed || bytes.is_empty() {
            return;
        }
        self.last_seen_ns = ts_ns;
        self.peer(dir).saw_bytes = true;
        while !bytes.is_empty() {
            if let Err(reason) = self.step(out, dir, ts_ns, &mut bytes) {
                self.fail(out, reason, ts_ns);
                return;
            }
        }
    }

    fn gap(&mut self, out: &mut H2Emitted, dir: Direction) {
        // Before a direction's first byte (the reassembler says so when it missed the
        // handshake) the start decides: the client's preface, the server's SETTINGS
        // first, which nothing lost before them could precede.
        if self.undecodable.is_some() || !self.peer(dir).saw_bytes {
            return;
        }
        self.fail(out, Undecodable::Gap(dir), self.last_seen_ns);
    }

    fn closed(&mut self, out: &mut H2Emitted, dir: Direction) {
        if self.undecodable.is_some() || self.peer(dir).closed {
            return;
        }
        self.peer(dir).closed = true;
        // What this peer had not finished never will be.
        for stream_id in self.sorted_stream_ids() {
            self.end_half(out, stream_id, side_of(dir), MessageEnd::Incomplete, self.last_seen_ns);
        }
    }
}
