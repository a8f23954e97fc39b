//! Small helpers: running commands, paths, privilege and kernel checks.
use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context as _, Result};

/// The workspace root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `$CARGO_HOME` or `~/.cargo`.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(h) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    Ok(home()?.join(".cargo"))
}

pub fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// A `cargo` command run at the workspace root.
///
/// `cargo` is the rustup proxy found on PATH, not `$CARGO` (which `cargo run`
/// sets to the toolchain's own binary).
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(repo_root());
    cmd
}

/// Human-readable form of a command, for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; an error names `what` when it fails.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot run `{}`", show(cmd)))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` capturing its output; `None` if it cannot be spawned.
pub fn capture(cmd: &mut Command) -> Option<Output> {
    cmd.output().ok()
}

/// Captured stdout of a successful command.
pub fn stdout_of(cmd: &mut Command) -> Option<String> {
    capture(cmd)
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Effective uid, read from /proc/self/status (no libc needed).
pub fn euid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .context("no effective Uid in /proc/self/status")
}

pub fn is_root() -> bool {
    euid().is_ok_and(|id| id == 0)
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (run it with sudo)");
    }
    Ok(())
}

/// (major, minor) of a kernel release string such as `6.18.44-fc-v669`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The datapath is built and tested for Linux 6.6 and newer.
pub fn require_tcx() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("read /proc/sys/kernel/osrelease")?;
    let release = release.trim();
    match parse_kernel_version(release) {
        Some(v) if v >= (6, 6) => Ok(()),
        Some(_) => bail!("kernel {release} is too old: bpfnet needs Linux >= 6.6"),
        None => bail!("cannot read the kernel version from {release:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("6.6.0"), Some((6, 6)));
        assert_eq!(parse_kernel_version("5.15.0-91-generic\n"), Some((5, 15)));
        assert_eq!(parse_kernel_version("6"), None);
        assert!(parse_kernel_version("5.15.0").unwrap() < (6, 6));
        assert!(parse_kernel_version("6.10.1").unwrap() >= (6, 6));
    }
}
