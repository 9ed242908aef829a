//! Entry points for the fuzz targets in `capture/fuzz` (kept in the library so the
//! targets stay one line and the logic is type-checked with everything else).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::{Emitted, HttpConfig, HttpConnection};
use crate::packet::Segment;
use crate::policy::{Redaction, Selection};
use crate::reassembly::{Direction, FlowInfo, Reassembler, ReassemblyConfig, StreamHandler};

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

#[cfg(test)]
mod tests {
    /// The fuzz entry points run (a smoke test; the fuzzers explore the rest).
    #[test]
    fn entry_points_accept_anything() {
        super::frame_http(b"GET / HTTP/1.1\r\n\r\n\x00HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx\x02garbage");
        super::reassemble(&[0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 4, 3, b'G', b'E', b'T']);
    }
}
