//! bpfnet's datapath: TC programs on the host side of every endpoint's veth.
//!
//! `tc_ingress` sees what a sandbox sends and decides, in this order
//! ([`ingress`]):
//!   1. source check (MAC, and the IPv4 or ARP sender, must be the endpoint's own);
//!   2. ARP requests answered in place (gateway or a neighbour of the same network);
//!   3. broadcast/multicast (with a group IPv4 destination) flooded to the
//!      network's ports (not on `icc=false` networks) and the host, or dropped;
//!   4. the gateway MAC: to the host stack (from an internal network with
//!      TTL 1: delivered, never forwarded), unless the destination is inside
//!      another bpfnet network, or is a fellow member on an `icc=false`
//!      network — then policy decides, and allowed traffic is routed right
//!      here (MAC rewrite, TTL, `bpf_redirect_peer`) — or outside an internal
//!      network;
//!   5. unicast by (network, MAC) through `bpf_redirect_peer` (on `icc=false`
//!      networks only along links); unknown: dropped.
//!
//! Policy is judged per connection: an established one (conntrack) passes,
//! a new one needs an allowing entry and no denying one ([`policy`]).
//!
//! `tc_egress` sees what the host stack sends into a sandbox and drops what was
//! routed there around isolation: from another bpfnet network, from a fellow
//! member of an `icc=false` network, into an internal network ([`egress`]).
//!
//! Every step returns `Result<Verdict, DropReason>`; [`verdict::finish`] is the
//! one place that turns it into a TC action, counts it, and reports drops.
#![no_std]
#![no_main]
// Inline assembly for the BPF target: the atomic add of `maps::charge`.
#![feature(asm_experimental_arch)]

mod arp;
mod drops;
mod egress;
mod flood;
mod forward;
mod ingress;
mod ipv6;
mod maps;
mod packet;
mod policy;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};
use bpfnet_common::hook;

use crate::packet::Packet;

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    let mut pkt = Packet::new(&ctx);
    let decision = ingress::decide(&ctx, &mut pkt);
    verdict::finish(&ctx, &pkt, hook::INGRESS, decision)
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    let mut pkt = Packet::new(&ctx);
    let decision = egress::decide(&ctx, &mut pkt);
    verdict::finish(&ctx, &pkt, hook::EGRESS, decision)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
