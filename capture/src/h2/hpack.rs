//! HPACK (RFC 7541) for the HTTP/2 decoder: loona-hpack decodes the header fields and
//! keeps the dynamic table; Huffman-coded strings are decoded here first, with a table
//! built at compile time, and handed to it as plain strings. loona-hpack builds its
//! Huffman table anew for every Huffman-coded string (about 17 µs each), and real
//! peers Huffman-code nearly every literal.

use loona_hpack::decoder::{DecoderError, IntegerDecodingError, StringDecodingError};

/// Why a header block does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("an index beyond the static and dynamic tables")]
    IndexOutOfBounds,
    /// A dynamic table size update over the size the receiver allows.
    #[error("a dynamic table size update over the allowed size")]
    TableSizeOverLimit,
    #[error("a dynamic table size update at the end of a header block")]
    SizeUpdateAtEnd,
    /// An integer or string cut short by the end of the block.
    #[error("an integer or string cut short")]
    Truncated,
    #[error("an integer in too many octets")]
    IntegerOverflow,
    /// EOS in a Huffman-coded string, or padding that is not the start of EOS or is
    /// longer than 7 bits.
    #[error("an invalid Huffman-coded string")]
    Huffman,
    /// Anything else the decoder refused.
    #[error("{0}")]
    Other(String),
}

impl From<DecoderError> for HpackError {
    fn from(error: DecoderError) -> Self {
        match error {
            DecoderError::HeaderIndexOutOfBounds => HpackError::IndexOutOfBounds,
            DecoderError::InvalidMaxDynamicSize => HpackError::TableSizeOverLimit,
            DecoderError::SizeUpdateAtEnd => HpackError::SizeUpdateAtEnd,
            DecoderError::IntegerDecodingError(IntegerDecodingError::NotEnoughOctets)
            | DecoderError::StringDecodingError(StringDecodingError::NotEnoughOctets) => HpackError::Truncated,
            DecoderError::IntegerDecodingError(
                IntegerDecodingError::TooManyOctets | IntegerDecodingError::ValueTooLarge,
            ) => HpackError::IntegerOverflow,
            DecoderError::StringDecodingError(StringDecodingError::HuffmanDecoderError(_)) => HpackError::Huffman,
            other => HpackError::Other(other.to_string()),
        }
    }
}

/// A block rewritten with plain strings is kept for the next one while its buffer is
/// this small or smaller.
const KEPT_PLAIN_CAPACITY: usize = 16 << 10;

/// One direction's HPACK decoder.
pub(super) struct Decoder {
    inner: loona_hpack::Decoder<'static>,
    /// The block being decoded, its Huffman-coded strings replaced by plain ones.
    plain: Vec<u8>,
}

impl Decoder {
    /// A decoder whose encoder may use a dynamic table of `max_table` bytes at most.
    pub(super) fn new(max_table: usize) -> Self {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(max_table);
        Decoder { inner, plain: Vec::new() }
    }

    /// The largest dynamic table size update accepted from now on.
    pub(super) fn set_max_table(&mut self, max_table: usize) {
        self.inner.set_max_allowed_table_size(max_table);
    }

    /// Decodes a whole header block, giving each field to `field` in order.
    pub(super) fn decode(&mut self, block: &[u8], mut field: impl FnMut(&[u8], &[u8])) -> Result<(), HpackError> {
        let result = dehuffman(block, &mut self.plain).and_then(|plain| {
            let block = if plain { &self.plain[..] } else { block };
            Ok(self.inner.decode_with_cb(block, |name, value| field(&name, &value))?)
        });
        if self.plain.capacity() > KEPT_PLAIN_CAPACITY {
            self.plain = Vec::new();
        }
        result
    }
}

/// Longest integer accepted, in octets with its prefix (as loona-hpack: the value then
/// stays below 2^28 + 2^8).
const MAX_INTEGER_OCTETS: usize = 5;

/// Reads the integer at `*at` (RFC 7541 §5.1), of a `prefix`-bit prefix, moving past it.
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << prefix) as usize - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)?;
    *at += 1;
    let mut value = first as usize & mask;
    if value < mask {
        return Ok(value);
    }
    for shift in (0..).step_by(7).take(MAX_INTEGER_OCTETS - 1) {
        let byte = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        value += ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::IntegerOverflow)
}

fn put_integer(value: usize, prefix: u8, flags: u8, out: &mut Vec<u8>) {
    let mask = (1u16 << prefix) as usize - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Copies `block` into `out` with every Huffman-coded string decoded, if it has any
/// (then true). Only the representations' lengths are read here (RFC 7541 §6); indexes
/// and size updates are left to the decoder.
fn dehuffman(block: &[u8], out: &mut Vec<u8>) -> Result<bool, HpackError> {
    out.clear();
    let (mut at, mut copied) = (0, 0);
    while let Some(&first) = block.get(at) {
        let strings = match first {
            // An indexed field (7-bit prefix) or a size update (5-bit prefix).
            0x80..=0xff | 0x20..=0x3f => {
                integer(block, &mut at, if first & 0x80 != 0 { 7 } else { 5 })?;
                0
            }
            // A literal: a name index (0: a literal name follows), then the value.
            _ => match integer(block, &mut at, if first & 0x40 != 0 { 6 } else { 4 })? {
                0 => 2,
                _ => 1,
            },
        };
        for _ in 0..strings {
            let start = at;
            let huffman = block.get(at).is_some_and(|&b| b & 0x80 != 0);
            let len = integer(block, &mut at, 7)?;
            let end = at.checked_add(len).filter(|&end| end <= block.len()).ok_or(HpackError::Truncated)?;
            if huffman {
                if copied == 0 {
                    // Decoded, strings grow by 8/5 at most.
                    out.reserve(block.len() * 8 / 5 + 16);
                }
                out.extend_from_slice(&block[copied..start]);
                // A length byte, then the string; a longer length moves the string up.
                let head = out.len();
                out.push(0);
                huffman_decode(&block[at..end], out)?;
                let decoded = out.len() - head - 1;
                if decoded < 0x7f {
                    out[head] = decoded as u8;
                } else {
                    let mut length = Vec::with_capacity(MAX_INTEGER_OCTETS);
                    put_integer(decoded, 7, 0, &mut length);
                    out.splice(head..head + 1, length);
                }
                copied = end;
            }
            at = end;
        }
    }
    if copied == 0 {
        return Ok(false);
    }
    out.extend_from_slice(&block[copied..]);
    Ok(true)
}

/// RFC 7541 Appendix B: each symbol's code and its length in bits; symbol 256 is EOS.
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28),
    (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28),
    (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10),
    (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6),
    (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),
    (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14),
    (0x1ffd, 13), (0xffffffc, 28), (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23),
    (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23),
    (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21),
    (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22),
    (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22),
    (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23),
    (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21),
    (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27),
    (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22), (0x3fffeb, 22),
    (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27),
    (0x7ffffe9, 27), (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30),
];

/// A child in the code tree: another node or, with this bit, a symbol.
const LEAF: u16 = 0x8000;

/// The code as a binary tree of its 256 inner nodes, the root first.
const fn code_tree() -> [[u16; 2]; 256] {
    let mut tree = [[0u16; 2]; 256];
    let (mut nodes, mut symbol) = (1, 0);
    while symbol < CODES.len() {
        let (code, len) = CODES[symbol];
        let (mut node, mut bit) = (0, len - 1);
        while bit > 0 {
            let side = ((code >> bit) & 1) as usize;
            if tree[node][side] == 0 {
                tree[node][side] = nodes;
                nodes += 1;
            }
            node = tree[node][side] as usize;
            bit -= 1;
        }
        tree[node][(code & 1) as usize] = LEAF | symbol as u16;
        symbol += 1;
    }
    tree
}

/// What 4 bits do from a node of the tree.
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    symbol: u8,
    flags: u8,
}

/// `symbol` was decoded.
const EMIT: u8 = 1;
/// EOS was decoded: an error within a string.
const FAIL: u8 = 2;
/// `next` may end a string: it is reached from the root by at most 7 one-bits, so the
/// bits since the last symbol are valid padding (the start of EOS, RFC 7541 §5.2).
const ACCEPT: u8 = 4;

/// For each inner node and each 4 bits, where they lead (4 bits decode one symbol at
/// most: the shortest code has 5).
const fn decode_table() -> [[Step; 16]; 256] {
    let tree = code_tree();
    let mut accepting = [false; 256];
    let (mut node, mut ones) = (0, 0);
    accepting[0] = true;
    while ones < 7 {
        node = tree[node][1] as usize;
        accepting[node] = true;
        ones += 1;
    }
    let mut table = [[Step { next: 0, symbol: 0, flags: 0 }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut bits = 0;
        while bits < 16 {
            let mut step = Step { next: 0, symbol: 0, flags: 0 };
            let (mut node, mut bit) = (state, 4);
            while bit > 0 {
                bit -= 1;
                let child = tree[node][(bits >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if (child & !LEAF) == 256 {
                    step.flags = FAIL;
                    break;
                } else {
                    step.flags |= EMIT;
                    step.symbol = (child & !LEAF) as u8;
                    node = 0;
                }
            }
            step.next = node as u8;
            if accepting[node] {
                step.flags |= ACCEPT;
            }
            table[state][bits] = step;
            bits += 1;
        }
        state += 1;
    }
    table
}

static DECODE: [[Step; 16]; 256] = decode_table();

/// Decodes a Huffman-coded string onto the end of `out`.
fn huffman_decode(coded: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let (mut state, mut accepting) = (0, true);
    for &byte in coded {
        for bits in [byte >> 4, byte & 0x0f] {
            let step = DECODE[state][bits as usize];
            if step.flags & FAIL != 0 {
                return Err(HpackError::Huffman);
            }
            if step.flags & EMIT != 0 {
                out.push(step.symbol);
            }
            state = step.next as usize;
            accepting = step.flags & ACCEPT != 0;
        }
    }
    if accepting { Ok(()) } else { Err(HpackError::Huffman) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Huffman-codes `plain` (RFC 7541 §5.2: the codes, then the start of EOS).
    fn huffman_encode(plain: &[u8]) -> Vec<u8> {
        let (mut out, mut bits, mut len) = (Vec::new(), 0u64, 0);
        for &byte in plain {
            let (code, code_len) = CODES[byte as usize];
            bits = bits << code_len | u64::from(code);
            len += code_len;
            while len >= 8 {
                len -= 8;
                out.push((bits >> len) as u8);
            }
        }
        if len > 0 {
            out.push((bits << (8 - len)) as u8 | (0xff >> len));
        }
        out
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, |name, value| {
            fields.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()))
        })?;
        Ok(fields)
    }

    fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn the_code_is_complete() {
        // Every inner node has both children (0 is the root, never a child): each
        // sequence of bits decodes to something.
        assert!(code_tree().iter().flatten().all(|&child| child != 0));
        let kraft: f64 = CODES.iter().map(|&(_, len)| 0.5f64.powi(len.into())).sum();
        assert_eq!(kraft, 1.0);
        assert_eq!(huffman_encode(b"www.example.com"), hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    }

    /// RFC 7541 C.4 and C.6: requests and responses with Huffman-coded strings, each
    /// sequence on one decoder (later blocks refer to the dynamic table).
    #[test]
    fn rfc_7541_examples_decode() {
        let mut requests = Decoder::new(4096);
        let c4 = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        let request = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
        assert_eq!(decode(&mut requests, &hex(c4[0])), Ok(owned(&request)));
        assert_eq!(
            decode(&mut requests, &hex(c4[1])),
            Ok(owned(&[&request[..], &[("cache-control", "no-cache")]].concat()))
        );
        assert_eq!(
            decode(&mut requests, &hex(c4[2])),
            Ok(owned(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]))
        );

        // C.6's encoder has a 256-byte table: a size update says so first.
        let mut responses = Decoder::new(4096);
        let c6 = [
            "3fe101 4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e
             919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
             e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ];
        let response = |status, date| {
            owned(&[
                (":status", status),
                ("cache-control", "private"),
                ("date", date),
                ("location", "https://www.example.com"),
            ])
        };
        assert_eq!(decode(&mut responses, &hex(c6[0])), Ok(response("302", "Mon, 21 Oct 2013 20:13:21 GMT")));
        assert_eq!(decode(&mut responses, &hex(c6[1])), Ok(response("307", "Mon, 21 Oct 2013 20:13:21 GMT")));
        let mut last = response("200", "Mon, 21 Oct 2013 20:13:22 GMT");
        last.extend(owned(&[
            ("content-encoding", "gzip"),
            ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        ]));
        assert_eq!(decode(&mut responses, &hex(c6[2])), Ok(last));
    }

    #[test]
    fn invalid_huffman_and_cut_blocks_are_refused() {
        let mut decoder = Decoder::new(4096);
        let field = |coded: &[u8]| [&[0x04, 0x80 | coded.len() as u8][..], coded].concat();
        // "a" is 5 bits: 3 bits of padding.
        assert_eq!(huffman_encode(b"a"), [0x1f]);
        assert_eq!(decode(&mut decoder, &field(&[0x1f])), Ok(owned(&[(":path", "a")])));
        // Padding of zeros, padding of 11 bits, EOS in the string.
        assert_eq!(decode(&mut decoder, &field(&[0x18])), Err(HpackError::Huffman));
        assert_eq!(decode(&mut decoder, &field(&[0x1f, 0xff])), Err(HpackError::Huffman));
        assert_eq!(decode(&mut decoder, &field(&[0xff, 0xff, 0xff, 0xfc])), Err(HpackError::Huffman));
        // A string longer than the block, an integer cut short, one in too many octets.
        assert_eq!(decode(&mut decoder, &[0x04, 0x85, 0x00]), Err(HpackError::Truncated));
        assert_eq!(decode(&mut decoder, &[0x0f, 0xff]), Err(HpackError::Truncated));
        assert_eq!(decode(&mut decoder, &[0x0f, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(HpackError::IntegerOverflow));
    }

    /// Strings of 127 bytes and more once decoded take a longer length.
    #[test]
    fn long_decoded_strings_keep_their_length() {
        let mut decoder = Decoder::new(4096);
        for len in [125, 126, 127, 128, 300, 4063, 4064, 200_000] {
            let value: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let coded = huffman_encode(value.as_bytes());
            let mut block = vec![0x40, 0x81];
            block.extend(huffman_encode(b"x"));
            put_integer(coded.len(), 7, 0x80, &mut block);
            block.extend(&coded);
            // The entry it added, unless too large for the table.
            block.push(0xbe);
            let decoded = decode(&mut decoder, &block);
            let fits = 1 + len + 32 <= 4096;
            let expected =
                if fits { Ok(owned(&[("x", &value), ("x", &value)])) } else { Err(HpackError::IndexOutOfBounds) };
            assert!(decoded == expected, "{len}");
        }
        assert_eq!(decoder.plain.capacity(), 0, "a large block's buffer is not kept");
    }

    /// A block in the shape of real ones, some of it random.
    fn block() -> impl Strategy<Value = Vec<u8>> {
        let string =
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..40), 0..8u8).prop_map(|(huffman, plain, damage)| {
                let mut body = if huffman { huffman_encode(&plain) } else { plain };
                if damage == 0 && !body.is_empty() {
                    body.pop();
                }
                let mut out = Vec::new();
                put_integer(body.len() + usize::from(damage == 1), 7, if huffman { 0x80 } else { 0 }, &mut out);
                out.extend(body);
                out
            });
        let field = prop_oneof![
            (1..100usize).prop_map(|index| {
                let mut out = Vec::new();
                put_integer(index, 7, 0x80, &mut out);
                out
            }),
            (prop_oneof![Just(0x40u8), Just(0x10), Just(0)], 0..70usize, string.clone(), string).prop_map(
                |(kind, index, name, value)| {
                    let mut out = Vec::new();
                    put_integer(index, if kind == 0x40 { 6 } else { 4 }, kind, &mut out);
                    if index == 0 {
                        out.extend(name);
                    }
                    out.extend(value);
                    out
                }
            ),
            (0..5000usize).prop_map(|size| {
                let mut out = Vec::new();
                put_integer(size, 5, 0x20, &mut out);
                out
            }),
            prop::collection::vec(any::<u8>(), 0..4),
        ];
        prop::collection::vec(field, 0..10).prop_map(|fields| fields.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Against loona-hpack's own Huffman decoder: the same strings, the same
        /// refusals.
        #[test]
        fn huffman_decodes_as_loona_hpack_does(bytes in prop::collection::vec(any::<u8>(), 0..40), plain in prop::collection::vec(any::<u8>(), 0..100)) {
            for coded in [bytes, huffman_encode(&plain)] {
                let mut ours = Vec::new();
                let ours = huffman_decode(&coded, &mut ours).map(|()| ours);
                let theirs = loona_hpack::huffman::HuffmanDecoder::new().decode(&coded);
                prop_assert_eq!(ours.ok(), theirs.ok());
            }
        }

        /// Block after block on one decoder, against loona-hpack decoding them whole:
        /// the same fields, the same blocks refused.
        #[test]
        fn blocks_decode_as_loona_hpack_does(blocks in prop::collection::vec(block(), 1..6), max_table in 0..5000usize) {
            let mut ours = Decoder::new(max_table);
            let mut theirs = loona_hpack::Decoder::new();
            theirs.set_max_allowed_table_size(max_table);
            for block in blocks {
                let mut fields = Vec::new();
                let theirs = theirs.decode_with_cb(&block, |name, value| fields.push((name.into_owned(), value.into_owned())));
                let mut our_fields = Vec::new();
                let ours = ours.decode(&block, |name, value| our_fields.push((name.to_vec(), value.to_vec())));
                prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} {:?} {:02x?}", ours, theirs, block);
                if theirs.is_err() {
                    break;
                }
                prop_assert_eq!(our_fields, fields);
            }
        }
    }
}
