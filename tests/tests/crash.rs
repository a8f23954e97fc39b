//! Crash safety. Every mutating operation is run to a crash (SIGKILL at a
//! named fault point, the binary is built with `--features fault-injection`,
//! as `cargo xtask test` does) at every fault point it passes, one after the
//! other; after each crash `bpfnet gc` must leave the system whole-or-gone:
//! the object either fully works or leaves nothing behind (no netns, link,
//! map entry, /etc/netns dir, journal), and the sandboxes that were live
//! before still reach each other.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use bpfnet_tests::{settled, Output, TestHost};
use serde_json::Value;

/// Runs `bpfnet ARGS` with `BPFNET_FAULT=n`.
fn run_to_fault(h: &TestHost, n: usize, args: &[&str]) -> Output {
    let fault = format!("BPFNET_FAULT={n}");
    let mut v = vec!["env", fault.as_str(), h.bin_path()];
    v.extend_from_slice(args);
    h.run(&v)
}

/// The committed state (snapshot and log), as bpfnet reads it.
fn state(h: &TestHost) -> Value {
    let paths = bpfnet::paths::Paths {
        state_dir: h.root.clone(),
        bpffs: "/sys/fs/bpf".into(),
    };
    let st = bpfnet::store::snapshot(&paths).expect("the state reads");
    serde_json::to_value(st).expect("the state serialises")
}

fn sandboxes(st: &Value) -> BTreeSet<String> {
    st["sandboxes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// (host-side veth names, count of endpoints on eBPF networks, count of
/// those with an IPv6 address) of the state.
fn endpoints6(st: &Value) -> (BTreeSet<String>, usize, usize) {
    let mut names = BTreeSet::new();
    let mut ebpf = 0;
    let mut v6 = 0;
    for sb in st["sandboxes"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for ep in sb["endpoints"].as_array().into_iter().flatten() {
            names.insert(ep["host_ifname"].as_str().unwrap().to_string());
            let net = ep["network"].as_str().unwrap();
            if st["networks"][net]["driver"] == "bridge" {
                ebpf += 1;
                v6 += usize::from(ep.get("ip6").is_some());
            }
        }
    }
    (names, ebpf, v6)
}

/// Nothing exists that the committed state does not account for.
fn assert_accounted_for(h: &TestHost, ctx: &str) {
    let journal = h.root.join("journal");
    let j = h.sh(&format!("cat {} 2>/dev/null", journal.display()));
    assert!(
        j.stdout.is_empty(),
        "{ctx}: journal left behind:\n{}",
        j.stdout
    );
    let st = state(h);
    let sbs = sandboxes(&st);
    let netns: BTreeSet<String> = h.netns_list().into_iter().collect();
    assert_eq!(netns, sbs, "{ctx}: namespaces vs sandboxes");
    let etc: BTreeSet<String> = h
        .sh_ok("ls -1 /etc/netns")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(etc, sbs, "{ctx}: /etc/netns dirs vs sandboxes");
    let (veths, ebpf, v6) = endpoints6(&st);
    // (The veths of a removed sandbox go with its namespace, after `rm`.)
    let links: BTreeSet<String> = settled(&veths, || {
        h.link_names(None)
            .into_iter()
            .filter(|l| l.starts_with("bn"))
            .collect()
    });
    assert_eq!(links, veths, "{ctx}: host-side veths vs endpoints");
    for map in ["ENDPOINTS", "FDB", "NEIGHBOURS"] {
        let n = h.map_dump(map).len();
        assert_eq!(n, ebpf, "{ctx}: {map} has {n} entries for {ebpf} endpoints");
    }
    // IPv6 (net1 is dual-stack): one entry per IPv6 endpoint, two
    // neighbours (address and link-local).
    let n = h.map_dump("ENDPOINTS6").len();
    assert_eq!(
        n, v6,
        "{ctx}: ENDPOINTS6 has {n} entries for {v6} IPv6 endpoints"
    );
    let n = h.map_dump("NEIGHBOURS6").len();
    assert_eq!(
        n,
        2 * v6,
        "{ctx}: NEIGHBOURS6 has {n} entries for {v6} IPv6 endpoints"
    );
}

/// The object an operation makes or removes, seen from outside.
fn sandbox_works(h: &TestHost, name: &str, peer_ip: &str) -> bool {
    h.ping(Some(name), peer_ip)
}

const C_ON_NET1: &[&str] = &["create", "--name", "c", "--network", "net1"];
const C_ON_BOTH: &[&str] = &[
    "create",
    "--name",
    "c",
    "--network",
    "net1",
    "--network",
    "net2",
];
const RM_C: &[&[&str]] = &[&["rm", "-f", "c"]];
const C_PUBLISHING: &[&str] = &[
    "create",
    "--name",
    "c",
    "--network",
    "net1",
    "-p",
    "8080:80",
];

struct Case {
    what: &'static str,
    /// Run before each attempt (state in which the operation starts).
    setup: &'static [&'static [&'static str]],
    op: &'static [&'static str],
    /// After gc: true whole, false gone; panics if neither.
    judge: fn(&TestHost, &str) -> bool,
    /// What the judge says of the operation run to its end (true: it makes
    /// the object, false: it removes it).
    makes: bool,
    /// Brings the host back to the state before `setup`.
    reset: &'static [&'static [&'static str]],
}

/// For every fault point the operation passes: crash there, gc, judge.
fn crash_everywhere(h: &TestHost, case: &Case, a_ip: &str, b_ip: &str) -> usize {
    let mut points = 0;
    for n in 1.. {
        for s in case.setup {
            h.bpfnet_ok(s);
        }
        let out = run_to_fault(h, n, case.op);
        if out.success() {
            // Past the last point: the operation ran whole.
            let ctx = format!("{} without a crash", case.what);
            assert_eq!((case.judge)(h, &ctx), case.makes, "{ctx}\n{out}");
        } else {
            assert_eq!(
                out.code, -1,
                "{}: expected a crash at point {n}:\n{out}",
                case.what
            );
            let point = out
                .stderr
                .lines()
                .find_map(|l| l.strip_prefix("fault point "))
                .unwrap_or("?")
                .to_string();
            let ctx = format!("{} crashed at point {point}", case.what);
            let gc = h.bpfnet(&["gc"]);
            assert!(gc.success(), "{ctx}: gc failed:\n{gc}");
            let _whole = (case.judge)(h, &ctx);
            points += 1;
        }
        for s in case.reset {
            let _ = h.bpfnet(s);
        }
        let ctx = format!("{} after point {n} and reset", case.what);
        assert_accounted_for(h, &ctx);
        assert!(
            h.ping(Some("a"), b_ip) && h.ping(Some("b"), a_ip),
            "{ctx}: live sandboxes a and b no longer reach each other\n{}",
            h.diagnostics(Some("a"))
        );
        if out.success() {
            break;
        }
    }
    points
}

fn listed(h: &TestHost, name: &str) -> bool {
    sandboxes(&state(h)).contains(name)
}

/// Whole: listed and reaching a (172.18.0.2) and b; gone: accounted for.
fn judge_c(h: &TestHost, ctx: &str) -> bool {
    if listed(h, "c") {
        assert!(
            sandbox_works(h, "c", "172.18.0.2"),
            "{ctx}: c is listed but cannot reach a\n{}",
            h.diagnostics(Some("c"))
        );
        true
    } else {
        assert_accounted_for(h, ctx);
        false
    }
}

/// c with a published port: whole or gone, and both NAT tables follow
/// (net1 is dual-stack: c is published over IPv6 too).
fn judge_c_published(h: &TestHost, ctx: &str) -> bool {
    let whole = judge_c(h, ctx);
    for family in ["ip", "ip6"] {
        let table = h.run(&["nft", "list", "table", family, "bpfnet"]).stdout;
        assert_eq!(
            table.contains("publish c 80/tcp"),
            whole,
            "{ctx}: the NAT table {family} does not follow the state:\n{table}"
        );
    }
    whole
}

fn connected(h: &TestHost, sandbox: &str, net: &str) -> bool {
    state(h)["sandboxes"][sandbox]["endpoints"]
        .as_array()
        .is_some_and(|eps| eps.iter().any(|e| e["network"] == net))
}

/// c on net2: whole = connected and reaching d (net2's 172.19.0.2).
fn judge_c_on_net2(h: &TestHost, ctx: &str) -> bool {
    assert!(sandbox_works(h, "c", "172.18.0.2"), "{ctx}: c lost net1");
    if connected(h, "c", "net2") {
        assert!(
            sandbox_works(h, "c", "172.19.0.2"),
            "{ctx}: c on net2 but cannot reach d"
        );
        true
    } else {
        assert_accounted_for(h, ctx);
        assert!(
            !sandbox_works(h, "c", "172.19.0.2"),
            "{ctx}: c reaches d without net2"
        );
        false
    }
}

fn judge_net3(h: &TestHost, ctx: &str) -> bool {
    let st = state(h);
    let listed = st["networks"].get("net3").is_some();
    let gw = h
        .ok(&["ip", "-o", "addr", "show", "dev", "lo"])
        .contains("172.20.0.1/32");
    let route = h
        .ok(&["ip", "route", "show", "type", "unreachable"])
        .contains("172.20.0.0/16");
    // Its IPv6 side: the second /64 of the pool (net1 has the first).
    let gw6 = h
        .ok(&["ip", "-o", "-6", "addr", "show", "dev", "lo"])
        .contains("fd62:706e:6574:1::1/128");
    let route6 = h
        .ok(&["ip", "-6", "route", "show", "type", "unreachable"])
        .contains("fd62:706e:6574:1::/64");
    assert_eq!(
        (gw, route, gw6, route6),
        (listed, listed, listed, listed),
        "{ctx}: net3 listed={listed} but gateway address={gw}, unreachable route={route}, IPv6 gateway={gw6}, IPv6 unreachable route={route6}"
    );
    listed
}

/// How many rules there are, after checking that a (net1) reaches d (net2)
/// exactly when the one allow rule is alone (no rule: isolated; the allow
/// and a deny over it: denied).
fn rules_checked(h: &TestHost, ctx: &str) -> usize {
    let rules = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    let n = rules.as_array().map_or(0, Vec::len);
    let reaches = sandbox_works(h, "a", "172.19.0.2");
    assert_eq!(
        n == 1,
        reaches,
        "{ctx}: {n} rules but a reaches d: {reaches}"
    );
    n
}

fn judge_rule(h: &TestHost, ctx: &str) -> bool {
    rules_checked(h, ctx) == 1
}

/// A load is completed, never undone: everything still forwards.
fn judge_loaded(h: &TestHost, ctx: &str) -> bool {
    assert!(
        sandbox_works(h, "d", "172.19.0.1"),
        "{ctx}: d cannot reach its gateway"
    );
    true
}

/// A deny added over an allow: whole = both rules and a no longer reaches
/// d (also on the connection the allow had opened); gone = the allow alone.
fn judge_deny(h: &TestHost, ctx: &str) -> bool {
    rules_checked(h, ctx) == 2
}

#[test]
fn every_fault_point_of_every_operation_leaves_whole_or_gone() {
    let h = TestHost::new("crash-points");
    let probe = {
        let mut v = vec!["env", "BPFNET_FAULT_LIST=1", h.bin_path()];
        v.extend_from_slice(&["network", "create", "--ipv6", "net1"]);
        h.run(&v)
    };
    assert!(probe.success(), "{probe}");
    assert!(
        probe.stderr.contains("fault point"),
        "the bpfnet under test has no fault points: build it with `cargo build -p bpfnet --features fault-injection` (cargo xtask test does)\n{probe}"
    );
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    h.create("d", &["net2"]);
    let (a_ip, b_ip) = (h.ip_on("a", "net1"), h.ip_on("b", "net1"));
    assert_eq!(a_ip, "172.18.0.2");
    let cases = [
        Case {
            what: "create c on net1",
            setup: &[],
            op: C_ON_NET1,
            judge: judge_c,
            makes: true,
            reset: RM_C,
        },
        Case {
            what: "create c on net1 and net2",
            setup: &[],
            op: C_ON_BOTH,
            judge: judge_c,
            makes: true,
            reset: RM_C,
        },
        Case {
            what: "create c publishing 8080",
            setup: &[],
            op: C_PUBLISHING,
            judge: judge_c_published,
            makes: true,
            reset: RM_C,
        },
        Case {
            what: "rm c publishing 8080",
            setup: &[C_PUBLISHING],
            op: &["rm", "c"],
            judge: judge_c_published,
            makes: false,
            reset: RM_C,
        },
        Case {
            what: "connect c to net2",
            setup: &[C_ON_NET1],
            op: &["network", "connect", "net2", "c"],
            judge: judge_c_on_net2,
            makes: true,
            reset: RM_C,
        },
        Case {
            what: "disconnect c from net2",
            setup: &[C_ON_BOTH],
            op: &["network", "disconnect", "net2", "c"],
            judge: judge_c_on_net2,
            makes: false,
            reset: RM_C,
        },
        Case {
            what: "rm c",
            setup: &[C_ON_NET1],
            op: &["rm", "c"],
            judge: judge_c,
            makes: false,
            reset: RM_C,
        },
        Case {
            what: "network create net3",
            setup: &[],
            op: &["network", "create", "--ipv6", "net3"],
            judge: judge_net3,
            makes: true,
            reset: &[&["network", "rm", "net3"]],
        },
        Case {
            what: "network rm net3",
            setup: &[&["network", "create", "--ipv6", "net3"]],
            op: &["network", "rm", "net3"],
            judge: judge_net3,
            makes: false,
            reset: &[&["network", "rm", "net3"]],
        },
        Case {
            what: "datapath load",
            setup: &[],
            op: &["datapath", "load"],
            judge: judge_loaded,
            makes: true,
            reset: &[],
        },
        Case {
            what: "policy add",
            setup: &[],
            op: &["policy", "add", "--from", "a", "--to", "d", "--icmp"],
            judge: judge_rule,
            makes: true,
            reset: &[&["policy", "rm", "1"]],
        },
        Case {
            what: "policy add --action deny",
            setup: &[&["policy", "add", "--from", "a", "--to", "d", "--icmp"]],
            op: &[
                "policy", "add", "--from", "a", "--to", "d", "--icmp", "--action", "deny",
            ],
            judge: judge_deny,
            makes: true,
            reset: &[&["policy", "rm", "1", "2"], &["policy", "rm", "1"]],
        },
    ];
    let start = Instant::now();
    let mut report = vec![];
    for case in &cases {
        let n = crash_everywhere(&h, case, &a_ip, &b_ip);
        assert!(n >= 2, "{}: only {n} fault points reached", case.what);
        report.push(format!("{}: {n} points", case.what));
    }
    eprintln!("crashed at {} in {:?}", report.join(", "), start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(900));
}

/// A small deterministic generator (the seed is printed, so a failing run
/// can be replayed with BNT_SEED).
struct Lcg(u64);

impl Lcg {
    fn from_env() -> Lcg {
        let seed = std::env::var("BNT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("BNT_SEED={seed}");
        Lcg(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Every listed sandbox reaches a, and every address is unique.
fn assert_listed_sandboxes_work(h: &TestHost, ctx: &str) {
    let st = state(h);
    let mut seen = BTreeSet::new();
    for (name, sb) in st["sandboxes"].as_object().unwrap() {
        for ep in sb["endpoints"].as_array().unwrap() {
            let key = format!("{} {}", ep["network"], ep["ip"]);
            assert!(seen.insert(key.clone()), "{ctx}: address {key} twice");
        }
        let on_net1 = sb["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["network"] == "net1");
        if name != "a" && on_net1 {
            assert!(
                h.ping(Some(name), "172.18.0.2"),
                "{ctx}: listed sandbox {name} cannot reach a\n{}",
                h.diagnostics(Some(name))
            );
        }
    }
}

/// The scenario of the crash-safety issue, at 100 random moments: creates,
/// connects, disconnects and removes on two networks killed with SIGKILL at
/// a random time, more operations after them, gc: whatever is listed works,
/// nothing unlisted remains, addresses are unique, a and b still talk.
#[test]
fn a_hundred_random_kills_during_a_mixed_workload_leave_whole_or_gone() {
    let h = TestHost::new("crash-random");
    h.bpfnet_ok(&["network", "create", "--ipv6", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let mut rng = Lcg::from_env();
    let mut kills = 0;
    for round in 0..100 {
        let name = format!("x{}", rng.below(6));
        let listed = sandboxes(&state(&h)).contains(&name);
        let args: Vec<&str> = match (listed, rng.below(3)) {
            (false, 0) => vec![
                "create",
                "--name",
                &name,
                "--network",
                "net1",
                "--network",
                "net2",
            ],
            (false, _) => vec!["create", "--name", &name, "--network", "net1"],
            (true, 0) => vec!["network", "connect", "net2", &name],
            (true, 1) => vec!["network", "disconnect", "net2", &name],
            (true, _) => vec!["rm", &name],
        };
        let mut op = h.bpfnet_spawn(&args);
        // Within an operation's run time: a create or rm (this debug
        // build, with the fork and exec) takes some 10 to 40 ms.
        std::thread::sleep(Duration::from_micros(rng.below(25_000)));
        // SAFETY: kill(2) of a child we have not reaped (finish reaps it).
        let killed = unsafe { libc::kill(op.pid() as i32, libc::SIGKILL) } == 0;
        let out = op.finish(Duration::from_secs(30));
        if killed && out.code == -1 {
            kills += 1;
        }
        // More work after the crash, before anyone runs gc: the next
        // command recovers first.
        let other = format!("y{round}");
        h.bpfnet_ok(&["create", "--name", &other, "--network", "net1"]);
        assert!(
            h.ping(Some(&other), "172.18.0.2"),
            "round {round}: fresh sandbox"
        );
        h.bpfnet_ok(&["rm", &other]);
        let gc = h.bpfnet(&["gc"]);
        assert!(gc.success(), "round {round}: gc failed:\n{gc}");
        let ctx = format!("round {round} after `{}`", args.join(" "));
        assert_accounted_for(&h, &ctx);
        if round % 10 == 9 {
            assert_listed_sandboxes_work(&h, &ctx);
        }
        assert!(h.ping(Some("a"), "172.18.0.3"), "{ctx}: a cannot reach b");
    }
    eprintln!("{kills} of 100 operations were killed part-way");
    assert!(kills >= 30, "only {kills} kills landed inside an operation");
}

/// 16 CLIs at once, 50 mixed operations each: the lock serialises them; no
/// lost sandbox, no corrupt state, unique addresses, all listed reachable.
#[test]
fn sixteen_concurrent_clis_of_fifty_operations_keep_the_state_whole() {
    let h = TestHost::new("crash-concurrent");
    h.bpfnet_ok(&["network", "create", "--ipv6", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let ops = 50;
    let script = |cli: usize| {
        let mut s = String::from("set -u; ");
        let bin = h.bin_path();
        for i in 0..ops {
            let n = format!("c{cli}-{}", i % 3);
            let op = match i % 5 {
                0 => format!("{bin} create --name {n} --network net1"),
                1 => format!("{bin} network connect net2 {n}"),
                2 => format!("{bin} network disconnect net2 {n}"),
                3 => format!("{bin} ps --format json"),
                _ => format!("{bin} rm {n}"),
            };
            s.push_str(&format!("{op} >/dev/null 2>>/tmp/{}-cli{cli}.err; ", h.tag));
        }
        s.push_str("echo done");
        s
    };
    let mut clis: Vec<_> = (0..16)
        .map(|c| h.spawn(&["sh", "-c", &script(c)]))
        .collect();
    for (c, cli) in clis.iter_mut().enumerate() {
        let out = cli.finish(Duration::from_secs(600));
        assert!(out.stdout.contains("done"), "cli {c}:\n{out}");
    }
    let errors = h.sh_ok(&format!(
        "cat /tmp/{}-cli*.err; rm -f /tmp/{}-cli*.err",
        h.tag, h.tag
    ));
    for line in errors.lines() {
        // Expected refusals of a racing workload; anything else is a bug.
        let expected = [
            "already exists",
            "not found",
            "already connected",
            "is not connected",
        ];
        assert!(
            expected.iter().any(|e| line.contains(e)),
            "unexpected error from a concurrent CLI: {line}"
        );
    }
    assert_accounted_for(&h, "after 16 concurrent CLIs");
    assert_listed_sandboxes_work(&h, "after 16 concurrent CLIs");
    let gc = h.bpfnet_ok(&["gc"]);
    assert!(
        gc.contains("nothing to remove"),
        "gc found leftovers:\n{gc}"
    );
}

/// A state file written by a newer bpfnet (a layout this one cannot know)
/// is refused with a clear line, and left as it is.
#[test]
fn a_state_file_from_a_newer_bpfnet_is_refused_and_left_alone() {
    let h = TestHost::new("state-newer");
    h.bpfnet_ok(&["network", "create", "net1"]);
    let file = format!("{}/state.json", h.root.display());
    h.sh_ok(&format!(
        "sed -i 's/\"version\":2,/\"version\":99,/' {file}"
    ));
    let before = h.sh_ok(&format!("sha256sum {file}"));
    let o = h.bpfnet_fail(&["create", "--name", "x", "--network", "net1"]);
    assert_eq!(
        o.stderr.trim(),
        format!("Error: {file} was written by a newer bpfnet (state version 99, this one reads up to 2); use that bpfnet")
    );
    assert_eq!(h.sh_ok(&format!("sha256sum {file}")), before);
    assert!(!h.netns_list().contains(&"x".to_string()));
}

/// `datapath unload` removes every sandbox in one operation. Killed at any
/// of its points, the next command (`gc`) leaves the state and the kernel
/// accounted for, and unload run again leaves nothing.
#[test]
fn unload_killed_anywhere_is_completed_and_leaves_nothing() {
    let h = TestHost::new("crash-unload");
    for n in 1.. {
        h.bpfnet_ok(&["network", "create", "net1"]);
        for s in ["a", "b", "c"] {
            h.create(s, &["net1"]);
        }
        h.create("d", &[]);
        let out = run_to_fault(&h, n, &["datapath", "unload"]);
        let ctx = if out.success() {
            "unload without a crash".to_string()
        } else {
            assert_eq!(out.code, -1, "expected a crash at point {n}:\n{out}");
            let ctx = format!("unload crashed at point {n}");
            let gc = h.bpfnet(&["gc"]);
            assert!(gc.success(), "{ctx}: gc failed:\n{gc}");
            assert_accounted_for(&h, &ctx);
            h.bpfnet_ok(&["datapath", "unload"]);
            ctx
        };
        assert_eq!(
            h.netns_list(),
            Vec::<String>::new(),
            "{ctx}: namespaces left"
        );
        assert_eq!(h.link_names(None), vec!["lo"], "{ctx}: links left");
        let left = h.sh_ok(&format!(
            "find {} /etc/netns -mindepth 1 2>/dev/null || true",
            h.root.display()
        ));
        assert_eq!(left.trim(), "", "{ctx}: files left");
        if out.success() {
            assert!(n > 10, "only {n} fault points reached");
            break;
        }
    }
}

/// The commit is the log line (or, when the log is compacted, the new
/// snapshot): killed right after either — before the old log is replaced,
/// or before the journal is removed — the operation has committed, and the
/// next command finds it whole.
#[test]
fn a_kill_between_the_store_files_keeps_the_commit() {
    let h = TestHost::new("crash-store");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    for (point, compact) in [("store:appended", "1000000"), ("store:snapshot", "0")] {
        let o = h.run(&[
            "env",
            &format!("BPFNET_FAULT={point}"),
            &format!("BPFNET_TEST_STORE_COMPACT={compact}"),
            h.bin_path(),
            "create",
            "--name",
            "c",
            "--network",
            "net1",
        ]);
        assert_eq!(o.code, -1, "{point}: expected a crash:\n{o}");
        let ctx = format!("create killed at {point}");
        assert!(listed(&h, "c"), "{ctx}: c is not committed");
        let journal = h.root.join("journal");
        assert!(journal.exists(), "{ctx}: the journal should still be there");
        let gc = h.bpfnet(&["gc"]);
        assert!(gc.success(), "{ctx}: gc failed:\n{gc}");
        assert!(!journal.exists(), "{ctx}: gc left the journal");
        assert!(judge_c(&h, &ctx), "{ctx}: c is not whole");
        assert_accounted_for(&h, &ctx);
        h.bpfnet_ok(&["rm", "c"]);
        assert_accounted_for(&h, &format!("{ctx}, then rm"));
    }
}
