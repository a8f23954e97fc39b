//! Named network namespaces, compatible with `ip netns`: a bind mount of the
//! namespace at `/run/netns/NAME`, on a shared mount so it propagates into the
//! mount namespaces `ip netns exec` creates.
use std::{
    fs::File,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use anyhow::{anyhow, Context as _, Result};
use nix::{
    errno::Errno,
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

use crate::paths::{netns_path, NETNS_DIR};

/// Makes `/run/netns` a shared mount point, as iproute2 does.
fn prepare_netns_dir() -> Result<()> {
    std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
    let shared = |flags| mount(None::<&str>, NETNS_DIR, None::<&str>, flags, None::<&str>);
    match shared(MsFlags::MS_SHARED | MsFlags::MS_REC) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it.
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .context("bind-mounting /run/netns")?;
            shared(MsFlags::MS_SHARED | MsFlags::MS_REC).context("sharing /run/netns")
        }
        Err(e) => Err(e).context("sharing /run/netns"),
    }
}

pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Runs `f` on a fresh thread that has entered the namespace `ns` (the
/// caller's threads stay where they are).
pub fn run_in<T: Send>(ns: &impl AsFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let fd = ns.as_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(fd, CloneFlags::CLONE_NEWNET).context("entering network namespace")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in network namespace panicked"))?
    })
}

/// Binds the namespace at `source` (a `/proc/.../ns/net` path or another
/// netns file) to `/run/netns/NAME`.
fn bind(source: &Path, name: &str) -> Result<()> {
    prepare_netns_dir()?;
    let target = netns_path(name);
    File::options()
        .write(true)
        .create_new(true)
        .open(&target)
        .with_context(|| format!("creating {}", target.display()))?;
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(&target);
        anyhow!("binding {} to {}: {e}", source.display(), target.display())
    })
}

/// Creates a new, empty network namespace named `name` (only `lo`, down).
pub fn create(name: &str) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).context("creating network namespace")?;
            bind(Path::new("/proc/thread-self/ns/net"), name)
        })
        .join()
        .map_err(|_| anyhow!("netns thread panicked"))?
    })
}

/// Names the host's own namespace `name` (a `host` sandbox).
pub fn create_host_alias(name: &str) -> Result<()> {
    bind(Path::new("/proc/self/ns/net"), name)
}

/// Names `other`'s namespace `name` too (a `container:OTHER` sandbox).
pub fn create_alias(name: &str, other: &str) -> Result<()> {
    bind(&netns_path(other), name)
}

pub fn open(name: &str) -> Result<OwnedFd> {
    let path = netns_path(name);
    Ok(File::open(&path)
        .with_context(|| format!("opening {}", path.display()))?
        .into())
}

/// Removes the name; the namespace itself goes when nothing else holds it.
pub fn delete(name: &str) -> Result<()> {
    let path = netns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(anyhow!("unmounting {}: {e}", path.display())),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Writes a sysctl of the namespace the calling thread is in.
pub fn sysctl(path: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(path), value)
}
