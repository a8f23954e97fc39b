//! Policy and connection tracking, judged per connection: an established one
//! (either direction in `CONNTRACK`) passes; a new one needs an allowing
//! entry — exact port, then any port, then any protocol — and opens a
//! conntrack entry. Fragments after the first carry the first one's ports
//! (`FRAGMENTS`), so port rules hold for fragmented datagrams.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{action, CtKey, DropReason, FragKey, FragPorts, PolicyKey};
use network_types::{
    eth::EthHdr,
    icmp::{Icmpv4Hdr, Icmpv4Type},
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    maps,
    packet::{header, Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

const ECHO_REQUEST: u8 = Icmpv4Type::Echo as u8;
const ECHO_REPLY: u8 = Icmpv4Type::EchoReply as u8;

/// Judges a packet from endpoint slot `src` to endpoint slot `dst`. A denial
/// records the denying rule in `pkt`; `unallowed` is the reason when no rule
/// allowed the connection at all.
#[inline(always)]
pub fn judge(
    ctx: &TcContext,
    src: u32,
    dst: u32,
    pkt: &mut Packet,
    unallowed: DropReason,
) -> Result<(), DropReason> {
    let key = flow(ctx, pkt);
    if let Some(k) = &key {
        if maps::is_tracked(k) || maps::is_tracked(&reply(k)) {
            return Ok(());
        }
    }
    let dport = match &key {
        Some(k) if k.proto != PROTO_ICMP => k.dport,
        _ => 0,
    };
    let mut pkey = PolicyKey {
        src_slot: src,
        dst_slot: dst,
        dport,
        proto: pkt.ip_proto,
        _pad: 0,
    };
    let mut found = maps::policy(&pkey);
    if found.is_none() && dport != 0 {
        pkey.dport = 0;
        found = maps::policy(&pkey);
    }
    if found.is_none() {
        pkey.dport = 0;
        pkey.proto = 0;
        found = maps::policy(&pkey);
    }
    let Some(v) = found else {
        return Err(unallowed);
    };
    maps::count_rule_hit(v.rule);
    if v.action != action::ALLOW {
        pkt.rule = v.rule;
        return Err(DropReason::PolicyDenied);
    }
    if let Some(k) = &key {
        maps::track(k, v.rule);
    }
    Ok(())
}

/// The reply direction of connection `k` (ICMP echo: same identifier).
#[inline(always)]
fn reply(k: &CtKey) -> CtKey {
    let icmp = k.proto == PROTO_ICMP;
    CtKey {
        src_ip: k.dst_ip,
        dst_ip: k.src_ip,
        sport: if icmp { k.sport } else { k.dport },
        dport: if icmp { 0 } else { k.sport },
        proto: k.proto,
        _pad: [0; 3],
    }
}

/// The connection a packet belongs to, in its own direction; None for what
/// has no ports (other protocols, other ICMP, truncated headers, later
/// fragments of a datagram whose first fragment was not seen).
#[inline(always)]
fn flow(ctx: &TcContext, pkt: &Packet) -> Option<CtKey> {
    let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN)?;
    let l4 = EthHdr::LEN + usize::from(ip.ihl());
    let (sport, dport) = match pkt.ip_proto {
        PROTO_TCP | PROTO_UDP => {
            let frag = FragKey {
                src_ip: pkt.src_ip,
                dst_ip: pkt.dst_ip,
                id: ip.id(),
                proto: pkt.ip_proto,
                _pad: 0,
            };
            if ip.frag_offset() != 0 {
                // A later fragment: its bytes are payload, not ports.
                let p = maps::fragment_ports(&frag)?;
                (p.sport, p.dport)
            } else {
                let ports = ports(ctx, pkt.ip_proto, l4)?;
                if ip.frag_flags() & FLAG_MORE_FRAGMENTS != 0 {
                    maps::remember_fragment(
                        &frag,
                        FragPorts {
                            sport: ports.0,
                            dport: ports.1,
                        },
                    );
                }
                ports
            }
        }
        PROTO_ICMP => {
            let h = header::<Icmpv4Hdr>(ctx, l4)?;
            if h.type_ != ECHO_REQUEST && h.type_ != ECHO_REPLY {
                return None;
            }
            // The echo identifier: the first half of the header's data.
            (u16::from_be_bytes([h.data[0], h.data[1]]), 0)
        }
        _ => return None,
    };
    Some(CtKey {
        src_ip: pkt.src_ip,
        dst_ip: pkt.dst_ip,
        sport,
        dport,
        proto: pkt.ip_proto,
        _pad: [0; 3],
    })
}

/// IPv4 "more fragments", among the three flag bits above the fragment offset.
const FLAG_MORE_FRAGMENTS: u8 = 0b001;

/// Source and destination port of the TCP or UDP header at `l4`.
#[inline(always)]
fn ports(ctx: &TcContext, proto: u8, l4: usize) -> Option<(u16, u16)> {
    if proto == PROTO_TCP {
        let tcp = header::<TcpHdr>(ctx, l4)?;
        Some((u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest)))
    } else {
        let udp = header::<UdpHdr>(ctx, l4)?;
        Some((udp.src_port(), udp.dst_port()))
    }
}
