//! `tc_ingress`: what a sandbox sends, judged step by step in the order of the
//! crate docs. Each step either decides (a verdict or a drop reason) or
//! hands the packet to the next.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{net_flags, DropReason, Endpoint};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    arp, flood, forward, maps,
    packet::{header, ip_u32, Packet, ETH_ARP, ETH_IPV4, ETH_IPV6},
    verdict::Verdict,
};

#[inline(always)]
pub fn decide(ctx: &TcContext, pkt: &mut Packet) -> Result<Verdict, DropReason> {
    // A program on a veth that is not (or no longer) an endpoint fails closed.
    let ep = maps::endpoint(pkt.ifindex).ok_or(DropReason::NotAnEndpoint)?;
    pkt.slot = Some(ep.slot);
    let len = u64::from(ctx.len());
    maps::with_counters(ep.slot, |c| {
        c.rx_packets += 1;
        c.rx_bytes += len;
    });
    let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
    pkt.src_mac = eth.src_addr;
    pkt.dst_mac = eth.dst_addr;
    pkt.ethertype = u16::from_be(eth.ether_type);

    // 1. Source check.
    if pkt.src_mac != ep.mac {
        return Err(DropReason::SpoofedMac);
    }
    match eth.ether_type {
        // 2. ARP.
        ETH_ARP => return arp::answer(ctx, ep, pkt),
        ETH_IPV4 => {}
        ETH_IPV6 => return Err(DropReason::Ipv6),
        _ => return Err(DropReason::UnsupportedEthertype),
    }
    let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    pkt.src_ip = ip_u32(ip.src_addr);
    pkt.dst_ip = ip_u32(ip.dst_addr);
    pkt.ip_proto = ip.proto;
    if pkt.src_ip != ep.ip {
        return Err(DropReason::SpoofedIp);
    }

    // 3. Broadcast and multicast.
    if pkt.dst_mac[0] & 1 != 0 {
        return broadcast(ctx, ep, pkt.ifindex);
    }
    // 4. The gateway.
    if pkt.dst_mac == ep.gw_mac {
        return gateway(ctx, ep, pkt);
    }
    // 5. Unicast within the network.
    forward::unicast(ctx, ep, pkt)
}

#[inline(always)]
fn broadcast(ctx: &TcContext, ep: &Endpoint, ifindex: u32) -> Result<Verdict, DropReason> {
    if ep.net_flags & net_flags::FLOOD == 0 {
        return Err(DropReason::Broadcast);
    }
    flood::flood(ctx, ep.net_id, ifindex);
    // The host is a member of the segment too, as with a bridge.
    Ok(Verdict::ToHost)
}

/// The host stack, within the network's bounds, or another network if
/// policy allows.
#[inline(always)]
fn gateway(ctx: &TcContext, ep: &Endpoint, pkt: &mut Packet) -> Result<Verdict, DropReason> {
    if pkt.dst_ip == ep.gateway {
        return Ok(Verdict::ToHost);
    }
    if ep.net_flags & net_flags::INTERNAL != 0 {
        return Err(DropReason::InternalNetwork);
    }
    if let Some(dst_net) = maps::subnet_of(pkt.dst_ip) {
        if dst_net != ep.net_id && !maps::is_gateway_of(dst_net, pkt.dst_ip) {
            return forward::route(ctx, ep, dst_net, pkt);
        }
    }
    Ok(Verdict::ToHost)
}
