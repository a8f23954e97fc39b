//! Where the state lives: one JSON file under the state directory, written
//! atomically and durably (`fsutil::atomic_write`) and guarded by an
//! advisory lock so that concurrent invocations serialise. Only root can
//! open either (0700 directory, 0600 files), and nobody waits for the lock
//! without being told who holds it or for longer than the lock timeout.
use std::{
    fs::File,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use crate::{
    paths::Paths,
    state::{State, STATE_VERSION},
};

/// How long one process may hold the lock while a command waits for it
/// before the command gives up (seconds; `BPFNET_LOCK_TIMEOUT` overrides it).
pub const LOCK_TIMEOUT_SECS: u64 = 60;
/// A short hold is ordinary (another command is running); only a longer one
/// is worth a line.
const LOCK_QUIET: Duration = Duration::from_secs(3);

/// The state, held under the lock until dropped (or read without the lock,
/// for commands that only read).
pub struct Locked {
    pub state: State,
    lock: Option<Flock<File>>,
    paths: Paths,
}

impl Locked {
    /// Takes the lock (waiting a bounded time for other bpfnet invocations)
    /// and reads the state.
    pub fn acquire(paths: &Paths) -> Result<Self> {
        secure(paths, true)?;
        let lock = lock(paths)?;
        let state = read(&paths.state_file())?;
        Ok(Locked {
            state,
            lock: Some(lock),
            paths: paths.clone(),
        })
    }

    /// Takes the lock if nobody holds it; never waits.
    pub fn try_acquire(paths: &Paths) -> Result<Option<Self>> {
        secure(paths, true)?;
        let Some(lock) = try_lock(paths)? else {
            return Ok(None);
        };
        let state = read(&paths.state_file())?;
        Ok(Some(Locked {
            state,
            lock: Some(lock),
            paths: paths.clone(),
        }))
    }

    /// Reads the state without the lock: writes are atomic renames, so a
    /// command that only reads never waits for, or is frozen by, a holder.
    pub fn read_only(paths: &Paths) -> Result<Self> {
        secure(paths, false)?;
        Ok(Locked {
            state: read(&paths.state_file())?,
            lock: None,
            paths: paths.clone(),
        })
    }

    /// Lets other commands run (`bpfnet run` while its command runs).
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Takes the lock again after [`Locked::unlock`] and re-reads the state
    /// (other commands may have changed it meanwhile).
    pub fn relock(&mut self) -> Result<()> {
        if self.lock.is_none() {
            self.lock = Some(lock(&self.paths)?);
            self.state = read(&self.paths.state_file())?;
        }
        Ok(())
    }

    /// Writes the state atomically.
    pub fn save(&mut self) -> Result<()> {
        if self.lock.is_none() {
            bail!("internal error: writing the state without holding the lock");
        }
        self.state.version = STATE_VERSION;
        let mut bytes = serde_json::to_vec_pretty(&self.state)?;
        bytes.push(b'\n');
        crate::fsutil::atomic_write(&self.paths.state_file(), &bytes, 0o600)
    }
}

/// Only root may open anything in the state directory: whoever can open the
/// lock can hold it (flock works on a read-only descriptor) and freeze every
/// command, and the state names every sandbox, address and rule. Creates the
/// directory 0700 (when `create`) and narrows the modes an older install left.
fn secure(paths: &Paths, create: bool) -> Result<()> {
    let dir = &paths.state_dir;
    if create {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let wanted = [
        (dir.clone(), 0o700),
        (dir.join("dns"), 0o700),
        (paths.lock_file(), 0o600),
        (paths.state_file(), 0o600),
    ];
    for (path, mode) in wanted {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() || meta.permissions().mode() & 0o7777 == mode {
            continue;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {} to root", path.display()))?;
    }
    Ok(())
}

fn lock_timeout() -> Result<Duration> {
    match std::env::var("BPFNET_LOCK_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(LOCK_TIMEOUT_SECS)),
        Ok(v) => v.parse::<u64>().map(Duration::from_secs).map_err(|_| {
            anyhow!("invalid BPFNET_LOCK_TIMEOUT {v:?}: expected a number of seconds")
        }),
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The lock if it is free at once.
fn try_lock(paths: &Paths) -> Result<Option<Flock<File>>> {
    let path = paths.lock_file();
    match Flock::lock(open_lock_file(&path)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => bail!("locking {}: {e}", path.display()),
    }
}

/// Takes the lock. Commands queue behind each other, so what is bounded is
/// how long one process holds it while we wait: after a quiet while the
/// wait is announced naming the holder, and after the lock timeout it fails
/// naming it. A new holder (the queue moved on) starts both anew.
fn lock(paths: &Paths) -> Result<Flock<File>> {
    let path = paths.lock_file();
    let timeout = lock_timeout()?;
    let mut file = open_lock_file(&path)?;
    let mut current = String::new();
    let mut since = Instant::now();
    let mut said = false;
    loop {
        file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => f,
            Err((_, e)) => bail!("locking {}: {e}", path.display()),
        };
        let who = holder(&file);
        if who != current {
            current = who;
            since = Instant::now();
            said = false;
        }
        let held = since.elapsed();
        if held >= timeout {
            bail!(
                "the bpfnet lock {} is still held by {current} after {} s; wait for that command to finish, or stop it if it is stuck",
                path.display(),
                timeout.as_secs()
            );
        }
        if !said && held >= LOCK_QUIET.min(timeout / 2) {
            eprintln!(
                "waiting up to {} s for the bpfnet lock {}, held by {current}",
                timeout.as_secs(),
                path.display()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Who holds the flock on `file`, from /proc/locks: "pid N (COMM)".
fn holder(file: &File) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let unknown = || "another process".to_string();
    let Ok(meta) = file.metadata() else {
        return unknown();
    };
    let dev = meta.dev();
    // /proc/locks names a file "MAJ:MIN:INODE", the device numbers in hex.
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    // "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"; waiters have "->"
    // after the number.
    let pid = locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 6 && f[1] == "FLOCK" && f[5] == id).then(|| f[4].parse::<u32>().ok())?
    });
    match pid {
        Some(pid) if pid > 0 => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("pid {pid} ({})", comm.trim())
        }
        _ => unknown(),
    }
}

/// Reads the state without the lock (a snapshot: writes are atomic renames).
pub fn snapshot(paths: &Paths) -> Result<State> {
    read(&paths.state_file())
}

/// Parses a state file and checks that it holds together (every name
/// matches its key, every endpoint's network exists, every rule matches
/// its id): the commands index by these names.
pub fn parse(bytes: &[u8]) -> Result<State> {
    let state: State = serde_json::from_slice(bytes)?;
    state.validate()?;
    Ok(state)
}

impl State {
    fn validate(&self) -> Result<()> {
        for (key, n) in &self.networks {
            if *key != n.name {
                bail!("network {key:?} is listed under the name {:?}", n.name);
            }
        }
        for (key, s) in &self.sandboxes {
            if *key != s.name {
                bail!("sandbox {key:?} is listed under the name {:?}", s.name);
            }
            for e in &s.endpoints {
                if !self.networks.contains_key(&e.network) {
                    bail!(
                        "sandbox {key:?} has an endpoint on network {:?}, which does not exist",
                        e.network
                    );
                }
            }
        }
        for (id, r) in &self.policies {
            if *id != r.id {
                bail!("rule {id} is listed under the id {}", r.id);
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<State> {
    match std::fs::read(path) {
        Ok(bytes) => {
            // The version first: a newer layout may not parse as this one.
            #[derive(Deserialize)]
            struct Version {
                #[serde(default)]
                version: u32,
            }
            if let Ok(Version { version }) = serde_json::from_slice(&bytes) {
                if version > STATE_VERSION {
                    bail!(
                        "{} was written by a newer bpfnet (state version {version}, this one reads up to {STATE_VERSION}); use that bpfnet",
                        path.display(),
                    );
                }
            }
            parse(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; restore it from a backup, or move it away and run `bpfnet gc`",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"networks": {"n": {"id": "x", "name": "n", "created": "", "driver": "bridge",
        "net_id": 1, "subnet": "10.1.0.0/16", "gateway": "10.1.0.1", "internal": false, "options": {}}},
        "sandboxes": {"s": {"id": "y", "name": "s", "created": "", "mode": {"networks": "n"},
        "endpoints": [{"id": "z", "network": "n", "ifname": "eth0", "host_ifname": "bnz",
        "ip": "10.1.0.2", "mac": [2, 66, 10, 1, 0, 2], "slot": 0}]}}}"#;

    #[test]
    fn a_consistent_state_parses() {
        let s = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(s.endpoints().count(), 1);
    }

    #[test]
    fn a_state_that_does_not_hold_together_is_refused() {
        let dangling = SAMPLE.replace(r#""network": "n""#, r#""network": "gone""#);
        let e = parse(dangling.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("network \"gone\", which does not exist"), "{e}");
        let renamed = SAMPLE.replace(r#""name": "s""#, r#""name": "t""#);
        let e = parse(renamed.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("listed under the name \"t\""), "{e}");
    }
}
