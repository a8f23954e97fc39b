//! Sizes and limits both sides agree on: map capacities, loop bounds and the
//! layout version that names the pin directory. The eBPF maps are declared
//! with these, and userspace sizes its loops and checks by them, so a change
//! here is a change of the map layout (bump [`MAP_LAYOUT_VERSION`]).

/// Bump whenever a key, value, map name or map size changes: pins live
/// under a directory named after it, so an old layout is never reused by mistake.
pub const MAP_LAYOUT_VERSION: u32 = 7;

/// Capacity of the per-endpoint maps (endpoints, FDB, neighbours, counters).
pub const MAX_ENDPOINTS: u32 = 8192;
/// Capacity of the network maps.
pub const MAX_NETWORKS: u32 = 4096;
/// Upper bound of the broadcast flood loop (ports per network that get a copy).
pub const MAX_FLOOD_PORTS: u32 = 64;
/// Policy rule ids are below this (they index `RULE_HITS`).
pub const MAX_RULES: u32 = 16384;
/// Capacity of each policy generation map (rules expanded to endpoint pairs).
pub const MAX_POLICY_ENTRIES: u32 = 262_144;
/// Capacity of the connection-tracking table (a plain hash, allocated as it
/// fills: nothing is ever evicted to make room).
pub const CT_ENTRIES: u32 = 262_144;
/// Connections one endpoint may have open in the conntrack table at once
/// (those it opened; replies to it are charged to their opener). The table
/// holds [`CT_ENTRIES`] / [`CT_QUOTA`] = 32 endpoints at their quota.
pub const CT_QUOTA: u64 = 8192;
/// The datapath sweeps expired conntrack entries (when an endpoint is at
/// its quota or the table is full) at most once in this many ns; after a
/// sweep that found nothing to remove the wait doubles, up to
/// [`CT_SWEEP_MAX_INTERVAL_NS`] (a walk of a full table takes tens of ms).
pub const CT_SWEEP_INTERVAL_NS: u64 = 1_000_000_000;
pub const CT_SWEEP_MAX_INTERVAL_NS: u64 = 8_000_000_000;
/// Capacity of the LRU that remembers the ports of fragmented datagrams.
pub const FRAGMENT_ENTRIES: u32 = 8192;
/// Size in bytes of the `DROP_EVENTS` ring buffer (a power of two, a
/// multiple of the page size).
pub const DROP_EVENTS_BYTES: u32 = 256 * 1024;
/// Rule id of the allowances `--link` makes on `icc=false` networks.
pub const RULE_LINK: u32 = 0;
