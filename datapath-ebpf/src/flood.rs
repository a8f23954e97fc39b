//! Step 3, broadcast and multicast: a copy to every other port of the network.
use aya_ebpf::programs::TcContext;
use bpfnet_common::MAX_FLOOD_PORTS;

use crate::maps;

/// Copies the packet to the ports of network `net_id` except `from_ifindex`
/// (at most MAX_FLOOD_PORTS). `clone_redirect` changes packet data: no
/// header reference may be used after this.
#[inline(always)]
pub fn flood(ctx: &TcContext, net_id: u32, from_ifindex: u32) {
    let Some(net) = maps::network(net_id) else {
        return;
    };
    let n = net.flood_ports;
    for index in 0..MAX_FLOOD_PORTS {
        if index >= n {
            break;
        }
        if let Some(port) = maps::flood_port(net_id, index) {
            if port.ifindex != from_ifindex {
                let _ = ctx.clone_redirect(port.ifindex, 0);
            }
        }
    }
}
