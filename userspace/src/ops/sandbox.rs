//! Sandboxes and their endpoints: `create`, `network connect`, `network
//! disconnect`, `rm`. Everything is decided from the state first (names,
//! addresses, interface names, counter slots); the plan then only acts.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, bail, Result};

use super::{
    journal::{Recovery, Redo},
    step::Step,
    Controller, Plan,
};
use crate::{
    ipam, nat, netns,
    paths::netns_path,
    policy,
    state::{DnsSettings, Endpoint, Link, NetworkMode, Sandbox, State},
    util::{self, check_name, mac_for, new_id, now_rfc3339},
};

/// Prefix of every host-side veth bpfnet creates (`bn` + 10 hex digits of
/// the endpoint id: unique to the endpoint).
pub const HOST_VETH_PREFIX: &str = "bn";

#[derive(Clone, Debug, Default)]
pub struct SandboxCreate {
    pub name: String,
    pub networks: Vec<String>,
    pub aliases: Vec<String>,
    pub ip: Option<Ipv4Addr>,
    /// `--ip6`, on the first network.
    pub ip6: Option<Ipv6Addr>,
    pub links: Vec<String>,
    /// `--publish` specs, as given.
    pub publish: Vec<String>,
    /// `--expose` specs, as given.
    pub expose: Vec<String>,
    /// `-P`: publish every exposed port on a random host port.
    pub publish_all: bool,
    /// `--dns`.
    pub dns: Vec<Ipv4Addr>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`, as given.
    pub add_hosts: Vec<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
}

/// `--dns*`, `--add-host` and `--hostname` checked.
fn dns_settings(req: &SandboxCreate, mode: &Mode) -> Result<DnsSettings> {
    let d = DnsSettings {
        servers: req.dns.clone(),
        search: req.dns_search.clone(),
        options: req.dns_options.clone(),
        extra_hosts: req
            .add_hosts
            .iter()
            .map(|h| {
                let bad =
                    || anyhow!("invalid --add-host {h:?}: expected NAME:IP (an IPv4 address)");
                let (name, ip) = h.rsplit_once(':').ok_or_else(bad)?;
                check_hostname("--add-host", name)?;
                Ok((name.to_string(), ip.parse().map_err(|_| bad())?))
            })
            .collect::<Result<_>>()?,
        hostname: req.hostname.clone(),
    };
    for s in &d.search {
        check_hostname("--dns-search", s.strip_suffix('.').unwrap_or(s))?;
    }
    for o in &d.options {
        let ok = !o.is_empty()
            && o.len() <= 64
            && o.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        if !ok {
            bail!("invalid --dns-option {o:?}: a resolv.conf option such as ndots:2 (letters, digits, '_', '.', ':', '-')");
        }
    }
    if let Some(h) = &d.hostname {
        check_hostname("--hostname", h)?;
    }
    if !d.is_empty() && matches!(mode, Mode::Host | Mode::Container(_)) {
        bail!("--dns, --dns-search, --dns-option, --add-host and --hostname cannot be used with network mode {}; the namespace's resolver files are not the sandbox's own", req.networks[0]);
    }
    Ok(d)
}

/// A host name as RFC 1123 spells it: dot-separated labels of letters,
/// digits and '-', each 1-63 long and not starting or ending with '-'.
fn check_hostname(what: &str, name: &str) -> Result<()> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        bail!("invalid {what} {name:?}: a host name is dot-separated labels of letters, digits and '-' (1-63 each, not starting or ending with '-')");
    }
    Ok(())
}

/// `--ip` and `--ip6` are for user-defined networks (Docker's rule).
fn no_address_on_default_bridge(ip: bool, ip6: bool) -> Result<()> {
    if ip {
        bail!("--ip is supported on user-defined networks only, not on the default bridge");
    }
    if ip6 {
        bail!("--ip6 is supported on user-defined networks only, not on the default bridge");
    }
    Ok(())
}

/// The plan of a connect or disconnect: the endpoint's step, then the
/// sandbox's /etc files rewritten for its new set of networks.
fn endpoint_plan(
    what: String,
    recovery: Recovery,
    step: Step,
    target: State,
    network: &str,
    sandbox: &str,
) -> Plan {
    Plan {
        what,
        recovery,
        steps: vec![
            step,
            Step::EtcFiles {
                sandbox: sandbox.into(),
            },
        ],
        target,
        networks: vec![network.into()],
        sandbox: Some(sandbox.into()),
        after: vec![],
    }
}

/// `--network` values resolved.
enum Mode {
    Networks(Vec<String>),
    None,
    Host,
    Container(String),
}

impl Controller {
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
        util::check_etc_netns_free(name)?;
        let mode = self.parse_mode(&req.networks)?;
        if !matches!(mode, Mode::Networks(_)) && req.ip6.is_some() {
            bail!(
                "--ip6 needs a user-defined network; sandbox {name:?} would use network mode {}",
                req.networks[0]
            );
        }
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
            if nets[0] == "bridge" {
                no_address_on_default_bridge(req.ip.is_some(), req.ip6.is_some())?;
            }
        }
        let (via, mode_text) = match &mode {
            Mode::Networks(nets) => (
                nets.iter()
                    .map(|n| &self.state().networks[n])
                    .find(|n| nat::reaches_out(n)),
                format!("only --internal networks ({})", nets.join(", ")),
            ),
            _ => (None, format!("network mode {}", req.networks[0])),
        };
        let (ports, exposed) = super::ports::resolve_ports(self.state(), &req, &mode_text, via)?;
        let dns = dns_settings(&req, &mode)?;
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
            ports,
            exposed,
            dns,
            netns: None,
            cni: None,
            docker: None,
        };
        let mut target = self.state().clone();
        target.sandboxes.insert(name.into(), sandbox.into());
        let mut steps = vec![match &mode {
            Mode::Host => Step::NetnsAlias {
                name: name.into(),
                source: netns::HOST_NETNS.into(),
                inode: None,
            },
            Mode::Container(other) => Step::NetnsAlias {
                name: name.into(),
                source: netns_path(other).display().to_string(),
                inode: None,
            },
            Mode::None | Mode::Networks(_) => Step::Netns {
                name: name.into(),
                inode: None,
            },
        }];
        let mut networks = vec![];
        if let Mode::Networks(nets) = &mode {
            for (i, n) in nets.iter().enumerate() {
                let (ip, ip6) = if i == 0 {
                    (req.ip, req.ip6)
                } else {
                    (None, None)
                };
                steps.push(plan_endpoint(
                    &mut target,
                    n,
                    name,
                    req.aliases.clone(),
                    (ip, ip6),
                    None,
                )?);
                networks.push(n.clone());
            }
        }
        steps.push(Step::EtcFiles {
            sandbox: name.into(),
        });
        self.execute(Plan {
            what: format!("create {name}"),
            recovery: Recovery::RollBack,
            steps,
            target,
            networks,
            sandbox: Some(name.into()),
            after: vec![],
        })
        .await?;
        Ok(Sandbox::clone(&self.state().sandboxes[name]))
    }

    pub async fn connect(
        &mut self,
        network: &str,
        sandbox: &str,
        aliases: Vec<String>,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
    ) -> Result<()> {
        let sb = self.sandbox(sandbox)?;
        if sb.docker.is_some() {
            bail!("sandbox {sandbox:?} is a Docker container; connect it with `docker network connect`");
        }
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
        if network == "bridge" {
            no_address_on_default_bridge(ip.is_some(), ip6.is_some())?;
        }
        let mut target = self.state().clone();
        let step = plan_endpoint(&mut target, network, sandbox, aliases, (ip, ip6), None)?;
        self.execute(endpoint_plan(
            format!("connect {sandbox} to {network}"),
            Recovery::RollBack,
            step,
            target,
            network,
            sandbox,
        ))
        .await
    }

    pub async fn disconnect(&mut self, network: &str, sandbox: &str) -> Result<()> {
        self.network(network)?;
        self.sandbox(sandbox)?;
        let mut target = self.state().clone();
        let step = plan_endpoint_removal(&mut target, network, sandbox)?;
        self.execute(endpoint_plan(
            format!("disconnect {sandbox} from {network}"),
            Recovery::Complete(Redo::Disconnect {
                network: network.into(),
                sandbox: sandbox.into(),
            }),
            step,
            target,
            network,
            sandbox,
        ))
        .await
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
        let mut target = self.state().clone();
        let (mut steps, mut networks) = (vec![], vec![]);
        rm_steps(&mut target, name, &mut steps, &mut networks);
        self.execute(Plan {
            what: format!("rm {name}"),
            recovery: Recovery::Complete(Redo::SandboxRm { name: name.into() }),
            steps,
            target,
            networks,
            sandbox: Some(name.into()),
            after: vec![],
        })
        .await
    }

    /// Removes every sandbox of `names` (that exists) in one operation: one
    /// journal, one commit, each network's derived state brought in line
    /// once (`datapath unload` with thousands of sandboxes). Sandboxes that
    /// share a namespace go too (as with `rm -f`).
    pub async fn sandboxes_rm(&mut self, names: &[String]) -> Result<()> {
        let mut target = self.state().clone();
        let names: Vec<String> = names
            .iter()
            .filter(|n| target.sandboxes.contains_key(*n))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let (mut steps, mut networks) = (vec![], vec![]);
        for name in &names {
            rm_steps(&mut target, name, &mut steps, &mut networks);
        }
        networks.sort();
        networks.dedup();
        let links: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::EndpointDown {
                    endpoint,
                    leave: true,
                    ..
                } => Some(endpoint.host_ifname.clone()),
                _ => None,
            })
            .collect();
        if !links.is_empty() {
            steps.push(Step::LinksGone { links });
        }
        self.execute(Plan {
            what: format!("rm {} sandboxes", names.len()),
            recovery: Recovery::Complete(Redo::SandboxesRm { names }),
            steps,
            target,
            networks,
            sandbox: None,
            after: vec![],
        })
        .await
    }
}

/// The steps that remove sandbox `name` (it exists), and `target` without
/// it; the networks whose membership changes are added to `networks`.
/// Veths of a namespace that goes are left to die with it (see
/// `Step::EndpointDown::leave`).
fn rm_steps(target: &mut State, name: &str, steps: &mut Vec<Step>, networks: &mut Vec<String>) {
    let sb = target.sandboxes.remove(name).expect("checked");
    // Its own namespace goes too, unless sandboxes that stay still share it
    // (a runtime's namespace is never bpfnet's to use).
    let ends = sb.netns.is_none() && target.sharers_of(name).is_empty();
    for ep in &sb.endpoints {
        steps.push(Step::EndpointDown {
            sandbox: name.into(),
            network: target.networks[&ep.network].clone(),
            endpoint: ep.clone(),
            next_default: None,
            leave: ends,
        });
        networks.push(ep.network.clone());
    }
    // A runtime's namespace (and its /etc) stays: it is the runtime's.
    if sb.netns.is_none() {
        steps.push(Step::NetnsDelete { name: name.into() });
        steps.push(Step::EtcRemove {
            sandbox: name.into(),
        });
    }
}

/// Adds an endpoint of `network` to `sandbox` in `target` (address,
/// interface name — `ifname` when the caller names it, else the first free
/// `eth<N>` — counter slot, unique veth name) and returns its step.
pub(super) fn plan_endpoint(
    target: &mut State,
    network: &str,
    sandbox: &str,
    aliases: Vec<String>,
    (ip, ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ifname: Option<&str>,
) -> Result<Step> {
    let net = target.networks[network].clone();
    if net.options.contains_key(super::docker::DOCKER_NETWORK_ID) {
        // Docker's IPAM hands out its addresses: it would not know ours.
        bail!("network {network:?} is Docker's; run containers on it with `docker run --network {network}`");
    }
    if net.subnet.is_none() {
        bail!("sandbox {sandbox:?} cannot be connected to the {network} network; create it with --network {network} instead");
    }
    policy::check_join(target, sandbox, network)?;
    let sb = &target.sandboxes[sandbox];
    if sb.endpoints.iter().any(|e| e.network == network) {
        bail!("sandbox {sandbox:?} is already connected to network {network:?}");
    }
    let ip = ipam::allocate(target, &net, ip)?;
    let ip6 = ipam::allocate6(target, &net, ip6)?;
    let ifname = match ifname {
        Some(n) => n.to_string(),
        None => (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !sb.endpoints.iter().any(|e| &e.ifname == n))
            .expect("free index"),
    };
    // The first network that reaches beyond the host carries the default
    // route; an internal network never does (Docker's behaviour).
    let default_route = !net.internal && carrier(target, sb).is_none();
    let id = new_id();
    let ep = Endpoint {
        host_ifname: format!("{HOST_VETH_PREFIX}{}", &id[..10]),
        host_ifindex: 0,
        id,
        network: network.into(),
        ifname,
        ip,
        ip6,
        mac: mac_for(ip),
        slot: super::capacity::endpoint_slot(target)?,
        aliases,
    };
    target
        .sandboxes
        .get_mut(sandbox)
        .expect("checked")
        .endpoints
        .push(ep.clone());
    Ok(Step::Endpoint {
        sandbox: sandbox.into(),
        network: net,
        endpoint: ep,
        default_route,
        ifindex: None,
    })
}

/// Removes the endpoint of `network` from `sandbox` in `target` and returns
/// its step; the next network that reaches out carries the default route
/// when the removed endpoint carried it.
pub(super) fn plan_endpoint_removal(
    target: &mut State,
    network: &str,
    sandbox: &str,
) -> Result<Step> {
    let sb = &target.sandboxes[sandbox];
    let Some(pos) = sb.endpoints.iter().position(|e| e.network == network) else {
        bail!("sandbox {sandbox:?} is not connected to network {network:?}");
    };
    let carried = carrier(target, sb).map(|e| e.network.as_str()) == Some(network);
    let sb = target.sandboxes.get_mut(sandbox).expect("checked");
    let ep = sb.endpoints.remove(pos);
    // Docker sets the routes of its containers itself.
    let docker = sb.docker.is_some();
    let next_default = match carrier(target, &target.sandboxes[sandbox]) {
        Some(next) if carried && !docker => target.networks[&next.network].gateway,
        _ => None,
    };
    Ok(Step::EndpointDown {
        sandbox: sandbox.into(),
        network: target.networks[network].clone(),
        endpoint: ep,
        next_default,
        leave: false,
    })
}

/// The endpoint that carries a sandbox's default route: its first on a
/// network that is not internal.
fn carrier<'a>(state: &State, sb: &'a Sandbox) -> Option<&'a Endpoint> {
    sb.endpoints
        .iter()
        .find(|e| state.networks.get(&e.network).is_some_and(|n| !n.internal))
}
