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

use bpfnet_tests::{Output, TestHost};
use serde_json::Value;

/// Runs `bpfnet ARGS` with `BPFNET_FAULT=n`.
fn run_to_fault(h: &TestHost, n: usize, args: &[&str]) -> Output {
    let fault = format!("BPFNET_FAULT={n}");
    let mut v = vec!["env", fault.as_str(), h.bin_path()];
    v.extend_from_slice(args);
    h.run(&v)
}

fn state(h: &TestHost) -> Value {
    let text = h.sh_ok(&format!("cat {}/state.json", h.root.display()));
    serde_json::from_str(&text).expect("state.json")
}

fn sandboxes(st: &Value) -> BTreeSet<String> {
    st["sandboxes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// (host-side veth names, count of endpoints on eBPF networks) of the state.
fn endpoints(st: &Value) -> (BTreeSet<String>, usize) {
    let mut names = BTreeSet::new();
    let mut ebpf = 0;
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
            }
        }
    }
    (names, ebpf)
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
    let (veths, ebpf) = endpoints(&st);
    let links: BTreeSet<String> = h
        .link_names(None)
        .into_iter()
        .filter(|l| l.starts_with("bn"))
        .collect();
    assert_eq!(links, veths, "{ctx}: host-side veths vs endpoints");
    for map in ["ENDPOINTS", "FDB", "NEIGHBOURS"] {
        let n = h.map_dump(map).len();
        assert_eq!(n, ebpf, "{ctx}: {map} has {n} entries for {ebpf} endpoints");
    }
}

/// The object an operation makes or removes, seen from outside.
fn sandbox_works(h: &TestHost, name: &str, peer_ip: &str) -> bool {
    h.ping(Some(name), peer_ip)
}

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
    assert_eq!(
        (gw, route),
        (listed, listed),
        "{ctx}: net3 listed={listed} but gateway address={gw}, unreachable route={route}"
    );
    listed
}

fn judge_rule(h: &TestHost, ctx: &str) -> bool {
    let rules = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    let n = rules.as_array().map_or(0, Vec::len);
    // The rule lets a (net1) reach d (net2) by ping.
    let reaches = sandbox_works(h, "a", "172.19.0.2");
    assert_eq!(
        n == 1,
        reaches,
        "{ctx}: {n} rules but a reaches d: {reaches}"
    );
    n == 1
}

#[test]
fn every_fault_point_of_every_operation_leaves_whole_or_gone() {
    let h = TestHost::new("crash-points");
    let probe = {
        let mut v = vec!["env", "BPFNET_FAULT_LIST=1", h.bin_path()];
        v.extend_from_slice(&["network", "create", "net1"]);
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
            op: &["create", "--name", "c", "--network", "net1"],
            judge: judge_c,
            makes: true,
            reset: &[&["rm", "-f", "c"]],
        },
        Case {
            what: "create c on net1 and net2",
            setup: &[],
            op: &[
                "create",
                "--name",
                "c",
                "--network",
                "net1",
                "--network",
                "net2",
            ],
            judge: judge_c,
            makes: true,
            reset: &[&["rm", "-f", "c"]],
        },
        Case {
            what: "connect c to net2",
            setup: &[&["create", "--name", "c", "--network", "net1"]],
            op: &["network", "connect", "net2", "c"],
            judge: judge_c_on_net2,
            makes: true,
            reset: &[&["rm", "-f", "c"]],
        },
        Case {
            what: "disconnect c from net2",
            setup: &[&[
                "create",
                "--name",
                "c",
                "--network",
                "net1",
                "--network",
                "net2",
            ]],
            op: &["network", "disconnect", "net2", "c"],
            judge: judge_c_on_net2,
            makes: false,
            reset: &[&["rm", "-f", "c"]],
        },
        Case {
            what: "rm c",
            setup: &[&["create", "--name", "c", "--network", "net1"]],
            op: &["rm", "c"],
            judge: judge_c,
            makes: false,
            reset: &[&["rm", "-f", "c"]],
        },
        Case {
            what: "network create net3",
            setup: &[],
            op: &["network", "create", "net3"],
            judge: judge_net3,
            makes: true,
            reset: &[&["network", "rm", "net3"]],
        },
        Case {
            what: "network rm net3",
            setup: &[&["network", "create", "net3"]],
            op: &["network", "rm", "net3"],
            judge: judge_net3,
            makes: false,
            reset: &[&["network", "rm", "net3"]],
        },
        Case {
            what: "policy add",
            setup: &[],
            op: &["policy", "add", "--from", "a", "--to", "d", "--icmp"],
            judge: judge_rule,
            makes: true,
            reset: &[&["policy", "rm", "1"]],
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
