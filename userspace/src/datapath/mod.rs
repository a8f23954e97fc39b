//! The eBPF datapath seen from userspace: load and pin it, attach it to an
//! endpoint's host-side veth, and keep its maps. Programs and maps are pinned
//! under `/sys/fs/bpf/bpfnet/v<layout>/`; each endpoint's veth carries a
//! clsact qdisc with a direct-action `cls_bpf` filter per hook, which holds
//! its program for as long as the veth lives, so forwarding goes on while no
//! bpfnet process runs. Later invocations open the pins.
use std::{
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{programs::SchedClassifier, util::KernelVersion, EbpfLoader};
use bpfnet_common::{maps, progs, MAP_LAYOUT_VERSION};

use crate::{
    paths::Paths,
    tc::{self, Direction, Filter, NewFilter, Tc},
};

mod entries;

use entries::Maps;

/// The datapath object built by build.rs (public for the BPF_PROG_TEST_RUN
/// tests, which load it without attaching it anywhere).
pub static DATAPATH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpfnet-datapath"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The two hooks of every endpoint: program name and tc hook.
const HOOKS: [(&str, Direction); 2] = [
    (progs::TC_INGRESS, Direction::Ingress),
    (progs::TC_EGRESS, Direction::Egress),
];

/// The tc priority of a map layout's filters. A newer layout sits behind an
/// older one, so during a layout change the old programs go on judging
/// every packet until their filters are removed (`remove_other_layouts`).
fn layout_prio(layout: u32) -> u16 {
    1000 + layout as u16
}

/// Every bpfnet filter has this handle: a reload replaces the program of
/// the filter at (hook, prio, handle) in place.
const FILTER_HANDLE: u32 = 1;

/// The name a filter carries (`tc filter show` prints it); the prefix is
/// how bpfnet recognises its own filters.
fn filter_name(prog: &str) -> String {
    format!("{FILTER_PREFIX}v{MAP_LAYOUT_VERSION}-{prog}")
}
const FILTER_PREFIX: &str = "bpfnet-";

fn is_ours(f: &Filter) -> bool {
    f.name.starts_with(FILTER_PREFIX)
}

fn is_current(f: &Filter) -> bool {
    is_ours(f) && f.prio == layout_prio(MAP_LAYOUT_VERSION) && f.handle == FILTER_HANDLE
}

/// What `load` did, for `bpfnet datapath load` to print.
#[derive(Debug)]
pub struct LoadReport {
    pub programs: Vec<(String, u32)>,
    pub maps: Vec<PathBuf>,
    /// Filters whose program was replaced in place (a shared block's once).
    pub replaced: usize,
}

/// What attaching needs: the tc socket and the pinned programs.
struct Attacher {
    tc: Tc,
    /// Program fds, in the order of HOOKS.
    progs: [OwnedFd; 2],
}

fn open_progs(paths: &Paths) -> Result<[OwnedFd; 2]> {
    let open = |name: &str| -> Result<OwnedFd> {
        let pin = paths.progs_dir().join(name);
        obj_get(&pin).with_context(|| format!("opening pinned program {}", pin.display()))
    };
    Ok([open(HOOKS[0].0)?, open(HOOKS[1].0)?])
}

/// The fd of a pinned BPF object (`BPF_OBJ_GET`). Only the fd is needed to
/// attach a pinned program: aya's `SchedClassifier::from_pin` would also
/// probe the kernel's features (a dozen test loads) in every command.
fn obj_get(pin: &Path) -> std::io::Result<OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_GET: libc::c_long = 7;
    /// `union bpf_attr` as BPF_OBJ_GET reads it.
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())?;
    let attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the
    // size passed, and `path` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn new_filters<'a>(progs: &[OwnedFd; 2], names: &'a [String; 2]) -> [NewFilter<'a>; 2] {
    [0, 1].map(|i| NewFilter {
        direction: HOOKS[i].1,
        prio: layout_prio(MAP_LAYOUT_VERSION),
        handle: FILTER_HANDLE,
        prog_fd: progs[i].as_raw_fd(),
        name: &names[i],
    })
}

fn filter_names() -> [String; 2] {
    HOOKS.map(|(name, _)| filter_name(name))
}

/// Every bpfnet filter on every veth of this namespace, with its ifindex.
fn our_filters(tc: &mut Tc) -> Result<Vec<(u32, String, Filter)>> {
    let mut out = vec![];
    for (ifindex, name) in tc.veths()? {
        for (_, dir) in HOOKS {
            for f in tc.filters(ifindex, dir)? {
                if is_ours(&f) {
                    out.push((ifindex, name.clone(), f));
                }
            }
        }
    }
    Ok(out)
}

/// Each filter once: one of a shared block is listed for every device bound
/// to it, and a change through any of them is the block's.
fn once_per_block(
    filters: &[(u32, String, Filter)],
) -> impl Iterator<Item = &(u32, String, Filter)> {
    let mut seen = std::collections::HashSet::new();
    filters.iter().filter(move |(_, _, f)| {
        f.block
            .is_none_or(|b| seen.insert((b, f.direction, f.prio, f.handle)))
    })
}

/// A mutex whose holder cannot leave the guarded value half-changed in a
/// way that matters (map handles, a socket): poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Datapath {
    paths: Paths,
    /// Opened on first use, then kept for the life of the process.
    maps: Mutex<Option<Maps>>,
    attacher: Mutex<Option<Attacher>>,
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Mounts bpffs at the configured place if nothing is mounted there yet.
fn ensure_bpffs(paths: &Paths) -> Result<()> {
    if is_bpffs(&paths.bpffs) {
        return Ok(());
    }
    std::fs::create_dir_all(&paths.bpffs).ok();
    nix::mount::mount(
        Some("bpf"),
        &paths.bpffs,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        anyhow!(
            "bpffs is not mounted at {} and mounting it failed ({e}); mount it with `mount -t bpf bpf {}`",
            paths.bpffs.display(),
            paths.bpffs.display()
        )
    })
}

/// The datapath is built and tested for Linux 6.6 and newer.
fn check_kernel() -> Result<()> {
    let v = KernelVersion::current().map_err(|e| anyhow!("reading the kernel version: {e}"))?;
    if v < KernelVersion::new(6, 6, 0) {
        bail!("kernel {v:?} is too old; bpfnet needs Linux 6.6 or newer");
    }
    Ok(())
}

/// Removes a pin if it exists. (bpffs refuses names with a '.' with EPERM.)
fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

impl Datapath {
    pub fn is_loaded(paths: &Paths) -> bool {
        HOOKS
            .iter()
            .all(|(name, ..)| paths.progs_dir().join(name).exists())
    }

    /// Loads the programs, reusing pinned maps of the same layout (their
    /// contents survive), atomically replaces the program of every filter
    /// of this layout (same hook, prio and handle: never a moment without
    /// a program), and pins the programs. Safe to run again at any time.
    pub fn load(paths: &Paths) -> Result<LoadReport> {
        check_kernel()?;
        ensure_bpffs(paths)?;
        if DATAPATH_OBJECT.is_empty() {
            bail!("this bpfnet was built without its datapath (AYA_BUILD_SKIP); rebuild it with `cargo xtask build-and-load`");
        }
        for dir in [paths.maps_dir(), paths.progs_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(paths.maps_dir())
            .load(DATAPATH_OBJECT)
            .context("loading the datapath object")?;
        let mut report = LoadReport {
            programs: vec![],
            maps: maps::ALL.iter().map(|m| paths.maps_dir().join(m)).collect(),
            replaced: 0,
        };
        let mut tc = Tc::open()?;
        let attached: Vec<(u32, String, Filter)> = our_filters(&mut tc)?
            .into_iter()
            .filter(|(.., f)| is_current(f))
            .collect();
        for (name, direction) in HOOKS {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the datapath object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifying program {name}"))?;
            let fd = prog.fd()?.as_fd().as_raw_fd();
            let fname = filter_name(name);
            for (ifindex, _, f) in
                once_per_block(&attached).filter(|(.., f)| f.direction == direction)
            {
                let new = NewFilter {
                    direction,
                    prio: f.prio,
                    handle: f.handle,
                    prog_fd: fd,
                    name: &fname,
                };
                match tc.replace(f.hook(*ifindex), &new) {
                    Ok(()) => report.replaced += 1,
                    // The veth went away meanwhile: nothing left to replace.
                    Err(e) if tc::is_gone(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            let pin = paths.progs_dir().join(name);
            let tmp = paths.progs_dir().join(format!("{name}_new"));
            remove_if_exists(&tmp)?;
            prog.pin(&tmp)
                .with_context(|| format!("pinning {}", tmp.display()))?;
            std::fs::rename(&tmp, &pin).with_context(|| format!("pinning {}", pin.display()))?;
            report.programs.push((name.to_string(), prog.info()?.id()));
        }
        Ok(report)
    }

    /// Removes the filters and pins of other map layouts. Call it after the
    /// current layout is attached everywhere: until then the old layout's
    /// filters, which run first, judge every packet, so no packet passes
    /// unjudged during a layout change. TCX links pinned by bpfnet versions
    /// before the switch to tc filters go the same way.
    pub fn remove_other_layouts(paths: &Paths) -> Result<Vec<PathBuf>> {
        let mut removed = vec![];
        let mut tc = Tc::open()?;
        let filters = our_filters(&mut tc)?;
        for (ifindex, _, f) in once_per_block(&filters) {
            if f.prio != layout_prio(MAP_LAYOUT_VERSION) {
                tc.delete_filter(f.hook(*ifindex), f.prio)?;
            }
        }
        let legacy_links = paths.legacy_links_dir();
        if legacy_links.exists() {
            std::fs::remove_dir_all(&legacy_links)
                .with_context(|| format!("removing TCX link pins {}", legacy_links.display()))?;
            removed.push(legacy_links);
        }
        if let Ok(dir) = std::fs::read_dir(paths.pin_root()) {
            for entry in dir.flatten() {
                if entry.path() != paths.pin_dir() {
                    std::fs::remove_dir_all(entry.path()).with_context(|| {
                        format!("removing pins of an old layout {}", entry.path().display())
                    })?;
                    removed.push(entry.path());
                }
            }
        }
        Ok(removed)
    }

    fn new(paths: &Paths) -> Self {
        Datapath {
            paths: paths.clone(),
            maps: Mutex::new(None),
            attacher: Mutex::new(None),
        }
    }

    /// Opens the loaded datapath; loads it first if it is not there.
    pub fn open_or_load(paths: &Paths) -> Result<Self> {
        if !Self::is_loaded(paths) {
            Self::load(paths)?;
        }
        Ok(Self::new(paths))
    }

    /// Opens the loaded datapath, if it is loaded.
    pub fn open(paths: &Paths) -> Option<Self> {
        Self::is_loaded(paths).then(|| Self::new(paths))
    }

    /// Removes every bpfnet filter (with its clsact qdisc) and every pin.
    pub fn unload(paths: &Paths) -> Result<bool> {
        let mut tc = Tc::open()?;
        let mut found = false;
        let mut done = vec![];
        for (ifindex, ..) in our_filters(&mut tc)? {
            found = true;
            if !done.contains(&ifindex) {
                tc.delete_clsact(ifindex)?;
                done.push(ifindex);
            }
        }
        let root = paths.pin_root();
        if !root.exists() {
            return Ok(found);
        }
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
        Ok(true)
    }

    /// Runs `f` with the map handles, opening them on first use.
    fn with_maps<R>(&self, f: impl FnOnce(&mut Maps) -> Result<R>) -> Result<R> {
        let mut g = lock(&self.maps);
        if g.is_none() {
            *g = Some(Maps::open(&self.paths)?);
        }
        f(g.as_mut().expect("opened above"))
    }

    fn with_attacher<R>(&self, f: impl FnOnce(&mut Attacher) -> Result<R>) -> Result<R> {
        let mut g = lock(&self.attacher);
        if g.is_none() {
            *g = Some(Attacher {
                tc: Tc::open()?,
                progs: open_progs(&self.paths)?,
            });
        }
        f(g.as_mut().expect("opened above"))
    }

    /// Attaches both programs to the host-side veth `ifname`: a clsact qdisc
    /// and one direct-action filter per hook, in one netlink send (an
    /// existing filter of this layout gets its program replaced in place).
    pub fn attach(&self, ifname: &str) -> Result<()> {
        let ifindex = tc::ifindex(ifname)?
            .ok_or_else(|| anyhow!("cannot attach the datapath to {ifname}: no such interface"))?;
        let names = filter_names();
        self.with_attacher(|a| {
            a.tc.attach(ifindex, &new_filters(&a.progs, &names))
                .with_context(|| format!("attaching the datapath to {ifname}"))
        })
    }

    /// Detaches both programs from `ifname`: its clsact qdisc goes, with
    /// every filter on it. A missing interface is fine.
    pub fn detach(&self, ifname: &str) -> Result<()> {
        let legacy = self.paths.legacy_links_dir();
        if legacy.exists() {
            for hook in ["ingress", "egress"] {
                let pin = legacy.join(format!("{ifname}-{hook}"));
                remove_if_exists(&pin).with_context(|| format!("removing {}", pin.display()))?;
            }
        }
        let Some(ifindex) = tc::ifindex(ifname)? else {
            return Ok(());
        };
        self.with_attacher(|a| a.tc.delete_clsact(ifindex))
            .with_context(|| format!("detaching the datapath from {ifname}"))
    }

    /// Interfaces that carry both filters of this layout.
    pub fn attached_interfaces(&self) -> Vec<String> {
        let found = self.with_attacher(|a| {
            let filters = our_filters(&mut a.tc)?;
            let mut names: Vec<String> = filters
                .iter()
                .filter(|(.., f)| is_current(f))
                .map(|(_, n, _)| n.clone())
                .collect();
            names.sort();
            // Both hooks, or it is not attached.
            let mut both: Vec<String> = names
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| w[0].clone())
                .collect();
            both.dedup();
            Ok(both)
        });
        found.unwrap_or_default()
    }
}
