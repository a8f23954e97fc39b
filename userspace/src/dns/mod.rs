//! Name resolution on user networks: a DNS responder on port 53 of every
//! user network's gateway (as Docker's embedded DNS and aardvark-dns), one
//! per host.
//!
//! Lifecycle: `ensure_running` (called by the commands, under the state
//! lock) starts `bpfnet dns-server` detached when a user network has an
//! endpoint and stops it when none has. That process is a tiny supervisor:
//! it runs the worker (`bpfnet dns-server --worker`) and respawns it at once
//! when it exits. The worker watches the state file (SIGUSR1 from the CLI,
//! else a 100 ms poll), swaps its name table and its listeners, and
//! acknowledges the state it serves in `dns/loaded`, which the CLI waits for:
//! when a command returns, the responder already answers accordingly. Both
//! exit when the state directory disappears (a test host torn down).
//!
//! The daemons run with an empty environment: what they serve comes from
//! the state and from `dns/config.json` (upstreams, port), which the
//! commands write (see `config`), never from whichever command started them.
//!
//! Files under `BPFNET_ROOT/dns/`: `config.json`, `supervisor.pid`,
//! `worker.pid`, `loaded`, `dns.log` (the daemons' stdout and stderr).
pub mod config;
pub mod handler;
pub mod limits;
pub mod server;
pub mod table;
pub mod upstream;

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{paths::Paths, state::State};

pub use config::network_status;
pub use upstream::sandbox_resolv_conf;

/// How long a command waits for the responder to serve the state it saved.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The responder's files.
pub struct Files {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub supervisor_pid: PathBuf,
    pub worker_pid: PathBuf,
    pub loaded: PathBuf,
    pub log: PathBuf,
    state_dir: PathBuf,
}

impl Files {
    pub fn new(paths: &Paths) -> Files {
        let dir = paths.state_dir.join("dns");
        Files {
            config: dir.join("config.json"),
            supervisor_pid: dir.join("supervisor.pid"),
            worker_pid: dir.join("worker.pid"),
            loaded: dir.join("loaded"),
            log: dir.join("dns.log"),
            state_dir: paths.state_dir.clone(),
            dir,
        }
    }

    fn write_atomic(&self, path: &Path, content: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        crate::fsutil::atomic_write(path, content.as_bytes(), 0o600)
    }

    /// Says which state the worker serves (`loaded`): replaced whole, but
    /// not made durable (it means nothing after a reboot; a command that
    /// finds it missing or stale waits for the worker to say it again).
    fn acknowledge(&self, gen: &str) -> Result<()> {
        let tmp = self.dir.join("loaded.tmp");
        std::fs::write(&tmp, gen).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.loaded)
            .with_context(|| format!("writing {}", self.loaded.display()))
    }

    fn write_pid(&self, path: &Path, pid: u32) -> Result<()> {
        self.write_atomic(path, &format!("{pid}\n"))
    }

    /// The process of a pid file, if it is alive and is our dns-server (not
    /// a recycled pid): its command line says so and its cwd is our state dir.
    fn live(&self, path: &Path) -> Option<Pid> {
        let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let cmdline = std::fs::read(proc.join("cmdline")).ok()?;
        if !cmdline.split(|&b| b == 0).any(|a| a == b"dns-server") {
            return None;
        }
        let cwd = std::fs::read_link(proc.join("cwd")).ok()?;
        let ours = std::fs::canonicalize(&self.state_dir).ok()?;
        if cwd != ours {
            return None;
        }
        // A zombie is dead for our purposes.
        let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
        let st = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        (st != "Z" && st != "X").then_some(Pid::from_raw(pid))
    }
}

/// One line in the responder's log.
pub(crate) fn log(msg: &str) {
    eprintln!(
        "{} bpfnet-dns[{}]: {msg}",
        crate::util::now_rfc3339(),
        std::process::id()
    );
}

/// Whether the responder has work: some user network has an endpoint.
pub fn needed(state: &State) -> bool {
    state.endpoints().any(|(_, e)| {
        state
            .networks
            .get(&e.network)
            .is_some_and(table::resolves_names)
    })
}

/// Makes the responder match `state` (saved already): started (or restarted
/// if it died) and serving it when needed, stopped when not. Never fails the
/// command: what went wrong is reported on stderr and in `dns/dns.log`.
pub fn ensure_running(paths: &Paths, state: &State) {
    if let Err(e) = config::persist_env(&Files::new(paths)) {
        // Commands come here more than once; one warning is enough.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!("warning: name resolution: {e:#}; the DNS responder keeps its configuration (see `bpfnet network inspect`)");
        }
    }
    if let Err(e) = sync(paths, state) {
        eprintln!("warning: name resolution: {e:#}");
    }
}

fn sync(paths: &Paths, state: &State) -> Result<()> {
    let f = Files::new(paths);
    if !needed(state) {
        if f.live(&f.supervisor_pid).is_some() || f.live(&f.worker_pid).is_some() {
            stop(paths);
        }
        return Ok(());
    }
    let gen = server::generation(paths);
    if let Some(sup) = f.live(&f.supervisor_pid) {
        // Another binary (bpfnet was upgraded) may read other files and
        // acknowledge in another format: replace it by ours.
        let theirs = std::fs::read_link(format!("/proc/{sup}/exe")).ok();
        let ours = std::env::current_exe().ok();
        if theirs.is_some() && ours.is_some() && theirs != ours {
            stop(paths);
        }
    }
    if f.live(&f.supervisor_pid).is_none() {
        // A worker without its supervisor is an orphan: replace both.
        if let Some(w) = f.live(&f.worker_pid) {
            let _ = kill(w, Signal::SIGKILL);
            wait_gone(&f, &f.worker_pid);
        }
        let _ = std::fs::remove_file(&f.loaded);
        spawn_supervisor(paths, &f)?;
    } else if read(&f.loaded).as_deref() != Some(gen.as_str()) {
        if let Some(w) = f.live(&f.worker_pid) {
            let _ = kill(w, Signal::SIGUSR1);
        }
    }
    let deadline = Instant::now() + ACK_TIMEOUT;
    // The worker takes well under a millisecond to reload: poll often at
    // first, then back off (an inotify watch would wake at once, but its
    // release waits for an SRCU grace period, which costs more).
    let mut pause = Duration::from_micros(50);
    while read(&f.loaded).as_deref() != Some(gen.as_str()) {
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "the DNS responder did not pick up the change within {ACK_TIMEOUT:?}; see {}",
                f.log.display()
            );
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(2));
    }
    Ok(())
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn spawn_supervisor(paths: &Paths, f: &Files) -> Result<()> {
    std::fs::create_dir_all(&f.dir).with_context(|| format!("creating {}", f.dir.display()))?;
    let log = File::options()
        .create(true)
        .append(true)
        .open(&f.log)
        .with_context(|| format!("opening {}", f.log.display()))?;
    let exe = std::env::current_exe().context("finding the bpfnet binary")?;
    let mut cmd = Command::new(exe);
    // An empty environment: the daemons' configuration is config.json,
    // not the variables this command happened to have.
    cmd.arg0("bpfnet")
        .arg("dns-server")
        .env_clear()
        .env("BPFNET_ROOT", &paths.state_dir)
        .current_dir(&paths.state_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the
    // CLI's session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting the DNS responder")?;
    f.write_pid(&f.supervisor_pid, child.id())
}

/// Waits (≤ 1 s) until the process of `pidfile` is gone.
fn wait_gone(f: &Files, pidfile: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while f.live(pidfile).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the responder: the supervisor first (so nothing respawns), then the
/// worker.
pub fn stop(paths: &Paths) {
    let f = Files::new(paths);
    for pidfile in [&f.supervisor_pid, &f.worker_pid] {
        if let Some(pid) = f.live(pidfile) {
            let _ = kill(pid, Signal::SIGKILL);
            wait_gone(&f, pidfile);
        }
        let _ = std::fs::remove_file(pidfile);
    }
    let _ = std::fs::remove_file(&f.loaded);
}

/// Stops the responder and removes its files (`bpfnet datapath unload`).
pub fn remove(paths: &Paths) {
    stop(paths);
    let _ = std::fs::remove_dir_all(Files::new(paths).dir);
}

/// `bpfnet dns-server`: runs the worker and respawns it whenever it exits,
/// until the state directory is gone.
pub fn run_supervisor(paths: &Paths) -> Result<()> {
    let exe = PathBuf::from("/proc/self/exe"); // works even if the binary was replaced
    let mut quick_failures = 0u32;
    log("supervisor started");
    loop {
        if !paths.state_dir.exists() {
            log("state directory gone: supervisor exiting");
            return Ok(());
        }
        let mut cmd = Command::new(&exe);
        cmd.arg0("bpfnet")
            .args(["dns-server", "--worker"])
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe. The worker dies with its
        // supervisor, so killing the supervisor stops both.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let status = match cmd.spawn() {
            Ok(mut child) => child.wait().ok(),
            Err(e) => {
                log(&format!("cannot start the worker: {e}"));
                None
            }
        };
        if !paths.state_dir.exists() {
            continue; // exits above
        }
        log(&format!("worker exited ({status:?}); restarting"));
        // Respawn at once, but don't spin if it keeps dying at start.
        if started.elapsed() < Duration::from_secs(1) {
            quick_failures += 1;
        } else {
            quick_failures = 0;
        }
        let pause = match quick_failures {
            0 | 1 => Duration::from_millis(10),
            n => Duration::from_millis(100 << n.min(5)),
        };
        std::thread::sleep(pause);
    }
}

/// `bpfnet dns-server --worker`.
pub fn run_worker(paths: &Paths) -> Result<()> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(server::worker(paths.clone()))
}

/// Every forward and TCP connection is a descriptor: the limits in `limits`
/// need more than the usual soft limit of 1024.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                log("cannot raise the open files limit; busy times may see SERVFAIL");
            }
        }
    }
}
