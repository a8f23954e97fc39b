//! The datapath's maps seen from the control plane: endpoints, FDB,
//! neighbours, networks and subnets, broadcast ports, policy generations,
//! conntrack, counters and the drop ring buffer. Handles are opened and
//! typed once per process; every write keeps the order in which the
//! programs may see it (known before reachable, unreachable before gone).
use anyhow::{anyhow, Context as _, Result};
use aya::maps::{
    lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues,
    RingBuf,
};
use bpfnet_common::{
    maps, CtKey, CtValue, DropEvent, DropReason, Endpoint6, EndpointCounters, EndpointEntry,
    FdbEntry, FdbKey, FloodKey, Neighbour, Neighbour6Key, NeighbourKey, Network6, NetworkEntry,
    PolicyKey, PolicyValue, MAX_FLOOD_PORTS,
};

use super::Datapath;
use crate::paths::Paths;

/// The pinned maps, opened and typed once per process.
pub(super) struct Maps {
    endpoints: HashMap<MapData, u32, EndpointEntry>,
    fdb: HashMap<MapData, FdbKey, FdbEntry>,
    neighbours: HashMap<MapData, NeighbourKey, Neighbour>,
    networks: HashMap<MapData, u32, NetworkEntry>,
    subnets: LpmTrie<MapData, u32, u32>,
    flood_ports: HashMap<MapData, FloodKey, FdbEntry>,
    ep_counters: PerCpuArray<MapData, EndpointCounters>,
    drop_counters: PerCpuArray<MapData, u64>,
    policy_gen: Array<MapData, u32>,
    policy: [HashMap<MapData, PolicyKey, PolicyValue>; 2],
    conntrack: HashMap<MapData, CtKey, CtValue>,
    ct_charged: Array<MapData, u64>,
    ct_released: Array<MapData, u64>,
    rule_hits: PerCpuArray<MapData, u64>,
    endpoints6: HashMap<MapData, u32, Endpoint6>,
    networks6: HashMap<MapData, u32, Network6>,
    neighbours6: HashMap<MapData, Neighbour6Key, Neighbour>,
    subnets6: LpmTrie<MapData, [u8; 16], u32>,
    cpus: usize,
}

fn open_map(paths: &Paths, name: &str) -> Result<Map> {
    let path = paths.maps_dir().join(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Ok(Map::from_map_data(data)?)
}

impl Maps {
    pub(super) fn open(paths: &Paths) -> Result<Maps> {
        let m = |name: &str| open_map(paths, name);
        Ok(Maps {
            endpoints: HashMap::try_from(m(maps::ENDPOINTS)?)?,
            fdb: HashMap::try_from(m(maps::FDB)?)?,
            neighbours: HashMap::try_from(m(maps::NEIGHBOURS)?)?,
            networks: HashMap::try_from(m(maps::NETWORKS)?)?,
            subnets: LpmTrie::try_from(m(maps::SUBNETS)?)?,
            flood_ports: HashMap::try_from(m(maps::FLOOD_PORTS)?)?,
            ep_counters: PerCpuArray::try_from(m(maps::EP_COUNTERS)?)?,
            drop_counters: PerCpuArray::try_from(m(maps::DROP_COUNTERS)?)?,
            policy_gen: Array::try_from(m(maps::POLICY_GEN)?)?,
            policy: [
                HashMap::try_from(m(maps::POLICY_0)?)?,
                HashMap::try_from(m(maps::POLICY_1)?)?,
            ],
            conntrack: HashMap::try_from(m(maps::CONNTRACK)?)?,
            ct_charged: Array::try_from(m(maps::CT_CHARGED)?)?,
            ct_released: Array::try_from(m(maps::CT_RELEASED)?)?,
            rule_hits: PerCpuArray::try_from(m(maps::RULE_HITS)?)?,
            endpoints6: HashMap::try_from(m(maps::ENDPOINTS6)?)?,
            networks6: HashMap::try_from(m(maps::NETWORKS6)?)?,
            neighbours6: HashMap::try_from(m(maps::NEIGHBOURS6)?)?,
            subnets6: LpmTrie::try_from(m(maps::SUBNETS6)?)?,
            cpus: aya::util::nr_cpus().map_err(|(_, e)| e)?,
        })
    }
}

impl Datapath {
    /// Step 1 of adding an endpoint: the datapath knows it (before any
    /// program is attached to it), with fresh counters.
    pub fn add_endpoint(&self, ifindex: u32, ep: &EndpointEntry) -> Result<()> {
        self.with_maps(|m| {
            let zero = PerCpuValues::try_from(vec![EndpointCounters::default(); m.cpus])?;
            m.ep_counters.set(ep.slot, zero, 0)?;
            // A fresh conntrack quota: whatever the slot's last holder left
            // charged (a flush a crash cut short) is not this endpoint's.
            let charged = m.ct_charged.get(&ep.slot, 0)?;
            m.ct_released.set(ep.slot, charged, 0)?;
            m.endpoints.insert(ifindex, ep, 0)?;
            Ok(())
        })
    }

    /// Step 2: other endpoints of the network can reach it (ARP and FDB).
    pub fn publish_endpoint(&self, ifindex: u32, ep: &EndpointEntry) -> Result<()> {
        let neighbour = Neighbour {
            mac: ep.mac,
            _pad: [0; 2],
        };
        let entry = FdbEntry {
            ifindex,
            slot: ep.slot,
        };
        self.with_maps(|m| {
            m.neighbours.insert(neighbour_key(ep), neighbour, 0)?;
            m.fdb.insert(fdb_key(ep), entry, 0)?;
            Ok(())
        })
    }

    /// Removes an endpoint's entries, but the FDB and neighbour entries only
    /// while they are still its own: once an address is free it may have
    /// been given to another endpoint, whose entries have the same keys. The
    /// FDB entry names its port; no FDB entry means nobody has published the
    /// address since. Returns whether they were its own.
    pub fn remove_endpoint_entries(
        &self,
        ifindex: Option<u32>,
        ep: &EndpointEntry,
    ) -> Result<bool> {
        self.with_maps(|m| {
            let owned = match m.fdb.get(&fdb_key(ep), 0) {
                Ok(entry) => Some(entry.ifindex) == ifindex,
                Err(MapError::KeyNotFound) => true,
                Err(e) => return Err(e.into()),
            };
            if owned {
                ignore_missing(m.fdb.remove(&fdb_key(ep)))?;
                ignore_missing(m.neighbours.remove(&neighbour_key(ep)))?;
            }
            if let Some(ifindex) = ifindex {
                ignore_missing(m.endpoints.remove(&ifindex))?;
            }
            Ok(owned)
        })
    }

    /// Removes FDB entries whose port is not in `live_ifindex` and
    /// neighbours whose (network, address) is not in `live_addr`; returns how
    /// many went.
    pub fn remove_unowned(
        &self,
        live_ifindex: &std::collections::BTreeSet<u32>,
        live_addr: &std::collections::BTreeSet<(u32, u32)>,
    ) -> Result<usize> {
        self.with_maps(|m| {
            let dead: Vec<FdbKey> = m
                .fdb
                .iter()
                .filter_map(|e| e.ok())
                .filter(|(_, v)| !live_ifindex.contains(&v.ifindex))
                .map(|(k, _)| k)
                .collect();
            for k in &dead {
                ignore_missing(m.fdb.remove(k))?;
            }
            let stale: Vec<NeighbourKey> = m
                .neighbours
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !live_addr.contains(&(k.net_id, k.ip)))
                .collect();
            for k in &stale {
                ignore_missing(m.neighbours.remove(k))?;
            }
            Ok(dead.len() + stale.len())
        })
    }

    /// The IPv6 side of an endpoint (dual-stack networks), known before any
    /// program is attached, like [`Self::add_endpoint`].
    pub fn add_endpoint6(&self, ifindex: u32, ep6: &Endpoint6) -> Result<()> {
        self.with_maps(|m| Ok(m.endpoints6.insert(ifindex, ep6, 0)?))
    }

    /// Its IPv6 neighbour entries (address and link-local): others' ND
    /// solicitations for it are answered from then on.
    pub fn publish_endpoint6(&self, net_id: u32, ep6: &Endpoint6, mac: [u8; 6]) -> Result<()> {
        let neighbour = Neighbour { mac, _pad: [0; 2] };
        self.with_maps(|m| {
            for ip6 in [ep6.ip6, ep6.link_local] {
                m.neighbours6
                    .insert(Neighbour6Key { net_id, ip6 }, neighbour, 0)?;
            }
            Ok(())
        })
    }

    /// Removes the IPv6 entries of an endpoint: the neighbours only while
    /// they still name its MAC (an address is reused once it is free).
    pub fn remove_endpoint6(
        &self,
        ifindex: Option<u32>,
        net_id: u32,
        ep6: &Endpoint6,
        mac: [u8; 6],
    ) -> Result<()> {
        self.with_maps(|m| {
            for ip6 in [ep6.ip6, ep6.link_local] {
                let key = Neighbour6Key { net_id, ip6 };
                match m.neighbours6.get(&key, 0) {
                    Ok(n) if n.mac == mac => ignore_missing(m.neighbours6.remove(&key))?,
                    Ok(_) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(ifindex) = ifindex {
                ignore_missing(m.endpoints6.remove(&ifindex))?;
            }
            Ok(())
        })
    }

    /// A dual-stack network's IPv6 side: subnet first (the isolation check
    /// never sees the network without it), then the gateway.
    pub fn set_network6(&self, net_id: u32, subnet: ([u8; 16], u8), net: &Network6) -> Result<()> {
        self.with_maps(|m| {
            m.subnets6
                .insert(&Key::new(u32::from(subnet.1), subnet.0), net_id, 0)?;
            m.networks6.insert(net_id, net, 0)?;
            Ok(())
        })
    }

    pub fn remove_network6(&self, net_id: u32, subnet: ([u8; 16], u8)) -> Result<()> {
        self.with_maps(|m| {
            ignore_missing(m.networks6.remove(&net_id))?;
            ignore_missing(m.subnets6.remove(&Key::new(u32::from(subnet.1), subnet.0)))?;
            Ok(())
        })
    }

    /// [`Self::remove_unowned`] for IPv6: endpoint entries of a dead port and
    /// neighbours whose (network, address) no live endpoint has (its address
    /// or link-local one); returns how many went.
    pub fn remove_unowned6(
        &self,
        live_ifindex: &std::collections::BTreeSet<u32>,
        live_addr: &std::collections::BTreeSet<(u32, [u8; 16])>,
    ) -> Result<usize> {
        self.with_maps(|m| {
            let dead: Vec<u32> = m
                .endpoints6
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !live_ifindex.contains(k))
                .collect();
            for k in &dead {
                ignore_missing(m.endpoints6.remove(k))?;
            }
            let stale: Vec<Neighbour6Key> = m
                .neighbours6
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !live_addr.contains(&(k.net_id, k.ip6)))
                .collect();
            for k in &stale {
                ignore_missing(m.neighbours6.remove(k))?;
            }
            Ok(dead.len() + stale.len())
        })
    }

    pub fn endpoints(&self) -> Result<Vec<(u32, EndpointEntry)>> {
        self.with_maps(|m| Ok(m.endpoints.iter().collect::<Result<_, _>>()?))
    }

    /// Adds or updates a network; the subnet trie entry comes first so the
    /// isolation check never sees a network without its subnet.
    pub fn set_network(&self, net_id: u32, net: &NetworkEntry) -> Result<()> {
        self.with_maps(|m| {
            m.subnets
                .insert(&Key::new(net.prefix_len, net.subnet), net_id, 0)?;
            m.networks.insert(net_id, net, 0)?;
            Ok(())
        })
    }

    pub fn network(&self, net_id: u32) -> Result<Option<NetworkEntry>> {
        self.with_maps(|m| match m.networks.get(&net_id, 0) {
            Ok(n) => Ok(Some(n)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        })
    }

    pub fn remove_network(&self, net_id: u32, net: &NetworkEntry) -> Result<()> {
        self.with_maps(|m| {
            ignore_missing(m.networks.remove(&net_id))?;
            ignore_missing(m.subnets.remove(&Key::new(net.prefix_len, net.subnet)))?;
            for index in 0..MAX_FLOOD_PORTS {
                ignore_missing(m.flood_ports.remove(&FloodKey { net_id, index }))?;
            }
            Ok(())
        })
    }

    /// Rewrites the broadcast ports of a network (the first MAX_FLOOD_PORTS).
    pub fn set_flood_ports(&self, net_id: u32, ports: &[FdbEntry]) -> Result<()> {
        let Some(mut net) = self.network(net_id)? else {
            return Ok(());
        };
        let ports = &ports[..ports.len().min(MAX_FLOOD_PORTS as usize)];
        self.with_maps(|m| {
            for (index, port) in ports.iter().enumerate() {
                let key = FloodKey {
                    net_id,
                    index: index as u32,
                };
                m.flood_ports.insert(key, port, 0)?;
            }
            // The program reads only the first `flood_ports`; past them,
            // only the slots the previous list used hold anything.
            let before = net.flood_ports.min(MAX_FLOOD_PORTS);
            net.flood_ports = ports.len() as u32;
            m.networks.insert(net_id, net, 0)?;
            for index in ports.len() as u32..before {
                ignore_missing(m.flood_ports.remove(&FloodKey { net_id, index }))?;
            }
            Ok(())
        })
    }

    /// Installs a compiled rule set as one step: it is written into the
    /// idle generation map, then `POLICY_GEN` is flipped to it, so no packet
    /// is judged against a half-written set.
    pub fn set_policy(
        &self,
        entries: &std::collections::BTreeMap<PolicyKey, PolicyValue>,
    ) -> Result<()> {
        self.with_maps(|m| {
            let live = m.policy_gen.get(&0, 0)?;
            let idle = 1 - live.min(1);
            let map = &mut m.policy[idle as usize];
            let stale: Vec<PolicyKey> = map.keys().collect::<Result<_, _>>()?;
            for k in stale {
                if !entries.contains_key(&k) {
                    ignore_missing(map.remove(&k))?;
                }
            }
            for (k, v) in entries {
                map.insert(k, v, 0)?;
            }
            m.policy_gen.set(0, idle, 0)?;
            Ok(())
        })
    }

    /// Connections (conntrack entries) for which `doomed` holds are forgotten:
    /// their next packet is judged as a new connection.
    pub fn flush_conntrack(&self, doomed: impl Fn(&CtKey, &CtValue) -> bool) -> Result<usize> {
        self.with_maps(|m| {
            let gone: Vec<(CtKey, u32)> = m
                .conntrack
                .iter()
                .filter_map(|e| e.ok())
                .filter(|(k, v)| doomed(k, v))
                .map(|(k, v)| (k, v.owner))
                .collect();
            // The openers are credited for what this removes (the programs
            // credit what they remove themselves).
            let mut credit = std::collections::BTreeMap::<u32, u64>::new();
            for (k, owner) in &gone {
                if removed(m.conntrack.remove(k))? {
                    *credit.entry(*owner).or_default() += 1;
                }
            }
            for (slot, n) in credit {
                let released = m.ct_released.get(&slot, 0)?;
                m.ct_released.set(slot, released.wrapping_add(n), 0)?;
            }
            Ok(gone.len())
        })
    }

    /// New connections a rule let through (allow) or packets it dropped (deny).
    pub fn rule_hits(&self, rule: u32) -> Result<u64> {
        self.with_maps(|m| Ok(m.rule_hits.get(&rule, 0)?.iter().sum()))
    }

    pub fn reset_rule_hits(&self, rules: &[u32]) -> Result<()> {
        self.with_maps(|m| {
            for rule in rules {
                let zero = PerCpuValues::try_from(vec![0u64; m.cpus])?;
                m.rule_hits.set(*rule, zero, 0)?;
            }
            Ok(())
        })
    }

    /// Sets what each endpoint slot in `slots` is charged to the entries it
    /// owns in the table: heals a charge that a crash between removing
    /// entries and crediting them left behind. Entries the programs add or
    /// remove meanwhile may leave it one off each, until the next recount.
    pub fn recount_conntrack(&self, slots: &std::collections::BTreeSet<u32>) -> Result<()> {
        self.with_maps(|m| {
            let mut owned = std::collections::BTreeMap::<u32, u64>::new();
            for (_, v) in m.conntrack.iter().filter_map(|e| e.ok()) {
                *owned.entry(v.owner).or_default() += 1;
            }
            for slot in slots {
                let charged = m.ct_charged.get(slot, 0)?;
                let n = owned.get(slot).copied().unwrap_or(0);
                m.ct_released.set(*slot, charged.wrapping_sub(n), 0)?;
            }
            Ok(())
        })
    }

    /// Conntrack entries endpoint `slot` has open (charged to its quota).
    pub fn conntrack_use(&self, slot: u32) -> Result<u64> {
        self.with_maps(|m| {
            let charged = m.ct_charged.get(&slot, 0)?;
            let released = m.ct_released.get(&slot, 0)?;
            Ok((charged.wrapping_sub(released) as i64).max(0) as u64)
        })
    }

    /// Counters of one endpoint slot, summed over CPUs.
    pub fn counters(&self, slot: u32) -> Result<EndpointCounters> {
        self.with_maps(|m| Ok(EndpointCounters::sum(m.ep_counters.get(&slot, 0)?.iter())))
    }

    /// Drops per reason, summed over CPUs.
    pub fn drop_counters(&self) -> Result<Vec<(DropReason, u64)>> {
        self.with_maps(|m| {
            DropReason::ALL
                .iter()
                .map(|r| Ok((*r, m.drop_counters.get(&(*r as u32), 0)?.iter().sum())))
                .collect()
        })
    }

    /// Streams drop events to `f` until it returns false: only those that
    /// happen from now on. The ring keeps what no one read (it is pinned,
    /// and its read position lives in the map), so what it holds when we
    /// open it happened before: it is skipped, and its count returned to
    /// `skipped` first.
    pub async fn watch_drops(
        &self,
        skipped: impl FnOnce(usize),
        mut f: impl FnMut(DropEvent) -> bool,
    ) -> Result<()> {
        let mut ring = RingBuf::try_from(open_map(&self.paths, maps::DROP_EVENTS)?)?;
        let mut stale = 0;
        while ring.next().is_some() {
            stale += 1;
        }
        skipped(stale);
        // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for
        // as long as it is registered.
        let mut fd = unsafe { tokio::io::unix::AsyncFd::register(ring) }
            .map_err(|e| anyhow!("watching the drop ring buffer: {e}"))?;
        loop {
            let mut guard = fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() >= std::mem::size_of::<DropEvent>() {
                    // SAFETY: the datapath writes DropEvents; read_unaligned
                    // copes with the ring's 8-byte alignment.
                    let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) };
                    if !f(ev) {
                        return Ok(());
                    }
                }
            }
            guard.clear_ready();
        }
    }
}

fn fdb_key(ep: &EndpointEntry) -> FdbKey {
    FdbKey {
        net_id: ep.net_id,
        mac: ep.mac,
        _pad: [0; 2],
    }
}

fn neighbour_key(ep: &EndpointEntry) -> NeighbourKey {
    NeighbourKey {
        net_id: ep.net_id,
        ip: ep.ip,
    }
}

/// Whether a removal removed something (false: it was gone already).
fn removed(r: Result<(), MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<()> {
    removed(r).map(drop)
}
