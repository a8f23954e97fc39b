//! `tc_egress`: what the host stack sends into a sandbox. Isolation holds
//! even when the host forwards: traffic routed in from another bpfnet network
//! is dropped (the host's own gateway addresses may talk), on an icc=false
//! network so is traffic from a fellow member, and an internal network takes
//! only its own members' broadcasts and what the host itself sends from the
//! gateway address.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{net_flags, DropReason, EndpointEntry};

use crate::{
    ipv6, maps,
    packet::{Packet, ETH_ARP, ETH_IPV4, ETH_IPV6},
    verdict::Verdict,
};

#[inline(always)]
pub fn decide(ctx: &TcContext, pkt: &mut Packet) -> Result<Verdict, DropReason> {
    let ep = maps::endpoint(pkt.ifindex).ok_or(DropReason::NotAnEndpoint)?;
    pkt.slot = Some(ep.slot);
    match pkt.read_eth(ctx)? {
        ETH_IPV4 => {
            pkt.read_ipv4(ctx)?;
            source(ctx, ep, pkt)?;
        }
        ETH_ARP => {}
        ETH_IPV6 => ipv6::egress(ctx, ep, pkt)?,
        _ => return Err(DropReason::UnsupportedEthertype),
    }
    Ok(Verdict::Pass)
}

/// Whether the host may send this IPv4 packet into the sandbox of `ep`.
#[inline(always)]
fn source(ctx: &TcContext, ep: &EndpointEntry, pkt: &Packet) -> Result<(), DropReason> {
    // The Option is taken apart right here: compared as a whole, LLVM may
    // read its (uninitialised) payload on the None path, which the verifier
    // refuses.
    let mut member = false;
    if let Some(src_net) = maps::subnet_of(pkt.src_ip) {
        if src_net != ep.net_id && !maps::is_gateway_of(src_net, pkt.src_ip) {
            return Err(DropReason::FromOtherNetwork);
        }
        member = src_net == ep.net_id && pkt.src_ip != ep.gateway;
    }
    // Members of an icc=false network meet only through the datapath; from
    // the host, a member's packet was routed around the verdict.
    if member && ep.net_flags & net_flags::ICC_OFF != 0 {
        return Err(DropReason::IccDisabled);
    }
    if ep.net_flags & net_flags::INTERNAL != 0 {
        // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to this
        // run of the program; it is valid until the program returns.
        let forwarded = unsafe { (*ctx.skb.skb).ingress_ifindex } != 0;
        // A packet the host forwarded (it came in somewhere) is routed
        // traffic, even when DNAT made its source the gateway; only members'
        // broadcasts (flooded) and the host's own gateway-sourced packets
        // (ingress_ifindex 0) get in.
        if !member && (pkt.src_ip != ep.gateway || forwarded) {
            return Err(DropReason::InternalNetwork);
        }
    }
    Ok(())
}
