//! bpfnet's state: one JSON file under the state directory, written
//! atomically (temp file + rename) and guarded by an advisory lock so that
//! concurrent invocations serialise.
use std::{collections::BTreeMap, fs::File, net::Ipv4Addr, path::Path};

use anyhow::{bail, Context as _, Result};
use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::paths::Paths;

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub created: String,
    pub driver: DriverKind,
    /// Id in the datapath's maps (0 for `host` and `none`).
    pub net_id: u32,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
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

    /// Whether broadcast is copied to the other ports (`-o bpfnet.flood=false` turns it off).
    pub fn flood(&self) -> bool {
        self.options.get("bpfnet.flood").map(String::as_str) != Some("false")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    pub fn display(&self) -> String {
        match self {
            NetworkMode::Networks(first) => first.clone(),
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Container(other) => format!("container:{other}"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Link {
    pub target: String,
    pub alias: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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
}

/// Layout of the state file; a file from a newer bpfnet is refused.
pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// `STATE_VERSION` of the bpfnet that wrote it (0: written before it
    /// was recorded; the same layout).
    #[serde(default)]
    pub version: u32,
    /// The last operation that committed (see `ops::journal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_op: Option<String>,
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Sandbox>,
    /// Policy rules between networks, by id, kept by name.
    #[serde(default)]
    pub policies: BTreeMap<u32, crate::policy::Rule>,
}

impl State {
    pub fn endpoints(&self) -> impl Iterator<Item = (&Sandbox, &Endpoint)> {
        self.sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().map(move |e| (s, e)))
    }

    pub fn endpoints_of<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = (&'a Sandbox, &'a Endpoint)> {
        self.endpoints().filter(move |(_, e)| e.network == network)
    }

    /// Lowest counter slot no endpoint uses.
    pub fn free_slot(&self) -> u32 {
        let used: std::collections::BTreeSet<u32> = self.endpoints().map(|(_, e)| e.slot).collect();
        (0..).find(|s| !used.contains(s)).expect("u32 slots")
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
            .filter(|s| s.mode == NetworkMode::Container(name.to_string()))
            .map(|s| s.name.clone())
            .collect()
    }
}

/// The state, held under the lock until dropped.
pub struct Locked {
    pub state: State,
    _lock: Flock<File>,
    paths: Paths,
}

impl Locked {
    /// Takes the lock (waiting for other bpfnet invocations) and reads the state.
    pub fn acquire(paths: &Paths) -> Result<Self> {
        std::fs::create_dir_all(&paths.state_dir)
            .with_context(|| format!("creating {}", paths.state_dir.display()))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.lock_file())
            .with_context(|| format!("opening {}", paths.lock_file().display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", paths.lock_file().display()))?;
        let state = read(&paths.state_file())?;
        Ok(Locked {
            state,
            _lock: lock,
            paths: paths.clone(),
        })
    }

    /// Writes the state atomically.
    pub fn save(&mut self) -> Result<()> {
        self.state.version = STATE_VERSION;
        let mut bytes = serde_json::to_vec_pretty(&self.state)?;
        bytes.push(b'\n');
        crate::fsutil::atomic_write(&self.paths.state_file(), &bytes, 0o600)
    }
}

/// Reads the state without the lock (a snapshot: writes are atomic renames).
pub fn snapshot(paths: &Paths) -> Result<State> {
    read(&paths.state_file())
}

/// Parses a state file and checks that it holds together (every name
/// matches its key, every endpoint's network exists, every rule matches
/// its id): the commands index by these names.
pub fn parse(bytes: &[u8]) -> Result<State> {
    let state: State = serde_json::from_slice(bytes)?;
    state.validate()?;
    Ok(state)
}

impl State {
    fn validate(&self) -> Result<()> {
        for (key, n) in &self.networks {
            if *key != n.name {
                bail!("network {key:?} is listed under the name {:?}", n.name);
            }
        }
        for (key, s) in &self.sandboxes {
            if *key != s.name {
                bail!("sandbox {key:?} is listed under the name {:?}", s.name);
            }
            for e in &s.endpoints {
                if !self.networks.contains_key(&e.network) {
                    bail!(
                        "sandbox {key:?} has an endpoint on network {:?}, which does not exist",
                        e.network
                    );
                }
            }
        }
        for (id, r) in &self.policies {
            if *id != r.id {
                bail!("rule {id} is listed under the id {}", r.id);
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<State> {
    match std::fs::read(path) {
        Ok(bytes) => {
            // The version first: a newer layout may not parse as this one.
            #[derive(Deserialize)]
            struct Version {
                #[serde(default)]
                version: u32,
            }
            if let Ok(Version { version }) = serde_json::from_slice(&bytes) {
                if version > STATE_VERSION {
                    bail!(
                        "{} was written by a newer bpfnet (state version {version}, this one reads up to {STATE_VERSION}); use that bpfnet",
                        path.display(),
                    );
                }
            }
            parse(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; restore it from a backup, or move it away and run `bpfnet gc`",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"networks": {"n": {"id": "x", "name": "n", "created": "", "driver": "bridge",
        "net_id": 1, "subnet": "10.1.0.0/16", "gateway": "10.1.0.1", "internal": false, "options": {}}},
        "sandboxes": {"s": {"id": "y", "name": "s", "created": "", "mode": {"networks": "n"},
        "endpoints": [{"id": "z", "network": "n", "ifname": "eth0", "host_ifname": "bnz",
        "ip": "10.1.0.2", "mac": [2, 66, 10, 1, 0, 2], "slot": 0}]}}}"#;

    #[test]
    fn a_consistent_state_parses() {
        let s = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(s.endpoints().count(), 1);
    }

    #[test]
    fn a_state_that_does_not_hold_together_is_refused() {
        let dangling = SAMPLE.replace(r#""network": "n""#, r#""network": "gone""#);
        let e = parse(dangling.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("network \"gone\", which does not exist"), "{e}");
        let renamed = SAMPLE.replace(r#""name": "s""#, r#""name": "t""#);
        let e = parse(renamed.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("listed under the name \"t\""), "{e}");
    }
}
