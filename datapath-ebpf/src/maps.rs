//! The maps (pinned by name; userspace fills them) and the typed lookups the
//! steps use. Every map read of the datapath goes through here.
//!
//! Map values returned by reference stay valid for the whole program run:
//! the kernel frees a hash map element only after an RCU grace period, and a
//! program run is one RCU read-side section. Userspace may replace a value
//! meanwhile; the programs then see either the old or the new one.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::generated::bpf_for_each_map_elem,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use bpfnet_common::{
    CtKey, CtValue, DropReason, Endpoint6, EndpointCounters, EndpointEntry, FdbEntry, FdbKey,
    FloodKey, FragKey, FragPorts, Neighbour, Neighbour6Key, NeighbourKey, Network6, NetworkEntry,
    PolicyKey, PolicyValue, CT_ENTRIES, CT_QUOTA, CT_SWEEP_INTERVAL_NS, CT_SWEEP_MAX_INTERVAL_NS,
    DROP_EVENTS_BYTES, FRAGMENT_ENTRIES, MAX_ENDPOINTS, MAX_NETWORKS, MAX_POLICY_ENTRIES,
    MAX_RULES,
};

use crate::policy::expired;

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
// A plain hash, not an LRU: an entry leaves only when it expires or closes
// (or userspace flushes it), never to make room for another endpoint's.
// Allocated as it fills.
#[map(name = "CONNTRACK")]
static CONNTRACK: HashMap<CtKey, CtValue> = HashMap::pinned(CT_ENTRIES, BPF_F_NO_PREALLOC);
// Per endpoint slot: entries it opened (added and subtracted atomically by
// the programs), and entries userspace removed (written by userspace only,
// under its lock). Its conntrack use is the difference.
#[map(name = "CT_CHARGED")]
static CT_CHARGED: Array<u64> = Array::pinned(MAX_ENDPOINTS, 0);
#[map(name = "CT_RELEASED")]
static CT_RELEASED: Array<u64> = Array::pinned(MAX_ENDPOINTS, 0);
// When the programs last swept expired entries (ns, monotonic), and the
// wait before the next sweep (0: the shortest).
#[map(name = "CT_SWEPT")]
static CT_SWEPT: Array<u64> = Array::pinned(2, 0);
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

/// Forgets connection `key` (it expired), crediting its opener; false if
/// it was gone already.
#[inline(always)]
pub fn forget(key: &CtKey, owner: u32) -> bool {
    // Only the removal that succeeds credits: two CPUs may both find it expired.
    let removed = CONNTRACK.remove(key).is_ok();
    if removed {
        charge(owner, u64::MAX);
    }
    removed
}

/// Adds `delta` (wrapping: `u64::MAX` is -1) to what endpoint `slot` is charged.
#[inline(always)]
fn charge(slot: u32, delta: u64) {
    if let Some(n) = CT_CHARGED.get_ptr_mut(slot) {
        // The BPF target has no `AtomicU64::fetch_add` (no compare and
        // swap); its atomic add (BPF_ATOMIC | BPF_ADD, "xadd") is this.
        // SAFETY: `n` is an element of an array map, valid for the program
        // run and aligned for u64; every writer of it in the programs goes
        // through this atomic add.
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({n} + 0) += {delta}",
                n = in(reg) n,
                delta = in(reg) delta,
            );
        }
    }
}

/// Whether endpoint `slot` has [`CT_QUOTA`] connections or more. The
/// difference can go below zero for a moment (a reused slot credited for
/// the entries of the endpoint that had it before): that is room.
#[inline(always)]
fn at_quota(slot: u32) -> bool {
    let charged = CT_CHARGED.get(slot).copied().unwrap_or(0);
    let released = CT_RELEASED.get(slot).copied().unwrap_or(0);
    charged.wrapping_sub(released) as i64 >= CT_QUOTA as i64
}

/// Records the connection `key`, opened by endpoint `owner` and allowed by
/// `rule`, at `now` (an existing entry stays). The opener's quota or a full
/// table refuses it — after one sweep of expired entries, so that entries
/// nobody looks up again (a flood's) do not hold the quota for ever.
#[inline(always)]
pub fn track(key: &CtKey, owner: u32, rule: u32, now: u64) -> Result<(), DropReason> {
    if at_quota(owner) && (!sweep(now) || at_quota(owner)) {
        return Err(DropReason::ConntrackQuota);
    }
    let value = CtValue {
        rule,
        state: 0,
        last_seen: now,
        owner,
        _pad: 0,
    };
    match CONNTRACK.insert(key, value, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            charge(owner, 1);
            Ok(())
        }
        // Another CPU tracked it first: it is tracked, and charged once.
        Err(e) if e == -EEXIST => Ok(()),
        Err(_) => {
            if sweep(now) && CONNTRACK.insert(key, value, u64::from(BPF_NOEXIST)).is_ok() {
                charge(owner, 1);
                return Ok(());
            }
            Err(DropReason::ConntrackFull)
        }
    }
}

const EEXIST: i32 = 17;

/// What the sweep callback needs and finds.
#[repr(C)]
struct Sweep {
    now: u64,
    /// Whether it removed anything.
    removed: bool,
}

/// Removes every expired conntrack entry, crediting its opener, unless the
/// last sweep was too recent: [`CT_SWEEP_INTERVAL_NS`] after one that
/// removed something, twice the wait before it (up to
/// [`CT_SWEEP_MAX_INTERVAL_NS`]) after one that did not. Returns whether it
/// swept.
#[inline(always)]
fn sweep(now: u64) -> bool {
    let (Some(last), Some(wait)) = (CT_SWEPT.get_ptr_mut(0), CT_SWEPT.get_ptr_mut(1)) else {
        return false;
    };
    // SAFETY: elements of an array map, valid for the program run; two CPUs
    // racing here at worst both sweep.
    let interval = unsafe {
        let interval = (*wait).clamp(CT_SWEEP_INTERVAL_NS, CT_SWEEP_MAX_INTERVAL_NS);
        if *last != 0 && now.wrapping_sub(*last) < interval {
            return false;
        }
        *last = now;
        interval
    };
    let mut ctx = Sweep {
        now,
        removed: false,
    };
    // SAFETY: the map pointer is the map definition (`HashMap` is
    // `repr(transparent)` over it), the callback has the signature the
    // helper calls it with, and `ctx` outlives the call.
    unsafe {
        bpf_for_each_map_elem(
            &CONNTRACK as *const HashMap<CtKey, CtValue> as *mut c_void,
            sweep_entry as *mut c_void,
            &mut ctx as *mut Sweep as *mut c_void,
            0,
        );
    }
    let next = if ctx.removed {
        CT_SWEEP_INTERVAL_NS
    } else {
        interval.saturating_mul(2)
    };
    // SAFETY: as above.
    unsafe { *wait = next };
    true
}

/// One entry of a sweep: removed (and its opener credited) if expired.
/// Returns 0: go on with the next entry.
#[inline(never)]
extern "C" fn sweep_entry(
    _map: *mut c_void,
    key: *mut CtKey,
    value: *mut CtValue,
    ctx: *mut Sweep,
) -> i64 {
    // SAFETY: the helper passes valid key, value and our context.
    let (key, value, ctx) = unsafe { (&*key, &*value, &mut *ctx) };
    // A flag, not a count: the verifier checks the callback as a loop, and
    // a count would make every iteration a new state to it.
    if expired(key.proto, value, ctx.now) && forget(key, value.owner) {
        ctx.removed = true;
    }
    0
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
