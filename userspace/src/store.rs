//! Where the state lives, and how a change is committed. `state.json` is a
//! snapshot of the whole state; `state.log` holds, one JSON line each, the
//! changes committed since (the sandboxes, networks and rules an operation
//! added, changed or removed, with its `last_op`). A commit appends one line
//! and makes it durable, so its cost follows the size of the change, not
//! the number of sandboxes; when the log has grown past `COMPACT_BYTES` a
//! commit writes a new snapshot instead (atomically and durably,
//! `fsutil::atomic_write`) and starts an empty log. Every reader parses the
//! snapshot and the log: a log bounded in bytes, not by a share of the
//! snapshot, keeps what a read adds to the snapshot's parse small at any
//! number of sandboxes (a snapshot of 2,000 every ~70 commits costs each a
//! small share of one parse; a log of a quarter of it cost every read).
//!
//! A line is committed once whole (newline-terminated) on disk; a torn last
//! line (a crash during the append) is no commit, is ignored by readers and
//! cut off by the next writer. Lines carry the sequence number of their
//! commit; a snapshot, the number of the last commit it holds. Readers open
//! the log before they read the snapshot: a log replaced meanwhile (a new
//! snapshot was written) still holds, in the open file, every commit up to
//! that snapshot, so what they read is always one committed state.
//!
//! Both files are guarded by an advisory lock so that concurrent
//! invocations serialise. Only root can open them (0700 directory, 0600
//! files), and nobody waits for the lock without being told who holds it or
//! for longer than the lock timeout.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{
    paths::Paths,
    rule::Rule,
    state::{Network, Sandbox, Shared, State, STATE_VERSION},
};

/// How long one process may hold the lock while a command waits for it
/// before the command gives up (seconds; `BPFNET_LOCK_TIMEOUT` overrides it).
pub const LOCK_TIMEOUT_SECS: u64 = 60;
/// A short hold is ordinary (another command is running); only a longer one
/// is worth a line.
const LOCK_QUIET: Duration = Duration::from_secs(3);
/// The log's size at which a commit writes a snapshot instead (about 70
/// commits of one sandbox; `BPFNET_TEST_STORE_COMPACT` sets it instead).
const COMPACT_BYTES: u64 = 32 * 1024;

/// One commit in `state.log`: every object it changed, `null` for removed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_op: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    networks: BTreeMap<String, Option<Network>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sandboxes: BTreeMap<String, Option<Shared<Sandbox>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    policies: BTreeMap<u32, Option<Rule>>,
}

impl Record {
    /// What changed from `old` to `new` (the maps compared entry by entry:
    /// no serialisation of what did not change).
    fn between(old: &State, new: &State) -> Record {
        Record {
            seq: old.seq + 1,
            last_op: new.last_op.clone(),
            networks: diff(&old.networks, &new.networks),
            sandboxes: diff(&old.sandboxes, &new.sandboxes),
            policies: diff(&old.policies, &new.policies),
        }
    }

    fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.sandboxes.is_empty() && self.policies.is_empty()
    }

    fn apply(self, state: &mut State) {
        state.seq = self.seq;
        state.last_op = self.last_op;
        patch(&mut state.networks, self.networks);
        patch(&mut state.sandboxes, self.sandboxes);
        patch(&mut state.policies, self.policies);
    }
}

fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> BTreeMap<K, Option<V>> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    // One walk through both (their keys are in order): a sandbox the two
    // states still share compares as one pointer (`Shared`).
    let mut changed = BTreeMap::new();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some((ok, _)), Some((nk, _))) => ok.cmp(nk),
        };
        match order {
            Less => {
                let (k, _) = o.next().expect("peeked");
                changed.insert(k.clone(), None);
            }
            Greater => {
                let (k, v) = n.next().expect("peeked");
                changed.insert(k.clone(), Some(v.clone()));
            }
            Equal => {
                let ((_, ov), (k, v)) = (o.next().expect("peeked"), n.next().expect("peeked"));
                if ov != v {
                    changed.insert(k.clone(), Some(v.clone()));
                }
            }
        }
    }
    changed
}

fn patch<K: Ord, V>(map: &mut BTreeMap<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}

/// What a reader found on disk: the state, and where its files stand.
struct OnDisk {
    state: State,
    /// Bytes of the snapshot.
    snapshot_len: u64,
    /// Bytes of the log's whole lines (a torn tail follows them).
    log_len: u64,
    snapshot_id: Option<(u64, String)>,
    log_ino: Option<u64>,
}

/// The state, held under the lock until dropped (or read without the lock,
/// for commands that only read).
pub struct Locked {
    /// The working state: what the next commit writes.
    state: State,
    /// The state as committed on disk (what the next commit is a change
    /// of); `None` while the working state is still that state, so that
    /// reading costs no copy of every sandbox (see `state_mut`).
    saved: Option<State>,
    snapshot_len: u64,
    log_len: u64,
    /// The next commit writes a snapshot, whatever the log's size.
    compact_next: bool,
    lock: Option<Flock<File>>,
    paths: Paths,
}

impl Locked {
    fn new(paths: &Paths, disk: OnDisk, lock: Option<Flock<File>>) -> Self {
        Locked {
            saved: None,
            state: disk.state,
            snapshot_len: disk.snapshot_len,
            log_len: disk.log_len,
            compact_next: false,
            lock,
            paths: paths.clone(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The working state, to change (the committed one is kept first).
    pub fn state_mut(&mut self) -> &mut State {
        if self.saved.is_none() {
            self.saved = Some(self.state.clone());
        }
        &mut self.state
    }

    /// Makes `new` the working state (the committed one is kept: moved, not
    /// copied, when the working state was still it).
    pub fn set_state(&mut self, new: State) {
        let old = std::mem::replace(&mut self.state, new);
        if self.saved.is_none() {
            self.saved = Some(old);
        }
    }

    /// The committed state again as the working state.
    pub fn revert(&mut self) {
        if let Some(saved) = &self.saved {
            self.state = saved.clone();
        }
    }

    /// Takes the lock (waiting a bounded time for other bpfnet invocations)
    /// and reads the state.
    pub fn acquire(paths: &Paths) -> Result<Self> {
        secure(paths, true)?;
        let lock = lock(paths)?;
        Ok(Self::new(paths, read(paths)?, Some(lock)))
    }

    /// Takes the lock if nobody holds it; never waits.
    pub fn try_acquire(paths: &Paths) -> Result<Option<Self>> {
        secure(paths, true)?;
        let Some(lock) = try_lock(paths)? else {
            return Ok(None);
        };
        Ok(Some(Self::new(paths, read(paths)?, Some(lock))))
    }

    /// Reads the state without the lock: a commit is an append of a whole
    /// line or an atomic rename, so a command that only reads never waits
    /// for, or is frozen by, a holder.
    pub fn read_only(paths: &Paths) -> Result<Self> {
        secure(paths, false)?;
        Ok(Self::new(paths, read(paths)?, None))
    }

    /// Lets other commands run (`bpfnet run` while its command runs).
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Takes the lock again after [`Locked::unlock`] and re-reads the state
    /// (other commands may have changed it meanwhile).
    pub fn relock(&mut self) -> Result<()> {
        if self.lock.is_none() {
            let lock = lock(&self.paths)?;
            *self = Self::new(&self.paths.clone(), read(&self.paths)?, Some(lock));
        }
        Ok(())
    }

    /// Commits the state: one line appended to the log (durably), or a new
    /// snapshot when the log has grown to the snapshot's size, when there
    /// is no snapshot yet, or when it has an older layout.
    pub fn save(&mut self) -> Result<()> {
        if self.lock.is_none() {
            bail!("internal error: writing the state without holding the lock");
        }
        let Some(mut saved) = self.saved.take() else {
            return Ok(()); // nothing was changed
        };
        self.state.version = STATE_VERSION;
        let record = Record::between(&saved, &self.state);
        if record.is_empty() && record.last_op == saved.last_op {
            self.state.seq = saved.seq;
            self.saved = Some(saved);
            return Ok(());
        }
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        let threshold = compact_threshold();
        let migrate = saved.version != STATE_VERSION
            || self.snapshot_len == 0
            || std::mem::take(&mut self.compact_next);
        self.state.seq = record.seq;
        let written = if migrate || self.log_len + line.len() as u64 > threshold {
            self.compact()
        } else {
            self.append(&line)
        };
        if let Err(e) = written {
            self.state.seq = saved.seq;
            self.saved = Some(saved);
            return Err(e);
        }
        record.apply(&mut saved);
        saved.version = STATE_VERSION;
        self.saved = Some(saved);
        Ok(())
    }

    /// Appends a commit's line; cuts a torn tail a crash left first.
    fn append(&mut self, line: &[u8]) -> Result<()> {
        let path = self.paths.state_log();
        let created = !path.exists();
        let mut f = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let written = (|| {
            if f.metadata()?.len() != self.log_len {
                f.set_len(self.log_len)?;
            }
            use std::io::Seek as _;
            f.seek(std::io::SeekFrom::Start(self.log_len))?;
            f.write_all(line)?;
            f.sync_data()
        })();
        if let Err(e) = written {
            // Nothing half-written stays for readers to take as committed.
            let _ = f.set_len(self.log_len);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        if created {
            crate::fsutil::sync_dir(&self.paths.state_dir)?;
        }
        crate::fault::point("store:appended");
        self.log_len += line.len() as u64;
        Ok(())
    }

    /// Writes the whole state as the new snapshot, then an empty log. A
    /// crash between the two leaves the old log, whose lines the snapshot
    /// already holds (their sequence numbers say so).
    fn compact(&mut self) -> Result<()> {
        let mut bytes = serde_json::to_vec(&self.state)?;
        bytes.push(b'\n');
        crate::fsutil::atomic_write(&self.paths.state_file(), &bytes, 0o600)?;
        crate::fault::point("store:snapshot");
        self.snapshot_len = bytes.len() as u64;
        crate::fsutil::atomic_write(&self.paths.state_log(), b"", 0o600)?;
        self.log_len = 0;
        Ok(())
    }
}

/// The log size at which a commit writes a snapshot instead.
fn compact_threshold() -> u64 {
    std::env::var("BPFNET_TEST_STORE_COMPACT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(COMPACT_BYTES)
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
        (paths.state_log(), 0o600),
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

/// Reads the state without the lock (one committed state, see above).
pub fn snapshot(paths: &Paths) -> Result<State> {
    Ok(read(paths)?.state)
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
    /// [`State::validate`] for a state that held together before `changes`:
    /// only what they touched is checked (all of it when networks changed).
    fn validate_changed(&self, changes: &Changes) -> Result<()> {
        if changes.networks {
            return self.validate();
        }
        for (name, _) in &changes.sandboxes {
            let Some(s) = self.sandboxes.get(name) else {
                continue;
            };
            if *name != s.name {
                bail!("sandbox {name:?} is listed under the name {:?}", s.name);
            }
            if let Some(e) = s
                .endpoints
                .iter()
                .find(|e| !self.networks.contains_key(&e.network))
            {
                bail!(
                    "sandbox {name:?} has an endpoint on network {:?}, which does not exist",
                    e.network
                );
            }
        }
        // (Rules are not the responder's business; `validate` checks them
        // whenever the state is read whole.)
        Ok(())
    }

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

/// The snapshot and the log's whole lines after it: one committed state.
fn read(paths: &Paths) -> Result<OnDisk> {
    let log_path = paths.state_log();
    // The log first: see the module's comment.
    let log = match File::open(&log_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", log_path.display())),
    };
    let path = paths.state_file();
    let (mut state, snapshot_len, snapshot_id) = match File::open(&path) {
        Ok(mut f) => {
            let id = identity(&f);
            let mut bytes = vec![];
            f.read_to_end(&mut bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            (parse_snapshot(&path, &bytes)?, bytes.len() as u64, id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), 0, None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (mut log_len, mut log_ino) = (0, None);
    if let Some(mut log) = log {
        let mut bytes = vec![];
        log.read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", log_path.display()))?;
        let records = whole_lines(&bytes).map_err(|what| corrupt_log(paths, what))?;
        for (n, record) in records {
            if record.seq <= state.seq {
                continue; // the snapshot holds it
            }
            if record.seq != state.seq + 1 {
                return Err(corrupt_log(
                    paths,
                    format!(
                        "line {n} is commit {}, the state is at {}",
                        record.seq, state.seq
                    ),
                ));
            }
            record.apply(&mut state);
        }
        log_len = bytes.len() as u64 - torn(&bytes);
        log_ino = identity(&log).map(|(ino, _)| ino);
    }
    state.validate().with_context(|| {
        format!(
            "{} is corrupt; restore it from a backup, or move it away and run `bpfnet gc`",
            path.display()
        )
    })?;
    Ok(OnDisk {
        state,
        snapshot_len,
        log_len,
        snapshot_id,
        log_ino,
    })
}

/// (inode, "mtime len") of an open file.
fn identity(f: &File) -> Option<(u64, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = f.metadata().ok()?;
    Some((
        m.ino(),
        format!("{}.{} {}", m.mtime(), m.mtime_nsec(), m.len()),
    ))
}

/// Bytes of a torn last line (no newline yet: never committed).
fn torn(bytes: &[u8]) -> u64 {
    bytes.iter().rev().take_while(|&&b| b != b'\n').count() as u64
}

/// The records of a log's whole lines, with their line numbers (from 1).
fn whole_lines(bytes: &[u8]) -> std::result::Result<Vec<(usize, Record)>, String> {
    let whole = bytes.len() - torn(bytes) as usize;
    let mut records = vec![];
    for (n, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record: Record = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        records.push((n + 1, record));
    }
    Ok(records)
}

fn corrupt_log(paths: &Paths, what: String) -> anyhow::Error {
    anyhow!(
        "{} is corrupt ({what}); restore it and {} from a backup, or move both away and run `bpfnet gc`",
        paths.state_log().display(),
        paths.state_file().display()
    )
}

/// Follows the committed state across commits, reading only the lines
/// appended since it last looked while neither file was replaced (the DNS
/// responder, which outlives the commands).
pub struct Follower {
    paths: Paths,
    state: State,
    snapshot_id: Option<(u64, String)>,
    log_ino: Option<u64>,
    offset: u64,
}

impl Follower {
    pub fn new(paths: &Paths) -> Follower {
        Follower {
            paths: paths.clone(),
            state: State::default(),
            snapshot_id: None,
            log_ino: None,
            offset: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Brings the state up to date with what is committed, and says what
    /// changed: `None` when it was read whole (anything may have).
    pub fn refresh(&mut self) -> Result<(&State, Option<Changes>)> {
        let changes = self.catch_up();
        if changes.is_none() {
            let disk = read(&self.paths)?;
            self.state = disk.state;
            self.snapshot_id = disk.snapshot_id;
            self.log_ino = disk.log_ino;
            self.offset = disk.log_len;
        }
        Ok((&self.state, changes))
    }

    /// Applies the lines appended since the last look and returns what they
    /// changed; `None` when that is not enough (a file replaced, anything
    /// unexpected): read it all.
    fn catch_up(&mut self) -> Option<Changes> {
        let records = self.appended()?;
        let mut changes = Changes::default();
        for (_, record) in records {
            changes.networks |= !record.networks.is_empty();
            for name in record.sandboxes.keys() {
                let old = self.state.sandboxes.get(name).cloned();
                changes.sandboxes.push((name.clone(), old));
            }
            record.apply(&mut self.state);
        }
        // (Not valid: the full read that follows replaces it, and says why.)
        self.state.validate_changed(&changes).ok()?;
        Some(changes)
    }

    /// The records of the lines appended since the last look (the offset
    /// moved past them), if the files are the ones last read.
    fn appended(&mut self) -> Option<Vec<(usize, Record)>> {
        use std::io::Seek as _;
        let (Some(snapshot_id), Some(log_ino)) = (&self.snapshot_id, self.log_ino) else {
            return None;
        };
        let mut log = File::open(self.paths.state_log()).ok()?;
        let same_snapshot = File::open(self.paths.state_file())
            .ok()
            .and_then(|f| identity(&f))
            .is_some_and(|id| id == *snapshot_id);
        let same_log = identity(&log).is_some_and(|(ino, _)| ino == log_ino);
        let mut bytes = vec![];
        let read = log
            .seek(std::io::SeekFrom::Start(self.offset))
            .and_then(|_| log.read_to_end(&mut bytes));
        if !same_snapshot || !same_log || read.is_err() {
            return None;
        }
        let records = whole_lines(&bytes).ok()?;
        let next = self.state.seq + 1;
        if (0..).zip(&records).any(|(i, (_, r))| r.seq != next + i) {
            return None;
        }
        self.offset += bytes.len() as u64 - torn(&bytes);
        Some(records)
    }
}

/// What the commits a [`Follower`] caught up with changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Some network was added, changed or removed.
    pub networks: bool,
    /// Each sandbox a commit added, changed or removed, with what it was
    /// before (`None`: it did not exist), in commit order.
    pub sandboxes: Vec<(String, Option<Shared<Sandbox>>)>,
}

fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<State> {
    // One pass over the text (the snapshot is the bulk of what a command
    // reads): UTF-8 checked once for the whole, not string by string.
    let parsed = std::str::from_utf8(bytes)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(serde_json::from_str::<State>(text)?));
    // A newer layout is refused whether or not it parses as this one.
    #[derive(Deserialize)]
    struct Version {
        #[serde(default)]
        version: u32,
    }
    let version = match &parsed {
        Ok(state) => Some(state.version),
        Err(_) => serde_json::from_slice::<Version>(bytes)
            .ok()
            .map(|v| v.version),
    };
    if let Some(version) = version.filter(|&v| v > STATE_VERSION) {
        bail!(
            "{} was written by a newer bpfnet (state version {version}, this one reads up to {STATE_VERSION}); use that bpfnet",
            path.display(),
        );
    }
    parsed.with_context(|| {
        format!(
            "{} is corrupt; restore it from a backup, or move it away and run `bpfnet gc`",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Endpoint;

    const SAMPLE: &str = r#"{"networks": {"n": {"id": "x", "name": "n", "created": "", "driver": "bridge",
        "net_id": 1, "subnet": "10.1.0.0/16", "gateway": "10.1.0.1", "internal": false, "options": {}}},
        "sandboxes": {"s": {"id": "y", "name": "s", "created": "", "mode": {"networks": "n"},
        "endpoints": [{"id": "z", "network": "n", "ifname": "eth0", "host_ifname": "bnz",
        "ip": "10.1.0.2", "mac": [2, 66, 10, 1, 0, 2], "slot": 0}]}}}"#;

    #[test]
    fn a_record_holds_exactly_what_was_added_changed_or_removed() {
        let map = |kv: &[(&str, u8)]| -> BTreeMap<String, u8> {
            kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let old = map(&[("a", 1), ("b", 2), ("c", 3), ("e", 5)]);
        let new = map(&[("b", 20), ("c", 3), ("d", 4), ("e", 5), ("f", 6)]);
        let got: Vec<(String, Option<u8>)> = diff(&old, &new).into_iter().collect();
        let want = [("a", None), ("b", Some(20)), ("d", Some(4)), ("f", Some(6))];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v)));
        assert!(diff(&new, &new).is_empty());
        assert_eq!(diff(&BTreeMap::new(), &new).len(), 5);
        assert_eq!(diff(&new, &BTreeMap::new()).len(), 5);
    }

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

    /// A state directory of its own, removed on drop.
    struct Dir(Paths);

    impl Dir {
        fn new(what: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("bpfnet-store-{what}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(Paths {
                state_dir: dir,
                bpffs: "/nonexistent".into(),
            })
        }

        fn log_lines(&self) -> usize {
            std::fs::read_to_string(self.0.state_log())
                .unwrap_or_default()
                .lines()
                .count()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0.state_dir);
        }
    }

    fn sandbox(name: &str) -> Sandbox {
        let mut s = Sandbox::clone(&parse(SAMPLE.as_bytes()).unwrap().sandboxes["s"]);
        s.name = name.into();
        s
    }

    /// Commits `op` adding sandbox `name`.
    fn add(l: &mut Locked, name: &str, op: &str) {
        let sample = parse(SAMPLE.as_bytes()).unwrap();
        l.state_mut()
            .networks
            .insert("n".into(), sample.networks["n"].clone());
        l.state_mut()
            .sandboxes
            .insert(name.into(), sandbox(name).into());
        l.state_mut().last_op = Some(op.into());
        l.save().unwrap();
    }

    #[test]
    fn the_free_slot_is_the_lowest_no_endpoint_uses() {
        let on_slots = |name: &str, slots: &[u32]| -> Shared<Sandbox> {
            let mut sb = sandbox(name);
            let ep = sb.endpoints[0].clone();
            sb.endpoints = slots
                .iter()
                .map(|&slot| Endpoint { slot, ..ep.clone() })
                .collect();
            sb.into()
        };
        let mut st = State::default();
        assert_eq!(st.free_slot(), 0);
        for (name, slots) in [("a", [0, 2].as_slice()), ("b", &[3, 2]), ("c", &[5])] {
            st.sandboxes.insert(name.into(), on_slots(name, slots));
        }
        assert_eq!(st.free_slot(), 1);
        st.sandboxes.insert("d".into(), on_slots("d", &[1]));
        assert_eq!(st.free_slot(), 4);
        st.sandboxes.remove("c");
        st.sandboxes.insert("e".into(), on_slots("e", &[4]));
        assert_eq!(st.free_slot(), 5);
    }

    fn names(s: &State) -> Vec<&str> {
        s.sandboxes.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_version_1_state_file_is_migrated_to_a_snapshot_by_the_first_save() {
        let d = Dir::new("migrate");
        std::fs::create_dir_all(&d.0.state_dir).unwrap();
        let v1 = SAMPLE.replacen('{', r#"{"version": 1, "last_op": "old","#, 1);
        std::fs::write(d.0.state_file(), &v1).unwrap();
        let mut l = Locked::acquire(&d.0).unwrap();
        assert_eq!(l.state.last_op.as_deref(), Some("old"));
        add(&mut l, "t", "op1");
        drop(l);
        let snap: State =
            serde_json::from_slice(&std::fs::read(d.0.state_file()).unwrap()).unwrap();
        assert_eq!(snap.version, STATE_VERSION);
        assert_eq!(names(&snap), ["s", "t"]);
        assert_eq!(d.log_lines(), 0);
        let read = snapshot(&d.0).unwrap();
        assert_eq!(read.last_op.as_deref(), Some("op1"));
        assert_eq!(names(&read), ["s", "t"]);
    }

    #[test]
    fn each_commit_appends_one_line_holding_only_what_changed() {
        let d = Dir::new("append");
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "a", "op1"); // the first save writes the snapshot
        assert_eq!(d.log_lines(), 0);
        add(&mut l, "b", "op2");
        add(&mut l, "c", "op3");
        l.state_mut().sandboxes.remove("a");
        l.state_mut().last_op = Some("op4".into());
        l.save().unwrap();
        assert_eq!(d.log_lines(), 3);
        let log = std::fs::read_to_string(d.0.state_log()).unwrap();
        let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(
            last,
            serde_json::json!({"seq": 4, "last_op": "op4", "sandboxes": {"a": null}})
        );
        let read = snapshot(&d.0).unwrap();
        assert_eq!(names(&read), ["b", "c"]);
        assert_eq!((read.seq, read.last_op.as_deref()), (4, Some("op4")));
        // Nothing changed, nothing written.
        l.save().unwrap();
        assert_eq!(d.log_lines(), 3);
    }

    /// A working state set whole (a command's target) commits as the change
    /// from the committed one; `revert` brings the committed one back, also
    /// in a process that read the state without changing it first.
    #[test]
    fn a_state_set_whole_commits_its_change_and_revert_restores_the_committed_one() {
        let d = Dir::new("set");
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "a", "op1");
        add(&mut l, "b", "op2");
        drop(l);
        let mut l = Locked::acquire(&d.0).unwrap();
        let mut target = l.state().clone();
        target.sandboxes.remove("a");
        target.sandboxes.insert("c".into(), sandbox("c").into());
        target.last_op = Some("op3".into());
        l.set_state(target.clone());
        l.revert();
        assert_eq!(names(l.state()), ["a", "b"]);
        l.save().unwrap();
        assert_eq!(d.log_lines(), 1, "a reverted state commits nothing");
        l.set_state(target);
        l.save().unwrap();
        let log = std::fs::read_to_string(d.0.state_log()).unwrap();
        let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(last["sandboxes"]["a"], serde_json::Value::Null);
        assert_eq!(last["sandboxes"]["c"]["name"], "c");
        assert_eq!(last["sandboxes"].as_object().map(|o| o.len()), Some(2));
        assert_eq!(names(&snapshot(&d.0).unwrap()), ["b", "c"]);
    }

    #[test]
    fn a_torn_last_line_is_no_commit_and_the_next_one_replaces_it() {
        let d = Dir::new("torn");
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "a", "op1");
        add(&mut l, "b", "op2");
        drop(l);
        let mut f = File::options().append(true).open(d.0.state_log()).unwrap();
        f.write_all(br#"{"seq":3,"last_op":"op3","sandboxes":{"c":"#)
            .unwrap();
        drop(f);
        let read = snapshot(&d.0).unwrap();
        assert_eq!(
            (names(&read), read.last_op.as_deref()),
            (vec!["a", "b"], Some("op2"))
        );
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "d", "op3");
        drop(l);
        assert_eq!(d.log_lines(), 2);
        let read = snapshot(&d.0).unwrap();
        assert_eq!(
            (names(&read), read.last_op.as_deref()),
            (vec!["a", "b", "d"], Some("op3"))
        );
    }

    #[test]
    fn a_crash_between_the_new_snapshot_and_the_new_log_loses_nothing() {
        let d = Dir::new("compact");
        let mut l = Locked::acquire(&d.0).unwrap();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            add(&mut l, n, &format!("op{i}"));
        }
        let old_log = std::fs::read(d.0.state_log()).unwrap();
        assert_eq!(d.log_lines(), 2);
        // A commit that compacts, then the old log put back: what a crash
        // after the snapshot's rename and before the log's leaves.
        l.compact_next = true;
        add(&mut l, "e", "op4");
        drop(l);
        std::fs::write(d.0.state_log(), &old_log).unwrap();
        let read = snapshot(&d.0).unwrap();
        assert_eq!(
            (names(&read), read.last_op.as_deref()),
            (vec!["a", "b", "c", "e"], Some("op4"))
        );
        // The next commit goes on from there.
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "f", "op5");
        drop(l);
        let read = snapshot(&d.0).unwrap();
        assert_eq!(names(&read), ["a", "b", "c", "e", "f"]);
        assert_eq!(read.seq, 5);
    }

    #[test]
    fn a_log_with_a_gap_or_a_bad_line_is_refused() {
        let d = Dir::new("gap");
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "a", "op1");
        drop(l);
        let log = d.0.state_log();
        std::fs::write(&log, "{\"seq\":5,\"last_op\":\"x\"}\n").unwrap();
        let e = format!("{:#}", snapshot(&d.0).unwrap_err());
        assert!(
            e.contains("state.log is corrupt (line 1 is commit 5, the state is at 1)"),
            "{e}"
        );
        std::fs::write(&log, "nonsense\n{\"seq\":2}\n").unwrap();
        let e = format!("{:#}", snapshot(&d.0).unwrap_err());
        assert!(
            e.contains("state.log is corrupt (line 1: expected ident"),
            "{e}"
        );
    }

    #[test]
    fn a_follower_reads_what_was_appended_and_everything_after_a_new_snapshot() {
        let d = Dir::new("follow");
        let mut l = Locked::acquire(&d.0).unwrap();
        add(&mut l, "a", "op1");
        let mut f = Follower::new(&d.0);
        let (state, changes) = f.refresh().unwrap();
        assert_eq!(names(state), ["a"]);
        assert!(changes.is_none(), "the first look reads it whole");
        add(&mut l, "b", "op2");
        add(&mut l, "c", "op3");
        l.state_mut().sandboxes.get_mut("b").unwrap().id = "changed".into();
        l.state_mut().last_op = Some("op4".into());
        l.save().unwrap();
        let offset = f.offset;
        let changes = f.catch_up().expect("appended lines are read incrementally");
        assert!(f.offset > offset);
        assert_eq!(names(f.state()), ["a", "b", "c"]);
        assert_eq!(f.state().last_op.as_deref(), Some("op4"));
        // What each commit changed, with what it was before.
        assert!(!changes.networks);
        let seen: Vec<(&str, Option<&str>)> = changes
            .sandboxes
            .iter()
            .map(|(n, old)| (n.as_str(), old.as_ref().map(|s| s.id.as_str())))
            .collect();
        assert_eq!(seen, [("b", None), ("c", None), ("b", Some("y"))]);
        l.compact_next = true;
        l.state_mut().sandboxes.remove("a");
        l.state_mut().last_op = Some("op5".into());
        l.save().unwrap();
        assert!(f.catch_up().is_none(), "a new snapshot is read whole");
        assert_eq!(names(f.refresh().unwrap().0), ["b", "c"]);
        add(&mut l, "d", "op6");
        let (state, changes) = f.refresh().unwrap();
        assert_eq!(names(state), ["b", "c", "d"]);
        assert_eq!(changes.unwrap().sandboxes.len(), 1);
        assert_eq!(f.state().seq, snapshot(&d.0).unwrap().seq);
    }
}
