//! Address management, Docker's way: user networks take the next free /16
//! from 172.18.0.0 (then /20s of 192.168.0.0/16); endpoints take the lowest
//! free address from .2, so released addresses are reused. IPv6 (`--ipv6`)
//! the same way: a /64 of bpfnet's own ULA pool unless `--subnet` gives one,
//! the gateway at `::1`, endpoints from `::2`.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, bail, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::state::{Network, State};

/// The default bridge network's subnet.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";

fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (18..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("/16"));
    let twenties =
        (0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("/20"));
    sixteens.chain(twenties)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The network whose subnet overlaps `subnet`, if any.
pub fn overlapping<'a>(state: &'a State, subnet: &Ipv4Net) -> Option<&'a Network> {
    state
        .networks
        .values()
        .find(|n| n.subnet.is_some_and(|s| overlaps(&s, subnet)))
}

/// A route of the host that bpfnet did not make: a network that must not
/// overlap it would steal the host's own traffic (its unreachable route
/// replaces the host's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: Ipv4Net,
    /// The device it goes through ("" for routes without one).
    pub dev: String,
}

/// Whether a route lies inside a bpfnet network (its unreachable route, an
/// endpoint's /32, a linux-bridge's connected route).
pub fn is_bpfnets(state: &State, dst: &Ipv4Net) -> bool {
    state
        .networks
        .values()
        .any(|n| n.subnet.is_some_and(|s| s.contains(dst)))
}

/// The host route `subnet` overlaps, if any.
pub fn host_conflict<'a>(routes: &'a [HostRoute], subnet: &Ipv4Net) -> Option<&'a HostRoute> {
    routes.iter().find(|r| overlaps(&r.dst, subnet))
}

/// The next free default subnet for a user network: not used by another
/// network, not routed by the host already.
pub fn next_subnet(state: &State, host: &[HostRoute]) -> Result<Ipv4Net> {
    match default_pools()
        .find(|p| overlapping(state, p).is_none() && host_conflict(host, p).is_none())
    {
        Some(p) => Ok(p),
        None => {
            bail!("all default address pools are in use; give the network a subnet with --subnet")
        }
    }
}

/// Parses `--subnet`: an IPv4 network address with a prefix length, of a
/// range a network can own (not loopback, multicast or reserved).
pub fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let Ok(net) = s.parse::<Ipv4Net>() else {
        if s.parse::<ipnet::Ipv6Net>().is_ok() {
            bail!("invalid subnet {s:?}: an IPv6 subnet needs --ipv6 (a dual-stack network)");
        }
        if s.parse::<Ipv4Addr>().is_ok() {
            bail!("invalid subnet {s:?}: the prefix length is missing, e.g. {s}/24");
        }
        bail!("invalid subnet {s:?}: expected an IPv4 CIDR such as 10.10.0.0/16");
    };
    if net.prefix_len() > 30 {
        bail!("invalid subnet {s:?}: a prefix longer than /30 leaves no address for endpoints");
    }
    if net.trunc() != net {
        bail!(
            "invalid subnet {s:?}: it has host bits set; did you mean {}?",
            net.trunc()
        );
    }
    let reserved: [(&str, &str); 5] = [
        ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    ];
    for (range, what) in reserved {
        let range: Ipv4Net = range.parse().expect("valid");
        if overlaps(&range, &net) {
            bail!("invalid subnet {s:?}: it overlaps the {what} range; choose a private range such as 10.10.0.0/16");
        }
    }
    Ok(net)
}

/// Parses `--gateway`.
pub fn parse_gateway(s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| anyhow!("invalid gateway {s:?}: expected an IPv4 address such as 10.10.0.1"))
}

/// Checks a gateway given with `--gateway`.
pub fn check_gateway(subnet: &Ipv4Net, gw: Ipv4Addr) -> Result<()> {
    if !subnet.contains(&gw) || gw == subnet.network() || gw == subnet.broadcast() {
        bail!("gateway {gw} is outside the usable addresses of subnet {subnet}");
    }
    Ok(())
}

/// Picks an address for a new endpoint on `net`, or checks the requested one.
pub fn allocate(state: &State, net: &Network, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
    let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
        bail!("network {:?} has no addresses to give", net.name);
    };
    let user = |ip: Ipv4Addr| {
        state
            .endpoints_of(&net.name)
            .find(|(_, e)| e.ip == ip)
            .map(|(s, _)| s.name.clone())
    };
    if let Some(ip) = requested {
        if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
            bail!("address {ip} is outside network {:?} ({subnet})", net.name);
        }
        if ip == gw {
            bail!(
                "address {ip} is the gateway of network {:?}; choose another",
                net.name
            );
        }
        if let Some(owner) = user(ip) {
            bail!(
                "address {ip} is already in use on network {:?} (by {owner})",
                net.name
            );
        }
        return Ok(ip);
    }
    // One pass over the members, not one per candidate address.
    let used: std::collections::HashSet<Ipv4Addr> =
        state.endpoints_of(&net.name).map(|(_, e)| e.ip).collect();
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    match (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gw && !used.contains(ip))
    {
        Some(ip) => Ok(ip),
        None => bail!("network {:?} has no free address left ({subnet}); remove a sandbox or use a larger subnet", net.name),
    }
}

/// bpfnet's own ULA pool (RFC 4193: `fd` and a 40-bit global id, here the
/// bytes of "bpnet"): `network create --ipv6` without an IPv6 `--subnet`
/// takes the next free /64 of it, as Docker 27+ takes one of its own.
pub const ULA_POOL: &str = "fd62:706e:6574::/48";

/// Longest IPv6 prefix a network may have: a /126 holds the gateway and
/// two endpoints; a /127 or /128 none.
pub const MAX_PREFIX6: u8 = 126;

fn overlaps6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The network whose IPv6 subnet overlaps `subnet`, if any.
pub fn overlapping6<'a>(state: &'a State, subnet: &Ipv6Net) -> Option<&'a Network> {
    state
        .networks
        .values()
        .find(|n| n.subnet6.is_some_and(|s| overlaps6(&s, subnet)))
}

/// An IPv6 route of the host that bpfnet did not make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute6 {
    pub dst: Ipv6Net,
    pub dev: String,
}

/// Whether an IPv6 route lies inside a bpfnet network (its unreachable
/// route, an endpoint's /128).
pub fn is_bpfnets6(state: &State, dst: &Ipv6Net) -> bool {
    state
        .networks
        .values()
        .any(|n| n.subnet6.is_some_and(|s| s.contains(dst)))
}

/// The host IPv6 route `subnet` overlaps, if any.
pub fn host_conflict6<'a>(routes: &'a [HostRoute6], subnet: &Ipv6Net) -> Option<&'a HostRoute6> {
    routes.iter().find(|r| overlaps6(&r.dst, subnet))
}

/// The next free /64 of [`ULA_POOL`]: no network's, not routed by the host.
pub fn next_subnet6(state: &State, host: &[HostRoute6]) -> Result<Ipv6Net> {
    let pool: Ipv6Net = ULA_POOL.parse().expect("valid");
    match pool
        .subnets(64)
        .expect("a /48 has /64s")
        .find(|p| overlapping6(state, p).is_none() && host_conflict6(host, p).is_none())
    {
        Some(p) => Ok(p),
        None => bail!(
            "the IPv6 pool {ULA_POOL} is used up; give the network an IPv6 subnet with --subnet"
        ),
    }
}

/// Parses an IPv6 `--subnet`: a unicast network (ULA or global) with a
/// prefix of at most /126 and no host bits.
pub fn parse_subnet6(s: &str) -> Result<Ipv6Net> {
    let Ok(net) = s.parse::<Ipv6Net>() else {
        if s.parse::<Ipv6Addr>().is_ok() {
            bail!("invalid subnet {s:?}: the prefix length is missing, e.g. {s}/64");
        }
        bail!("invalid subnet {s:?}: expected an IPv6 CIDR such as fd42:30::/64");
    };
    if net.prefix_len() > MAX_PREFIX6 {
        bail!("invalid subnet {s:?}: a prefix longer than /{MAX_PREFIX6} leaves no address for endpoints; use a /64");
    }
    if net.trunc() != net {
        bail!(
            "invalid subnet {s:?}: it has host bits set; did you mean {}?",
            net.trunc()
        );
    }
    let reserved: [(&str, &str); 5] = [
        ("::/8", "reserved (::/8, with loopback and IPv4-mapped)"),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("fec0::/10", "site-local (fec0::/10)"),
        ("ff00::/8", "multicast (ff00::/8)"),
        ("2001:db8::/32", "documentation (2001:db8::/32)"),
    ];
    for (range, what) in reserved {
        let range: Ipv6Net = range.parse().expect("valid");
        if overlaps6(&range, &net) {
            bail!("invalid subnet {s:?}: it overlaps the {what} range; choose a unique local range such as fd42:30::/64");
        }
    }
    Ok(net)
}

/// Checks an IPv6 gateway given with `--gateway`.
pub fn check_gateway6(subnet: &Ipv6Net, gw: Ipv6Addr) -> Result<()> {
    if !subnet.contains(&gw) || gw == subnet.network() {
        bail!("gateway {gw} is outside the usable addresses of subnet {subnet}");
    }
    Ok(())
}

/// The first address of an IPv6 subnet, its default gateway.
pub fn first6(subnet: &Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

/// Picks an IPv6 address for a new endpoint on `net`, or checks the
/// requested one (`--ip6`).
pub fn allocate6(
    state: &State,
    net: &Network,
    requested: Option<Ipv6Addr>,
) -> Result<Option<Ipv6Addr>> {
    let (Some(subnet), Some(gw)) = (net.subnet6, net.gateway6) else {
        if let Some(ip) = requested {
            bail!(
                "--ip6 {ip}: network {:?} has no IPv6; create it with --ipv6",
                net.name
            );
        }
        return Ok(None);
    };
    let user = |ip: Ipv6Addr| {
        state
            .endpoints_of(&net.name)
            .find(|(_, e)| e.ip6 == Some(ip))
            .map(|(s, _)| s.name.clone())
    };
    if let Some(ip) = requested {
        if !subnet.contains(&ip) || ip == subnet.network() {
            bail!("address {ip} is outside network {:?} ({subnet})", net.name);
        }
        if ip == gw {
            bail!(
                "address {ip} is the gateway of network {:?}; choose another",
                net.name
            );
        }
        if let Some(owner) = user(ip) {
            bail!(
                "address {ip} is already in use on network {:?} (by {owner})",
                net.name
            );
        }
        return Ok(Some(ip));
    }
    let first = u128::from(subnet.network()) + 1;
    let last = u128::from(subnet.broadcast());
    // Endpoints are few: the first free address is near the start.
    match (first..=last)
        .take(1 << 16)
        .map(Ipv6Addr::from)
        .find(|ip| *ip != gw && user(*ip).is_none())
    {
        Some(ip) => Ok(Some(ip)),
        None => bail!("network {:?} has no free IPv6 address left ({subnet}); remove a sandbox or use a larger subnet", net.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dns::table::tests::net,
        state::{Endpoint, NetworkMode, Sandbox},
    };

    fn with_endpoint(state: &mut State, sandbox: &str, network: &str, ip: &str) {
        state.sandboxes.insert(
            sandbox.into(),
            Sandbox {
                id: sandbox.into(),
                name: sandbox.into(),
                created: String::new(),
                mode: NetworkMode::Networks(network.into()),
                endpoints: vec![Endpoint {
                    id: sandbox.into(),
                    network: network.into(),
                    ifname: "eth0".into(),
                    host_ifname: "x".into(),
                    host_ifindex: 0,
                    ip: ip.parse().unwrap(),
                    ip6: None,
                    mac: [0; 6],
                    slot: 0,
                    aliases: vec![],
                }],
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

    #[test]
    fn user_networks_take_the_next_free_sixteen() {
        let mut state = State::default();
        state
            .networks
            .insert("bridge".into(), net("bridge", "172.17.0.0/16"));
        assert_eq!(
            next_subnet(&state, &[]).unwrap().to_string(),
            "172.18.0.0/16"
        );
        state.networks.insert("a".into(), net("a", "172.18.0.0/16"));
        state.networks.insert("b".into(), net("b", "172.19.5.0/24"));
        assert_eq!(
            next_subnet(&state, &[]).unwrap().to_string(),
            "172.20.0.0/16"
        );
        let host = [HostRoute {
            dst: "172.20.5.0/24".parse().unwrap(),
            dev: "eth1".into(),
        }];
        assert_eq!(
            next_subnet(&state, &host).unwrap().to_string(),
            "172.21.0.0/16"
        );
    }

    #[test]
    fn addresses_start_at_two_and_are_reused() {
        let mut state = State::default();
        let n = net("bridge", "172.17.0.0/16");
        state.networks.insert("bridge".into(), n.clone());
        assert_eq!(
            allocate(&state, &n, None).unwrap().to_string(),
            "172.17.0.2"
        );
        with_endpoint(&mut state, "a", "bridge", "172.17.0.2");
        with_endpoint(&mut state, "b", "bridge", "172.17.0.3");
        assert_eq!(
            allocate(&state, &n, None).unwrap().to_string(),
            "172.17.0.4"
        );
        state.sandboxes.remove("a");
        assert_eq!(
            allocate(&state, &n, None).unwrap().to_string(),
            "172.17.0.2"
        );
    }

    #[test]
    fn requested_addresses_are_checked() {
        let mut state = State::default();
        let n = net("n", "10.9.0.0/24");
        with_endpoint(&mut state, "a", "n", "10.9.0.2");
        let err = |ip: &str| {
            allocate(&state, &n, Some(ip.parse().unwrap()))
                .unwrap_err()
                .to_string()
        };
        assert!(err("10.9.0.2").contains("already in use on network \"n\" (by a)"));
        assert!(err("10.9.1.2").contains("outside network \"n\""));
        assert!(err("10.9.0.1").contains("gateway"));
        assert!(err("10.9.0.255").contains("outside"));
        assert_eq!(
            allocate(&state, &n, Some("10.9.0.9".parse().unwrap()))
                .unwrap()
                .to_string(),
            "10.9.0.9"
        );
    }

    #[test]
    fn a_full_pool_says_so() {
        let mut state = State::default();
        let n = net("tiny", "10.99.0.0/30");
        with_endpoint(&mut state, "a", "tiny", "10.99.0.2");
        let e = allocate(&state, &n, None).unwrap_err().to_string();
        assert!(e.contains("no free address left"), "{e}");
    }

    #[test]
    fn subnets_are_validated() {
        assert!(parse_subnet("10.0.0.0/33")
            .unwrap_err()
            .to_string()
            .contains("invalid subnet"));
        assert!(parse_subnet("10.0.0.1/24")
            .unwrap_err()
            .to_string()
            .contains("did you mean 10.0.0.0/24"));
        assert!(parse_subnet("nonsense").is_err());
        for (bad, says) in [
            ("127.0.0.0/16", "loopback"),
            ("224.1.0.0/16", "multicast"),
            ("0.0.0.0/0", "this network"),
            ("10.0.0.0", "prefix length is missing"),
            ("fd00::/64", "--ipv6"),
        ] {
            let e = parse_subnet(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let s = parse_subnet("10.0.0.0/24").unwrap();
        assert!(check_gateway(&s, "10.0.1.1".parse().unwrap()).is_err());
        assert!(check_gateway(&s, "10.0.0.254".parse().unwrap()).is_ok());
    }

    #[test]
    fn ipv6_subnets_are_validated() {
        for (bad, says) in [
            ("fd00::/127", "longer than /126"),
            ("fd00::/128", "longer than /126"),
            ("fd00::1/64", "did you mean fd00::/64"),
            ("fe80::/64", "link-local"),
            ("ff02::/64", "multicast"),
            ("::/0", "reserved"),
            ("fd00::", "prefix length is missing"),
        ] {
            let e = parse_subnet6(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            parse_subnet6("fd42:30::/64").unwrap().to_string(),
            "fd42:30::/64"
        );
    }

    #[test]
    fn ipv6_pool_and_addresses() {
        let mut state = State::default();
        let mut n = net("v6", "10.9.0.0/24");
        n.subnet6 = Some(next_subnet6(&state, &[]).unwrap());
        assert_eq!(n.subnet6.unwrap().to_string(), "fd62:706e:6574::/64");
        n.gateway6 = Some(first6(&n.subnet6.unwrap()));
        assert_eq!(n.gateway6.unwrap().to_string(), "fd62:706e:6574::1");
        state.networks.insert("v6".into(), n.clone());
        assert_eq!(
            next_subnet6(&state, &[]).unwrap().to_string(),
            "fd62:706e:6574:1::/64"
        );
        let host = [HostRoute6 {
            dst: "fd62:706e:6574:1::/64".parse().unwrap(),
            dev: "eth1".into(),
        }];
        assert_eq!(
            next_subnet6(&state, &host).unwrap().to_string(),
            "fd62:706e:6574:2::/64"
        );
        let a = allocate6(&state, &n, None).unwrap().unwrap();
        assert_eq!(a.to_string(), "fd62:706e:6574::2");
        with_endpoint(&mut state, "a", "v6", "10.9.0.2");
        state.sandboxes.get_mut("a").unwrap().endpoints[0].ip6 = Some(a);
        assert_eq!(
            allocate6(&state, &n, None).unwrap().unwrap().to_string(),
            "fd62:706e:6574::3"
        );
        let e = allocate6(&state, &n, Some(a)).unwrap_err().to_string();
        assert!(e.contains("already in use"), "{e}");
        let e = allocate6(&state, &net("v4", "10.8.0.0/24"), Some(a))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no IPv6"), "{e}");
    }
}
