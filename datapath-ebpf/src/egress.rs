//! `tc_egress`: what the host stack sends into a sandbox. Isolation holds
//! even when the host forwards: traffic routed in from another bpfnet network
//! is dropped; the host's own gateway addresses may talk.
use aya_ebpf::programs::TcContext;
use bpfnet_common::DropReason;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    maps,
    packet::{header, ip_u32, Packet, ETH_ARP, ETH_IPV4, ETH_IPV6},
    verdict::Verdict,
};

#[inline(always)]
pub fn decide(ctx: &TcContext, pkt: &mut Packet) -> Result<Verdict, DropReason> {
    let ep = maps::endpoint(pkt.ifindex).ok_or(DropReason::NotAnEndpoint)?;
    pkt.slot = Some(ep.slot);
    let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
    pkt.src_mac = eth.src_addr;
    pkt.dst_mac = eth.dst_addr;
    pkt.ethertype = u16::from_be(eth.ether_type);
    match eth.ether_type {
        ETH_IPV4 => {
            let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
            pkt.src_ip = ip_u32(ip.src_addr);
            pkt.dst_ip = ip_u32(ip.dst_addr);
            pkt.ip_proto = ip.proto;
            if let Some(src_net) = maps::subnet_of(pkt.src_ip) {
                if src_net != ep.net_id && !maps::is_gateway_of(src_net, pkt.src_ip) {
                    return Err(DropReason::FromOtherNetwork);
                }
            }
        }
        ETH_ARP => {}
        ETH_IPV6 => return Err(DropReason::Ipv6),
        _ => return Err(DropReason::UnsupportedEthertype),
    }
    Ok(Verdict::Pass)
}
