//! TCP reassembly: turns captured segments, in whatever order the wire delivered them,
//! into two ordered byte streams per connection.
//!
//! Per direction, bytes are delivered exactly once and in sequence order: retransmitted
//! and overlapping bytes are cut, out-of-order segments wait in a bounded buffer. When
//! the buffer overflows (a segment was lost for good) or a capture starts mid-connection,
//! the stream handler is told of a gap and resynchronises. FIN closes a direction once
//! every byte before it arrived; RST closes both; idle connections expire.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crate::h2::PREFACE;
use crate::packet::Segment;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// A connection as the handler sees it.
#[derive(Debug, Clone)]
pub struct FlowInfo {
    /// Unique per reassembler (a counter).
    pub number: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Consumes the reassembled streams of one connection.
pub trait StreamHandler {
    type Out;
    /// In-order bytes, with the capture time of the segment that carried them.
    fn data(&mut self, out: &mut Self::Out, dir: Direction, ts_ns: i64, bytes: &[u8]);
    /// Bytes were lost (or the capture started mid-stream) before what follows.
    fn gap(&mut self, out: &mut Self::Out, dir: Direction);
    /// The direction ended (FIN or RST, or the connection expired).
    fn closed(&mut self, out: &mut Self::Out, dir: Direction);
}

#[derive(Debug, Clone)]
pub struct ReassemblyConfig {
    /// Out-of-order bytes buffered per direction before giving up on a missing segment.
    pub max_pending_bytes: usize,
    /// Connections idle this long are flushed and forgotten.
    pub idle_timeout_ns: i64,
    /// Connections tracked at once; new ones beyond this are ignored (and counted).
    pub max_flows: usize,
    /// Ports known to be servers (helps when the handshake was not captured).
    pub server_ports: Vec<u16>,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_pending_bytes: 4 << 20,
            idle_timeout_ns: 120_000_000_000,
            max_flows: 200_000,
            server_ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub segments: u64,
    pub duplicate_segments: u64,
    pub out_of_order_segments: u64,
    pub gaps: u64,
    pub flows: u64,
    pub flows_over_limit: u64,
}

#[derive(Default)]
struct HalfStream {
    started: bool,
    /// Sequence number of absolute position 0.
    base: u32,
    /// Next absolute position to deliver.
    pos: u64,
    pending: BTreeMap<u64, (i64, Vec<u8>)>,
    pending_bytes: usize,
    fin_at: Option<u64>,
    closed: bool,
}

impl HalfStream {
    /// Absolute position of a sequence number, relative to the next expected one
    /// (wrap-safe within ±2 GiB).
    fn position(&self, seq: u32) -> i64 {
        let expected = self.base.wrapping_add(self.pos as u32);
        self.pos as i64 + i64::from(seq.wrapping_sub(expected) as i32)
    }
}

struct Flow<H> {
    info: FlowInfo,
    halves: [HalfStream; 2],
    handler: H,
    last_seen_ns: i64,
}

pub struct Reassembler<H: StreamHandler, F: FnMut(&FlowInfo) -> H> {
    config: ReassemblyConfig,
    flows: HashMap<(SocketAddr, SocketAddr), Flow<H>>,
    new_handler: F,
    next_number: u64,
    pub stats: ReassemblyStats,
}

fn key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Heuristic: does this look like the start of an HTTP request?
pub fn looks_like_request(bytes: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] =
        [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];
    METHODS.iter().any(|m| bytes.starts_with(m))
}

impl<H: StreamHandler, F: FnMut(&FlowInfo) -> H> Reassembler<H, F> {
    pub fn new(config: ReassemblyConfig, new_handler: F) -> Self {
        Reassembler { config, flows: HashMap::new(), new_handler, next_number: 0, stats: ReassemblyStats::default() }
    }

    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// Decides who the client is for a connection first seen with `seg`.
    fn client_of(&self, seg: &Segment) -> SocketAddr {
        let ports = &self.config.server_ports;
        if seg.syn {
            return if seg.ack { seg.dst } else { seg.src };
        }
        // The first line of the HTTP/2 preface (`PRI * HTTP/2.0`), which starts an h2c
        // connection by prior knowledge.
        let h2_preface = seg.payload.starts_with(&PREFACE[..14]);
        if ports.contains(&seg.dst.port()) || looks_like_request(seg.payload) || h2_preface {
            return seg.src;
        }
        if ports.contains(&seg.src.port()) || seg.payload.starts_with(b"HTTP/") {
            return seg.dst;
        }
        if seg.src.port() > seg.dst.port() { seg.src } else { seg.dst }
    }

    /// Starts tracking the connection `seg` belongs to, unless the segment says nothing
    /// worth tracking it for or the flow table is full; whether it is now tracked.
    fn track(&mut self, k: (SocketAddr, SocketAddr), seg: &Segment) -> bool {
        // A bare ACK or a RST says nothing worth tracking a connection for.
        if seg.rst || (!seg.syn && !seg.fin && seg.payload.is_empty()) {
            return false;
        }
        if self.flows.len() >= self.config.max_flows {
            self.stats.flows_over_limit += 1;
            return false;
        }
        let client = self.client_of(seg);
        let server = if client == seg.src { seg.dst } else { seg.src };
        let info = FlowInfo { number: self.next_number, client, server };
        self.next_number += 1;
        self.stats.flows += 1;
        let handler = (self.new_handler)(&info);
        self.flows.insert(k, Flow { info, halves: Default::default(), handler, last_seen_ns: seg.ts_ns });
        true
    }

    pub fn segment(&mut self, seg: &Segment, out: &mut H::Out) {
        self.stats.segments += 1;
        let k = key(seg.src, seg.dst);
        if !self.flows.contains_key(&k) && !self.track(k, seg) {
            return;
        }
        let flow = self.flows.get_mut(&k).expect("tracked above");
        flow.last_seen_ns = flow.last_seen_ns.max(seg.ts_ns);
        let dir = if seg.src == flow.info.client { Direction::ClientToServer } else { Direction::ServerToClient };
        if seg.rst {
            for d in [Direction::ClientToServer, Direction::ServerToClient] {
                if !flow.halves[d.index()].closed {
                    flow.halves[d.index()].closed = true;
                    flow.handler.closed(out, d);
                }
            }
            self.flows.remove(&k);
            return;
        }
        let Flow { halves, handler, .. } = flow;
        let half = &mut halves[dir.index()];
        if seg.syn {
            if !half.started {
                *half = HalfStream { started: true, base: seg.seq.wrapping_add(1), ..Default::default() };
            }
        } else if !half.started {
            // The capture started mid-connection: take this segment as the beginning.
            *half = HalfStream { started: true, base: seg.seq, ..Default::default() };
            handler.gap(out, dir);
        }
        let at = half.position(seg.seq.wrapping_add(u32::from(seg.syn)));
        let len = seg.payload.len() as i64;
        if seg.fin {
            half.fin_at = Some((at + len).max(0) as u64);
        }
        if !seg.payload.is_empty() {
            let pos = half.pos as i64;
            if at + len <= pos {
                self.stats.duplicate_segments += 1;
            } else if at <= pos {
                let fresh = &seg.payload[(pos - at) as usize..];
                half.pos += fresh.len() as u64;
                handler.data(out, dir, seg.ts_ns, fresh);
            } else {
                self.stats.out_of_order_segments += 1;
                let entry = half.pending.entry(at as u64).or_insert((seg.ts_ns, Vec::new()));
                if seg.payload.len() > entry.1.len() {
                    half.pending_bytes += seg.payload.len() - entry.1.len();
                    *entry = (seg.ts_ns, seg.payload.to_vec());
                }
            }
            Self::drain(half, handler, out, dir);
            while half.pending_bytes > self.config.max_pending_bytes {
                // The missing bytes are not coming: skip to what we have.
                self.stats.gaps += 1;
                Self::skip_hole(half, handler, out, dir);
            }
        }
        if half.fin_at.is_some_and(|f| f <= half.pos) && !half.closed {
            half.closed = true;
            handler.closed(out, dir);
        }
        if halves.iter().all(|h| h.closed) {
            self.flows.remove(&k);
        }
    }

    /// Gives up on the bytes missing before the first buffered segment: reports a gap
    /// and delivers what follows it.
    fn skip_hole(half: &mut HalfStream, handler: &mut H, out: &mut H::Out, dir: Direction) {
        half.pos = *half.pending.keys().next().expect("non-empty");
        handler.gap(out, dir);
        Self::drain(half, handler, out, dir);
    }

    /// Delivers buffered segments that have become contiguous.
    fn drain(half: &mut HalfStream, handler: &mut H, out: &mut H::Out, dir: Direction) {
        while let Some(entry) = half.pending.first_entry() {
            let at = *entry.key();
            if at > half.pos {
                break;
            }
            let (ts, bytes) = entry.remove();
            half.pending_bytes -= bytes.len();
            let end = at + bytes.len() as u64;
            if end > half.pos {
                let fresh = &bytes[(half.pos - at) as usize..];
                half.pos = end;
                handler.data(out, dir, ts, fresh);
            }
        }
    }

    /// Flushes and forgets connections idle since before `now_ns - idle_timeout`.
    pub fn expire(&mut self, now_ns: i64, out: &mut H::Out) {
        let cutoff = now_ns - self.config.idle_timeout_ns;
        let idle: Vec<_> = self.flows.iter().filter(|(_, f)| f.last_seen_ns < cutoff).map(|(k, _)| *k).collect();
        for k in idle {
            let flow = self.flows.remove(&k).expect("listed");
            self.finish(flow, out);
        }
    }

    /// Flushes every connection (end of a capture file, shutdown).
    pub fn flush_all(&mut self, out: &mut H::Out) {
        let flows: Vec<_> = self.flows.drain().map(|(_, f)| f).collect();
        for flow in flows {
            self.finish(flow, out);
        }
    }

    fn finish(&mut self, mut flow: Flow<H>, out: &mut H::Out) {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let half = &mut flow.halves[dir.index()];
            while !half.pending.is_empty() {
                self.stats.gaps += 1;
                Self::skip_hole(half, &mut flow.handler, out, dir);
            }
            if !half.closed {
                half.closed = true;
                flow.handler.closed(out, dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records what a connection delivers.
    #[derive(Default)]
    struct Recorder;

    #[derive(Default, Debug, PartialEq)]
    struct Seen {
        to_server: Vec<u8>,
        to_client: Vec<u8>,
        gaps: usize,
        closed: usize,
    }

    impl StreamHandler for Recorder {
        type Out = Seen;
        fn data(&mut self, out: &mut Seen, dir: Direction, _ts: i64, bytes: &[u8]) {
            match dir {
                Direction::ClientToServer => out.to_server.extend_from_slice(bytes),
                Direction::ServerToClient => out.to_client.extend_from_slice(bytes),
            }
        }
        fn gap(&mut self, out: &mut Seen, _dir: Direction) {
            out.gaps += 1;
        }
        fn closed(&mut self, out: &mut Seen, _dir: Direction) {
            out.closed += 1;
        }
    }

    fn client() -> SocketAddr {
        "10.0.0.1:40000".parse().unwrap()
    }
    fn server() -> SocketAddr {
        "10.0.0.2:80".parse().unwrap()
    }

    fn seg(seq: u32, syn: bool, fin: bool, payload: &[u8]) -> Segment<'_> {
        Segment { ts_ns: 0, src: client(), dst: server(), seq, syn, ack: !syn, fin, rst: false, payload }
    }

    fn reassembler(max_pending: usize) -> Reassembler<Recorder, impl FnMut(&FlowInfo) -> Recorder> {
        let config = ReassemblyConfig { max_pending_bytes: max_pending, ..Default::default() };
        Reassembler::new(config, |_: &FlowInfo| Recorder)
    }

    /// The client's stream cut into segments at `cuts`, starting at `isn`.
    fn segments(isn: u32, data: &[u8], cuts: &[usize]) -> Vec<(u32, Vec<u8>)> {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        bounds.extend([0, data.len()]);
        bounds.sort();
        bounds.dedup();
        bounds.windows(2).map(|w| (isn.wrapping_add(1).wrapping_add(w[0] as u32), data[w[0]..w[1]].to_vec())).collect()
    }

    #[test]
    fn in_order_stream_with_handshake_and_fin() {
        let mut r = reassembler(1 << 20);
        let mut seen = Seen::default();
        r.segment(&seg(99, true, false, b""), &mut seen);
        r.segment(&seg(100, false, false, b"GET / "), &mut seen);
        r.segment(&seg(106, false, true, b"HTTP/1.1\r\n\r\n"), &mut seen);
        assert_eq!(seen.to_server, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!((seen.gaps, seen.closed), (0, 1));
    }

    #[test]
    fn midstream_start_reports_a_gap_first() {
        let mut r = reassembler(1 << 20);
        let mut seen = Seen::default();
        r.segment(&seg(5000, false, false, b"tail of body GET /next"), &mut seen);
        assert_eq!(seen.gaps, 1);
        assert_eq!(seen.to_server, b"tail of body GET /next");
    }

    #[test]
    fn the_side_that_sends_a_request_or_the_http2_preface_is_the_client() {
        // The server's port above the client's (gRPC's 50051), the handshake missed.
        let (client, server): (SocketAddr, SocketAddr) =
            ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:50051".parse().unwrap());
        for first in [PREFACE, b"GET / HTTP/1.1\r\n\r\n"] {
            let mut r = reassembler(1 << 20);
            let mut seen = Seen::default();
            r.segment(&Segment { src: client, dst: server, payload: first, ..seg(7, false, false, b"") }, &mut seen);
            assert_eq!(r.flows.values().next().unwrap().info.client, client, "{:?}", String::from_utf8_lossy(first));
        }
    }

    #[test]
    fn a_lost_segment_becomes_a_gap_when_the_buffer_fills() {
        let mut r = reassembler(8);
        let mut seen = Seen::default();
        r.segment(&seg(0, true, false, b""), &mut seen);
        r.segment(&seg(1, false, false, b"abc"), &mut seen);
        // Bytes 4..8 are lost; later ones pile up past the 8-byte limit.
        r.segment(&seg(8, false, false, b"12345"), &mut seen);
        r.segment(&seg(13, false, false, b"6789"), &mut seen);
        assert_eq!(seen.gaps, 1);
        assert_eq!(seen.to_server, b"abc123456789");
        assert_eq!(r.stats.gaps, 1);
    }

    proptest! {
        /// Any reordering and duplication of the segments delivers the exact stream once.
        #[test]
        fn reordering_and_duplication_deliver_the_exact_stream(
            data in proptest::collection::vec(any::<u8>(), 1..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            order in proptest::collection::vec(any::<u32>(), 0..40),
            dups in proptest::collection::vec(any::<usize>(), 0..10),
            isn in any::<u32>(),
        ) {
            let mut pieces = segments(isn, &data, &cuts);
            for d in &dups {
                let copy = pieces[d % pieces.len()].clone();
                pieces.push(copy);
            }
            // A deterministic shuffle from `order`.
            for (i, o) in order.iter().enumerate() {
                let (a, b) = (i % pieces.len(), *o as usize % pieces.len());
                pieces.swap(a, b);
            }
            let mut r = reassembler(1 << 20);
            let mut seen = Seen::default();
            r.segment(&seg(isn, true, false, b""), &mut seen);
            for (seq, bytes) in &pieces {
                r.segment(&seg(*seq, false, false, bytes), &mut seen);
            }
            prop_assert_eq!(&seen.to_server, &data);
            prop_assert_eq!(seen.gaps, 0);
        }

        /// Overlapping retransmissions (segments re-cut differently) change nothing.
        #[test]
        fn overlapping_retransmissions_are_cut(
            data in proptest::collection::vec(any::<u8>(), 1..400),
            first_cuts in proptest::collection::vec(any::<usize>(), 0..10),
            second_cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut pieces = segments(1000, &data, &first_cuts);
            pieces.extend(segments(1000, &data, &second_cuts));
            pieces.reverse();
            let mut r = reassembler(1 << 20);
            let mut seen = Seen::default();
            r.segment(&seg(1000, true, false, b""), &mut seen);
            for (seq, bytes) in &pieces {
                r.segment(&seg(*seq, false, false, bytes), &mut seen);
            }
            prop_assert_eq!(&seen.to_server, &data);
        }

        /// Losing segments never duplicates or reorders what is delivered: the output is
        /// the stream with holes, each hole reported as a gap.
        #[test]
        fn loss_leaves_an_ordered_subsequence_with_gaps(
            data in proptest::collection::vec(any::<u8>(), 1..400),
            cuts in proptest::collection::vec(any::<usize>(), 1..15),
            lost in proptest::collection::vec(any::<usize>(), 1..4),
        ) {
            let pieces = segments(0, &data, &cuts);
            let lost: Vec<usize> = lost.iter().map(|l| l % pieces.len()).collect();
            let mut r = reassembler(16);
            let mut seen = Seen::default();
            r.segment(&seg(0, true, false, b""), &mut seen);
            let mut kept = Vec::new();
            for (i, (seq, bytes)) in pieces.iter().enumerate() {
                if !lost.contains(&i) {
                    r.segment(&seg(*seq, false, false, bytes), &mut seen);
                    kept.extend_from_slice(bytes);
                }
            }
            r.flush_all(&mut seen);
            prop_assert_eq!(&seen.to_server, &kept);
            if kept.len() < data.len() && !lost.contains(&(pieces.len() - 1)) {
                prop_assert!(seen.gaps >= 1);
            }
        }
    }
}
