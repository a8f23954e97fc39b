//! The ceiling of this design, for the benchmark only (`cargo xtask bench`,
//! contender `minimal-prog`): a TC program that does nothing but redirect
//! every packet into the peer of the veth named in `MINIMAL_PEER` for the
//! interface it runs on. No check, no counter: the gap between it and the
//! datapath is what the datapath's work costs.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::bpf_redirect_peer,
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};

/// Host-side ifindex → the host-side ifindex whose peer gets its packets.
#[map(name = "MINIMAL_PEER")]
static MINIMAL_PEER: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

#[classifier]
pub fn tc_minimal(ctx: TcContext) -> i32 {
    // SAFETY: the kernel hands a valid __sk_buff to a TC program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the map holds plain u32 values; the reference is read at once.
    match unsafe { MINIMAL_PEER.get(ifindex) } {
        // SAFETY: a helper call with plain integer arguments.
        Some(peer) => unsafe { bpf_redirect_peer(*peer, 0) as i32 },
        None => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
