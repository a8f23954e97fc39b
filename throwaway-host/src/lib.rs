//! The throw-away "host" shared by the integration tests (`bpfnet-tests`) and
//! the benchmark (`xtask bench`): a holder process in its own mount and
//! network namespace with private tmpfs on `/run/netns` and `/etc/netns`, a
//! fresh sysfs and a private bpffs. Commands run inside it through `nsenter`;
//! dropping the [`Holder`] kills what runs inside it and the holder, which
//! removes the namespaces, veths, bridges, pins and rules with it. Nothing
//! touches the real host's interfaces or routes.
//!
//! Every child started here gets `PR_SET_PDEATHSIG=SIGKILL`, so a killed
//! test or bench (Ctrl-C, panic=abort, OOM) takes its holders with it.
//! Each user keeps its own error style (panics in tests, `anyhow` in the
//! bench): this crate returns `io::Error`s that say what went wrong.
use std::{
    collections::HashSet,
    fs,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// The holder of one throw-away host's namespaces. Drop (or [`Holder::stop`])
/// kills every process inside, then the holder.
pub struct Holder {
    child: Child,
    pid: u32,
    netns: String,
    stopped: bool,
}

/// The network namespace of a process (`net:[INODE]`), "" when unreadable.
pub fn netns_of(pid: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Holder {
    /// Starts a holder; it must report ready within `ready_within` (after a
    /// host with thousands of namespaces is gone, the kernel's netns cleanup
    /// can hold `unshare` up for tens of seconds).
    pub fn start(ready_within: Duration) -> io::Result<Holder> {
        // Mount points must exist on the real host; an empty dir is harmless.
        for d in ["/run/netns", "/etc/netns"] {
            fs::create_dir_all(d)
                .map_err(|e| io::Error::new(e.kind(), format!("mkdir {d}: {e}")))?;
        }
        let setup = "set -e; \
            mount -t tmpfs tmpfs /run/netns; \
            mount --make-shared /run/netns; \
            mount -t tmpfs tmpfs /etc/netns; \
            mount -t sysfs sysfs /sys; \
            mount -t bpf bpf /sys/fs/bpf; \
            ip link set lo up; \
            echo ready; \
            exec sleep infinity";
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--net", "--propagation", "private", "--"])
            .args(["sh", "-c", setup])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run unshare (util-linux): {e}"))
        })?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(ready_within);
        if ready.as_deref().map(str::trim) != Ok("ready") {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(io::Error::other(format!(
                "holder did not get ready within {} s: {ready:?}; stderr: {}",
                ready_within.as_secs(),
                err.trim()
            )));
        }
        let netns = netns_of(&pid.to_string());
        if netns.is_empty() || netns == netns_of("self") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(
                "holder is not in a network namespace of its own",
            ));
        }
        Ok(Holder {
            child,
            pid,
            netns,
            stopped: false,
        })
    }

    /// Pid of the holder (`/proc/<pid>/ns/net`, `/proc/<pid>/root` reach
    /// into the host's namespaces).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `nsenter -t PID -m -n -- ARGS`: a command to run inside the host.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-n", "--"])
            .args(args);
        cmd
    }

    /// The netns file of a sandbox, reachable from the real host through the
    /// holder's root (its mount namespace).
    pub fn netns_path(&self, sandbox: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/run/netns/{sandbox}", self.pid))
    }

    /// Kills every process inside the host, then the holder. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.kill_inside();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills every process in the host's netns or in one of its sandboxes,
    /// except the holder. Never touches the real host's netns.
    fn kill_inside(&self) {
        let own = netns_of("self");
        let mut targets: HashSet<String> = HashSet::new();
        targets.insert(self.netns.clone());
        if let Ok(rd) = fs::read_dir(format!("/proc/{}/root/run/netns", self.pid)) {
            for e in rd.flatten() {
                if let Ok(m) = fs::metadata(e.path()) {
                    targets.insert(format!("net:[{}]", m.ino()));
                }
            }
        }
        targets.remove(&own);
        let me = std::process::id();
        for _ in 0..5 {
            let mut killed = 0;
            let Ok(rd) = fs::read_dir("/proc") else {
                return;
            };
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me || pid == self.pid {
                    continue;
                }
                if targets.contains(&netns_of(&pid.to_string())) {
                    // SAFETY: kill(2) of a process living in one of our namespaces.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    killed += 1;
                }
            }
            if killed == 0 {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills the child when this process dies, whatever way it dies.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
}

/// Starts `cmd` with stdout and stderr piped and `stdin` (if any) written
/// to it by a thread; the child dies with this process.
pub fn spawn_piped(cmd: &mut Command, stdin: Option<&[u8]>) -> io::Result<Child> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_parent(cmd);
    let mut child = cmd.spawn()?;
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    Ok(child)
}

/// Waits for `child` up to `timeout`: its exit code (-1 when killed by a
/// signal), `None` on timeout.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<i32>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st.code().unwrap_or(-1)));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Kills `child` unless it has exited already, and reaps it.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A command line as a shell would read it (for messages).
pub fn render(args: &[&str]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}
