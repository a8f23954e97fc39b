//! The `minimal-prog` contender: bpfnet's topology with a redirect-only TC
//! program (datapath-ebpf's `bpfnet-minimal`) in front of the datapath on
//! both bench veths, the ceiling of the design. The bench runs
//! `xtask bench-attach-minimal` inside the contender's host (`attach`), which
//! loads the object with aya, pins it (for `bpf_stats`) and adds the filter
//! from the pin with `tc`; the filter keeps the program after the helper
//! exits.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{maps::HashMap, programs::SchedClassifier, Ebpf};

use crate::cmd::repo_root;

/// Where the program is pinned inside the contender's host; the bench's
/// `prog_stats` reads every `*/progs/*` below /sys/fs/bpf/bpfnet.
pub const PIN: &str = "/sys/fs/bpf/bpfnet/minimal/progs/tc_minimal";

/// The object built by `cargo build --release -p bpfnet` (aya-build puts
/// every bin of the eBPF crate into bpfnet's OUT_DIR): the newest one.
pub fn object() -> Result<PathBuf> {
    let build = repo_root().join("target/release/build");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(&build).with_context(|| format!("reading {}", build.display()))? {
        let p = e?.path().join("out/bpfnet-minimal");
        if let Ok(t) = p.metadata().and_then(|m| m.modified()) {
            if best.as_ref().is_none_or(|(b, _)| t > *b) {
                best = Some((t, p));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "no bpfnet-minimal object under {}; `cargo build --release -p bpfnet` builds it",
            build.display()
        )
    })
}

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {name}"),
        i => Ok(i),
    }
}

/// The shared tc block the clsact qdisc of `dev` binds at ingress (bpfnet's
/// endpoints bind one), if it does.
fn ingress_block(dev: &str) -> Result<Option<u64>> {
    let out = std::process::Command::new("tc")
        .args(["-j", "qdisc", "show", "dev", dev])
        .output()
        .context("running tc")?;
    if !out.status.success() {
        bail!(
            "tc qdisc show dev {dev}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("tc -j qdisc show")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .find(|q| q["kind"] == "clsact")
        .and_then(|q| q["ingress_block"].as_u64()))
}

/// `xtask bench-attach-minimal OBJ FROM=TO…`, run inside a contender's
/// host: packets entering host veth FROM are redirected into TO's peer.
/// The filter sits at priority 1, before the datapath's: on the shared
/// ingress block bpfnet's endpoints bind (once; it judges every veth bound
/// to it, only the bench pair in this contender), else on FROM's ingress.
/// Added by `tc` from the pin, so it stays after the helper exits.
pub fn attach(obj: &Path, pairs: &[String]) -> Result<()> {
    let mut ebpf = Ebpf::load_file(obj).with_context(|| format!("loading {}", obj.display()))?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut("tc_minimal")
        .context("no tc_minimal in the object")?
        .try_into()?;
    prog.load().context("verifying tc_minimal")?;
    let pin = Path::new(PIN);
    std::fs::create_dir_all(pin.parent().expect("has a parent"))?;
    prog.pin(pin).with_context(|| format!("pinning {PIN}"))?;
    let mut blocks = vec![];
    for pair in pairs {
        let (from, _) = pair.split_once('=').context("FROM=TO expected")?;
        let mut args: Vec<String> = vec!["filter".into(), "add".into()];
        match ingress_block(from)? {
            Some(b) if blocks.contains(&b) => continue,
            Some(b) => {
                blocks.push(b);
                args.extend(["block".into(), b.to_string()]);
            }
            None => args.extend(["dev".into(), from.into(), "ingress".into()]),
        }
        args.extend(
            [
                "prio",
                "1",
                "handle",
                "1",
                "bpf",
                "da",
                "object-pinned",
                PIN,
            ]
            .map(String::from),
        );
        let out = std::process::Command::new("tc")
            .args(&args)
            .output()
            .context("running tc")?;
        if !out.status.success() {
            bail!(
                "attaching tc_minimal to {from} (tc {}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut peers: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut("MINIMAL_PEER")
            .context("no MINIMAL_PEER map")?,
    )?;
    for pair in pairs {
        let (from, to) = pair.split_once('=').context("FROM=TO expected")?;
        peers.insert(ifindex(from)?, ifindex(to)?, 0)?;
    }
    Ok(())
}
