//! Link, network and transport decoding: a captured frame to a TCP segment.
//! Supports Ethernet (with VLAN tags), Linux cooked v1/v2, BSD loopback (NULL/LOOP) and
//! raw IP link types, IPv4 and IPv6.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

/// The pcap link types this decoder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// BSD loopback: a 4-byte address family in host (NULL) or network (LOOP) order.
    Loopback,
    RawIp,
}

impl LinkType {
    /// From a pcap `LINKTYPE_*` value.
    pub fn from_pcap(linktype: i32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 | 108 => Some(LinkType::Loopback),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

/// One TCP segment, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

/// Why a frame yields no segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not TCP over IP (ARP, UDP, ICMP, ...): not our business.
    NotTcp,
    /// Truncated or malformed at some layer.
    Malformed,
    /// An IPv4 fragment: TCP over fragmented IP is not reassembled.
    Fragment,
}

/// Decodes a captured frame.
pub fn decode(link: LinkType, ts_ns: i64, frame: &[u8]) -> Result<Segment<'_>, Skip> {
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(frame),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(frame),
        LinkType::LinuxSll2 => {
            // SLL2: protocol (2), reserved (2), ifindex (4), arphrd (2), pkttype (1),
            // addr len (1), addr (8) = 20 bytes, then the network layer.
            let Some(rest) = frame.get(20..) else { return Err(Skip::Malformed) };
            let ether_type = u16::from_be_bytes([frame[0], frame[1]]);
            SlicedPacket::from_ether_type(EtherType(ether_type), rest)
        }
        LinkType::Loopback => {
            let Some(rest) = frame.get(4..) else { return Err(Skip::Malformed) };
            SlicedPacket::from_ip(rest)
        }
        LinkType::RawIp => SlicedPacket::from_ip(frame),
    }
    .map_err(|_| Skip::Malformed)?;
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            if v4.is_payload_fragmented() {
                return Err(Skip::Fragment);
            }
            (v4.header().source_addr().into(), v4.header().destination_addr().into())
        }
        Some(NetSlice::Ipv6(v6)) => (v6.header().source_addr().into(), v6.header().destination_addr().into()),
        _ => return Err(Skip::NotTcp),
    };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else { return Err(Skip::NotTcp) };
    Ok(Segment {
        ts_ns,
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// An Ethernet frame carrying one TCP segment.
    pub(crate) fn ethernet_frame(src: SocketAddr, dst: SocketAddr, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6]);
        let builder = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed address families"),
        };
        let mut tcp = builder.tcp(src.port(), dst.port(), seq, 65535);
        if flags.contains('S') {
            tcp = tcp.syn();
        }
        if flags.contains('A') {
            tcp = tcp.ack(1);
        }
        if flags.contains('F') {
            tcp = tcp.fin();
        }
        if flags.contains('R') {
            tcp = tcp.rst();
        }
        let mut out = Vec::with_capacity(tcp.size(payload.len()));
        tcp.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn decodes_ipv4_and_ipv6_tcp() {
        let (a, b) = ("10.0.0.1:5000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let frame = ethernet_frame(a, b, 7, "A", b"GET / HTTP/1.1\r\n\r\n");
        let s = decode(LinkType::Ethernet, 42, &frame).unwrap();
        assert_eq!((s.src, s.dst, s.seq, s.payload), (a, b, 7, &b"GET / HTTP/1.1\r\n\r\n"[..]));
        let (a6, b6) = ("[::1]:5000".parse().unwrap(), "[::1]:80".parse().unwrap());
        let frame = ethernet_frame(a6, b6, 9, "SA", b"");
        let s = decode(LinkType::Ethernet, 1, &frame).unwrap();
        assert!(s.syn && s.ack && s.src == a6);
    }

    #[test]
    fn loopback_and_raw_ip_frames() {
        let (a, b) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let eth = ethernet_frame(a, b, 1, "A", b"x");
        let ip = &eth[14..];
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        assert_eq!(decode(LinkType::Loopback, 0, &null).unwrap().payload, b"x");
        assert_eq!(decode(LinkType::RawIp, 0, ip).unwrap().payload, b"x");
    }

    #[test]
    fn garbage_and_truncation_are_skipped() {
        assert_eq!(decode(LinkType::Ethernet, 0, &[0u8; 5]), Err(Skip::Malformed));
        let frame = ethernet_frame("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap(), 1, "A", b"hello");
        assert_eq!(decode(LinkType::Ethernet, 0, &frame[..frame.len() - 3]), Err(Skip::Malformed));
        assert_eq!(decode(LinkType::LinuxSll2, 0, &[0u8; 10]), Err(Skip::Malformed));
    }
}
