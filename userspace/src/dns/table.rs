//! Who may resolve what: an immutable snapshot of the names of every user
//! network, built from the state and swapped whole on each reload.
//!
//! Rules (Docker's embedded DNS, aardvark-dns):
//! - a requester is a bpfnet endpoint (by source address) of a sandbox that
//!   is on at least one user network; anyone else gets no answer at all;
//! - a name (sandbox name, short id, endpoint alias) resolves only for
//!   requesters that share a user network with it, to its address on that
//!   network; the network the query came from is searched first;
//! - a name bpfnet owns but the requester cannot see is NXDOMAIN, never
//!   forwarded (forwarding would leak it); anything else is forwarded;
//! - the default `bridge` network resolves nothing.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::atomic::{AtomicUsize, Ordering},
};

use ipnet::Ipv4Net;

use crate::state::{Network, State};

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
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct NetNames {
    names: HashMap<String, Entry>,
    /// Address → sandbox name, for PTR queries.
    ptr: HashMap<Ipv4Addr, String>,
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
    /// Ours but not visible to the requester: NXDOMAIN.
    Hidden,
    /// Not ours: forward upstream.
    Unknown,
}

#[derive(Debug, Default)]
pub struct Table {
    /// Endpoint address → the user networks its sandbox is on (indices into
    /// `nets`), the endpoint's own network first.
    requesters: HashMap<Ipv4Addr, Vec<usize>>,
    nets: Vec<NetNames>,
    /// Every name bpfnet knows, on any network.
    owned: HashSet<String>,
    /// Subnets of all bpfnet networks: their reverse names are ours.
    subnets: Vec<Ipv4Net>,
    /// The host's search domains, stripped from queried names.
    search: Vec<String>,
    /// Where to listen: the gateways of the user networks.
    pub gateways: BTreeSet<Ipv4Addr>,
}

/// Lower case, no trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Table {
    pub fn build(state: &State, search: &[String]) -> Table {
        let mut t = Table {
            search: search
                .iter()
                .map(|s| normalize(s))
                .filter(|s| !s.is_empty())
                .collect(),
            ..Table::default()
        };
        let mut index = HashMap::new();
        for net in state.networks.values() {
            if let Some(s) = net.subnet {
                t.subnets.push(s);
            }
            if resolves_names(net) {
                index.insert(net.name.as_str(), t.nets.len());
                t.nets.push(NetNames::default());
                t.gateways.extend(net.gateway);
            }
        }
        for sb in state.sandboxes.values() {
            t.owned.insert(normalize(&sb.name));
            t.owned
                .insert(normalize(&sb.id[..SHORT_ID.min(sb.id.len())]));
            t.owned.extend(sb.aliases.iter().map(|a| normalize(a)));
            let on: Vec<usize> = sb
                .endpoints
                .iter()
                .filter_map(|e| index.get(e.network.as_str()).copied())
                .collect();
            for ep in &sb.endpoints {
                t.owned.extend(ep.aliases.iter().map(|a| normalize(a)));
                if on.is_empty() {
                    continue;
                }
                let own = index.get(ep.network.as_str()).copied();
                let order = own
                    .into_iter()
                    .chain(on.iter().copied().filter(|&i| Some(i) != own))
                    .collect();
                t.requesters.insert(ep.ip, order);
                let Some(i) = own else { continue };
                let net = &mut t.nets[i];
                let names = [sb.name.as_str(), &sb.id[..SHORT_ID.min(sb.id.len())]]
                    .into_iter()
                    .chain(ep.aliases.iter().map(String::as_str));
                for name in names {
                    let addrs = &mut net.names.entry(normalize(name)).or_default().addrs;
                    if !addrs.contains(&ep.ip) {
                        addrs.push(ep.ip);
                        addrs.sort();
                    }
                }
                net.ptr.insert(ep.ip, sb.name.clone());
            }
        }
        t
    }

    /// Whether `src` may ask at all.
    pub fn is_requester(&self, src: Ipv4Addr) -> bool {
        self.requesters.contains_key(&src)
    }

    /// `qname` for `src` (A and the other types of a name).
    pub fn resolve(&self, src: Ipv4Addr, qname: &str) -> Resolution {
        let Some(order) = self.requesters.get(&src) else {
            return Resolution::NotRequester;
        };
        let q = normalize(qname);
        // `name`, then `name` without each of the host's search domains.
        let candidates: Vec<&str> = std::iter::once(q.as_str())
            .chain(self.search.iter().filter_map(|s| {
                q.strip_suffix(s.as_str())
                    .and_then(|p| p.strip_suffix('.'))
                    .filter(|p| !p.is_empty())
            }))
            .collect();
        for c in &candidates {
            for &i in order {
                if let Some(e) = self.nets[i].names.get(*c) {
                    let mut addrs = e.addrs.clone();
                    let n = e.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
                    addrs.rotate_left(n);
                    return Resolution::Addrs(addrs);
                }
            }
        }
        if candidates.iter().any(|c| self.owned.contains(*c)) {
            Resolution::Hidden
        } else {
            Resolution::Unknown
        }
    }

    /// A PTR query (`d.c.b.a.in-addr.arpa`) for `src`.
    pub fn resolve_ptr(&self, src: Ipv4Addr, qname: &str) -> Resolution {
        let Some(order) = self.requesters.get(&src) else {
            return Resolution::NotRequester;
        };
        let Some(ip) = reverse_ipv4(&normalize(qname)) else {
            return Resolution::Unknown;
        };
        for &i in order {
            if let Some(name) = self.nets[i].ptr.get(&ip) {
                return Resolution::Ptr(name.clone());
            }
        }
        if self.subnets.iter().any(|s| s.contains(&ip)) {
            Resolution::Hidden
        } else {
            Resolution::Unknown
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::{DriverKind, Endpoint, NetworkMode, Sandbox};

    fn net(name: &str, subnet: &str) -> Network {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Network {
            id: format!("{name}-id"),
            name: name.into(),
            created: String::new(),
            driver: DriverKind::Bridge,
            net_id: 1,
            subnet: Some(subnet),
            gateway: Some(Ipv4Addr::from(u32::from(subnet.network()) + 1)),
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
            },
        );
    }

    /// bridge: b1 .2, web .3 (web also on net1)
    /// net1: web .2, db .3 (alias "store"), cache .4 (alias "store")
    /// net2: api .2, db .3 (db on both)
    pub(crate) fn sample() -> State {
        let mut s = State::default();
        let mut bridge = net("bridge", "172.17.0.0/16");
        bridge.name = "bridge".into();
        s.networks.insert("bridge".into(), bridge);
        s.networks
            .insert("net1".into(), net("net1", "172.18.0.0/16"));
        s.networks
            .insert("net2".into(), net("net2", "172.19.0.0/16"));
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
        s
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn addrs(v: &[&str]) -> Resolution {
        Resolution::Addrs(v.iter().map(|s| ip(s)).collect())
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
    fn names_of_networks_the_requester_is_not_on_are_hidden_not_forwarded() {
        let t = Table::build(&sample(), &[]);
        // api (net2) and web (net1) share nothing.
        assert_eq!(t.resolve(ip("172.19.0.2"), "web"), Resolution::Hidden);
        assert_eq!(t.resolve(ip("172.19.0.2"), "cache"), Resolution::Hidden);
        assert_eq!(t.resolve(ip("172.19.0.2"), "store"), Resolution::Hidden);
        // b1 is only on bridge: bpfnet's name, resolvable by nobody.
        assert_eq!(t.resolve(ip("172.18.0.2"), "b1"), Resolution::Hidden);
        assert_eq!(
            t.resolve(ip("172.18.0.2"), "example.org"),
            Resolution::Unknown
        );
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
    fn bridge_members_are_not_resolvable_even_from_a_user_network_member() {
        let t = Table::build(&sample(), &[]);
        // web is on bridge and net1; b1 shares bridge with it, which resolves nothing.
        assert_eq!(t.resolve(ip("172.18.0.2"), "b1"), Resolution::Hidden);
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
    fn search_domains_are_stripped() {
        let t = Table::build(&sample(), &["corp.example.".into()]);
        assert_eq!(
            t.resolve(ip("172.18.0.2"), "db.corp.example."),
            addrs(&["172.18.0.3"])
        );
        assert_eq!(
            t.resolve(ip("172.19.0.2"), "web.corp.example"),
            Resolution::Hidden
        );
        assert_eq!(
            t.resolve(ip("172.18.0.2"), "corp.example"),
            Resolution::Unknown
        );
    }

    #[test]
    fn reverse_lookups_follow_the_same_visibility() {
        let t = Table::build(&sample(), &[]);
        assert_eq!(
            t.resolve_ptr(ip("172.18.0.2"), "3.0.18.172.in-addr.arpa."),
            Resolution::Ptr("db".into())
        );
        assert_eq!(
            t.resolve_ptr(ip("172.19.0.2"), "2.0.18.172.in-addr.arpa"),
            Resolution::Hidden
        );
        assert_eq!(
            t.resolve_ptr(ip("172.19.0.2"), "1.1.168.192.in-addr.arpa"),
            Resolution::Unknown
        );
    }

    #[test]
    fn gateways_of_user_networks_are_the_listen_addresses() {
        let t = Table::build(&sample(), &[]);
        assert_eq!(
            t.gateways.iter().copied().collect::<Vec<_>>(),
            [ip("172.18.0.1"), ip("172.19.0.1")]
        );
    }
}
