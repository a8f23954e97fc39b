//! The packet as the programs see it: bounds-checked access to its headers
//! (the `network-types` structs), and [`Packet`], what a decision has learned
//! about it so far — which is also what a drop event reports.
use aya_ebpf::programs::TcContext;
use bpfnet_common::DropReason;
use network_types::{
    arp::ArpHdr,
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

/// Ethertypes as they sit in the frame (network order).
pub const ETH_IPV4: u16 = EtherType::Ipv4 as u16;
pub const ETH_ARP: u16 = EtherType::Arp as u16;
pub const ETH_IPV6: u16 = EtherType::Ipv6 as u16;
pub const PROTO_ICMP: u8 = IpProto::Icmp as u8;
pub const PROTO_TCP: u8 = IpProto::Tcp as u8;
pub const PROTO_UDP: u8 = IpProto::Udp as u8;

/// Bytes every packet gets pulled in for: Ethernet, IPv4 (no options) and
/// the L4 header, or an ARP packet. Policy pulls what it needs beyond
/// ([`pull`]).
const HEADERS: u32 = 64;

/// What the programs know about a packet while they judge it.
pub struct Packet {
    /// The host-side veth the program runs on.
    pub ifindex: u32,
    /// Counter slot of that endpoint, once it is known to be one.
    pub slot: Option<u32>,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Host order.
    pub ethertype: u16,
    /// IPv4 source and destination, or the ARP sender and target.
    pub src_ip: u32,
    pub dst_ip: u32,
    pub ip_proto: u8,
    /// The policy rule that denied it (0: no rule allowed it).
    pub rule: u32,
}

impl Packet {
    #[inline(always)]
    pub fn new(ctx: &TcContext) -> Self {
        linearize(ctx);
        // SAFETY: `ctx.skb.skb` is the `__sk_buff` the kernel passed to this
        // run of the program; it is valid until the program returns.
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        Packet {
            ifindex,
            slot: None,
            src_mac: [0; 6],
            dst_mac: [0; 6],
            ethertype: 0,
            src_ip: 0,
            dst_ip: 0,
            ip_proto: 0,
            rule: 0,
        }
    }

    /// Learns the MACs and ethertype from the Ethernet header; returns the
    /// ethertype as it sits in the frame (compare with `ETH_*`).
    #[inline(always)]
    pub fn read_eth(&mut self, ctx: &TcContext) -> Result<u16, DropReason> {
        let eth = header::<EthHdr>(ctx, 0).ok_or(DropReason::Malformed)?;
        self.src_mac = eth.src_addr;
        self.dst_mac = eth.dst_addr;
        self.ethertype = u16::from_be(eth.ether_type);
        Ok(eth.ether_type)
    }

    /// Learns the addresses and protocol from the IPv4 header.
    #[inline(always)]
    pub fn read_ipv4(&mut self, ctx: &TcContext) -> Result<(), DropReason> {
        let ip = header::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
        self.src_ip = ip_u32(ip.src_addr);
        self.dst_ip = ip_u32(ip.dst_addr);
        self.ip_proto = ip.proto;
        Ok(())
    }
}

/// Pulls headers that sit in paged fragments (AF_PACKET senders, some GSO
/// packets) into the linear part, where direct packet access sees them.
#[inline(always)]
fn linearize(ctx: &TcContext) {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < HEADERS && ctx.len() > linear {
        let _ = ctx.pull_data(ctx.len().min(HEADERS));
    }
}

/// Makes sure the first `need` bytes of the packet are in the linear part,
/// as far as the packet has them: headers past [`Packet::new`]'s first pull
/// (IPv4 options, the packet an ICMP error quotes) in frames built from
/// pages. Changes packet data: no header reference may be used after this.
#[inline(always)]
pub fn pull(ctx: &TcContext, need: usize) {
    let linear = ctx.data_end() - ctx.data();
    let len = ctx.len() as usize;
    if linear < need && len > linear {
        let _ = ctx.pull_data(len.min(need) as u32);
    }
}

/// A header struct that can be laid over packet bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]`, made only of integers and byte arrays (any
/// bit pattern is valid), and need no alignment beyond what packet data has.
pub unsafe trait Header {}

// SAFETY: network-types headers are #[repr(C)] byte arrays; EthHdr's one
// u16 needs 2-byte alignment, which the MAC header in an skb always has.
unsafe impl Header for EthHdr {}
// SAFETY: as above (byte arrays only, alignment 1).
unsafe impl Header for ArpHdr {}
// SAFETY: as above (byte arrays only, alignment 1).
unsafe impl Header for Ipv4Hdr {}
// SAFETY: as above (byte arrays only, alignment 1).
unsafe impl Header for Ipv6Hdr {}
// SAFETY: as above (byte arrays only, alignment 1).
unsafe impl Header for TcpHdr {}
// SAFETY: as above (byte arrays only, alignment 1).
unsafe impl Header for UdpHdr {}
// SAFETY: as above (byte arrays only, alignment 1).
unsafe impl Header for Icmpv4Hdr {}

/// The header `T` at `offset`, if the linear part of the packet holds all of
/// it. Any helper that changes packet data (`pull_data`, `clone_redirect`)
/// invalidates it: the verifier refuses a program that uses it afterwards.
#[inline(always)]
#[expect(
    clippy::mut_from_ref,
    reason = "the packet bytes belong to the kernel's skb, not to the context handle"
)]
pub fn header<T: Header>(ctx: &TcContext, offset: usize) -> Option<&mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the bytes [start + offset, start + offset + size_of::<T>())
    // lie inside the packet's linear data (checked above) and stay valid
    // until a helper changes packet data; `T: Header` is valid for any bit
    // pattern at any packet offset.
    Some(unsafe { &mut *((start + offset) as *mut T) })
}

/// An IPv4 address in the in-memory form the maps use (octets in network order).
#[inline(always)]
pub fn ip_u32(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}
