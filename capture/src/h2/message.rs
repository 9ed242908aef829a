//! Requests and responses as decoded from a stream, and how they take shape.

use bytes::{Bytes, BytesMut};

/// A header field: its name (lower-case, as on the wire) and value.
pub type Field = (Bytes, Bytes);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// A message's pseudo-header fields (RFC 9113 §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pseudo {
    Request { method: Bytes, scheme: Option<Bytes>, authority: Option<Bytes>, path: Option<Bytes> },
    Response { status: u16 },
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEnd {
    /// Its sender ended the stream (END_STREAM).
    Complete,
    /// A peer reset the stream first, with this error code.
    Reset(u32),
    /// The connection closed, lost bytes or became undecodable first.
    Incomplete,
}

/// One request or response of an HTTP/2 stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Message {
    pub stream_id: u32,
    pub pseudo: Pseudo,
    /// Regular header fields in wire order.
    pub headers: Vec<Field>,
    /// The body's first `max_body` bytes.
    pub body: Bytes,
    /// The body's whole length as seen.
    pub body_len: u64,
    pub trailers: Vec<Field>,
    pub end: MessageEnd,
    /// Capture time of the message's first HEADERS frame (for a response: its final,
    /// non-1xx one).
    pub first_frame_ns: i64,
    /// Capture time of the first HEADERS frame of the stream's request (a request's own
    /// `first_frame_ns`): a response's latency counts from it.
    pub request_first_frame_ns: i64,
    /// Capture time of the bytes that ended the message.
    pub last_frame_ns: i64,
}

impl H2Message {
    pub fn side(&self) -> Side {
        match self.pseudo {
            Pseudo::Request { .. } => Side::Request,
            Pseudo::Response { .. } => Side::Response,
        }
    }

    /// Whether bytes of the body were left out (beyond `max_body`).
    pub fn body_truncated(&self) -> bool {
        self.body_len > self.body.len() as u64
    }

    /// The first value of a header field (`name` lower-case).
    pub fn header(&self, name: &[u8]) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Whether this is a gRPC message (content-type application/grpc, +proto, +json...):
    /// its body is a series of length-prefixed messages and a response's trailers carry
    /// grpc-status.
    pub fn is_grpc(&self) -> bool {
        self.header(b"content-type").is_some_and(|v| v.starts_with(b"application/grpc"))
    }
}

/// A message whose head has been decoded, waiting for its body and end.
#[derive(Debug)]
pub(super) struct Builder {
    pseudo: Pseudo,
    headers: Vec<Field>,
    body: BytesMut,
    body_len: u64,
    pub trailers: Vec<Field>,
    first_frame_ns: i64,
}

impl Builder {
    pub fn new(pseudo: Pseudo, headers: Vec<Field>, first_frame_ns: i64) -> Self {
        Builder { pseudo, headers, body: BytesMut::new(), body_len: 0, trailers: Vec::new(), first_frame_ns }
    }

    /// Appends body bytes, keeping at most `max_body` of them and counting the rest.
    pub fn push_body(&mut self, data: &[u8], max_body: usize) {
        self.body_len += data.len() as u64;
        let room = max_body.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..room.min(data.len())]);
    }

    pub fn finish(self, stream_id: u32, request_first_frame_ns: i64, end: MessageEnd, last_frame_ns: i64) -> H2Message {
        H2Message {
            stream_id,
            pseudo: self.pseudo,
            headers: self.headers,
            body: self.body.freeze(),
            body_len: self.body_len,
            trailers: self.trailers,
            end,
            first_frame_ns: self.first_frame_ns,
            request_first_frame_ns,
            last_frame_ns,
        }
    }
}

/// Why a header list does not make a well-formed message (RFC 9113 §8.1.1): the stream
/// is left out, the connection goes on.
pub(super) type Malformed = &'static str;

/// Whether a field is one HTTP/2 allows (RFC 9113 §8.2.1): a name of lower-case
/// visible ASCII without a colon (but a pseudo-header's leading one), a value without
/// NUL, CR or LF. Records render fields as HTTP/1.1 lines, which such bytes would forge.
fn allowed_field((name, value): &Field) -> bool {
    let name = name.strip_prefix(b":").unwrap_or(name);
    !name.is_empty()
        && name.iter().all(|&b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':')
        && !value.iter().any(|&b| matches!(b, b'\0' | b'\r' | b'\n'))
}

/// Splits a decoded header list into its pseudo-header fields and the regular ones,
/// which must all come after them.
fn split_pseudo(mut fields: Vec<Field>) -> Result<(Vec<Field>, Vec<Field>), Malformed> {
    if !fields.iter().all(allowed_field) {
        return Err("a field name or value HTTP/2 forbids");
    }
    let count = fields.iter().take_while(|(name, _)| name.starts_with(b":")).count();
    let regular = fields.split_off(count);
    if regular.iter().any(|(name, _)| name.starts_with(b":")) {
        return Err("a pseudo-header field after a regular one");
    }
    Ok((fields, regular))
}

/// A request's head from its first header block.
pub(super) fn request_head(fields: Vec<Field>) -> Result<(Pseudo, Vec<Field>), Malformed> {
    let (pseudo, regular) = split_pseudo(fields)?;
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    for (name, value) in pseudo {
        let slot = match &name[..] {
            b":method" => &mut method,
            b":scheme" => &mut scheme,
            b":authority" => &mut authority,
            b":path" => &mut path,
            _ => return Err("an unknown pseudo-header field in a request"),
        };
        if slot.replace(value).is_some() {
            return Err("a repeated pseudo-header field");
        }
    }
    let method = method.ok_or("a request without :method")?;
    // The request line's target: a CONNECT's is its :authority, every other's its :path.
    match (&method[..], &path, &authority) {
        (b"CONNECT", _, None) => return Err("a CONNECT without :authority"),
        (b"CONNECT", _, _) => {}
        (_, None, _) => return Err("a request without :path"),
        _ => {}
    }
    // They make the request line of the record: a space would split it.
    if [Some(&method), path.as_ref()].into_iter().flatten().any(|v| v.iter().any(u8::is_ascii_whitespace)) {
        return Err("a :method or :path with whitespace");
    }
    Ok((Pseudo::Request { method, scheme, authority, path }, regular))
}

/// A response's status and regular fields from a header block.
pub(super) fn response_head(fields: Vec<Field>) -> Result<(u16, Vec<Field>), Malformed> {
    let (pseudo, regular) = split_pseudo(fields)?;
    let [(name, value)] = &pseudo[..] else {
        return Err("a response without exactly one pseudo-header field");
    };
    if name != ":status" || value.len() != 3 || !value.iter().all(u8::is_ascii_digit) {
        return Err("a response without a three-digit :status");
    }
    let status = value.iter().fold(0u16, |status, digit| status * 10 + u16::from(digit - b'0'));
    Ok((status, regular))
}

/// Trailers: regular fields only.
pub(super) fn trailers(fields: Vec<Field>) -> Result<Vec<Field>, Malformed> {
    match split_pseudo(fields)? {
        (pseudo, regular) if pseudo.is_empty() => Ok(regular),
        _ => Err("a pseudo-header field in trailers"),
    }
}
