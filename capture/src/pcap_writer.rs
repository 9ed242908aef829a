//! Synthetic pcap files: TCP segments over IPv4 and Ethernet as a capture would hold
//! them, the input of pipeline tests and capture benchmarks.

use std::io::Write;
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

/// Writes segments one after the other, 10 µs apart.
pub struct PcapWriter<W: Write> {
    out: W,
    ts_us: u64,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        // pcap global header: magic, v2.4, GMT offset 0, accuracy 0, snaplen, LINKTYPE_ETHERNET.
        out.write_all(&0xa1b2c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { out, ts_us: 1_700_000_000_000_000 })
    }

    /// One segment: a SYN (its payload empty), or data acknowledging the other side.
    pub fn segment(
        &mut self,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        seq: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, seq, 65535);
        let builder = if syn { builder.syn() } else { builder.ack(1) };
        let builder = if fin { builder.fin() } else { builder };
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, payload).map_err(std::io::Error::other)?;
        self.ts_us += 10;
        self.out.write_all(&((self.ts_us / 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&((self.ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&frame)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
