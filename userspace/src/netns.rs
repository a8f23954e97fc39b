//! Named network namespaces, compatible with `ip netns`: a bind mount of the
//! namespace at `/run/netns/NAME`, on a shared mount so it propagates into the
//! mount namespaces `ip netns exec` creates.
use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{anyhow, Context as _, Result};
use nix::{
    errno::Errno,
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

use crate::paths::{netns_path, NETNS_DIR};

/// Makes `/run/netns` a shared mount point, as iproute2 does. Only the
/// mount itself: each namespace's bind mount below it is made shared when
/// it is attached there, and a recursive change would walk every one of
/// them (at 2,000 namespaces, ~0.4 ms of every create). A bind of its
/// own, made here, is shared with everything below it.
fn prepare_netns_dir() -> Result<()> {
    std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
    let shared = |flags| mount(None::<&str>, NETNS_DIR, None::<&str>, flags, None::<&str>);
    match shared(MsFlags::MS_SHARED) {
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
/// `noted` learns its inode before the name exists, so that a crash in
/// between leaves nothing unaccounted for.
pub fn create(name: &str, noted: &mut (dyn FnMut(u64) -> Result<()> + Send)) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).context("creating network namespace")?;
            let own = Path::new("/proc/thread-self/ns/net");
            noted(inode_of(own).context("reading the new namespace's inode")?)?;
            bind(own, name)
        })
        .join()
        .map_err(|_| anyhow!("netns thread panicked"))?
    })
}

/// The namespace of the host itself (a `host` sandbox names it).
pub const HOST_NETNS: &str = "/proc/self/ns/net";

/// Names the namespace at `source` (the host's, or another sandbox's) `name`
/// too; `noted` learns its inode first.
pub fn create_alias(
    name: &str,
    source: &Path,
    noted: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<()> {
    noted(inode_of(source).with_context(|| format!("reading {}", source.display()))?)?;
    bind(source, name)
}

fn inode_of(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map(|m| m.ino())
}

/// The inode of the namespace named `name`, if one is bound there.
pub fn inode(name: &str) -> Option<u64> {
    inode_at(&netns_path(name))
}

/// The inode of the namespace bound at `path` (a `/run/netns` name, a
/// Docker SandboxKey), if a namespace is bound there.
pub fn inode_at(path: &Path) -> Option<u64> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let fs = nix::sys::statfs::statfs(path).ok()?;
    (fs.filesystem_type().0 == NSFS_MAGIC)
        .then(|| inode_of(path).ok())
        .flatten()
}

/// Removes the name `name` if it is bound to the namespace `inode` (or is
/// the empty placeholder file a crash between creating the name and binding
/// it leaves). Anything else there is not ours and stays.
pub fn delete_if(name: &str, inode: u64) -> Result<bool> {
    match self::inode(name) {
        Some(i) if i == inode => delete(name).map(|()| true),
        Some(_) => Ok(false),
        None => {
            let path = netns_path(name);
            let placeholder = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_file() && m.len() == 0);
            if placeholder {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            Ok(placeholder)
        }
    }
}

/// Whether `path` is still the namespace whose inode was `inode` (a
/// runtime's namespace: gone when the path is missing or bound elsewhere).
pub fn foreign_alive(path: &Path, inode: u64) -> bool {
    inode_at(path) == Some(inode)
}

/// The inode of the network namespace at `path` (a runtime's), or an error
/// saying why it is none.
pub fn foreign_inode(path: &Path) -> Result<u64> {
    std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
    inode_at(path).ok_or_else(|| anyhow!("{} is not a network namespace", path.display()))
}

/// Opens the namespace of a sandbox: bpfnet's own by its name, a
/// runtime's at its path, provided it is still the one it was attached to.
pub fn open_sandbox(sb: &crate::state::Sandbox) -> Result<OwnedFd> {
    let Some(path) = &sb.netns else {
        return open(&sb.name);
    };
    let fd: OwnedFd = File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .into();
    if let Some(cni) = &sb.cni {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("reading a namespace's inode")?;
        if st.st_ino != cni.netns_inode {
            anyhow::bail!(
                "{} is no longer the namespace of sandbox {:?} (inode {} instead of {})",
                path.display(),
                sb.name,
                st.st_ino,
                cni.netns_inode
            );
        }
    }
    Ok(fd)
}

/// Opens the namespace at `path` (a runtime's).
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    Ok(File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .into())
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
///
/// Through a procfs instance of this process's own, when it can make one:
/// every network namespace has its own `/proc/sys/net` dentry, all of them
/// in one hash chain of the shared `/proc`'s dentry cache, so the first
/// sysctl of a new namespace walks one entry per namespace on the host
/// (0.6 ms with 2,000 sandboxes here, 17 µs with none). A fresh instance's
/// cache holds only what this process looked up.
pub fn sysctl(path: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let Some(proc) = private_proc() else {
        return std::fs::write(Path::new("/proc/sys").join(path), value);
    };
    let file = nix::fcntl::openat(
        Some(proc.as_raw_fd()),
        Path::new("sys").join(path).as_path(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(file) };
    file.write_all(value.as_bytes())
}

/// A detached mount of a new procfs instance (never attached anywhere, gone
/// with the process), or `None` where the new mount API is refused.
fn private_proc() -> Option<&'static OwnedFd> {
    static PROC: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    PROC.get_or_init(|| {
        // <linux/mount.h>: FSOPEN_CLOEXEC, FSCONFIG_CMD_CREATE, FSMOUNT_CLOEXEC.
        const FSOPEN_CLOEXEC: libc::c_uint = 1;
        const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
        const FSMOUNT_CLOEXEC: libc::c_uint = 1;
        let take = |fd: libc::c_long| -> Option<OwnedFd> {
            let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
            // SAFETY: the syscall returned a new descriptor that nothing else owns.
            Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        };
        // SAFETY: plain syscalls on a NUL-terminated name and our own descriptors.
        unsafe {
            let fs = take(libc::syscall(
                libc::SYS_fsopen,
                c"proc".as_ptr(),
                FSOPEN_CLOEXEC,
            ))?;
            let raw = fs.as_raw_fd();
            let null = std::ptr::null::<libc::c_char>();
            if libc::syscall(libc::SYS_fsconfig, raw, FSCONFIG_CMD_CREATE, null, null, 0) != 0 {
                return None;
            }
            take(libc::syscall(libc::SYS_fsmount, raw, FSMOUNT_CLOEXEC, 0))
        }
    })
    .as_ref()
}
