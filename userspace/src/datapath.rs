//! The eBPF datapath seen from userspace: load and pin it, attach it to an
//! endpoint's host-side veth, and keep its maps. Programs, maps and attachments
//! are pinned under `/sys/fs/bpf/bpfnet/v<layout>/`, so forwarding goes on while
//! no bpfnet process runs; later invocations open the pins.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{
        lpm_trie::Key, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf,
    },
    programs::{
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
    EbpfLoader,
};
use bpfnet_common::{
    maps, progs, CtKey, CtValue, DropEvent, DropReason, Endpoint, EndpointCounters, FdbEntry,
    FdbKey, FloodKey, Neighbour, NeighbourKey, Network, PolicyKey, PolicyValue, MAX_FLOOD_PORTS,
};

use crate::paths::Paths;

/// The datapath object built by build.rs (public for the BPF_PROG_TEST_RUN
/// tests, which load it without attaching it anywhere).
pub static DATAPATH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpfnet-datapath"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The two hooks of every endpoint: program name, attach point, pin suffix.
const HOOKS: [(&str, TcAttachType, &str); 2] = [
    (progs::TC_INGRESS, TcAttachType::Ingress, "ingress"),
    (progs::TC_EGRESS, TcAttachType::Egress, "egress"),
];

/// What `load` did, for `bpfnet datapath load` to print.
#[derive(Debug)]
pub struct LoadReport {
    pub programs: Vec<(String, u32)>,
    pub maps: Vec<PathBuf>,
    /// Attachments whose program was replaced in place.
    pub replaced: usize,
}

pub struct Datapath {
    paths: Paths,
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Mounts bpffs at the configured place if nothing is mounted there yet.
fn ensure_bpffs(paths: &Paths) -> Result<()> {
    if is_bpffs(&paths.bpffs) {
        return Ok(());
    }
    std::fs::create_dir_all(&paths.bpffs).ok();
    nix::mount::mount(
        Some("bpf"),
        &paths.bpffs,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        anyhow!(
            "bpffs is not mounted at {} and mounting it failed ({e}); mount it with `mount -t bpf bpf {}`",
            paths.bpffs.display(),
            paths.bpffs.display()
        )
    })
}

/// TCX (Linux 6.6) is how the programs attach.
fn check_kernel() -> Result<()> {
    let v = KernelVersion::current().map_err(|e| anyhow!("reading the kernel version: {e}"))?;
    if v < KernelVersion::new(6, 6, 0) {
        bail!("kernel {v:?} has no TCX; bpfnet needs Linux 6.6 or newer");
    }
    Ok(())
}

/// Removes a pin if it exists. (bpffs refuses names with a '.' with EPERM.)
fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

impl Datapath {
    pub fn is_loaded(paths: &Paths) -> bool {
        HOOKS
            .iter()
            .all(|(name, ..)| paths.progs_dir().join(name).exists())
    }

    /// Loads the programs, reusing pinned maps of the same layout (their
    /// contents survive), atomically replaces the program of every pinned
    /// attachment, and pins the programs. Safe to run again at any time.
    pub fn load(paths: &Paths) -> Result<LoadReport> {
        check_kernel()?;
        ensure_bpffs(paths)?;
        if DATAPATH_OBJECT.is_empty() {
            bail!("this bpfnet was built without its datapath (AYA_BUILD_SKIP); rebuild it with `cargo xtask build-and-load`");
        }
        for dir in [paths.maps_dir(), paths.progs_dir(), paths.links_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(paths.maps_dir())
            .load(DATAPATH_OBJECT)
            .context("loading the datapath object")?;
        let mut report = LoadReport {
            programs: vec![],
            maps: maps::ALL.iter().map(|m| paths.maps_dir().join(m)).collect(),
            replaced: 0,
        };
        for (name, _, suffix) in HOOKS {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the datapath object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifying program {name}"))?;
            for link in pinned_links(paths, suffix)? {
                let pinned = PinnedLink::from_pin(&link)
                    .with_context(|| format!("opening {}", link.display()))?;
                let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
                prog.attach_to_link(link)
                    .with_context(|| format!("replacing the program of a {suffix} attachment"))?;
                report.replaced += 1;
            }
            let pin = paths.progs_dir().join(name);
            let tmp = paths.progs_dir().join(format!("{name}_new"));
            remove_if_exists(&tmp)?;
            prog.pin(&tmp)
                .with_context(|| format!("pinning {}", tmp.display()))?;
            std::fs::rename(&tmp, &pin).with_context(|| format!("pinning {}", pin.display()))?;
            report.programs.push((name.to_string(), prog.info()?.id()));
        }
        Ok(report)
    }

    /// Removes the pins of other map layouts (their attachments go with them).
    /// Call it after the current layout is attached everywhere: TCX runs the
    /// old and the new program side by side until then, so no packet passes
    /// unjudged during a layout change.
    pub fn remove_other_layouts(paths: &Paths) -> Result<Vec<PathBuf>> {
        let mut removed = vec![];
        if let Ok(dir) = std::fs::read_dir(paths.pin_root()) {
            for entry in dir.flatten() {
                if entry.path() != paths.pin_dir() {
                    std::fs::remove_dir_all(entry.path()).with_context(|| {
                        format!("removing pins of an old layout {}", entry.path().display())
                    })?;
                    removed.push(entry.path());
                }
            }
        }
        Ok(removed)
    }

    /// Opens the loaded datapath; loads it first if it is not there.
    pub fn open_or_load(paths: &Paths) -> Result<Self> {
        if !Self::is_loaded(paths) {
            Self::load(paths)?;
        }
        Ok(Datapath {
            paths: paths.clone(),
        })
    }

    /// Opens the loaded datapath, if it is loaded.
    pub fn open(paths: &Paths) -> Option<Self> {
        Self::is_loaded(paths).then(|| Datapath {
            paths: paths.clone(),
        })
    }

    /// Removes every bpfnet pin: programs detach from every veth.
    pub fn unload(paths: &Paths) -> Result<bool> {
        let root = paths.pin_root();
        if !root.exists() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
        Ok(true)
    }

    fn link_pin(&self, ifname: &str, suffix: &str) -> PathBuf {
        self.paths.links_dir().join(format!("{ifname}-{suffix}"))
    }

    /// Attaches both programs to the host-side veth `ifname` (TCX) and pins
    /// the attachments.
    pub fn attach(&self, ifname: &str) -> Result<()> {
        for (name, attach_type, suffix) in HOOKS {
            let mut prog = SchedClassifier::from_pin(self.paths.progs_dir().join(name))
                .with_context(|| format!("opening pinned program {name}"))?;
            let id = prog
                .attach_with_options(
                    ifname,
                    attach_type,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .with_context(|| format!("attaching {name} to {ifname}"))?;
            let link = FdLink::try_from(prog.take_link(id)?)?;
            let pin = self.link_pin(ifname, suffix);
            remove_if_exists(&pin)?;
            link.pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
        }
        Ok(())
    }

    /// Detaches both programs from `ifname`.
    pub fn detach(&self, ifname: &str) -> Result<()> {
        for (.., suffix) in HOOKS {
            let pin = self.link_pin(ifname, suffix);
            remove_if_exists(&pin).with_context(|| format!("removing {}", pin.display()))?;
        }
        Ok(())
    }

    /// Interfaces that have pinned attachments.
    pub fn attached_interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.paths.links_dir())
            .map(|d| {
                d.filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    Some(name.rsplit_once('-')?.0.to_string())
                })
                .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names
    }

    fn map(&self, name: &str) -> Result<Map> {
        let path = self.paths.maps_dir().join(name);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        Ok(Map::from_map_data(data)?)
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> Result<HashMap<MapData, K, V>> {
        Ok(HashMap::try_from(self.map(name)?)?)
    }

    /// Step 1 of adding an endpoint: the datapath knows it (before any
    /// program is attached to it), with fresh counters.
    pub fn add_endpoint(&self, ifindex: u32, ep: &Endpoint) -> Result<()> {
        let mut counters: PerCpuArray<MapData, EndpointCounters> =
            PerCpuArray::try_from(self.map(maps::EP_COUNTERS)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        counters.set(
            ep.slot,
            PerCpuValues::try_from(vec![EndpointCounters::default(); cpus])?,
            0,
        )?;
        self.hash::<u32, Endpoint>(maps::ENDPOINTS)?
            .insert(ifindex, ep, 0)?;
        Ok(())
    }

    /// Step 2: other endpoints of the network can reach it (ARP and FDB).
    pub fn publish_endpoint(&self, ifindex: u32, ep: &Endpoint) -> Result<()> {
        let neighbour = Neighbour {
            mac: ep.mac,
            _pad: [0; 2],
        };
        self.hash::<NeighbourKey, Neighbour>(maps::NEIGHBOURS)?
            .insert(neighbour_key(ep), neighbour, 0)?;
        self.hash::<FdbKey, FdbEntry>(maps::FDB)?.insert(
            fdb_key(ep),
            FdbEntry {
                ifindex,
                slot: ep.slot,
            },
            0,
        )?;
        Ok(())
    }

    /// Removes an endpoint in the reverse order: nobody can reach it, then
    /// it is forgotten. Missing entries are fine.
    pub fn remove_endpoint(&self, ifindex: u32, ep: &Endpoint) -> Result<()> {
        ignore_missing(
            self.hash::<FdbKey, FdbEntry>(maps::FDB)?
                .remove(&fdb_key(ep)),
        )?;
        ignore_missing(
            self.hash::<NeighbourKey, Neighbour>(maps::NEIGHBOURS)?
                .remove(&neighbour_key(ep)),
        )?;
        ignore_missing(
            self.hash::<u32, Endpoint>(maps::ENDPOINTS)?
                .remove(&ifindex),
        )?;
        Ok(())
    }

    /// Removes an endpoint's entries, but the FDB and neighbour entries only
    /// while they are still its own: once an address is free it may have
    /// been given to another endpoint, whose entries have the same keys. The
    /// FDB entry names its port; no FDB entry means nobody has published the
    /// address since. Returns whether they were its own.
    pub fn remove_endpoint_entries(&self, ifindex: Option<u32>, ep: &Endpoint) -> Result<bool> {
        let mut fdb = self.hash::<FdbKey, FdbEntry>(maps::FDB)?;
        let owned = match fdb.get(&fdb_key(ep), 0) {
            Ok(entry) => Some(entry.ifindex) == ifindex,
            Err(MapError::KeyNotFound) => true,
            Err(e) => return Err(e.into()),
        };
        if owned {
            ignore_missing(fdb.remove(&fdb_key(ep)))?;
            ignore_missing(
                self.hash::<NeighbourKey, Neighbour>(maps::NEIGHBOURS)?
                    .remove(&neighbour_key(ep)),
            )?;
        }
        if let Some(ifindex) = ifindex {
            ignore_missing(
                self.hash::<u32, Endpoint>(maps::ENDPOINTS)?
                    .remove(&ifindex),
            )?;
        }
        Ok(owned)
    }

    /// Removes FDB entries whose port is not in `live_ifindex` and
    /// neighbours whose (network, address) is not in `live_addr`; returns how
    /// many went.
    pub fn remove_unowned(
        &self,
        live_ifindex: &std::collections::BTreeSet<u32>,
        live_addr: &std::collections::BTreeSet<(u32, u32)>,
    ) -> Result<usize> {
        let mut fdb = self.hash::<FdbKey, FdbEntry>(maps::FDB)?;
        let dead: Vec<FdbKey> = fdb
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(_, v)| !live_ifindex.contains(&v.ifindex))
            .map(|(k, _)| k)
            .collect();
        for k in &dead {
            ignore_missing(fdb.remove(k))?;
        }
        let mut neighbours = self.hash::<NeighbourKey, Neighbour>(maps::NEIGHBOURS)?;
        let stale: Vec<NeighbourKey> = neighbours
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !live_addr.contains(&(k.net_id, k.ip)))
            .collect();
        for k in &stale {
            ignore_missing(neighbours.remove(k))?;
        }
        Ok(dead.len() + stale.len())
    }

    pub fn endpoints(&self) -> Result<Vec<(u32, Endpoint)>> {
        Ok(self
            .hash::<u32, Endpoint>(maps::ENDPOINTS)?
            .iter()
            .collect::<Result<_, _>>()?)
    }

    /// Adds or updates a network; the subnet trie entry comes first so the
    /// isolation check never sees a network without its subnet.
    pub fn set_network(&self, net_id: u32, net: &Network) -> Result<()> {
        let mut subnets: LpmTrie<MapData, u32, u32> = LpmTrie::try_from(self.map(maps::SUBNETS)?)?;
        subnets.insert(&Key::new(net.prefix_len, net.subnet), net_id, 0)?;
        self.hash::<u32, Network>(maps::NETWORKS)?
            .insert(net_id, net, 0)?;
        Ok(())
    }

    pub fn network(&self, net_id: u32) -> Result<Option<Network>> {
        match self.hash::<u32, Network>(maps::NETWORKS)?.get(&net_id, 0) {
            Ok(n) => Ok(Some(n)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn remove_network(&self, net_id: u32, net: &Network) -> Result<()> {
        ignore_missing(self.hash::<u32, Network>(maps::NETWORKS)?.remove(&net_id))?;
        let mut subnets: LpmTrie<MapData, u32, u32> = LpmTrie::try_from(self.map(maps::SUBNETS)?)?;
        ignore_missing(subnets.remove(&Key::new(net.prefix_len, net.subnet)))?;
        let mut flood = self.hash::<FloodKey, FdbEntry>(maps::FLOOD_PORTS)?;
        for index in 0..MAX_FLOOD_PORTS {
            ignore_missing(flood.remove(&FloodKey { net_id, index }))?;
        }
        Ok(())
    }

    /// Rewrites the broadcast ports of a network (the first MAX_FLOOD_PORTS).
    pub fn set_flood_ports(&self, net_id: u32, ports: &[FdbEntry]) -> Result<()> {
        let Some(mut net) = self.network(net_id)? else {
            return Ok(());
        };
        let ports = &ports[..ports.len().min(MAX_FLOOD_PORTS as usize)];
        let mut flood = self.hash::<FloodKey, FdbEntry>(maps::FLOOD_PORTS)?;
        for (index, port) in ports.iter().enumerate() {
            let key = FloodKey {
                net_id,
                index: index as u32,
            };
            flood.insert(key, port, 0)?;
        }
        net.flood_ports = ports.len() as u32;
        self.hash::<u32, Network>(maps::NETWORKS)?
            .insert(net_id, net, 0)?;
        for index in ports.len() as u32..MAX_FLOOD_PORTS {
            ignore_missing(flood.remove(&FloodKey { net_id, index }))?;
        }
        Ok(())
    }

    /// Installs a compiled rule set as one step: it is written into the
    /// idle generation map, then `POLICY_GEN` is flipped to it, so no packet
    /// is judged against a half-written set.
    pub fn set_policy(
        &self,
        entries: &std::collections::BTreeMap<PolicyKey, PolicyValue>,
    ) -> Result<()> {
        let mut generation: aya::maps::Array<MapData, u32> =
            aya::maps::Array::try_from(self.map(maps::POLICY_GEN)?)?;
        let live = generation.get(&0, 0)?;
        let idle = 1 - live.min(1);
        let mut map = self.hash::<PolicyKey, PolicyValue>(if idle == 0 {
            maps::POLICY_0
        } else {
            maps::POLICY_1
        })?;
        let stale: Vec<PolicyKey> = map.keys().collect::<Result<_, _>>()?;
        for k in stale {
            if !entries.contains_key(&k) {
                ignore_missing(map.remove(&k))?;
            }
        }
        for (k, v) in entries {
            map.insert(k, v, 0)?;
        }
        generation.set(0, idle, 0)?;
        Ok(())
    }

    /// Connections (conntrack entries) for which `doomed` holds are forgotten:
    /// their next packet is judged as a new connection.
    pub fn flush_conntrack(&self, doomed: impl Fn(&CtKey, &CtValue) -> bool) -> Result<usize> {
        let mut ct = self.hash::<CtKey, CtValue>(maps::CONNTRACK)?;
        let gone: Vec<CtKey> = ct
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(k, v)| doomed(k, v))
            .map(|(k, _)| k)
            .collect();
        for k in &gone {
            ignore_missing(ct.remove(k))?;
        }
        Ok(gone.len())
    }

    /// New connections a rule let through (allow) or packets it dropped (deny).
    pub fn rule_hits(&self, rule: u32) -> Result<u64> {
        let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(self.map(maps::RULE_HITS)?)?;
        Ok(map.get(&rule, 0)?.iter().sum())
    }

    pub fn reset_rule_hits(&self, rules: &[u32]) -> Result<()> {
        let mut map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(self.map(maps::RULE_HITS)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for rule in rules {
            map.set(*rule, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    /// Counters of one endpoint slot, summed over CPUs.
    pub fn counters(&self, slot: u32) -> Result<EndpointCounters> {
        let map: PerCpuArray<MapData, EndpointCounters> =
            PerCpuArray::try_from(self.map(maps::EP_COUNTERS)?)?;
        let mut sum = EndpointCounters::default();
        for c in map.get(&slot, 0)?.iter() {
            sum.rx_packets += c.rx_packets;
            sum.rx_bytes += c.rx_bytes;
            sum.tx_packets += c.tx_packets;
            sum.tx_bytes += c.tx_bytes;
            sum.forwarded += c.forwarded;
            sum.to_host += c.to_host;
            sum.dropped += c.dropped;
        }
        Ok(sum)
    }

    /// Drops per reason, summed over CPUs.
    pub fn drop_counters(&self) -> Result<Vec<(DropReason, u64)>> {
        let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(self.map(maps::DROP_COUNTERS)?)?;
        DropReason::ALL
            .iter()
            .map(|r| Ok((*r, map.get(&(*r as u32), 0)?.iter().sum())))
            .collect()
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
        let mut ring = RingBuf::try_from(self.map(maps::DROP_EVENTS)?)?;
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

fn pinned_links(paths: &Paths, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for entry in std::fs::read_dir(paths.links_dir())? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(&format!("-{suffix}")))
        {
            out.push(path);
        }
    }
    Ok(out)
}

fn fdb_key(ep: &Endpoint) -> FdbKey {
    FdbKey {
        net_id: ep.net_id,
        mac: ep.mac,
        _pad: [0; 2],
    }
}

fn neighbour_key(ep: &Endpoint) -> NeighbourKey {
    NeighbourKey {
        net_id: ep.net_id,
        ip: ep.ip,
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
