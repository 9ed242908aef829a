//! The HTTP/2 wire format (RFC 9113 §4, §6): frame headers, padding, SETTINGS.

/// What a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(super) const HEADER_LEN: usize = 9;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

pub(super) const FLAG_END_STREAM: u8 = 0x1;
pub(super) const FLAG_ACK: u8 = 0x1;
pub(super) const FLAG_END_HEADERS: u8 = 0x4;
pub(super) const FLAG_PADDED: u8 = 0x8;
pub(super) const FLAG_PRIORITY: u8 = 0x20;

/// SETTINGS_MAX_FRAME_SIZE until a peer says otherwise, and its smallest value.
pub(super) const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest payload a frame header can announce (24 bits).
pub const LARGEST_FRAME_PAYLOAD: u32 = (1 << 24) - 1;
/// SETTINGS_HEADER_TABLE_SIZE until a peer says otherwise.
pub(super) const DEFAULT_HEADER_TABLE_SIZE: u32 = 4096;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// Padding and priority fields a HEADERS or PUSH_PROMISE payload may carry beside its
/// header block fragment: a header block can be this much shorter than its frames.
pub(super) const MAX_BLOCK_OVERHEAD: usize = 1 + 255 + 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            // The top bit is reserved and ignored on receipt.
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Whether `bytes` start with HTTP/2 frames: at least one whole frame, every frame
/// header in them well-formed for its type (the last frame may run past the end). A
/// segment of a connection whose start the capture missed often looks so; HTTP/1.x never
/// does (its text makes the first frame's type byte 0x20 or more), and a body chunk only
/// by rare chance, as the announced length must land exactly on the next valid header.
pub fn starts_with_frames(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut whole = 0;
    while let Some((head, after)) = rest.split_first_chunk::<HEADER_LEN>() {
        let header = FrameHeader::parse(head);
        let reserved_bit = head[5] & 0x80 != 0;
        if reserved_bit || !header.well_formed() {
            return false;
        }
        let Some(next) = after.get(header.len as usize..) else { break };
        rest = next;
        whole += 1;
    }
    whole > 0
}

impl FrameHeader {
    /// Whether the header fits its type: stream, flags, and the length of fixed-size
    /// frames. Frames of unknown types do not count.
    fn well_formed(&self) -> bool {
        let on_stream = self.stream_id != 0;
        let flags_within = |allowed: u8| self.flags & !allowed == 0;
        match self.kind {
            DATA => on_stream && flags_within(FLAG_END_STREAM | FLAG_PADDED),
            HEADERS => on_stream && flags_within(FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY),
            PRIORITY => on_stream && self.len == 5 && self.flags == 0,
            RST_STREAM => on_stream && self.len == 4 && self.flags == 0,
            SETTINGS => !on_stream && self.len.is_multiple_of(6) && flags_within(FLAG_ACK),
            PUSH_PROMISE => on_stream && flags_within(FLAG_END_HEADERS | FLAG_PADDED),
            PING => !on_stream && self.len == 8 && flags_within(FLAG_ACK),
            GOAWAY => !on_stream && self.len >= 8 && self.flags == 0,
            WINDOW_UPDATE => self.len == 4 && self.flags == 0,
            CONTINUATION => on_stream && flags_within(FLAG_END_HEADERS),
            _ => false,
        }
    }
}

/// The payload of a PADDED frame without its pad length byte and padding.
pub(super) fn unpad(payload: &[u8], padded: bool) -> Result<&[u8], &'static str> {
    if !padded {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or("a padded frame without its pad length")?;
    rest.len().checked_sub(pad as usize).map(|len| &rest[..len]).ok_or("padding longer than the frame")
}

/// The SETTINGS values that change how the other peer's frames are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Settings {
    pub header_table_size: Option<u32>,
    pub max_frame_size: Option<u32>,
}

/// Reads a SETTINGS payload (also the payload an HTTP2-Settings header carries).
pub(super) fn parse_settings(payload: &[u8]) -> Result<Settings, &'static str> {
    if !payload.len().is_multiple_of(6) {
        return Err("a SETTINGS payload that is not a whole number of settings");
    }
    let mut settings = Settings::default();
    for setting in payload.chunks_exact(6) {
        let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
        match u16::from_be_bytes([setting[0], setting[1]]) {
            SETTINGS_HEADER_TABLE_SIZE => settings.header_table_size = Some(value),
            SETTINGS_MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME_SIZE..=LARGEST_FRAME_PAYLOAD).contains(&value) => {
                return Err("SETTINGS_MAX_FRAME_SIZE out of range");
            }
            SETTINGS_MAX_FRAME_SIZE => settings.max_frame_size = Some(value),
            // The others (push, concurrency, flow control, header list size) bind the
            // peers, not how their bytes read.
            _ => {}
        }
    }
    Ok(settings)
}
