//! The maps (pinned by name; userspace fills them) and the typed lookups the
//! steps use. Every map read of the datapath goes through here.
//!
//! Map values returned by reference stay valid for the whole program run:
//! the kernel frees a hash map element only after an RCU grace period, and a
//! program run is one RCU read-side section. Userspace may replace a value
//! meanwhile; the programs then see either the old or the new one.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use bpfnet_common::{
    CtKey, CtValue, DropReason, Endpoint6, EndpointCounters, EndpointEntry, FdbEntry, FdbKey,
    FloodKey, FragKey, FragPorts, Neighbour, Neighbour6Key, NeighbourKey, Network6, NetworkEntry,
    PolicyKey, PolicyValue, CT_ENTRIES, DROP_EVENTS_BYTES, FRAGMENT_ENTRIES, MAX_ENDPOINTS,
    MAX_NETWORKS, MAX_POLICY_ENTRIES, MAX_RULES,
};

#[map(name = "ENDPOINTS")]
static ENDPOINTS: HashMap<u32, EndpointEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "FDB")]
static FDB: HashMap<FdbKey, FdbEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "NEIGHBOURS")]
static NEIGHBOURS: HashMap<NeighbourKey, Neighbour> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "NETWORKS")]
static NETWORKS: HashMap<u32, NetworkEntry> = HashMap::pinned(MAX_NETWORKS, 0);
#[map(name = "SUBNETS")]
static SUBNETS: LpmTrie<u32, u32> = LpmTrie::pinned(MAX_NETWORKS, 0);
#[map(name = "FLOOD_PORTS")]
static FLOOD_PORTS: HashMap<FloodKey, FdbEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "EP_COUNTERS")]
static EP_COUNTERS: PerCpuArray<EndpointCounters> = PerCpuArray::pinned(MAX_ENDPOINTS, 0);
#[map(name = "DROP_COUNTERS")]
static DROP_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::COUNT, 0);
#[map(name = "DROP_EVENTS")]
pub static DROP_EVENTS: RingBuf = RingBuf::pinned(DROP_EVENTS_BYTES, 0);
// Two generations of the compiled policy; POLICY_GEN[0] names the live one,
// so userspace swaps a whole rule set in one write.
#[map(name = "POLICY_0")]
static POLICY_0: HashMap<PolicyKey, PolicyValue> = HashMap::pinned(MAX_POLICY_ENTRIES, 0);
#[map(name = "POLICY_1")]
static POLICY_1: HashMap<PolicyKey, PolicyValue> = HashMap::pinned(MAX_POLICY_ENTRIES, 0);
#[map(name = "POLICY_GEN")]
static POLICY_GEN: Array<u32> = Array::pinned(1, 0);
#[map(name = "CONNTRACK")]
static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(CT_ENTRIES, 0);
#[map(name = "RULE_HITS")]
static RULE_HITS: PerCpuArray<u64> = PerCpuArray::pinned(MAX_RULES, 0);
#[map(name = "FRAGMENTS")]
static FRAGMENTS: LruHashMap<FragKey, FragPorts> = LruHashMap::pinned(FRAGMENT_ENTRIES, 0);
// IPv6, for dual-stack networks only; the IPv4 path never reads these.
#[map(name = "ENDPOINTS6")]
static ENDPOINTS6: HashMap<u32, Endpoint6> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "NETWORKS6")]
static NETWORKS6: HashMap<u32, Network6> = HashMap::pinned(MAX_NETWORKS, 0);
// Two per endpoint: its address and its link-local one.
#[map(name = "NEIGHBOURS6")]
static NEIGHBOURS6: HashMap<Neighbour6Key, Neighbour> = HashMap::pinned(2 * MAX_ENDPOINTS, 0);
#[map(name = "SUBNETS6")]
static SUBNETS6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_NETWORKS, 0);

/// The IPv6 side of the endpoint on `ifindex` (none: an IPv4-only network).
#[inline(always)]
pub fn endpoint6(ifindex: u32) -> Option<&'static Endpoint6> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { ENDPOINTS6.get(ifindex) }
}

#[inline(always)]
pub fn network6(net_id: u32) -> Option<&'static Network6> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { NETWORKS6.get(net_id) }
}

/// The MAC of IPv6 address `ip6` in network `net_id`.
#[inline(always)]
pub fn neighbour6(net_id: u32, ip6: [u8; 16]) -> Option<&'static Neighbour> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { NEIGHBOURS6.get(Neighbour6Key { net_id, ip6 }) }
}

/// The bpfnet network whose IPv6 subnet holds `ip6`.
#[inline(always)]
pub fn subnet6_of(ip6: [u8; 16]) -> Option<u32> {
    SUBNETS6.get(Key::new(128, ip6)).copied()
}

/// Whether `ip6` is the IPv6 gateway of network `net_id`.
#[inline(always)]
pub fn is_gateway6_of(net_id: u32, ip6: &[u8; 16]) -> bool {
    network6(net_id).is_some_and(|n| n.gateway6 == *ip6)
}

/// The endpoint whose host-side veth has `ifindex`.
#[inline(always)]
pub fn endpoint(ifindex: u32) -> Option<&'static EndpointEntry> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { ENDPOINTS.get(ifindex) }
}

/// Where `mac` lives in network `net_id`.
#[inline(always)]
pub fn fdb(net_id: u32, mac: [u8; 6]) -> Option<&'static FdbEntry> {
    let key = FdbKey {
        net_id,
        mac,
        _pad: [0; 2],
    };
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { FDB.get(key) }
}

/// The MAC of `ip` in network `net_id`.
#[inline(always)]
pub fn neighbour(net_id: u32, ip: u32) -> Option<&'static Neighbour> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { NEIGHBOURS.get(NeighbourKey { net_id, ip }) }
}

#[inline(always)]
pub fn network(net_id: u32) -> Option<&'static NetworkEntry> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { NETWORKS.get(net_id) }
}

/// The `index`-th broadcast port of network `net_id`.
#[inline(always)]
pub fn flood_port(net_id: u32, index: u32) -> Option<&'static FdbEntry> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { FLOOD_PORTS.get(FloodKey { net_id, index }) }
}

/// The bpfnet network whose subnet holds `ip`.
#[inline(always)]
pub fn subnet_of(ip: u32) -> Option<u32> {
    SUBNETS.get(Key::new(32, ip)).copied()
}

/// Whether `ip` is the gateway address (a host address) of network `net_id`.
#[inline(always)]
pub fn is_gateway_of(net_id: u32, ip: u32) -> bool {
    network(net_id).is_some_and(|n| n.gateway == ip)
}

/// Runs `f` on this CPU's counters of endpoint `slot`.
#[inline(always)]
pub fn with_counters(slot: u32, f: impl FnOnce(&mut EndpointCounters)) {
    if let Some(c) = EP_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU value of this CPU; program runs on one CPU do not
        // interleave within `f`, and no other reference to it is alive.
        f(unsafe { &mut *c });
    }
}

#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(n) = DROP_COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU value of this CPU, see `with_counters`.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
pub fn count_rule_hit(rule: u32) {
    if let Some(n) = RULE_HITS.get_ptr_mut(rule) {
        // SAFETY: a per-CPU value of this CPU, see `with_counters`.
        unsafe { *n += 1 };
    }
}

/// The policy entry for `key` in the live generation.
#[inline(always)]
pub fn policy(key: &PolicyKey) -> Option<&'static PolicyValue> {
    let generation = POLICY_GEN.get(0).copied().unwrap_or(0);
    // SAFETY: see the module docs (values outlive the program run).
    unsafe {
        if generation == 0 {
            POLICY_0.get(key)
        } else {
            POLICY_1.get(key)
        }
    }
}

/// The conntrack entry of connection `key`, to read and refresh.
#[inline(always)]
pub fn connection(key: &CtKey) -> Option<&'static mut CtValue> {
    // SAFETY: see the module docs (values outlive the program run); program
    // runs on other CPUs may write the same plain integers at the same time,
    // which at worst loses one refresh.
    CONNTRACK.get_ptr_mut(key).map(|v| unsafe { &mut *v })
}

/// Forgets connection `key` (it expired).
#[inline(always)]
pub fn forget(key: &CtKey) {
    let _ = CONNTRACK.remove(key);
}

/// Records the connection `key`, allowed by `rule`, opened at `now` (an
/// existing entry stays).
#[inline(always)]
pub fn track(key: &CtKey, rule: u32, now: u64) {
    let value = CtValue {
        rule,
        state: 0,
        last_seen: now,
    };
    let _ = CONNTRACK.insert(key, value, u64::from(BPF_NOEXIST));
}

/// The ports of the fragmented datagram `key`, as its first fragment carried them.
#[inline(always)]
pub fn fragment_ports(key: &FragKey) -> Option<FragPorts> {
    // SAFETY: see the module docs (values outlive the program run).
    unsafe { FRAGMENTS.get(key) }.copied()
}

#[inline(always)]
pub fn remember_fragment(key: &FragKey, ports: FragPorts) {
    let _ = FRAGMENTS.insert(key, ports, 0);
}
