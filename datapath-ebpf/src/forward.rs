//! Forwarding between endpoints with `bpf_redirect_peer`: step 5, unicast
//! within a network by (network, MAC), and the routed half of step 4,
//! traffic for another bpfnet network delivered here instead of through the
//! host stack.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{net_flags, DropReason, EndpointEntry};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    maps,
    packet::{header, Packet},
    policy,
    verdict::Verdict,
};

/// Step 5: to the endpoint of the same network that has the destination
/// MAC; on `icc=false` networks only where policy (links) allows.
#[inline(always)]
pub fn unicast(
    ctx: &TcContext,
    ep: &EndpointEntry,
    pkt: &mut Packet,
) -> Result<Verdict, DropReason> {
    let dst = maps::fdb(ep.net_id, pkt.dst_mac).ok_or(DropReason::UnknownUnicast)?;
    if ep.net_flags & net_flags::ICC_OFF != 0 {
        policy::judge(ctx, ep.slot, dst.slot, pkt, DropReason::IccDisabled)?;
    }
    Ok(Verdict::RedirectPeer {
        ifindex: dst.ifindex,
        slot: dst.slot,
    })
}

/// Traffic for network `dst_net` (or, on an icc=false network, for a fellow
/// member through the gateway MAC), judged by policy and, if allowed, routed
/// here: no detour through the host stack, no dependence on `ip_forward`.
#[inline(always)]
pub fn route(
    ctx: &TcContext,
    ep: &EndpointEntry,
    dst_net: u32,
    pkt: &mut Packet,
) -> Result<Verdict, DropReason> {
    // Nothing allows it: across networks, or (through the gateway MAC)
    // between members of an icc=false network.
    let unallowed = if dst_net == ep.net_id {
        DropReason::IccDisabled
    } else {
        DropReason::CrossNetwork
    };
    let neighbour = maps::neighbour(dst_net, pkt.dst_ip).ok_or(unallowed)?;
    let dst = maps::fdb(dst_net, neighbour.mac).ok_or(unallowed)?;
    policy::judge(ctx, ep.slot, dst.slot, pkt, unallowed)?;
    let dst_ep = maps::endpoint(dst.ifindex).ok_or(unallowed)?;
    let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    if ip.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // ip_decrease_ttl(): the TTL is the high byte of its 16-bit word, so the
    // checksum grows by 0x0100, with the end-around carry.
    ip.ttl -= 1;
    let check = u32::from(ip.checksum()) + 0x0100;
    ip.set_checksum(((check & 0xffff) + (check >> 16)) as u16);
    let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
    eth.dst_addr = neighbour.mac;
    eth.src_addr = dst_ep.gw_mac;
    Ok(Verdict::RedirectPeer {
        ifindex: dst.ifindex,
        slot: dst.slot,
    })
}
