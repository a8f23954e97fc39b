//! `tc_ingress`: what a sandbox sends, judged step by step in the order of the
//! crate docs. Each step either decides (a verdict or a drop reason) or
//! hands the packet to the next.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{net_flags, DropReason, EndpointEntry};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    arp, flood, forward, ipv6, maps,
    packet::{header, Packet, ETH_ARP, ETH_IPV4, ETH_IPV6},
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
    let ethertype = pkt.read_eth(ctx)?;

    // 1. Source check.
    if pkt.src_mac != ep.mac {
        return Err(DropReason::SpoofedMac);
    }
    match ethertype {
        // 2. ARP.
        ETH_ARP => return arp::answer(ctx, ep, pkt),
        ETH_IPV4 => {}
        // IPv6: dual-stack networks only ([`ipv6`]).
        ETH_IPV6 => return ipv6::ingress(ctx, ep, pkt),
        _ => return Err(DropReason::UnsupportedEthertype),
    }
    pkt.read_ipv4(ctx)?;
    if pkt.src_ip != ep.ip {
        return Err(DropReason::SpoofedIp);
    }

    // 3. Broadcast and multicast.
    if pkt.dst_mac[0] & 1 != 0 {
        return broadcast(ctx, ep, pkt);
    }
    // 4. The gateway.
    if pkt.dst_mac == ep.gw_mac {
        return gateway(ctx, ep, pkt);
    }
    // 5. Unicast within the network.
    forward::unicast(ctx, ep, pkt)
}

#[inline(always)]
fn broadcast(ctx: &TcContext, ep: &EndpointEntry, pkt: &Packet) -> Result<Verdict, DropReason> {
    if ep.net_flags & net_flags::FLOOD == 0 {
        return Err(DropReason::Broadcast);
    }
    // Unicast IPv4 in a group frame would reach peers and the host without
    // the unicast path's checks (icc, internal, policy).
    if !is_group_destination(ep.net_id, pkt.dst_ip) {
        return Err(DropReason::UnicastInGroupFrame);
    }
    // icc=false: members do not hear each other, broadcast included.
    if ep.net_flags & net_flags::ICC_OFF == 0 {
        flood::flood(ctx, ep.net_id, pkt.ifindex);
    }
    // The host is a member of the segment too, as with a bridge. (The
    // kernel forwards no group frame; an internal network's still goes with
    // TTL 1, after the copies, should a DNAT rule ever match one.)
    if ep.net_flags & net_flags::INTERNAL != 0 {
        confine_to_host(ctx)?;
    }
    Ok(Verdict::ToHost)
}

/// Whether `dst_ip` is a group address of network `net_id`: multicast, the
/// limited broadcast or the subnet's broadcast.
#[inline(always)]
fn is_group_destination(net_id: u32, dst_ip: u32) -> bool {
    let dst = u32::from_be_bytes(dst_ip.to_ne_bytes());
    if dst >> 28 == 0xe || dst == u32::MAX {
        return true;
    }
    let Some(net) = maps::network(net_id) else {
        return false;
    };
    // /31 and /32 have no broadcast address.
    if net.prefix_len == 0 || net.prefix_len > 30 {
        return false;
    }
    let subnet = u32::from_be_bytes(net.subnet.to_ne_bytes());
    dst == subnet | (u32::MAX >> net.prefix_len)
}

/// The host stack, within the network's bounds, or another network if
/// policy allows.
#[inline(always)]
fn gateway(ctx: &TcContext, ep: &EndpointEntry, pkt: &mut Packet) -> Result<Verdict, DropReason> {
    let internal = ep.net_flags & net_flags::INTERNAL != 0;
    if pkt.dst_ip == ep.gateway {
        if internal {
            confine_to_host(ctx)?;
        }
        return Ok(Verdict::ToHost);
    }
    if internal {
        return Err(DropReason::InternalNetwork);
    }
    if let Some(dst_net) = maps::subnet_of(pkt.dst_ip) {
        // A member of an icc=false network that sends a peer's packets to
        // the gateway MAC is judged here as in step 5, or the host (when it
        // forwards) would carry them around the verdict.
        let fellow = dst_net == ep.net_id && ep.net_flags & net_flags::ICC_OFF != 0;
        if fellow || (dst_net != ep.net_id && !maps::is_gateway_of(dst_net, pkt.dst_ip)) {
            return forward::route(ctx, ep, dst_net, pkt);
        }
    }
    Ok(Verdict::ToHost)
}

/// What an internal network sends to its gateway may be delivered by the
/// host, never forwarded: with TTL 1 the host's forwarding refuses it, even
/// after a DNAT rule (published ports, kube-proxy) made it someone else's.
#[inline(always)]
fn confine_to_host(ctx: &TcContext) -> Result<(), DropReason> {
    let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    if ip.ttl > 1 {
        let old = u16::from_be_bytes([ip.ttl, ip.proto]);
        let new = u16::from_be_bytes([1, ip.proto]);
        ip.ttl = 1;
        // RFC 1624: HC' = ~(~HC + ~m + m').
        let mut sum = u32::from(!ip.checksum()) + u32::from(!old) + u32::from(new);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        ip.set_checksum(!(sum as u16));
    }
    Ok(())
}
