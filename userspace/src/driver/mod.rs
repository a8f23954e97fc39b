//! How a network and its endpoints are realised in the kernel. A driver
//! turns the libnetwork vocabulary into kernel objects; the operations
//! (`ops`) never know which driver they talk to. `bridge` is the eBPF
//! datapath ([`ebpf`]), `linux-bridge` the same topology on a kernel bridge
//! ([`linux_bridge`]), kept so that benchmarks compare like with like; the
//! built-in `host` and `none` networks have nothing to realise.
//!
//! What is common to every driver — the veth pair, the sandbox side of it
//! (address, routes) — lives in [`Host`]; the driver wires the host side in.
pub mod ebpf;
pub mod linux_bridge;

use std::{net::Ipv4Addr, os::fd::OwnedFd};

use anyhow::{anyhow, Context as _, Result};
use futures::future::BoxFuture;
use ipnet::Ipv4Net;

use crate::{
    datapath::Datapath,
    fault,
    netlink::{Interface, Netlink, OWNER_ALIAS},
    netns,
    state::{DriverKind, Endpoint, Network, State},
};

/// The subnet and gateway of a network a driver realises (every such
/// network has both).
fn subnet_and_gateway(net: &Network) -> Result<(Ipv4Net, Ipv4Addr)> {
    net.subnet
        .zip(net.gateway)
        .context("network without subnet")
}

/// What the drivers act with: netlink in the host namespace and the datapath.
pub struct Host {
    pub nl: Netlink,
    pub dp: Datapath,
}

/// The driver-specific part of networks and endpoints. Every method is
/// idempotent: it may be run again after a crash, and missing pieces are fine.
pub trait Driver: Sync {
    /// Makes the network exist in the kernel.
    fn network_up<'a>(&'a self, host: &'a Host, net: &'a Network) -> BoxFuture<'a, Result<()>>;
    /// Removes what `network_up` made.
    fn network_down<'a>(&'a self, host: &'a Host, net: &'a Network) -> BoxFuture<'a, Result<()>>;
    /// Wires an endpoint's host-side veth (`link`) into the network.
    fn endpoint_attach<'a>(
        &'a self,
        host: &'a Host,
        net: &'a Network,
        ep: &'a Endpoint,
        link: &'a Interface,
    ) -> BoxFuture<'a, Result<()>>;
    /// Takes the endpoint out of the network before its veth goes. `ifindex`
    /// is the host-side veth's, when known (the veth may be gone already).
    /// Entries that another endpoint owns now are left alone. By default
    /// nothing: what the driver made goes with the veth.
    fn endpoint_detach<'a>(
        &'a self,
        _host: &'a Host,
        _net: &'a Network,
        _ep: &'a Endpoint,
        _ifindex: Option<u32>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Brings what the driver derives from membership (broadcast ports) in
    /// line with `state`. By default there is nothing to derive.
    fn sync_members<'a>(
        &'a self,
        _host: &'a Host,
        _state: &'a State,
        _net: &'a Network,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// `host` and `none`: nothing in the kernel.
struct Builtin;

impl Driver for Builtin {
    fn network_up<'a>(&'a self, _: &'a Host, _: &'a Network) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn network_down<'a>(&'a self, _: &'a Host, _: &'a Network) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn endpoint_attach<'a>(
        &'a self,
        _: &'a Host,
        net: &'a Network,
        _: &'a Endpoint,
        _: &'a Interface,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Err(anyhow!("network {:?} has no endpoints", net.name)) })
    }
}

/// The driver of a network.
pub fn of(net: &Network) -> &'static dyn Driver {
    match net.driver {
        DriverKind::Bridge => &ebpf::Ebpf,
        DriverKind::LinuxBridge => &linux_bridge::LinuxBridge,
        DriverKind::Host | DriverKind::Null => &Builtin,
    }
}

/// The host side of an endpoint's pair: on a dual-stack network IPv6 on,
/// but with no address at all (not even a link-local one a sandbox could
/// reach): the gateway address lives on lo, and the host reaches the
/// endpoint by its /128 route and permanent neighbour entry. Elsewhere,
/// no IPv6.
fn host_side_ipv6(ep: &Endpoint, v6: bool) -> Result<()> {
    if v6 {
        for (key, value) in [
            ("accept_ra", "0"),
            ("autoconf", "0"),
            ("addr_gen_mode", "1"),
        ] {
            netns::sysctl(&format!("net/ipv6/conf/{}/{key}", ep.host_ifname), value)?;
        }
    } else {
        let _ = netns::sysctl(
            &format!("net/ipv6/conf/{}/disable_ipv6", ep.host_ifname),
            "1",
        );
    }
    Ok(())
}

impl Host {
    pub(crate) async fn lo_index(&self) -> Result<u32> {
        Ok(self
            .nl
            .link_by_name("lo")
            .await?
            .ok_or_else(|| anyhow!("no loopback device"))?
            .index)
    }

    /// Creates the endpoint's veth pair and configures the sandbox side
    /// (address, up, routes); the driver then wires the host side in.
    /// `noted` is called with the host-side ifindex as soon as it exists.
    /// On error, what was made is removed again.
    pub async fn endpoint_up(
        &self,
        net: &Network,
        ep: &Endpoint,
        ns: &OwnedFd,
        default_route: bool,
        noted: &mut dyn FnMut(u32) -> Result<()>,
    ) -> Result<u32> {
        let host = self
            .nl
            .create_veth(
                &ep.host_ifname,
                &format!("{OWNER_ALIAS}endpoint:{}", ep.id),
                &ep.ifname,
                ep.mac,
                ns,
            )
            .await?;
        let result = async {
            noted(host.index)?;
            fault::point("endpoint-up:veth-created");
            self.configure_sandbox_side(net, ep, ns, default_route)
                .await?;
            fault::point("endpoint-up:sandbox-side");
            of(net).endpoint_attach(self, net, ep, &host).await
        }
        .await;
        if let Err(e) = result {
            let undo = self.endpoint_down(net, ep, Some(host.index)).await;
            return Err(with_undo_errors(e, undo.err().into_iter().collect()));
        }
        Ok(host.index)
    }

    /// A Docker endpoint: the veth pair made in the host namespace, the
    /// container end (`peer`, with the endpoint's MAC) left there for Docker
    /// to move into the container and rename; the MTU set on both ends; the
    /// host end wired in by the driver. On error, what was made is removed.
    pub async fn docker_endpoint_up(
        &self,
        net: &Network,
        ep: &Endpoint,
        peer: &str,
        mtu: Option<u32>,
        noted: &mut dyn FnMut(u32) -> Result<()>,
    ) -> Result<u32> {
        let here = std::fs::File::open("/proc/thread-self/ns/net")
            .context("opening the host's network namespace")?;
        let host = self
            .nl
            .create_veth(
                &ep.host_ifname,
                &format!("{OWNER_ALIAS}endpoint:{}", ep.id),
                peer,
                ep.mac,
                &here,
            )
            .await?;
        let result = async {
            noted(host.index)?;
            fault::point("endpoint-up:veth-created");
            if let Some(mtu) = mtu {
                self.nl.set_mtu(host.index, mtu).await?;
                let p = self
                    .nl
                    .link_by_name(peer)
                    .await?
                    .ok_or_else(|| anyhow!("veth {peer} vanished after creation"))?;
                self.nl.set_mtu(p.index, mtu).await?;
            }
            host_side_ipv6(ep, ep.ip6.is_some() && net.ipv6())?;
            of(net).endpoint_attach(self, net, ep, &host).await
        }
        .await;
        if let Err(e) = result {
            let undo = self.endpoint_down(net, ep, Some(host.index)).await;
            return Err(with_undo_errors(e, undo.err().into_iter().collect()));
        }
        Ok(host.index)
    }

    async fn configure_sandbox_side(
        &self,
        net: &Network,
        ep: &Endpoint,
        ns: &OwnedFd,
        default_route: bool,
    ) -> Result<()> {
        let (subnet, gw) = net
            .subnet
            .zip(net.gateway)
            .context("network without subnet")?;
        // IPv6 only on a dual-stack network, and then without router
        // advertisements, autoconfiguration or DAD: the address and routes
        // are bpfnet's, the link-local one comes from the MAC (EUI-64), as
        // the datapath's source check expects. On an IPv4-only network the
        // interface has no IPv6 at all (Docker's way; the datapath stays
        // the barrier should root inside turn it back on).
        let ifname = ep.ifname.clone();
        let v6 = ep.ip6.is_some() && net.ipv6();
        netns::run_in(ns, move || {
            if v6 {
                for (key, value) in [
                    ("accept_ra", "0"),
                    ("autoconf", "0"),
                    ("accept_dad", "0"),
                    ("addr_gen_mode", "0"),
                    ("disable_ipv6", "0"),
                ] {
                    netns::sysctl(&format!("net/ipv6/conf/{ifname}/{key}"), value)?;
                }
            } else {
                let _ = netns::sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1");
            }
            // Defence in depth behind the datapath's own check: unicast
            // IPv4 in a group frame is not taken by the sandbox either.
            let _ = netns::sysctl(
                &format!("net/ipv4/conf/{ifname}/drop_unicast_in_l2_multicast"),
                "1",
            );
            Ok(())
        })?;
        host_side_ipv6(ep, v6)?;
        let inner = Netlink::open_in(ns)?;
        let peer = inner
            .link_by_name(&ep.ifname)
            .await?
            .ok_or_else(|| anyhow!("{} vanished from the sandbox", ep.ifname))?;
        inner
            .add_address(peer.index, ep.ip, subnet.prefix_len())
            .await?;
        if let (true, Some(ip6), Some(subnet6)) = (v6, ep.ip6, net.subnet6) {
            inner
                .add_address6(peer.index, ip6, subnet6.prefix_len())
                .await?;
        }
        inner.set_up(peer.index).await?;
        if default_route {
            inner.add_default_route(gw).await?;
            if let (true, Some(gw6)) = (v6, net.gateway6) {
                inner.add_default_route6(gw6, peer.index).await?;
            }
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
            .await
    }

    /// Takes the endpoint out, then deletes its veth (found by its unique
    /// name) — or, given the sandbox's namespace that is about to go, moves
    /// it in there to die with it. Missing pieces are fine.
    pub async fn endpoint_down(
        &self,
        net: &Network,
        ep: &Endpoint,
        ifindex: Option<u32>,
    ) -> Result<()> {
        let link = self.nl.link_by_name(&ep.host_ifname).await?;
        let ifindex = link
            .as_ref()
            .map(|l| l.index)
            .or(ifindex)
            .or((ep.host_ifindex != 0).then_some(ep.host_ifindex));
        of(net).endpoint_detach(self, net, ep, ifindex).await?;
        fault::point("endpoint-down:detached");
        match link {
            Some(l) => self.nl.delete_link(l.index).await,
            None => Ok(()),
        }
    }
}

/// An error, with the errors of the undo that followed it.
pub fn with_undo_errors(e: anyhow::Error, undo: Vec<anyhow::Error>) -> anyhow::Error {
    if undo.is_empty() {
        return e;
    }
    let list: Vec<String> = undo.iter().map(|u| format!("{u:#}")).collect();
    anyhow!(
        "{e:#} (undoing it failed too: {}; run `bpfnet gc`)",
        list.join("; ")
    )
}
