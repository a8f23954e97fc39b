//! The limits the datapath's map sizes set, checked before an operation
//! touches anything: an operation that would overflow a map is refused with
//! a line naming the limit, and the state stays as it was.
//!
//! `BPFNET_TEST_MAX_ENDPOINTS` and `BPFNET_TEST_MAX_NETWORKS` lower the
//! limits (never raise them), so that tests can reach them without creating
//! thousands of sandboxes.
use anyhow::{bail, Result};
use bpfnet_common::{MAX_ENDPOINTS, MAX_FLOOD_PORTS, MAX_NETWORKS};

use crate::state::{DriverKind, Network, State};

fn limit(var: &str, max: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(max, |v: u32| v.min(max))
}

/// The counter slot of a new endpoint, if one is free.
pub fn endpoint_slot(state: &State) -> Result<u32> {
    let max = limit("BPFNET_TEST_MAX_ENDPOINTS", MAX_ENDPOINTS);
    let slot = state.free_slot();
    if slot >= max {
        bail!(
            "bpfnet holds at most {max} endpoints (the size of the datapath's endpoint maps) and all are in use; remove sandboxes or disconnect them first"
        );
    }
    Ok(slot)
}

/// The datapath id of a new network, if one is free.
pub fn network_id(state: &State) -> Result<u32> {
    let max = limit("BPFNET_TEST_MAX_NETWORKS", MAX_NETWORKS);
    let id = state.free_net_id();
    if id >= max {
        bail!(
            "bpfnet holds at most {} networks (the size of the datapath's network maps) and all are in use; remove a network first",
            max - 1
        );
    }
    Ok(id)
}

/// A warning when broadcast no longer reaches every member of `net`.
pub fn flood_warning(state: &State, net: &Network) -> Option<String> {
    if net.driver != DriverKind::Bridge || !net.flood() {
        return None;
    }
    let members = state.endpoints_of(&net.name).count();
    (members > MAX_FLOOD_PORTS as usize).then(|| {
        format!(
            "network {:?} has {members} endpoints; broadcast and multicast reach only the first {MAX_FLOOD_PORTS} (unicast, ARP and names are not affected)",
            net.name
        )
    })
}
