//! Where bpfnet keeps things. `BPFNET_ROOT` moves the state (tests always set
//! it); `BPFNET_BPFFS` moves the bpffs mount point.
use std::path::PathBuf;

use bpfnet_common::MAP_LAYOUT_VERSION;

#[derive(Clone, Debug)]
pub struct Paths {
    /// State directory (`/var/lib/bpfnet`).
    pub state_dir: PathBuf,
    /// The bpffs mount point (`/sys/fs/bpf`).
    pub bpffs: PathBuf,
}

/// Named network namespaces, where `ip netns` keeps them.
pub const NETNS_DIR: &str = "/run/netns";
/// Per-namespace `/etc` overrides (`hosts`, `resolv.conf`) `ip netns exec` honours.
pub const ETC_NETNS_DIR: &str = "/etc/netns";

impl Paths {
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| PathBuf::from(std::env::var_os(k).unwrap_or_else(|| d.into()));
        Paths {
            state_dir: var("BPFNET_ROOT", "/var/lib/bpfnet"),
            bpffs: var("BPFNET_BPFFS", "/sys/fs/bpf"),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The changes committed since `state_file` was written (see `store`).
    pub fn state_log(&self) -> PathBuf {
        self.state_dir.join("state.log")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }

    /// Everything bpfnet pins lives below this directory.
    pub fn pin_root(&self) -> PathBuf {
        self.bpffs.join("bpfnet")
    }

    /// Pins of the current map layout; another layout never shares them.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root().join(format!("v{MAP_LAYOUT_VERSION}"))
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.pin_dir().join("maps")
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.pin_dir().join("progs")
    }

    /// Where bpfnet versions that attached with TCX pinned their links;
    /// removed once the current layout is attached.
    pub fn legacy_links_dir(&self) -> PathBuf {
        self.pin_dir().join("links")
    }
}

pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

pub fn etc_netns_path(name: &str) -> PathBuf {
    PathBuf::from(ETC_NETNS_DIR).join(name)
}
