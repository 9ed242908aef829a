//! HTTP/2 frames built by hand, as a peer would send them, for the tests of the decoder
//! and of what its messages become.

use bytes::Bytes;

use super::frame::*;
use super::message::Field;
use crate::reassembly::Direction;

pub(crate) const C2S: Direction = Direction::ClientToServer;
pub(crate) const S2C: Direction = Direction::ServerToClient;

pub(crate) fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = len.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream_id.to_be_bytes());
    bytes.extend(payload);
    bytes
}

pub(crate) fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> =
        values.iter().flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()].concat()).collect();
    frame(SETTINGS, 0, 0, &payload)
}

pub(crate) fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, FLAG_ACK, 0, &[])
}

pub(crate) fn data(stream_id: u32, end_stream: bool, body: &[u8]) -> Vec<u8> {
    frame(DATA, if end_stream { FLAG_END_STREAM } else { 0 }, stream_id, body)
}

pub(crate) fn rst(stream_id: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream_id, &code.to_be_bytes())
}

pub(crate) fn field(name: &str, value: &str) -> Field {
    (Bytes::copy_from_slice(name.as_bytes()), Bytes::copy_from_slice(value.as_bytes()))
}

/// One direction's HPACK encoder: fields whose names are in no table are indexed, so
/// their repeats refer to the dynamic table.
pub(crate) struct Encoder(loona_hpack::Encoder<'static>);

impl Encoder {
    pub(crate) fn new() -> Self {
        Encoder(loona_hpack::Encoder::new())
    }

    pub(crate) fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.0.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    pub(crate) fn headers(&mut self, stream_id: u32, end_stream: bool, fields: &[(&str, &str)]) -> Vec<u8> {
        let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
        frame(HEADERS, flags, stream_id, &self.block(fields))
    }
}

pub(crate) fn request(method: &'static str, path: &'static str) -> [(&'static str, &'static str); 4] {
    [(":method", method), (":scheme", "http"), (":authority", "api.test"), (":path", path)]
}
