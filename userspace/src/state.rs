//! bpfnet's state, the model: networks, sandboxes and their endpoints,
//! policy rules. How it is kept on disk and locked is `store`'s business.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{bail, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// How a network is realised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    /// The eBPF datapath (Docker's driver name, our implementation).
    Bridge,
    /// A kernel bridge with the same topology, for comparisons.
    LinuxBridge,
    /// The built-in `host` network.
    Host,
    /// The built-in `none` network.
    Null,
}

impl DriverKind {
    pub fn docker_name(self) -> &'static str {
        match self {
            DriverKind::Bridge => "bridge",
            DriverKind::LinuxBridge => "linux-bridge",
            DriverKind::Host => "host",
            DriverKind::Null => "null",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub created: String,
    pub driver: DriverKind,
    /// Id in the datapath's maps (0 for `host` and `none`).
    pub net_id: u32,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// `--ipv6`: the network's IPv6 subnet and gateway (its first address);
    /// `None` on IPv4-only networks, which the datapath keeps closed to IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    /// Kernel bridge name, for the linux-bridge driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

impl Network {
    /// `-o icc=false` (or Docker's `com.docker.network.bridge.enable_icc=false`).
    pub fn icc(&self) -> bool {
        ["icc", "com.docker.network.bridge.enable_icc"]
            .iter()
            .all(|k| self.options.get(*k).map(String::as_str) != Some("false"))
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    /// Refuses what the driver cannot enforce: the linux-bridge driver is a
    /// plain kernel bridge, where `--internal` and `icc=false` would be
    /// shown by `inspect` but hold nothing back.
    pub fn check_supported(&self) -> Result<()> {
        if self.driver != DriverKind::LinuxBridge {
            return Ok(());
        }
        if self.internal {
            bail!("the linux-bridge driver cannot enforce --internal (network {:?}); use the bridge driver (eBPF) for an internal network", self.name);
        }
        if !self.icc() {
            bail!("the linux-bridge driver cannot enforce icc=false (network {:?}); use the bridge driver (eBPF) to turn inter-sandbox traffic off", self.name);
        }
        if self.ipv6() {
            bail!("the linux-bridge driver does not support --ipv6 (network {:?}); use the bridge driver (eBPF) for a dual-stack network", self.name);
        }
        Ok(())
    }

    /// Whether the network is dual-stack (`EnableIPv6`).
    pub fn ipv6(&self) -> bool {
        self.subnet6.is_some()
    }

    /// Whether broadcast is copied to the other ports (`-o bpfnet.flood=false` turns it off).
    pub fn flood(&self) -> bool {
        self.options.get("bpfnet.flood").map(String::as_str) != Some("false")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network: String,
    /// Interface in the sandbox (`eth0`, `eth1`…).
    pub ifname: String,
    /// Host-side veth.
    pub host_ifname: String,
    /// Its ifindex (stable while the veth exists; 0 in old state files).
    #[serde(default)]
    pub host_ifindex: u32,
    pub ip: Ipv4Addr,
    /// Its IPv6 address, on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    /// Slot of its counters in the datapath.
    pub slot: u32,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A sandbox's network mode, as `HostConfig.NetworkMode` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// Own namespace, joined to networks (possibly none yet).
    Networks(String),
    None,
    Host,
    Container(String),
}

impl NetworkMode {
    /// Whether this is `container:NAME` (no String made to compare).
    pub fn shares(&self, name: &str) -> bool {
        matches!(self, NetworkMode::Container(other) if other == name)
    }

    pub fn display(&self) -> String {
        match self {
            NetworkMode::Networks(first) => first.clone(),
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Container(other) => format!("container:{other}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub target: String,
    pub alias: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub created: String,
    pub mode: NetworkMode,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub links: Vec<Link>,
    /// Published ports (`-p`), resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::ports::PortBinding>,
    /// Exposed ports (`--expose`; with `-P` each is published too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<crate::ports::Port>,
    /// `--dns`, `--dns-search`, `--dns-option`, `--add-host`, `--hostname`.
    #[serde(default, skip_serializing_if = "DnsSettings::is_empty")]
    pub dns: DnsSettings,
    /// A namespace bpfnet did not create and never deletes or unmounts (a
    /// container runtime's, e.g. podman's `/run/netns/netns-UUID`, or a
    /// Docker container's SandboxKey); `None`: bpfnet's own
    /// `/run/netns/NAME`. Such a sandbox has no `/etc/netns/NAME`: its
    /// runtime owns resolv.conf and hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// What the CNI plugin needs to find its attachments again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
    /// What the Docker driver must find again (see `docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerEndpoint>,
}

/// A sandbox's own resolver settings, as Docker's `run` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    /// `--dns`: on user networks the responder forwards this sandbox's
    /// other names here; on the default bridge they go to resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// `--add-host NAME:IP`, for the hosts file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl DnsSettings {
    pub fn is_empty(&self) -> bool {
        *self == DnsSettings::default()
    }
}

impl Sandbox {
    /// Where its namespace is bound.
    pub fn netns_path(&self) -> PathBuf {
        self.netns
            .clone()
            .unwrap_or_else(|| crate::paths::netns_path(&self.name))
    }

    /// Whether bpfnet made (and so removes) its namespace.
    pub fn owns_netns(&self) -> bool {
        self.netns.is_none()
    }
}

/// A sandbox that is a Docker container, made through `bpfnet docker-plugin`.
/// Its endpoints' ids are Docker's EndpointIDs and their networks' ids
/// Docker's NetworkIDs, so the driver finds them again by Docker's ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    /// Docker's container id, once read from the Docker API (its name is the
    /// sandbox's name then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// A sandbox made by `bpfnet-cni`: one container (`CNI_CONTAINERID`) in a
/// namespace of its runtime's; each of its endpoints is one CNI attachment
/// (`CNI_CONTAINERID`, `CNI_IFNAME`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    /// Inode of the runtime's namespace when it was attached: the path
    /// bound to another namespace means the container is gone.
    pub netns_inode: u64,
    /// The network configuration (`name` of the conflist) of each
    /// attachment, by interface name; `GC` is per configuration.
    pub configs: BTreeMap<String, String>,
}

/// Layout of the state files; a file from a newer bpfnet is refused.
/// 2: `state.json` is a snapshot and `state.log` holds the changes
/// committed since (see `store`); a version 1 file is the whole state and
/// is rewritten as a version 2 snapshot by the first save.
pub const STATE_VERSION: u32 = 2;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// `STATE_VERSION` of the bpfnet that wrote it (0: written before it
    /// was recorded; the same layout).
    #[serde(default)]
    pub version: u32,
    /// Commits so far (the store's sequence number: which records of
    /// `state.log` a snapshot already holds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// The last operation that committed (see `ops::journal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_op: Option<String>,
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Shared<Sandbox>>,
    /// Policy rules between networks, by id, kept by name.
    #[serde(default)]
    pub policies: BTreeMap<u32, crate::rule::Rule>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A value that copies of the state share until one of them changes it:
/// a command copies the state (its target) and compares it with the saved
/// one (the commit's record) in time that follows the number of sandboxes
/// only by a pointer each, not by their contents. Reads see the value;
/// a write through `&mut` copies it first if another state still holds it.
#[derive(Debug, Default)]
pub struct Shared<T>(std::sync::Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared(std::sync::Arc::new(value))
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        T::deserialize(d).map(Shared::from)
    }
}

impl State {
    pub fn endpoints(&self) -> impl Iterator<Item = (&Sandbox, &Endpoint)> {
        self.sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().map(move |e| (&**s, e)))
    }

    pub fn endpoints_of<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = (&'a Sandbox, &'a Endpoint)> {
        self.endpoints().filter(move |(_, e)| e.network == network)
    }

    /// Lowest counter slot no endpoint uses.
    pub fn free_slot(&self) -> u32 {
        let mut used: Vec<u32> = self.endpoints().map(|(_, e)| e.slot).collect();
        used.sort_unstable();
        used.dedup();
        // Sorted and distinct: slot i is free where the i-th used one is not i.
        (0..used.len())
            .find(|&i| used[i] != i as u32)
            .unwrap_or(used.len()) as u32
    }

    /// Lowest datapath network id (from 1) no network uses.
    pub fn free_net_id(&self) -> u32 {
        let used: std::collections::BTreeSet<u32> =
            self.networks.values().map(|n| n.net_id).collect();
        (1..).find(|s| !used.contains(s)).expect("u32 ids")
    }

    /// Sandboxes sharing `name`'s namespace (`container:NAME`).
    pub fn sharers_of(&self, name: &str) -> Vec<String> {
        self.sandboxes
            .values()
            .filter(|s| s.mode.shares(name))
            .map(|s| s.name.clone())
            .collect()
    }
}
