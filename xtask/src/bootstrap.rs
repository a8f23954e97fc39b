//! Idempotent toolchain and package bootstrap, run by every command that builds.
//!
//! 1. rustup toolchain `nightly` with `rust-src` (for `-Z build-std=core`) and `clippy`;
//! 2. `bpf-linker` linked against the nightly's own libLLVM (what
//!    /work/shared/tools/setup-ebpf-toolchain.sh does);
//! 3. the Debian packages the integration tests and the benchmark use.
//!
//! Everything present costs a handful of cheap process spawns (~0.1 s).
use std::{
    collections::HashSet,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, capture, run, stdout_of};

pub const NIGHTLY: &str = "nightly";
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];
pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const PACKAGES: &[&str] = &[
    "iperf3",
    "sockperf",
    "netsniff-ng",
    "bpftool",
    "iputils-ping",
    "dnsutils",
    "python3-scapy",
    "netavark",
    "aardvark-dns",
    "containernetworking-plugins",
    // A real CNI client for tests/podman.rs: podman 4.3 (CNI backend), runc
    // (crun refuses this machine's cgroup layout), busybox for the image.
    "podman",
    "runc",
    "busybox-static",
    "iproute2",
    "util-linux",
    // nftables: libnftnl/libmnl to build against, nft for the tests.
    "libnftnl-dev",
    "libmnl-dev",
    "pkg-config",
    "nftables",
    // The Docker test: dockerd 20.10 (not started by the package here:
    // policy-rc.d; on a systemd host it is, with its docker0 bridge) and the
    // busybox its image is made of (listed above).
    "docker.io",
];

pub fn bootstrap() -> Result<()> {
    let start = Instant::now();
    let mut worked = nightly()?;
    worked |= bpf_linker()?;
    worked |= cargo_tool("cargo-machete", MACHETE_VERSION)?;
    worked |= packages()?;
    if !worked {
        println!(
            "bootstrap: ok ({NIGHTLY} + rust-src, bpf-linker {BPF_LINKER_VERSION}, {} packages) in {:.2} s",
            PACKAGES.len(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Finds dependencies declared but unused (`cargo xtask test` runs it).
const MACHETE_VERSION: &str = "0.9.2";

/// A cargo subcommand from crates.io, installed at `version` when missing.
fn cargo_tool(name: &str, version: &str) -> Result<bool> {
    let bin = cmd::cargo_home()?.join("bin").join(name);
    let have = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if have {
        return Ok(false);
    }
    println!("bootstrap: installing {name} {version}");
    run(
        Command::new("cargo")
            .args(["install", name, "--version", version, "--locked", "--force"])
            .current_dir(cmd::home()?),
        &format!("cargo install {name} {version}"),
    )?;
    Ok(true)
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn nightly_rustc(args: &[&str]) -> Command {
    let mut c = rustup();
    c.args(["run", NIGHTLY, "rustc"]).args(args);
    c
}

/// Step 1: the nightly toolchain and its components. Returns whether it did work.
fn nightly() -> Result<bool> {
    let probe = capture(&mut nightly_rustc(&["--version"]))
        .context("rustup not found on PATH: install it from https://rustup.rs")?;
    let mut worked = false;
    if !probe.status.success() {
        println!("bootstrap: installing rustup toolchain {NIGHTLY}");
        run(
            rustup().args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                &NIGHTLY_COMPONENTS.join(","),
            ]),
            &format!("rustup toolchain install {NIGHTLY}"),
        )?;
        worked = true;
    }
    let installed =
        stdout_of(rustup().args(["component", "list", "--toolchain", NIGHTLY, "--installed"]))
            .with_context(|| format!("rustup component list --toolchain {NIGHTLY} failed"))?;
    // Names are `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l == *c || l.strip_prefix(c).is_some_and(|r| r.starts_with('-')))
        })
        .collect();
    if !missing.is_empty() {
        println!("bootstrap: adding {} to {NIGHTLY}", missing.join(", "));
        run(
            rustup()
                .args(["component", "add"])
                .args(&missing)
                .args(["--toolchain", NIGHTLY]),
            &format!(
                "rustup component add {} --toolchain {NIGHTLY}",
                missing.join(" ")
            ),
        )?;
        worked = true;
    }
    Ok(worked)
}

/// The nightly's libLLVM (real file) and LLVM major version.
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let sysroot = stdout_of(&mut nightly_rustc(&["--print", "sysroot"]))
        .with_context(|| format!("rustc +{NIGHTLY} --print sysroot failed"))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let lib = fs::read_dir(&libdir)
        .with_context(|| format!("read {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name().to_string_lossy().starts_with("libLLVM.so.")
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| e.path())
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {} (is '{NIGHTLY}' a rustup nightly?)",
                libdir.display()
            )
        })?;
    let vv = stdout_of(&mut nightly_rustc(&["-vV"]))
        .with_context(|| format!("rustc +{NIGHTLY} -vV failed"))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .with_context(|| format!("no LLVM version in `rustc +{NIGHTLY} -vV`"))?;
    let soname = lib.file_name().unwrap_or_default().to_string_lossy();
    if !soname.starts_with(&format!("libLLVM.so.{major}.")) {
        bail!("{soname} does not match LLVM major {major} of rustc +{NIGHTLY}");
    }
    Ok((lib, major))
}

/// The libLLVM that `linker` loads, per `ldd`.
fn linked_llvm(linker: &Path) -> Option<PathBuf> {
    capture(Command::new(linker).arg("--version")).filter(|o| o.status.success())?;
    let ldd = stdout_of(Command::new("ldd").arg(linker))?;
    ldd.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let name = f.next()?;
        (name.starts_with("libLLVM") && f.next()? == "=>")
            .then(|| f.next())
            .flatten()
            .map(PathBuf::from)
    })
}

/// Step 2: bpf-linker built against the nightly's own libLLVM.
fn bpf_linker() -> Result<bool> {
    let (llvm, major) = nightly_llvm()?;
    let real = fs::canonicalize(&llvm).with_context(|| format!("resolve {}", llvm.display()))?;
    let linker = cmd::cargo_home()?.join("bin").join("bpf-linker");
    let ok = || {
        linked_llvm(&linker)
            .and_then(|l| fs::canonicalize(l).ok())
            .is_some_and(|l| l == real)
    };
    if ok() {
        return Ok(false);
    }

    // bpf-linker's build.rs wants $LLVM_PREFIX/lib/libLLVM.so (for -lLLVM) and embeds
    // an rpath to that dir; the binary's DT_NEEDED is the versioned soname.
    let prefix = cmd::home()?.join(".local/share/bpf-linker-llvm");
    let shim = prefix.join("lib");
    fs::create_dir_all(&shim).with_context(|| format!("create {}", shim.display()))?;
    for e in fs::read_dir(&shim)?.filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with("libLLVM")
            && e.file_type().is_ok_and(|t| t.is_symlink())
        {
            fs::remove_file(e.path())?;
        }
    }
    let soname = llvm.file_name().context("libLLVM has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = shim.join(name);
        symlink(&real, &link).with_context(|| format!("symlink {}", link.display()))?;
    }

    println!(
        "bootstrap: installing bpf-linker {BPF_LINKER_VERSION} against {NIGHTLY}'s LLVM {major} (~1-2 min)"
    );
    run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--locked", "--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .current_dir(cmd::home()?),
        &format!("cargo install bpf-linker {BPF_LINKER_VERSION} (feature llvm-{major})"),
    )?;
    if !ok() {
        bail!(
            "bpf-linker installed but does not load {} (check: ldd {})",
            real.display(),
            linker.display()
        );
    }
    println!(
        "bootstrap: bpf-linker {BPF_LINKER_VERSION} ok, using {}",
        real.display()
    );
    Ok(true)
}

/// Installed packages among `pkgs`, in one dpkg-query call.
fn installed_packages(pkgs: &[&str]) -> Result<HashSet<String>> {
    // Exits 1 (and says so on stderr) when a package is unknown: stdout still
    // lists the known ones.
    let out = capture(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\\n"])
            .args(pkgs),
    )
    .context("dpkg-query not found: bootstrap needs a Debian-like host with apt")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Step 3: Debian packages.
fn packages() -> Result<bool> {
    let have = installed_packages(PACKAGES)?;
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !have.contains(*p))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        println!(
            "warning: missing packages (tests/bench need them; run as root to install): {list}"
        );
        return Ok(false);
    }
    println!("bootstrap: apt-get install {list}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        println!("bootstrap: apt-get install failed; running apt-get update and retrying");
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !updated || !install() {
            bail!("could not install Debian packages: {list}");
        }
    }
    Ok(true)
}
