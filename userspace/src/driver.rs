//! How a network and its endpoints are realised. `bridge` is the eBPF
//! datapath; `linux-bridge` builds the same topology on a kernel bridge so
//! that benchmarks compare like with like. The command layer only calls
//! `network_up`/`network_down`/`endpoint_up`/`endpoint_down`.
use std::os::fd::OwnedFd;

use anyhow::{anyhow, Context as _, Result};
use bpfnet_common::{self as common, net_flags, FdbEntry, MAX_FLOOD_PORTS};

use crate::{
    datapath::Datapath,
    netlink::Netlink,
    netns,
    state::{DriverKind, Endpoint, Network, State},
    util::ip_key,
};

/// What the drivers act with.
pub struct Host {
    pub nl: Netlink,
    pub dp: Datapath,
}

fn datapath_network(net: &Network) -> Result<common::Network> {
    let (subnet, gateway) = net
        .subnet
        .zip(net.gateway)
        .ok_or_else(|| anyhow!("network {:?} has no subnet", net.name))?;
    let mut flags = 0;
    if net.flood() {
        flags |= net_flags::FLOOD;
    }
    if net.internal {
        flags |= net_flags::INTERNAL;
    }
    if !net.icc() {
        flags |= net_flags::ICC_OFF;
    }
    Ok(common::Network {
        gateway: ip_key(gateway),
        subnet: ip_key(subnet.network()),
        prefix_len: u32::from(subnet.prefix_len()),
        flags,
        flood_ports: 0,
    })
}

/// The datapath's view of an endpoint.
pub fn datapath_endpoint(
    net: &Network,
    ep: &Endpoint,
    gw_mac: [u8; 6],
) -> Result<common::Endpoint> {
    let dp_net = datapath_network(net)?;
    Ok(common::Endpoint {
        net_id: net.net_id,
        ip: ip_key(ep.ip),
        slot: ep.slot,
        mac: ep.mac,
        gw_mac,
        gateway: dp_net.gateway,
        net_flags: dp_net.flags,
    })
}

impl Host {
    async fn lo_index(&self) -> Result<u32> {
        Ok(self
            .nl
            .link_by_name("lo")
            .await?
            .ok_or_else(|| anyhow!("no loopback device"))?
            .index)
    }

    /// Makes the network exist in the kernel. Idempotent.
    pub async fn network_up(&self, net: &Network) -> Result<()> {
        let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
            return Ok(()); // host, none
        };
        match net.driver {
            DriverKind::Bridge => {
                // The gateway is a host address; the host-side veths carry no
                // subnet, each endpoint gets a /32 route instead (Cilium's way).
                self.nl.add_address(self.lo_index().await?, gw, 32).await?;
                self.nl
                    .add_unreachable_route(subnet.network(), subnet.prefix_len())
                    .await?;
                let mut dp_net = datapath_network(net)?;
                if let Some(old) = self.dp.network(net.net_id)? {
                    dp_net.flood_ports = old.flood_ports;
                }
                self.dp.set_network(net.net_id, &dp_net)?;
            }
            DriverKind::LinuxBridge => {
                let name = net
                    .bridge
                    .as_deref()
                    .context("linux-bridge network without a bridge name")?;
                let br = match self.nl.link_by_name(name).await? {
                    Some(l) => l,
                    None => self.nl.create_bridge(name).await?,
                };
                self.nl
                    .add_address(br.index, gw, subnet.prefix_len())
                    .await?;
                self.nl.set_up(br.index).await?;
            }
            DriverKind::Host | DriverKind::Null => {}
        }
        Ok(())
    }

    /// Removes what `network_up` made. Missing pieces are fine.
    pub async fn network_down(&self, net: &Network) -> Result<()> {
        let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
            return Ok(());
        };
        match net.driver {
            DriverKind::Bridge => {
                self.dp
                    .remove_network(net.net_id, &datapath_network(net)?)?;
                self.nl
                    .delete_unreachable_route(subnet.network(), subnet.prefix_len())
                    .await?;
                self.nl.delete_address(self.lo_index().await?, gw).await?;
            }
            DriverKind::LinuxBridge => {
                if let Some(br) = self
                    .nl
                    .link_by_name(net.bridge.as_deref().unwrap_or_default())
                    .await?
                {
                    self.nl.delete_link(br.index).await?;
                }
            }
            DriverKind::Host | DriverKind::Null => {}
        }
        Ok(())
    }

    /// Creates the endpoint's veth pair and wires it into the network.
    /// `default_route`: this network's gateway becomes the sandbox's.
    /// Returns the host-side ifindex.
    pub async fn endpoint_up(
        &self,
        net: &Network,
        ep: &Endpoint,
        ns: &OwnedFd,
        default_route: bool,
    ) -> Result<u32> {
        let (subnet, gw) = net
            .subnet
            .zip(net.gateway)
            .context("network without subnet")?;
        let host = self
            .nl
            .create_veth(&ep.host_ifname, &ep.ifname, ep.mac, ns)
            .await?;
        let result = async {
            // Inside the sandbox: address, up, route. No IPv6 until bpfnet
            // supports it (and no router solicitations to count as drops).
            let ifname = ep.ifname.clone();
            netns::run_in(ns, move || {
                let _ = netns::sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1");
                Ok(())
            })?;
            let inner = Netlink::open_in(ns)?;
            let peer = inner
                .link_by_name(&ep.ifname)
                .await?
                .ok_or_else(|| anyhow!("{} vanished from the sandbox", ep.ifname))?;
            inner
                .add_address(peer.index, ep.ip, subnet.prefix_len())
                .await?;
            inner.set_up(peer.index).await?;
            if default_route {
                inner.add_default_route(gw).await?;
            }
            // eth<N> gets routing table 1000+N for what it sends.
            let table = 1000
                + ep.ifname
                    .trim_start_matches("eth")
                    .parse::<u32>()
                    .unwrap_or(0);
            inner
                .add_source_routing(
                    peer.index,
                    ep.ip,
                    (subnet.network(), subnet.prefix_len()),
                    gw,
                    table,
                )
                .await?;
            let _ = netns::sysctl(
                &format!("net/ipv6/conf/{}/disable_ipv6", ep.host_ifname),
                "1",
            );
            match net.driver {
                DriverKind::Bridge => {
                    let gw_mac = host.mac.context("host-side veth without MAC")?;
                    // Known before anything is attached; reachable only
                    // after the programs guard it.
                    let dp_ep = datapath_endpoint(net, ep, gw_mac)?;
                    self.dp.add_endpoint(host.index, &dp_ep)?;
                    self.dp.attach(&ep.host_ifname)?;
                    self.dp.publish_endpoint(host.index, &dp_ep)?;
                    self.nl.set_up(host.index).await?;
                    self.nl.add_host_route(ep.ip, host.index, gw).await?;
                    self.nl
                        .add_permanent_neighbour(host.index, ep.ip, ep.mac)
                        .await?;
                }
                DriverKind::LinuxBridge => {
                    let br = self
                        .nl
                        .link_by_name(net.bridge.as_deref().unwrap_or_default())
                        .await?
                        .context("the network's bridge is missing; run `bpfnet gc`")?;
                    self.nl.set_controller(host.index, br.index).await?;
                    self.nl.set_up(host.index).await?;
                }
                DriverKind::Host | DriverKind::Null => {}
            }
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self.endpoint_down(net, ep).await;
        }
        result.map(|()| host.index)
    }

    /// Takes the endpoint out: unreachable first, then detached, then gone.
    pub async fn endpoint_down(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        // The veth may already be gone (its namespace was deleted behind our
        // back): the datapath is cleaned up all the same.
        let host = self.nl.link_by_name(&ep.host_ifname).await?;
        if net.driver == DriverKind::Bridge {
            let (index, mac) = match &host {
                Some(l) => (l.index, l.mac.unwrap_or_default()),
                None => (ep.host_ifindex, [0; 6]),
            };
            let dp_ep = datapath_endpoint(net, ep, mac)?;
            if index != 0 {
                self.dp.remove_endpoint(index, &dp_ep)?;
            }
            self.dp.detach(&ep.host_ifname)?;
            // Its connections must not carry over to whoever gets the address next.
            let ip = dp_ep.ip;
            self.dp
                .flush_conntrack(|k, _| k.src_ip == ip || k.dst_ip == ip)?;
        }
        match host {
            Some(h) => self.nl.delete_link(h.index).await,
            None => Ok(()),
        }
    }

    /// Rewrites the broadcast ports of a network from the state.
    pub async fn sync_flood_ports(&self, state: &State, net: &Network) -> Result<()> {
        if net.driver != DriverKind::Bridge {
            return Ok(());
        }
        let mut ports = vec![];
        for (_, ep) in state.endpoints_of(&net.name).take(MAX_FLOOD_PORTS as usize) {
            let ifindex = match ep.host_ifindex {
                0 => match self.nl.link_by_name(&ep.host_ifname).await? {
                    Some(link) => link.index,
                    None => continue,
                },
                i => i,
            };
            ports.push(FdbEntry {
                ifindex,
                slot: ep.slot,
            });
        }
        self.dp.set_flood_ports(net.net_id, &ports)
    }
}
