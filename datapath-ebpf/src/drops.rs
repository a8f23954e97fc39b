//! Drop accounting: every dropped packet is counted per reason and per
//! endpoint, and reported through the `DROP_EVENTS` ring buffer
//! (`bpfnet stats`, `bpfnet monitor`).
use aya_ebpf::bindings::TC_ACT_SHOT;
use bpfnet_common::{DropEvent, DropReason};

use crate::{maps, packet::Packet};

#[inline(always)]
pub fn record(pkt: &Packet, hook: u32, reason: DropReason) -> i32 {
    maps::count_drop(reason);
    if let Some(slot) = pkt.slot {
        maps::with_counters(slot, |c| c.dropped += 1);
    }
    if let Some(mut entry) = maps::DROP_EVENTS.reserve::<DropEvent>(0) {
        entry.write(DropEvent {
            reason: reason as u32,
            ifindex: pkt.ifindex,
            hook,
            rule: pkt.rule,
            src_ip: pkt.src_ip,
            dst_ip: pkt.dst_ip,
            ethertype: pkt.ethertype,
            ip_proto: pkt.ip_proto,
            _pad: 0,
            src_mac: pkt.src_mac,
            dst_mac: pkt.dst_mac,
        });
        entry.submit(0);
    }
    TC_ACT_SHOT
}
