//! Networks: `network create` and `network rm`.
use std::{collections::BTreeMap, net::Ipv4Addr};

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
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub options: Vec<String>,
}

impl Controller {
    /// The host's routes that are not bpfnet's (none inside a network's
    /// subnet), for the overlap checks of `network create`. Only their
    /// devices are looked up, not every link (thousands of host-side veths).
    async fn host_routes(&self) -> Result<Vec<ipam::HostRoute>> {
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
            if !names.contains_key(&index) {
                if let Some(link) = self.host.nl.link_by_index(index).await? {
                    names.insert(index, link.name);
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
        let subnet = match &req.subnet {
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
        let gateway = match &req.gateway {
            Some(g) => {
                let gw = ipam::parse_gateway(g)?;
                ipam::check_gateway(&subnet, gw)?;
                gw
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
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
