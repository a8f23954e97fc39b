//! The `minimal-prog` contender: bpfnet's topology with a redirect-only TC
//! program (datapath-ebpf's `bpfnet-minimal`) in front of the datapath on
//! both bench veths, the ceiling of the design. The bench runs
//! `xtask bench-attach-minimal` inside the contender's host (`attach`), which
//! loads the object with aya and adds the filter; the filter keeps the
//! program after the helper exits, the pin is for `bpf_stats`.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::HashMap,
    programs::{
        tc::{NlOptions, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
    Ebpf,
};

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

/// `xtask bench-attach-minimal OBJ FROM=TO…`, run inside a contender's
/// host: packets entering host veth FROM are redirected into TO's peer.
/// The filter sits at priority 1, before the datapath's.
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
    let mut links = vec![];
    for pair in pairs {
        let (from, _) = pair.split_once('=').context("FROM=TO expected")?;
        let opts = TcAttachOptions::Netlink(NlOptions {
            priority: 1,
            ..Default::default()
        });
        let id = prog
            .attach_with_options(from, TcAttachType::Ingress, opts)
            .with_context(|| format!("attaching tc_minimal to {from}"))?;
        links.push(prog.take_link(id)?);
    }
    let mut peers: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut("MINIMAL_PEER")
            .context("no MINIMAL_PEER map")?,
    )?;
    for pair in pairs {
        let (from, to) = pair.split_once('=').context("FROM=TO expected")?;
        peers.insert(ifindex(from)?, ifindex(to)?, 0)?;
    }
    // A netlink link detaches its filter when dropped: these stay.
    std::mem::forget(links);
    Ok(())
}
