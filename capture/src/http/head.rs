//! The head of a message: where it ends, what it is (request, response, interim,
//! tunnel, upgrade), which body framing follows, and the request/response pairing it
//! implies.

use bytes::Bytes;

use super::body::{Body, Chunk};
use super::{Emitted, HttpConnection, MAX_HEAD, MAX_HEADERS, Side, State};
use crate::h2::Http1RequestParts;
use crate::reassembly::Direction;

impl HttpConnection {
    /// Parses the head at the front of the buffer; `Ok(false)` when more bytes are needed
    /// (or the framers are done: the connection switched to HTTP/2).
    pub(super) fn parse_head(&mut self, dir: Direction, ts_ns: i64, out: &mut Emitted) -> Result<bool, ()> {
        enum Parsed {
            Request { head: bool, connect: bool, body: Body, h2c_upgrade: Option<Box<Http1RequestParts>> },
            Response { code: u16, body: Body, to_h2c: bool },
        }
        let framer = self.framer(dir);
        let Some(end) = framer.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if framer.buf.len() > MAX_HEAD { Err(()) } else { Ok(false) };
        };
        let head_len = end + 4;
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let parsed = match framer.side {
            Side::Request => {
                let mut request = httparse::Request::new(&mut slots);
                if !matches!(request.parse(&framer.buf[..head_len]), Ok(httparse::Status::Complete(_))) {
                    return Err(());
                }
                let method = request.method.unwrap_or_default();
                Parsed::Request {
                    head: method == "HEAD",
                    connect: method == "CONNECT",
                    body: request_body(request.headers)?,
                    h2c_upgrade: names_h2c(request.headers).then(|| Box::new(upgrade_parts(&request))),
                }
            }
            Side::Response => {
                let mut response = httparse::Response::new(&mut slots);
                if !matches!(response.parse(&framer.buf[..head_len]), Ok(httparse::Status::Complete(_))) {
                    return Err(());
                }
                let code = response.code.unwrap_or(0);
                let to_h2c = code == 101 && names_h2c(response.headers);
                Parsed::Response { code, body: response_body(code, response.headers)?, to_h2c }
            }
        };
        // HTTP/1.x it is: no need to look for HTTP/2 frames of a connection joined late.
        self.probing = false;
        if let Parsed::Response { to_h2c: true, .. } = parsed
            && let Some(pending) = self.upgrade.take()
        {
            self.responses.buf.drain(..head_len);
            self.upgrade_to_h2(out, *pending, ts_ns);
            return Ok(false);
        }
        // What follows the head: a body to frame, or nothing (interim response, tunnel).
        let next = match parsed {
            Parsed::Request { connect: true, .. } => None,
            Parsed::Request { head, body, h2c_upgrade, .. } => {
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                self.requests.sequence = sequence;
                self.requests.h2c_upgrade = h2c_upgrade;
                if self.config.track_responses {
                    self.waiting.push_back((sequence, self.requests.started_ns, head));
                }
                Some(body)
            }
            Parsed::Response { code: 101, .. } => None,
            Parsed::Response { code: 100..=199, .. } => {
                let framer = &mut self.responses;
                framer.buf.drain(..head_len);
                framer.reset_message();
                return Ok(true);
            }
            Parsed::Response { code, body, .. } => {
                let answers_upgrade = self.upgrade.as_ref().is_some_and(|upgrade| {
                    !self.config.track_responses || self.waiting.front().is_some_and(|w| w.0 == upgrade.sequence())
                });
                if answers_upgrade {
                    // The server did not switch: the request is stored as it is.
                    self.release_upgrade(out);
                    if !self.config.track_responses {
                        // Only the answer to the upgrade was looked for.
                        let framer = &mut self.responses;
                        framer.buf.clear();
                        framer.reset_message();
                        framer.state = State::Head;
                        return Ok(false);
                    }
                }
                let paired = self.waiting.pop_front();
                if paired.is_none() {
                    out.stats.unpaired_responses += 1;
                }
                self.responses.paired = paired.map(|(seq, ts, _)| (seq, ts));
                // Responses to HEAD, and 204 and 304, have no body whatever they say.
                let bodiless = paired.is_some_and(|w| w.2) || code == 204 || code == 304;
                Some(if bodiless { Body::None } else { body })
            }
        };
        let framer = self.framer(dir);
        match next {
            Some(body) => {
                framer.head_len = head_len;
                framer.body_seen = 0;
                framer.state = State::Body(body);
            }
            None => {
                // A tunnel or a switch of protocols (not to h2c): no longer HTTP on this
                // connection; an upgrade request still held is stored as it is.
                framer.buf.drain(..head_len);
                self.requests.state = State::Opaque;
                self.responses.state = State::Opaque;
                self.release_upgrade(out);
            }
        }
        Ok(true)
    }
}

fn header<'h>(headers: &'h [httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers.iter().rev().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// Whether the Upgrade field names h2c (HTTP/2 over cleartext TCP).
fn names_h2c(headers: &[httparse::Header<'_>]) -> bool {
    header(headers, "upgrade")
        .is_some_and(|value| value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c")))
}

/// A request's head as the HTTP/2 decoder takes an upgrade request (its body comes
/// once it is framed).
fn upgrade_parts(request: &httparse::Request<'_, '_>) -> Http1RequestParts {
    let copy = |bytes: &[u8]| Bytes::copy_from_slice(bytes);
    Http1RequestParts {
        method: copy(request.method.unwrap_or_default().as_bytes()),
        path: copy(request.path.unwrap_or_default().as_bytes()),
        authority: header(request.headers, "host").map(copy),
        headers: request.headers.iter().map(|h| (copy(h.name.as_bytes()), copy(h.value))).collect(),
        body: Bytes::new(),
    }
}

fn is_chunked(headers: &[httparse::Header<'_>]) -> bool {
    header(headers, "transfer-encoding")
        .is_some_and(|v| String::from_utf8_lossy(v).to_ascii_lowercase().trim_end().ends_with("chunked"))
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, ()> {
    match header(headers, "content-length") {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok()).map(Some).ok_or(()),
    }
}

pub(super) fn request_body(headers: &[httparse::Header<'_>]) -> Result<Body, ()> {
    if is_chunked(headers) {
        return Ok(Body::Chunked(Chunk::start()));
    }
    Ok(content_length(headers)?.map_or(Body::None, Body::Length))
}

pub(super) fn response_body(code: u16, headers: &[httparse::Header<'_>]) -> Result<Body, ()> {
    if code == 204 || code == 304 {
        return Ok(Body::None);
    }
    if is_chunked(headers) {
        return Ok(Body::Chunked(Chunk::start()));
    }
    Ok(content_length(headers)?.map_or(Body::UntilClose, Body::Length))
}
