//! IPv6, on dual-stack networks only. An endpoint without an `ENDPOINTS6`
//! entry (an IPv4-only network) gets no IPv6 through the datapath either
//! way: everything is dropped as `ipv6-unsupported`, link-local and
//! multicast included, exactly as before IPv6 existed.
//!
//! `tc_ingress`, for what a dual-stack sandbox sends, in this order:
//!   1. source check: its address or its link-local one (the MAC was
//!      checked before);
//!   2. neighbour discovery: solicitations answered in place
//!      ([`solicitation`]), router solicitations, advertisements and
//!      redirects dropped;
//!   3. multicast dropped (nothing is flooded: ND is answered here);
//!   4. the gateway MAC: the host (the gateway address; on an internal
//!      network nothing else); for another bpfnet network or, on an
//!      `icc=false` network, a fellow member, policy decides and allowed
//!      traffic is routed right here (MAC rewrite, hop limit,
//!      `bpf_redirect_peer`), as for IPv4;
//!   5. unicast by (network, MAC) with `bpf_redirect_peer`; on `icc=false`
//!      networks only along links.
//!
//! Policy for IPv6 ([`policy::judge6`]) is IPv4's: per connection, by
//! endpoint slots, L4 ports and conntrack.
//!
//! `tc_egress` keeps the isolation of IPv4 for what the host routes in.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{net_flags, DropReason, EndpointEntry};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    maps,
    packet::{header, Header, Packet},
    policy,
    verdict::Verdict,
};

const PROTO_ICMPV6: u8 = 58;
/// Extension headers a sandbox may not send to the host: hop-by-hop
/// (MLD, router alert) and routing.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOUR_SOLICIT: u8 = 135;
const ND_NEIGHBOUR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;
/// ND option types (RFC 4861 4.6.1).
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// Neighbour advertisement flags: router, solicited, override.
const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// A neighbour solicitation or advertisement with one link-layer address
/// option, as Linux sends them for address resolution (32 bytes).
#[repr(C)]
pub struct NdMsg {
    pub kind: u8,
    pub code: u8,
    pub checksum: [u8; 2],
    pub flags: [u8; 4],
    pub target: [u8; 16],
    pub opt_type: u8,
    pub opt_len: u8,
    pub opt_mac: [u8; 6],
}

// SAFETY: #[repr(C)], byte arrays and bytes only (alignment 1).
unsafe impl Header for NdMsg {}

/// The first bytes of any ICMPv6 message.
#[repr(C)]
pub struct Icmp6Head {
    pub kind: u8,
    pub code: u8,
}

// SAFETY: #[repr(C)], bytes only (alignment 1).
unsafe impl Header for Icmp6Head {}

const L4: usize = EthHdr::LEN + Ipv6Hdr::LEN;

#[inline(always)]
pub fn ingress(
    ctx: &TcContext,
    ep: &EndpointEntry,
    pkt: &mut Packet,
) -> Result<Verdict, DropReason> {
    let ep6 = maps::endpoint6(pkt.ifindex).ok_or(DropReason::Ipv6)?;
    let ip = header::<Ipv6Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    let src = ip.src_addr;
    let dst = ip.dst_addr;
    let next = ip.next_hdr;
    pkt.ip_proto = next;
    // 1. Source check.
    if src != ep6.ip6 && src != ep6.link_local {
        return Err(DropReason::SpoofedIp);
    }
    // 2. Neighbour discovery.
    if next == PROTO_ICMPV6 {
        let head = header::<Icmp6Head>(ctx, L4).ok_or(DropReason::Malformed)?;
        match head.kind {
            ND_NEIGHBOUR_SOLICIT => return solicitation(ctx, ep, pkt),
            ND_ROUTER_SOLICIT => return Err(DropReason::RouterSolicitation),
            ND_ROUTER_ADVERT | ND_NEIGHBOUR_ADVERT | ND_REDIRECT => {
                return Err(DropReason::NdNotSolicitation)
            }
            _ => {}
        }
    }
    // 3. Multicast.
    if dst[0] == 0xff || pkt.dst_mac[0] & 1 != 0 {
        return Err(DropReason::Ipv6Multicast);
    }
    // 4. The gateway.
    if pkt.dst_mac == ep.gw_mac {
        return gateway(ctx, ep, &dst, next, pkt);
    }
    // 5. Unicast within the network.
    let peer = maps::fdb(ep.net_id, pkt.dst_mac).ok_or(DropReason::UnknownUnicast)?;
    if ep.net_flags & net_flags::ICC_OFF != 0 {
        policy::judge6(ctx, ep.slot, peer.slot, pkt, DropReason::IccDisabled)?;
    }
    Ok(Verdict::RedirectPeer {
        ifindex: peer.ifindex,
        slot: peer.slot,
    })
}

/// Step 4: to the host, within the network's bounds.
#[inline(always)]
fn gateway(
    ctx: &TcContext,
    ep: &EndpointEntry,
    dst: &[u8; 16],
    next: u8,
    pkt: &mut Packet,
) -> Result<Verdict, DropReason> {
    if next == EXT_HOP_BY_HOP || next == EXT_ROUTING {
        return Err(DropReason::Ipv6ExtensionHeader);
    }
    let internal = ep.net_flags & net_flags::INTERNAL != 0;
    if maps::is_gateway6_of(ep.net_id, dst) {
        if internal {
            // Delivered by the host, never forwarded (as IPv4's TTL 1).
            let ip = header::<Ipv6Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
            ip.hop_limit = 1;
        }
        return Ok(Verdict::ToHost);
    }
    if internal {
        return Err(DropReason::InternalNetwork);
    }
    if let Some(dst_net) = maps::subnet6_of(*dst) {
        // As for IPv4: judged here, or the host (when it forwards) would
        // carry it around the verdict.
        let fellow = dst_net == ep.net_id && ep.net_flags & net_flags::ICC_OFF != 0;
        if fellow || (dst_net != ep.net_id && !maps::is_gateway6_of(dst_net, dst)) {
            return route(ctx, ep, dst_net, dst, pkt);
        }
    }
    Ok(Verdict::ToHost)
}

/// Traffic for network `dst_net` (or a fellow member of an `icc=false`
/// network through the gateway MAC), judged by policy and, if allowed,
/// routed here: MACs rewritten, hop limit decremented (IPv6 has no header
/// checksum), `bpf_redirect_peer`.
#[inline(always)]
fn route(
    ctx: &TcContext,
    ep: &EndpointEntry,
    dst_net: u32,
    dst: &[u8; 16],
    pkt: &mut Packet,
) -> Result<Verdict, DropReason> {
    let unallowed = if dst_net == ep.net_id {
        DropReason::IccDisabled
    } else {
        DropReason::CrossNetwork
    };
    let neighbour = maps::neighbour6(dst_net, *dst).ok_or(unallowed)?;
    let peer = maps::fdb(dst_net, neighbour.mac).ok_or(unallowed)?;
    policy::judge6(ctx, ep.slot, peer.slot, pkt, unallowed)?;
    let dst_ep = maps::endpoint(peer.ifindex).ok_or(unallowed)?;
    let ip = header::<Ipv6Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    if ip.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    ip.hop_limit -= 1;
    let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
    eth.dst_addr = neighbour.mac;
    eth.src_addr = dst_ep.gw_mac;
    Ok(Verdict::RedirectPeer {
        ifindex: peer.ifindex,
        slot: peer.slot,
    })
}

/// Step 2: a neighbour solicitation for the gateway or a neighbour of the
/// same network is turned into the advertisement that answers it and sent
/// back to the asker; for anything else it is dropped (no flooding, so no
/// scanning of other sandboxes and no spoofed answers).
#[inline(always)]
fn solicitation(ctx: &TcContext, ep: &EndpointEntry, pkt: &Packet) -> Result<Verdict, DropReason> {
    let ip = header::<Ipv6Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    let msg = header::<NdMsg>(ctx, L4).ok_or(DropReason::Malformed)?;
    let payload_len = u16::from_be_bytes(ip.payload_len);
    if ip.hop_limit != 255
        || payload_len != 32
        || msg.code != 0
        || msg.opt_type != OPT_SOURCE_LLADDR
        || msg.opt_len != 1
    {
        return Err(DropReason::Malformed);
    }
    if msg.opt_mac != ep.mac {
        return Err(DropReason::SpoofedNd);
    }
    let target = msg.target;
    let (mac, flags) = if maps::is_gateway6_of(ep.net_id, &target) {
        (ep.gw_mac, NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)
    } else {
        let n = maps::neighbour6(ep.net_id, target).ok_or(DropReason::NdUnknownTarget)?;
        (n.mac, NA_SOLICITED | NA_OVERRIDE)
    };
    ip.dst_addr = ip.src_addr;
    ip.src_addr = target;
    msg.kind = ND_NEIGHBOUR_ADVERT;
    msg.flags = [flags, 0, 0, 0];
    msg.opt_type = OPT_TARGET_LLADDR;
    msg.opt_mac = mac;
    msg.checksum = [0, 0];
    let sum = checksum(&ip.src_addr, &ip.dst_addr, msg);
    msg.checksum = sum.to_be_bytes();
    let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
    eth.dst_addr = eth.src_addr;
    eth.src_addr = mac;
    Ok(Verdict::Redirect {
        ifindex: pkt.ifindex,
    })
}

#[inline(always)]
fn add16(sum: u32, b: &[u8; 16]) -> u32 {
    let mut s = sum;
    let mut i = 0;
    while i < 16 {
        s += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    s
}

/// The ICMPv6 checksum of a 32-byte ND message (RFC 4443 2.3: over the
/// pseudo-header and the message, its checksum field zero).
#[inline(always)]
fn checksum(src: &[u8; 16], dst: &[u8; 16], m: &NdMsg) -> u16 {
    let mut s = add16(0, src);
    s = add16(s, dst);
    // Upper-layer length and next header.
    s += 32 + u32::from(PROTO_ICMPV6);
    s += u32::from(u16::from_be_bytes([m.kind, m.code]));
    s += u32::from(u16::from_be_bytes([m.flags[0], m.flags[1]]));
    s += u32::from(u16::from_be_bytes([m.flags[2], m.flags[3]]));
    s = add16(s, &m.target);
    s += u32::from(u16::from_be_bytes([m.opt_type, m.opt_len]));
    s += u32::from(u16::from_be_bytes([m.opt_mac[0], m.opt_mac[1]]));
    s += u32::from(u16::from_be_bytes([m.opt_mac[2], m.opt_mac[3]]));
    s += u32::from(u16::from_be_bytes([m.opt_mac[4], m.opt_mac[5]]));
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// `tc_egress` for IPv6: what the host may send into the sandbox of `ep`.
#[inline(always)]
pub fn egress(ctx: &TcContext, ep: &EndpointEntry, pkt: &mut Packet) -> Result<(), DropReason> {
    maps::endpoint6(pkt.ifindex).ok_or(DropReason::Ipv6)?;
    let ip = header::<Ipv6Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    let src = ip.src_addr;
    pkt.ip_proto = ip.next_hdr;
    // Our own answers to ND (step 2, sent back out of this veth) come
    // through here with a member's address as source; nobody else can
    // send an advertisement with hop limit 255 into a sandbox (a routed
    // one has lost a hop, and the sandbox's kernel ignores it).
    let advert = ip.next_hdr == PROTO_ICMPV6
        && ip.hop_limit == 255
        && header::<Icmp6Head>(ctx, L4).is_some_and(|h| h.kind == ND_NEIGHBOUR_ADVERT);
    let gateway = maps::is_gateway6_of(ep.net_id, &src);
    let mut member = false;
    if let Some(src_net) = maps::subnet6_of(src) {
        if src_net != ep.net_id && !maps::is_gateway6_of(src_net, &src) {
            return Err(DropReason::FromOtherNetwork);
        }
        member = src_net == ep.net_id && !gateway;
    }
    if member && !advert && ep.net_flags & net_flags::ICC_OFF != 0 {
        return Err(DropReason::IccDisabled);
    }
    if ep.net_flags & net_flags::INTERNAL != 0 {
        // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to this
        // run of the program; it is valid until the program returns.
        let forwarded = unsafe { (*ctx.skb.skb).ingress_ifindex } != 0;
        if !member && !(gateway && (advert || !forwarded)) {
            return Err(DropReason::InternalNetwork);
        }
    }
    Ok(())
}
