//! The commands: each takes the state lock, checks everything it can before
//! touching the kernel, then acts, undoing its own steps if a later one fails.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::Ipv4Net;

use crate::{
    datapath::{Datapath, LoadReport},
    dns,
    driver::Host,
    ipam,
    netlink::Netlink,
    netns,
    paths::{etc_netns_path, Paths},
    policy::{self, Action, Rule, Traffic},
    state::{DriverKind, Endpoint, Link, Locked, Network, NetworkMode, Sandbox, State},
    util::{check_name, ip_key, mac_for, new_id, now_rfc3339},
};
use bpfnet_common::MAX_RULES;

/// Prefix of every host-side veth bpfnet creates.
pub const HOST_VETH_PREFIX: &str = "bn";
/// Prefix of the kernel bridges of the linux-bridge driver.
pub const BRIDGE_PREFIX: &str = "bnbr";

pub struct Controller {
    pub paths: Paths,
    pub locked: Locked,
    pub host: Host,
}

#[derive(Clone, Debug, Default)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct SandboxCreate {
    pub name: String,
    pub networks: Vec<String>,
    pub aliases: Vec<String>,
    pub ip: Option<Ipv4Addr>,
    pub links: Vec<String>,
}

/// `--network` values resolved.
enum Mode {
    Networks(Vec<String>),
    None,
    Host,
    Container(String),
}

fn builtin(name: &str, driver: DriverKind, net_id: u32, subnet: Option<Ipv4Net>) -> Network {
    Network {
        id: new_id(),
        name: name.into(),
        created: now_rfc3339(),
        driver,
        net_id,
        subnet,
        gateway: subnet.map(|s| Ipv4Addr::from(u32::from(s.network()) + 1)),
        internal: false,
        options: BTreeMap::new(),
        bridge: None,
    }
}

/// Whether a link name has the exact shape of the ones bpfnet makes: its
/// prefix and `hex` lowercase hex digits of an id (gc never touches others).
fn is_ours(name: &str, prefix: &str, hex: usize) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == hex
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Docker's daemon-level `--icc` lives on the default bridge as this option.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

impl Controller {
    /// Locks the state, opens (or loads) the datapath and makes sure the
    /// built-in networks exist.
    pub async fn open(paths: &Paths) -> Result<Self> {
        if !Datapath::is_loaded(paths) {
            // First use, or a new map layout: a full load brings the kernel
            // in line with the state.
            return Ok(Self::load(paths, None).await?.1);
        }
        let locked = Locked::acquire(paths)?;
        let dp = Datapath::open_or_load(paths)?;
        let nl = Netlink::open()?;
        let mut c = Controller {
            paths: paths.clone(),
            locked,
            host: Host { nl, dp },
        };
        c.ensure_builtins().await?;
        dns::ensure_running(&c.paths, c.state());
        Ok(c)
    }

    fn state(&self) -> &State {
        &self.locked.state
    }

    async fn ensure_builtins(&mut self) -> Result<()> {
        let mut changed = false;
        if !self.state().networks.contains_key("bridge") {
            let subnet = ipam::DEFAULT_BRIDGE_SUBNET.parse().expect("valid");
            let net_id = self.state().free_net_id();
            let net = builtin("bridge", DriverKind::Bridge, net_id, Some(subnet));
            self.host.network_up(&net).await?;
            self.locked.state.networks.insert(net.name.clone(), net);
            changed = true;
        }
        for (name, driver) in [("host", DriverKind::Host), ("none", DriverKind::Null)] {
            if !self.state().networks.contains_key(name) {
                self.locked
                    .state
                    .networks
                    .insert(name.into(), builtin(name, driver, 0, None));
                changed = true;
            }
        }
        if changed {
            self.locked.save()?;
        }
        Ok(())
    }

    /// `bpfnet datapath load`: (re)load the programs, then make the kernel
    /// match the state (networks, endpoints, attachments).
    pub async fn load(paths: &Paths, icc: Option<bool>) -> Result<(LoadReport, Self)> {
        let locked = Locked::acquire(paths)?;
        let report = Datapath::load(paths)?;
        let mut c = Controller {
            paths: paths.clone(),
            locked,
            host: Host {
                nl: Netlink::open()?,
                dp: Datapath::open_or_load(paths)?,
            },
        };
        c.ensure_builtins().await?;
        if let Some(icc) = icc {
            let bridge = c.locked.state.networks.get_mut("bridge").expect("built in");
            bridge.options.insert(ICC_OPTION.into(), icc.to_string());
            c.locked.save()?;
        }
        c.sync().await?;
        c.commit()?;
        Datapath::remove_other_layouts(paths)?;
        Ok((report, c))
    }

    /// Compiles the policy for the current membership into the datapath,
    /// writes the state and brings the name responder up to date.
    fn commit(&mut self) -> Result<()> {
        self.host.dp.set_policy(&policy::compile(self.state()))?;
        self.locked.save()?;
        // Names follow the saved state; the responder confirms before we return.
        dns::ensure_running(&self.paths, self.state());
        Ok(())
    }

    /// `bpfnet policy add` and `import`: adds rules in one step (one
    /// compile, one swap of the datapath's rule set); returns their ids.
    pub fn policy_add(
        &mut self,
        rules: Vec<(String, String, Traffic, Action)>,
    ) -> Result<Vec<u32>> {
        policy::check_rules(self.state(), &rules)?;
        let free: Vec<u32> = (1..MAX_RULES)
            .filter(|id| !self.state().policies.contains_key(id))
            .take(rules.len())
            .collect();
        if free.len() < rules.len() {
            bail!(
                "the policy would hold more than {} rules, the most it can; remove some first",
                MAX_RULES - 1
            );
        }
        for ((from, to, traffic, action), id) in rules.iter().zip(&free) {
            let rule = Rule {
                id: *id,
                from: from.clone(),
                to: to.clone(),
                traffic: *traffic,
                action: *action,
            };
            self.locked.state.policies.insert(*id, rule);
        }
        let ids = free;
        self.host.dp.reset_rule_hits(&ids)?;
        if let Err(e) = self.commit() {
            for id in &ids {
                self.locked.state.policies.remove(id);
            }
            let _ = self.host.dp.set_policy(&policy::compile(self.state()));
            return Err(e);
        }
        // A deny applies to established connections too: forget them, so
        // their next packet is judged anew.
        let state = self.state();
        let ips = |sel: &str| -> Vec<u32> {
            policy::endpoints(state, sel)
                .iter()
                .map(|e| ip_key(e.ip))
                .collect()
        };
        let denied: Vec<(Vec<u32>, Vec<u32>, Traffic)> = rules
            .iter()
            .filter(|r| r.3 == Action::Deny)
            .map(|(from, to, traffic, _)| (ips(from), ips(to), *traffic))
            .collect();
        if !denied.is_empty() {
            self.host.dp.flush_conntrack(|k, _| {
                denied.iter().any(|(src, dst, traffic)| {
                    src.contains(&k.src_ip)
                        && dst.contains(&k.dst_ip)
                        && traffic.covers(k.proto, k.dport)
                })
            })?;
        }
        Ok(ids)
    }

    /// `bpfnet policy rm`: all listed rules go in one step, or none (an
    /// unknown ID changes nothing). Connections they allowed end with them.
    pub fn policy_rm(&mut self, ids: &[String]) -> Result<()> {
        let mut numbers = vec![];
        for id in ids {
            let n: u32 = id.parse().map_err(|_| {
                anyhow!("invalid rule ID {id:?}: IDs are numbers, see `bpfnet policy ls`")
            })?;
            if !self.state().policies.contains_key(&n) {
                bail!("rule {n} not found; list rules with `bpfnet policy ls`");
            }
            numbers.push(n);
        }
        let removed: Vec<Rule> = numbers
            .iter()
            .filter_map(|n| self.locked.state.policies.remove(n))
            .collect();
        if let Err(e) = self.commit() {
            for r in removed {
                self.locked.state.policies.insert(r.id, r);
            }
            return Err(e);
        }
        let allowed: Vec<u32> = removed
            .iter()
            .filter(|r| r.action == Action::Allow)
            .map(|r| r.id)
            .collect();
        if !allowed.is_empty() {
            self.host
                .dp
                .flush_conntrack(|_, v| allowed.contains(&v.rule))?;
        }
        Ok(())
    }

    /// Re-creates every map entry and attachment the state implies.
    async fn sync(&self) -> Result<()> {
        let state = self.state();
        for net in state.networks.values() {
            self.host.network_up(net).await?;
        }
        let attached = self.host.dp.attached_interfaces();
        for (_, ep) in state.endpoints() {
            let net = &state.networks[&ep.network];
            if net.driver != DriverKind::Bridge {
                continue;
            }
            let Some(link) = self.host.nl.link_by_name(&ep.host_ifname).await? else {
                continue; // gc's business
            };
            let dp_ep = crate::driver::datapath_endpoint(net, ep, link.mac.unwrap_or_default())?;
            self.host.dp.add_endpoint(link.index, &dp_ep)?;
            if !attached.contains(&ep.host_ifname) {
                self.host.dp.attach(&ep.host_ifname)?;
            }
            self.host.dp.publish_endpoint(link.index, &dp_ep)?;
        }
        for net in state.networks.values() {
            self.host.sync_flood_ports(state, net).await?;
        }
        Ok(())
    }

    fn network(&self, name: &str) -> Result<&Network> {
        self.state().networks.get(name).ok_or_else(|| {
            anyhow!("network {name:?} not found; list networks with `bpfnet network ls`")
        })
    }

    fn sandbox(&self, name: &str) -> Result<&Sandbox> {
        self.state()
            .sandboxes
            .get(name)
            .ok_or_else(|| anyhow!("sandbox {name:?} not found; list sandboxes with `bpfnet ps`"))
    }

    /// The host's routes that are not bpfnet's (none inside a network's
    /// subnet), for the overlap checks of `network create`.
    async fn host_routes(&self) -> Result<Vec<ipam::HostRoute>> {
        let names: BTreeMap<u32, String> = self
            .host
            .nl
            .links()
            .await?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        Ok(self
            .host
            .nl
            .ipv4_routes()
            .await?
            .into_iter()
            .filter(|(dst, _)| !ipam::is_bpfnets(self.state(), dst))
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
            net_id: self.state().free_net_id(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            internal: req.internal,
            options,
        };
        if let Err(e) = self.host.network_up(&net).await {
            let _ = self.host.network_down(&net).await;
            return Err(e);
        }
        self.locked
            .state
            .networks
            .insert(net.name.clone(), net.clone());
        if let Err(e) = self.commit() {
            self.locked.state.networks.remove(&net.name);
            let _ = self.host.network_down(&net).await;
            return Err(e);
        }
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
        self.host.network_down(&net).await?;
        self.locked.state.networks.remove(name);
        self.commit()?;
        Ok(())
    }

    fn parse_mode(&self, networks: &[String]) -> Result<Mode> {
        let special = |n: &str| n == "none" || n == "host" || n.starts_with("container:");
        if networks.len() > 1 && networks.iter().any(|n| special(n)) {
            bail!("--network none, host and container:NAME cannot be combined with other networks");
        }
        Ok(match networks.first().map(String::as_str) {
            None => Mode::Networks(vec!["bridge".into()]),
            Some("none") => Mode::None,
            Some("host") => Mode::Host,
            Some(n) if n.starts_with("container:") => {
                let other = &n["container:".len()..];
                let o = self.sandbox(other).map_err(|_| {
                    anyhow!("cannot join the network namespace of {other:?}: no such sandbox")
                })?;
                if o.mode == NetworkMode::Host {
                    bail!("cannot join the network namespace of {other:?}: it uses the host's network");
                }
                if let NetworkMode::Container(root) = &o.mode {
                    Mode::Container(root.clone())
                } else {
                    Mode::Container(other.to_string())
                }
            }
            Some(_) => {
                for (i, n) in networks.iter().enumerate() {
                    self.network(n)?;
                    if networks[..i].contains(n) {
                        bail!("--network {n} is given twice; give each network once");
                    }
                }
                Mode::Networks(networks.to_vec())
            }
        })
    }

    pub async fn sandbox_create(&mut self, req: SandboxCreate) -> Result<Sandbox> {
        let name = req.name.as_str();
        check_name("sandbox", name)?;
        if self.state().sandboxes.contains_key(name) {
            bail!("sandbox {name:?} already exists; remove it with `bpfnet rm {name}` or pick another name");
        }
        if netns::exists(name) {
            bail!("a network namespace named {name:?} already exists and is not bpfnet's; remove it (`ip netns del {name}`) or pick another name");
        }
        let mode = self.parse_mode(&req.networks)?;
        if !matches!(mode, Mode::Networks(_)) && (req.ip.is_some() || !req.aliases.is_empty()) {
            bail!("--ip and --network-alias need a user-defined network; sandbox {name:?} would use network mode {}", req.networks[0]);
        }
        for a in &req.aliases {
            check_name("alias", a)?;
        }
        let links = req
            .links
            .iter()
            .map(|l| {
                let (target, alias) = l.split_once(':').unwrap_or((l, l));
                self.sandbox(target)
                    .map_err(|_| anyhow!("cannot link to {target:?}: no such sandbox"))?;
                check_name("link alias", alias)?;
                Ok(Link {
                    target: target.into(),
                    alias: alias.into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Mode::Networks(nets) = &mode {
            if req.ip.is_some() && nets[0] == "bridge" {
                bail!("--ip is supported on user-defined networks only, not on the default bridge");
            }
        }
        let sandbox = Sandbox {
            id: new_id(),
            name: name.into(),
            created: now_rfc3339(),
            mode: match &mode {
                Mode::Networks(n) => NetworkMode::Networks(n[0].clone()),
                Mode::None => NetworkMode::None,
                Mode::Host => NetworkMode::Host,
                Mode::Container(o) => NetworkMode::Container(o.clone()),
            },
            endpoints: vec![],
            aliases: req.aliases.clone(),
            links,
        };
        match &mode {
            Mode::Host => netns::create_host_alias(name)?,
            Mode::Container(other) => netns::create_alias(name, other)?,
            Mode::None | Mode::Networks(_) => {
                netns::create(name)?;
                let ns = netns::open(name)?;
                let up = async {
                    let nl = Netlink::open_in(&ns)?;
                    let lo = nl.link_by_name("lo").await?.context("sandbox without lo")?;
                    nl.set_up(lo.index).await
                };
                if let Err(e) = up.await {
                    let _ = netns::delete(name);
                    return Err(e);
                }
            }
        }
        self.locked.state.sandboxes.insert(name.into(), sandbox);
        let result = async {
            if let Mode::Networks(nets) = &mode {
                for (i, n) in nets.iter().enumerate() {
                    let ip = if i == 0 { req.ip } else { None };
                    self.connect_endpoint(n, name, req.aliases.clone(), ip)
                        .await?;
                }
            }
            self.write_etc(name)?;
            self.commit()
        }
        .await;
        if let Err(e) = result {
            let _ = self.remove_sandbox(name).await;
            return Err(e);
        }
        self.refresh_etc_of_dependents(name);
        Ok(self.state().sandboxes[name].clone())
    }

    /// Creates an endpoint of `network` in `sandbox` (state in memory only).
    async fn connect_endpoint(
        &mut self,
        network: &str,
        sandbox: &str,
        aliases: Vec<String>,
        ip: Option<Ipv4Addr>,
    ) -> Result<()> {
        let net = self.network(network)?.clone();
        if net.subnet.is_none() {
            bail!("sandbox {sandbox:?} cannot be connected to the {network} network; create it with --network {network} instead");
        }
        let sb = self.sandbox(sandbox)?;
        if sb.endpoints.iter().any(|e| e.network == network) {
            bail!("sandbox {sandbox:?} is already connected to network {network:?}");
        }
        let ip = ipam::allocate(self.state(), &net, ip)?;
        let index = (0..)
            .find(|i| !sb.endpoints.iter().any(|e| e.ifname == format!("eth{i}")))
            .expect("free index");
        let default_route = sb.endpoints.is_empty();
        let id = new_id();
        let ep = Endpoint {
            host_ifname: format!("{HOST_VETH_PREFIX}{}", &id[..10]),
            host_ifindex: 0,
            id,
            network: network.into(),
            ifname: format!("eth{index}"),
            ip,
            mac: mac_for(ip),
            slot: self.state().free_slot(),
            aliases,
        };
        let ns = netns::open(sandbox)?;
        let mut ep = ep;
        ep.host_ifindex = self.host.endpoint_up(&net, &ep, &ns, default_route).await?;
        let sb = self
            .locked
            .state
            .sandboxes
            .get_mut(sandbox)
            .expect("checked");
        sb.endpoints.push(ep);
        if let Err(e) = self.host.sync_flood_ports(&self.locked.state, &net).await {
            let ep = self
                .locked
                .state
                .sandboxes
                .get_mut(sandbox)
                .expect("checked")
                .endpoints
                .pop();
            let _ = self.host.endpoint_down(&net, &ep.expect("pushed")).await;
            return Err(e);
        }
        Ok(())
    }

    pub async fn connect(
        &mut self,
        network: &str,
        sandbox: &str,
        aliases: Vec<String>,
        ip: Option<Ipv4Addr>,
    ) -> Result<()> {
        let sb = self.sandbox(sandbox)?;
        if !matches!(sb.mode, NetworkMode::Networks(_)) {
            bail!(
                "sandbox {sandbox:?} uses network mode {}; it cannot join networks",
                sb.mode.display()
            );
        }
        self.network(network)?;
        for a in &aliases {
            check_name("alias", a)?;
        }
        if ip.is_some() && network == "bridge" {
            bail!("--ip is supported on user-defined networks only, not on the default bridge");
        }
        self.connect_endpoint(network, sandbox, aliases, ip).await?;
        let result = match self.write_etc(sandbox) {
            Ok(()) => self.commit(),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let _ = self.disconnect_endpoint(network, sandbox).await;
            return Err(e);
        }
        self.refresh_etc_of_dependents(sandbox);
        Ok(())
    }

    async fn disconnect_endpoint(&mut self, network: &str, sandbox: &str) -> Result<()> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?;
        let Some(pos) = sb.endpoints.iter().position(|e| e.network == network) else {
            bail!("sandbox {sandbox:?} is not connected to network {network:?}");
        };
        let ep = sb.endpoints[pos].clone();
        self.host.endpoint_down(&net, &ep).await?;
        let sb = self
            .locked
            .state
            .sandboxes
            .get_mut(sandbox)
            .expect("checked");
        sb.endpoints.remove(pos);
        // The first remaining network's gateway becomes the default route.
        let next = sb.endpoints.first().map(|e| e.network.clone());
        if pos == 0 {
            if let Some(next) = next {
                if let Some(gw) = self.state().networks[&next].gateway {
                    let nl = Netlink::open_in(&netns::open(sandbox)?)?;
                    nl.add_default_route(gw).await?;
                }
            }
        }
        self.host.sync_flood_ports(self.state(), &net).await
    }

    pub async fn disconnect(&mut self, network: &str, sandbox: &str) -> Result<()> {
        self.network(network)?;
        self.sandbox(sandbox)?;
        self.disconnect_endpoint(network, sandbox).await?;
        self.write_etc(sandbox)?;
        self.commit()?;
        self.refresh_etc_of_dependents(sandbox);
        Ok(())
    }

    pub async fn sandbox_rm(&mut self, name: &str, force: bool) -> Result<()> {
        self.sandbox(name)?;
        let sharers = self.state().sharers_of(name);
        if !sharers.is_empty() && !force {
            bail!(
                "sandbox {name:?} is shared by {} (container:{name}); remove {} first or use -f",
                sharers.join(", "),
                if sharers.len() == 1 { "it" } else { "them" }
            );
        }
        self.remove_sandbox(name).await?;
        self.commit()?;
        self.refresh_etc_of_dependents(name);
        Ok(())
    }

    /// Removes a sandbox's endpoints, namespace name and files, and its state.
    async fn remove_sandbox(&mut self, name: &str) -> Result<()> {
        let Some(sb) = self.state().sandboxes.get(name).cloned() else {
            return Ok(());
        };
        for ep in &sb.endpoints {
            let net = self.state().networks[&ep.network].clone();
            self.host.endpoint_down(&net, ep).await?;
        }
        netns::delete(name)?;
        let etc = etc_netns_path(name);
        if etc.exists() {
            std::fs::remove_dir_all(&etc).with_context(|| format!("removing {}", etc.display()))?;
        }
        self.locked.state.sandboxes.remove(name);
        for ep in &sb.endpoints {
            let net = self.state().networks[&ep.network].clone();
            self.host.sync_flood_ports(self.state(), &net).await?;
        }
        Ok(())
    }

    /// `/etc/netns/NAME/{hosts,resolv.conf}`, seen by `ip netns exec` and
    /// `bpfnet exec`. hosts: the sandbox's own name and its links (one
    /// direction: only the linking sandbox resolves the linked one).
    /// resolv.conf: on a user network, the responder on the gateway of the
    /// first one; otherwise (the default bridge resolves no names) the host's
    /// resolvers.
    fn write_etc(&self, name: &str) -> Result<()> {
        let sb = self.sandbox(name)?;
        if sb.mode == NetworkMode::Host {
            return Ok(());
        }
        // container:OTHER lives in OTHER's namespace: OTHER's interfaces.
        let net_owner = match &sb.mode {
            NetworkMode::Container(o) => self.state().sandboxes.get(o).unwrap_or(sb),
            _ => sb,
        };
        let dir = etc_netns_path(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for ep in &net_owner.endpoints {
            hosts.push_str(&format!("{}\t{}\n", ep.ip, sb.name));
        }
        for link in &sb.links {
            let Some(t) = self.state().sandboxes.get(&link.target) else {
                continue; // removed: back when it is recreated
            };
            // Its address on a network the linker is on, as Docker's links.
            let ep = net_owner
                .endpoints
                .iter()
                .find_map(|mine| t.endpoints.iter().find(|e| e.network == mine.network))
                .or(t.endpoints.first());
            if let Some(ep) = ep {
                let names = if link.alias == t.name {
                    t.name.clone()
                } else {
                    format!("{} {}", link.alias, t.name)
                };
                hosts.push_str(&format!("{}\t{names}\n", ep.ip));
            }
        }
        std::fs::write(dir.join("hosts"), hosts)?;
        let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let responder = net_owner.endpoints.iter().find_map(|e| {
            let net = self.state().networks.get(&e.network)?;
            dns::table::resolves_names(net).then_some(net.gateway?)
        });
        let resolv = match responder {
            Some(gw) => dns::sandbox_resolv_conf(&host_conf, gw),
            // The host's resolvers, minus loopback ones a sandbox cannot reach.
            None => host_conf
                .lines()
                .filter(|l| {
                    !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1")))
                })
                .map(|l| format!("{l}\n"))
                .collect(),
        };
        std::fs::write(dir.join("resolv.conf"), resolv)?;
        Ok(())
    }

    /// After `name` changed (created, connected, disconnected, removed):
    /// rewrites the files of the sandboxes that link to it or share its
    /// namespace. Best effort: the command itself has succeeded.
    fn refresh_etc_of_dependents(&self, name: &str) {
        let dependents: Vec<&Sandbox> = self
            .state()
            .sandboxes
            .values()
            .filter(|s| {
                s.links.iter().any(|l| l.target == name)
                    || s.mode == NetworkMode::Container(name.to_string())
            })
            .collect();
        for d in dependents {
            if let Err(e) = self.write_etc(&d.name) {
                eprintln!("warning: updating /etc/netns/{}: {e:#}", d.name);
            }
        }
    }

    /// `bpfnet gc`: reconciles kernel and state; returns what it removed.
    pub async fn gc(&mut self) -> Result<Vec<String>> {
        let mut removed = vec![];
        let gone: Vec<String> = self
            .state()
            .sandboxes
            .values()
            .filter(|s| !netns::exists(&s.name))
            .map(|s| s.name.clone())
            .collect();
        for name in gone {
            self.remove_sandbox(&name).await?;
            removed.push(format!("sandbox {name} (its namespace was gone)"));
        }
        let owned: Vec<String> = self
            .state()
            .endpoints()
            .map(|(_, e)| e.host_ifname.clone())
            .collect();
        let bridges: Vec<String> = self
            .state()
            .networks
            .values()
            .filter_map(|n| n.bridge.clone())
            .collect();
        for link in self.host.nl.links().await? {
            let stray_veth = is_ours(&link.name, HOST_VETH_PREFIX, 10)
                && link.kind.as_deref() == Some("veth")
                && !owned.contains(&link.name);
            let stray_bridge = is_ours(&link.name, BRIDGE_PREFIX, 8)
                && link.kind.as_deref() == Some("bridge")
                && !bridges.contains(&link.name);
            if stray_veth || stray_bridge {
                self.host.nl.delete_link(link.index).await?;
                removed.push(format!("link {}", link.name));
            }
        }
        for ifname in self.host.dp.attached_interfaces() {
            if !owned.contains(&ifname) {
                self.host.dp.detach(&ifname)?;
                removed.push(format!("attachment pins of {ifname}"));
            }
        }
        let mut live = vec![];
        for name in &owned {
            if let Some(l) = self.host.nl.link_by_name(name).await? {
                live.push(l.index);
            }
        }
        for (ifindex, ep) in self.host.dp.endpoints()? {
            if !live.contains(&ifindex) {
                self.host.dp.remove_endpoint(ifindex, &ep)?;
                removed.push(format!("datapath entries of ifindex {ifindex}"));
            }
        }
        self.commit()?;
        Ok(removed)
    }

    /// `bpfnet datapath unload`: everything bpfnet made goes.
    pub async fn unload(paths: &Paths) -> Result<Vec<String>> {
        let mut removed = vec![];
        let mut locked = Locked::acquire(paths)?;
        dns::remove(paths);
        if let Some(dp) = Datapath::open(paths) {
            let mut c = Controller {
                paths: paths.clone(),
                locked,
                host: Host {
                    nl: Netlink::open()?,
                    dp,
                },
            };
            let names: Vec<String> = c.state().sandboxes.keys().cloned().collect();
            for name in names {
                c.remove_sandbox(&name).await?;
                removed.push(format!("sandbox {name}"));
            }
            for net in c.state().networks.values() {
                c.host.network_down(net).await?;
                removed.push(format!("network {}", net.name));
            }
            c.locked.state = State::default();
            removed.extend(c.gc().await?);
            locked = c.locked;
        }
        if Datapath::unload(paths)? {
            removed.push(format!("pins under {}", paths.pin_root().display()));
        }
        drop(locked);
        for f in [paths.state_file(), paths.lock_file()] {
            if std::fs::remove_file(&f).is_ok() {
                removed.push(format!("{}", f.display()));
            }
        }
        let _ = std::fs::remove_dir(&paths.state_dir);
        Ok(removed)
    }

    pub fn snapshot(&self) -> &State {
        self.state()
    }

    pub fn datapath(&self) -> &Datapath {
        &self.host.dp
    }
}
