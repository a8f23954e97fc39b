//! BPF_PROG_TEST_RUN of the datapath: the real programs, loaded from the
//! object `bpfnet` embeds, judge crafted frames without any traffic between
//! namespaces. A [`ProgRun`] lives in a throw-away [`TestHost`]: its maps are
//! pinned in the host's private bpffs (reached through `/proc/<holder>/root`),
//! the calling thread joins the host's network namespace while it lives (the
//! kernel resolves `__sk_buff.ifindex` of a test run there), and the veth
//! pairs whose ifindexes the endpoints use are created in it.
//!
//! Tests fill the maps directly (an endpoint, a network, a policy entry),
//! run `tc_ingress` or `tc_egress` on a frame and read back the verdict, the
//! frame as the program left it, and the counters.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use bpfnet_common::{
    action, maps, net_flags, progs, CtKey, CtValue, DropEvent, DropReason, Endpoint6,
    EndpointCounters, EndpointEntry, FdbEntry, FdbKey, FloodKey, FragKey, FragPorts, Neighbour,
    Neighbour6Key, NeighbourKey, Network6, NetworkEntry, PolicyKey, PolicyValue,
};

use crate::frames::Mac;
use crate::TestHost;

/// Network flags, for the tests that set them.
pub use net_flags::{FLOOD, ICC_OFF, INTERNAL};

/// TC actions (uapi/linux/pkt_cls.h).
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
/// What `bpf_redirect` and `bpf_redirect_peer` return; the kernel then
/// redirects (not in a test run).
pub const TC_ACT_REDIRECT: i32 = 7;

/// One veth pair of the test host: the host side is where the programs run.
#[derive(Clone, Debug)]
pub struct Port {
    pub host_side: String,
    pub sandbox_side: String,
    pub ifindex: u32,
    pub mac: Mac,
}

/// A network as the maps know it.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub id: u32,
    pub subnet: Ipv4Addr,
    pub prefix_len: u32,
    pub gateway: Ipv4Addr,
    pub flags: u32,
}

/// An endpoint as the maps know it, on port `port`.
#[derive(Clone, Copy, Debug)]
pub struct Ep {
    pub port: usize,
    pub ifindex: u32,
    pub net_id: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// The host-side veth's MAC, as bpfnet sets it.
    pub gw_mac: Mac,
    pub gateway: Ipv4Addr,
    pub slot: u32,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct Run {
    pub action: i32,
    /// The packet as the program left it.
    pub frame: Vec<u8>,
}

/// Joins the calling thread to another network namespace; Drop returns it.
struct NetnsGuard {
    original: OwnedFd,
}

impl NetnsGuard {
    fn enter(path: &str) -> NetnsGuard {
        let original: OwnedFd = fs::File::open("/proc/thread-self/ns/net")
            .expect("open own netns")
            .into();
        let target = fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on an open netns fd; it changes only this thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns {path}: {}", std::io::Error::last_os_error());
        }
        NetnsGuard { original }
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: as in `enter`, back to the namespace the thread came from.
        if unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // A thread left in a test host's netns would judge later tests
            // there: abort rather than go on.
            eprintln!("setns back failed: {}", std::io::Error::last_os_error());
            std::process::abort();
        }
    }
}

/// Typed handles of the datapath's maps, taken once.
pub struct Maps {
    pub endpoints: HashMap<MapData, u32, EndpointEntry>,
    pub fdb: HashMap<MapData, FdbKey, FdbEntry>,
    pub neighbours: HashMap<MapData, NeighbourKey, Neighbour>,
    pub networks: HashMap<MapData, u32, NetworkEntry>,
    pub subnets: LpmTrie<MapData, u32, u32>,
    pub flood_ports: HashMap<MapData, FloodKey, FdbEntry>,
    pub ep_counters: PerCpuArray<MapData, EndpointCounters>,
    pub drop_counters: PerCpuArray<MapData, u64>,
    pub drop_events: RingBuf<MapData>,
    /// The live policy generation (`POLICY_GEN` is 0 in a fresh load).
    pub policy: HashMap<MapData, PolicyKey, PolicyValue>,
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
    pub ct_charged: Array<MapData, u64>,
    pub ct_swept: Array<MapData, u64>,
    pub rule_hits: PerCpuArray<MapData, u64>,
    pub fragments: HashMap<MapData, FragKey, FragPorts>,
    /// IPv6 maps: `None` in an object from before IPv6 (`BNT_DATAPATH_OBJECT`).
    pub endpoints6: Option<HashMap<MapData, u32, Endpoint6>>,
    pub networks6: Option<HashMap<MapData, u32, Network6>>,
    pub neighbours6: Option<HashMap<MapData, Neighbour6Key, Neighbour>>,
    pub subnets6: Option<LpmTrie<MapData, [u8; 16], u32>>,
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Maps {
        fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> T
        where
            T::Error: std::fmt::Debug,
        {
            let map = ebpf
                .take_map(name)
                .unwrap_or_else(|| panic!("map {name} missing from the datapath object"));
            T::try_from(map).unwrap_or_else(|e| panic!("map {name}: {e:?}"))
        }
        fn maybe<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Option<T>
        where
            T::Error: std::fmt::Debug,
        {
            ebpf.map(name)?;
            Some(take(ebpf, name))
        }
        Maps {
            endpoints: take(ebpf, maps::ENDPOINTS),
            fdb: take(ebpf, maps::FDB),
            neighbours: take(ebpf, maps::NEIGHBOURS),
            networks: take(ebpf, maps::NETWORKS),
            subnets: take(ebpf, maps::SUBNETS),
            flood_ports: take(ebpf, maps::FLOOD_PORTS),
            ep_counters: take(ebpf, maps::EP_COUNTERS),
            drop_counters: take(ebpf, maps::DROP_COUNTERS),
            drop_events: take(ebpf, maps::DROP_EVENTS),
            policy: take(ebpf, maps::POLICY_0),
            conntrack: take(ebpf, maps::CONNTRACK),
            ct_charged: take(ebpf, maps::CT_CHARGED),
            ct_swept: take(ebpf, maps::CT_SWEPT),
            rule_hits: take(ebpf, maps::RULE_HITS),
            fragments: take(ebpf, maps::FRAGMENTS),
            endpoints6: maybe(ebpf, maps::ENDPOINTS6),
            networks6: maybe(ebpf, maps::NETWORKS6),
            neighbours6: maybe(ebpf, maps::NEIGHBOURS6),
            subnets6: maybe(ebpf, maps::SUBNETS6),
        }
    }
}

/// The datapath loaded in a throw-away host, ready to run frames through.
/// Fields drop in order: programs and maps, then the thread's netns, then
/// the host.
pub struct ProgRun {
    ebpf: Ebpf,
    pub maps: Maps,
    pub ports: Vec<Port>,
    _netns: NetnsGuard,
    pub host: TestHost,
}

fn ip_u32(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn parse_mac(s: &str) -> Mac {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap_or_else(|_| panic!("bad mac {s}")))
        .collect();
    v.try_into().unwrap_or_else(|_| panic!("bad mac {s}"))
}

impl ProgRun {
    /// A host with `ports` veth pairs (`pr<i>h` / `pr<i>s`, up, no IPv6 so
    /// nothing but the tests' frames crosses them) and the datapath loaded.
    pub fn new(name: &str, ports: usize) -> ProgRun {
        let host = TestHost::new(name);
        let mut script = String::from(
            "set -e; sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ",
        );
        for i in 0..ports {
            script.push_str(&format!(
                "ip link add pr{i}h type veth peer name pr{i}s; ip link set pr{i}h up; ip link set pr{i}s up; "
            ));
        }
        host.sh_ok(&script);
        let root = format!("/proc/{}/root", host.holder_pid());
        let ports: Vec<Port> = (0..ports)
            .map(|i| {
                let host_side = format!("pr{i}h");
                let class = format!("{root}/sys/class/net/{host_side}");
                let read = |f: &str| {
                    fs::read_to_string(format!("{class}/{f}"))
                        .unwrap_or_else(|e| panic!("{class}/{f}: {e}"))
                };
                Port {
                    ifindex: read("ifindex").trim().parse().expect("ifindex"),
                    mac: parse_mac(&read("address")),
                    sandbox_side: format!("pr{i}s"),
                    host_side,
                }
            })
            .collect();
        let pins = format!("{root}/sys/fs/bpf/prog-run");
        fs::create_dir_all(&pins).unwrap_or_else(|e| panic!("mkdir {pins}: {e}"));
        let netns = NetnsGuard::enter(&format!("/proc/{}/ns/net", host.holder_pid()));
        assert!(
            !bpfnet::datapath::DATAPATH_OBJECT.is_empty(),
            "bpfnet was built without its datapath (AYA_BUILD_SKIP); run `cargo build -p bpfnet`"
        );
        // BNT_DATAPATH_OBJECT: another build's object (e.g. main's), to
        // compare per-packet costs.
        let other = std::env::var_os("BNT_DATAPATH_OBJECT")
            .map(|p| fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")));
        let object = other
            .as_deref()
            .unwrap_or(bpfnet::datapath::DATAPATH_OBJECT);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins)
            .load(object)
            .expect("loading the datapath object");
        for name in [progs::TC_INGRESS, progs::TC_EGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} missing"))
                .try_into()
                .expect("a classifier");
            prog.load()
                .unwrap_or_else(|e| panic!("verifying {name}: {e:?}"));
        }
        let maps = Maps::take(&mut ebpf);
        ProgRun {
            ebpf,
            maps,
            ports,
            _netns: netns,
            host,
        }
    }

    /// Adds network `id` (`subnet`/`prefix_len`, gateway = first host address).
    pub fn add_network(&mut self, id: u32, subnet: Ipv4Addr, prefix_len: u32, flags: u32) -> Net {
        let gateway = Ipv4Addr::from(u32::from(subnet) + 1);
        let net = Net {
            id,
            subnet,
            prefix_len,
            gateway,
            flags,
        };
        self.maps
            .subnets
            .insert(&Key::new(prefix_len, ip_u32(subnet)), id, 0)
            .expect("SUBNETS insert");
        self.write_network(&net, 0);
        net
    }

    fn write_network(&mut self, net: &Net, flood_ports: u32) {
        let value = NetworkEntry {
            gateway: ip_u32(net.gateway),
            subnet: ip_u32(net.subnet),
            prefix_len: net.prefix_len,
            flags: net.flags,
            flood_ports,
        };
        self.maps
            .networks
            .insert(net.id, value, 0)
            .expect("NETWORKS insert");
    }

    /// Adds an endpoint with address `ip` on `net` behind port `port`, as
    /// bpfnet does: endpoint, fresh counters, neighbour, FDB entry, and a
    /// broadcast port of its network.
    pub fn add_endpoint(&mut self, net: &Net, port: usize, ip: Ipv4Addr, slot: u32) -> Ep {
        let p = &self.ports[port];
        let ep = Ep {
            port,
            ifindex: p.ifindex,
            net_id: net.id,
            ip,
            mac: crate::frames::mac_of(ip),
            gw_mac: p.mac,
            gateway: net.gateway,
            slot,
        };
        let cpus = aya::util::nr_cpus().expect("nr_cpus");
        self.maps
            .ep_counters
            .set(
                slot,
                PerCpuValues::try_from(vec![EndpointCounters::default(); cpus]).unwrap(),
                0,
            )
            .expect("EP_COUNTERS set");
        let value = EndpointEntry {
            net_id: net.id,
            ip: ip_u32(ip),
            slot,
            mac: ep.mac,
            gw_mac: ep.gw_mac,
            gateway: ip_u32(net.gateway),
            net_flags: net.flags,
        };
        self.maps
            .endpoints
            .insert(ep.ifindex, value, 0)
            .expect("ENDPOINTS insert");
        self.maps
            .neighbours
            .insert(
                NeighbourKey {
                    net_id: net.id,
                    ip: ip_u32(ip),
                },
                Neighbour {
                    mac: ep.mac,
                    _pad: [0; 2],
                },
                0,
            )
            .expect("NEIGHBOURS insert");
        let entry = FdbEntry {
            ifindex: ep.ifindex,
            slot,
        };
        self.maps
            .fdb
            .insert(
                FdbKey {
                    net_id: net.id,
                    mac: ep.mac,
                    _pad: [0; 2],
                },
                entry,
                0,
            )
            .expect("FDB insert");
        let index = self
            .maps
            .networks
            .get(&net.id, 0)
            .expect("network first")
            .flood_ports;
        self.maps
            .flood_ports
            .insert(
                FloodKey {
                    net_id: net.id,
                    index,
                },
                entry,
                0,
            )
            .expect("FLOOD_PORTS insert");
        self.write_network(net, index + 1);
        ep
    }

    /// Makes network `net` dual-stack with `subnet6`/`prefix_len`; returns
    /// its IPv6 gateway (the first address), as bpfnet does.
    pub fn add_network6(&mut self, net: &Net, subnet6: Ipv6Addr, prefix_len: u32) -> Ipv6Addr {
        let gateway6 = Ipv6Addr::from(u128::from(subnet6) + 1);
        self.maps
            .subnets6
            .as_mut()
            .expect("an object with IPv6")
            .insert(&Key::new(prefix_len, subnet6.octets()), net.id, 0)
            .expect("SUBNETS6 insert");
        self.maps
            .networks6
            .as_mut()
            .expect("an object with IPv6")
            .insert(
                net.id,
                Network6 {
                    gateway6: gateway6.octets(),
                },
                0,
            )
            .expect("NETWORKS6 insert");
        gateway6
    }

    /// Gives endpoint `ep` (of a dual-stack network) IPv6 address `ip6`
    /// and its EUI-64 link-local one; returns the link-local address.
    pub fn add_endpoint6(&mut self, ep: &Ep, ip6: Ipv6Addr) -> Ipv6Addr {
        let ll = crate::frames::link_local(ep.mac);
        self.maps
            .endpoints6
            .as_mut()
            .expect("an object with IPv6")
            .insert(
                ep.ifindex,
                Endpoint6 {
                    ip6: ip6.octets(),
                    link_local: ll.octets(),
                },
                0,
            )
            .expect("ENDPOINTS6 insert");
        for a in [ip6, ll] {
            self.maps
                .neighbours6
                .as_mut()
                .expect("an object with IPv6")
                .insert(
                    Neighbour6Key {
                        net_id: ep.net_id,
                        ip6: a.octets(),
                    },
                    Neighbour {
                        mac: ep.mac,
                        _pad: [0; 2],
                    },
                    0,
                )
                .expect("NEIGHBOURS6 insert");
        }
        ll
    }

    /// A policy entry from `from` to `to` for `proto` (0: any) and `dport` (0: any).
    pub fn policy(&mut self, from: &Ep, to: &Ep, proto: u8, dport: u16, rule: u32, allow: bool) {
        let key = PolicyKey {
            src_slot: from.slot,
            dst_slot: to.slot,
            dport,
            proto,
            _pad: 0,
        };
        let value = PolicyValue {
            rule,
            action: if allow { action::ALLOW } else { action::DENY },
        };
        self.maps
            .policy
            .insert(key, value, 0)
            .expect("POLICY_0 insert");
    }

    fn run(&self, prog: &str, ifindex: u32, frame: &[u8]) -> Run {
        let prog: &SchedClassifier = self
            .ebpf
            .program(prog)
            .expect("program")
            .try_into()
            .expect("a classifier");
        // `struct __sk_buff` (uapi/linux/bpf.h) up to `ifindex`, the only
        // field set: len, pkt_type, mark, queue_mapping, protocol,
        // vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex.
        let mut skb = [0u32; 11];
        skb[10] = ifindex;
        let ctx: Vec<u8> = skb.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:?}"));
        out.truncate(result.data_size_out as usize);
        Run {
            action: result.return_value as i32,
            frame: out,
        }
    }

    /// Mean run time of `tc_ingress` (or `tc_egress`) over `repeat` runs
    /// of `frame` on port `ifindex` (BPF_PROG_TEST_RUN's own timing).
    pub fn time(
        &self,
        ingress: bool,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> std::time::Duration {
        let prog: &SchedClassifier = self
            .ebpf
            .program(if ingress {
                progs::TC_INGRESS
            } else {
                progs::TC_EGRESS
            })
            .expect("program")
            .try_into()
            .expect("a classifier");
        let mut skb = [0u32; 11];
        skb[10] = ifindex;
        let ctx: Vec<u8> = skb.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 256];
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:?}"))
        .duration
    }

    /// Runs `tc_ingress` on `frame` as if the sandbox behind `ifindex` sent it.
    pub fn ingress(&self, ifindex: u32, frame: &[u8]) -> Run {
        self.run(progs::TC_INGRESS, ifindex, frame)
    }

    /// Runs `tc_egress` on `frame` as if the host sent it into the sandbox
    /// behind `ifindex`.
    pub fn egress(&self, ifindex: u32, frame: &[u8]) -> Run {
        self.run(progs::TC_EGRESS, ifindex, frame)
    }

    /// The counters of endpoint slot `slot`, summed over CPUs.
    pub fn counters(&self, slot: u32) -> EndpointCounters {
        let per_cpu = self.maps.ep_counters.get(&slot, 0).expect("EP_COUNTERS");
        EndpointCounters::sum(per_cpu.iter())
    }

    /// Drops counted per reason, in `DropReason::ALL` order.
    pub fn drops(&self) -> Vec<u64> {
        DropReason::ALL
            .iter()
            .map(|r| {
                self.maps
                    .drop_counters
                    .get(&(*r as u32), 0)
                    .expect("DROP_COUNTERS")
                    .iter()
                    .sum()
            })
            .collect()
    }

    pub fn rule_hits(&self, rule: u32) -> u64 {
        self.maps
            .rule_hits
            .get(&rule, 0)
            .expect("RULE_HITS")
            .iter()
            .sum()
    }

    /// The drop events queued since the last call.
    pub fn drop_events(&mut self) -> Vec<DropEvent> {
        let mut events = vec![];
        while let Some(item) = self.maps.drop_events.next() {
            assert_eq!(item.len(), std::mem::size_of::<DropEvent>(), "event size");
            // SAFETY: the datapath writes whole DropEvents (size checked);
            // read_unaligned copes with the ring's 8-byte alignment.
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) });
        }
        events
    }

    /// What endpoint `slot` is charged for conntrack entries (nothing in a
    /// test run releases: that is userspace's part).
    pub fn ct_charged(&self, slot: u32) -> u64 {
        self.maps.ct_charged.get(&slot, 0).unwrap()
    }

    pub fn set_ct_charged(&mut self, slot: u32, n: u64) {
        self.maps.ct_charged.set(slot, n, 0).unwrap();
    }

    /// Lets the next program run sweep expired entries (as if no sweep had
    /// run yet).
    pub fn allow_sweep(&mut self) {
        self.maps.ct_swept.set(0, 0, 0).unwrap();
        self.maps.ct_swept.set(1, 0, 0).unwrap();
    }

    /// How long the programs wait after the last sweep before the next (ns;
    /// 0: not set yet, the shortest).
    pub fn sweep_wait(&self) -> u64 {
        self.maps.ct_swept.get(&1, 0).unwrap()
    }

    /// All conntrack entries.
    pub fn conntrack(&self) -> Vec<(CtKey, CtValue)> {
        self.maps.conntrack.iter().map(|e| e.unwrap()).collect()
    }

    /// Writes conntrack entry `key` as it is (aging or adding one).
    pub fn set_conntrack(&mut self, key: CtKey, value: CtValue) {
        self.maps.conntrack.insert(key, value, 0).unwrap();
    }

    /// Fills conntrack with answered TCP connections (live for days) that
    /// endpoint `owner` opened, until it takes no more; returns how many
    /// it took (the kernel's count of a hash map allocated as it fills is
    /// per CPU, so the last few entries below `n` may be refused).
    pub fn fill_conntrack(&mut self, n: u32, owner: u32) -> u32 {
        let value = CtValue {
            rule: 0,
            state: bpfnet_common::ct_state::REPLIED,
            last_seen: monotonic_ns(),
            owner,
            _pad: 0,
        };
        for i in 0..n {
            let key = CtKey {
                src_ip: u32::from_ne_bytes([198, 18, (i >> 16) as u8, (i >> 8) as u8]),
                dst_ip: u32::from_ne_bytes([198, 19, 0, i as u8]),
                sport: 1,
                dport: 2,
                proto: 6,
                _pad: [0; 3],
            };
            match self.maps.conntrack.insert(key, value, 0) {
                Ok(()) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    return i;
                }
                Err(e) => panic!("filling conntrack: {e}"),
            }
        }
        n
    }

    pub fn flush_conntrack(&mut self) {
        for (k, _) in self.conntrack() {
            self.maps.conntrack.remove(&k).unwrap();
        }
    }

    /// Whether conntrack holds `key`.
    pub fn tracked(&self, key: &CtKey) -> Option<CtValue> {
        self.maps.conntrack.get(key, 0).ok()
    }

    /// Packets the sandbox side of port `port` has received.
    pub fn sandbox_rx_packets(&self, port: usize) -> u64 {
        let path = format!(
            "/proc/{}/root/sys/class/net/{}/statistics/rx_packets",
            self.host.holder_pid(),
            self.ports[port].sandbox_side
        );
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .parse()
            .expect("rx_packets")
    }
}

/// The clock of `bpf_ktime_get_ns` (CLOCK_MONOTONIC), in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
