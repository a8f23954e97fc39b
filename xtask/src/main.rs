//! `cargo xtask <cmd>`: build, load, demo and test bpfnet.
mod bench;
mod bootstrap;
mod cmd;
mod fuzz;

use std::{
    env, fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::cmd::{cargo, repo_root, run, show};

/// Where `build-and-load` installs the product binary.
const INSTALLED: &str = "/usr/local/bin/bpfnet";
/// And the CNI plugin, beside it (runtimes find it through their plugin dirs).
const INSTALLED_CNI: &str = "/usr/local/bin/bpfnet-cni";

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, load, demo and test bpfnet",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Only the toolchain and package bootstrap (every building command runs it).
    Bootstrap,
    /// Bootstrap the toolchain and build bpfnet (release) with its eBPF object.
    BuildEbpf,
    /// (root) Build, install /usr/local/bin/bpfnet (and bpfnet-cni) and load the datapath.
    BuildAndLoad {
        /// Inter-container communication on the default `bridge` network
        /// (omitted: keep the current setting; true on a first load).
        #[arg(long, value_name = "true|false")]
        icc: Option<bool>,
    },
    /// (root) Detach the datapath and remove its pins.
    Unload,
    /// (root) Build, install and play the seed walkthrough (`bpfnet demo`).
    Demo,
    /// Formatting, lints (host and eBPF), build, unit and integration tests.
    Test {
        /// Also the long tier: the `#[ignore]`d integration tests (2,000
        /// sandboxes created and removed, …), after all the others.
        #[arg(long)]
        long: bool,
    },
    /// Runs every fuzz target (cargo-fuzz, nightly) for a while each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all of fuzz/Cargo.toml).
        targets: Vec<String>,
    },
    /// Benchmarks against the Linux bridge.
    Bench {
        /// Short runs only.
        #[arg(long)]
        quick: bool,
        /// Only some figures (written under target/, never to bench/):
        /// `ipv6` = the IPv6 TCP stream and UDP figures of bpfnet,
        /// linux-bridge and direct-veth.
        #[arg(long, value_enum)]
        only: Option<bench::Only>,
    },
    /// (bench internal) Attach the redirect-only program in front of the
    /// datapath: `OBJ FROM=TO…` (host veth names).
    #[command(hide = true)]
    BenchAttachMinimal { obj: PathBuf, pairs: Vec<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustup's proxies, bpf-linker and `cargo install`ed tools live here.
    if let Ok(bin) = cmd::cargo_home().map(|h| h.join("bin")) {
        let path = env::var_os("PATH").unwrap_or_default();
        if !env::split_paths(&path).any(|p| p == bin) {
            let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)));
            if let Ok(joined) = joined {
                env::set_var("PATH", joined);
            }
        }
    }
    let result = match cli.cmd {
        Cmd::Bootstrap => bootstrap::bootstrap().map(|()| ExitCode::SUCCESS),
        Cmd::BuildEbpf => build_ebpf().map(|()| ExitCode::SUCCESS),
        Cmd::BuildAndLoad { icc } => build_and_load(icc),
        Cmd::Unload => unload(),
        Cmd::Demo => demo(),
        Cmd::Test { long } => test(long).map(|()| ExitCode::SUCCESS),
        Cmd::Fuzz { seconds, targets } => fuzz::fuzz(seconds, &targets).map(|()| ExitCode::SUCCESS),
        Cmd::Bench { quick, only } => bench::bench(quick, only).map(|()| ExitCode::SUCCESS),
        Cmd::BenchAttachMinimal { obj, pairs } => {
            bench::minimal::attach(&obj, &pairs).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn build_release() -> Result<()> {
    run(
        &mut cargo(["build", "--release", "-p", "bpfnet"]),
        "cargo build --release -p bpfnet",
    )
}

fn build_ebpf() -> Result<()> {
    bootstrap::bootstrap()?;
    build_release()?;
    println!(
        "built {}",
        repo_root().join("target/release/bpfnet").display()
    );
    Ok(())
}

/// Bootstrap, build (release) and install the binaries to /usr/local/bin
/// (`bpfnet` and the CNI plugin `bpfnet-cni`).
fn build_and_install() -> Result<PathBuf> {
    bootstrap::bootstrap()?;
    build_release()?;
    let built = repo_root().join("target/release/bpfnet");
    let dest = Path::new(INSTALLED);
    install(&built, dest)?;
    println!("installed {}", dest.display());
    let cni = Path::new(INSTALLED_CNI);
    install(&repo_root().join("target/release/bpfnet-cni"), cni)?;
    println!("installed {}", cni.display());
    Ok(dest.to_path_buf())
}

/// Copy to a temporary file beside `dest`, then rename over it, so a running
/// `bpfnet` keeps its (old) inode.
fn install(src: &Path, dest: &Path) -> Result<()> {
    let dir = dest.parent().context("install path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".bpfnet.{}.tmp", std::process::id()));
    let copied = fs::copy(src, &tmp)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
        .and_then(|()| fs::rename(&tmp, dest));
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("install {} to {}", src.display(), dest.display()));
    }
    Ok(())
}

/// Runs the product binary; its exit code becomes ours.
fn run_product(cmd: &mut Command) -> Result<ExitCode> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", show(cmd)))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            eprintln!("error: `{}` was killed ({status})", show(cmd));
            ExitCode::FAILURE
        }
    })
}

fn build_and_load(icc: Option<bool>) -> Result<ExitCode> {
    cmd::require_root("build-and-load")?;
    let bin = build_and_install()?;
    cmd::require_tcx()?;
    let mut load = Command::new(bin);
    load.args(["datapath", "load"]);
    if let Some(icc) = icc {
        load.arg(format!("--icc={icc}"));
    }
    run_product(&mut load)
}

fn demo() -> Result<ExitCode> {
    cmd::require_root("demo")?;
    let bin = build_and_install()?;
    cmd::require_tcx()?;
    run_product(Command::new(bin).arg("demo"))
}

fn unload() -> Result<ExitCode> {
    cmd::require_root("unload")?;
    let root = repo_root();
    let candidates = [
        PathBuf::from(INSTALLED),
        root.join("target/release/bpfnet"),
        root.join("target/debug/bpfnet"),
    ];
    let Some(bin) = candidates.into_iter().find(|p| p.is_file()) else {
        println!(
            "unload: no bpfnet binary found ({INSTALLED} or target/*/bpfnet): nothing is installed"
        );
        return Ok(ExitCode::SUCCESS);
    };
    run_product(Command::new(bin).args(["datapath", "unload"]))
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 10;

/// Every cargo command of `cargo xtask test` builds bpfnet with the same
/// features: the build script (which builds the eBPF object, a minute or
/// more) then runs once instead of once per feature set. The fault points
/// are inert unless BPFNET_FAULT is set; the crash tests set it.
const TEST_FEATURES: [&str; 2] = ["--features", "bpfnet/fault-injection"];

/// One `cargo xtask test` step.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {name}");
    f().with_context(|| format!("test step `{name}` failed"))
}

fn test(long: bool) -> Result<()> {
    let start = Instant::now();
    let root = repo_root();
    let result = (|| -> Result<()> {
        step("bootstrap", bootstrap::bootstrap)?;
        step("fmt", || {
            run(
                &mut cargo(["fmt", "--all", "--", "--check"]),
                "cargo fmt --check",
            )
        })?;
        step("clippy", || {
            run(
                &mut cargo([
                    "clippy",
                    "--workspace",
                    "--exclude",
                    "datapath-ebpf",
                    "--all-targets",
                    TEST_FEATURES[0],
                    TEST_FEATURES[1],
                    "--",
                    "-D",
                    "warnings",
                ]),
                "cargo clippy",
            )
        })?;
        step("unused dependencies", || {
            run(
                // `cargo run` (how `cargo xtask` starts) sets CARGO_PKG_NAME,
                // which makes cargo-machete 0.9 take "machete" for a path.
                Command::new("cargo")
                    .args(["machete"])
                    .env_remove("CARGO_PKG_NAME")
                    .current_dir(&root),
                "cargo machete",
            )
        })?;
        step("clippy (eBPF)", || {
            // What aya-build passes to the nested build, minus -Cdebuginfo/--btf
            // (link-time only); a separate target dir keeps the main cache intact.
            let mut c = Command::new("rustup");
            c.args(["run", bootstrap::NIGHTLY, "cargo", "clippy"])
                .args(["-p", "datapath-ebpf", "--target", "bpfel-unknown-none"])
                .args(["-Z", "build-std=core", "--release", "--target-dir"])
                .arg(root.join("target/ebpf-lint"))
                .args(["--", "-D", "warnings"])
                .env("CARGO_CFG_BPF_TARGET_ARCH", "x86_64")
                .env("RUSTFLAGS", "--cfg bpf_target_arch=\"x86_64\"")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .current_dir(&root);
            run(&mut c, "cargo +nightly clippy -p datapath-ebpf")
        })?;
        step("build", || {
            // The integration tests run this binary.
            run(
                &mut cargo(["build", "-p", "bpfnet", TEST_FEATURES[0], TEST_FEATURES[1]]),
                "cargo build -p bpfnet --features fault-injection",
            )
        })?;
        step("unit tests", || {
            run(
                &mut cargo([
                    "test",
                    "--workspace",
                    "--exclude",
                    "datapath-ebpf",
                    "--exclude",
                    "bpfnet-tests",
                    TEST_FEATURES[0],
                    TEST_FEATURES[1],
                ]),
                "cargo test (unit)",
            )
        })?;
        // A short run of every fuzz target: the parsers still hold on what
        // the committed seeds and the corpus of earlier runs hold, and a
        // little beyond.
        step("fuzz (short)", || fuzz::fuzz(FUZZ_SECONDS_IN_TEST, &[]))?;
        step("integration tests", || {
            if !cmd::is_root() {
                bail!("integration tests need root; run as root");
            }
            run(
                cargo([
                    "test",
                    "-p",
                    "bpfnet-tests",
                    TEST_FEATURES[0],
                    TEST_FEATURES[1],
                    "--",
                    "--test-threads=2",
                ])
                .env("BPFNET_BIN", root.join("target/debug/bpfnet")),
                "cargo test -p bpfnet-tests",
            )
        })?;
        if long {
            step("integration tests (long tier)", || {
                run(
                    cargo([
                        "test",
                        "-p",
                        "bpfnet-tests",
                        TEST_FEATURES[0],
                        TEST_FEATURES[1],
                        "--",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("BPFNET_BIN", root.join("target/debug/bpfnet")),
                    "cargo test -p bpfnet-tests -- --ignored",
                )
            })?;
        }
        Ok(())
    })();
    let secs = start.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            println!("test: all steps passed in {secs:.1} s");
            Ok(())
        }
        Err(e) => Err(anyhow!("{e:#} (after {secs:.1} s)")),
    }
}
