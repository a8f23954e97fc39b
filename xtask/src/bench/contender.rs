//! The contenders, each built in a throw-away host of its own with the
//! same names and addresses: sandboxes `bench-a` (10.90.0.2) and `bench-b`
//! (10.90.0.3) on 10.90.0.0/16, gateway 10.90.0.1. bpfnet, linux-bridge and
//! direct-veth also carry an IPv6 pair (fd42:90::2 → fd42:90::3, see
//! [`Six`]).
use std::{
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use super::{
    host::{Host, Proc, CMD_TIMEOUT},
    traffic::{self, udp_frame, udp_frame6, Pair, UdpResult},
};

pub const NET: &str = "benchnet";
pub const SUBNET: &str = "10.90.0.0/16";
pub const GATEWAY: &str = "10.90.0.1";
pub const A: &str = "bench-a";
pub const B: &str = "bench-b";
pub const IP_A: [u8; 4] = [10, 90, 0, 2];
pub const IP_B: [u8; 4] = [10, 90, 0, 3];
/// The IPv6 pair's /64 and addresses (every contender that has one).
pub const SUBNET6: &str = "fd42:90::/64";
const IP6_B_STR: &str = "fd42:90::3";
pub const IP6_A: Ipv6Addr = Ipv6Addr::new(0xfd42, 0x90, 0, 0, 0, 0, 0, 2);
pub const IP6_B: Ipv6Addr = Ipv6Addr::new(0xfd42, 0x90, 0, 0, 0, 0, 0, 3);
/// bpfnet's dual-stack network and its pair: apart from the IPv4 pair, so
/// that the IPv4 figures (set-up times above all) stay those of an
/// IPv4-only network, as for the other contenders.
const NET6: &str = "benchnet6";
const NET6_SUBNET4: &str = "10.91.0.0/24";
const A6: &str = "bench-a6";
const B6: &str = "bench-b6";
const NETAVARK: &str = "/usr/lib/podman/netavark";
const NETAVARK_BRIDGE: &str = "nvbench0";
const CNI_BRIDGE: &str = "cnibench0";
const CNI_PATH: &str = "/usr/lib/cni";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bpfnet,
    /// bpfnet's topology with the redirect-only program in front (see
    /// `minimal`): the ceiling of the design.
    Minimal,
    LinuxBridge,
    Netavark,
    /// The CNI bridge plugin 1.1 with host-local IPAM (+ the loopback
    /// plugin, as a runtime calls it): set-up and teardown only.
    CniBridge,
    DirectVeth,
}

impl Kind {
    /// direct-veth stays last: the scale runs leave it out by popping it.
    pub const ALL: [Kind; 6] = [
        Kind::Bpfnet,
        Kind::Minimal,
        Kind::LinuxBridge,
        Kind::Netavark,
        Kind::CniBridge,
        Kind::DirectVeth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bpfnet => "bpfnet",
            Kind::Minimal => "minimal-prog",
            Kind::LinuxBridge => "linux-bridge",
            Kind::Netavark => "netavark",
            Kind::CniBridge => "cni-bridge",
            Kind::DirectVeth => "direct-veth",
        }
    }

    /// Contenders measured with traffic (the CNI plugin only for set-up).
    pub fn has_traffic(self) -> bool {
        self != Kind::CniBridge
    }

    /// Contenders that have sandboxes to set up (direct-veth is two ip
    /// calls; minimal-prog sets up as bpfnet does).
    pub fn has_setup(self) -> bool {
        !matches!(self, Kind::DirectVeth | Kind::Minimal)
    }

    /// Contenders measured over IPv6 too.
    pub fn has_ipv6(self) -> bool {
        matches!(self, Kind::Bpfnet | Kind::LinuxBridge | Kind::DirectVeth)
    }
}

/// The IPv6 pair of a contender: IP6_A in `a` → IP6_B in `b` on one /64.
/// bpfnet: `bench-a6`/`bench-b6` on the dual-stack network `benchnet6`
/// (addresses, routes and neighbour discovery are bpfnet's). linux-bridge
/// and direct-veth: the IPv4 pair's own eth0s with bench-made addresses
/// (`nodad`), since the linux-bridge driver has no IPv6: the same kernel
/// bridge (and br_netfilter) as the IPv4 figures, neighbour discovery done
/// by the two sandboxes' kernels across it.
pub struct Six {
    a: &'static str,
    b: &'static str,
    mac_a: [u8; 6],
    mac_b: [u8; 6],
    pid_a: u32,
    pid_b: u32,
    /// The pair's own sleepers (bpfnet); the others use the IPv4 pair's.
    _sleepers: Vec<Proc>,
}

pub fn ip_str(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {s:?}"))?;
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {s:?}"))
}

/// Address of the i-th extra sandbox (scale and set-up runs): 10.90.1.10 up.
pub fn extra_ip(i: usize) -> String {
    format!("10.90.{}.{}", 1 + i / 200, 10 + i % 200)
}

pub fn extra_name(i: usize) -> String {
    format!("s{i:04}")
}

/// The namespace published ports are reached from, and the host address
/// it dials.
const OUTSIDE: &str = "bench-outside";
const OUTSIDE_HOST_IP: &str = "198.51.100.1";

pub struct Contender {
    pub kind: Kind,
    pub host: Host,
    bin: PathBuf,
    pub mac_a: [u8; 6],
    pub mac_b: [u8; 6],
    sleeper_a: Proc,
    sleeper_b: Proc,
    /// In the outside netns (bpfnet and linux-bridge only).
    sleeper_out: Option<Proc>,
    /// Extra networks made by the network-scale run.
    pub extra_networks: usize,
    /// The IPv6 pair (see [`Six`]), when built.
    six: Option<Six>,
}

impl Contender {
    /// Builds the contender; `ipv6`: with its IPv6 pair, if it has one.
    pub fn build(kind: Kind, base: &Path, bin: &Path, ipv6: bool) -> Result<Contender> {
        let host = Host::start(kind.name(), base)?;
        let (a, b) = (ip_str(IP_A), ip_str(IP_B));
        match kind {
            Kind::Bpfnet | Kind::Minimal | Kind::LinuxBridge => {
                let driver = if kind == Kind::LinuxBridge {
                    "linux-bridge"
                } else {
                    "bridge"
                };
                let bin = bin.to_str().context("bpfnet path is not UTF-8")?;
                host.run(&[
                    bin,
                    "network",
                    "create",
                    "-d",
                    driver,
                    "--subnet",
                    SUBNET,
                    "--gateway",
                    GATEWAY,
                    NET,
                ])?;
                for (name, ip) in [(A, &a), (B, &b)] {
                    let mut args =
                        vec![bin, "create", "--name", name, "--network", NET, "--ip", ip];
                    if name == B && kind != Kind::Minimal {
                        // B's iperf3 port, published on the host's address.
                        args.extend(["-p", "5201:5201"]);
                    }
                    host.run(&args)?;
                }
                if kind != Kind::Minimal {
                    // The outside: a namespace whose eth0 faces the host's
                    // OUTSIDE_HOST_IP, with no route to the sandboxes.
                    for cmd in [
                        format!("ip netns add {OUTSIDE}"),
                        format!("ip link add up0 type veth peer name eth0 netns {OUTSIDE}"),
                        format!("ip addr add {OUTSIDE_HOST_IP}/24 dev up0"),
                        "ip link set up0 up".to_string(),
                        format!("ip -n {OUTSIDE} addr add 198.51.100.2/24 dev eth0"),
                        format!("ip -n {OUTSIDE} link set eth0 up"),
                        format!("ip -n {OUTSIDE} link set lo up"),
                    ] {
                        host.run(&cmd.split(' ').collect::<Vec<_>>())?;
                    }
                }
                if kind == Kind::Minimal {
                    let (va, vb) = (host_veth(&host, A)?, host_veth(&host, B)?);
                    let xtask = std::env::current_exe().context("the xtask binary")?;
                    let obj = super::minimal::object()?;
                    host.run(&[
                        xtask.to_str().context("xtask path is not UTF-8")?,
                        "bench-attach-minimal",
                        obj.to_str().context("object path is not UTF-8")?,
                        &format!("{va}={vb}"),
                        &format!("{vb}={va}"),
                    ])?;
                }
            }
            Kind::Netavark => {
                for (name, ip) in [(A, &a), (B, &b)] {
                    host.run(&["ip", "netns", "add", name])?;
                    netavark(&host, "setup", name, ip)?;
                }
            }
            Kind::CniBridge => {
                // host-local hands out .2 then .3: bench-a and bench-b.
                for name in [A, B] {
                    host.run(&["ip", "netns", "add", name])?;
                    cni(&host, "ADD", name)?;
                }
            }
            Kind::DirectVeth => {
                host.run(&["ip", "netns", "add", A])?;
                host.run(&["ip", "netns", "add", B])?;
                host.run(&[
                    "ip",
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    A,
                    "address",
                    "02:42:0a:5a:00:02",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    B,
                    "address",
                    "02:42:0a:5a:00:03",
                ])?;
                for (name, ip) in [(A, &a), (B, &b)] {
                    let cidr = format!("{ip}/16");
                    host.run(&["ip", "-n", name, "addr", "add", &cidr, "dev", "eth0"])?;
                    host.run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
                    host.run(&["ip", "-n", name, "link", "set", "eth0", "up"])?;
                }
                // The generator's own sink (see traffic::generator_sink).
                host.run(&[
                    "ip", "-n", A, "link", "add", "gsink0", "type", "veth", "peer", "name",
                    "gsink1",
                ])?;
                host.run(&["ip", "-n", A, "link", "set", "gsink0", "up"])?;
                host.run(&["ip", "-n", A, "link", "set", "gsink1", "up"])?;
            }
        }
        let mac = |s: &str| -> Result<[u8; 6]> {
            parse_mac(
                &host
                    .exec(s, &["cat", "/sys/class/net/eth0/address"])?
                    .stdout,
            )
        };
        let (mac_a, mac_b) = (mac(A)?, mac(B)?);
        let sleeper_a = host.spawn_in(A, &["sleep", "infinity"])?;
        let sleeper_b = host.spawn_in(B, &["sleep", "infinity"])?;
        let sleeper_out = match kind {
            Kind::Bpfnet | Kind::LinuxBridge => {
                Some(host.spawn_in(OUTSIDE, &["sleep", "infinity"])?)
            }
            _ => None,
        };
        let mut c = Contender {
            kind,
            host,
            bin: bin.to_path_buf(),
            mac_a,
            mac_b,
            sleeper_a,
            sleeper_b,
            sleeper_out,
            extra_networks: 0,
            six: None,
        };
        c.wait_sleepers(&[c.sleeper_a.pid(), c.sleeper_b.pid()])?;
        c.check_path()?;
        if ipv6 && kind.has_ipv6() {
            c.six = Some(c.build_six()?);
            c.check_path6()?;
        }
        Ok(c)
    }

    fn build_six(&self) -> Result<Six> {
        let (a6, b6) = (IP6_A.to_string(), IP6_B.to_string());
        if self.kind == Kind::Bpfnet {
            let bin = self.bin()?;
            self.host.run(&[
                bin,
                "network",
                "create",
                "-d",
                "bridge",
                "--ipv6",
                "--subnet",
                NET6_SUBNET4,
                "--subnet",
                SUBNET6,
                NET6,
            ])?;
            for (name, ip6) in [(A6, &a6), (B6, &b6)] {
                self.host.run(&[
                    bin,
                    "create",
                    "--name",
                    name,
                    "--network",
                    NET6,
                    "--ip6",
                    ip6,
                ])?;
            }
            let mac = |s: &str| -> Result<[u8; 6]> {
                parse_mac(
                    &self
                        .host
                        .exec(s, &["cat", "/sys/class/net/eth0/address"])?
                        .stdout,
                )
            };
            let sleepers = vec![
                self.host.spawn_in(A6, &["sleep", "infinity"])?,
                self.host.spawn_in(B6, &["sleep", "infinity"])?,
            ];
            let (pid_a, pid_b) = (sleepers[0].pid(), sleepers[1].pid());
            self.wait_sleepers(&[pid_a, pid_b])?;
            return Ok(Six {
                a: A6,
                b: B6,
                mac_a: mac(A6)?,
                mac_b: mac(B6)?,
                pid_a,
                pid_b,
                _sleepers: sleepers,
            });
        }
        // bpfnet's linux-bridge driver left IPv6 off in its sandboxes
        // (an IPv4-only network); the direct veth pair has it on.
        for (name, ip6) in [(A, &a6), (B, &b6)] {
            for (key, value) in [
                ("accept_dad", "0"),
                ("accept_ra", "0"),
                ("disable_ipv6", "0"),
            ] {
                self.host.exec(
                    name,
                    &[
                        "sysctl",
                        "-q",
                        "-w",
                        &format!("net.ipv6.conf.eth0.{key}={value}"),
                    ],
                )?;
            }
            let cidr = format!("{ip6}/64");
            self.host.run(&[
                "ip", "-n", name, "addr", "add", &cidr, "dev", "eth0", "nodad",
            ])?;
        }
        Ok(Six {
            a: A,
            b: B,
            mac_a: self.mac_a,
            mac_b: self.mac_b,
            pid_a: self.sleeper_a.pid(),
            pid_b: self.sleeper_b.pid(),
            _sleepers: Vec::new(),
        })
    }

    /// Removes the IPv6 pair before the scale runs (bpfnet's are two more
    /// sandboxes, which the scale runs' counts leave out).
    pub fn drop_six(&mut self) -> Result<()> {
        if self.six.take().is_some() && self.kind == Kind::Bpfnet {
            let bin = self.bin()?;
            self.host.run(&[bin, "rm", "-f", A6, B6])?;
            self.host.run(&[bin, "network", "rm", NET6])?;
        }
        Ok(())
    }

    /// The sleepers must have entered their sandboxes before /proc/PID/net
    /// means anything.
    fn wait_sleepers(&self, pids: &[u32]) -> Result<()> {
        let host_ns = std::fs::read_link(format!("/proc/{}/ns/net", pids[0]));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ok = pids.iter().all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "[{}] sleepers did not start in the sandboxes ({host_ns:?})",
                    self.kind.name()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The IPv6 pair's A → B answers a ping -6 (also fills neighbour
    /// tables and bridge FDBs). Nothing to check without a pair.
    pub fn check_path6(&self) -> Result<()> {
        let Some(six) = &self.six else {
            return Ok(());
        };
        let b = IP6_B.to_string();
        if self.pings(six.a, &["-6"], &b)? {
            return Ok(());
        }
        bail!(
            "[{}] {} cannot ping {} ({b}): the IPv6 pair is not set up right",
            self.kind.name(),
            six.a,
            six.b
        )
    }

    /// The IPv6 pair, when the contender has one.
    pub fn pair6(&self) -> Option<Pair<'_>> {
        let six = self.six.as_ref()?;
        Some(Pair {
            host: &self.host,
            a: six.a,
            b: six.b,
            pid_a: six.pid_a,
            pid_b: six.pid_b,
            ip_b: IP6_B_STR,
            dial: IP6_B_STR,
        })
    }

    /// UDP flood of the smallest IPv6 frames over the IPv6 pair.
    pub fn udp_flood6(&self, secs: f64) -> Result<UdpResult> {
        let (p, six) = self
            .pair6()
            .zip(self.six.as_ref())
            .with_context(|| format!("{} has no IPv6 pair", self.kind.name()))?;
        let frame = udp_frame6(six.mac_a, six.mac_b, IP6_A, IP6_B);
        traffic::udp_flood(&p, frame, IpAddr::V6(IP6_B), secs)
    }

    /// A → B answers a ping (also fills neighbour tables and bridge FDBs).
    pub fn check_path(&self) -> Result<()> {
        let b = ip_str(IP_B);
        if self.pings(A, &[], &b)? {
            return Ok(());
        }
        bail!(
            "[{}] {A} cannot ping {B} ({b}): the contender is not set up right",
            self.kind.name()
        )
    }

    /// Whether `from` gets an answer to one of three pings of `to`.
    fn pings(&self, from: &str, family: &[&str], to: &str) -> Result<bool> {
        let mut args = vec!["ip", "netns", "exec", from, "ping"];
        args.extend_from_slice(family);
        args.extend_from_slice(&["-n", "-q", "-c", "1", "-W", "1", to]);
        for _ in 0..3 {
            if self
                .host
                .run_full(&args, None, Duration::from_secs(5))?
                .code
                == 0
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn pair(&self) -> Pair<'_> {
        Pair {
            host: &self.host,
            a: A,
            b: B,
            pid_a: self.sleeper_a.pid(),
            pid_b: self.sleeper_b.pid(),
            ip_b: "10.90.0.3",
            dial: "10.90.0.3",
        }
    }

    /// From the outside netns to B's port published on the host's address
    /// (bpfnet's and the linux-bridge driver's nftables DNAT).
    pub fn published_pair(&self) -> Option<Pair<'_>> {
        let outside = self.sleeper_out.as_ref()?;
        Some(Pair {
            host: &self.host,
            a: OUTSIDE,
            b: B,
            pid_a: outside.pid(),
            pid_b: self.sleeper_b.pid(),
            ip_b: "10.90.0.3",
            dial: OUTSIDE_HOST_IP,
        })
    }

    /// UDP 64-byte flood A → B.
    pub fn udp_flood(&self, secs: f64) -> Result<UdpResult> {
        let frame = udp_frame(self.mac_a, self.mac_b, IP_A, IP_B);
        traffic::udp_flood(&self.pair(), frame, IpAddr::from(IP_B), secs)
    }

    pub fn pid_a(&self) -> u32 {
        self.sleeper_a.pid()
    }

    fn bin(&self) -> Result<&str> {
        self.bin.to_str().context("bpfnet path is not UTF-8")
    }

    /// Creates one sandbox on the bench network and connects it; returns the
    /// wall time of the create+connect call (netavark: of `setup` alone,
    /// its netns is made beforehand, untimed).
    pub fn add_sandbox(&self, name: &str, ip: &str) -> Result<Duration> {
        match self.kind {
            Kind::Bpfnet | Kind::LinuxBridge => {
                let bin = self.bin()?;
                let t = Instant::now();
                self.host
                    .run(&[bin, "create", "--name", name, "--network", NET, "--ip", ip])?;
                Ok(t.elapsed())
            }
            Kind::Netavark => {
                self.host.run(&["ip", "netns", "add", name])?;
                let t = Instant::now();
                netavark(&self.host, "setup", name, ip)?;
                Ok(t.elapsed())
            }
            Kind::CniBridge => {
                self.host.run(&["ip", "netns", "add", name])?;
                let t = Instant::now();
                cni(&self.host, "ADD", name)?;
                Ok(t.elapsed())
            }
            Kind::DirectVeth | Kind::Minimal => {
                bail!("{} has no sandbox set-up of its own", self.kind.name())
            }
        }
    }

    /// Removes extra sandboxes one by one (the network and the namespace
    /// of each, as `bpfnet rm` does); returns each one's wall time.
    pub fn remove_sandboxes(&self, names: &[(String, String)]) -> Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(names.len());
        for (n, ip) in names {
            let t = Instant::now();
            match self.kind {
                Kind::Bpfnet | Kind::LinuxBridge => {
                    self.host.run(&[self.bin()?, "rm", "-f", n])?;
                }
                Kind::Netavark => {
                    netavark(&self.host, "teardown", n, ip)?;
                    self.host.run(&["ip", "netns", "del", n])?;
                }
                Kind::CniBridge => {
                    cni(&self.host, "DEL", n)?;
                    self.host.run(&["ip", "netns", "del", n])?;
                }
                Kind::DirectVeth | Kind::Minimal => {}
            }
            times.push(t.elapsed());
        }
        Ok(times)
    }

    /// Adds one more (empty) network of the same driver.
    pub fn add_network(&mut self) -> Result<()> {
        let k = self.extra_networks;
        let subnet = format!("10.{}.{}.0/24", 100 + k / 256, k % 256);
        let name = format!("xnet{k:04}");
        let driver = match self.kind {
            Kind::Bpfnet => "bridge",
            Kind::LinuxBridge => "linux-bridge",
            _ => bail!("{} has no networks of its own", self.kind.name()),
        };
        let bin = self.bin()?.to_string();
        self.host.run(&[
            &bin, "network", "create", "-d", driver, "--subnet", &subnet, &name,
        ])?;
        self.extra_networks += 1;
        Ok(())
    }

    /// Adds policy rules `from..to` in one `bpfnet policy import`: bench-a →
    /// an extra network (or the bench network when there is none), on TCP
    /// ports the bench never uses. Returns how long the import took.
    pub fn add_policies(&self, from: usize, to: usize) -> Result<Duration> {
        if self.kind != Kind::Bpfnet {
            bail!("{} has no policies", self.kind.name());
        }
        let rules: Vec<serde_json::Value> = (from..to)
            .map(|i| {
                let to = if self.extra_networks > 0 {
                    format!("net:xnet{:04}", i % self.extra_networks)
                } else {
                    format!("net:{NET}")
                };
                json!({ "from": A, "to": to, "port": format!("{}/tcp", 20000 + i % 40000) })
            })
            .collect();
        let input = serde_json::to_vec(&rules)?;
        let bin = self.bin()?;
        let t = std::time::Instant::now();
        self.host.run_full(
            &[bin, "policy", "import", "/dev/stdin"],
            Some(&input),
            Duration::from_secs(120),
        )?;
        Ok(t.elapsed())
    }
}

/// The host-side veth of a sandbox's eth0.
fn host_veth(host: &Host, sandbox: &str) -> Result<String> {
    let peer = host.exec(sandbox, &["cat", "/sys/class/net/eth0/iflink"])?;
    let out = host.sh(&format!(
        "grep -lx {} /sys/class/net/*/ifindex",
        peer.stdout.trim()
    ))?;
    out.stdout
        .lines()
        .next()
        .and_then(|p| p.split('/').nth(4))
        .map(str::to_string)
        .with_context(|| format!("no host veth for {sandbox}"))
}

/// One CNI bridge plugin call (`ADD`/`DEL`) for sandbox `name`, then, on
/// ADD, the loopback plugin (a runtime brings `lo` up that way), inside the
/// host: the bridge and the IPAM files live and die with it.
fn cni(host: &Host, command: &str, name: &str) -> Result<()> {
    let ipam = host.dir.join("cni-ipam");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "bridge",
        "bridge": CNI_BRIDGE,
        "isGateway": true,
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET, "gateway": GATEWAY }]],
            "dataDir": ipam.to_str().context("CNI IPAM path is not UTF-8")?,
        }
    })
    .to_string();
    let netns = format!("/run/netns/{name}");
    let env = |ifname| {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", name),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", CNI_PATH),
        ]
    };
    host.run_env(&["/usr/lib/cni/bridge"], &env("eth0"), conf.as_bytes())
        .with_context(|| format!("CNI bridge {command} {name}"))?;
    if command == "ADD" {
        let lo = r#"{ "cniVersion": "1.0.0", "name": "lo", "type": "loopback" }"#;
        host.run_env(&["/usr/lib/cni/loopback"], &env("lo"), lo.as_bytes())
            .with_context(|| format!("CNI loopback ADD {name}"))?;
    }
    Ok(())
}

/// One netavark 1.4 call (`setup`/`teardown`) for `name` with a static IP on
/// the bench network, inside the host (its bridge, veths and iptables rules
/// live and die there).
fn netavark(host: &Host, verb: &str, name: &str, ip: &str) -> Result<()> {
    let input = json!({
        "container_id": name,
        "container_name": name,
        "networks": { NET: { "interface_name": "eth0", "static_ips": [ip] } },
        "network_info": { NET: {
            "name": NET,
            "id": "b3e0c5c6a1f04e2d9d1f5c3a7e8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b",
            "driver": "bridge",
            "network_interface": NETAVARK_BRIDGE,
            "subnets": [ { "subnet": SUBNET, "gateway": GATEWAY } ],
            "ipv6_enabled": false,
            "internal": false,
            "dns_enabled": false
        } }
    });
    let config = host.dir.join("netavark");
    std::fs::create_dir_all(&config)?;
    let config = config
        .to_str()
        .context("netavark config path is not UTF-8")?;
    let netns = format!("/run/netns/{name}");
    let out = host.run_full(
        &[NETAVARK, "--config", config, verb, &netns],
        Some(input.to_string().as_bytes()),
        CMD_TIMEOUT,
    )?;
    if out.code != 0 {
        bail!(
            "netavark {verb} {name} failed (exit {}): {} {}",
            out.code,
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    Ok(())
}
