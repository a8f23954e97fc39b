//! Netlink behind a small wrapper that speaks in intentions (create a veth,
//! add an address, a route…) rather than in netlink messages.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use ipnet::{Ipv4Net, Ipv6Net};
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
        route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
            RouteType,
        },
        rule::RuleAction,
    },
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
};

use crate::netns;

/// A link as listed by [`Netlink::links`].
#[derive(Clone, Debug)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// Its alias (IFLA_IFALIAS): bpfnet marks what it makes with
    /// [`OWNER_ALIAS`] and the id of the object.
    pub alias: Option<String>,
}

/// The alias prefix of every link bpfnet makes: what gc goes by, so that a
/// link is never removed for its name alone.
pub const OWNER_ALIAS: &str = "bpfnet:";

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    handle: Handle,
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// A request whose goal is already reached when it fails with `fine`
/// (EEXIST for an add, ENODEV/ESRCH for a delete).
fn idempotent(
    r: Result<(), rtnetlink::Error>,
    fine: i32,
    what: impl FnOnce() -> String,
) -> Result<()> {
    match r {
        Err(e) if !is_errno(&e, fine) => Err(e).with_context(what),
        _ => Ok(()),
    }
}

impl Netlink {
    /// A connection in the calling thread's namespace. Needs a tokio runtime.
    pub fn open() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection inside another namespace: a netlink socket stays bound to
    /// the namespace it was created in.
    pub fn open_in(ns: &impl AsFd) -> Result<Self> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = netns::run_in(ns, || {
            let _guard = rt.enter();
            rtnetlink::new_connection().context("opening netlink in namespace")
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Interface>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing links")?;
        Ok(msgs.into_iter().map(link_of).collect())
    }

    /// The IPv4 routes of the main table other than the default route:
    /// (destination, output interface).
    pub async fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, Option<u32>)>> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        let mut out = vec![];
        for m in msgs {
            let table = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(m.header.table));
            let len = m.header.destination_prefix_length;
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) || len == 0 {
                continue;
            }
            let mut dst = None;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Some(net) = dst.and_then(|d| Ipv4Net::new(d, len).ok()) {
                out.push((net, oif));
            }
        }
        Ok(out)
    }

    /// The IPv6 routes of the main table other than the default route:
    /// (destination, output interface).
    pub async fn ipv6_routes(&self) -> Result<Vec<(Ipv6Net, Option<u32>)>> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        let mut out = vec![];
        for m in msgs {
            let len = m.header.destination_prefix_length;
            if table_of(&m) != u32::from(RouteHeader::RT_TABLE_MAIN) || len == 0 {
                continue;
            }
            let mut dst = None;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Some(net) = dst.and_then(|d| Ipv6Net::new(d, len).ok()) {
                out.push((net, oif));
            }
        }
        Ok(out)
    }

    /// The IPv4 default route of the main table: (gateway, output interface).
    pub async fn ipv4_default_route(&self) -> Result<Option<(Ipv4Addr, u32)>> {
        let route = self
            .default_route(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .await?;
        Ok(route.and_then(|(gw, oif)| match gw {
            RouteAddress::Inet(ip) => Some((ip, oif)),
            _ => None,
        }))
    }

    /// The IPv6 default route of the main table: (gateway, output interface).
    pub async fn ipv6_default_route(&self) -> Result<Option<(Ipv6Addr, u32)>> {
        let route = self
            .default_route(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .await?;
        Ok(route.and_then(|(gw, oif)| match gw {
            RouteAddress::Inet6(ip) => Some((ip, oif)),
            _ => None,
        }))
    }

    /// The default route of the main table among the routes `dump` asks
    /// for (one family): its gateway and output interface.
    async fn default_route(&self, dump: RouteMessage) -> Result<Option<(RouteAddress, u32)>> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(dump)
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        Ok(msgs.into_iter().find_map(|m| {
            let main = table_of(&m) == u32::from(RouteHeader::RT_TABLE_MAIN)
                && m.header.destination_prefix_length == 0;
            let gw = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(gw) => Some(gw.clone()),
                _ => None,
            });
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            main.then_some(gw.zip(oif)).flatten()
        }))
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Interface>> {
        let mut req = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match req.try_next().await {
            Ok(m) => Ok(m.map(link_of)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// The link with this index, if there is one.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Interface>> {
        let mut req = self.handle.link().get().match_index(index).execute();
        match req.try_next().await {
            Ok(m) => Ok(m.map(link_of)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {index}")),
        }
    }

    /// Creates a veth pair: `host` here, `peer` (with `peer_mac`) directly in
    /// the namespace `peer_ns`; then gives the host side the alias `owner`
    /// (the kernel ignores an alias in the creating request). Returns the
    /// host side.
    pub async fn create_veth(
        &self,
        host: &str,
        owner: &str,
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: &impl AsFd,
    ) -> Result<Interface> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(peer_mac.to_vec())
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating veth {host}"))?;
        let mut link = self
            .link_by_name(host)
            .await?
            .ok_or_else(|| anyhow!("veth {host} vanished after creation"))?;
        self.set_alias(link.index, owner).await?;
        link.alias = Some(owner.to_string());
        Ok(link)
    }

    async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("naming link {index} {alias:?}"))
    }

    /// Creates a bridge, then gives it the alias `owner`.
    pub async fn create_bridge(&self, name: &str, owner: &str) -> Result<Interface> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .with_context(|| format!("creating bridge {name}"))?;
        let mut link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("bridge {name} vanished after creation"))?;
        self.set_alias(link.index, owner).await?;
        link.alias = Some(owner.to_string());
        Ok(link)
    }

    pub async fn set_controller(&self, index: u32, controller: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(controller)
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .context("attaching link to bridge")
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("setting link {index} up"))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("setting the MTU of link {index} to {mtu}"))
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        let r = self.handle.link().del(index).execute().await;
        idempotent(r, libc::ENODEV, || format!("deleting link {index}"))
    }

    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let r = self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await;
        idempotent(r, libc::EEXIST, || {
            format!("adding address {ip}/{prefix_len}")
        })
    }

    /// Every address message of a link.
    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("listing addresses")
    }

    /// The addresses of a link, with their prefix lengths: IPv4 by their
    /// local address, IPv6 by theirs (IPv6 has no separate local one).
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let addrs = self.address_messages(index).await?;
        Ok(addrs
            .iter()
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Local(ip @ IpAddr::V4(_))
                    | AddressAttribute::Address(ip @ IpAddr::V6(_)) => {
                        Some((*ip, m.header.prefix_len))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// Deletes `ip/prefix_len` from the link: only that exact address, not
    /// another one with the same IP (127.0.0.1/8 is not a gateway's /32).
    pub async fn delete_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        for msg in self.address_messages(index).await? {
            let matches = msg.header.prefix_len == prefix_len
                && msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) if *a == ip));
            if matches {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .with_context(|| format!("deleting address {ip}/{prefix_len}"))?;
            }
        }
        Ok(())
    }

    /// `ip route replace …`: adds the route, or makes an existing one this.
    async fn replace_route(&self, msg: RouteMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .with_context(what)
    }

    /// `ip route add IP/32 dev INDEX src SRC scope link`.
    pub async fn add_host_route(&self, ip: Ipv4Addr, index: u32, src: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .output_interface(index)
            .pref_source(src)
            .scope(RouteScope::Link)
            .build();
        self.replace_route(msg, || format!("adding route to {ip}"))
            .await
    }

    /// `ip route add default via GW`.
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.replace_route(msg, || format!("adding default route via {gateway}"))
            .await
    }

    /// Source routing for a sandbox on several networks: what leaves with
    /// this endpoint's address leaves through this endpoint (its subnet, then
    /// its gateway), so replies to another network take the interface the
    /// request came in by. `ip rule add from IP lookup TABLE` plus the table.
    pub async fn add_source_routing(
        &self,
        index: u32,
        ip: Ipv4Addr,
        subnet: (Ipv4Addr, u8),
        gateway: Ipv4Addr,
        table: u32,
    ) -> Result<()> {
        let on_link = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.0, subnet.1)
            .output_interface(index)
            .pref_source(ip)
            .scope(RouteScope::Link)
            .table_id(table)
            .build();
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .table_id(table)
            .build();
        for msg in [on_link, default] {
            self.replace_route(msg, || format!("adding routes of table {table}"))
                .await?;
        }
        let r = self
            .handle
            .rule()
            .add()
            .v4()
            .source_prefix(ip, 32)
            .table_id(table)
            .action(RuleAction::ToTable)
            .priority(table)
            .execute()
            .await;
        idempotent(r, libc::EEXIST, || format!("adding rule from {ip}"))
    }

    /// `ip route add unreachable NET proto 191`: no address of a bpfnet
    /// subnet that is not an endpoint leaks to the host's default route.
    /// Never replaces a route that is not bpfnet's; an unreachable route for
    /// exactly this subnet without bpfnet's proto was made by an older
    /// bpfnet (which used `static`) and is taken over.
    pub async fn add_unreachable_route(&self, net: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let what = || format!("adding unreachable route {net}/{prefix_len}");
        let r = self
            .handle
            .route()
            .add(unreachable(net, prefix_len))
            .execute()
            .await;
        match r {
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            r => return r.with_context(what),
        }
        let existing = self.routes().await?.into_iter().find(|m| {
            table_of(m) == u32::from(RouteHeader::RT_TABLE_MAIN)
                && m.header.destination_prefix_length == prefix_len
                && destination(m) == Some(net)
                && m.header.kind == RouteType::Unreachable
        });
        match existing {
            Some(m) if m.header.protocol == RouteProtocol::Other(ROUTE_PROTO) => Ok(()),
            Some(_) => self.replace_route(unreachable(net, prefix_len), what).await,
            None => bail!("the host already has a route to {net}/{prefix_len} that bpfnet did not add; remove it or give the network another subnet"),
        }
    }

    /// Deletes the unreachable route of `add_unreachable_route`: the kernel
    /// matches type and proto, so a route bpfnet did not add stays.
    pub async fn delete_unreachable_route(&self, net: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let r = self
            .handle
            .route()
            .del(unreachable(net, prefix_len))
            .execute()
            .await;
        idempotent(r, libc::ESRCH, || {
            format!("deleting route {net}/{prefix_len}")
        })
    }

    async fn routes(&self) -> Result<Vec<RouteMessage>> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("listing routes")
    }

    /// `ip -6 addr add IP/LEN dev INDEX nodad`: usable at once, no
    /// duplicate address detection (the datapath owns the segment; a DAD
    /// probe would only be dropped).
    pub async fn add_address6(&self, index: u32, ip: Ipv6Addr, prefix_len: u8) -> Result<()> {
        let mut req = self.handle.address().add(index, IpAddr::V6(ip), prefix_len);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        let r = req.execute().await;
        idempotent(r, libc::EEXIST, || {
            format!("adding address {ip}/{prefix_len}")
        })
    }

    /// Deletes exactly `ip/prefix_len` from the link.
    pub async fn delete_address6(&self, index: u32, ip: Ipv6Addr, prefix_len: u8) -> Result<()> {
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("listing addresses")?;
        for msg in addrs {
            let matches = msg.header.prefix_len == prefix_len
                && msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V6(a)) if *a == ip));
            if matches {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .with_context(|| format!("deleting address {ip}/{prefix_len}"))?;
            }
        }
        Ok(())
    }

    /// `ip -6 route add IP/128 dev INDEX src SRC`.
    pub async fn add_host_route6(&self, ip: Ipv6Addr, index: u32, src: Ipv6Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(ip, 128)
            .output_interface(index)
            .pref_source(src)
            .build();
        self.replace_route(msg, || format!("adding route to {ip}"))
            .await
    }

    /// `ip -6 route add default via GW dev INDEX`.
    pub async fn add_default_route6(&self, gateway: Ipv6Addr, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.replace_route(msg, || format!("adding default route via {gateway}"))
            .await
    }

    /// `ip -6 route add unreachable NET proto 191`, as
    /// [`Self::add_unreachable_route`] for IPv4: never replaces a route
    /// bpfnet did not add.
    pub async fn add_unreachable_route6(&self, net: Ipv6Addr, prefix_len: u8) -> Result<()> {
        let what = || format!("adding unreachable route {net}/{prefix_len}");
        let r = self
            .handle
            .route()
            .add(unreachable6(net, prefix_len))
            .execute()
            .await;
        match r {
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            r => return r.with_context(what),
        }
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        let ours = routes.iter().any(|m| {
            m.header.destination_prefix_length == prefix_len
                && m.header.kind == RouteType::Unreachable
                && m.header.protocol == RouteProtocol::Other(ROUTE_PROTO)
                && m.attributes.iter().any(|a| {
                    matches!(a, RouteAttribute::Destination(RouteAddress::Inet6(d)) if *d == net)
                })
        });
        if !ours {
            bail!("the host already has a route to {net}/{prefix_len} that bpfnet did not add; remove it or give the network another subnet");
        }
        Ok(())
    }

    /// Deletes the route of [`Self::add_unreachable_route6`].
    pub async fn delete_unreachable_route6(&self, net: Ipv6Addr, prefix_len: u8) -> Result<()> {
        let r = self
            .handle
            .route()
            .del(unreachable6(net, prefix_len))
            .execute()
            .await;
        idempotent(r, libc::ESRCH, || {
            format!("deleting route {net}/{prefix_len}")
        })
    }

    /// A permanent neighbour entry: the host never has to ask by ARP or ND.
    pub async fn add_permanent_neighbour(
        &self,
        index: u32,
        ip: impl Into<IpAddr>,
        mac: [u8; 6],
    ) -> Result<()> {
        let ip: IpAddr = ip.into();
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding neighbour {ip}"))
    }
}

/// `proto` of the routes bpfnet adds to the host (unassigned in
/// rtnetlink.h): what it deletes must carry it.
pub const ROUTE_PROTO: u8 = 191;

fn unreachable(net: Ipv4Addr, prefix_len: u8) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net, prefix_len)
        .kind(RouteType::Unreachable)
        .protocol(RouteProtocol::Other(ROUTE_PROTO))
        .build()
}

fn unreachable6(net: Ipv6Addr, prefix_len: u8) -> RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(net, prefix_len)
        .kind(RouteType::Unreachable)
        .protocol(RouteProtocol::Other(ROUTE_PROTO))
        .build()
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn destination(m: &RouteMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn link_of(msg: LinkMessage) -> Interface {
    let mut link = Interface {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        alias: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::Address(a) if a.len() == 6 => {
                link.mac = Some(a.try_into().expect("6 bytes"));
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
