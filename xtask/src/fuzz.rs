//! `cargo xtask fuzz`: every cargo-fuzz target of `fuzz/` (libFuzzer with
//! AddressSanitizer, on the nightly toolchain) for a given time each.
//!
//! The corpus each run grows lives in `target/fuzz/corpus/TARGET` (kept
//! between runs on one machine, never committed); `fuzz/seeds/TARGET` holds
//! the committed starting inputs. A crash leaves its input in
//! `fuzz/artifacts/TARGET/` and fails the command; it then becomes a
//! regression unit test next to the code it broke.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{bail, Context as _, Result};

use crate::{
    bootstrap::{self, NIGHTLY},
    cmd::{repo_root, run, stdout_of},
};

/// cargo-fuzz itself, installed with `cargo install` when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo +nightly fuzz ARGS` for the `fuzz/` crate, with the environment
/// of the outer cargo removed so it cannot leak into the nightly build.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", NIGHTLY, "cargo", "fuzz"])
        .args(args)
        .current_dir(repo_root())
        // The fuzz targets need the library, not the eBPF object it embeds.
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    c
}

/// Installs cargo-fuzz when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = stdout_of(Command::new("cargo").args(["fuzz", "--version"]))
        .is_some_and(|v| v.contains("cargo-fuzz"));
    if present {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two)");
    run(
        Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
        "cargo install cargo-fuzz",
    )
}

/// The targets `fuzz/Cargo.toml` declares.
fn targets(root: &Path) -> Result<Vec<String>> {
    let out = stdout_of(cargo_fuzz(&["list", "--fuzz-dir"]).arg(root.join("fuzz")))
        .context("`cargo fuzz list` failed")?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Builds every target, then runs each for `seconds` (only those named in
/// `only`, when it is not empty). Fails on the first crash.
pub fn fuzz(seconds: u64, only: &[String]) -> Result<()> {
    bootstrap::bootstrap()?;
    ensure_cargo_fuzz()?;
    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    let target_dir = root.join("target/fuzz");
    let dirs = |t: &str| -> Result<(String, String)> {
        let corpus = target_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = fuzz_dir.join("seeds").join(t);
        Ok((corpus.display().to_string(), seeds.display().to_string()))
    };
    let all = targets(&root)?;
    if let Some(unknown) = only.iter().find(|t| !all.contains(t)) {
        bail!(
            "no fuzz target {unknown:?}; the targets are {}",
            all.join(", ")
        );
    }
    let chosen: Vec<&String> = all
        .iter()
        .filter(|t| only.is_empty() || only.contains(t))
        .collect();
    let common = |c: &mut Command| {
        c.arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .arg("--target-dir")
            .arg(&target_dir)
            // Overflow checks and debug assertions on, as in the unit tests.
            .arg("--debug-assertions");
    };
    let mut build = cargo_fuzz(&["build"]);
    common(&mut build);
    run(&mut build, "cargo fuzz build")?;
    let start = Instant::now();
    for t in &chosen {
        println!("==> fuzz {t} for {seconds} s");
        let (corpus, seeds) = dirs(t)?;
        let mut c = cargo_fuzz(&["run"]);
        common(&mut c);
        c.arg(t.as_str()).arg(&corpus);
        if Path::new(&seeds).is_dir() {
            c.arg(&seeds);
        }
        c.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // A single input taking seconds is a finding too.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1");
        run(&mut c, &format!("fuzz target {t}")).with_context(|| {
            format!(
                "the input that broke it is under {}",
                fuzz_dir.join("artifacts").join(t.as_str()).display()
            )
        })?;
    }
    println!(
        "fuzz: {} targets, {seconds} s each, no crash ({:.0} s)",
        chosen.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
