//! Reaching the world: outbound masquerade, published ports and the guard
//! on what the host forwards into sandboxes, in nftables tables of
//! bpfnet's own: `ip bpfnet` and `ip6 bpfnet`, built by the same code from
//! the same [`Ruleset`] (each table takes the entries of its family).
//!
//! The table is derived from the state like the datapath's policy entries:
//! [`Ruleset::of`] says what it must hold, [`apply`] replaces the whole
//! table in one atomic batch (add, delete, add with every chain and rule),
//! so a crash leaves either the old tables or the new ones (both tables
//! go in one batch), and `gc`/`unload` make them match the state (or remove
//! them) again. Nothing outside the tables is touched, except
//! `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding` (set as Docker
//! sets them, when a network of that family reaches out; put back by
//! `unload`) and `route_localnet` on the host-side interfaces that
//! published ports lead to (127.0.0.1 clients; gone with the interface).
//! IPv6 has no `route_localnet`: `::1` clients are not served.
//!
//! Chains:
//! - `prerouting`, `output` (nat): packets for one of the host's own
//!   addresses (`fib daddr type local`) go to `ports`, one DNAT rule per
//!   published port. The client's source is kept.
//! - `postrouting` (nat): a published port reached from a sandbox (hairpin)
//!   or from 127.0.0.1 is SNATed to a gateway address of its family, so
//!   the reply comes back through the host; what a sandbox sends elsewhere
//!   leaves masqueraded (per network, `enable_ip_masquerade=false` turns it
//!   off).
//! - `forward` (filter): into a bpfnet interface the host forwards only
//!   replies, published ports, what comes from another bpfnet interface
//!   (the datapath judges that) and what is for a network that does not
//!   masquerade (a routed network); the rest (someone routing straight to
//!   a sandbox's address) is dropped.
use std::{
    ffi::{CStr, CString},
    net::{IpAddr, Ipv4Addr},
    path::Path,
    ptr::NonNull,
};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use nftnl::{
    expr::{self, ct::ConntrackStatus, Expression, Register},
    nft_expr, nftnl_sys as sys, Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy,
    ProtoFamily, Rule, Table,
};

use crate::{
    fsutil,
    paths::Paths,
    ports::Proto,
    state::{DriverKind, Endpoint, Network, Sandbox, State},
};

/// The tables' name (families `ip` and `ip6`).
pub const TABLE: &CStr = c"bpfnet";

/// What differs between the two tables: the family, and the sysctl that
/// makes the kernel forward it.
#[derive(Clone, Copy)]
struct Family {
    proto: ProtoFamily,
    forwarding: &'static str,
    /// In the state dir: the forwarding value before bpfnet turned it on.
    saved: &'static str,
}

const FAMILIES: [Family; 2] = [
    Family {
        proto: ProtoFamily::Ipv4,
        forwarding: "net/ipv4/ip_forward",
        saved: "ip_forward.before",
    },
    Family {
        proto: ProtoFamily::Ipv6,
        forwarding: "net/ipv6/conf/all/forwarding",
        saved: "ipv6_forwarding.before",
    },
];

impl Family {
    fn holds(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == (self.proto == ProtoFamily::Ipv4)
    }
}

/// Every host-side interface bpfnet makes starts with this (`bn…` veths,
/// `bnbr…` bridges).
const IFNAME_PREFIX: &[u8] = b"bn";

/// Docker's option that turns masquerading off for a network.
pub const MASQUERADE_OPTION: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// A network that reaches beyond the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    pub masquerade: bool,
}

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnat {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub proto: Proto,
    /// The sandbox's address; its family says which table.
    pub ip: IpAddr,
    pub port: u16,
    /// For the rule's comment: `SANDBOX PORT/PROTO`.
    pub what: String,
}

/// What the table holds for a state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub outbound: Vec<Outbound>,
    pub ports: Vec<Dnat>,
    /// Host-side interfaces published ports lead to.
    pub localnet: Vec<String>,
    /// Bridges of linux-bridge networks: the host forwards nothing from
    /// one into another bpfnet interface (Docker's isolation between
    /// networks, which the eBPF networks have in the datapath).
    pub bridges: Vec<String>,
}

/// Whether a network's sandboxes reach beyond the host.
pub fn reaches_out(net: &Network) -> bool {
    matches!(net.driver, DriverKind::Bridge | DriverKind::LinuxBridge) && !net.internal
}

/// Whether a network masquerades what leaves it (`-o
/// com.docker.network.bridge.enable_ip_masquerade=false` turns it off).
pub fn masquerades(net: &Network) -> bool {
    net.options.get(MASQUERADE_OPTION).map(String::as_str) != Some("false")
}

/// The network and endpoint a sandbox's ports are published through:
/// its first on a network that reaches out, as Docker publishes through
/// the endpoint that holds the default route.
pub fn publishing<'a>(state: &'a State, sb: &'a Sandbox) -> Option<(&'a Network, &'a Endpoint)> {
    sb.endpoints.iter().find_map(|e| {
        let net = state.networks.get(&e.network)?;
        reaches_out(net).then_some((net, e))
    })
}

/// Whether a sandbox's ports are published over IPv6 too: its publishing
/// endpoint has an IPv6 address. (Docker's userland proxy also serves an
/// IPv4-only container over IPv6; bpfnet, without a proxy, does not.)
pub fn publishes_ipv6(state: &State, sb: &Sandbox) -> bool {
    publishing(state, sb).is_some_and(|(_, ep)| ep.ip6.is_some())
}

impl Ruleset {
    pub fn of(state: &State) -> Ruleset {
        let mut r = Ruleset::default();
        for net in state.networks.values().filter(|n| reaches_out(n)) {
            let v4 = net
                .subnet
                .map(IpNet::from)
                .zip(net.gateway.map(IpAddr::from));
            let v6 = net
                .subnet6
                .map(IpNet::from)
                .zip(net.gateway6.map(IpAddr::from));
            for (subnet, gateway) in v4.into_iter().chain(v6) {
                r.outbound.push(Outbound {
                    subnet,
                    gateway,
                    masquerade: masquerades(net),
                });
            }
        }
        r.bridges = state
            .networks
            .values()
            .filter(|n| n.driver == DriverKind::LinuxBridge)
            .filter_map(|n| n.bridge.clone())
            .collect();
        for sb in state.sandboxes.values().filter(|s| !s.ports.is_empty()) {
            let Some((net, ep)) = publishing(state, sb) else {
                continue;
            };
            let ips = [Some(IpAddr::from(ep.ip)), ep.ip6.map(IpAddr::from)];
            for b in &sb.ports {
                // A binding without a host address: every address of each
                // family the sandbox has; with one: that address, if the
                // sandbox has its family.
                for ip in ips.into_iter().flatten() {
                    if b.host_ip.is_some_and(|h| h.is_ipv4() != ip.is_ipv4()) {
                        continue;
                    }
                    r.ports.push(Dnat {
                        host_ip: b.host_ip,
                        host_port: b.host_port,
                        proto: b.container.proto,
                        ip,
                        port: b.container.port,
                        what: format!("{} {}", sb.name, b.container),
                    });
                }
            }
            let dev = match net.driver {
                DriverKind::LinuxBridge => net.bridge.clone().unwrap_or_default(),
                _ => ep.host_ifname.clone(),
            };
            if !dev.is_empty() && !r.localnet.contains(&dev) {
                r.localnet.push(dev);
            }
        }
        r
    }

    fn batch(&self) -> Result<FinalizedBatch> {
        let mut batch = Batch::new();
        for family in FAMILIES {
            self.table(&mut batch, family)?;
        }
        Ok(batch.finalize())
    }

    /// The table of `family`, with the entries of that family.
    fn table(&self, batch: &mut Batch, family: Family) -> Result<()> {
        let table = Table::new(TABLE, family.proto);
        let outbound: Vec<&Outbound> = self
            .outbound
            .iter()
            .filter(|o| family.holds(o.gateway))
            .collect();
        // Add (a no-op when it exists), delete with everything in it, add
        // anew: one transaction, so nobody sees a half-built table.
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        batch.add(&table, MsgType::Add);
        let base = |name: &CStr, ty, hook, prio| {
            let mut c = Chain::new(name, &table);
            c.set_type(ty);
            c.set_hook(hook, prio);
            c.set_policy(Policy::Accept);
            c
        };
        let pre = base(c"prerouting", ChainType::Nat, Hook::PreRouting, -100);
        let out = base(c"output", ChainType::Nat, Hook::Out, -100);
        let post = base(c"postrouting", ChainType::Nat, Hook::PostRouting, 100);
        let fwd = base(c"forward", ChainType::Filter, Hook::Forward, 0);
        let ports = Chain::new(c"ports", &table);
        for c in [&pre, &out, &post, &fwd, &ports] {
            batch.add(c, MsgType::Add);
        }
        let mut rules: Vec<Rule> = vec![];
        for chain in [&pre, &out] {
            let mut r = Rule::new(chain);
            r.add_expr(&FibDaddrType);
            r.add_expr(&nft_expr!(cmp == libc::RTN_LOCAL as u32));
            r.add_expr(&nft_expr!(verdict jump c"ports".to_owned()));
            rules.push(r);
        }
        for d in self.ports.iter().filter(|d| family.holds(d.ip)) {
            let mut r = Rule::new(&ports);
            if let Some(ip) = d.host_ip {
                match_ip(&mut r, Field::Daddr, ip);
            }
            r.add_expr(&nft_expr!(meta l4proto));
            r.add_expr(&nft_expr!(cmp == d.proto.number()));
            // The destination port sits at the same offset in TCP and UDP.
            r.add_expr(&nft_expr!(payload tcp dport));
            r.add_expr(&nft_expr!(cmp == d.host_port.to_be()));
            load_ip(&mut r, d.ip);
            r.add_expr(&expr::Immediate::new(d.port.to_be(), Register::Reg2));
            r.add_expr(&expr::Nat {
                nat_type: expr::NatType::DNat,
                family: family.proto,
                ip_register: Register::Reg1,
                port_register: Some(Register::Reg2),
            });
            comment(&mut r, &format!("publish {}", d.what))?;
            rules.push(r);
        }
        for o in &outbound {
            // Hairpin: a sandbox reaching a published port through a host
            // address gets the reply back through its own gateway.
            // Only into a sandbox: another runtime's DNAT to somewhere
            // beyond the host is masqueraded below as usual.
            let mut r = Rule::new(&post);
            dnatted(&mut r);
            match_net(&mut r, Field::Saddr, o.subnet);
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&nft_expr!(cmp == IFNAME_PREFIX));
            snat_to(&mut r, o.gateway);
            rules.push(r);
            // 127.0.0.1 clients: the sandbox answers the gateway instead.
            if o.gateway.is_ipv4() {
                let mut r = Rule::new(&post);
                dnatted(&mut r);
                match_net(&mut r, Field::Saddr, "127.0.0.0/8".parse().expect("valid"));
                match_net(&mut r, Field::Daddr, o.subnet);
                snat_to(&mut r, o.gateway);
                rules.push(r);
            }
        }
        for o in outbound.iter().filter(|o| o.masquerade) {
            let mut r = Rule::new(&post);
            match_net(&mut r, Field::Saddr, o.subnet);
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&nft_expr!(cmp != IFNAME_PREFIX));
            r.add_expr(&nft_expr!(masquerade));
            rules.push(r);
        }
        let into_bpfnet = |r: &mut Rule| {
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&nft_expr!(cmp == IFNAME_PREFIX));
        };
        for br in &self.bridges {
            let mut r = Rule::new(&fwd);
            // With its NUL: the whole name, not a prefix.
            let name = CString::new(br.as_str()).context("a bridge name with a NUL")?;
            let name = name.as_c_str();
            r.add_expr(&nft_expr!(meta iifname));
            r.add_expr(&nft_expr!(cmp == name));
            into_bpfnet(&mut r);
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&nft_expr!(cmp != name));
            r.add_expr(&nft_expr!(verdict drop));
            comment(&mut r, "linux-bridge network isolation")?;
            rules.push(r);
        }
        let mut r = Rule::new(&fwd);
        into_bpfnet(&mut r);
        r.add_expr(&nft_expr!(ct state));
        let est = (expr::ct::States::ESTABLISHED | expr::ct::States::RELATED).bits();
        r.add_expr(&nft_expr!(bitwise mask est, xor 0u32));
        r.add_expr(&nft_expr!(cmp != 0u32));
        r.add_expr(&nft_expr!(verdict accept));
        rules.push(r);
        let mut r = Rule::new(&fwd);
        into_bpfnet(&mut r);
        dnatted(&mut r);
        r.add_expr(&nft_expr!(verdict accept));
        rules.push(r);
        let mut r = Rule::new(&fwd);
        into_bpfnet(&mut r);
        r.add_expr(&nft_expr!(meta iifname));
        r.add_expr(&nft_expr!(cmp == IFNAME_PREFIX));
        r.add_expr(&nft_expr!(verdict accept));
        rules.push(r);
        // A network that does not masquerade is routed: its addresses are
        // reachable from wherever a route to them leads.
        for o in outbound.iter().filter(|o| !o.masquerade) {
            let mut r = Rule::new(&fwd);
            into_bpfnet(&mut r);
            match_net(&mut r, Field::Daddr, o.subnet);
            r.add_expr(&nft_expr!(verdict accept));
            rules.push(r);
        }
        let mut r = Rule::new(&fwd);
        into_bpfnet(&mut r);
        r.add_expr(&nft_expr!(counter));
        r.add_expr(&nft_expr!(verdict drop));
        comment(&mut r, "routed straight to a sandbox: not published")?;
        rules.push(r);
        for r in &rules {
            batch.add(r, MsgType::Add);
        }
        Ok(())
    }
}

enum Field {
    Saddr,
    Daddr,
}

/// The address `field` of the packet into register 1 (the table's family
/// is the address's).
fn load(r: &mut Rule, field: Field, v4: bool) {
    match (field, v4) {
        (Field::Saddr, true) => r.add_expr(&nft_expr!(payload ipv4 saddr)),
        (Field::Daddr, true) => r.add_expr(&nft_expr!(payload ipv4 daddr)),
        (Field::Saddr, false) => r.add_expr(&nft_expr!(payload ipv6 saddr)),
        (Field::Daddr, false) => r.add_expr(&nft_expr!(payload ipv6 daddr)),
    }
}

fn match_ip(r: &mut Rule, field: Field, ip: IpAddr) {
    load(r, field, ip.is_ipv4());
    r.add_expr(&nft_expr!(cmp == ip));
}

fn match_net(r: &mut Rule, field: Field, net: IpNet) {
    load(r, field, net.addr().is_ipv4());
    let zero = match net {
        IpNet::V4(_) => IpAddr::from(Ipv4Addr::UNSPECIFIED),
        IpNet::V6(_) => IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
    };
    r.add_expr(&nft_expr!(bitwise mask net.netmask(), xor zero));
    r.add_expr(&nft_expr!(cmp == net.network()));
}

/// An address into register 1 (a NAT expression's address).
fn load_ip(r: &mut Rule, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => r.add_expr(&expr::Immediate::new(ip.octets(), Register::Reg1)),
        IpAddr::V6(ip) => r.add_expr(&expr::Immediate::new(ip.octets(), Register::Reg1)),
    }
}

/// `ct status dnat`.
fn dnatted(r: &mut Rule) {
    r.add_expr(&nft_expr!(ct status));
    r.add_expr(&nft_expr!(bitwise mask ConntrackStatus::DST_NAT.bits(), xor 0u32));
    r.add_expr(&nft_expr!(cmp != 0u32));
}

fn snat_to(r: &mut Rule, ip: IpAddr) {
    load_ip(r, ip);
    r.add_expr(&expr::Nat {
        nat_type: expr::NatType::SNat,
        family: if ip.is_ipv4() {
            ProtoFamily::Ipv4
        } else {
            ProtoFamily::Ipv6
        },
        ip_register: Register::Reg1,
        port_register: None,
    });
}

fn comment(r: &mut Rule, text: &str) -> Result<()> {
    let c = CString::new(text).context("a rule comment with a NUL")?;
    r.set_comment(&c)
        .map_err(|e| anyhow!("rule comment {text:?}: {e}"))
}

/// `fib daddr type` (nftnl 0.9 has no fib expression): the route type of
/// the destination address, into register 1.
struct FibDaddrType;

impl Expression for FibDaddrType {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: nftnl_expr_alloc takes a NUL-terminated name and returns
        // an owned expression or NULL (checked); the setters take that
        // expression and plain integers. The caller (nftnl's Rule) takes
        // ownership of the returned pointer.
        unsafe {
            let e = NonNull::new(sys::nftnl_expr_alloc(c"fib".as_ptr()))
                .expect("nftnl_expr_alloc(fib) out of memory");
            sys::nftnl_expr_set_u32(
                e.as_ptr(),
                sys::NFTNL_EXPR_FIB_DREG as u16,
                libc::NFT_REG_1 as u32,
            );
            sys::nftnl_expr_set_u32(
                e.as_ptr(),
                sys::NFTNL_EXPR_FIB_RESULT as u16,
                NFT_FIB_RESULT_ADDRTYPE,
            );
            sys::nftnl_expr_set_u32(
                e.as_ptr(),
                sys::NFTNL_EXPR_FIB_FLAGS as u16,
                NFTA_FIB_F_DADDR,
            );
            e
        }
    }
}

/// `enum nft_fib_result` (linux/netfilter/nf_tables.h).
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `enum nft_fib_flags`.
const NFTA_FIB_F_DADDR: u32 = 2;

/// Room for a batch of `len` bytes in one sendmsg, and for its ACKs: the
/// kernel runs the whole batch inside that sendmsg and queues an ACK per
/// message meanwhile, which overflows the default receive buffer at a few
/// hundred networks (ENOBUFS). ACKs without the request echoed, and
/// buffers set as root beyond [rw]mem_max (only what is queued is used).
fn make_room(socket: &mnl::Socket, len: usize) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let rcv: libc::c_int = 64 << 20;
    let snd = libc::c_int::try_from(len.saturating_add(1 << 16)).unwrap_or(libc::c_int::MAX);
    let one: libc::c_int = 1;
    let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is the socket's open descriptor for the duration of the
    // calls; each option value is a c_int that outlives its call, and its
    // length is passed. Failure is harmless (the batch then fails loudly).
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcv as *const libc::c_int).cast(),
            int_len,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&snd as *const libc::c_int).cast(),
            int_len,
        );
        libc::setsockopt(
            fd,
            libc::SOL_NETLINK,
            libc::NETLINK_CAP_ACK,
            (&one as *const libc::c_int).cast(),
            int_len,
        );
    }
}

fn send(batch: &FinalizedBatch) -> Result<()> {
    let socket =
        mnl::Socket::new(mnl::Bus::Netfilter).context("opening a netfilter netlink socket")?;
    // One sendmsg for the whole transaction: nftnl splits a large batch
    // into pages, and a page sent on its own is no batch (EINVAL).
    let whole: Vec<u8> = batch.iter().flatten().copied().collect();
    make_room(&socket, whole.len());
    let portid = socket.portid();
    let sent = socket.send(&whole).context("sending the nftables batch")?;
    if sent < whole.len() {
        bail!(
            "sending the nftables batch: {sent} of {} bytes sent",
            whole.len()
        );
    }
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    let mut expected = batch.sequence_numbers();
    while !expected.is_empty() {
        for message in socket.recv(&mut buffer[..])? {
            let message = message?;
            let seq = expected.next().context("an unexpected nftables ACK")?;
            mnl::cb_run(message, seq, portid)?;
        }
    }
    Ok(())
}

/// Makes bpfnet's tables what `rules` says, in one transaction, and the
/// sysctls they need.
pub fn apply(paths: &Paths, rules: &Ruleset) -> Result<()> {
    let batch = rules.batch()?;
    send(&batch).context("updating nftables tables ip bpfnet and ip6 bpfnet")?;
    for family in FAMILIES {
        if rules.outbound.iter().any(|o| family.holds(o.gateway)) {
            enable_forwarding(paths, family)?;
        }
    }
    for dev in &rules.localnet {
        // Gone with its interface; a missing one is gc's business.
        let _ = crate::netns::sysctl(&format!("net/ipv4/conf/{dev}/route_localnet"), "1");
    }
    Ok(())
}

/// Removes bpfnet's tables (nothing else) and puts the forwarding sysctls
/// back where bpfnet turned them on.
pub fn remove(paths: &Paths) -> Result<()> {
    let mut batch = Batch::new();
    for family in FAMILIES {
        let table = Table::new(TABLE, family.proto);
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
    }
    send(&batch.finalize()).context("removing nftables tables ip bpfnet and ip6 bpfnet")?;
    for family in FAMILIES {
        let saved = paths.state_dir.join(family.saved);
        match std::fs::read_to_string(&saved) {
            Ok(before) => {
                crate::netns::sysctl(family.forwarding, before.trim())
                    .with_context(|| format!("restoring {}", sysctl_name(family)))?;
                std::fs::remove_file(&saved)
                    .with_context(|| format!("removing {}", saved.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", saved.display())),
        }
    }
    Ok(())
}

fn sysctl_name(family: Family) -> String {
    family.forwarding.replace('/', ".")
}

/// Sandboxes reach the world through the host's routing: turn forwarding
/// of the family on as Docker does, remembering (durably, first) that it
/// was off. For IPv6 that is `all.forwarding`, since replies come in on
/// the uplink; it also makes interfaces with `accept_ra=1` ignore router
/// advertisements (as with Docker; `accept_ra=2` keeps them).
fn enable_forwarding(paths: &Paths, family: Family) -> Result<()> {
    let now = std::fs::read_to_string(Path::new("/proc/sys").join(family.forwarding))
        .with_context(|| format!("reading {}", sysctl_name(family)))?;
    if now.trim() != "0" {
        return Ok(());
    }
    let saved = paths.state_dir.join(family.saved);
    if !saved.exists() {
        fsutil::atomic_write(&saved, b"0\n", 0o600)?;
    }
    crate::netns::sysctl(family.forwarding, "1")
        .with_context(|| format!("setting {}=1", sysctl_name(family)))
}
