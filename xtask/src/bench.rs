//! `cargo xtask bench [--quick]`: bpfnet's eBPF datapath against bpfnet's
//! own linux-bridge driver, netavark 1.4 and a bare veth pair, side by side.
//!
//! Each contender lives in a throw-away host (own mount + network namespace,
//! see `host`) with the same sandbox names and addresses, so all four exist at
//! once and are measured interleaved: round 1 = A B C D, round 2 = A B C D…
//! The scale runs (1,000+ endpoints, 1,000 networks) come after the rounds,
//! one contender at a time. Results: an aligned table on stdout and, for the
//! full run, bench/results.json, bench/RESULTS.md and bench/results.png
//! (--quick writes them under target/bench-quick/ and checks plausibility).
//! `--only ipv6` runs the IPv6 figures alone (bpfnet, linux-bridge and
//! direct-veth; no scale runs) and writes under target/bench-ipv6/.
mod contender;
mod host;
pub mod minimal;
mod report;
mod scale;
mod traffic;

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::cmd::{self, repo_root, stdout_of};
use contender::{extra_ip, extra_name, Contender, Kind, A};
use scale::{scale_endpoints, scale_networks, scale_policies, Budget};
use traffic::BpfStats;

struct Config {
    rounds: u32,
    /// Seconds of each iperf3 / sockperf run.
    secs: u32,
    /// Seconds of each UDP counting window.
    udp_secs: f64,
    setup_n: usize,
    /// Endpoint counts (including A and B) for the scale runs, per contender.
    endpoints: &'static [usize],
    networks: &'static [usize],
    /// Policy-rule counts for bpfnet.
    policies: &'static [usize],
    /// `--only ipv6`: the IPv6 figures alone.
    only_ipv6: bool,
}

/// What `--only` narrows a run to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The IPv6 figures (TCP stream and UDP pps over IPv6) of bpfnet,
    /// linux-bridge and direct-veth, without the scale runs.
    Ipv6,
}

impl Config {
    fn new(quick: bool, only: Option<Only>) -> Config {
        let mut cfg = Config::rounds(quick);
        if only == Some(Only::Ipv6) {
            cfg.only_ipv6 = true;
            cfg.endpoints = &[];
            cfg.networks = &[];
            cfg.policies = &[];
        }
        cfg
    }

    fn rounds(quick: bool) -> Config {
        // Development knob: the quick run plus tiny scale runs, to exercise
        // the scale code in a minute.
        if quick && env::var_os("BPFNET_BENCH_TINY_SCALE").is_some() {
            return Config {
                rounds: 1,
                secs: 1,
                udp_secs: 0.5,
                setup_n: 3,
                endpoints: &[10, 20],
                networks: &[3, 10],
                policies: &[10],
                only_ipv6: false,
            };
        }
        if quick {
            Config {
                rounds: 2,
                secs: 1,
                udp_secs: 1.0,
                setup_n: 10,
                endpoints: &[],
                networks: &[],
                policies: &[],
                only_ipv6: false,
            }
        } else {
            Config {
                rounds: 4,
                secs: 3,
                udp_secs: 2.0,
                setup_n: 10,
                endpoints: &[100, 1000, 2000],
                networks: &[100, 1000],
                policies: &[1000, 10000],
                only_ipv6: false,
            }
        }
    }
}

/// Collects samples and prints a progress line for each.
struct Recorder {
    start: Instant,
    runs: Vec<Value>,
    /// Set-up time (ms) of every sandbox a scale run added, per contender,
    /// in order: the sandbox count at the i-th call is i + 3.
    series: std::collections::BTreeMap<String, Vec<f64>>,
}

impl Recorder {
    fn progress(&self, msg: &str) {
        let t = self.start.elapsed().as_secs();
        eprintln!("[bench {:>2}:{:02}] {msg}", t / 60, t % 60);
    }

    fn add(&mut self, round: u32, c: &str, figure: &str, value: f64, detail: Value) {
        self.progress(&format!(
            "round {round} {c:<12} {figure:<18} {}",
            report::fmt_num(value)
        ));
        self.runs.push(json!({
            "round": round,
            "contender": c,
            "figure": figure,
            "value": if value.is_finite() { json!(value) } else { Value::Null },
            "detail": detail,
        }));
    }
}

/// Runs `f`, retrying once: the VM is noisy and a server may lose a race.
fn twice<T>(rec: &Recorder, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    match f() {
        Ok(v) => Ok(v),
        Err(e) => {
            rec.progress(&format!("{what}: {e:#}; retrying once"));
            thread::sleep(Duration::from_millis(500));
            f().with_context(|| format!("{what} (failed twice)"))
        }
    }
}

/// The scratch directory of this run, removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn require_tools() -> Result<()> {
    let tools = [
        ("iperf3", "iperf3"),
        ("sockperf", "sockperf"),
        ("bpftool", "bpftool"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ];
    let path = env::var_os("PATH").unwrap_or_default();
    let mut missing = Vec::new();
    for (t, pkg) in tools {
        if !env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|d| d.join(t).is_file())
        {
            missing.push(format!("{t} ({pkg})"));
        }
    }
    if !Path::new("/usr/lib/podman/netavark").is_file() {
        missing.push("/usr/lib/podman/netavark (netavark)".into());
    }
    if !missing.is_empty() {
        bail!(
            "bench needs {}; install them (cargo xtask bootstrap does)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn first_line(cmd: &mut Command) -> String {
    stdout_of(cmd)
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

fn read_trim(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn machine(quick: bool, baseline: f64, contenders: &[Contender]) -> Value {
    let cpuinfo = read_trim("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kb: u64 = read_trim("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // br_netfilter as the bridge contenders see it (inside their host).
    let brnf = |family: &str| {
        contenders
            .iter()
            .find(|c| c.kind == Kind::LinuxBridge)
            .and_then(|c| {
                c.host
                    .sh(&format!(
                        "cat /proc/sys/net/bridge/bridge-nf-call-{family} 2>/dev/null || echo absent"
                    ))
                    .ok()
            })
            .map(|o| o.stdout.trim().to_string())
            .unwrap_or_default()
    };
    let os = read_trim("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default();
    json!({
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
        "os": os,
        "cpu_model": model,
        "cpus": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gib": (mem_kb as f64 / 1048576.0 * 10.0).round() / 10.0,
        "loadavg_at_start": read_trim("/proc/loadavg"),
        "busy_pct_before_bench": (baseline * 1000.0).round() / 10.0,
        "bridge_nf_call_iptables": brnf("iptables"),
        "bridge_nf_call_ip6tables": brnf("ip6tables"),
        "bpf_stats_enabled_sysctl": read_trim("/proc/sys/kernel/bpf_stats_enabled"),
        "iperf3": first_line(Command::new("iperf3").arg("--version")),
        "sockperf": first_line(Command::new("sockperf").arg("--version")),
        "netavark": first_line(Command::new("/usr/lib/podman/netavark").arg("--version")),
        "bpftool": first_line(Command::new("bpftool").arg("--version")),
        "bpfnet_commit": first_line(Command::new("git").args(["-C", repo_root().to_str().unwrap_or("."), "rev-parse", "--short", "HEAD"])),
        "date_utc": first_line(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        "quick": quick,
    })
}

/// Fraction of all CPUs busy over `d`.
fn busy_fraction(d: Duration) -> f64 {
    let hz = traffic::clock_ticks();
    let ncpu = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let Ok(c0) = traffic::cpu_times() else {
        return 0.0;
    };
    thread::sleep(d);
    let Ok(c1) = traffic::cpu_times() else {
        return 0.0;
    };
    c1.busy.saturating_sub(c0.busy) as f64 / hz / d.as_secs_f64() / ncpu
}

/// Waits (up to `max`) until the machine is back to its load from before
/// the bench (`baseline`), e.g. after a host with 1,000 namespaces was
/// destroyed and the kernel cleans up behind it.
fn settle(rec: &Recorder, baseline: f64, max: Duration) {
    let start = Instant::now();
    while start.elapsed() < max {
        if busy_fraction(Duration::from_millis(500)) < (baseline + 0.25).min(0.95) {
            return;
        }
    }
    rec.progress(&format!(
        "machine still busy after {:.0} s; going on",
        max.as_secs_f64()
    ));
}

/// Core figures of one contender in one round.
fn measure(rec: &mut Recorder, cfg: &Config, round: u32, c: &Contender) -> Result<()> {
    let name = c.kind.name();
    let p = c.pair();
    if cfg.only_ipv6 {
        return measure6(rec, cfg, round, c);
    }
    c.check_path()?;
    if !c.kind.has_traffic() {
        return setup_small(rec, cfg, round, c);
    }
    for (streams, fig) in [(1u32, "tcp1_gbps"), (4, "tcp4_gbps")] {
        let r = twice(rec, &format!("{name} {fig}"), || {
            traffic::tcp_stream(&p, streams, cfg.secs)
        })?;
        rec.add(round, name, fig, r.gbps, r.detail.clone());
        if streams == 1 {
            rec.add(round, name, "cpu_s_per_gb", r.cpu_s_per_gb, r.detail);
        }
    }
    if let Some(outside) = c.published_pair() {
        let r = twice(rec, &format!("{name} pub_tcp1_gbps"), || {
            traffic::tcp_stream(&outside, 1, cfg.secs)
        })?;
        rec.add(round, name, "pub_tcp1_gbps", r.gbps, r.detail);
    }
    let r = twice(rec, &format!("{name} udp64_pps"), || {
        c.udp_flood(cfg.udp_secs)
    })?;
    rec.add(round, name, "udp64_pps", r.pps, r.detail);
    measure6(rec, cfg, round, c)?;
    let r = twice(rec, &format!("{name} rr"), || traffic::tcp_rr(&p, cfg.secs))?;
    rec.add(round, name, "rr_p50_us", r.p50_us, r.detail.clone());
    rec.add(round, name, "rr_p99_us", r.p99_us, r.detail);
    if matches!(c.kind, Kind::Bpfnet | Kind::Minimal) {
        prog_cost(rec, cfg, round, c)?;
    }
    if c.kind == Kind::DirectVeth {
        let r = traffic::generator_sink(&c.host, A, c.pid_a(), cfg.udp_secs)?;
        rec.add(round, name, "gen_sink_pps", r.pps, r.detail);
    }
    if c.kind.has_setup() {
        setup_small(rec, cfg, round, c)?;
    }
    Ok(())
}

/// The IPv6 figures of a contender with an IPv6 pair: TCP single stream and
/// the UDP flood, as their IPv4 counterparts are measured.
fn measure6(rec: &mut Recorder, cfg: &Config, round: u32, c: &Contender) -> Result<()> {
    let Some(p6) = c.pair6() else {
        return Ok(());
    };
    let name = c.kind.name();
    c.check_path6()?;
    let r = twice(rec, &format!("{name} tcp1_gbps_ipv6"), || {
        traffic::tcp_stream(&p6, 1, cfg.secs)
    })?;
    rec.add(round, name, "tcp1_gbps_ipv6", r.gbps, r.detail);
    let r = twice(rec, &format!("{name} udp64_pps_ipv6"), || {
        c.udp_flood6(cfg.udp_secs)
    })?;
    rec.add(round, name, "udp64_pps_ipv6", r.pps, r.detail);
    Ok(())
}

/// eBPF program cost: a separate UDP flood with run-time statistics on (they
/// cost two clock reads per run, so they stay off for the other figures).
fn prog_cost(rec: &mut Recorder, cfg: &Config, round: u32, c: &Contender) -> Result<()> {
    let stats_on = BpfStats::enable()?;
    let before = traffic::prog_stats(&c.host)?;
    let r = c.udp_flood(cfg.udp_secs.min(1.0))?;
    let after = traffic::prog_stats(&c.host)?;
    drop(stats_on);
    let mut ns = 0u64;
    let mut cnt = 0u64;
    let mut per = serde_json::Map::new();
    for (name, t1, n1) in &after {
        let (t0, n0) = before
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, t, n)| (*t, *n))
            .unwrap_or((0, 0));
        let (dt, dn) = (t1.saturating_sub(t0), n1.saturating_sub(n0));
        ns += dt;
        cnt += dn;
        per.insert(
            name.clone(),
            json!({ "run_time_ns": dt, "run_cnt": dn,
                    "ns_per_run": if dn > 0 { dt as f64 / dn as f64 } else { f64::NAN } }),
        );
    }
    let v = if cnt > 0 {
        ns as f64 / cnt as f64
    } else {
        f64::NAN
    };
    rec.add(
        round,
        c.kind.name(),
        "prog_ns_per_pkt",
        v,
        json!({ "programs": per, "udp_pps_with_stats": r.pps }),
    );
    Ok(())
}

/// Set-up time of `setup_n` sandboxes on the bench network, then the
/// teardown time of each: median and 95th percentile of the round's calls.
fn setup_small(rec: &mut Recorder, cfg: &Config, round: u32, c: &Contender) -> Result<()> {
    let mut names = Vec::new();
    let mut ms = Vec::new();
    let result = (|| -> Result<()> {
        for i in 0..cfg.setup_n {
            let (n, ip) = (extra_name(i), extra_ip(i));
            let d = c.add_sandbox(&n, &ip)?;
            names.push((n, ip));
            ms.push(d.as_secs_f64() * 1e3);
        }
        Ok(())
    })();
    let rm = c.remove_sandboxes(&names);
    result?;
    let rm: Vec<f64> = rm?.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let st = report::stats(&ms).context("no set-up times")?;
    let td = report::stats(&rm).context("no teardown times")?;
    let detail = json!({ "setup_calls_ms": ms, "teardown_calls_ms": rm });
    let name = c.kind.name();
    rec.add(round, name, "setup_ms", st.median, detail.clone());
    rec.add(
        round,
        name,
        "setup_p95_ms",
        report::percentile(&ms, 0.95),
        detail.clone(),
    );
    rec.add(round, name, "teardown_ms", td.median, detail.clone());
    rec.add(
        round,
        name,
        "teardown_p95_ms",
        report::percentile(&rm, 0.95),
        detail,
    );
    Ok(())
}

/// Waits (up to 90 s) until a veth add+del in `c`'s host is quick again:
/// the kernel tears down a dropped host's namespaces in the background under
/// the RTNL lock, which would slow every set-up measured meanwhile.
fn wait_rtnl(rec: &Recorder, c: &Contender) {
    let start = Instant::now();
    let mut quick = 0;
    while start.elapsed() < Duration::from_secs(90) {
        let t = Instant::now();
        let ok = c
            .host
            .sh("ip link add bprobe0 type veth peer name bprobe1 && ip link del bprobe0")
            .is_ok();
        if ok && t.elapsed() < Duration::from_millis(60) {
            quick += 1;
            if quick >= 3 {
                break;
            }
        } else {
            quick = 0;
            thread::sleep(Duration::from_millis(500));
        }
    }
    let waited = start.elapsed().as_secs_f64();
    if waited > 2.0 {
        rec.progress(&format!(
            "waited {waited:.0} s for the kernel to finish tearing down the last host"
        ));
    }
}

/// --quick: every core figure exists for every contender it applies to and
/// is a finite, positive number. Never a speed.
fn check_plausible(summary: &report::Summary, runs: &[Value], only_ipv6: bool) -> Result<()> {
    let mut problems = Vec::new();
    for fig in report::CORE {
        if only_ipv6 && !fig.ends_with("_ipv6") {
            continue;
        }
        let want: Vec<&str> = match *fig {
            "tcp1_gbps_ipv6" | "udp64_pps_ipv6" => vec!["bpfnet", "linux-bridge", "direct-veth"],
            "prog_ns_per_pkt" => vec!["bpfnet", "minimal-prog"],
            "pub_tcp1_gbps" => vec!["bpfnet", "linux-bridge"],
            "setup_ms" | "setup_p95_ms" | "teardown_ms" | "teardown_p95_ms" => {
                vec!["bpfnet", "linux-bridge", "netavark", "cni-bridge"]
            }
            _ => vec![
                "bpfnet",
                "minimal-prog",
                "linux-bridge",
                "netavark",
                "direct-veth",
            ],
        };
        for c in want {
            match summary.get(*fig).and_then(|m| m.get(c)) {
                None => problems.push(format!("{fig}/{c}: missing")),
                Some(s) if !(s.min.is_finite() && s.min > 0.0 && s.max.is_finite()) => {
                    problems.push(format!("{fig}/{c}: implausible {s:?}"))
                }
                Some(_) => {}
            }
        }
    }
    let null = runs.iter().filter(|r| r["value"].is_null()).count();
    if null > 0 {
        problems.push(format!("{null} samples are not finite numbers"));
    }
    if summary.get("gen_sink_pps").is_none() && !only_ipv6 {
        problems.push("gen_sink_pps: missing".into());
    }
    if let Some(m) = summary.get("rr_p50_us") {
        for (c, s50) in m {
            if let Some(s99) = summary.get("rr_p99_us").and_then(|x| x.get(c)) {
                if s99.max < s50.min {
                    problems.push(format!("{c}: rr p99 below p50"));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "bench --quick: implausible results: {}",
            problems.join("; ")
        );
    }
    Ok(())
}

pub fn bench(quick: bool, only: Option<Only>) -> Result<()> {
    cmd::require_root("bench")?;
    cmd::require_tcx()?;
    require_tools()?;
    crate::bootstrap::bootstrap()?;
    cmd::run(
        &mut cmd::cargo(["build", "--release", "-p", "bpfnet"]),
        "cargo build --release -p bpfnet",
    )?;
    let bin = repo_root().join("target/release/bpfnet");
    let cfg = Config::new(quick, only);
    // A partial run never overwrites the committed one.
    let out_dir = if cfg.only_ipv6 {
        repo_root().join(if quick {
            "target/bench-quick-ipv6"
        } else {
            "target/bench-ipv6"
        })
    } else if quick {
        repo_root().join("target/bench-quick")
    } else {
        repo_root().join("bench")
    };
    let scratch = Scratch(PathBuf::from(format!(
        "/tmp/bpfnet-bench-{}",
        std::process::id()
    )));
    let mut rec = Recorder {
        start: Instant::now(),
        runs: Vec::new(),
        series: Default::default(),
    };
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !cfg.only_ipv6 || k.has_ipv6())
        .collect();
    rec.progress(&format!(
        "{} run{}: {} rounds × {} contenders, {} s per TCP run, {} s per UDP window",
        if quick { "quick" } else { "full" },
        if cfg.only_ipv6 { " (--only ipv6)" } else { "" },
        cfg.rounds,
        kinds.len(),
        cfg.secs,
        cfg.udp_secs
    ));
    let baseline = busy_fraction(Duration::from_secs(1));
    rec.progress(&format!(
        "machine load before the bench: {:.0} % of all CPUs busy",
        baseline * 100.0
    ));
    let mut contenders = Vec::new();
    for k in kinds {
        rec.progress(&format!("building {} in a throw-away host", k.name()));
        contenders.push(Contender::build(k, &scratch.0, &bin, true)?);
    }
    let machine = machine(quick, baseline, &contenders);
    for round in 1..=cfg.rounds {
        for c in &contenders {
            measure(&mut rec, &cfg, round, c)
                .with_context(|| format!("round {round}, {}", c.kind.name()))?;
        }
    }
    let mut notes = json!({});
    let mut scale_errors: Vec<String> = Vec::new();
    if !cfg.endpoints.is_empty() || !cfg.networks.is_empty() || !cfg.policies.is_empty() {
        // One contender at a time, each host dropped when done with.
        // The references (direct veth, redirect-only program) do not scale.
        contenders.retain(|c| !matches!(c.kind, Kind::DirectVeth | Kind::Minimal));
        let mut order: Vec<Contender> = std::mem::take(&mut contenders);
        order.reverse();
        while let Some(mut c) = order.pop() {
            let name = c.kind.name();
            if let Err(e) = c.drop_six() {
                rec.progress(&format!("{name}: removing the IPv6 pair: {e:#}"));
            }
            // A scale failure costs its own figures, not the rounds' results.
            let mut failed = |what: &str, e: anyhow::Error, rec: &Recorder| {
                let msg = format!("{what} scale, {name}: {e:#}");
                rec.progress(&format!("FAILED: {msg}"));
                scale_errors.push(msg);
            };
            wait_rtnl(&rec, &c);
            let mut budget = Budget::new(if c.kind == Kind::Bpfnet { 240 } else { 150 });
            match scale_endpoints(&mut rec, &cfg, &c, &mut budget) {
                Ok(n) => notes[name] = n,
                Err(e) => failed("endpoint", e, &rec),
            }
            if !budget.notes.is_empty() {
                notes[name]["budget"] = json!(budget.notes);
            }
            rec.progress(&format!("{name}: done, removing its host"));
            let kind = c.kind;
            drop(c);
            settle(&rec, baseline, Duration::from_secs(20));
            // Networks and policy rules: bpfnet's own datapath, in a fresh
            // host (bench-a and bench-b only), so that they are not measured
            // through a state of 1,000 sandboxes.
            if kind == Kind::Bpfnet && (!cfg.networks.is_empty() || !cfg.policies.is_empty()) {
                let result = (|| -> Result<()> {
                    let mut fresh = Contender::build(kind, &scratch.0, &bin, false)?;
                    wait_rtnl(&rec, &fresh);
                    let mut budget = Budget::new(90);
                    if let Err(e) = scale_networks(&mut rec, &cfg, &mut fresh, &mut budget) {
                        failed("network", e, &rec);
                    }
                    let mut budget2 = Budget::new(90);
                    if let Err(e) = scale_policies(&mut rec, &cfg, &fresh, &mut budget2) {
                        failed("policy", e, &rec);
                    }
                    budget.notes.extend(budget2.notes);
                    if !budget.notes.is_empty() {
                        notes[name]["budget_networks_policies"] = json!(budget.notes);
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    failed("network/policy", e, &rec);
                }
                settle(&rec, baseline, Duration::from_secs(20));
            }
        }
    }
    drop(contenders);
    let summary = report::summarize(&rec.runs);
    let table = report::table(&summary);
    println!("\n{table}");
    let command = match (quick, cfg.only_ipv6) {
        (true, false) => "cargo xtask bench --quick",
        (false, false) => "cargo xtask bench",
        (true, true) => "cargo xtask bench --quick --only ipv6",
        (false, true) => "cargo xtask bench --only ipv6",
    };
    let mut machine = machine;
    machine["loadavg_at_end"] = json!(read_trim("/proc/loadavg"));
    machine["duration_s"] = json!(rec.start.elapsed().as_secs_f64().round());
    machine["command"] = json!(command);
    let results = json!({
        "machine": machine,
        "config": {
            "rounds": cfg.rounds, "tcp_secs": cfg.secs, "udp_secs": cfg.udp_secs,
            "setup_n": cfg.setup_n, "endpoints": cfg.endpoints, "networks": cfg.networks,
            "policies": cfg.policies,
            "addresses": "bench-a 10.90.0.2, bench-b 10.90.0.3 on 10.90.0.0/16 (gateway 10.90.0.1), every contender",
            "addresses_ipv6": "fd42:90::2 → fd42:90::3 on fd42:90::/64: bpfnet's bench-a6/bench-b6 on the dual-stack network benchnet6, linux-bridge's and direct-veth's bench-a/bench-b (bench-made addresses)",
        },
        "notes": notes,
        "errors": scale_errors,
        "runs": rec.runs,
        "setup_series_ms": rec.series,
        "summary": report::summary_json(&summary),
    });
    let json_path = out_dir.join("results.json");
    report::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    let png = out_dir.join("results.png");
    report::plot(
        &summary,
        &png,
        &format!(
            "bpfnet bench — medians, whiskers min–max ({} rounds, {})",
            cfg.rounds,
            results["machine"]["kernel"].as_str().unwrap_or("")
        ),
    )?;
    let scale_png = out_dir.join("setup_scale.png");
    if rec.series.values().any(|v| !v.is_empty()) {
        report::plot_series(
            &rec.series,
            &scale_png,
            "bpfnet bench — set-up time per sandbox against the number of sandboxes \
             (rolling median of 25)",
        )?;
    }
    report::write(
        &out_dir.join("RESULTS.md"),
        results_md(&results, &summary, command),
    )?;
    println!(
        "wrote {}, {}, {}",
        json_path.display(),
        out_dir.join("RESULTS.md").display(),
        png.display()
    );
    if quick {
        check_plausible(&summary, &rec.runs, cfg.only_ipv6)?;
        for f in [&json_path, &png] {
            let len = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                bail!("bench --quick: {} is empty", f.display());
            }
        }
        println!("bench --quick: every figure produced and plausible");
    }
    drop(scratch);
    if !scale_errors.is_empty() {
        bail!(
            "results written, but scale runs failed: {}",
            scale_errors.join("; ")
        );
    }
    Ok(())
}

fn results_md(results: &Value, summary: &report::Summary, command: &str) -> String {
    let m = &results["machine"];
    let g = |k: &str| {
        m[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| m[k].to_string())
    };
    let mut s = String::from("# bpfnet benchmark results\n\n");
    s.push_str(&format!(
        "Command (as root, from the workspace root): `{command}`\n\n"
    ));
    s.push_str("## Machine\n\n");
    for k in [
        "cpu_model",
        "cpus",
        "mem_gib",
        "kernel",
        "os",
        "date_utc",
        "bpfnet_commit",
        "loadavg_at_start",
        "loadavg_at_end",
        "busy_pct_before_bench",
        "duration_s",
        "bridge_nf_call_iptables",
        "bridge_nf_call_ip6tables",
        "bpf_stats_enabled_sysctl",
        "iperf3",
        "sockperf",
        "netavark",
        "bpftool",
    ] {
        s.push_str(&format!("- {k}: {}\n", g(k)));
    }
    s.push_str(
        "\n## Results\n\nMin / median / max over the samples (`n`); ratios are of medians.\n\n",
    );
    s.push_str(&report::markdown_table(summary));
    if let Some(t) = report::family_table(summary) {
        s.push_str(
            "\n### IPv4 and IPv6\n\nMedians of the same rounds; the IPv6 pair of each \
contender is described under Method.\n\n",
        );
        s.push_str(&t);
    }
    s.push_str("\n![results](results.png)\n\n");
    if results["setup_series_ms"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        s.push_str("Set-up time against the number of sandboxes on the network:\n\n![set-up against sandbox count](setup_scale.png)\n\n");
    }
    s.push_str("## Figures\n\n");
    s.push_str(&report::figure_legend());
    s.push_str(
        "\n## Method\n\n\
- Every contender is built in its own throw-away host (a mount + network namespace with private \
`/run/netns`, `/etc/netns`, sysfs and bpffs), all with sandboxes `bench-a` 10.90.0.2 and `bench-b` \
10.90.0.3 on 10.90.0.0/16. `bpfnet` = `bpfnet network create -d bridge`, `linux-bridge` = \
`-d linux-bridge` (kernel bridge; br_netfilter as the host has it), `netavark` = \
`/usr/lib/podman/netavark setup` with a static IP (iptables firewall driver, DNS off), \
`direct-veth` = one veth pair between the two namespaces, `minimal-prog` = bpfnet's topology \
with a redirect-only TC program (`datapath-ebpf/src/minimal.rs`, a filter in front of the \
datapath's on both bench veths): the ceiling of the design, `cni-bridge` = the CNI bridge plugin \
1.1 with host-local IPAM plus the loopback plugin (set-up and teardown only). Rounds are \
interleaved: bpfnet, minimal-prog, linux-bridge, netavark, cni-bridge, direct-veth, then again.\n\
- TCP: `iperf3 -c 10.90.0.3 -t N [-P4] -J` in bench-a against a one-off server in bench-b. \
CPU per GB: utime+stime of the two iperf3 processes plus the ksoftirqd threads (with this \
kernel's tick-based accounting, softirq work done in a process's context is in its stime) over a \
window inside the tcp1 run, divided by bench-a eth0's tx bytes. The VM is shared, so whole-machine \
/proc/stat busy time (kept in each run's detail with steal) would count other users' work.\n\
- UDP: our generator (AF_PACKET socket, `sendmmsg` 256 frames per call, qdisc bypassed, thread \
pinned to CPU 0 at nice -20) in bench-a sends 60-byte frames (64 on the wire) to bench-b's MAC; \
bench-b holds a bound UDP socket that never reads; packets are counted at bench-b's UDP layer \
(/proc/net/snmp InDatagrams+NoPorts+InErrors). The receive path runs on the generator's CPU (in \
the softirq its sends raise), so each figure is sender + datapath + receiver cost on one CPU. \
`gen_sink_pps` is the same generator into a veth pair inside bench-a whose far end drops the \
frames at once: the generator's own ceiling. Each run's detail has `sent_pps` and \
`delivered_pct`.\n\
- IPv6 (`tcp1_gbps_ipv6`, `udp64_pps_ipv6`): the same TCP run and the same generator (an IPv6/UDP \
frame of 62 B, the smallest there is: 66 B on the wire, the IPv6 header being 20 B longer; \
counted at bench-b's UDP6 layer, /proc/net/snmp6) from fd42:90::2 to fd42:90::3 on \
fd42:90::/64, measured in each contender's slot of every round right after its IPv4 figures. \
`bpfnet`: sandboxes `bench-a6`/`bench-b6` on a second network, `bpfnet network create --ipv6 \
--subnet 10.91.0.0/24 --subnet fd42:90::/64` (addresses, routes and neighbour discovery \
bpfnet's, the latter answered in eBPF); a network of their own so that the IPv4 figures \
(set-up times above all) stay those of an IPv4-only network, like the other contenders'. \
`linux-bridge`: bpfnet's linux-bridge driver has no IPv6, so the bench turns IPv6 on in \
bench-a's and bench-b's eth0 and gives them the two addresses (`nodad`): the very bridge, ports \
and br_netfilter setting (`bridge_nf_call_ip6tables` above) of the IPv4 figures, neighbour \
discovery done by the two sandboxes' kernels across it; the host has no ip6tables rules, so \
bridged IPv6 meets no conntrack (its IPv4 traffic does, for the published-port NAT). \
`direct-veth`: the same two addresses on the veth pair. netavark and minimal-prog are \
IPv4-only here. `cargo xtask bench --only ipv6` runs these figures alone (under target/).\n\
- Traffic processes (iperf3, sockperf) run at nice -20 to hold their CPU against other work.\n\
- Latency: `sockperf ping-pong --tcp --full-rtt` (round trip, µs).\n\
- eBPF cost: a separate UDP flood with BPF run-time statistics on (`BPF_ENABLE_STATS`), \
Δrun_time_ns / Δrun_cnt over the pinned programs (`bpftool prog show pinned`).\n\
- Set-up: wall time of `bpfnet create --name sN --network benchnet --ip …` (netns + veth + \
connect) per sandbox; for netavark the `setup` call alone and for CNI the bridge ADD + loopback \
ADD (their netns is made beforehand, untimed), so their figures are, if anything, flattered. \
Teardown: `bpfnet rm -f sN`, netavark `teardown` + `ip netns del`, CNI bridge DEL + `ip netns \
del`, one sandbox at a time. Median and 95th percentile of each round's calls.\n\
- Policy scale (bpfnet): rules `--from bench-a --to net:xnetK --port P/tcp` on ports the measured \
traffic does not use, added by one `bpfnet policy import` per level (1,000, then 10,000). They target \
networks without endpoints, so they compile to no datapath entries: this measures the control plane \
and shows the same-network path untouched; the judged (cross-network) path with 10,000 entries was \
measured separately (see the issue notes).\n\
- Scale runs follow the rounds, one contender at a time, each within a time budget (cut-offs \
and skipped milestones are listed in `notes`): endpoints on the bench network (100 → 1,000 → \
2,000), then, for bpfnet only and in a fresh host with just bench-a and bench-b, networks \
(1 → 100 → 1,000) and policy rules (1,000) on top of them. Before each stage the bench waits \
until the kernel has finished tearing down the previous host (veth add+del fast again). A kernel bridge takes at most 1,024 \
ports, so linux-bridge and netavark stop before 2,000 endpoints (see `notes` in results.json).\n",
    );
    if let Some(n) = results["notes"].as_object() {
        for (c, v) in n {
            if let Some(b) = v.get("bridge_limit") {
                s.push_str(&format!("- {c}: bridge port limit: {b}\n"));
            }
        }
    }
    s
}
