//! Running a command inside a sandbox, as `ip netns exec` does: its network
//! namespace, and a private mount namespace in which `/etc/netns/NAME/*` are
//! bind-mounted over `/etc/*` and `/sys` shows the sandbox's devices.
use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

use crate::{
    paths::etc_netns_path,
    state::{NetworkMode, Sandbox},
};

/// Enters the sandbox's namespaces. Runs in the child between fork and exec.
fn enter(ns: &std::fs::File, etc: &std::path::Path) -> std::io::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)?;
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    if let Ok(entries) = std::fs::read_dir(etc) {
        for e in entries.flatten() {
            let target = std::path::Path::new("/etc").join(e.file_name());
            if target.exists() {
                mount(
                    Some(&e.path()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
            }
        }
    }
    Ok(())
}

/// A command that will run inside `sb`.
pub fn command(sb: &Sandbox, argv: &[String]) -> Result<Command> {
    let (prog, args) = argv.split_first().context("no command given")?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if sb.mode != NetworkMode::Host {
        let ns = std::fs::File::open(sb.netns_path())
            .with_context(|| format!("sandbox {:?} has no namespace; run `bpfnet gc`", sb.name))?;
        let etc = etc_netns_path(&sb.name);
        // SAFETY: `enter` only makes syscalls and touches the filesystem; it
        // allocates only for paths, which is fine in the freshly forked child
        // of this program.
        unsafe {
            cmd.pre_exec(move || enter(&ns, &etc));
        }
    }
    Ok(cmd)
}

/// Replaces this process with `argv` inside the sandbox; returns only on error.
pub fn exec(sb: &Sandbox, argv: &[String]) -> anyhow::Error {
    match command(sb, argv) {
        Ok(mut cmd) => {
            let e = cmd.exec();
            anyhow::anyhow!("cannot run {:?} in sandbox {:?}: {e}", argv[0], sb.name)
        }
        Err(e) => e,
    }
}
