//! Synthetic pcap files of HTTP/1.1 traffic (Ethernet, IPv4, TCP with handshakes,
//! keep-alive requests and responses), for capture benchmarks.

use std::io::Write;
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

#[derive(Debug, Clone)]
pub struct PcapProfile {
    pub connections: u32,
    pub requests_per_connection: u32,
    pub body_bytes: usize,
}

struct Writer<W: Write> {
    out: W,
    ts_us: u64,
}

impl<W: Write> Writer<W> {
    fn new(mut out: W) -> std::io::Result<Self> {
        // pcap global header: magic, v2.4, GMT offset 0, accuracy 0, snaplen, LINKTYPE_ETHERNET.
        out.write_all(&0xa1b2c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(Writer { out, ts_us: 1_700_000_000_000_000 })
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
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
}

/// Writes the profile's traffic; returns the number of requests written. Connections
/// are interleaved (one request of each in turn), as on a busy server.
pub fn write(out: impl Write, profile: &PcapProfile) -> std::io::Result<u64> {
    let mut w = Writer::new(std::io::BufWriter::new(out))?;
    let server = (Ipv4Addr::new(10, 0, 1, 1), 80);
    let client = |c: u32| (Ipv4Addr::new(10, 1, (c >> 8) as u8, c as u8), 20_000 + (c % 40_000) as u16);
    let mut client_seq = vec![1u32; profile.connections as usize];
    let mut server_seq = vec![1u32; profile.connections as usize];
    for c in 0..profile.connections {
        w.segment(client(c), server, 0, true, false, b"")?;
        w.segment(server, client(c), 0, true, false, b"")?;
    }
    let body = "x".repeat(profile.body_bytes);
    let mut requests = 0;
    for i in 0..profile.requests_per_connection {
        for c in 0..profile.connections {
            let request = if i % 2 == 0 {
                format!(
                    "GET /items/{i}?c={c} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
                )
            } else {
                format!(
                    "POST /orders/{i} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n";
            let k = c as usize;
            w.segment(client(c), server, client_seq[k], false, false, request.as_bytes())?;
            client_seq[k] = client_seq[k].wrapping_add(request.len() as u32);
            w.segment(server, client(c), server_seq[k], false, false, response.as_bytes())?;
            server_seq[k] = server_seq[k].wrapping_add(response.len() as u32);
            requests += 1;
        }
    }
    for c in 0..profile.connections {
        let k = c as usize;
        w.segment(client(c), server, client_seq[k], false, true, b"")?;
        w.segment(server, client(c), server_seq[k], false, true, b"")?;
    }
    w.out.flush()?;
    Ok(requests)
}
