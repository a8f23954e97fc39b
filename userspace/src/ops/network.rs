//! Networks: `network create` and `network rm`.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{bail, Result};

use super::{
    journal::{Recovery, Redo},
    step::Step,
    Controller, Plan,
};
use crate::{
    ipam,
    state::{DriverKind, Network},
    util::{check_name, new_id, now_rfc3339},
};

/// Prefix of the kernel bridges of the linux-bridge driver.
pub const BRIDGE_PREFIX: &str = "bnbr";

#[derive(Clone, Debug, Default)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Option<String>,
    /// `--subnet`, repeatable: at most one IPv4 and (with `ipv6`) one IPv6.
    pub subnets: Vec<String>,
    /// `--gateway`, repeatable: one per family, matched to its subnet.
    pub gateways: Vec<String>,
    /// `--ipv6`: dual stack.
    pub ipv6: bool,
    pub internal: bool,
    pub options: Vec<String>,
}

impl Controller {
    /// The host's routes that are not bpfnet's (none inside a network's
    /// subnet), for the overlap checks of `network create`. Only their
    /// devices are looked up, not every link (thousands of host-side veths).
    pub(super) async fn host_routes(&self) -> Result<Vec<ipam::HostRoute>> {
        let routes: Vec<(ipnet::Ipv4Net, Option<u32>)> = self
            .host
            .nl
            .ipv4_routes()
            .await?
            .into_iter()
            .filter(|(dst, _)| !ipam::is_bpfnets(self.state(), dst))
            .collect();
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        for index in routes.iter().filter_map(|(_, oif)| *oif) {
            if let std::collections::btree_map::Entry::Vacant(slot) = names.entry(index) {
                if let Some(link) = self.host.nl.link_by_index(index).await? {
                    slot.insert(link.name);
                }
            }
        }
        Ok(routes
            .into_iter()
            .map(|(dst, oif)| ipam::HostRoute {
                dst,
                dev: oif
                    .and_then(|i| names.get(&i).cloned())
                    .unwrap_or_else(|| "none".into()),
            })
            .collect())
    }

    /// An IPv6 subnet for a new network, kept off every other network's
    /// and off the host's routes; `hint` names what to change.
    pub(super) fn checked_subnet6(
        &self,
        s: &str,
        host_routes6: &[ipam::HostRoute6],
        hint: &str,
    ) -> Result<ipnet::Ipv6Net> {
        let subnet = ipam::parse_subnet6(s)?;
        if let Some(other) = ipam::overlapping6(self.state(), &subnet) {
            bail!(
                "subnet {subnet} overlaps with network {:?} ({}); choose another {hint}",
                other.name,
                other.subnet6.expect("has an IPv6 subnet")
            );
        }
        if let Some(r) = ipam::host_conflict6(host_routes6, &subnet) {
            bail!(
                "subnet {subnet} overlaps the host's own route {} (dev {}); choose another {hint}",
                r.dst,
                r.dev
            );
        }
        Ok(subnet)
    }

    /// [`Self::host_routes`] for IPv6 (link-local routes left out: no
    /// network's subnet can be link-local).
    pub(super) async fn host_routes6(&self) -> Result<Vec<ipam::HostRoute6>> {
        let names: BTreeMap<u32, String> = self
            .host
            .nl
            .links()
            .await?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let link_local: ipnet::Ipv6Net = "fe80::/10".parse().expect("valid");
        Ok(self
            .host
            .nl
            .ipv6_routes()
            .await?
            .into_iter()
            .filter(|(dst, _)| !ipam::is_bpfnets6(self.state(), dst) && !link_local.contains(dst))
            .map(|(dst, oif)| ipam::HostRoute6 {
                dst,
                dev: oif
                    .and_then(|i| names.get(&i).cloned())
                    .unwrap_or_else(|| "none".into()),
            })
            .collect())
    }

    pub async fn network_create(&mut self, req: NetworkCreate) -> Result<Network> {
        let name = req.name.as_str();
        check_name("network", name)?;
        if self.state().networks.contains_key(name) {
            bail!("network {name:?} already exists; pick another name or remove it with `bpfnet network rm {name}`");
        }
        let driver = match req.driver.as_deref().unwrap_or("bridge") {
            "bridge" => DriverKind::Bridge,
            "linux-bridge" => DriverKind::LinuxBridge,
            other => bail!("unknown driver {other:?}: use bridge (eBPF) or linux-bridge"),
        };
        let options = crate::util::parse_network_options(&req.options)?;
        let host_routes = self.host_routes().await?;
        // Docker's repeated --subnet and --gateway: one of each family.
        let (subnets6, subnets4): (Vec<&String>, Vec<&String>) =
            req.subnets.iter().partition(|s| s.contains(':'));
        let (gateways6, gateways4): (Vec<&String>, Vec<&String>) =
            req.gateways.iter().partition(|s| s.contains(':'));
        if subnets4.len() > 1 || subnets6.len() > 1 {
            bail!("--subnet is given {} times; a network has one IPv4 subnet and, with --ipv6, one IPv6 subnet", req.subnets.len());
        }
        if gateways4.len() > 1 || gateways6.len() > 1 {
            bail!("--gateway is given {} times; a network has one IPv4 gateway and, with --ipv6, one IPv6 gateway", req.gateways.len());
        }
        if !req.ipv6 {
            if let Some(s) = subnets6.first() {
                bail!("invalid subnet {s:?}: an IPv6 subnet needs --ipv6 (a dual-stack network)");
            }
            if let Some(g) = gateways6.first() {
                bail!("invalid gateway {g:?}: an IPv6 gateway needs --ipv6 (a dual-stack network)");
            }
        } else if !req.subnets.is_empty() && subnets6.is_empty() {
            bail!("--ipv6 with only IPv4 subnets ({}): add an IPv6 subnet (--subnet fd42:30::/64), or leave out --subnet to take both from the pools", req.subnets.join(", "));
        }
        let subnet = match subnets4.first() {
            Some(s) => {
                let subnet = ipam::parse_subnet(s)?;
                if let Some(other) = ipam::overlapping(self.state(), &subnet) {
                    bail!(
                        "subnet {subnet} overlaps with network {:?} ({}); choose another subnet",
                        other.name,
                        other.subnet.expect("has subnet")
                    );
                }
                if let Some(r) = ipam::host_conflict(&host_routes, &subnet) {
                    bail!(
                        "subnet {subnet} overlaps the host's own route {} (dev {}); choose another subnet",
                        r.dst,
                        r.dev
                    );
                }
                subnet
            }
            None => ipam::next_subnet(self.state(), &host_routes)?,
        };
        let gateway = match gateways4.first() {
            Some(g) => {
                let gw = ipam::parse_gateway(g)?;
                ipam::check_gateway(&subnet, gw)?;
                gw
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        let host_routes6 = if req.ipv6 {
            self.host_routes6().await?
        } else {
            vec![]
        };
        let subnet6 = match (req.ipv6, subnets6.first()) {
            (false, _) => None,
            (true, Some(s)) => Some(self.checked_subnet6(s, &host_routes6, "subnet")?),
            (true, None) => Some(ipam::next_subnet6(self.state(), &host_routes6)?),
        };
        let gateway6 = match (subnet6, gateways6.first()) {
            (None, _) => None,
            (Some(subnet), Some(g)) => {
                let Ok(IpAddr::V6(gw)) = g.parse::<IpAddr>() else {
                    bail!("invalid gateway {g:?}: expected an IPv6 address such as fd42:30::1");
                };
                ipam::check_gateway6(&subnet, gw)?;
                Some(gw)
            }
            (Some(subnet), None) => Some(ipam::first6(&subnet)),
        };
        let id = new_id();
        let net = Network {
            bridge: (driver == DriverKind::LinuxBridge)
                .then(|| format!("{BRIDGE_PREFIX}{}", &id[..8])),
            id,
            name: name.into(),
            created: now_rfc3339(),
            driver,
            net_id: super::capacity::network_id(self.state())?,
            subnet: Some(subnet),
            gateway: Some(gateway),
            subnet6,
            gateway6,
            internal: req.internal,
            options,
        };
        net.check_supported()?;
        let mut target = self.state().clone();
        target.networks.insert(net.name.clone(), net.clone());
        self.execute(Plan {
            what: format!("network create {name}"),
            recovery: Recovery::RollBack,
            steps: vec![Step::Network {
                network: net.clone(),
            }],
            target,
            networks: vec![],
            sandbox: None,
            after: vec![],
        })
        .await?;
        Ok(net)
    }

    pub async fn network_rm(&mut self, name: &str) -> Result<()> {
        let net = self.network(name)?.clone();
        if net.is_builtin() {
            bail!("{name} is a pre-defined network and cannot be removed");
        }
        let users: Vec<String> = self
            .state()
            .endpoints_of(name)
            .map(|(s, _)| s.name.clone())
            .collect();
        if !users.is_empty() {
            bail!(
                "network {name:?} has {} endpoint{} ({}); disconnect {} first",
                users.len(),
                if users.len() == 1 { "" } else { "s" },
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            );
        }
        let mut target = self.state().clone();
        target.networks.remove(name);
        self.execute(Plan {
            what: format!("network rm {name}"),
            recovery: Recovery::Complete(Redo::NetworkRm { name: name.into() }),
            steps: vec![Step::NetworkDown { network: net }],
            target,
            networks: vec![],
            sandbox: None,
            after: vec![],
        })
        .await
    }
}
