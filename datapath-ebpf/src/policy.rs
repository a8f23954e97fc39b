//! Policy and connection tracking, judged per connection.
//!
//! A live connection (`CONNTRACK`, either direction) passes, and so do ICMP
//! errors about it (path MTU discovery needs no rule of its own). A new
//! connection needs an allowing entry — exact port, then any port of the
//! protocol, then any protocol — and opens a conntrack entry if it is an
//! opening packet (TCP SYN, UDP, ICMP echo request). `--icmp` (protocol 1,
//! any port) allows only echo requests; as a deny it covers every ICMP
//! message. Headers policy needs are pulled in whatever the frame's layout;
//! when the packet does not have them it is dropped, never judged as "any
//! port". Fragments after the first carry the first one's ports
//! (`FRAGMENTS`); one whose first fragment was not seen is dropped.
//! Connections expire when idle (`ct_timeout`).
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use bpfnet_common::{
    action, ct_state, ct_timeout, CtKey, CtValue, DropReason, FragKey, FragPorts, PolicyKey,
};
use network_types::{
    eth::EthHdr,
    icmp::{Icmpv4Hdr, Icmpv4Type},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    maps,
    packet::{header, ip_u32, pull, Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};

const ECHO_REQUEST: u8 = Icmpv4Type::Echo as u8;
const ECHO_REPLY: u8 = Icmpv4Type::EchoReply as u8;
/// ICMP errors that quote the packet they are about.
const DEST_UNREACHABLE: u8 = Icmpv4Type::DestinationUnreachable as u8;
const TIME_EXCEEDED: u8 = 11;
const PARAMETER_PROBLEM: u8 = Icmpv4Type::ParameterProblem as u8;
/// IPv4 "more fragments", among the three flag bits above the fragment offset.
const FLAG_MORE_FRAGMENTS: u8 = 0b001;
const NS_PER_SEC: u64 = 1_000_000_000;

/// What a packet is to policy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP or UDP with its ports.
    Ports,
    EchoRequest,
    /// Only as the reply of a tracked echo request (or under an allow-all).
    EchoReply,
    /// An ICMP error; the flow's key is the connection of the packet it
    /// quotes, in that packet's direction (sent by this packet's destination).
    Error,
    /// Any other ICMP message.
    OtherIcmp,
    /// Any other protocol: judged per packet, never tracked.
    Other,
}

struct Flow {
    kind: Kind,
    key: CtKey,
    /// TCP flags (none for other protocols and for later fragments).
    tcp: TcpFlags,
}

#[derive(Clone, Copy, Default)]
struct TcpFlags {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

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
    let f = flow(ctx, pkt)?;
    let proto = pkt.ip_proto;
    decide(&f, src, dst, proto, pkt, unallowed)
}

/// [`judge`] for IPv6 between endpoint slots `src` and `dst`. Connections
/// are tracked under the slots (as 0.0.0.0/8 keys, which no IPv4 endpoint
/// has), ICMPv6 echo counts as ICMP for rules (`--icmp` allows ping6).
/// Extension headers (fragments included) make a packet "other protocol".
#[inline(always)]
pub fn judge6(
    ctx: &TcContext,
    src: u32,
    dst: u32,
    pkt: &mut Packet,
    unallowed: DropReason,
) -> Result<(), DropReason> {
    let f = flow6(ctx, src, dst)?;
    let proto = if pkt.ip_proto == PROTO_ICMPV6 {
        PROTO_ICMP
    } else {
        pkt.ip_proto
    };
    decide(&f, src, dst, proto, pkt, unallowed)
}

/// The verdict on flow `f` of `proto` from slot `src` to slot `dst`.
#[inline(always)]
fn decide(
    f: &Flow,
    src: u32,
    dst: u32,
    proto: u8,
    pkt: &mut Packet,
    unallowed: DropReason,
) -> Result<(), DropReason> {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let live = match f.kind {
        Kind::Ports | Kind::Error => {
            tracked(&f.key, f, false, now) || tracked(&reply(&f.key), f, true, now)
        }
        Kind::EchoRequest => tracked(&f.key, f, false, now),
        Kind::EchoReply => tracked(&reply(&f.key), f, true, now),
        Kind::OtherIcmp | Kind::Other => false,
    };
    if live {
        return Ok(());
    }
    let mut pkey = PolicyKey {
        src_slot: src,
        dst_slot: dst,
        dport: if f.kind == Kind::Ports {
            f.key.dport
        } else {
            0
        },
        proto,
        _pad: 0,
    };
    let mut found = None;
    if pkey.dport != 0 {
        found = maps::policy(&pkey);
    }
    if found.is_none() {
        pkey.dport = 0;
        found = maps::policy(&pkey);
        // An ICMP allow entry is `--icmp`: ping, nothing else.
        let icmp_beyond_echo = proto == PROTO_ICMP && f.kind != Kind::EchoRequest;
        if found.is_some_and(|v| icmp_beyond_echo && v.action == action::ALLOW) {
            found = None;
        }
    }
    if found.is_none() {
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
    // Only what opens a connection creates an entry. Other TCP segments are
    // judged, and pass if allowed, but leave no reply path behind.
    let opens = match f.kind {
        Kind::Ports if proto == PROTO_TCP => f.tcp.syn && !f.tcp.ack && !f.tcp.rst,
        Kind::Ports | Kind::EchoRequest => true,
        _ => false,
    };
    if opens {
        maps::track(&f.key, src, v.rule, now)?;
    }
    Ok(())
}

/// The reply direction of connection `k` (ICMP echo: same identifier).
#[inline(always)]
fn reply(k: &CtKey) -> CtKey {
    let icmp = k.proto == PROTO_ICMP;
    ct_key(
        k.dst_ip,
        k.src_ip,
        if icmp { k.sport } else { k.dport },
        if icmp { 0 } else { k.sport },
        k.proto,
    )
}

#[inline(always)]
fn ct_key(src_ip: u32, dst_ip: u32, sport: u16, dport: u16, proto: u8) -> CtKey {
    CtKey {
        src_ip,
        dst_ip,
        sport,
        dport,
        proto,
        _pad: [0; 3],
    }
}

/// How long a connection of `proto` in `state` may stay idle, in ns.
#[inline(always)]
fn idle_limit(proto: u8, state: u32) -> u64 {
    let secs = match proto {
        PROTO_TCP if state & ct_state::RST != 0 => ct_timeout::TCP_RESET,
        PROTO_TCP if state & ct_state::FIN != 0 => ct_timeout::TCP_CLOSING,
        PROTO_TCP if state & ct_state::REPLIED != 0 => ct_timeout::TCP_ESTABLISHED,
        PROTO_TCP => ct_timeout::TCP_OPENING,
        PROTO_UDP if state & ct_state::REPLIED != 0 => ct_timeout::UDP_REPLIED,
        PROTO_UDP => ct_timeout::UDP_UNREPLIED,
        _ => ct_timeout::ICMP,
    };
    secs * NS_PER_SEC
}

/// Whether connection entry `v` of `proto` has been idle beyond its limit at `now`.
#[inline(always)]
pub fn expired(proto: u8, v: &CtValue, now: u64) -> bool {
    now.wrapping_sub(v.last_seen) > idle_limit(proto, v.state)
}

/// Whether `k` is a live connection. A packet of it — going its reply way
/// (`is_reply`) or its opening way — refreshes it and moves its state; an
/// entry idle beyond its limit is forgotten, which closes its reply path.
#[inline(always)]
fn tracked(k: &CtKey, f: &Flow, is_reply: bool, now: u64) -> bool {
    let Some(v) = maps::connection(k) else {
        return false;
    };
    if expired(k.proto, v, now) {
        let _ = maps::forget(k, v.owner);
        return false;
    }
    // An ICMP error is about the connection, not part of it.
    if f.kind == Kind::Error {
        return true;
    }
    let mut state = v.state;
    if is_reply {
        state |= ct_state::REPLIED;
    }
    if k.proto == PROTO_TCP {
        if !is_reply && f.tcp.syn && !f.tcp.ack {
            // The same ports opening anew.
            state = 0;
        }
        if f.tcp.fin {
            state |= ct_state::FIN;
        }
        if f.tcp.rst {
            state |= ct_state::RST;
        }
    }
    // Timeouts count seconds: one write a second is enough, and spares the
    // cache line every CPU shares.
    if state != v.state || now.wrapping_sub(v.last_seen) > NS_PER_SEC {
        v.state = state;
        v.last_seen = now;
    }
    true
}

/// What the packet is to policy, in its own direction. A TCP, UDP or ICMP
/// header the packet does not have is `Malformed`, never "any port".
#[inline(always)]
fn flow(ctx: &TcContext, pkt: &Packet) -> Result<Flow, DropReason> {
    let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    let ihl = usize::from(ip.ihl());
    if ihl < Ipv4Hdr::LEN {
        return Err(DropReason::Malformed);
    }
    let (offset, more) = (ip.frag_offset(), ip.frag_flags() & FLAG_MORE_FRAGMENTS != 0);
    let frag = FragKey {
        src_ip: pkt.src_ip,
        dst_ip: pkt.dst_ip,
        id: ip.id(),
        proto: pkt.ip_proto,
        _pad: 0,
    };
    let l4 = EthHdr::LEN + ihl;
    let no_tcp = TcpFlags::default();
    let proto = pkt.ip_proto;
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Ok(Flow {
            kind: Kind::Other,
            key: ct_key(pkt.src_ip, pkt.dst_ip, 0, 0, proto),
            tcp: no_tcp,
        });
    }
    if offset != 0 {
        // A later fragment: its bytes are payload, not headers. For ICMP
        // echo the first fragment left (identifier, type).
        let p = maps::fragment_ports(&frag).ok_or(DropReason::OrphanFragment)?;
        let (kind, dport) = match proto {
            PROTO_ICMP if p.dport == u16::from(ECHO_REQUEST) => (Kind::EchoRequest, 0),
            PROTO_ICMP => (Kind::EchoReply, 0),
            _ => (Kind::Ports, p.dport),
        };
        return Ok(Flow {
            kind,
            key: ct_key(pkt.src_ip, pkt.dst_ip, p.sport, dport, proto),
            tcp: no_tcp,
        });
    }
    let (kind, key, tcp) = match proto {
        PROTO_TCP => {
            pull(ctx, l4 + TcpHdr::LEN);
            let tcp = header::<TcpHdr>(ctx, l4).ok_or(DropReason::Malformed)?;
            let flags = TcpFlags {
                syn: tcp.syn() != 0,
                ack: tcp.ack() != 0,
                fin: tcp.fin() != 0,
                rst: tcp.rst() != 0,
            };
            let (sport, dport) = (u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest));
            (
                Kind::Ports,
                ct_key(pkt.src_ip, pkt.dst_ip, sport, dport, proto),
                flags,
            )
        }
        PROTO_UDP => {
            pull(ctx, l4 + UdpHdr::LEN);
            let udp = header::<UdpHdr>(ctx, l4).ok_or(DropReason::Malformed)?;
            let key = ct_key(
                pkt.src_ip,
                pkt.dst_ip,
                udp.src_port(),
                udp.dst_port(),
                proto,
            );
            (Kind::Ports, key, no_tcp)
        }
        _ => {
            // Room for an error's quote: IPv4 header and 8 bytes of L4.
            pull(ctx, l4 + Icmpv4Hdr::LEN + Ipv4Hdr::LEN + UdpHdr::LEN);
            let h = header::<Icmpv4Hdr>(ctx, l4).ok_or(DropReason::Malformed)?;
            let (type_, ident) = (h.type_, u16::from_be_bytes([h.data[0], h.data[1]]));
            let key = ct_key(pkt.src_ip, pkt.dst_ip, ident, 0, proto);
            let kind = match type_ {
                ECHO_REQUEST => Kind::EchoRequest,
                ECHO_REPLY => Kind::EchoReply,
                DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM => {
                    match quoted(ctx, pkt, l4 + Icmpv4Hdr::LEN) {
                        Some(k) => {
                            return Ok(Flow {
                                kind: Kind::Error,
                                key: k,
                                tcp: no_tcp,
                            })
                        }
                        None => Kind::OtherIcmp,
                    }
                }
                _ => Kind::OtherIcmp,
            };
            if more && (kind == Kind::EchoRequest || kind == Kind::EchoReply) {
                maps::remember_fragment(
                    &frag,
                    FragPorts {
                        sport: ident,
                        dport: u16::from(type_),
                    },
                );
            }
            return Ok(Flow {
                kind,
                key,
                tcp: no_tcp,
            });
        }
    };
    if more {
        maps::remember_fragment(
            &frag,
            FragPorts {
                sport: key.sport,
                dport: key.dport,
            },
        );
    }
    Ok(Flow { kind, key, tcp })
}

/// ICMPv6 (RFC 4443): echo and the errors that quote a packet.
const PROTO_ICMPV6: u8 = 58;
const ECHO6_REQUEST: u8 = 128;
const ECHO6_REPLY: u8 = 129;
const L4_V6: usize = EthHdr::LEN + Ipv6Hdr::LEN;

/// The conntrack address of endpoint slot `slot` for IPv6 connections:
/// 0.0.x.y, a range no IPv4 endpoint is ever in.
#[inline(always)]
pub fn slot_key(slot: u32) -> u32 {
    u32::from_ne_bytes([0, (slot >> 16) as u8, (slot >> 8) as u8, slot as u8])
}

/// [`flow`] for IPv6 from slot `src` to slot `dst`: TCP, UDP and ICMPv6
/// right after the IPv6 header; anything else (extension headers, other
/// protocols) is judged per packet as "other".
#[inline(always)]
fn flow6(ctx: &TcContext, src: u32, dst: u32) -> Result<Flow, DropReason> {
    let ip = header::<Ipv6Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    let next = ip.next_hdr;
    let (s, d) = (slot_key(src), slot_key(dst));
    let no_tcp = TcpFlags::default();
    match next {
        PROTO_TCP => {
            pull(ctx, L4_V6 + TcpHdr::LEN);
            let tcp = header::<TcpHdr>(ctx, L4_V6).ok_or(DropReason::Malformed)?;
            let flags = TcpFlags {
                syn: tcp.syn() != 0,
                ack: tcp.ack() != 0,
                fin: tcp.fin() != 0,
                rst: tcp.rst() != 0,
            };
            let (sport, dport) = (u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest));
            Ok(Flow {
                kind: Kind::Ports,
                key: ct_key(s, d, sport, dport, PROTO_TCP),
                tcp: flags,
            })
        }
        PROTO_UDP => {
            pull(ctx, L4_V6 + UdpHdr::LEN);
            let udp = header::<UdpHdr>(ctx, L4_V6).ok_or(DropReason::Malformed)?;
            Ok(Flow {
                kind: Kind::Ports,
                key: ct_key(s, d, udp.src_port(), udp.dst_port(), PROTO_UDP),
                tcp: no_tcp,
            })
        }
        PROTO_ICMPV6 => {
            // Room for an error's quote: IPv6 header and 8 bytes of L4.
            pull(ctx, L4_V6 + 8 + Ipv6Hdr::LEN + 8);
            let h = header::<Icmpv4Hdr>(ctx, L4_V6).ok_or(DropReason::Malformed)?;
            let (type_, ident) = (h.type_, u16::from_be_bytes([h.data[0], h.data[1]]));
            let kind = match type_ {
                ECHO6_REQUEST => Kind::EchoRequest,
                ECHO6_REPLY => Kind::EchoReply,
                // Destination unreachable, packet too big, time exceeded,
                // parameter problem: about the quoted packet's connection.
                1..=4 => match quoted6(ctx, d, s) {
                    Some(k) => {
                        return Ok(Flow {
                            kind: Kind::Error,
                            key: k,
                            tcp: no_tcp,
                        })
                    }
                    None => Kind::OtherIcmp,
                },
                _ => Kind::OtherIcmp,
            };
            Ok(Flow {
                kind,
                key: ct_key(s, d, ident, 0, PROTO_ICMP),
                tcp: no_tcp,
            })
        }
        other => Ok(Flow {
            kind: Kind::Other,
            key: ct_key(s, d, 0, 0, other),
            tcp: no_tcp,
        }),
    }
}

/// The connection of the IPv6 packet an ICMPv6 error quotes: one the
/// error's destination (slot key `from`) sent to its source (`to`), with
/// the quote's addresses the reverse of the error's own.
#[inline(always)]
fn quoted6(ctx: &TcContext, from: u32, to: u32) -> Option<CtKey> {
    let outer = header::<Ipv6Hdr>(ctx, EthHdr::LEN)?;
    let (osrc, odst) = (outer.src_addr, outer.dst_addr);
    let at = L4_V6 + 8;
    let ip = header::<Ipv6Hdr>(ctx, at)?;
    if ip.src_addr != odst || ip.dst_addr != osrc {
        return None;
    }
    let next = ip.next_hdr;
    match next {
        PROTO_TCP | PROTO_UDP => {
            let l4 = header::<UdpHdr>(ctx, at + Ipv6Hdr::LEN)?;
            Some(ct_key(from, to, l4.src_port(), l4.dst_port(), next))
        }
        PROTO_ICMPV6 => {
            let h = header::<Icmpv4Hdr>(ctx, at + Ipv6Hdr::LEN)?;
            if h.type_ != ECHO6_REQUEST && h.type_ != ECHO6_REPLY {
                return None;
            }
            let ident = u16::from_be_bytes([h.data[0], h.data[1]]);
            Some(ct_key(from, to, ident, 0, PROTO_ICMP))
        }
        _ => None,
    }
}

/// The connection of the packet an ICMP error quotes at `at`: a packet this
/// error's destination sent to its source (TCP, UDP or ICMP echo, with the
/// first 8 bytes of its L4 header). None: the error belongs to nothing.
#[inline(always)]
fn quoted(ctx: &TcContext, pkt: &Packet, at: usize) -> Option<CtKey> {
    let ip = header::<Ipv4Hdr>(ctx, at)?;
    let ihl = usize::from(ip.ihl());
    let (src, dst, proto) = (ip_u32(ip.src_addr), ip_u32(ip.dst_addr), ip.proto);
    if ihl < Ipv4Hdr::LEN || ip.frag_offset() != 0 || src != pkt.dst_ip || dst != pkt.src_ip {
        return None;
    }
    // IPv4 options in the quote push its L4 bytes further.
    pull(ctx, at + ihl + UdpHdr::LEN);
    match proto {
        // The first 8 bytes of TCP hold the ports where UDP has them.
        PROTO_TCP | PROTO_UDP => {
            let l4 = header::<UdpHdr>(ctx, at + ihl)?;
            Some(ct_key(src, dst, l4.src_port(), l4.dst_port(), proto))
        }
        PROTO_ICMP => {
            let h = header::<Icmpv4Hdr>(ctx, at + ihl)?;
            if h.type_ != ECHO_REQUEST && h.type_ != ECHO_REPLY {
                return None;
            }
            let ident = u16::from_be_bytes([h.data[0], h.data[1]]);
            Some(ct_key(src, dst, ident, 0, proto))
        }
        _ => None,
    }
}
