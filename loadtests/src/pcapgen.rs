//! Synthetic pcap files of HTTP/1.1 traffic (Ethernet, IPv4, TCP with handshakes,
//! keep-alive requests and responses), for capture benchmarks.

use std::io::Write;
use std::net::Ipv4Addr;

use reprise_capture::pcap_writer::PcapWriter;

#[derive(Debug, Clone)]
pub struct PcapProfile {
    pub connections: u32,
    pub requests_per_connection: u32,
    pub body_bytes: usize,
}

/// Writes the profile's traffic; returns the number of requests written. Connections
/// are interleaved (one request of each in turn), as on a busy server.
pub fn write(out: impl Write, profile: &PcapProfile) -> std::io::Result<u64> {
    let mut w = PcapWriter::new(std::io::BufWriter::new(out))?;
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
    w.flush()?;
    Ok(requests)
}
