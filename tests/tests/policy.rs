//! Policy between networks (`bpfnet policy add/ls/rm`): deny by default,
//! allow rules open one direction (replies via conntrack), deny overrides
//! allow and ends established connections, hit counters, rules kept by name,
//! spoofing, bad input, routing in the datapath without `ip_forward`.

mod flow;

use std::thread;
use std::time::Duration;

use serde_json::Value;

use bpfnet_tests::{assert_error, TestHost};
use flow::{expect, flow, seen_from, server};

/// net1 with sandbox `a`, net2 with sandbox `b`; returns their addresses.
fn two_nets(name: &str) -> (TestHost, String, String) {
    let h = TestHost::new(name);
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net2"]);
    let (a, b) = (h.ip_on("a", "net1"), h.ip_on("b", "net2"));
    (h, a, b)
}

/// `bpfnet policy add ARGS`; returns the ID it printed (last line, numeric).
fn add(h: &TestHost, args: &[&str]) -> String {
    let mut v = vec!["policy", "add"];
    v.extend_from_slice(args);
    let o = h.bpfnet(&v);
    assert!(o.success(), "policy add failed:\n{o}");
    let id = o.last_line().trim().to_string();
    assert!(
        !id.is_empty() && id.bytes().all(|c| c.is_ascii_digit()),
        "policy add should print the rule's numeric ID last:\n{o}"
    );
    id
}

/// `bpfnet policy ls --format json`, as an array.
fn rules(h: &TestHost) -> Vec<Value> {
    let v = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    v.as_array()
        .unwrap_or_else(|| panic!("policy ls --format json is not an array:\n{v:#}"))
        .clone()
}

/// The rule with `id` from `policy ls --format json`.
fn rule(h: &TestHost, id: &str) -> Value {
    let all = rules(h);
    all.iter()
        .find(|r| r["ID"].as_u64() == id.parse().ok() || r["ID"].as_str() == Some(id))
        .cloned()
        .unwrap_or_else(|| panic!("no rule {id} in policy ls:\n{all:#?}"))
}

fn hits(h: &TestHost, id: &str) -> u64 {
    let r = rule(h, id);
    r["Hits"]
        .as_u64()
        .unwrap_or_else(|| panic!("rule {id} has no numeric Hits:\n{r:#}"))
}

/// Ping with a single try and a 1 s wait.
fn ping1(h: &TestHost, from: &str, dst: &str) -> bpfnet_tests::Output {
    h.exec_in(from, &["ping", "-n", "-c", "1", "-W", "1", dst])
}

/// By default nothing crosses: TCP, UDP and ping fail both ways, nothing
/// reaches the servers, and the drops are counted as `cross-network`.
#[test]
fn nothing_crosses_between_networks_by_default() {
    let (h, a, b) = two_nets("pol-default");
    let (ta, tb) = (
        server(&h, "a", "tcp", &[8080]),
        server(&h, "b", "tcp", &[8080]),
    );
    let (ua, ub) = (
        server(&h, "a", "udp", &[5353]),
        server(&h, "b", "udp", &[5353]),
    );
    let before = h.drops("cross-network");
    expect(
        &h,
        "a",
        &[flow("tcp", &b, 8080, false), flow("udp", &b, 5353, false)],
    );
    expect(
        &h,
        "b",
        &[flow("tcp", &a, 8080, false), flow("udp", &a, 5353, false)],
    );
    h.assert_no_ping(Some("a"), &b);
    h.assert_no_ping(Some("b"), &a);
    assert!(seen_from(&tb, &a).is_empty(), "{:?}", tb.lines());
    assert!(seen_from(&ub, &a).is_empty(), "{:?}", ub.lines());
    assert!(seen_from(&ta, &b).is_empty(), "{:?}", ta.lines());
    assert!(seen_from(&ua, &b).is_empty(), "{:?}", ua.lines());
    let after = h.drops("cross-network");
    assert!(
        after >= before + 4 + 4,
        "cross-network drops went {before} → {after}, expected at least +8:\n{:#}",
        h.stats()
    );
    assert!(rules(&h).is_empty(), "no rules at start");
}

/// allow a → net:net2 8080/tcp: a reaches b on 8080 (and gets the echo back),
/// not on 8081, not by UDP or ping; b opens nothing towards a. Removing the
/// rule restores isolation.
#[test]
fn allow_tcp_port_opens_exactly_that_port_in_one_direction() {
    let (h, a, b) = two_nets("pol-tcp");
    let tb = server(&h, "b", "tcp", &[8080, 8081]);
    let _ub = server(&h, "b", "udp", &[8080]);
    let ta = server(&h, "a", "tcp", &[8080]);
    let id = add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "8080/tcp"],
    );
    let r = rule(&h, &id);
    assert_eq!(
        (&r["From"], &r["To"], &r["Port"], &r["Action"]),
        (
            &Value::from("a"),
            &Value::from("net:net2"),
            &Value::from("8080/tcp"),
            &Value::from("allow")
        ),
        "{r:#}"
    );
    let table = h.bpfnet_ok(&["policy", "ls"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "FROM", "TO", "PORT", "ACTION", "HITS"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..5]
                == [id.as_str(), "a", "net:net2", "8080/tcp", "allow"]),
        "{table}"
    );

    expect(
        &h,
        "a",
        &[
            flow("tcp", &b, 8080, true),
            flow("tcp", &b, 8081, false),
            flow("udp", &b, 8080, false),
        ],
    );
    assert!(
        !ping1(&h, "a", &b).success(),
        "ping crossed a TCP-only rule"
    );
    expect(&h, "b", &[flow("tcp", &a, 8080, false)]);
    assert!(
        seen_from(&ta, &b).is_empty(),
        "b reached a: {:?}",
        ta.lines()
    );
    let conns: Vec<String> = seen_from(&tb, &a);
    assert!(
        conns.len() == 1 && conns[0].starts_with("conn 8080 "),
        "b's server should see exactly one connection from a, on 8080: {:?}",
        tb.lines()
    );

    h.bpfnet_ok(&["policy", "rm", &id]);
    assert!(rules(&h).is_empty(), "rule still listed after rm");
    expect(&h, "a", &[flow("tcp", &b, 8080, false)]);
}

/// allow a → net:net2 5353/udp: a's datagram reaches b's server and the
/// server's answer comes back; other ports and TCP stay closed; b can't start
/// a UDP exchange with a.
#[test]
fn allow_udp_port_lets_the_answer_back_but_not_new_flows_from_the_other_side() {
    let (h, a, b) = two_nets("pol-udp");
    let ub = server(&h, "b", "udp", &[5353, 5354]);
    let _tb = server(&h, "b", "tcp", &[5353]);
    let ua = server(&h, "a", "udp", &[5353]);
    add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "5353/udp"],
    );
    expect(
        &h,
        "a",
        &[
            flow("udp", &b, 5353, true),
            flow("udp", &b, 5354, false),
            flow("tcp", &b, 5353, false),
        ],
    );
    let seen = seen_from(&ub, &a);
    assert!(
        seen.len() == 1 && seen[0].starts_with("got 5353 "),
        "b's server should get exactly one datagram from a, on 5353: {:?}",
        ub.lines()
    );
    expect(&h, "b", &[flow("udp", &a, 5353, false)]);
    assert!(
        seen_from(&ua, &b).is_empty(),
        "b's datagram reached a: {:?}",
        ua.lines()
    );
}

/// allow a → net:net2 --icmp: a pings b, b can't ping a, TCP stays closed.
#[test]
fn allow_icmp_lets_pings_through_in_one_direction() {
    let (h, a, b) = two_nets("pol-icmp");
    let _tb = server(&h, "b", "tcp", &[8080]);
    let id = add(&h, &["--from", "a", "--to", "net:net2", "--icmp"]);
    assert_eq!(rule(&h, &id)["Port"], "icmp");
    h.assert_ping(Some("a"), &b);
    h.assert_no_ping(Some("b"), &a);
    expect(&h, "a", &[flow("tcp", &b, 8080, false)]);
}

/// A range without protocol opens TCP and UDP on every port of the range and
/// nothing next to it; a sandbox-to-sandbox rule doesn't open the network's
/// other members.
#[test]
fn port_range_without_protocol_opens_tcp_and_udp_on_the_range_only() {
    let (h, _a, b) = two_nets("pol-range");
    h.create("c", &["net2"]);
    let c = h.ip_on("c", "net2");
    let _tb = server(&h, "b", "tcp", &[9000, 9002, 9003]);
    let _ub = server(&h, "b", "udp", &[9001, 9003]);
    let _tc = server(&h, "c", "tcp", &[9000]);
    let id = add(&h, &["--from", "a", "--to", "b", "--port", "9000-9002"]);
    assert_eq!(rule(&h, &id)["Port"], "9000-9002");
    expect(
        &h,
        "a",
        &[
            flow("tcp", &b, 9000, true),
            flow("tcp", &b, 9002, true),
            flow("udp", &b, 9001, true),
            flow("tcp", &b, 9003, false),
            flow("udp", &b, 9003, false),
            flow("tcp", &c, 9000, false),
        ],
    );
}

/// A deny wins over an allow whatever their order: deny a → b 8080/tcp
/// before allow a → net:net2 (everything) keeps 8080 closed while 8081 and
/// ping work; a later deny `*` → net:net2 --icmp stops pings; denied packets
/// count as `policy-denied`; removing the denies reopens.
#[test]
fn deny_overrides_allow() {
    let (h, _a, b) = two_nets("pol-deny");
    h.create("x", &["net1"]);
    let _tb = server(&h, "b", "tcp", &[8080, 8081]);
    let deny_port = add(
        &h,
        &[
            "--from", "a", "--to", "b", "--port", "8080/tcp", "--action", "deny",
        ],
    );
    let allow = add(&h, &["--from", "a", "--to", "net:net2"]);
    let allow_x = add(&h, &["--from", "x", "--to", "net:net2", "--icmp"]);
    assert_eq!(rule(&h, &deny_port)["Action"], "deny");
    assert_eq!(rule(&h, &allow)["Port"], "any");
    let before = h.drops("policy-denied");
    expect(
        &h,
        "a",
        &[flow("tcp", &b, 8080, false), flow("tcp", &b, 8081, true)],
    );
    h.assert_ping(Some("a"), &b);
    h.assert_ping(Some("x"), &b);
    let after = h.drops("policy-denied");
    assert!(
        after > before,
        "policy-denied went {before} → {after}:\n{:#}",
        h.stats()
    );

    let deny_icmp = add(
        &h,
        &[
            "--from", "*", "--to", "net:net2", "--icmp", "--action", "deny",
        ],
    );
    h.assert_no_ping(Some("a"), &b);
    h.assert_no_ping(Some("x"), &b);
    expect(&h, "a", &[flow("tcp", &b, 8081, true)]);

    h.bpfnet_ok(&["policy", "rm", &deny_port, &deny_icmp]);
    expect(&h, "a", &[flow("tcp", &b, 8080, true)]);
    h.assert_ping(Some("a"), &b);
    h.assert_ping(Some("x"), &b);
    h.bpfnet_ok(&["policy", "rm", &allow, &allow_x]);
    assert!(rules(&h).is_empty(), "{:#?}", rules(&h));
    expect(&h, "a", &[flow("tcp", &b, 8080, false)]);
    h.assert_no_ping(Some("a"), &b);
}

/// Runs a TCP stream a → b:8080 (allowed by an allow-everything rule), then
/// `cut`s it; the stream's next packets must not reach b, must be dropped
/// with `reason`, shown by `bpfnet monitor`, and no new connection opens.
fn established_connection_is_cut(name: &str, reason: &str, cut: impl FnOnce(&TestHost, &str)) {
    let (h, a, b) = two_nets(name);
    let srv = server(&h, "b", "tcp", &[8080]);
    let allow = add(&h, &["--from", "a", "--to", "net:net2"]);
    let mut mon = h.bpfnet_spawn(&["monitor"]);
    let mut stream = flow::spawn(&h, "a", &["stream", &b, "8080", "0.1"]);
    stream.wait_contains("echo", 3, Duration::from_secs(5));
    let data_from_a = |srv: &bpfnet_tests::Bg| {
        srv.lines()
            .iter()
            .filter(|l| l.starts_with(&format!("data 8080 {a} ")))
            .count()
    };
    // The stream is charged to a's conntrack quota until it is forgotten.
    let a_conntrack = |h: &TestHost| {
        h.bpfnet_json(&["stats", "a", "--format", "json"])["endpoints"][0]["conntrack"].clone()
    };
    assert_eq!(a_conntrack(&h), 1, "{:#}", h.stats());
    let before = h.drops(reason);
    cut(&h, &allow);
    assert_eq!(
        a_conntrack(&h),
        0,
        "forgotten, and credited: {:#}",
        h.stats()
    );
    // What was in flight when the rules changed has landed by now.
    thread::sleep(Duration::from_millis(300));
    let (n1, e1) = (data_from_a(&srv), stream.lines().len());
    thread::sleep(Duration::from_millis(1500));
    let (n2, e2) = (data_from_a(&srv), stream.lines().len());
    assert_eq!(
        n1,
        n2,
        "the established connection kept delivering to b after the change:\n{:#?}",
        srv.lines()
    );
    assert_eq!(e1, e2, "a kept getting echoes: {:#?}", stream.lines());
    let after = h.drops(reason);
    assert!(
        after > before,
        "{reason} drops went {before} → {after}:\n{:#}",
        h.stats()
    );
    mon.wait_contains(reason, 1, Duration::from_secs(3));
    drop(stream);
    expect(&h, "a", &[flow("tcp", &b, 8080, false)]);
}

/// A deny added while a connection is established ends it: its next packets
/// are judged anew and dropped as `policy-denied`, visible in `monitor`.
#[test]
fn deny_ends_an_established_connection() {
    established_connection_is_cut("pol-deny-est", "policy-denied", |h, _| {
        add(
            h,
            &[
                "--from", "a", "--to", "b", "--port", "8080/tcp", "--action", "deny",
            ],
        );
    });
}

/// Removing the allow rule ends the connections it allowed.
#[test]
fn removing_an_allow_rule_ends_the_connections_it_allowed() {
    established_connection_is_cut("pol-rm-est", "cross-network", |h, id| {
        h.bpfnet_ok(&["policy", "rm", id]);
    });
}

/// An allow rule counts the connections it let through — exactly, not
/// packets; a deny rule counts the packets it denied; a new rule starts at 0.
#[test]
fn hit_counters_count_exactly_the_connections_made() {
    let (h, _a, b) = two_nets("pol-hits");
    let _tb = server(&h, "b", "tcp", &[8080, 8081]);
    let _ub = server(&h, "b", "udp", &[5353]);
    let allow = add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "8080/tcp"],
    );
    let deny = add(
        &h,
        &[
            "--from", "a", "--to", "b", "--port", "5353/udp", "--action", "deny",
        ],
    );
    assert_eq!((hits(&h, &allow), hits(&h, &deny)), (0, 0), "fresh rules");
    // Three connections at once (three source ports), each with several
    // packets both ways, plus one that the rule doesn't cover.
    expect(
        &h,
        "a",
        &[
            flow("tcp", &b, 8080, true),
            flow("tcp", &b, 8080, true),
            flow("tcp", &b, 8080, true),
            flow("tcp", &b, 8081, false),
        ],
    );
    // Two more, one after the other.
    expect(&h, "a", &[flow("tcp", &b, 8080, true)]);
    expect(&h, "a", &[flow("tcp", &b, 8080, true)]);
    // Two denied datagrams (one each, no retries).
    expect(
        &h,
        "a",
        &[flow("udp", &b, 5353, false), flow("udp", &b, 5353, false)],
    );
    assert_eq!(hits(&h, &allow), 5, "allow rule: 5 connections were made");
    assert_eq!(hits(&h, &deny), 2, "deny rule: 2 packets were denied");
    // A rule that takes a freed ID starts from zero.
    h.bpfnet_ok(&["policy", "rm", &allow]);
    let again = add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "8080/tcp"],
    );
    assert_eq!(hits(&h, &again), 0, "a new rule (ID {again}) starts at 0");
    expect(&h, "a", &[flow("tcp", &b, 8080, true)]);
    assert_eq!(hits(&h, &again), 1);
}

/// A rule written for sandbox names follows them when they are removed and
/// recreated with other addresses; the old addresses gain nothing.
#[test]
fn rule_for_a_sandbox_name_holds_after_rm_and_recreate_with_another_address() {
    let (h, a, b) = two_nets("pol-by-name");
    add(&h, &["--from", "a", "--to", "b", "--port", "8080/tcp"]);
    {
        let _tb = server(&h, "b", "tcp", &[8080]);
        expect(&h, "a", &[flow("tcp", &b, 8080, true)]);
    }

    // b goes, another sandbox takes net2's next address first, b comes back
    // elsewhere.
    h.bpfnet_ok(&["rm", "-f", "b"]);
    h.create("filler2", &["net2"]);
    h.create("b", &["net2"]);
    let b2 = h.ip_on("b", "net2");
    assert_ne!(b2, b, "b should have a new address");
    let _tb = server(&h, "b", "tcp", &[8080]);
    let _tf = server(&h, "filler2", "tcp", &[8080]);
    let f2 = h.ip_on("filler2", "net2");
    expect(
        &h,
        "a",
        &[flow("tcp", &b2, 8080, true), flow("tcp", &f2, 8080, false)],
    );

    // Same for the rule's source.
    h.bpfnet_ok(&["rm", "-f", "a"]);
    h.create("filler1", &["net1"]);
    h.create("a", &["net1"]);
    let a2 = h.ip_on("a", "net1");
    assert_ne!(a2, a, "a should have a new address");
    expect(&h, "a", &[flow("tcp", &b2, 8080, true)]);
    expect(&h, "filler1", &[flow("tcp", &b2, 8080, false)]);
    assert_eq!(rules(&h).len(), 1, "{:#?}", rules(&h));
}

/// MAC that `sandbox` resolved its gateway to (after a ping to it).
fn gateway_mac(h: &TestHost, sandbox: &str, gw: &str) -> String {
    h.assert_ping(Some(sandbox), gw);
    let out = h.exec_ok(sandbox, &["ip", "-j", "neigh", "show", gw, "dev", "eth0"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0]["lladdr"]
        .as_str()
        .unwrap_or_else(|| panic!("no neighbour entry for {gw} in {sandbox}: {out}"))
        .to_string()
}

/// x (net1, no rule) forges packets claiming a's address (allowed to net2)
/// towards b: none arrive, while the same packets from a itself do; the
/// forgeries are counted as spoofed.
#[test]
fn spoofed_source_claiming_an_allowed_sandbox_is_not_let_through() {
    let (h, a, b) = two_nets("pol-spoof");
    h.create("x", &["net1"]);
    add(&h, &["--from", "a", "--to", "net:net2"]);
    let gw = h.gateway_of("net1");
    let (a_mac, x_mac) = (h.mac_of("a", "eth0"), h.mac_of("x", "eth0"));
    let (gw_a, gw_x) = (gateway_mac(&h, "a", &gw), gateway_mac(&h, "x", &gw));
    h.assert_ping(Some("a"), &b);
    let legit = format!("{a_mac},{gw_a},{a},{b},bntlegit");
    let forged_ip = format!("{x_mac},{gw_x},{a},{b},bntfakip");
    let forged_both = format!("{a_mac},{gw_x},{a},{b},bntfakab");
    let (ip0, mac0) = (h.drops("spoofed-source-ip"), h.drops("spoofed-source-mac"));
    let counts = h.count_received("b", "eth0", &["bntlegit", "bntfakip", "bntfakab"], || {
        let o = h.py_in(Some("a"), &["sendp", "eth0", "5", &legit]);
        assert!(o.success(), "{o}");
        let o = h.py_in(Some("x"), &["sendp", "eth0", "5", &forged_ip, &forged_both]);
        assert!(o.success(), "{o}");
    });
    assert_eq!(counts[0], 5, "a's own packets must arrive (sniffer sanity)");
    assert_eq!(counts[1], 0, "x's packets with a's source IP reached b");
    assert_eq!(counts[2], 0, "x's packets with a's MAC and IP reached b");
    let (ip1, mac1) = (h.drops("spoofed-source-ip"), h.drops("spoofed-source-mac"));
    assert!(
        ip1 + mac1 >= ip0 + mac0 + 10 && ip1 >= ip0 + 5,
        "spoofed-source-ip {ip0} → {ip1}, spoofed-source-mac {mac0} → {mac1}; expected +10 \
         (at least +5 by IP):\n{:#}",
        h.stats()
    );
}

/// Bad input: one `Error:` line naming the problem, exit ≠ 0, rules unchanged.
#[test]
fn bad_input_is_refused_with_one_line_and_changes_no_rule() {
    let (h, _a, _b) = two_nets("pol-bad");
    let id = add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "8080/tcp"],
    );
    let before = h.bpfnet_ok(&["policy", "ls", "--format", "json"]);
    let cases: &[(&[&str], &[&str], &str)] = &[
        (
            &["policy", "add", "--from", "ghost", "--to", "net:net2"],
            &["not found"],
            "ghost",
        ),
        (
            &["policy", "add", "--from", "a", "--to", "ghost"],
            &["not found"],
            "ghost",
        ),
        (
            &["policy", "add", "--from", "a", "--to", "net:nonet"],
            &["not found"],
            "nonet",
        ),
        (
            &["policy", "add", "--from", "net:nonet", "--to", "b"],
            &["not found"],
            "nonet",
        ),
        (
            &["policy", "add", "--from", "a", "--to", "b", "--port", "abc"],
            &["invalid port"],
            "abc",
        ),
        (
            &["policy", "add", "--from", "a", "--to", "b", "--port", "0"],
            &["invalid port"],
            "0",
        ),
        (
            &[
                "policy", "add", "--from", "a", "--to", "b", "--port", "70000",
            ],
            &["invalid port"],
            "70000",
        ),
        (
            &[
                "policy", "add", "--from", "a", "--to", "b", "--port", "90-80",
            ],
            &["invalid port"],
            "90-80",
        ),
        (
            &[
                "policy", "add", "--from", "a", "--to", "b", "--port", "80/sctp",
            ],
            &["invalid port"],
            "80/sctp",
        ),
        (
            &["policy", "add", "--from", "a", "--to", "b", "--port", "80-"],
            &["invalid port"],
            "80-",
        ),
        (
            &["policy", "add", "--from", "a", "--to", "a"],
            &["are the same"],
            "a",
        ),
        (
            &["policy", "add", "--from", "net:net1", "--to", "net:net1"],
            &["are the same"],
            "net:net1",
        ),
        (&["policy", "rm", "99"], &["rule 99 not found"], "99"),
        (&["policy", "rm", "abc"], &["invalid rule ID"], "abc"),
        (&["policy", "rm", "1.5"], &["invalid rule ID"], "1.5"),
    ];
    for (args, say, object) in cases {
        let o = h.bpfnet(args);
        assert_error(&o, say, object);
        let now = h.bpfnet_ok(&["policy", "ls", "--format", "json"]);
        assert_eq!(now, before, "rules changed after a refused command:\n{o}");
    }
    // The one good rule still works.
    assert_eq!(rules(&h).len(), 1);
    assert_eq!(rule(&h, &id)["Port"], "8080/tcp");
}

/// Allowed cross-network traffic is routed by the datapath itself: it flows
/// with the host's `ip_forward` off, and the TTL drops by exactly one hop
/// (sent with 64, seen as 63 at either end).
#[test]
fn allowed_traffic_is_routed_in_the_datapath_without_ip_forward() {
    let (h, a, b) = two_nets("pol-route");
    h.sh_ok("echo 0 > /proc/sys/net/ipv4/ip_forward");
    assert_eq!(h.sh_ok("cat /proc/sys/net/ipv4/ip_forward").trim(), "0");
    for sb in ["a", "b"] {
        let ttl = h.exec_ok(sb, &["cat", "/proc/sys/net/ipv4/ip_default_ttl"]);
        assert_eq!(ttl.trim(), "64", "{sb} sends with TTL 64");
    }
    let ub = server(&h, "b", "udp", &[5353]);
    add(&h, &["--from", "a", "--to", "net:net2", "--icmp"]);
    add(&h, &["--from", "a", "--to", "b", "--port", "5353/udp"]);
    // Reply to a's ping, routed b → a.
    h.assert_ping(Some("a"), &b);
    let o = ping1(&h, "a", &b);
    assert!(
        o.success() && o.stdout.contains("ttl=63"),
        "a's ping to b should come back with ttl=63:\n{o}"
    );
    // a's datagram, routed a → b.
    expect(&h, "a", &[flow("udp", &b, 5353, true)]);
    let seen = seen_from(&ub, &a);
    assert!(
        seen.len() == 1 && seen[0].contains(" ttl=63 "),
        "b should receive a's datagram with ttl=63: {:?}",
        ub.lines()
    );
    assert_eq!(h.sh_ok("cat /proc/sys/net/ipv4/ip_forward").trim(), "0");
    h.assert_no_ping(Some("b"), &a);
}

/// A deny for one port forgets a → b's conntrack entries, but a connection
/// on another, still allowed port goes on (its packets are judged anew and
/// allowed).
#[test]
fn a_deny_for_one_port_leaves_other_established_connections_alone() {
    let (h, a, b) = two_nets("pol-deny-other");
    let srv = server(&h, "b", "tcp", &[8080, 8081]);
    add(&h, &["--from", "a", "--to", "net:net2"]);
    let mut stream = flow::spawn(&h, "a", &["stream", &b, "8081", "0.1"]);
    stream.wait_contains("echo", 3, Duration::from_secs(5));
    add(
        &h,
        &[
            "--from", "a", "--to", "b", "--port", "8080/tcp", "--action", "deny",
        ],
    );
    thread::sleep(Duration::from_millis(300));
    let data = |srv: &bpfnet_tests::Bg| {
        srv.lines()
            .iter()
            .filter(|l| l.starts_with(&format!("data 8081 {a} ")))
            .count()
    };
    let n1 = data(&srv);
    let e1 = stream.lines().len();
    thread::sleep(Duration::from_millis(1200));
    let (n2, e2) = (data(&srv), stream.lines().len());
    assert!(
        n2 >= n1 + 5 && e2 >= e1 + 5,
        "the connection to 8081 stalled after a deny for 8080 (server lines {n1} → {n2}, \
         echoes {e1} → {e2}):\n{:#?}\n{:#}",
        stream.lines(),
        h.stats()["drops"]
    );
    expect(
        &h,
        "a",
        &[flow("tcp", &b, 8080, false), flow("tcp", &b, 8081, true)],
    );
}

/// Denied packets appear in `bpfnet monitor` with the addresses and the
/// rule that denied them.
#[test]
fn monitor_shows_denied_packets_with_the_rule_that_denied_them() {
    let (h, a, b) = two_nets("pol-monitor");
    add(&h, &["--from", "a", "--to", "net:net2"]);
    let deny = add(
        &h,
        &["--from", "a", "--to", "b", "--icmp", "--action", "deny"],
    );
    let mut mon = h.bpfnet_spawn(&["monitor"]);
    thread::sleep(Duration::from_millis(500));
    h.assert_no_ping(Some("a"), &b);
    let lines = mon.wait_contains("policy-denied", 2, Duration::from_secs(5));
    assert!(
        lines.iter().all(|l| l.contains(&a) && l.contains(&b)),
        "lines should name {a} and {b}: {lines:#?}"
    );
    let names_rule = |l: &str| {
        let w: Vec<&str> = l
            .split(|c: char| c.is_whitespace() || ",:()=#".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        w.windows(2).any(|p| p[0] == "rule" && p[1] == deny)
    };
    assert!(
        lines.iter().all(|l| names_rule(l)),
        "monitor lines should name the rule that denied them (rule {deny}): {lines:#?}"
    );
}

/// Network selectors follow membership: a sandbox created in net1 after the
/// rule gets its rights; a sandbox connected to net2 later becomes reachable,
/// and stops being reachable when it moves to net3 instead.
#[test]
fn network_rules_follow_membership_changes() {
    let (h, _a, b) = two_nets("pol-members");
    h.bpfnet_ok(&["network", "create", "net3"]);
    add(
        &h,
        &[
            "--from", "net:net1", "--to", "net:net2", "--port", "8080/tcp",
        ],
    );
    let _tb = server(&h, "b", "tcp", &[8080]);
    h.create("c", &["net1"]);
    expect(&h, "c", &[flow("tcp", &b, 8080, true)]);
    // e moves from net3 to net2 (connect, then disconnect from net3, so its
    // one route leads out of its net2 interface), and back.
    h.create("e", &["net3"]);
    let _te = server(&h, "e", "tcp", &[8080]);
    h.bpfnet_ok(&["network", "connect", "net2", "e"]);
    h.bpfnet_ok(&["network", "disconnect", "net3", "e"]);
    let e2 = h.ip_on("e", "net2");
    expect(&h, "a", &[flow("tcp", &e2, 8080, true)]);
    h.bpfnet_ok(&["network", "connect", "net3", "e"]);
    h.bpfnet_ok(&["network", "disconnect", "net2", "e"]);
    let e3 = h.ip_on("e", "net3");
    expect(&h, "a", &[flow("tcp", &e3, 8080, false)]);
    expect(&h, "c", &[flow("tcp", &b, 8080, true)]);
}

/// `--port` and `--icmp` together: either refused (rules unchanged), or both
/// honoured — never one of them silently dropped.
#[test]
fn port_and_icmp_together_are_not_half_applied() {
    let (h, _a, b) = two_nets("pol-port-icmp");
    let _tb = server(&h, "b", "tcp", &[8080]);
    let o = h.bpfnet(&[
        "policy", "add", "--from", "a", "--to", "net:net2", "--port", "8080/tcp", "--icmp",
    ]);
    if !o.success() {
        // (clap's usage error: several lines, naming the conflict.)
        assert!(o.stderr.contains("--icmp"), "{o}");
        assert!(rules(&h).is_empty(), "{:#?}", rules(&h));
        return;
    }
    expect(&h, "a", &[flow("tcp", &b, 8080, true)]);
    assert!(
        h.ping(Some("a"), &b),
        "`policy add --port 8080/tcp --icmp` succeeded but ping is not allowed \
         (--icmp silently ignored):\n{o}\n{}",
        h.bpfnet_ok(&["policy", "ls"])
    );
}

/// Rules and their effect survive `bpfnet datapath load` (programs replaced,
/// pinned maps kept or refilled).
#[test]
fn rules_survive_a_datapath_reload() {
    let (h, a, b) = two_nets("pol-reload");
    let _tb = server(&h, "b", "tcp", &[8080, 8081]);
    let _ta = server(&h, "a", "tcp", &[8080]);
    let id = add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "8080/tcp"],
    );
    expect(
        &h,
        "a",
        &[flow("tcp", &b, 8080, true), flow("tcp", &b, 8081, false)],
    );
    h.bpfnet_ok(&["datapath", "load"]);
    assert_eq!(rules(&h).len(), 1);
    assert_eq!(rule(&h, &id)["Port"], "8080/tcp");
    expect(
        &h,
        "a",
        &[flow("tcp", &b, 8080, true), flow("tcp", &b, 8081, false)],
    );
    expect(&h, "b", &[flow("tcp", &a, 8080, false)]);
}

/// Rule updates are atomic: while unrelated rules are added and removed,
/// every new flow a → b (each exchange a new UDP flow) is judged against a
/// whole rule set and gets through.
#[test]
fn rule_churn_does_not_disturb_allowed_new_flows() {
    let (h, _a, b) = two_nets("pol-churn");
    h.create("x", &["net1"]);
    let _ub = server(&h, "b", "udp", &[5353]);
    add(
        &h,
        &["--from", "a", "--to", "net:net2", "--port", "5353/udp"],
    );
    expect(&h, "a", &[flow("udp", &b, 5353, true)]);
    let mut burst = flow::spawn(&h, "a", &["udp-burst", &b, "5353", "300", "0.01"]);
    let t0 = std::time::Instant::now();
    let mut cycles = 0;
    while t0.elapsed() < Duration::from_millis(2500) {
        let id = add(&h, &["--from", "x", "--to", "net:net2", "--icmp"]);
        let deny = add(
            &h,
            &[
                "--from", "x", "--to", "b", "--port", "5353/udp", "--action", "deny",
            ],
        );
        h.bpfnet_ok(&["policy", "rm", &id, &deny]);
        cycles += 1;
    }
    let line = burst.wait_line("lost", Duration::from_secs(30));
    assert!(cycles >= 3, "only {cycles} add/rm cycles ran");
    assert_eq!(
        line, "lost 0 of 300",
        "allowed flows were lost while {cycles} unrelated add/rm cycles ran"
    );
}

/// Hits count new connections: an established connection whose conntrack
/// entry a deny (for another port) made the datapath forget, and which the
/// allow rule then lets on, is still one connection.
#[test]
fn a_connection_re_judged_after_a_deny_is_not_counted_again() {
    let (h, _a, b) = two_nets("pol-hits-rejudge");
    let _srv = server(&h, "b", "tcp", &[8080, 8081]);
    let allow = add(&h, &["--from", "a", "--to", "net:net2"]);
    let mut stream = flow::spawn(&h, "a", &["stream", &b, "8081", "0.1"]);
    stream.wait_contains("echo", 3, Duration::from_secs(5));
    assert_eq!(hits(&h, &allow), 1, "one connection so far");
    add(
        &h,
        &[
            "--from", "a", "--to", "b", "--port", "8080/tcp", "--action", "deny",
        ],
    );
    let n = stream.lines().len();
    stream.wait_contains("echo", n + 3, Duration::from_secs(5));
    assert_eq!(
        hits(&h, &allow),
        1,
        "still the one connection (the stream to 8081), counted once"
    );
}

/// A UDP datagram larger than the MTU crosses networks as IPv4 fragments;
/// only the first carries the ports. The rule for its port must let all of
/// them through, both ways (the echo comes back fragmented too), and the
/// bytes of a later fragment must never be read as ports.
#[test]
fn fragmented_udp_crosses_along_its_port_rule_both_ways() {
    const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print("ready", flush=True)
while True:
    d, peer = s.recvfrom(65536)
    print("len", len(d), flush=True)
    s.sendto(d, peer)
"#;
    const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"x" * 4000, (sys.argv[1], 9999))
d, _ = s.recvfrom(65536)
print("got", len(d))
"#;
    let (h, _a, b) = two_nets("pol-frag");
    add(&h, &["--from", "a", "--to", "b", "--port", "9999/udp"]);
    let mut srv = h.spawn_in("b", &[bpfnet_tests::PYTHON, "-c", SERVER, &b]);
    srv.wait_line("ready", Duration::from_secs(5));
    let o = h.exec_in("a", &[bpfnet_tests::PYTHON, "-c", CLIENT, &b]);
    assert!(
        o.success() && o.stdout.contains("got 4000"),
        "a 4000-byte datagram (3 fragments) and its echo must cross:\n{o}\nserver: {:?}\n{:#}",
        srv.lines(),
        h.stats()
    );
    assert!(
        srv.lines().iter().any(|l| l == "len 4000"),
        "{:?}",
        srv.lines()
    );
}
