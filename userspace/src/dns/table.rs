//! Who may resolve what: the names of every user network, built from the
//! state, and brought up to date change by change (see [`Table::update`]).
//!
//! Rules (Docker's embedded DNS, aardvark-dns):
//! - a requester is a bpfnet endpoint (by source address) of a sandbox that
//!   is on at least one user network; anyone else gets no answer at all;
//! - a name (sandbox name, short id, endpoint alias) resolves only for
//!   requesters that share a user network with it, to its address on that
//!   network; the network the query came from is searched first;
//! - any other name, including one that exists on a network the requester
//!   is not on, is unknown to that requester: the answer must not depend on
//!   what other networks hold (it would let one tenant black out or
//!   enumerate another's names);
//! - unknown names are forwarded upstream, except for a sandbox whose every
//!   network is `--internal`: it gets NXDOMAIN, because a forwarded query
//!   name and its answer are a channel out of a network that must have none
//!   (CVE-2024-29018). A sandbox with any non-internal endpoint (the default
//!   bridge included) reaches the outside anyway, and is forwarded, as in
//!   Docker;
//! - the default `bridge` network resolves nothing.
use std::{
    collections::{BTreeSet, HashMap},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use crate::state::{Endpoint, Network, Sandbox, Shared, State};

/// Length of the short id Docker also resolves (`docker ps`'s CONTAINER ID).
const SHORT_ID: usize = 12;

/// Whether a network gets name resolution (user networks do, built-ins don't).
pub fn resolves_names(net: &Network) -> bool {
    !net.is_builtin() && net.gateway.is_some()
}

/// The addresses of one name on one network, with its round-robin cursor.
#[derive(Debug, Default)]
struct Entry {
    addrs: Vec<Ipv4Addr>,
    /// IPv6 addresses (dual-stack networks), for AAAA.
    addrs6: Vec<Ipv6Addr>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct NetNames {
    names: HashMap<String, Entry>,
    /// Address → sandbox name, for PTR queries.
    ptr: HashMap<Ipv4Addr, String>,
    ptr6: HashMap<Ipv6Addr, String>,
}

/// What a query for a name comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The source address is no bpfnet endpoint on a user network: drop.
    NotRequester,
    /// Ours and visible: these addresses, rotated per query.
    Addrs(Vec<Ipv4Addr>),
    /// Ours and visible (PTR): this name.
    Ptr(String),
    /// Not a name this requester can see: forwarded upstream when
    /// `forward`, else NXDOMAIN (internal-only requesters).
    Unknown { forward: bool },
}

/// One source address that may ask.
#[derive(Debug)]
struct Requester {
    /// The user networks its sandbox is on (indices into `nets`), the
    /// endpoint's own network first.
    order: Vec<usize>,
    /// Its sandbox's id: the key of the per-sandbox limits.
    sandbox: Arc<str>,
    /// Whether names it cannot see may go upstream.
    forward: bool,
    /// Its sandbox's own upstreams (`--dns`), instead of the host's.
    upstreams: Option<Arc<Vec<SocketAddr>>>,
}

#[derive(Debug, Default)]
pub struct Table {
    /// Endpoint address → who asks.
    requesters: HashMap<Ipv4Addr, Requester>,
    nets: Vec<NetNames>,
    /// The host's search domains, stripped from queried names.
    search: Vec<String>,
    /// Where to listen: the gateways of the user networks.
    pub gateways: BTreeSet<Ipv4Addr>,
    /// User network name → its names in `nets`.
    index: HashMap<String, usize>,
}

/// Lower case, no trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Search domains as the table keeps them.
fn normalized(search: &[String]) -> Vec<String> {
    search
        .iter()
        .map(|s| normalize(s))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The names an endpoint answers to on its network (normalised): its
/// sandbox's name and short id, and its aliases.
fn names_of<'a>(sb: &'a Sandbox, ep: &'a Endpoint) -> impl Iterator<Item = String> + 'a {
    [sb.name.as_str(), &sb.id[..SHORT_ID.min(sb.id.len())]]
        .into_iter()
        .chain(ep.aliases.iter().map(String::as_str))
        .map(normalize)
}

impl Table {
    pub fn build(state: &State, search: &[String]) -> Table {
        let mut t = Table {
            search: normalized(search),
            ..Table::default()
        };
        for net in state.networks.values() {
            if resolves_names(net) {
                t.index.insert(net.name.clone(), t.nets.len());
                t.nets.push(NetNames::default());
                t.gateways.extend(net.gateway);
            }
        }
        for sb in state.sandboxes.values() {
            t.add(state, sb);
        }
        t
    }

    /// Whether the table was built for these search domains.
    pub fn searches(&self, search: &[String]) -> bool {
        self.search == normalized(search)
    }

    /// Brings a table built from an earlier state in line with `state`,
    /// where only the sandboxes of `changed` changed (each with what it was
    /// before, a sandbox changed twice listed twice) and no network did:
    /// what the old sandboxes put in goes, what the new ones have comes in.
    /// The same table as [`Table::build`] of `state`, in the time of the
    /// change rather than of the whole state.
    pub fn update(&mut self, state: &State, changed: &[(String, Option<Shared<Sandbox>>)]) {
        let mut names = std::collections::HashSet::new();
        for (name, old) in changed {
            // The first listing has what the table holds.
            if names.insert(name.as_str()) {
                if let Some(old) = old {
                    self.remove(old);
                }
            }
        }
        for name in names {
            if let Some(sb) = state.sandboxes.get(name) {
                self.add(state, sb);
            }
        }
    }

    /// Takes in a sandbox's requesters, names and reverse names.
    fn add(&mut self, state: &State, sb: &Sandbox) {
        let on: Vec<usize> = sb
            .endpoints
            .iter()
            .filter_map(|e| self.index.get(e.network.as_str()).copied())
            .collect();
        if on.is_empty() {
            return;
        }
        let forward = sb
            .endpoints
            .iter()
            .any(|e| state.networks.get(&e.network).is_some_and(|n| !n.internal));
        let id: Arc<str> = sb.id.as_str().into();
        let upstreams = (!sb.dns.servers.is_empty()).then(|| {
            Arc::new(
                sb.dns
                    .servers
                    .iter()
                    .map(|s| SocketAddr::from((*s, 53)))
                    .collect::<Vec<_>>(),
            )
        });
        for ep in &sb.endpoints {
            let own = self.index.get(ep.network.as_str()).copied();
            let order = own
                .into_iter()
                .chain(on.iter().copied().filter(|&i| Some(i) != own))
                .collect();
            self.requesters.insert(
                ep.ip,
                Requester {
                    order,
                    sandbox: id.clone(),
                    forward,
                    upstreams: upstreams.clone(),
                },
            );
            let Some(i) = own else { continue };
            let net = &mut self.nets[i];
            for name in names_of(sb, ep) {
                let entry = net.names.entry(name).or_default();
                if !entry.addrs.contains(&ep.ip) {
                    entry.addrs.push(ep.ip);
                    entry.addrs.sort();
                }
                if let Some(ip6) = ep.ip6 {
                    if !entry.addrs6.contains(&ip6) {
                        entry.addrs6.push(ip6);
                        entry.addrs6.sort();
                    }
                }
            }
            net.ptr.insert(ep.ip, sb.name.clone());
            if let Some(ip6) = ep.ip6 {
                net.ptr6.insert(ip6, sb.name.clone());
            }
        }
    }

    /// Takes out what [`Table::add`] took in for `sb` (as it was then).
    fn remove(&mut self, sb: &Sandbox) {
        for ep in &sb.endpoints {
            if self
                .requesters
                .get(&ep.ip)
                .is_some_and(|r| *r.sandbox == *sb.id)
            {
                self.requesters.remove(&ep.ip);
            }
            let Some(&i) = self.index.get(ep.network.as_str()) else {
                continue;
            };
            let net = &mut self.nets[i];
            for name in names_of(sb, ep) {
                let Some(entry) = net.names.get_mut(&name) else {
                    continue;
                };
                entry.addrs.retain(|a| *a != ep.ip);
                entry.addrs6.retain(|a| Some(*a) != ep.ip6);
                if entry.addrs.is_empty() && entry.addrs6.is_empty() {
                    net.names.remove(&name);
                }
            }
            if net.ptr.get(&ep.ip) == Some(&sb.name) {
                net.ptr.remove(&ep.ip);
            }
            if let Some(ip6) = ep.ip6 {
                if net.ptr6.get(&ip6) == Some(&sb.name) {
                    net.ptr6.remove(&ip6);
                }
            }
        }
    }

    /// Whether `src` may ask at all.
    pub fn is_requester(&self, src: Ipv4Addr) -> bool {
        self.requesters.contains_key(&src)
    }

    /// The sandbox `src` belongs to (the key of its limits), if it may ask.
    pub fn sandbox_of(&self, src: Ipv4Addr) -> Option<Arc<str>> {
        self.requesters.get(&src).map(|r| r.sandbox.clone())
    }

    /// The upstreams `src`'s sandbox asked for with `--dns`, if any.
    pub fn upstreams_for(&self, src: Ipv4Addr) -> Option<Arc<Vec<SocketAddr>>> {
        self.requesters.get(&src).and_then(|r| r.upstreams.clone())
    }

    /// Whether names `src` cannot see may be forwarded upstream for it.
    pub fn forwards_for(&self, src: Ipv4Addr) -> bool {
        self.requesters.get(&src).is_some_and(|r| r.forward)
    }

    /// The entry `qname` names for requester `r`: `name`, then `name`
    /// without each of the host's search domains, on its networks in order.
    fn find(&self, r: &Requester, qname: &str) -> Option<&Entry> {
        let q = normalize(qname);
        let candidates = std::iter::once(q.as_str()).chain(self.search.iter().filter_map(|s| {
            q.strip_suffix(s.as_str())
                .and_then(|p| p.strip_suffix('.'))
                .filter(|p| !p.is_empty())
        }));
        for c in candidates {
            for &i in &r.order {
                if let Some(e) = self.nets[i].names.get(c) {
                    return Some(e);
                }
            }
        }
        None
    }

    /// `qname` for `src` (A and the other types of a name).
    pub fn resolve(&self, src: Ipv4Addr, qname: &str) -> Resolution {
        let Some(r) = self.requesters.get(&src) else {
            return Resolution::NotRequester;
        };
        match self.find(r, qname) {
            Some(e) => {
                let mut addrs = e.addrs.clone();
                let n = e.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
                addrs.rotate_left(n);
                Resolution::Addrs(addrs)
            }
            None => Resolution::Unknown { forward: r.forward },
        }
    }

    /// The IPv6 addresses of the name [`Self::resolve`] finds for `src`
    /// (AAAA): empty on IPv4-only networks.
    pub fn resolve6(&self, src: Ipv4Addr, qname: &str) -> Vec<Ipv6Addr> {
        self.requesters
            .get(&src)
            .and_then(|r| self.find(r, qname))
            .map(|e| e.addrs6.clone())
            .unwrap_or_default()
    }

    /// A PTR query (`d.c.b.a.in-addr.arpa`) for `src`: only the addresses
    /// it can see are ours to answer; the rest of the reverse space, bpfnet's
    /// other subnets included, is unknown like any other name.
    pub fn resolve_ptr(&self, src: Ipv4Addr, qname: &str) -> Resolution {
        let Some(r) = self.requesters.get(&src) else {
            return Resolution::NotRequester;
        };
        let q = normalize(qname);
        if let Some(ip) = reverse_ipv4(&q) {
            for &i in &r.order {
                if let Some(name) = self.nets[i].ptr.get(&ip) {
                    return Resolution::Ptr(name.clone());
                }
            }
        }
        if let Some(ip) = reverse_ipv6(&q) {
            for &i in &r.order {
                if let Some(name) = self.nets[i].ptr6.get(&ip) {
                    return Resolution::Ptr(name.clone());
                }
            }
        }
        Resolution::Unknown { forward: r.forward }
    }

    /// Number of (network, name) pairs, for the log.
    pub fn len(&self) -> usize {
        self.nets.iter().map(|n| n.names.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4.
fn reverse_ipv4(name: &str) -> Option<Ipv4Addr> {
    let labels: Vec<&str> = name.strip_suffix(".in-addr.arpa")?.split('.').collect();
    if labels.len() != 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, l) in labels.iter().rev().enumerate() {
        o[i] = l.parse().ok()?;
    }
    Some(Ipv4Addr::from(o))
}

/// `b.a.9.8…0.d.f.ip6.arpa` (32 nibbles, lowest first) → the address.
fn reverse_ipv6(name: &str) -> Option<Ipv6Addr> {
    let labels: Vec<&str> = name.strip_suffix(".ip6.arpa")?.split('.').collect();
    if labels.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for l in labels.iter().rev() {
        if l.len() != 1 {
            return None;
        }
        v = (v << 4) | u128::from(u8::from_str_radix(l, 16).ok()?);
    }
    Some(Ipv6Addr::from(v))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use ipnet::Ipv4Net;

    use super::*;
    use crate::state::{DriverKind, NetworkMode};

    /// A bridge network on `subnet`, its gateway the first address.
    pub(crate) fn net(name: &str, subnet: &str) -> Network {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Network {
            id: format!("{name}-id"),
            name: name.into(),
            created: String::new(),
            driver: DriverKind::Bridge,
            net_id: 1,
            subnet: Some(subnet),
            gateway: Some(Ipv4Addr::from(u32::from(subnet.network()) + 1)),
            subnet6: None,
            gateway6: None,
            internal: false,
            options: BTreeMap::new(),
            bridge: None,
        }
    }

    fn add(state: &mut State, name: &str, eps: &[(&str, &str, &[&str])]) {
        let endpoints = eps
            .iter()
            .enumerate()
            .map(|(i, (net, ip, aliases))| Endpoint {
                id: format!("{name}-ep{i}"),
                network: net.to_string(),
                ifname: format!("eth{i}"),
                host_ifname: format!("bn{name}{i}"),
                host_ifindex: 0,
                ip: ip.parse().unwrap(),
                ip6: None,
                mac: [0; 6],
                slot: 0,
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
            })
            .collect();
        state.sandboxes.insert(
            name.into(),
            Sandbox {
                id: format!("{name:0<12}ffffffffffff"),
                name: name.into(),
                created: String::new(),
                mode: NetworkMode::Networks(eps[0].0.into()),
                endpoints,
                aliases: vec![],
                links: vec![],
                ports: vec![],
                exposed: vec![],
                dns: Default::default(),
                netns: None,
                cni: None,
                docker: None,
            }
            .into(),
        );
    }

    /// bridge: b1 .2, web .3 (web also on net1), hybrid .4 (also on int)
    /// net1: web .2, db .3 (alias "store"), cache .4 (alias "store")
    /// net2: api .2, db .3 (db on both)
    /// int (internal): vault .2, keeper .3, hybrid .4
    pub(crate) fn sample() -> State {
        let mut s = State::default();
        let mut bridge = net("bridge", "172.17.0.0/16");
        bridge.name = "bridge".into();
        s.networks.insert("bridge".into(), bridge);
        s.networks
            .insert("net1".into(), net("net1", "172.18.0.0/16"));
        s.networks
            .insert("net2".into(), net("net2", "172.19.0.0/16"));
        let mut int = net("int", "172.20.0.0/16");
        int.internal = true;
        s.networks.insert("int".into(), int);
        add(&mut s, "b1", &[("bridge", "172.17.0.2", &[])]);
        add(
            &mut s,
            "web",
            &[("bridge", "172.17.0.3", &[]), ("net1", "172.18.0.2", &[])],
        );
        add(
            &mut s,
            "db",
            &[
                ("net1", "172.18.0.3", &["store"]),
                ("net2", "172.19.0.3", &[]),
            ],
        );
        add(&mut s, "cache", &[("net1", "172.18.0.4", &["Store"])]);
        add(&mut s, "api", &[("net2", "172.19.0.2", &[])]);
        add(&mut s, "vault", &[("int", "172.20.0.2", &[])]);
        add(&mut s, "keeper", &[("int", "172.20.0.3", &[])]);
        add(
            &mut s,
            "hybrid",
            &[("int", "172.20.0.4", &[]), ("bridge", "172.17.0.4", &[])],
        );
        s
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn addrs(v: &[&str]) -> Resolution {
        Resolution::Addrs(v.iter().map(|s| ip(s)).collect())
    }

    const FORWARD: Resolution = Resolution::Unknown { forward: true };
    const NXDOMAIN: Resolution = Resolution::Unknown { forward: false };

    /// Everything a table answers from, in one comparable order.
    fn canonical(t: &Table) -> String {
        let mut out = format!("search {:?} gateways {:?}\n", t.search, t.gateways);
        let mut reqs: Vec<_> = t.requesters.iter().collect();
        reqs.sort_by_key(|(ip, _)| **ip);
        for (ip, r) in reqs {
            out += &format!(
                "{ip} {:?} {} {} {:?}\n",
                r.order, r.sandbox, r.forward, r.upstreams
            );
        }
        for (i, n) in t.nets.iter().enumerate() {
            let names: BTreeMap<_, _> = n
                .names
                .iter()
                .map(|(k, e)| (k, (&e.addrs, &e.addrs6)))
                .collect();
            let ptr: BTreeMap<_, _> = n.ptr.iter().collect();
            let ptr6: BTreeMap<_, _> = n.ptr6.iter().collect();
            out += &format!("net {i}: {names:?} {ptr:?} {ptr6:?}\n");
        }
        out
    }

    /// Change by change, the updated table is the one built from scratch:
    /// sandboxes added, renamed in their aliases, moved between networks,
    /// removed (one sharing an alias with another), one changed twice in a
    /// batch.
    #[test]
    fn an_updated_table_is_the_table_built_from_the_new_state() {
        let mut state = sample();
        let mut t = Table::build(&state, &["corp.example".into()]);
        type Change = fn(&mut State);
        let steps: [(&[&str], Change); 6] = [
            (&["new"], |s| {
                add(s, "new", &[("net1", "172.18.0.9", &["store", "extra"])]);
            }),
            (&["db"], |s| {
                s.sandboxes.get_mut("db").unwrap().endpoints[0].aliases = vec!["cache".into()];
            }),
            (&["cache", "hybrid"], |s| {
                s.sandboxes.remove("cache");
                s.sandboxes.remove("hybrid");
            }),
            (&["web"], |s| {
                let web = s.sandboxes.get_mut("web").unwrap();
                web.endpoints.retain(|e| e.network != "net1");
                web.endpoints[0].network = "int".into();
                web.endpoints[0].ip6 = Some("fd00::5".parse().unwrap());
            }),
            (&["api", "api"], |s| {
                s.sandboxes.get_mut("api").unwrap().dns.servers = vec![ip("10.9.9.9")];
            }),
            (&["vault", "keeper"], |s| {
                s.sandboxes.remove("vault");
                add(s, "keeper", &[("net2", "172.19.0.7", &["vault"])]);
            }),
        ];
        for (i, (names, change)) in steps.into_iter().enumerate() {
            let before = state.clone();
            change(&mut state);
            let changed: Vec<(String, Option<Shared<Sandbox>>)> = names
                .iter()
                .map(|n| (n.to_string(), before.sandboxes.get(*n).cloned()))
                .collect();
            t.update(&state, &changed);
            let built = Table::build(&state, &["corp.example".into()]);
            assert_eq!(canonical(&t), canonical(&built), "step {i}");
        }
        assert!(t.searches(&["Corp.Example.".into()]));
        assert!(!t.searches(&[]));
    }

    #[test]
    fn members_of_a_shared_network_resolve_each_other() {
        let t = Table::build(&sample(), &[]);
        assert_eq!(t.resolve(ip("172.18.0.2"), "db"), addrs(&["172.18.0.3"]));
        assert_eq!(t.resolve(ip("172.18.0.3"), "web"), addrs(&["172.18.0.2"]));
        assert_eq!(t.resolve(ip("172.19.0.2"), "db"), addrs(&["172.19.0.3"]));
        // Own name too.
        assert_eq!(t.resolve(ip("172.19.0.2"), "api"), addrs(&["172.19.0.2"]));
        // Short id, as Docker.
        assert_eq!(
            t.resolve(ip("172.18.0.2"), "db0000000000"),
            addrs(&["172.18.0.3"])
        );
        // Internal networks resolve their own names.
        assert_eq!(
            t.resolve(ip("172.20.0.2"), "keeper"),
            addrs(&["172.20.0.3"])
        );
    }

    #[test]
    fn names_are_case_insensitive_and_may_end_in_a_dot() {
        let t = Table::build(&sample(), &[]);
        assert_eq!(t.resolve(ip("172.18.0.2"), "DB."), addrs(&["172.18.0.3"]));
        assert_eq!(t.resolve(ip("172.18.0.2"), "Db"), addrs(&["172.18.0.3"]));
    }

    #[test]
    fn the_address_is_the_one_on_the_shared_network() {
        let t = Table::build(&sample(), &[]);
        // db is on net1 and net2; api only shares net2 with it.
        assert_eq!(t.resolve(ip("172.19.0.2"), "db"), addrs(&["172.19.0.3"]));
        assert_eq!(t.resolve(ip("172.18.0.4"), "db"), addrs(&["172.18.0.3"]));
        // A query from db's net2 address looks on net2 first.
        assert_eq!(t.resolve(ip("172.19.0.3"), "db"), addrs(&["172.19.0.3"]));
        assert_eq!(t.resolve(ip("172.18.0.3"), "db"), addrs(&["172.18.0.3"]));
    }

    #[test]
    fn names_of_networks_the_requester_is_not_on_are_unknown_to_it() {
        let t = Table::build(&sample(), &[]);
        // api (net2) and web (net1) share nothing: web's name is as unknown
        // to api as a name nobody has.
        for name in ["web", "cache", "store", "vault", "b1", "example.org"] {
            assert_eq!(t.resolve(ip("172.19.0.2"), name), FORWARD, "{name}");
        }
    }

    #[test]
    fn internal_only_sandboxes_get_nxdomain_instead_of_a_forward() {
        let t = Table::build(&sample(), &[]);
        for name in ["exfil.example", "web", "api", "db"] {
            assert_eq!(t.resolve(ip("172.20.0.2"), name), NXDOMAIN, "{name}");
        }
        assert!(!t.forwards_for(ip("172.20.0.2")));
        // hybrid is also on the default bridge, which reaches the outside:
        // forwarded, as Docker does for a container with external access.
        assert_eq!(t.resolve(ip("172.20.0.4"), "exfil.example"), FORWARD);
        assert_eq!(t.resolve(ip("172.17.0.4"), "exfil.example"), FORWARD);
        assert_eq!(t.resolve(ip("172.20.0.4"), "vault"), addrs(&["172.20.0.2"]));
        assert!(t.forwards_for(ip("172.18.0.2")));
    }

    #[test]
    fn only_endpoints_of_sandboxes_on_user_networks_may_ask() {
        let t = Table::build(&sample(), &[]);
        // b1 is only on bridge; 10.0.0.1 is no endpoint at all.
        assert_eq!(t.resolve(ip("172.17.0.2"), "web"), Resolution::NotRequester);
        assert_eq!(t.resolve(ip("10.0.0.1"), "web"), Resolution::NotRequester);
        assert!(!t.is_requester(ip("172.18.0.1")), "the gateway itself");
        // web asks from its bridge address: it still sees its user networks.
        assert_eq!(t.resolve(ip("172.17.0.3"), "db"), addrs(&["172.18.0.3"]));
    }

    #[test]
    fn every_endpoint_of_a_sandbox_shares_one_limit_key() {
        let t = Table::build(&sample(), &[]);
        let web = t.sandbox_of(ip("172.18.0.2")).unwrap();
        assert_eq!(t.sandbox_of(ip("172.17.0.3")), Some(web.clone()));
        assert_ne!(t.sandbox_of(ip("172.18.0.3")), Some(web));
        assert_eq!(t.sandbox_of(ip("172.17.0.2")), None);
    }

    #[test]
    fn bridge_members_are_not_resolvable_even_from_a_user_network_member() {
        let t = Table::build(&sample(), &[]);
        // web is on bridge and net1; b1 shares bridge with it, which resolves nothing.
        assert_eq!(t.resolve(ip("172.18.0.2"), "b1"), FORWARD);
    }

    #[test]
    fn a_shared_alias_returns_all_addresses_rotating() {
        let t = Table::build(&sample(), &[]);
        let want = [ip("172.18.0.3"), ip("172.18.0.4")];
        let mut firsts = vec![];
        for _ in 0..4 {
            let Resolution::Addrs(a) = t.resolve(ip("172.18.0.2"), "store") else {
                panic!("store not resolved");
            };
            let mut sorted = a.clone();
            sorted.sort();
            assert_eq!(sorted, want);
            firsts.push(a[0]);
        }
        assert_eq!(firsts, [want[0], want[1], want[0], want[1]]);
    }

    #[test]
    fn search_domains_are_stripped_only_for_visible_names() {
        let t = Table::build(&sample(), &["corp.example.".into()]);
        assert_eq!(
            t.resolve(ip("172.18.0.2"), "db.corp.example."),
            addrs(&["172.18.0.3"])
        );
        // `web` lives on net1 only: www-style public names are not blacked
        // out for net2.
        assert_eq!(t.resolve(ip("172.19.0.2"), "web.corp.example"), FORWARD);
        assert_eq!(t.resolve(ip("172.18.0.2"), "corp.example"), FORWARD);
    }

    #[test]
    fn reverse_lookups_follow_the_same_visibility() {
        let t = Table::build(&sample(), &[]);
        assert_eq!(
            t.resolve_ptr(ip("172.18.0.2"), "3.0.18.172.in-addr.arpa."),
            Resolution::Ptr("db".into())
        );
        // Another network's address is as unknown as one outside bpfnet.
        assert_eq!(
            t.resolve_ptr(ip("172.19.0.2"), "2.0.18.172.in-addr.arpa"),
            FORWARD
        );
        assert_eq!(
            t.resolve_ptr(ip("172.19.0.2"), "1.1.168.192.in-addr.arpa"),
            FORWARD
        );
        // Internal only: its peers, nothing else, and nothing forwarded.
        assert_eq!(
            t.resolve_ptr(ip("172.20.0.2"), "3.0.20.172.in-addr.arpa"),
            Resolution::Ptr("keeper".into())
        );
        for q in [
            "8.8.8.8.in-addr.arpa",
            "2.0.18.172.in-addr.arpa",
            "x.ip6.arpa",
        ] {
            assert_eq!(t.resolve_ptr(ip("172.20.0.2"), q), NXDOMAIN, "{q}");
        }
    }

    #[test]
    fn gateways_of_user_networks_are_the_listen_addresses() {
        let t = Table::build(&sample(), &[]);
        assert_eq!(
            t.gateways.iter().copied().collect::<Vec<_>>(),
            [ip("172.18.0.1"), ip("172.19.0.1"), ip("172.20.0.1")]
        );
    }
}
