//! A throw-away "host" for one contender (the `throwaway-host` crate's
//! [`Holder`], shared with the integration tests): every command runs inside
//! it through `nsenter`; dropping the [`Host`] kills what runs inside it and
//! the holder, which removes the namespaces, veths, bridges, pins and iptables
//! rules with it. Nothing touches the real host's interfaces or routes.
//!
//! Every child gets `PR_SET_PDEATHSIG=SIGKILL`, so a killed bench (Ctrl-C,
//! panic=abort, OOM) takes its holders and traffic processes with it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use throwaway_host::{die_with_parent, kill_and_reap, render, spawn_piped, wait_timeout, Holder};

/// Timeout of an ordinary command inside a host (ip, bpfnet, netavark…).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Output of a finished command.
pub struct Out {
    pub line: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn check(self) -> Result<Out> {
        if self.code != 0 {
            bail!(
                "`{}` failed (exit {}): {}",
                self.line,
                self.code,
                last_lines(&self.stderr, &self.stdout)
            );
        }
        Ok(self)
    }
}

/// The last few lines of stderr (else stdout), for one-line error messages.
fn last_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail.join(" | ")
    }
}

fn reader<R: std::io::Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` to completion with a timeout (killed then), optional stdin.
/// Waits for `child` to exit (at most `timeout`), waking the moment it
/// does: the set-up and teardown figures are the wall time of commands that
/// take a few ms, which polling with sleeps would round up by as much as
/// its interval. (A pidfd polled for readability; without one, polling.)
fn wait_exact(child: &mut std::process::Child, timeout: Duration) -> std::io::Result<Option<i32>> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        return wait_timeout(child, timeout);
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count, a timeout in ms.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(Some(child.wait()?.code().unwrap_or(-1)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn run_timeout(
    line: &str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Out> {
    let mut child =
        spawn_piped(&mut cmd, stdin).with_context(|| format!("cannot start `{line}`"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let code = match wait_exact(&mut child, timeout).context("wait for a child")? {
        Some(c) => c,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let e = err.join().unwrap_or_default();
            bail!(
                "`{line}` timed out after {:.0} s: {}",
                timeout.as_secs_f64(),
                last_lines(&e, "")
            );
        }
    };
    Ok(Out {
        line: line.to_string(),
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// A background process (server, sleeper) inside a host. Drop kills it.
pub struct Proc {
    pub line: String,
    child: Child,
    out: Option<thread::JoinHandle<String>>,
    err: Option<thread::JoinHandle<String>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` (then kills) and returns what it printed.
    pub fn finish(mut self, timeout: Duration) -> Result<Out> {
        let code = match wait_timeout(&mut self.child, timeout).context("wait for a child")? {
            Some(c) => c,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                -1
            }
        };
        Ok(Out {
            line: self.line.clone(),
            code,
            stdout: self
                .out
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
            stderr: self
                .err
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
        })
    }

    /// Like [`Proc::finish`] but the exit code must be 0.
    pub fn finish_ok(self, timeout: Duration) -> Result<Out> {
        self.finish(timeout)?.check()
    }

    /// SIGTERM, then collect (SIGKILL after 3 s).
    pub fn stop(self) -> Result<Out> {
        // SAFETY: kill(2) of our own child, not yet reaped (we hold it).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.finish(Duration::from_secs(3))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// One throw-away host.
pub struct Host {
    pub name: String,
    /// Scratch directory on the real filesystem (visible inside too).
    pub dir: PathBuf,
    /// `BPFNET_ROOT` of the bpfnet instances of this host.
    pub state: PathBuf,
    holder: Holder,
}

impl Host {
    pub fn start(name: &str, base: &Path) -> Result<Host> {
        let dir = base.join(name);
        let _ = fs::remove_dir_all(&dir);
        let state = dir.join("state");
        fs::create_dir_all(&state).with_context(|| format!("mkdir {}", state.display()))?;
        // After a host with thousands of namespaces is gone, the kernel's
        // netns cleanup can hold `unshare` up for tens of seconds.
        let holder = Holder::start(Duration::from_secs(90))
            .map_err(|e| anyhow!("throw-away host {name}: {e}"))?;
        Ok(Host {
            name: name.to_string(),
            dir,
            state,
            holder,
        })
    }

    fn command(&self, args: &[&str]) -> (String, Command) {
        let mut cmd = self.holder.command(args);
        cmd.env("BPFNET_ROOT", &self.state);
        (format!("[{}] {}", self.name, render(args)), cmd)
    }
    /// Runs a command inside the host; it must exit 0.
    pub fn run(&self, args: &[&str]) -> Result<Out> {
        self.run_full(args, None, CMD_TIMEOUT)?.check()
    }

    /// Runs a command inside the host: any exit code, with stdin and timeout.
    pub fn run_full(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Out> {
        let (line, cmd) = self.command(args);
        run_timeout(&line, cmd, stdin, timeout)
    }

    /// Runs a command inside the host with extra environment variables (a
    /// CNI plugin's `CNI_*`) and stdin; it must exit 0.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Result<Out> {
        let (line, mut cmd) = self.command(args);
        cmd.envs(env.iter().copied());
        run_timeout(&line, cmd, Some(stdin), CMD_TIMEOUT)?.check()
    }

    /// `sh -c SCRIPT` inside the host; must exit 0.
    pub fn sh(&self, script: &str) -> Result<Out> {
        self.run(&["sh", "-c", script])
    }

    /// `ip netns exec SANDBOX ARGS`; must exit 0.
    pub fn exec(&self, sandbox: &str, args: &[&str]) -> Result<Out> {
        let mut v = vec!["ip", "netns", "exec", sandbox];
        v.extend_from_slice(args);
        self.run(&v)
    }

    /// Starts a background command in a sandbox (`ip netns exec` and `nice`
    /// exec it, so the pid is the command's own and /proc/PID/net shows the
    /// sandbox). It runs at nice -20: the VM is shared with other work.
    pub fn spawn_in(&self, sandbox: &str, args: &[&str]) -> Result<Proc> {
        let mut v = vec!["ip", "netns", "exec", sandbox, "nice", "-n", "-20"];
        v.extend_from_slice(args);
        let (line, mut cmd) = self.command(&v);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        let out = Some(reader(child.stdout.take()));
        let err = Some(reader(child.stderr.take()));
        Ok(Proc {
            line,
            child,
            out,
            err,
        })
    }

    /// The netns file of a sandbox, reachable from the real host through the
    /// holder's root (its mount namespace).
    pub fn netns_path(&self, sandbox: &str) -> PathBuf {
        self.holder.netns_path(sandbox)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.holder.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads a whole file; the error names it.
pub fn read(path: impl AsRef<Path>) -> Result<String> {
    let p = path.as_ref();
    fs::read_to_string(p).map_err(|e| anyhow!("read {}: {e}", p.display()))
}
