//! HPACK (RFC 7541) for the HTTP/2 decoder, behind our own types: loona-hpack decodes
//! the header fields and keeps the dynamic table.

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

/// One direction's HPACK decoder.
pub(super) struct Decoder {
    inner: loona_hpack::Decoder<'static>,
}

impl Decoder {
    /// A decoder whose encoder may use a dynamic table of `max_table` bytes at most.
    pub(super) fn new(max_table: usize) -> Self {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(max_table);
        Decoder { inner }
    }

    /// The largest dynamic table size update accepted from now on.
    pub(super) fn set_max_table(&mut self, max_table: usize) {
        self.inner.set_max_allowed_table_size(max_table);
    }

    /// Decodes a whole header block, giving each field to `field` in order.
    pub(super) fn decode(&mut self, block: &[u8], mut field: impl FnMut(&[u8], &[u8])) -> Result<(), HpackError> {
        Ok(self.inner.decode_with_cb(block, |name, value| field(&name, &value))?)
    }
}
