//! Sandboxes and their endpoints: `create`, `network connect`, `network
//! disconnect`, `rm`. Everything is decided from the state first (names,
//! addresses, interface names, counter slots); the plan then only acts.
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};

use super::{
    journal::{Recovery, Redo},
    step::Step,
    Controller, Plan,
};
use crate::{
    ipam, netns,
    paths::netns_path,
    policy,
    state::{Endpoint, Link, NetworkMode, Sandbox, State},
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
    pub links: Vec<String>,
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
            netns: None,
            docker: None,
        };
        let mut target = self.state().clone();
        target.sandboxes.insert(name.into(), sandbox);
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
                let ip = if i == 0 { req.ip } else { None };
                steps.push(plan_endpoint(
                    &mut target,
                    n,
                    name,
                    req.aliases.clone(),
                    ip,
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
        Ok(self.state().sandboxes[name].clone())
    }

    pub async fn connect(
        &mut self,
        network: &str,
        sandbox: &str,
        aliases: Vec<String>,
        ip: Option<Ipv4Addr>,
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
        if ip.is_some() && network == "bridge" {
            bail!("--ip is supported on user-defined networks only, not on the default bridge");
        }
        let mut target = self.state().clone();
        let step = plan_endpoint(&mut target, network, sandbox, aliases, ip)?;
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
        let sb = self.sandbox(name)?.clone();
        let sharers = self.state().sharers_of(name);
        if !sharers.is_empty() && !force {
            bail!(
                "sandbox {name:?} is shared by {} (container:{name}); remove {} first or use -f",
                sharers.join(", "),
                if sharers.len() == 1 { "it" } else { "them" }
            );
        }
        let mut target = self.state().clone();
        let mut steps = vec![];
        let mut networks = vec![];
        for ep in &sb.endpoints {
            steps.push(Step::EndpointDown {
                sandbox: name.into(),
                network: target.networks[&ep.network].clone(),
                endpoint: ep.clone(),
                next_default: None,
            });
            networks.push(ep.network.clone());
        }
        target.sandboxes.remove(name);
        if sb.owns_netns() {
            // Another's namespace (a Docker container's) is never deleted.
            steps.push(Step::NetnsDelete { name: name.into() });
            steps.push(Step::EtcRemove {
                sandbox: name.into(),
            });
        }
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
}

/// Adds an endpoint of `network` to `sandbox` in `target` (address,
/// interface name, counter slot, unique veth name) and returns its step.
fn plan_endpoint(
    target: &mut State,
    network: &str,
    sandbox: &str,
    aliases: Vec<String>,
    ip: Option<Ipv4Addr>,
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
/// its step; the first remaining network's gateway becomes the default route
/// when the removed endpoint carried it.
fn plan_endpoint_removal(target: &mut State, network: &str, sandbox: &str) -> Result<Step> {
    let sb = target.sandboxes.get_mut(sandbox).expect("checked");
    let Some(pos) = sb.endpoints.iter().position(|e| e.network == network) else {
        bail!("sandbox {sandbox:?} is not connected to network {network:?}");
    };
    let ep = sb.endpoints.remove(pos);
    let next = sb.endpoints.first().map(|e| e.network.clone());
    let owns = sb.owns_netns();
    let next_default = match next {
        // Docker sets the routes of its containers itself.
        Some(next) if pos == 0 && owns => target.networks[&next].gateway,
        _ => None,
    };
    Ok(Step::EndpointDown {
        sandbox: sandbox.into(),
        network: target.networks[network].clone(),
        endpoint: ep,
        next_default,
    })
}
