//! The `bridge` driver: the eBPF datapath. A network is a gateway address
//! on `lo`, an unreachable route for its subnet and its entries in the
//! datapath's maps; an endpoint is its host-side veth with both programs
//! attached, its map entries, a /32 route and a permanent neighbour (the
//! host-side veths carry no subnet: Cilium's way).
use anyhow::{anyhow, Context as _, Result};
use bpfnet_common::{self as common, net_flags, FdbEntry, MAX_FLOOD_PORTS};
use futures::future::BoxFuture;

use super::{subnet_and_gateway, Driver, Host};
use crate::{
    fault,
    netlink::Interface,
    state::{Endpoint, Network, State},
    util::ip_key,
};

pub struct Ebpf;

pub(super) fn datapath_network(net: &Network) -> Result<common::NetworkEntry> {
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
    Ok(common::NetworkEntry {
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
) -> Result<common::EndpointEntry> {
    let dp_net = datapath_network(net)?;
    Ok(common::EndpointEntry {
        net_id: net.net_id,
        ip: ip_key(ep.ip),
        slot: ep.slot,
        mac: ep.mac,
        gw_mac,
        gateway: dp_net.gateway,
        net_flags: dp_net.flags,
    })
}

/// The datapath's view of an endpoint's IPv6 side (dual-stack networks).
pub fn datapath_endpoint6(net: &Network, ep: &Endpoint) -> Option<common::Endpoint6> {
    net.subnet6?;
    let ip6 = ep.ip6?;
    Some(common::Endpoint6 {
        ip6: ip6.octets(),
        link_local: crate::util::link_local(ep.mac).octets(),
    })
}

impl Driver for Ebpf {
    fn network_up<'a>(&'a self, host: &'a Host, net: &'a Network) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (subnet, gw) = subnet_and_gateway(net)?;
            // The gateway is a host address; the host-side veths carry no
            // subnet, each endpoint gets a /32 route instead.
            host.nl.add_address(host.lo_index().await?, gw, 32).await?;
            host.nl
                .add_unreachable_route(subnet.network(), subnet.prefix_len())
                .await?;
            // IPv6 the same way: the gateway a /128 on lo, the subnet
            // unreachable but for each endpoint's /128. What leaves the
            // host is nat.rs's business (NAT66, forwarding).
            if let (Some(subnet6), Some(gw6)) = (net.subnet6, net.gateway6) {
                host.nl
                    .add_address6(host.lo_index().await?, gw6, 128)
                    .await?;
                host.nl
                    .add_unreachable_route6(subnet6.network(), subnet6.prefix_len())
                    .await?;
            }
            if let (Some(subnet6), Some(gw6)) = (net.subnet6, net.gateway6) {
                host.dp.set_network6(
                    net.net_id,
                    (subnet6.network().octets(), subnet6.prefix_len()),
                    &common::Network6 {
                        gateway6: gw6.octets(),
                    },
                )?;
            }
            let mut dp_net = datapath_network(net)?;
            if let Some(old) = host.dp.network(net.net_id)? {
                dp_net.flood_ports = old.flood_ports;
            }
            host.dp.set_network(net.net_id, &dp_net)
        })
    }

    fn network_down<'a>(&'a self, host: &'a Host, net: &'a Network) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (subnet, gw) = subnet_and_gateway(net)?;
            host.dp
                .remove_network(net.net_id, &datapath_network(net)?)?;
            if let Some(subnet6) = net.subnet6 {
                host.dp.remove_network6(
                    net.net_id,
                    (subnet6.network().octets(), subnet6.prefix_len()),
                )?;
            }
            host.nl
                .delete_unreachable_route(subnet.network(), subnet.prefix_len())
                .await?;
            if let (Some(subnet6), Some(gw6)) = (net.subnet6, net.gateway6) {
                host.nl
                    .delete_unreachable_route6(subnet6.network(), subnet6.prefix_len())
                    .await?;
                host.nl
                    .delete_address6(host.lo_index().await?, gw6, 128)
                    .await?;
            }
            host.nl.delete_address(host.lo_index().await?, gw, 32).await
        })
    }

    fn endpoint_attach<'a>(
        &'a self,
        host: &'a Host,
        net: &'a Network,
        ep: &'a Endpoint,
        link: &'a Interface,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let gw = net.gateway.context("network without gateway")?;
            let gw_mac = link.mac.context("host-side veth without MAC")?;
            // Known to the datapath before anything is attached; reachable
            // by others only once the programs guard it.
            let dp_ep = datapath_endpoint(net, ep, gw_mac)?;
            let dp_ep6 = datapath_endpoint6(net, ep);
            if let Some(ep6) = &dp_ep6 {
                host.dp.add_endpoint6(link.index, ep6)?;
            }
            host.dp.add_endpoint(link.index, &dp_ep)?;
            fault::point("ebpf-attach:endpoint-entry");
            host.dp.attach(&ep.host_ifname)?;
            fault::point("ebpf-attach:programs");
            host.dp.publish_endpoint(link.index, &dp_ep)?;
            if let Some(ep6) = &dp_ep6 {
                host.dp.publish_endpoint6(net.net_id, ep6, ep.mac)?;
            }
            fault::point("ebpf-attach:published");
            host.nl.set_up(link.index).await?;
            host.nl.add_host_route(ep.ip, link.index, gw).await?;
            host.nl
                .add_permanent_neighbour(link.index, ep.ip, ep.mac)
                .await?;
            if let (Some(ip6), Some(gw6)) = (ep.ip6, net.gateway6) {
                host.nl.add_host_route6(ip6, link.index, gw6).await?;
                host.nl
                    .add_permanent_neighbour(link.index, ip6, ep.mac)
                    .await?;
            }
            Ok(())
        })
    }

    fn endpoint_detach<'a>(
        &'a self,
        host: &'a Host,
        net: &'a Network,
        ep: &'a Endpoint,
        ifindex: Option<u32>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let dp_ep = datapath_endpoint(net, ep, [0; 6])?;
            // Unreachable (FDB, neighbour: only if they still point at this
            // endpoint — an address is reused once it is free) and forgotten.
            // The programs stay attached until the veth goes with its
            // filters (Host::endpoint_down deletes it next): until then they
            // drop what the sandbox sends (not-an-endpoint) instead of
            // letting it reach the host unjudged.
            if let Some(ep6) = datapath_endpoint6(net, ep) {
                host.dp
                    .remove_endpoint6(ifindex, net.net_id, &ep6, ep.mac)?;
            }
            let owned = host.dp.remove_endpoint_entries(ifindex, &dp_ep)?;
            // One pass over the table (it may hold 65,536 connections):
            // its IPv6 connections are tracked under its counter slot,
            // which the next endpoint may get; and, when the address was
            // its own, its IPv4 ones must not carry over to whoever gets
            // the address next.
            let slot = crate::util::slot_key(ep.slot);
            let ip = owned.then_some(dp_ep.ip);
            host.dp.flush_conntrack(|k, _| {
                [k.src_ip, k.dst_ip]
                    .iter()
                    .any(|&a| a == slot || Some(a) == ip)
            })?;
            Ok(())
        })
    }

    fn sync_members<'a>(
        &'a self,
        host: &'a Host,
        state: &'a State,
        net: &'a Network,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let ports: Vec<FdbEntry> = state
                .endpoints_of(&net.name)
                .filter(|(_, ep)| ep.host_ifindex != 0)
                .take(MAX_FLOOD_PORTS as usize)
                .map(|(_, ep)| FdbEntry {
                    ifindex: ep.host_ifindex,
                    slot: ep.slot,
                })
                .collect();
            host.dp.set_flood_ports(net.net_id, &ports)
        })
    }
}
