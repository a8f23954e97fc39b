//! Integration-test harness: every test runs in a throw-away "host".
//!
//! A [`TestHost`] is a holder process (the `throwaway-host` crate's, shared
//! with the benchmark) in its own mount and network namespace, with private
//! tmpfs mounts on `/run/netns` and `/etc/netns`, a fresh sysfs and a private
//! bpffs on `/sys/fs/bpf`. Every command of a test runs inside it via
//! `nsenter`, so sandboxes, veths, pins and addresses that `bpfnet` makes live
//! and die with the holder: nothing touches the real host's networking, and
//! dropping the `TestHost` (also while unwinding from a panic) removes it all.
//!
//! Run as root: `cargo xtask test`, or `cargo build -p bpfnet && cargo test -p
//! bpfnet-tests -- --test-threads=2`. Environment: `BPFNET_BIN` = the binary
//! under test (default `target/debug/bpfnet`); `BNT_KEEP=1` keeps the scratch
//! dirs `/tmp/bnt-<pid>-<n>` (state file, helper script) for post-mortems.
//! Traffic helpers live in `bnt.py` (run by `/usr/bin/python3`, which has
//! scapy); they are written into each host's scratch dir.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use throwaway_host::{kill_and_reap, render, spawn_piped, Holder};

pub mod frames;
pub mod prog_run;

/// The one line every test prints when not run as root.
pub const NEED_ROOT: &str = "integration tests need root (run `cargo xtask test` as root)";

/// Default timeout of one foreground command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Interpreter that can import scapy (the one on PATH may be another).
pub const PYTHON: &str = "/usr/bin/python3";

const BNT_PY: &str = include_str!("bnt.py");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Panics with [`NEED_ROOT`] unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("{NEED_ROOT}");
    }
}

/// Path of the `bpfnet` binary under test: `$BPFNET_BIN`, else the workspace's
/// debug build.
pub fn bpfnet_bin() -> PathBuf {
    match std::env::var_os("BPFNET_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/bpfnet"),
    }
}

/// Result of one command.
#[derive(Clone)]
pub struct Output {
    pub cmd: String,
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Last non-empty stdout line ("" if none).
    pub fn last_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// How long to wait for a pipe's EOF once its process has exited: a process
/// it left in the background may hold the pipe open indefinitely.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// A pipe read to EOF by a detached thread, so that a grandchild holding it
/// open can't block the test.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Capture {
    fn start<R: Read + Send + 'static>(r: Option<R>) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let b = Arc::clone(&buf);
        thread::spawn(move || {
            if let Some(mut r) = r {
                let mut chunk = [0u8; 65536];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let _ = tx.send(());
        });
        Capture { buf, done }
    }

    /// What was read, after waiting up to `grace` for EOF.
    fn collect(&self, grace: Duration) -> String {
        let complete = !matches!(
            self.done.recv_timeout(grace),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let mut s = String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned();
        if !complete {
            s.push_str("\n[bnt: output cut, the pipe is held open by a background process]\n");
        }
        s
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    throwaway_host::wait_timeout(child, timeout)
        .unwrap_or_else(|e| panic!("waiting for a child: {e}"))
}

/// A process running in the background inside a test host. Its stdout lines
/// are collected as they come; Drop kills it.
pub struct Bg {
    pub cmd: String,
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    stdout_done: mpsc::Receiver<()>,
    stderr: Capture,
}

impl Bg {
    fn start(cmd_line: String, mut cmd: Command) -> Bg {
        let mut child = spawn_piped(&mut cmd, None)
            .unwrap_or_else(|e| panic!("cannot start `{cmd_line}`: {e}"));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out: ChildStdout = child.stdout.take().expect("piped stdout");
        let l2 = Arc::clone(&lines);
        let (tx, stdout_done) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*l2;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
            let _ = tx.send(());
        });
        let stderr = Capture::start(child.stderr.take());
        Bg {
            cmd: cmd_line,
            child,
            lines,
            stdout_done,
            stderr,
        }
    }

    /// Stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits until a stdout line starts with `prefix` and returns it; panics
    /// (with what the process printed) on timeout or early exit.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_lines(prefix, 1, |l| l.starts_with(prefix), timeout)
            .pop()
            .unwrap()
    }

    /// Waits until `n` stdout lines contain `needle`; returns them.
    pub fn wait_contains(&mut self, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
        self.wait_lines(needle, n, |l| l.contains(needle), timeout)
    }

    fn wait_lines(
        &mut self,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let matching = |lines: &[String]| -> Vec<String> {
            lines.iter().filter(|l| pred(l)).cloned().collect()
        };
        loop {
            {
                let (m, cv) = &*self.lines;
                let guard = m.lock().unwrap();
                let found = matching(&guard);
                if found.len() >= n {
                    return found;
                }
                let _ = cv.wait_timeout(guard, Duration::from_millis(20)).unwrap();
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // Let the reader drain what is left before reporting.
                thread::sleep(Duration::from_millis(50));
                let found = matching(&self.lines());
                if found.len() >= n {
                    return found;
                }
                let why = if exited { "exited" } else { "timed out" };
                let out = self.finish(Duration::from_secs(1));
                panic!(
                    "background process {why} before printing {n} line(s) with `{what}`:\n{out}"
                );
            }
        }
    }

    /// Waits for the process to exit (kills it after `timeout`) and returns
    /// everything it printed.
    pub fn finish(&mut self, timeout: Duration) -> Output {
        let code = match wait_timeout(&mut self.child, timeout) {
            Some(c) => c,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                -1
            }
        };
        let complete = !matches!(
            self.stdout_done.recv_timeout(PIPE_GRACE),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let stderr = self.stderr.collect(PIPE_GRACE);
        let mut stdout = self.lines().join("\n");
        stdout.push('\n');
        if !complete {
            stdout.push_str("[bnt: output cut, the pipe is held open by a background process]\n");
        }
        Output {
            cmd: self.cmd.clone(),
            code,
            stdout,
            stderr,
        }
    }

    /// Like [`Bg::finish`] but panics unless the exit code is 0.
    pub fn finish_ok(&mut self, timeout: Duration) -> Output {
        let out = self.finish(timeout);
        if !out.success() {
            panic!("background command failed:\n{out}");
        }
        out
    }

    /// Sends SIGTERM (helpers print their results then) and collects output.
    pub fn stop(&mut self) -> Output {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        }
        self.finish(Duration::from_secs(5))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A throw-away host: own mount + network namespace, private `/run/netns`,
/// `/etc/netns`, sysfs and bpffs, and its own `BPFNET_ROOT`.
pub struct TestHost {
    pub name: String,
    pub tag: String,
    /// State directory handed to bpfnet as `BPFNET_ROOT`.
    pub root: PathBuf,
    /// Scratch directory (helper scripts, files) — on the real filesystem,
    /// visible inside the host too.
    pub dir: PathBuf,
    holder: Holder,
    bin: PathBuf,
}

impl TestHost {
    /// Starts a new test host; panics (clearly) when not root or when the
    /// holder doesn't come up within 10 s.
    pub fn new(name: &str) -> TestHost {
        require_root();
        let bin = bpfnet_bin();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("bnt-{}-{}", std::process::id(), n);
        let dir = PathBuf::from("/tmp").join(&tag);
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("state");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        fs::write(dir.join("bnt.py"), BNT_PY).expect("write bnt.py");
        let holder = Holder::start(Duration::from_secs(10)).unwrap_or_else(|e| {
            let _ = fs::remove_dir_all(&dir);
            panic!("test host {name}: {e}")
        });
        TestHost {
            name: name.to_string(),
            tag,
            root,
            dir,
            holder,
            bin,
        }
    }

    fn command(&self, args: &[&str]) -> (String, Command) {
        assert!(!args.is_empty(), "empty command");
        let mut cmd = self.holder.command(args);
        cmd.env("BPFNET_ROOT", &self.root)
            .env("BNT_PY", self.dir.join("bnt.py"));
        (format!("[{}] {}", self.name, render(args)), cmd)
    }

    fn bpfnet_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        if !self.bin.exists() {
            panic!(
                "bpfnet binary not found at {} (build it with `cargo build -p bpfnet` or set BPFNET_BIN)",
                self.bin.display()
            );
        }
        let mut v = vec![self.bin.to_str().expect("utf-8 path")];
        v.extend_from_slice(args);
        v
    }

    /// Runs a command inside the host with a timeout and optional stdin.
    pub fn run_full(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
        let (cmd_line, mut cmd) = self.command(args);
        let mut child = spawn_piped(&mut cmd, stdin)
            .unwrap_or_else(|e| panic!("cannot start `{cmd_line}`: {e}"));
        let out = Capture::start(child.stdout.take());
        let err = Capture::start(child.stderr.take());
        let code = match wait_timeout(&mut child, timeout) {
            Some(c) => c,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let o = Output {
                    cmd: cmd_line,
                    code: -1,
                    stdout: out.collect(PIPE_GRACE),
                    stderr: err.collect(PIPE_GRACE),
                };
                panic!("timed out after {timeout:?}:\n{o}");
            }
        };
        Output {
            cmd: cmd_line,
            code,
            stdout: out.collect(PIPE_GRACE),
            stderr: err.collect(PIPE_GRACE),
        }
    }

    /// Runs a command inside the host.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_full(args, None, CMD_TIMEOUT)
    }

    /// Runs a command inside the host; panics unless it exits 0. Returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        if !o.success() {
            panic!("command failed:\n{o}");
        }
        o.stdout
    }

    /// Runs a command inside the host; panics if it exits 0. Returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        if o.success() {
            panic!("command unexpectedly succeeded:\n{o}");
        }
        o.stderr
    }

    /// `sh -c SCRIPT` inside the host.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// `sh -c SCRIPT` inside the host, must succeed; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        self.ok(&["sh", "-c", script])
    }

    /// Pid of the process that holds the host's namespaces
    /// (`/proc/<pid>/ns/net`, `/proc/<pid>/root` reach into them).
    pub fn holder_pid(&self) -> u32 {
        self.holder.pid()
    }

    /// Path of the bpfnet binary under test.
    pub fn bin_path(&self) -> &str {
        self.bin.to_str().expect("utf-8 path")
    }

    /// Starts `bpfnet ARGS` in the background inside the host.
    pub fn bpfnet_spawn(&self, args: &[&str]) -> Bg {
        self.spawn(&self.bpfnet_args(args))
    }

    /// Runs `bpfnet ARGS` inside the host.
    pub fn bpfnet(&self, args: &[&str]) -> Output {
        self.run(&self.bpfnet_args(args))
    }

    /// `bpfnet ARGS`, must exit 0; returns stdout.
    pub fn bpfnet_ok(&self, args: &[&str]) -> String {
        self.ok(&self.bpfnet_args(args))
    }

    /// `bpfnet ARGS`, must fail; returns the whole output.
    pub fn bpfnet_fail(&self, args: &[&str]) -> Output {
        let o = self.bpfnet(args);
        if o.success() {
            panic!("bpfnet unexpectedly succeeded:\n{o}");
        }
        o
    }

    /// `bpfnet ARGS` whose stdout is JSON.
    pub fn bpfnet_json(&self, args: &[&str]) -> Value {
        let out = self.bpfnet_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "[{}] bpfnet {}: stdout is not JSON ({e}):\n{out}",
                self.name,
                args.join(" ")
            )
        })
    }

    fn in_sandbox<'a>(sandbox: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", sandbox];
        v.extend_from_slice(args);
        v
    }

    /// `ip netns exec SANDBOX ARGS` inside the host.
    pub fn exec_in(&self, sandbox: &str, args: &[&str]) -> Output {
        self.run(&Self::in_sandbox(sandbox, args))
    }

    /// Like [`TestHost::exec_in`], must succeed; returns stdout.
    pub fn exec_ok(&self, sandbox: &str, args: &[&str]) -> String {
        self.ok(&Self::in_sandbox(sandbox, args))
    }

    /// Starts a background command inside the host (killed on Drop).
    pub fn spawn(&self, args: &[&str]) -> Bg {
        let (cmd_line, cmd) = self.command(args);
        Bg::start(cmd_line, cmd)
    }

    /// Starts a background command in a sandbox (`ip netns exec`).
    pub fn spawn_in(&self, sandbox: &str, args: &[&str]) -> Bg {
        self.spawn(&Self::in_sandbox(sandbox, args))
    }

    /// Path of the traffic helper script (run it with [`PYTHON`]).
    pub fn py(&self) -> String {
        self.dir.join("bnt.py").to_string_lossy().into_owned()
    }

    /// Runs the traffic helper in a sandbox (None = the host itself).
    pub fn py_in(&self, sandbox: Option<&str>, args: &[&str]) -> Output {
        let py = self.py();
        let mut v = vec![PYTHON, py.as_str()];
        v.extend_from_slice(args);
        match sandbox {
            Some(s) => self.exec_in(s, &v),
            None => self.run(&v),
        }
    }

    /// Starts the traffic helper in the background in a sandbox (None = host).
    pub fn py_spawn(&self, sandbox: Option<&str>, args: &[&str]) -> Bg {
        let py = self.py();
        let mut v = vec![PYTHON, py.as_str()];
        v.extend_from_slice(args);
        match sandbox {
            Some(s) => self.spawn_in(s, &v),
            None => self.spawn(&v),
        }
    }

    /// One ping attempt series: true if `dst` answered. `from` None = the host.
    pub fn ping(&self, from: Option<&str>, dst: &str) -> bool {
        let args = ["ping", "-n", "-q", "-c", "1", "-W", "1", dst];
        // A first packet may be lost while ARP resolves; give it 3 chances.
        (0..3).any(|_| match from {
            Some(s) => self.exec_in(s, &args).success(),
            None => self.run(&args).success(),
        })
    }

    /// Asserts that `from` (None = host) reaches `dst` by ping.
    pub fn assert_ping(&self, from: Option<&str>, dst: &str) {
        if !self.ping(from, dst) {
            let who = from.unwrap_or("the host");
            let diag = self.diagnostics(from);
            panic!(
                "[{}] {who} cannot ping {dst}, expected it to\n{diag}",
                self.name
            );
        }
    }

    /// Three pings from sandbox `from` to `dst`, each carrying `marker` as
    /// its pad pattern (what [`TestHost::count_received`] counts).
    pub fn ping_marked(&self, from: &str, dst: &str, marker: &str) -> Output {
        let pattern: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
        self.exec_in(
            from,
            &[
                "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-p", &pattern, dst,
            ],
        )
    }

    /// Asserts that `from` (None = host) does NOT reach `dst` by ping.
    pub fn assert_no_ping(&self, from: Option<&str>, dst: &str) {
        let args = ["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst];
        let o = match from {
            Some(s) => self.exec_in(s, &args),
            None => self.run(&args),
        };
        if o.success() {
            let who = from.unwrap_or("the host");
            panic!(
                "[{}] {who} can ping {dst}, expected isolation:\n{o}",
                self.name
            );
        }
    }

    /// Addresses, routes and neighbours of a sandbox (None = host), for
    /// failure messages.
    pub fn diagnostics(&self, sandbox: Option<&str>) -> String {
        let mut s = String::new();
        for cmd in [
            &["ip", "-br", "addr"][..],
            &["ip", "route"],
            &["ip", "neigh"],
        ] {
            let o = match sandbox {
                Some(sb) => self.exec_in(sb, cmd),
                None => self.run(cmd),
            };
            s.push_str(&format!(
                "$ {} ({})\n{}{}",
                cmd.join(" "),
                sandbox.unwrap_or("host"),
                o.stdout,
                o.stderr
            ));
        }
        s
    }

    /// IPv4 addresses (with prefix) of `iface` in a sandbox.
    pub fn ipv4_addrs(&self, sandbox: &str, iface: &str) -> Vec<String> {
        let out = self.exec_ok(sandbox, &["ip", "-j", "addr", "show", "dev", iface]);
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j addr: {e}: {out}"));
        let mut addrs = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a["family"] == "inet" {
                    addrs.push(format!(
                        "{}/{}",
                        a["local"].as_str().unwrap_or(""),
                        a["prefixlen"]
                    ));
                }
            }
        }
        addrs
    }

    /// MAC address of `iface` in a sandbox.
    pub fn mac_of(&self, sandbox: &str, iface: &str) -> String {
        let out = self.exec_ok(sandbox, &["ip", "-j", "link", "show", "dev", iface]);
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j link: {e}: {out}"));
        v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {out}"))
            .to_string()
    }

    /// Interface names (without `@peer`) of a sandbox (None = host).
    pub fn link_names(&self, sandbox: Option<&str>) -> Vec<String> {
        let args = ["ip", "-o", "link", "show"];
        let out = match sandbox {
            Some(s) => self.exec_ok(s, &args),
            None => self.ok(&args),
        };
        parse_link_names(&out)
    }

    /// The host's links once those of removed sandboxes are gone: `rm`
    /// returns before the kernel has torn their namespaces down (and their
    /// veths with them), so this waits up to 5 s for the list to be
    /// `expected`, and returns the last one read either way.
    pub fn links_settled(&self, expected: &[&str]) -> Vec<String> {
        settled(expected, || self.link_names(None))
    }

    /// Names of the netns under the host's /run/netns.
    pub fn netns_list(&self) -> Vec<String> {
        let out = self.sh_ok("ls -1 /run/netns");
        out.lines().map(str::to_string).collect()
    }

    /// Asserts that no kernel bridge exists in the host.
    pub fn assert_no_kernel_bridge(&self) {
        let out = self.ok(&["ip", "-o", "link", "show", "type", "bridge"]);
        assert!(
            out.trim().is_empty(),
            "[{}] a kernel bridge exists:\n{out}",
            self.name
        );
    }

    /// `bpfnet inspect NAME` → the one object.
    pub fn inspect(&self, sandbox: &str) -> Value {
        let v = self.bpfnet_json(&["inspect", sandbox]);
        one_of_array(v, &format!("bpfnet inspect {sandbox}"))
    }

    /// `bpfnet network inspect NAME` → the one object.
    pub fn network_inspect(&self, net: &str) -> Value {
        let v = self.bpfnet_json(&["network", "inspect", net]);
        one_of_array(v, &format!("bpfnet network inspect {net}"))
    }

    /// The IPv4 address (without prefix) of a sandbox on a network, from
    /// `bpfnet inspect`.
    pub fn ip_on(&self, sandbox: &str, net: &str) -> String {
        let v = self.inspect(sandbox);
        let ptr = format!("/NetworkSettings/Networks/{net}/IPAddress");
        let ip = jstr(&v, &ptr).to_string();
        assert!(!ip.is_empty(), "{sandbox} has no address on {net}:\n{v:#}");
        ip
    }

    /// The IPv6 address of a sandbox on a network, from `bpfnet inspect`.
    pub fn ip6_on(&self, sandbox: &str, net: &str) -> String {
        let v = self.inspect(sandbox);
        let ptr = format!("/NetworkSettings/Networks/{net}/GlobalIPv6Address");
        let ip = jstr(&v, &ptr).to_string();
        assert!(
            !ip.is_empty(),
            "{sandbox} has no IPv6 address on {net}:\n{v:#}"
        );
        ip
    }

    /// The gateway of a network, from `bpfnet network inspect`.
    pub fn gateway_of(&self, net: &str) -> String {
        let v = self.network_inspect(net);
        jstr(&v, "/IPAM/Config/0/Gateway").to_string()
    }

    /// `bpfnet create --name NAME --network N…` (no network = default).
    pub fn create(&self, name: &str, nets: &[&str]) {
        let mut args = vec!["create", "--name", name];
        for n in nets {
            args.push("--network");
            args.push(n);
        }
        self.bpfnet_ok(&args);
    }

    /// `bpfnet create --name NAME --network NET --ip IP`.
    pub fn create_with_ip(&self, name: &str, net: &str, ip: &str) {
        self.bpfnet_ok(&["create", "--name", name, "--network", net, "--ip", ip]);
    }

    /// Starts a DNS helper script's `fake-upstream 10.253.0.2 PORT ANSWER`
    /// in namespace `fakeup`, behind a veth pair (10.253.0.0/30) inside the
    /// test host (made by the first call), and waits until it is ready.
    pub fn fake_upstream(&self, script: &str, port: &str, answer: &str) -> Bg {
        if !self.netns_list().iter().any(|n| n == "fakeup") {
            self.sh_ok(
                "set -e; ip netns add fakeup; ip -n fakeup link set lo up; \
                 ip link add fu0 type veth peer name fu1 netns fakeup; \
                 ip addr add 10.253.0.1/30 dev fu0; ip link set fu0 up; \
                 ip -n fakeup addr add 10.253.0.2/30 dev fu1; ip -n fakeup link set fu1 up",
            );
        }
        let mut server = self.spawn_in(
            "fakeup",
            &[PYTHON, script, "fake-upstream", "10.253.0.2", port, answer],
        );
        server.wait_line("ready", Duration::from_secs(10));
        server
    }

    /// Counts, in sandbox `dst` on `iface`, frames carrying each marker while
    /// `during` runs. Returns the counts in marker order.
    pub fn count_received<F: FnOnce()>(
        &self,
        dst: &str,
        iface: &str,
        markers: &[&str],
        during: F,
    ) -> Vec<u64> {
        let mut args = vec!["sniff", iface];
        args.extend_from_slice(markers);
        let mut sniffer = self.py_spawn(Some(dst), &args);
        sniffer.wait_line("ready", Duration::from_secs(10));
        during();
        thread::sleep(Duration::from_millis(300));
        let out = sniffer.stop();
        markers
            .iter()
            .map(|m| {
                let prefix = format!("count {m} ");
                out.stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| panic!("sniffer printed no count for {m}:\n{out}"))
            })
            .collect()
    }

    /// `bpfnet stats --format json`.
    pub fn stats(&self) -> Value {
        self.bpfnet_json(&["stats", "--format", "json"])
    }

    /// One drop counter from `bpfnet stats --format json` (missing = 0).
    pub fn drops(&self, reason: &str) -> u64 {
        let s = self.stats();
        let d = &s["drops"];
        if !d.is_object() {
            panic!("bpfnet stats --format json has no `drops` object:\n{s:#}");
        }
        d[reason].as_u64().unwrap_or(0)
    }

    /// Everything that must not change when a command fails: network list,
    /// sandbox list, links and netns of the host.
    pub fn snapshot(&self) -> String {
        let nets = self.bpfnet_ok(&["network", "ls", "--format", "json"]);
        let ps = self.bpfnet_ok(&["ps", "--format", "json"]);
        // Names, kinds and MACs only: carrier and operstate settle on their
        // own a moment after a link comes up, and are no change of ours.
        let links: String = self
            .ok(&["ip", "-o", "link", "show"])
            .lines()
            .map(|l| {
                let name = l.split(": ").nth(1).unwrap_or(l);
                let mac = l.split("link/").nth(1).unwrap_or("");
                format!("{name} {mac}\n")
            })
            .collect();
        let addrs = self.ok(&["ip", "-o", "addr", "show"]);
        let netns = self.netns_list().join(" ");
        format!(
            "networks: {nets}\nsandboxes: {ps}\nlinks:\n{links}\naddrs:\n{addrs}\nnetns: {netns}\n"
        )
    }

    /// Where the datapath of the current map layout is pinned.
    pub fn pin_dir() -> String {
        format!("/sys/fs/bpf/bpfnet/v{}", bpfnet_common::MAP_LAYOUT_VERSION)
    }

    /// Dumps a pinned bpfnet map (JSON array of entries) via bpftool.
    pub fn map_dump(&self, map: &str) -> Vec<Value> {
        let path = format!("{}/maps/{map}", Self::pin_dir());
        let out = self.ok(&["bpftool", "-j", "map", "dump", "pinned", &path]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bpftool map dump {path}: {e}: {out}"));
        v.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.holder.stop();
        if std::env::var_os("BNT_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Names of `ip -o link show` output lines (`2: eth0@if5: …` → `eth0`).
/// What `read` returns once it is `expected`, waiting up to 5 s (for what
/// the kernel finishes after a command returned), or the last value read.
pub fn settled<T: PartialEq<E>, E: ?Sized>(expected: &E, read: impl Fn() -> T) -> T {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = read();
        if now == *expected || std::time::Instant::now() >= until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn one_of_array(v: Value, what: &str) -> Value {
    match v {
        Value::Array(mut a) if a.len() == 1 => a.remove(0),
        other => panic!("{what}: expected a JSON array of one object, got:\n{other:#}"),
    }
}

/// Docker's MAC for an IPv4 address: 02:42 + the 4 bytes.
pub fn docker_mac(ip: &str) -> String {
    let b: Vec<u8> = ip
        .split('.')
        .map(|x| x.parse().unwrap_or_else(|_| panic!("bad ip {ip}")))
        .collect();
    assert_eq!(b.len(), 4, "bad ip {ip}");
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Asserts that a failed bpfnet command printed exactly one error line that
/// starts with `Error:`/`error:`, contains one of `any_of` (case-insensitive)
/// and names `object`.
pub fn assert_error(o: &Output, any_of: &[&str], object: &str) {
    assert!(!o.success(), "expected failure:\n{o}");
    let err = o.stderr.trim();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr:\n{o}");
    let line = lines[0];
    assert!(
        line.starts_with("Error: ") || line.starts_with("error: "),
        "error line must start with `Error: `:\n{o}"
    );
    let low = line.to_lowercase();
    assert!(
        any_of.iter().any(|s| low.contains(&s.to_lowercase())),
        "error line should say one of {any_of:?}:\n{o}"
    );
    assert!(
        line.contains(object),
        "error line should name `{object}`:\n{o}"
    );
}

/// Convenience: JSON string field or "" (for readable assertions).
pub fn jstr<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_else(|| {
        panic!("JSON has no string at {ptr}:\n{v:#}");
    })
}

/// Convenience: JSON value at a pointer, panicking with the document.
pub fn jget<'a>(v: &'a Value, ptr: &str) -> &'a Value {
    v.pointer(ptr)
        .unwrap_or_else(|| panic!("JSON has no field {ptr}:\n{v:#}"))
}

/// Seconds as a Duration (readability in tests).
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A bpf tc filter as `tc -j filter show` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    pub link: String,
    pub hook: String,
    pub pref: u64,
    pub name: String,
    pub prog_id: u64,
    pub direct_action: bool,
}

impl TestHost {
    /// Every bpf filter on every link of the host (both clsact hooks).
    pub fn tc_filters(&self) -> Vec<TcFilter> {
        let mut out = vec![];
        for link in self.link_names(None) {
            for hook in ["ingress", "egress"] {
                let o = self.run(&["tc", "-j", "filter", "show", "dev", &link, hook]);
                if !o.success() || o.stdout.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(o.stdout.trim())
                    .unwrap_or_else(|e| panic!("tc -j filter show: {e}:\n{o}"));
                for f in v.as_array().into_iter().flatten() {
                    let Some(opts) = f.get("options") else {
                        continue; // the priority's chain head
                    };
                    out.push(TcFilter {
                        link: link.clone(),
                        hook: hook.to_string(),
                        pref: f["pref"].as_u64().unwrap_or(0),
                        name: opts["bpf_name"].as_str().unwrap_or("").to_string(),
                        prog_id: opts["prog"]["id"].as_u64().unwrap_or(0),
                        direct_action: opts["direct-action"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        out
    }

    /// Links of the host that carry a clsact qdisc.
    pub fn clsact_links(&self) -> Vec<String> {
        let out = self.ok(&["tc", "-j", "qdisc", "show"]);
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("tc -j qdisc show: {e}:\n{out}"));
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["kind"] == "clsact")
            .map(|q| q["dev"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Id of a pinned program of the current layout (`tc_ingress`…).
    pub fn pinned_prog_id(&self, prog: &str) -> u64 {
        let path = format!("{}/progs/{prog}", Self::pin_dir());
        let out = self.ok(&["bpftool", "-j", "prog", "show", "pinned", &path]);
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("bpftool prog show {path}: {e}: {out}"));
        v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
    }

    /// The host-side veth of a sandbox's interface (its peer in the host).
    pub fn host_veth(&self, sandbox: &str, iface: &str) -> String {
        let out = self.exec_ok(sandbox, &["ip", "-j", "link", "show", iface]);
        let v: Value = serde_json::from_str(out.trim()).expect("ip -j link");
        let peer = v[0]["link_index"]
            .as_u64()
            .unwrap_or_else(|| panic!("{sandbox}/{iface} has no peer: {v}"));
        let out = self.ok(&["ip", "-j", "link", "show"]);
        let v: Value = serde_json::from_str(out.trim()).expect("ip -j link");
        v.as_array()
            .into_iter()
            .flatten()
            .find(|l| l["ifindex"].as_u64() == Some(peer))
            .and_then(|l| l["ifname"].as_str())
            .unwrap_or_else(|| panic!("no host link with ifindex {peer}"))
            .to_string()
    }
}
