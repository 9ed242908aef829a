//! Body framing: where a body ends (Content-Length, chunked, until close, none), with
//! at most `max_body` bytes kept.

use super::{Emitted, HttpConnection, State};
use crate::reassembly::Direction;

/// The chunked transfer coding, byte by byte, to find where a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size { value: u64, digits: u32, extension: bool },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line: usize },
    TrailerLf { line: usize },
    Done,
}

impl Chunk {
    pub(super) fn start() -> Self {
        Chunk::Size { value: 0, digits: 0, extension: false }
    }

    /// Consumes from `bytes` up to the end of the body; returns how many bytes it took,
    /// or `Err` on a malformed coding.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        while i < bytes.len() && *self != Chunk::Done {
            let b = bytes[i];
            *self = match *self {
                Chunk::Size { value, digits, extension } => match b {
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' if digits > 0 => Self::after_size(value),
                    _ if extension => Chunk::Size { value, digits, extension },
                    b';' => Chunk::Size { value, digits, extension: true },
                    b' ' | b'\t' => Chunk::Size { value, digits, extension },
                    _ => {
                        let v = (b as char).to_digit(16).ok_or(())?;
                        if digits >= 15 {
                            return Err(());
                        }
                        Chunk::Size { value: value * 16 + u64::from(v), digits: digits + 1, extension }
                    }
                },
                Chunk::SizeLf { value } if b == b'\n' => Self::after_size(value),
                Chunk::Data(n) => {
                    let take = (n as usize).min(bytes.len() - i);
                    i += take;
                    let left = n - take as u64;
                    *self = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataCr | Chunk::DataLf if b == b'\n' => Chunk::start(),
                Chunk::Trailer { line } => match b {
                    b'\r' => Chunk::TrailerLf { line },
                    b'\n' if line == 0 => Chunk::Done,
                    b'\n' => Chunk::Trailer { line: 0 },
                    _ => Chunk::Trailer { line: line + 1 },
                },
                Chunk::TrailerLf { line } if b == b'\n' => {
                    if line == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Trailer { line: 0 }
                    }
                }
                _ => return Err(()),
            };
            i += 1;
        }
        Ok(i)
    }

    fn after_size(value: u64) -> Self {
        if value == 0 { Chunk::Trailer { line: 0 } } else { Chunk::Data(value) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

impl HttpConnection {
    /// Moves buffered body bytes along; `true` when the message is complete.
    pub(super) fn advance_body(&mut self, dir: Direction, out: &mut Emitted) -> bool {
        let max_body = self.config.max_body;
        let framer = self.framer(dir);
        let State::Body(body) = framer.state else { return false };
        let available = framer.buf.len() - framer.head_len - (framer.body_seen.min(max_body as u64) as usize);
        let unread_from = framer.buf.len() - available;
        let (take, done, next) = match body {
            Body::None => (0, true, body),
            Body::Length(n) => {
                let take = (n as usize).min(available);
                (take, take as u64 == n, Body::Length(n - take as u64))
            }
            Body::Chunked(mut chunk) => match chunk.feed(&framer.buf[unread_from..]) {
                Ok(take) => (take, chunk == Chunk::Done, Body::Chunked(chunk)),
                Err(()) => {
                    out.stats.malformed += 1;
                    (available, true, body)
                }
            },
            Body::UntilClose => (available, false, body),
        };
        // Keep at most `max_body` body bytes; count the rest.
        let kept_before = framer.body_seen.min(max_body as u64) as usize;
        framer.body_seen += take as u64;
        let kept_after = framer.body_seen.min(max_body as u64) as usize;
        let keep = kept_after - kept_before;
        framer.buf.drain(unread_from + keep..unread_from + take);
        framer.state = State::Body(next);
        done
    }
}
