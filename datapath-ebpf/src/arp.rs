//! Step 2, ARP: requests for the gateway or a neighbour of the same network
//! are answered in place — the request is rewritten into the reply and sent
//! back out to the asker; everything else is dropped. No flooding, so no
//! poisoning and no scanning of other sandboxes.
use aya_ebpf::programs::TcContext;
use bpfnet_common::{DropReason, EndpointEntry};
use network_types::{arp::ArpHdr, eth::EthHdr};

use crate::{
    maps,
    packet::{header, ip_u32, Packet, ETH_IPV4},
    verdict::Verdict,
};

/// ARP hardware type of Ethernet and the operations (RFC 826).
const HTYPE_ETHERNET: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    ep: &EndpointEntry,
    pkt: &mut Packet,
) -> Result<Verdict, DropReason> {
    let arp = header::<ArpHdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    pkt.src_ip = ip_u32(arp.spa);
    pkt.dst_ip = ip_u32(arp.tpa);
    if arp.htype() != HTYPE_ETHERNET
        || arp.ptype() != u16::from_be(ETH_IPV4)
        || arp.hlen != 6
        || arp.plen != 4
    {
        return Err(DropReason::Malformed);
    }
    if arp.sha != ep.mac || pkt.src_ip != ep.ip {
        return Err(DropReason::SpoofedArp);
    }
    if arp.oper() != OP_REQUEST {
        return Err(DropReason::ArpNotRequest);
    }
    let answer = if pkt.dst_ip == ep.gateway {
        ep.gw_mac
    } else {
        maps::neighbour(ep.net_id, pkt.dst_ip)
            .ok_or(DropReason::ArpUnknownTarget)?
            .mac
    };
    let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
    eth.dst_addr = eth.src_addr;
    eth.src_addr = answer;
    arp.set_oper(OP_REPLY);
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = answer;
    arp.spa = pkt.dst_ip.to_ne_bytes();
    Ok(Verdict::Redirect {
        ifindex: pkt.ifindex,
    })
}
