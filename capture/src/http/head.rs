//! The head of a message: where it ends, what it is (request, response, interim,
//! tunnel), which body framing follows, and the request/response pairing it implies.

use super::body::{Body, Chunk};
use super::{Emitted, HttpConnection, MAX_HEAD, MAX_HEADERS, Side, State};
use crate::reassembly::Direction;

impl HttpConnection {
    /// Parses the head at the front of the buffer; `Ok(false)` when more bytes are needed.
    pub(super) fn parse_head(&mut self, dir: Direction, out: &mut Emitted) -> Result<bool, ()> {
        enum Parsed {
            Request { head: bool, connect: bool, body: Body },
            Response { code: u16, body: Body },
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
                }
            }
            Side::Response => {
                let mut response = httparse::Response::new(&mut slots);
                if !matches!(response.parse(&framer.buf[..head_len]), Ok(httparse::Status::Complete(_))) {
                    return Err(());
                }
                let code = response.code.unwrap_or(0);
                Parsed::Response { code, body: response_body(code, response.headers)? }
            }
        };
        // What follows the head: a body to frame, or nothing (interim response, tunnel).
        let next = match parsed {
            Parsed::Request { connect: true, .. } => None,
            Parsed::Request { head, body, .. } => {
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                self.requests.sequence = sequence;
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
            Parsed::Response { code, body } => {
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
                // A tunnel or a switch of protocols: no longer HTTP on this connection.
                framer.buf.drain(..head_len);
                self.requests.state = State::Opaque;
                self.responses.state = State::Opaque;
            }
        }
        Ok(true)
    }
}

fn header<'h>(headers: &'h [httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers.iter().rev().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
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
