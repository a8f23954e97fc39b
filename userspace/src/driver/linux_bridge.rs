//! The `linux-bridge` driver: the same topology on a kernel bridge (named
//! `bnbr` + 8 hex digits of the network id), for comparisons. The gateway
//! address sits on the bridge; endpoints are its ports.
use anyhow::{Context as _, Result};
use futures::future::BoxFuture;

use super::{subnet_and_gateway, Driver, Host};
use crate::{
    netlink::{Interface, OWNER_ALIAS},
    state::{Endpoint, Network},
};

pub struct LinuxBridge;

fn bridge_name(net: &Network) -> Result<&str> {
    net.bridge
        .as_deref()
        .context("linux-bridge network without a bridge name")
}

impl Driver for LinuxBridge {
    fn network_up<'a>(&'a self, host: &'a Host, net: &'a Network) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (subnet, gw) = subnet_and_gateway(net)?;
            let name = bridge_name(net)?;
            let br = match host.nl.link_by_name(name).await? {
                Some(l) => l,
                None => {
                    let owner = format!("{OWNER_ALIAS}network:{}", net.id);
                    host.nl.create_bridge(name, &owner).await?
                }
            };
            host.nl
                .add_address(br.index, gw, subnet.prefix_len())
                .await?;
            // Known to the eBPF datapath as a network of its own, so that
            // isolation holds between it and the eBPF networks both ways.
            host.dp
                .set_network(net.net_id, &super::ebpf::datapath_network(net)?)?;
            host.nl.set_up(br.index).await
        })
    }

    fn network_down<'a>(&'a self, host: &'a Host, net: &'a Network) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            host.dp
                .remove_network(net.net_id, &super::ebpf::datapath_network(net)?)?;
            match host.nl.link_by_name(bridge_name(net)?).await? {
                Some(br) => host.nl.delete_link(br.index).await,
                None => Ok(()),
            }
        })
    }

    fn endpoint_attach<'a>(
        &'a self,
        host: &'a Host,
        net: &'a Network,
        _: &'a Endpoint,
        link: &'a Interface,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let br = host
                .nl
                .link_by_name(bridge_name(net)?)
                .await?
                .context("the network's bridge is missing; run `bpfnet gc`")?;
            host.nl.set_controller(link.index, br.index).await?;
            host.nl.set_up(link.index).await
        })
    }
}
