//! What the Docker driver (`crate::docker`, `bpfnet docker-plugin`) asks of
//! the library: networks Docker creates, its containers' endpoints, the
//! names Docker gives them, and which of its sandboxes gc may remove. Every
//! change is a plan of the same executor as the CLI's.
//!
//! Ids: a Docker network is a bpfnet network whose id is Docker's NetworkID
//! (also kept as the option [`DOCKER_NETWORK_ID`]); a Docker endpoint is a
//! bpfnet endpoint whose id is Docker's EndpointID; a Docker container is a
//! sandbox whose namespace is the container's SandboxKey (not bpfnet's:
//! never deleted) and which carries [`DockerEndpoint`].
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{anyhow, bail, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{journal::Recovery, sandbox::HOST_VETH_PREFIX, step::Step, Controller, Plan};
use crate::{
    ipam, netns, policy,
    state::{DockerEndpoint, DriverKind, Endpoint, Network, NetworkMode, Sandbox},
    util::{check_name, mac_for, new_id, now_rfc3339, valid_name},
};

/// The option that marks a network as Docker's, with its NetworkID.
pub const DOCKER_NETWORK_ID: &str = "bpfnet.docker.network-id";
/// The MTU of a network's veths (Docker's `-o com.docker.network.driver.mtu`).
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// Prefix of the container end of a Docker endpoint's veth pair while it is
/// in the host namespace (before Join moves it, after Leave brings it back).
pub const CONTAINER_VETH_PREFIX: &str = "bc";

/// `docker network create -d bpfnet`, as CreateNetwork carries it.
#[derive(Clone, Debug)]
pub struct DockerNetworkCreate {
    pub id: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// `--ipv6`: the IPv6 subnet and gateway of Docker's IPAM.
    pub v6: Option<(Ipv6Net, Ipv6Addr)>,
    pub internal: bool,
    /// Options, already mapped (see `docker::options`).
    pub options: BTreeMap<String, String>,
}

/// Join of an endpoint Docker created.
#[derive(Clone, Debug)]
pub struct DockerJoin {
    pub network_id: String,
    pub endpoint_id: String,
    pub ip: Ipv4Addr,
    /// On a dual-stack network: the IPv6 address Docker's IPAM chose.
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    pub sandbox_key: PathBuf,
}

/// What Join answers Docker.
#[derive(Clone, Debug)]
pub struct Joined {
    /// The container end of the veth pair, in the host namespace.
    pub peer: String,
    /// None on an internal network (no default route).
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 gateway, on a dual-stack network that is not internal.
    pub gateway6: Option<Ipv6Addr>,
    pub sandbox: String,
}

/// The name a Docker network has until Docker's API tells its real one.
pub fn provisional_network_name(id: &str) -> String {
    format!("docker-{}", &id[..id.len().min(12)])
}

/// The container end's name of endpoint `id`.
pub fn container_veth(id: &str) -> String {
    format!("{CONTAINER_VETH_PREFIX}{}", &id[..id.len().min(10)])
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The MTU a network asks for, if any.
pub fn mtu_of(net: &Network) -> Option<u32> {
    net.options.get(MTU_OPTION).and_then(|m| m.parse().ok())
}

impl Controller {
    /// The bpfnet network of Docker's NetworkID.
    pub fn docker_network(&self, id: &str) -> Option<&Network> {
        self.state()
            .networks
            .values()
            .find(|n| n.options.get(DOCKER_NETWORK_ID).map(String::as_str) == Some(id))
    }

    /// The sandbox and endpoint of Docker's EndpointID.
    pub fn docker_endpoint(&self, id: &str) -> Option<(&Sandbox, &Endpoint)> {
        self.state()
            .endpoints()
            .find(|(s, e)| s.docker.is_some() && e.id == id)
    }

    /// For the CLI: Docker's networks are removed through Docker (which
    /// would otherwise keep a network its driver no longer has).
    pub fn refuse_docker_network(&self, name: &str) -> Result<()> {
        match self.state().networks.get(name) {
            Some(n) if n.options.contains_key(DOCKER_NETWORK_ID) => bail!(
                "network {name:?} is Docker's (docker network create -d bpfnet); remove it with `docker network rm {name}`"
            ),
            _ => Ok(()),
        }
    }

    /// For the CLI: Docker's containers change through Docker; `remedy`
    /// says how.
    pub fn refuse_docker_sandbox(&self, name: &str, remedy: &str) -> Result<()> {
        match self.state().sandboxes.get(name) {
            Some(s) if s.docker.is_some() => {
                bail!("sandbox {name:?} is a Docker container; {remedy}")
            }
            _ => Ok(()),
        }
    }

    /// CreateNetwork. Docker never sends it again (not after a restart of
    /// dockerd or of the plugin), so the network lives in bpfnet's state.
    /// Named `docker-<id>` until Docker's API tells its name.
    pub async fn docker_network_create(&mut self, req: DockerNetworkCreate) -> Result<Network> {
        if let Some(n) = self.docker_network(&req.id) {
            return Ok(n.clone()); // sent again after a failure of ours
        }
        if req.id.len() < 12 || !req.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("invalid NetworkID {:?}: Docker sends 64 hex digits", req.id);
        }
        // The same rails as `bpfnet network create --subnet`.
        let subnet = ipam::parse_subnet(&req.subnet.to_string())?;
        if let Some(other) = ipam::overlapping(self.state(), &subnet) {
            bail!(
                "subnet {subnet} overlaps bpfnet network {:?} ({}); choose another --subnet",
                other.name,
                other.subnet.map(|s| s.to_string()).unwrap_or_default()
            );
        }
        if let Some(r) = ipam::host_conflict(&self.host_routes().await?, &subnet) {
            bail!(
                "subnet {subnet} overlaps the host's own route {} (dev {}); choose another --subnet",
                r.dst,
                r.dev
            );
        }
        ipam::check_gateway(&subnet, req.gateway)?;
        let v6 = match req.v6 {
            Some((subnet6, gateway6)) => {
                let routes = self.host_routes6().await?;
                let subnet6 = self.checked_subnet6(&subnet6.to_string(), &routes, "--subnet")?;
                ipam::check_gateway6(&subnet6, gateway6)?;
                Some((subnet6, gateway6))
            }
            None => None,
        };
        let name = provisional_network_name(&req.id);
        if self.state().networks.contains_key(&name) {
            bail!("bpfnet already has a network named {name:?}; remove it with `bpfnet network rm {name}`");
        }
        let mut options = req.options.clone();
        options.insert(DOCKER_NETWORK_ID.into(), req.id.clone());
        let net = Network {
            id: req.id.clone(),
            name: name.clone(),
            created: now_rfc3339(),
            driver: DriverKind::Bridge,
            net_id: super::capacity::network_id(self.state())?,
            subnet: Some(subnet),
            gateway: Some(req.gateway),
            subnet6: v6.map(|(s, _)| s),
            gateway6: v6.map(|(_, g)| g),
            internal: req.internal,
            options,
            bridge: None,
        };
        let mut target = self.state().clone();
        target.networks.insert(name.clone(), net.clone());
        self.execute(Plan {
            what: format!("docker network create {name}"),
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

    /// DeleteNetwork (Docker refuses it itself while endpoints exist). An
    /// unknown id is fine: it is gone already.
    pub async fn docker_network_delete(&mut self, id: &str) -> Result<()> {
        match self.docker_network(id) {
            Some(n) => {
                let name = n.name.clone();
                self.network_rm(&name).await
            }
            None => Ok(()),
        }
    }

    /// Join: the endpoint's veth pair, the host end on the datapath, in the
    /// sandbox of the container's namespace (made on its first endpoint).
    pub async fn docker_join(&mut self, req: DockerJoin) -> Result<Joined> {
        let net = self
            .docker_network(&req.network_id)
            .ok_or_else(|| {
                anyhow!(
                    "network {} is not in bpfnet's state (made with another BPFNET_ROOT?); recreate it with `docker network rm` and `docker network create -d bpfnet`",
                    short(&req.network_id)
                )
            })?
            .clone();
        if self.docker_endpoint(&req.endpoint_id).is_some() {
            bail!("endpoint {} has joined already", short(&req.endpoint_id));
        }
        // The SandboxKey is a placeholder until the container starts (Docker
        // binds the namespace there later): it names the sandbox, no more.
        let mut target = self.state().clone();
        let existing = target
            .sandboxes
            .values()
            .find(|s| s.docker.is_some() && s.netns.as_deref() == Some(req.sandbox_key.as_path()))
            .map(|s| s.name.clone());
        let sandbox = match existing {
            Some(name) => name,
            None => {
                let base = format!(
                    "docker-{}",
                    req.sandbox_key
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
                let base = if valid_name(&base) {
                    base
                } else {
                    format!("docker-{}", short(&req.endpoint_id))
                };
                let name = (0..)
                    .map(|i| {
                        if i == 0 {
                            base.clone()
                        } else {
                            format!("{base}-{i}")
                        }
                    })
                    .find(|n| !target.sandboxes.contains_key(n))
                    .expect("a free name");
                target.sandboxes.insert(
                    name.clone(),
                    Sandbox {
                        id: new_id(),
                        name: name.clone(),
                        created: now_rfc3339(),
                        mode: NetworkMode::Networks(net.name.clone()),
                        endpoints: vec![],
                        aliases: vec![],
                        links: vec![],
                        ports: vec![],
                        exposed: vec![],
                        dns: Default::default(),
                        netns: Some(req.sandbox_key.clone()),
                        cni: None,
                        docker: Some(DockerEndpoint { container_id: None }),
                    }
                    .into(),
                );
                name
            }
        };
        policy::check_join(&target, &sandbox, &net.name)?;
        let sb = &target.sandboxes[&sandbox];
        if sb.endpoints.iter().any(|e| e.network == net.name) {
            bail!(
                "sandbox {sandbox:?} is already connected to network {:?}",
                net.name
            );
        }
        let ip = ipam::allocate(&target, &net, Some(req.ip))?;
        let ip6 = ipam::allocate6(&target, &net, req.ip6)?;
        if net.ipv6() && req.ip6.is_none() {
            bail!("no IPv6 address given on dual-stack network {:?}: bpfnet takes the address Docker's IPAM chose", net.name);
        }
        let host_ifname = format!("{HOST_VETH_PREFIX}{}", &req.endpoint_id[..10]);
        if target
            .endpoints()
            .any(|(_, e)| e.host_ifname == host_ifname)
        {
            bail!("endpoint id {} collides with another endpoint's interface name {host_ifname}; retry", short(&req.endpoint_id));
        }
        let index = (0..)
            .find(|i| !sb.endpoints.iter().any(|e| e.ifname == format!("eth{i}")))
            .expect("free index");
        let ep = Endpoint {
            id: req.endpoint_id.clone(),
            network: net.name.clone(),
            ifname: format!("eth{index}"),
            host_ifname,
            host_ifindex: 0,
            ip,
            ip6,
            mac: req.mac,
            slot: super::capacity::endpoint_slot(&target)?,
            aliases: vec![],
        };
        target
            .sandboxes
            .get_mut(&sandbox)
            .expect("inserted")
            .endpoints
            .push(ep.clone());
        let peer = container_veth(&ep.id);
        self.execute(Plan {
            what: format!("docker join {sandbox} to {}", net.name),
            recovery: Recovery::RollBack,
            steps: vec![Step::DockerEndpoint {
                sandbox: sandbox.clone(),
                network: net.clone(),
                endpoint: ep,
                peer: peer.clone(),
                mtu: mtu_of(&net),
                ifindex: None,
            }],
            target,
            networks: vec![net.name.clone()],
            sandbox: Some(sandbox.clone()),
            after: vec![],
        })
        .await?;
        Ok(Joined {
            peer,
            gateway: (!net.internal).then_some(net.gateway).flatten(),
            gateway6: (!net.internal).then_some(net.gateway6).flatten(),
            sandbox,
        })
    }

    /// DeleteEndpoint: the endpoint goes (its veth pair with it), and the
    /// sandbox with its last endpoint. Returns whether it was known.
    pub async fn docker_endpoint_delete(&mut self, endpoint_id: &str) -> Result<bool> {
        let Some((sb, ep)) = self.docker_endpoint(endpoint_id) else {
            return Ok(false);
        };
        let (sandbox, network, last) =
            (sb.name.clone(), ep.network.clone(), sb.endpoints.len() == 1);
        if last {
            self.sandbox_rm(&sandbox, true).await?;
        } else {
            self.disconnect(&network, &sandbox).await?;
        }
        Ok(true)
    }

    /// Gives the sandbox of Docker's endpoint its container's name (read
    /// from Docker's API). A name bpfnet already uses stays with its owner:
    /// the sandbox keeps its `docker-…` name. Returns the name it has.
    pub async fn docker_name_sandbox(
        &mut self,
        endpoint_id: &str,
        container_id: &str,
        name: &str,
    ) -> Result<Option<String>> {
        let Some((sb, _)) = self.docker_endpoint(endpoint_id) else {
            return Ok(None);
        };
        let old = sb.name.clone();
        if sb.docker.as_ref().and_then(|d| d.container_id.as_deref()) == Some(container_id) {
            return Ok(Some(old));
        }
        let free = old == name || (!self.state().sandboxes.contains_key(name) && valid_name(name));
        let new = if free { name.to_string() } else { old.clone() };
        if !free {
            eprintln!("warning: Docker container {name:?} stays sandbox {old:?} in bpfnet: the name is taken");
        }
        let mut target = self.state().clone();
        let mut sb = target.sandboxes.remove(&old).expect("found");
        sb.name = new.clone();
        if let Some(d) = sb.docker.as_mut() {
            d.container_id = Some(container_id.into());
        }
        let networks = sb.endpoints.iter().map(|e| e.network.clone()).collect();
        target.sandboxes.insert(new.clone(), sb);
        self.execute(Plan {
            what: format!("docker name {old} {new}"),
            recovery: Recovery::RollBack,
            steps: vec![],
            target,
            networks,
            sandbox: Some(new.clone()),
            after: vec![],
        })
        .await?;
        Ok(Some(new))
    }

    /// Gives Docker's network its name (read from Docker's API), unless
    /// bpfnet already has a network of that name.
    pub async fn docker_name_network(&mut self, id: &str, name: &str) -> Result<Option<String>> {
        let Some(net) = self.docker_network(id) else {
            return Ok(None);
        };
        let old = net.name.clone();
        if old == name {
            return Ok(Some(old));
        }
        if old != provisional_network_name(id) {
            return Ok(Some(old)); // named already
        }
        if self.state().networks.contains_key(name) || check_name("network", name).is_err() {
            eprintln!("warning: Docker network {name:?} stays network {old:?} in bpfnet: the name is taken");
            return Ok(Some(old));
        }
        let mut target = self.state().clone();
        let mut net = target.networks.remove(&old).expect("found");
        net.name = name.into();
        target.networks.insert(name.into(), net);
        for sb in target.sandboxes.values_mut() {
            for ep in &mut sb.endpoints {
                if ep.network == old {
                    ep.network = name.into();
                }
            }
            if sb.mode == NetworkMode::Networks(old.clone()) {
                sb.mode = NetworkMode::Networks(name.into());
            }
        }
        self.execute(Plan {
            what: format!("docker name network {old} {name}"),
            recovery: Recovery::RollBack,
            steps: vec![],
            target,
            networks: vec![name.into()],
            sandbox: None,
            after: vec![],
        })
        .await?;
        Ok(Some(name.into()))
    }

    /// The Docker sandboxes that are provably dead, with why: no namespace
    /// is bound at their SandboxKey any more (Docker unbinds it when the
    /// container stops), and either Docker lists none of their endpoints
    /// (`listed`: every EndpointID Docker's API shows, joined ones
    /// included, so a container that is starting is among them), or —
    /// dockerd out of reach, so starting nothing — every endpoint's
    /// container end is back in the host namespace (Docker took it out of
    /// the container and never told us to delete it). Live ones are never
    /// among them.
    pub async fn dead_docker_sandboxes(
        &self,
        listed: Option<&BTreeSet<String>>,
    ) -> Result<Vec<(String, String)>> {
        let mut dead = vec![];
        for sb in self.state().sandboxes.values() {
            if sb.docker.is_none() || netns::inode_at(&sb.netns_path()).is_some() {
                continue;
            }
            let why = match listed {
                Some(listed) => {
                    if sb.endpoints.iter().any(|e| listed.contains(&e.id)) {
                        continue;
                    }
                    "its container's namespace is gone and Docker no longer lists its endpoints"
                }
                None => {
                    let mut back = true;
                    for e in &sb.endpoints {
                        back &= self
                            .host
                            .nl
                            .link_by_name(&container_veth(&e.id))
                            .await?
                            .is_some();
                    }
                    if !back {
                        continue;
                    }
                    "its container's namespace is gone and its veths are back in the host namespace"
                }
            };
            dead.push((sb.name.clone(), why.to_string()));
        }
        Ok(dead)
    }
}

/// The MAC of an endpoint: Docker's when it chose one, else Docker's scheme
/// (`02:42:` + the address).
pub fn endpoint_mac(docker: Option<[u8; 6]>, ip: Ipv4Addr) -> [u8; 6] {
    docker.unwrap_or_else(|| mac_for(ip))
}
