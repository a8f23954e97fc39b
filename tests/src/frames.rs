//! Crafted Ethernet frames for the BPF_PROG_TEST_RUN tests (`prog_run`):
//! Ethernet, IPv4 (with a correct header checksum, fragments), UDP, TCP,
//! ICMP echo and ARP, built byte by byte so a test can also build the frames
//! the datapath must never accept (truncated, spoofed, wrong version).

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;

/// Docker's MAC for an address: `02:42:` + the 4 octets.
pub fn mac_of(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// An Ethernet frame around `payload`.
pub fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (no options) for a packet; `build` appends the payload.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// "More fragments".
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            proto,
            ttl: 64,
            id: 0x1234,
            more_fragments: false,
            frag_offset: 0,
        }
    }

    pub fn ttl(mut self, ttl: u8) -> Ipv4 {
        self.ttl = ttl;
        self
    }

    /// Makes this a fragment of datagram `id`.
    pub fn fragment(mut self, id: u16, more_fragments: bool, frag_offset: u16) -> Ipv4 {
        self.id = id;
        self.more_fragments = more_fragments;
        self.frag_offset = frag_offset;
        self
    }

    /// Header plus payload, with the header checksum filled in.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let total = (IPV4_HLEN + payload.len()) as u16;
        let frags = (u16::from(self.more_fragments) << 13) | (self.frag_offset & 0x1fff);
        let mut p = Vec::with_capacity(total as usize);
        p.push(0x45);
        p.push(0);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&frags.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        let sum = checksum(&p[..IPV4_HLEN]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// A UDP header and payload (checksum 0: none, as IPv4 allows).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A 20-byte TCP SYN (checksum not filled in: the datapath does not check it).
pub fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(20);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes()); // seq
    p.extend_from_slice(&0u32.to_be_bytes()); // ack
    p.push(5 << 4); // data offset
    p.push(0x02); // SYN
    p.extend_from_slice(&64240u16.to_be_bytes()); // window
    p.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    p
}

/// An ICMP echo request (`reply` false) or reply with its checksum.
pub fn icmp_echo(reply: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if reply { 0 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"bpfnet-ping");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An ARP packet for IPv4 over Ethernet.
pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    p.extend_from_slice(&ETH_P_IP.to_be_bytes());
    p.push(6);
    p.push(4);
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

/// A broadcast ARP request from (`sha`, `spa`) for `tpa`.
pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    ether(
        BROADCAST,
        sha,
        ETH_P_ARP,
        &arp(ARP_REQUEST, sha, spa, [0; 6], tpa),
    )
}

/// A UDP datagram in a frame.
pub fn udp_frame(
    dst_mac: Mac,
    src_mac: Mac,
    ip: Ipv4,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    ether(
        dst_mac,
        src_mac,
        ETH_P_IP,
        &ip.build(&udp(sport, dport, payload)),
    )
}

/// Reads the fields of an IPv4 frame back, for assertions on rewritten frames.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedIpv4 {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub ttl: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Whether the header checksum verifies.
    pub checksum_ok: bool,
}

pub fn parse_ipv4(frame: &[u8]) -> ParsedIpv4 {
    assert!(
        frame.len() >= ETH_HLEN + IPV4_HLEN,
        "frame too short for IPv4"
    );
    let ip = &frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    let octets = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    ParsedIpv4 {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        ttl: ip[8],
        src: octets(12),
        dst: octets(16),
        checksum_ok: checksum(ip) == 0,
    }
}

pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPV6_HLEN: usize = 40;

/// The link-local address of an interface with `mac` (EUI-64).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// An IPv6 packet: header (hop limit `hlim`) and `payload`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hlim: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(next);
    p.push(hlim);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// The ICMPv6 checksum of `msg` (its checksum field as it is) between
/// `src` and `dst`: 0 when the message's checksum is right.
pub fn icmp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    pseudo.extend_from_slice(msg);
    checksum(&pseudo)
}

/// An ICMPv6 message of `kind`/`code` with `body`, its checksum filled in.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(body);
    let c = icmp6_checksum(src, dst, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, IPPROTO_ICMPV6, 255, &m)
}

/// The solicited-node group of `target` and its Ethernet group MAC.
pub fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, Mac) {
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    (group, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
}

/// A neighbour solicitation for `target` from `src` (`sll`: the source
/// link-layer address option), to the solicited-node group, in a frame.
pub fn nd_solicit(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr, sll: Mac) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&sll);
    ether(
        group_mac,
        src_mac,
        ETH_P_IPV6,
        &icmp6(src, group, 135, 0, &body),
    )
}

/// An ICMPv6 echo request in a frame.
pub fn echo6(dst_mac: Mac, src_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    ether(
        dst_mac,
        src_mac,
        ETH_P_IPV6,
        &icmp6(src, dst, 128, 0, &[0, 1, 0, 1, b'x']),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header checksum of a known header (RFC 1071's example shape:
    /// a header that verifies sums to zero).
    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = Ipv4::new(
            Ipv4Addr::new(10, 1, 0, 2),
            Ipv4Addr::new(10, 2, 0, 2),
            IPPROTO_UDP,
        )
        .build(&udp(1, 2, b"x"));
        assert_eq!(checksum(&p[..IPV4_HLEN]), 0);
        assert_ne!(&p[10..12], &[0, 0]);
    }
}
