//! The outcome of a decision and the one place where it becomes a TC action:
//! [`finish`] counts what happened to the packet and, for a drop, hands it to
//! [`drops::record`] (Cilium's `send_drop_notify`, aya's `try_` pattern).
use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use bpfnet_common::DropReason;

use crate::{drops, maps, packet::Packet};

/// What happens to a packet that is not dropped.
pub enum Verdict {
    /// Ingress: into the host stack (the gateway, or beyond it).
    ToHost,
    /// Egress: on into the sandbox, as the host stack sent it.
    Pass,
    /// Straight into the sandbox behind host-side veth `ifindex`
    /// (`bpf_redirect_peer`); `slot` is that endpoint's counter slot.
    RedirectPeer { ifindex: u32, slot: u32 },
    /// Out of host-side veth `ifindex`, towards its sandbox (an ARP answer).
    Redirect { ifindex: u32 },
}

/// The TC action for `decision`, with its accounting: the endpoint's
/// counters for a verdict, drop counters and a drop event for a drop.
#[inline(always)]
pub fn finish(
    ctx: &TcContext,
    pkt: &Packet,
    hook: u32,
    decision: Result<Verdict, DropReason>,
) -> i32 {
    let verdict = match decision {
        Ok(v) => v,
        Err(reason) => return drops::record(pkt, hook, reason),
    };
    let len = u64::from(ctx.len());
    match verdict {
        Verdict::ToHost => {
            count(pkt, |c| c.to_host += 1);
            TC_ACT_OK
        }
        Verdict::Pass => {
            count(pkt, |c| {
                c.tx_packets += 1;
                c.tx_bytes += len;
            });
            TC_ACT_OK
        }
        Verdict::RedirectPeer { ifindex, slot } => {
            count(pkt, |c| c.forwarded += 1);
            // bpf_redirect_peer skips the destination's host-side egress,
            // where its `tx` would otherwise be counted.
            maps::with_counters(slot, |c| {
                c.tx_packets += 1;
                c.tx_bytes += len;
            });
            // SAFETY: a helper call with plain integer arguments.
            unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
        }
        // SAFETY: a helper call with plain integer arguments.
        Verdict::Redirect { ifindex } => unsafe { bpf_redirect(ifindex, 0) as i32 },
    }
}

/// Counts on the endpoint the packet came from (ingress) or goes to (egress).
#[inline(always)]
fn count(pkt: &Packet, f: impl FnOnce(&mut bpfnet_common::EndpointCounters)) {
    if let Some(slot) = pkt.slot {
        maps::with_counters(slot, f);
    }
}
