//! Names: the DNS responder of the user networks, the default bridge without
//! names, `--link` through hosts files, and the responder's lifecycle.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use bpfnet_tests::{secs, TestHost, PYTHON};

const DNS_PY: &str = include_str!("dns.py");

/// Writes the DNS helper into the host's scratch dir; returns its path.
fn dns_py(h: &TestHost) -> String {
    let p = h.dir.join("dns.py");
    std::fs::write(&p, DNS_PY).expect("write dns.py");
    p.to_string_lossy().into_owned()
}

/// `getent hosts NAME` in a sandbox (glibc): the first address, if any.
/// Sandboxes on the default bridge ask the host's resolvers, which a test
/// host cannot reach: one short try keeps those failures quick.
fn getent(h: &TestHost, sb: &str, name: &str) -> Option<String> {
    let o = h.exec_in(
        sb,
        &[
            "env",
            "RES_OPTIONS=timeout:1 attempts:1",
            "getent",
            "hosts",
            name,
        ],
    );
    if !o.success() {
        return None;
    }
    o.stdout.split_whitespace().next().map(str::to_string)
}

/// `dig +short NAME` in a sandbox: the answer lines.
fn dig_short(h: &TestHost, sb: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["dig", "+short", "+tries=1", "+timeout=2"];
    v.extend_from_slice(args);
    h.exec_ok(sb, &v).lines().map(str::to_string).collect()
}

fn pid_file(h: &TestHost, which: &str) -> PathBuf {
    h.root.join("dns").join(format!("{which}.pid"))
}

/// Pid of the responder's supervisor or worker, if its process is alive.
fn live_pid(h: &TestHost, which: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(h, which))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_alive(pid).then_some(pid)
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let st = s.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            Some(st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

/// Polls `f` until it is true or `limit` passes; returns the time it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn members_of_a_user_network_ping_each_other_by_name() {
    let h = TestHost::new("names-ping");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("alpha", &["net1"]);
    h.create("beta", &["net1"]);
    let (a, b) = (h.ip_on("alpha", "net1"), h.ip_on("beta", "net1"));
    assert_eq!(getent(&h, "alpha", "beta").as_deref(), Some(b.as_str()));
    assert_eq!(getent(&h, "beta", "alpha").as_deref(), Some(a.as_str()));
    h.assert_ping(Some("alpha"), "beta");
    h.assert_ping(Some("beta"), "alpha");
    // Case does not matter; a trailing dot neither.
    assert_eq!(getent(&h, "alpha", "BETA.").as_deref(), Some(b.as_str()));
    // dig and nslookup use resolv.conf too: the gateway's responder.
    let gw = h.gateway_of("net1");
    let resolv = h.exec_ok("alpha", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {gw}\n")),
        "resolv.conf must point at the gateway:\n{resolv}"
    );
    assert_eq!(dig_short(&h, "alpha", &["beta"]), vec![b.clone()]);
    assert_eq!(dig_short(&h, "alpha", &["+tcp", "beta"]), vec![b.clone()]);
    let ns = h.exec_ok("alpha", &["nslookup", "beta"]);
    assert!(ns.contains(&format!("Address: {b}")), "{ns}");
    // No IPv6: AAAA of our names is an empty NOERROR, not NXDOMAIN.
    let aaaa = h.exec_ok("alpha", &["dig", "+tries=1", "beta", "AAAA"]);
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    // Reverse lookups name the sandbox.
    assert_eq!(
        dig_short(&h, "alpha", &["-x", &b]),
        vec!["beta.".to_string()]
    );
}

#[test]
fn the_default_bridge_resolves_no_names() {
    let h = TestHost::new("names-bridge");
    h.create("one", &[]);
    h.create("other", &[]);
    assert_eq!(getent(&h, "one", "other"), None);
    assert_eq!(getent(&h, "other", "one"), None);
    let resolv = h.exec_ok("one", &["cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("172.17.0.1"), "{resolv}");
    assert_eq!(
        live_pid(&h, "supervisor"),
        None,
        "no responder without user networks"
    );
    // A sandbox on bridge and a user network resolves only the user network's names.
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("both", &["bridge", "net1"]);
    h.create("peer", &["net1"]);
    assert_eq!(getent(&h, "both", "peer"), Some(h.ip_on("peer", "net1")));
    assert_eq!(getent(&h, "both", "one"), None);
    assert_eq!(getent(&h, "peer", "one"), None);
    // `one` is still only on bridge: the host's resolvers, not ours.
    let resolv = h.exec_ok("one", &["cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("bpfnet"), "{resolv}");
}

#[test]
fn links_resolve_in_one_direction_and_follow_the_linked_address() {
    let h = TestHost::new("names-links");
    h.create("b1", &[]);
    h.bpfnet_ok(&["create", "--name", "b2", "--link", "b1:db"]);
    h.create("b3", &[]);
    let ip1 = h.ip_on("b1", "bridge");
    assert_eq!(getent(&h, "b2", "b1"), Some(ip1.clone()));
    assert_eq!(getent(&h, "b2", "db"), Some(ip1.clone()));
    assert_eq!(
        getent(&h, "b1", "b2"),
        None,
        "the linked one must not resolve the linker"
    );
    assert_eq!(
        getent(&h, "b2", "b3"),
        None,
        "no third sandbox through the link"
    );
    assert_eq!(getent(&h, "b3", "db"), None);
    h.assert_ping(Some("b2"), "db");

    // b1 recreated with another address: b2's hosts file follows.
    h.bpfnet_ok(&["rm", "b1"]);
    assert_eq!(
        getent(&h, "b2", "db"),
        None,
        "a removed link target resolves no more"
    );
    h.create("filler", &[]); // takes b1's old address
    h.create("b1", &[]);
    let new_ip = h.ip_on("b1", "bridge");
    assert_ne!(new_ip, ip1);
    assert_eq!(getent(&h, "b2", "db"), Some(new_ip.clone()));
    assert_eq!(getent(&h, "b2", "b1"), Some(new_ip.clone()));
    h.assert_ping(Some("b2"), "db");

    // Reconnected elsewhere: the address on a shared network, else the first.
    h.bpfnet_ok(&["network", "disconnect", "bridge", "b1"]);
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "connect", "net1", "b1"]);
    assert_eq!(getent(&h, "b2", "db"), Some(h.ip_on("b1", "net1")));
}

#[test]
fn an_alias_shared_by_two_sandboxes_returns_both_in_rotating_order() {
    let h = TestHost::new("names-alias");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "s1",
        "--network",
        "net1",
        "--network-alias",
        "svc",
    ]);
    h.create("s2", &[]);
    h.bpfnet_ok(&["network", "connect", "--alias", "svc", "net1", "s2"]);
    h.create("client", &["net1"]);
    let mut want = vec![h.ip_on("s1", "net1"), h.ip_on("s2", "net1")];
    want.sort();
    let mut firsts = vec![];
    for _ in 0..4 {
        let got = dig_short(&h, "client", &["svc"]);
        firsts.push(got[0].clone());
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, want, "svc must return both members: {got:?}");
    }
    firsts.dedup();
    assert!(
        firsts.len() > 1,
        "the order must rotate across queries: {firsts:?}"
    );
    // glibc gets one of them.
    let one = getent(&h, "client", "svc").expect("svc resolves");
    assert!(want.contains(&one), "{one}");
    // The alias is per network: s2's bridge side does not carry it.
    h.bpfnet_ok(&["network", "disconnect", "net1", "s2"]);
    assert_eq!(
        dig_short(&h, "client", &["svc"]),
        vec![h.ip_on("s1", "net1")]
    );
}

#[test]
fn changes_show_at_once_removed_hidden_recreated_resolve_anew() {
    let h = TestHost::new("names-live");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    h.create("c", &["net2"]);
    let old = h.ip_on("b", "net1");
    assert_eq!(getent(&h, "a", "b"), Some(old.clone()));
    // Names of a network the requester is not on are not ours to answer:
    // asked upstream like any other (unreachable from a test host).
    assert_eq!(getent(&h, "a", "c"), None);
    let fw = h.exec_ok("a", &["dig", "+tries=1", "c"]);
    assert!(
        fw.contains("status: SERVFAIL") && !fw.contains(&h.ip_on("c", "net2")),
        "{fw}"
    );

    h.bpfnet_ok(&["rm", "b"]);
    let t = within(secs(1), || getent(&h, "a", "b").is_none());
    assert!(
        t.is_some(),
        "a removed sandbox must stop resolving within 1 s"
    );

    h.create("filler", &["net1"]); // takes b's old address
    h.create("b", &["net1"]);
    let new = h.ip_on("b", "net1");
    assert_ne!(new, old);
    let t = within(secs(1), || {
        getent(&h, "a", "b").as_deref() == Some(new.as_str())
    });
    assert!(
        t.is_some(),
        "a recreated sandbox must resolve to its new address within 1 s"
    );

    // connect / disconnect move visibility.
    h.bpfnet_ok(&["network", "connect", "--alias", "cee", "net1", "c"]);
    let c1 = h.ip_on("c", "net1");
    assert!(within(secs(1), || getent(&h, "a", "c") == Some(c1.clone())).is_some());
    assert_eq!(getent(&h, "a", "cee"), Some(c1.clone()));
    h.bpfnet_ok(&["network", "disconnect", "net1", "c"]);
    assert!(within(secs(1), || getent(&h, "a", "c").is_none()).is_some());
    assert_eq!(getent(&h, "a", "cee"), None);
}

#[test]
fn killing_the_responder_the_next_query_within_2s_is_answered() {
    let h = TestHost::new("names-kill");
    let py = dns_py(&h);
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let gw = h.gateway_of("net1");
    let sup = live_pid(&h, "supervisor").expect("supervisor running");
    for round in 0..3 {
        let worker = live_pid(&h, "worker").expect("worker running");
        h.ok(&["kill", "-9", &worker.to_string()]);
        let o = h.exec_ok("a", &[PYTHON, &py, "first-answer", &gw, "b", "2"]);
        assert!(
            o.starts_with("answered after"),
            "round {round}: no answer within 2 s of killing the worker: {o}"
        );
        let new = live_pid(&h, "worker").expect("worker respawned");
        assert_ne!(new, worker);
    }
    assert_eq!(live_pid(&h, "supervisor"), Some(sup));
    assert!(getent(&h, "a", "b").is_some());

    // Supervisor and worker both dead: the next bpfnet command restarts them.
    h.ok(&["kill", "-9", &sup.to_string()]);
    assert!(
        within(secs(2), || live_pid(&h, "worker").is_none()).is_some(),
        "the worker dies with its supervisor"
    );
    h.bpfnet_ok(&["ps"]);
    assert!(live_pid(&h, "supervisor").is_some());
    assert!(getent(&h, "a", "b").is_some());
}

#[test]
fn ten_thousand_queries_from_four_sandboxes_none_lost_across_reloads() {
    let h = TestHost::new("names-load");
    let py = dns_py(&h);
    h.bpfnet_ok(&["network", "create", "net1"]);
    let names = ["q1", "q2", "q3", "q4"];
    for n in names {
        h.create(n, &["net1"]);
    }
    let gw = h.gateway_of("net1");
    let pairs: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={}", h.ip_on(n, "net1")))
        .collect();
    let worker = live_pid(&h, "worker");
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut churned = 0;
    let mut total = 0;
    thread::scope(|s| {
        // Membership changes meanwhile: reloads must not drop queries.
        let churn = s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 50 {
                h.create("churn", &["net1"]);
                h.bpfnet_ok(&["rm", "churn"]);
                n += 1;
            }
            n
        });
        let mut clients: Vec<_> = names
            .iter()
            .map(|n| {
                let mut args = vec![PYTHON, py.as_str(), "burst", gw.as_str(), "2500", "64"];
                args.extend(pairs.iter().map(String::as_str));
                h.spawn_in(n, &args)
            })
            .collect();
        for (c, n) in clients.iter_mut().zip(names) {
            let line = c.wait_line("result", secs(60));
            let f: Vec<&str> = line.split_whitespace().collect();
            // result sent S answered A wrong W lost L qps Q
            assert_eq!(f[2], "2500", "{n}: {line}");
            assert_eq!(f[4], "2500", "{n}: every query answered correctly: {line}");
            total += f[4].parse::<u32>().unwrap();
            eprintln!("{n}: {line}");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        churned = churn.join().expect("churn thread");
    });
    assert!(churned > 0, "no reload happened during the burst");
    assert_eq!(total, 10_000);
    assert_eq!(
        live_pid(&h, "worker"),
        worker,
        "the worker must not have restarted"
    );
}

#[test]
fn fuzzed_garbage_does_not_kill_the_responder() {
    let h = TestHost::new("names-fuzz");
    let py = dns_py(&h);
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let gw = h.gateway_of("net1");
    let worker = live_pid(&h, "worker").expect("worker");
    let o = h.exec_ok("a", &[PYTHON, &py, "garbage", &gw, "20000"]);
    assert_eq!(o.trim(), "done");
    assert_eq!(getent(&h, "a", "b"), Some(h.ip_on("b", "net1")));
    assert_eq!(
        dig_short(&h, "a", &["+tcp", "b"]),
        vec![h.ip_on("b", "net1")]
    );
    assert_eq!(
        live_pid(&h, "worker"),
        Some(worker),
        "the worker must have survived"
    );
}

#[test]
fn queries_from_outside_bpfnet_networks_get_no_answer() {
    let h = TestHost::new("names-strangers");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("member", &["net1"]);
    h.create("onbridge", &[]);
    let gw = h.gateway_of("net1");
    let server = format!("@{gw}");
    // The test host itself (source: the gateway address).
    let o = h.run(&["dig", &server, "+tries=1", "+timeout=1", "member"]);
    assert_eq!(o.code, 9, "the host must get no answer (dig exit 9):\n{o}");
    let o = h.run(&["dig", &server, "+tcp", "+tries=1", "+timeout=1", "member"]);
    assert!(!o.stdout.contains("ANSWER SECTION"), "{o}");
    // A sandbox that is on the default bridge only.
    let o = h.exec_in(
        "onbridge",
        &["dig", &server, "+tries=1", "+timeout=1", "member"],
    );
    assert!(!o.stdout.contains("ANSWER SECTION"), "{o}");
    // A member still is answered.
    assert_eq!(
        dig_short(&h, "member", &["member"]),
        vec![h.ip_on("member", "net1")]
    );
}

/// A fake upstream resolver in its own namespace behind a veth pair
/// (10.253.0.0/30) inside the test host.
struct FakeUpstream {
    server: bpfnet_tests::Bg,
}

fn fake_upstream(h: &TestHost, py: &str) -> FakeUpstream {
    FakeUpstream {
        server: h.fake_upstream(py, "53", "10.9.8.7"),
    }
}

#[test]
fn unknown_names_are_forwarded_upstream_and_ours_never_are() {
    let h = TestHost::new("names-upstream");
    let py = dns_py(&h);
    let mut up = fake_upstream(&h, &py);
    let bin = h.bin_path().to_string();
    let env = "BPFNET_DNS_UPSTREAM=10.253.0.2:53";
    let bpfnet = |args: &[&str]| {
        let mut v = vec!["env", env, bin.as_str()];
        v.extend_from_slice(args);
        h.ok(&v)
    };
    bpfnet(&["network", "create", "net1"]);
    bpfnet(&["network", "create", "net2"]);
    bpfnet(&["create", "--name", "a", "--network", "net1"]);
    bpfnet(&["create", "--name", "hidden", "--network", "net2"]);
    assert_eq!(
        getent(&h, "a", "something.example"),
        Some("10.9.8.7".into())
    );
    assert_eq!(
        dig_short(&h, "a", &["Something.Example"]),
        vec!["10.9.8.7".to_string()]
    );
    // A name of a network `a` is not on is unknown to `a`: asked upstream
    // like any other (Docker, aardvark-dns), so `a` learns nothing of net2.
    let fw = h.exec_ok("a", &["dig", "+short", "+tries=1", "hidden"]);
    assert_eq!(fw.trim(), "10.9.8.7", "{fw}");
    // Its own names are ours: answered, never asked upstream.
    let own = h.exec_ok("a", &["dig", "+short", "+tries=1", "-q", "a"]);
    assert_eq!(own.trim(), h.ip_on("a", "net1"), "{own}");
    // The answer keeps the client's id (dig checks it) and comes from us.
    let full = h.exec_ok("a", &["dig", "+tries=1", "other.example"]);
    assert!(
        full.contains("10.9.8.7") && full.contains(&format!("SERVER: {}#53", h.gateway_of("net1"))),
        "{full}"
    );

    // Upstream gone: SERVFAIL, in time for the client to see it.
    up.server.stop();
    let sf = h.exec_in("a", &["dig", "+tries=1", "+timeout=5", "gone.example"]);
    assert!(sf.stdout.contains("status: SERVFAIL"), "{sf}");

    let seen = up.server.lines();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("query something.example 1")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("query hidden 1")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.starts_with("query a ")),
        "names the requester can see must never go upstream: {seen:?}"
    );
}

#[test]
fn the_responder_runs_only_while_needed_and_dies_with_its_test_host() {
    let (sup, worker);
    {
        let h = TestHost::new("names-lifecycle");
        h.bpfnet_ok(&["network", "create", "net1"]);
        assert_eq!(live_pid(&h, "supervisor"), None);
        h.create("a", &["net1"]);
        assert!(live_pid(&h, "supervisor").is_some());
        h.bpfnet_ok(&["rm", "a"]);
        assert_eq!(
            live_pid(&h, "supervisor"),
            None,
            "stopped with the last endpoint"
        );
        assert_eq!(live_pid(&h, "worker"), None);
        h.create("a", &["net1"]);
        assert!(live_pid(&h, "worker").is_some());
        h.bpfnet_ok(&["datapath", "unload"]);
        assert_eq!(live_pid(&h, "supervisor"), None, "unload stops it");
        h.bpfnet_ok(&["network", "create", "net1"]);
        h.create("a", &["net1"]);
        sup = live_pid(&h, "supervisor").expect("supervisor");
        worker = live_pid(&h, "worker").expect("worker");
        // The CLI must not wait for the daemon (its stdio is not ours).
        let t = Instant::now();
        h.create("b", &["net1"]);
        assert!(t.elapsed() < secs(5));
    }
    let gone = within(secs(3), || !process_alive(sup) && !process_alive(worker));
    assert!(gone.is_some(), "the responder survived its test host");
}
