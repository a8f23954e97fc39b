//! IPv6 dual stack: `network create --ipv6`, addresses and routes in the
//! sandbox, neighbour discovery answered by the datapath, forwarding,
//! source checks and isolation — and IPv4-only networks closed to IPv6.

use std::time::Duration;

use bpfnet_tests::{jstr, TestHost};

const V4: &str = "172.30.0.0/24";
const V6: &str = "fd42:30::/64";

fn dual_stack(h: &TestHost, name: &str, v4: &str, v6: &str) {
    h.bpfnet_ok(&[
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, name,
    ]);
}

fn ip6_on(h: &TestHost, sandbox: &str, net: &str) -> String {
    h.ip6_on(sandbox, net)
}

/// Docker's fields: the IPAM config of both families, each endpoint's
/// IPv6Address, and the sandbox's GlobalIPv6Address/PrefixLen/IPv6Gateway.
#[test]
fn dual_stack_network_shows_both_families_as_docker_does() {
    let h = TestHost::new("v6-inspect");
    dual_stack(&h, "ds", V4, V6);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "a",
        "--network",
        "ds",
        "--ip6",
        "fd42:30::99",
    ]);
    h.create("b", &["ds"]);
    let n = h.network_inspect("ds");
    assert_eq!(n["EnableIPv6"], true, "{n:#}");
    assert_eq!(jstr(&n, "/IPAM/Config/0/Subnet"), V4);
    assert_eq!(jstr(&n, "/IPAM/Config/0/Gateway"), "172.30.0.1");
    assert_eq!(jstr(&n, "/IPAM/Config/1/Subnet"), V6);
    assert_eq!(jstr(&n, "/IPAM/Config/1/Gateway"), "fd42:30::1");
    let a = h.inspect("a");
    let net = &a["NetworkSettings"]["Networks"]["ds"];
    assert_eq!(net["GlobalIPv6Address"], "fd42:30::99", "{a:#}");
    assert_eq!(net["GlobalIPv6PrefixLen"], 64);
    assert_eq!(net["IPv6Gateway"], "fd42:30::1");
    let id = jstr(&a, "/Id").to_string();
    assert_eq!(
        n["Containers"][&id]["IPv6Address"], "fd42:30::99/64",
        "{n:#}"
    );
    assert_eq!(ip6_on(&h, "b", "ds"), "fd42:30::2");
    // The sandbox's kernel has them: the address, and the default route.
    let addrs = h.exec_ok("a", &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd42:30::99/64"), "{addrs}");
    let routes = h.exec_ok("a", &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fd42:30::1 dev eth0"), "{routes}");
    // --ipv6 alone: the next /64 of bpfnet's ULA pool, gateway ::1.
    h.bpfnet_ok(&["network", "create", "--ipv6", "auto"]);
    let n = h.network_inspect("auto");
    assert_eq!(jstr(&n, "/IPAM/Config/1/Subnet"), "fd62:706e:6574::/64");
    assert_eq!(jstr(&n, "/IPAM/Config/1/Gateway"), "fd62:706e:6574::1");
    // IPv4-only networks stay as they were.
    h.bpfnet_ok(&["network", "create", "v4only"]);
    let n = h.network_inspect("v4only");
    assert_eq!(n["EnableIPv6"], false);
    assert!(n["IPAM"]["Config"].get(1).is_none(), "{n:#}");
}

/// A dual-stack pair: ping -6 both ways, to the gateway, from the host, and
/// 10 MB over TCP intact — with no kernel bridge.
#[test]
fn dual_stack_pair_pings_and_transfers_over_ipv6() {
    let h = TestHost::new("v6-pair");
    dual_stack(&h, "ds", V4, V6);
    h.create("a", &["ds"]);
    h.create("b", &["ds"]);
    let (a, b) = (ip6_on(&h, "a", "ds"), ip6_on(&h, "b", "ds"));
    h.assert_ping(Some("a"), &b);
    h.assert_ping(Some("b"), &a);
    h.assert_ping(Some("a"), "fd42:30::1");
    h.assert_ping(None, &a);
    // IPv4 still works next to it.
    h.assert_ping(Some("a"), &h.ip_on("b", "ds"));
    let mut sink = h.py_spawn(Some("b"), &["sink", &b, "5201"]);
    sink.wait_line("ready", Duration::from_secs(5));
    let total = (10u64 << 20).to_string();
    let sent = h.py_in(Some("a"), &["source", &b, "5201", &total, "7"]);
    assert!(sent.success(), "sender failed:\n{sent}");
    let got = sink.finish(Duration::from_secs(30));
    assert!(sent.last_line().starts_with(&format!("{total} ")), "{sent}");
    assert_eq!(got.last_line(), sent.last_line(), "{got}\n{sent}");
    h.assert_no_kernel_bridge();
}

/// Neighbour solicitations are answered by the datapath: the asker gets the
/// right MAC (and a checksum its kernel accepts — ping works), a third
/// member of the network sees none of them, and an unknown target gets no
/// answer at all.
#[test]
fn neighbour_solicitations_are_answered_in_ebpf_and_not_flooded() {
    let h = TestHost::new("v6-nd");
    dual_stack(&h, "ds", V4, V6);
    h.create("a", &["ds"]);
    h.create("b", &["ds"]);
    h.create("c", &["ds"]);
    let (a, b) = (ip6_on(&h, "a", "ds"), ip6_on(&h, "b", "ds"));
    let mut sniffer = h.py_spawn(Some("c"), &["ns-count", "eth0"]);
    sniffer.wait_line("ready", Duration::from_secs(10));
    h.assert_ping(Some("a"), &b);
    let amac = h.mac_of("a", "eth0");
    let o = h.py_in(
        Some("a"),
        &[
            "nd-who-has",
            "eth0",
            &amac,
            &a,
            &b,
            "fd42:30::1",
            "fd42:30::99",
        ],
    );
    let bmac = h.mac_of("b", "eth0");
    assert!(o.success(), "{o}");
    let lines = o.stdout.lines().collect::<Vec<_>>();
    assert_eq!(lines.len(), 3, "{o}");
    assert_eq!(
        lines[0],
        format!("answer {b} {bmac} SO src={b} checksum-ok"),
        "{o}"
    );
    assert!(
        lines[1].starts_with("answer fd42:30::1 ")
            && lines[1].ends_with(" RSO src=fd42:30::1 checksum-ok"),
        "{o}"
    );
    assert_eq!(lines[2], "none fd42:30::99", "{o}");
    std::thread::sleep(Duration::from_millis(300));
    let out = sniffer.stop();
    assert!(
        out.stdout.contains("count ns 0"),
        "c saw solicitations meant for others:\n{out}"
    );
    assert!(h.drops("nd-unknown-target") >= 1);
}

/// A spoofed IPv6 source and a forged neighbour advertisement are dropped
/// and counted; the victim receives nothing.
#[test]
fn spoofed_ipv6_source_and_forged_na_are_dropped_and_counted() {
    let h = TestHost::new("v6-spoof");
    dual_stack(&h, "ds", V4, V6);
    h.create("a", &["ds"]);
    h.create("b", &["ds"]);
    h.create("c", &["ds"]);
    let (a, b, c) = (
        ip6_on(&h, "a", "ds"),
        ip6_on(&h, "b", "ds"),
        ip6_on(&h, "c", "ds"),
    );
    let (amac, bmac) = (h.mac_of("a", "eth0"), h.mac_of("b", "eth0"));
    let spoofed_before = h.drops("spoofed-source-ip");
    let na_before = h.drops("nd-not-solicitation");
    let mut monitor = h.bpfnet_spawn(&["monitor"]);
    std::thread::sleep(Duration::from_millis(500));
    let got = h.count_received("b", "eth0", &["SPOOF6", "HONEST6"], || {
        let spec = |src: &str, m: &str| format!("{amac},{bmac},{src},{b},{m}");
        let o = h.py_in(
            Some("a"),
            &[
                "sendp6",
                "eth0",
                "3",
                &spec(&c, "SPOOF6"),
                &spec(&a, "HONEST6"),
            ],
        );
        assert!(o.success(), "{o}");
    });
    assert_eq!(
        got,
        vec![0, 3],
        "spoofed frames must not arrive, honest ones must"
    );
    assert_eq!(h.drops("spoofed-source-ip"), spoofed_before + 3);
    // `monitor` shows them (next header and MACs; IPv6 addresses are not
    // in drop events yet).
    let line =
        format!("drop (spoofed-source-ip) from a/eth0 (ds): IPv6 next header 58, {amac} -> {bmac}");
    let seen = monitor.wait_contains(&line, 3, Duration::from_secs(10));
    assert_eq!(seen.len(), 3, "{seen:?}");
    drop(monitor);
    // a claims c's address towards b.
    let o = h.py_in(
        Some("a"),
        &["nd-forge", "eth0", &amac, &a, "na", &c, &bmac, &b],
    );
    assert!(o.success(), "{o}");
    assert_eq!(h.drops("nd-not-solicitation"), na_before + 3);
    let neigh = h.exec_ok("b", &["ip", "-6", "neigh", "show", &c]);
    assert!(!neigh.contains(&amac), "b learnt the forged NA: {neigh}");
    // Router solicitations are dropped deliberately, with their reason.
    let rs_before = h.drops("router-solicitation");
    let ll = h.exec_ok(
        "a",
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ],
    );
    let ll = ll
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let o = h.py_in(
        Some("a"),
        &[
            "nd-forge",
            "eth0",
            &amac,
            &ll,
            "rs",
            "::",
            "33:33:00:00:00:02",
            "ff02::2",
        ],
    );
    assert!(o.success(), "{o}");
    assert_eq!(h.drops("router-solicitation"), rs_before + 3);
    // The real neighbour still answers.
    h.assert_ping(Some("b"), &c);
}

/// Two dual-stack networks are isolated over IPv6 — directly and through
/// the gateways, with the host forwarding IPv6 — while each reaches its
/// own and the other's gateway address (the host's).
#[test]
fn two_ipv6_networks_are_isolated_also_with_forwarding_on() {
    let h = TestHost::new("v6-isolation");
    dual_stack(&h, "n1", "172.31.1.0/24", "fd42:1::/64");
    dual_stack(&h, "n2", "172.31.2.0/24", "fd42:2::/64");
    h.create("a", &["n1"]);
    h.create("b", &["n2"]);
    let (a, b) = (ip6_on(&h, "a", "n1"), ip6_on(&h, "b", "n2"));
    h.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    h.assert_ping(Some("a"), "fd42:1::1");
    h.assert_no_ping(Some("a"), &b);
    h.assert_no_ping(Some("b"), &a);
    let cross = h.drops("cross-network");
    assert!(cross >= 2, "cross-network drops: {cross}");
    // TCP through the gateway MAC to the other network: refused.
    let mut server = h.py_spawn(Some("b"), &["tcp-echo-server", &b, "7070"]);
    server.wait_line("ready", Duration::from_secs(5));
    let o = h.py_in(Some("a"), &["tcp-echo-try", &b, "7070", "x", "1"]);
    assert!(o.stdout.starts_with("failed"), "{o}");
    h.assert_no_kernel_bridge();
}

/// `icc=false` holds for IPv6 too: members reach each other only along
/// links (conntrack lets the replies back), and the gateway.
#[test]
fn icc_false_and_link_over_ipv6() {
    let h = TestHost::new("v6-icc");
    h.bpfnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        V4,
        "--subnet",
        V6,
        "-o",
        "icc=false",
        "ds",
    ]);
    h.create("a", &["ds"]);
    h.bpfnet_ok(&["create", "--name", "b", "--network", "ds", "--link", "a"]);
    h.create("c", &["ds"]);
    let a = ip6_on(&h, "a", "ds");
    h.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let before = h.drops("icc-disabled");
    h.assert_ping(Some("b"), &a);
    h.assert_no_ping(Some("c"), &a);
    h.assert_ping(Some("c"), "fd42:30::1");
    let mut server = h.py_spawn(Some("a"), &["tcp-echo-server", &a, "7070"]);
    server.wait_line("ready", Duration::from_secs(5));
    let o = h.py_in(Some("b"), &["tcp-echo", &a, "7070", "linked"]);
    assert!(o.success() && o.stdout == "linked\n", "{o}");
    let o = h.py_in(Some("c"), &["tcp-echo-try", &a, "7070", "x", "1"]);
    assert!(o.stdout.starts_with("failed"), "{o}");
    assert!(h.drops("icc-disabled") > before);
}

/// A policy rule with a port opens exactly that port over IPv6, one way,
/// with the replies let back by conntrack; the rest stays closed.
#[test]
fn policy_with_a_port_applies_to_ipv6() {
    let h = TestHost::new("v6-policy");
    dual_stack(&h, "n1", "172.31.1.0/24", "fd42:1::/64");
    dual_stack(&h, "n2", "172.31.2.0/24", "fd42:2::/64");
    h.create("a", &["n1"]);
    h.create("b", &["n2"]);
    let (a, b) = (ip6_on(&h, "a", "n1"), ip6_on(&h, "b", "n2"));
    h.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    h.bpfnet_ok(&[
        "policy", "add", "--from", "a", "--to", "net:n2", "--port", "8080/tcp",
    ]);
    let mut s1 = h.py_spawn(Some("b"), &["tcp-echo-server", &b, "8080"]);
    s1.wait_line("ready", Duration::from_secs(5));
    let mut s2 = h.py_spawn(Some("b"), &["tcp-echo-server", &b, "8081"]);
    s2.wait_line("ready", Duration::from_secs(5));
    let mut s3 = h.py_spawn(Some("a"), &["tcp-echo-server", &a, "8080"]);
    s3.wait_line("ready", Duration::from_secs(5));
    let o = h.py_in(Some("a"), &["tcp-echo", &b, "8080", "allowed"]);
    assert!(o.success() && o.stdout == "allowed\n", "{o}");
    s1.wait_line(&format!("served {a}"), Duration::from_secs(5));
    let o = h.py_in(Some("a"), &["tcp-echo-try", &b, "8081", "x", "1"]);
    assert!(o.stdout.starts_with("failed"), "{o}");
    let o = h.py_in(Some("b"), &["tcp-echo-try", &a, "8080", "x", "1"]);
    assert!(o.stdout.starts_with("failed"), "{o}");
    h.assert_no_ping(Some("a"), &b);
    let p = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    assert!(p[0]["Hits"].as_u64().unwrap_or(0) >= 1, "{p:#}");
}

/// An IPv4-only network stays closed over IPv6, even when root inside the
/// sandboxes turns IPv6 back on: no link-local unicast, no multicast, no
/// neighbour discovery reaches another sandbox or the host.
#[test]
fn ipv4_only_network_cannot_be_crossed_over_ipv6() {
    let h = TestHost::new("v6-closed");
    h.bpfnet_ok(&["network", "create", "v4net"]);
    dual_stack(&h, "ds", V4, V6);
    h.create("x", &["v4net"]);
    h.create("y", &["v4net"]);
    h.create("z", &["ds"]);
    // Docker's way: no IPv6 inside; root turns it back on.
    let off = h.exec_ok("x", &["sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"]);
    assert_eq!(off.trim(), "1");
    for s in ["x", "y"] {
        h.exec_ok(s, &["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
    }
    let ll = |s: &str| {
        let mut found = String::new();
        for _ in 0..50 {
            let o = h.exec_ok(
                s,
                &[
                    "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
                ],
            );
            if let Some(w) = o.split_whitespace().nth(3) {
                found = w.split('/').next().unwrap().to_string();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!found.is_empty(), "{s} has no link-local address");
        found
    };
    let (xll, yll) = (ll("x"), ll("y"));
    let before = h.drops("ipv6-unsupported");
    h.assert_no_ping(Some("x"), &format!("{yll}%eth0"));
    h.assert_no_ping(Some("x"), &ip6_on(&h, "z", "ds"));
    // Crafted frames: link-local and multicast, to y's MAC and the group.
    let (xmac, ymac) = (h.mac_of("x", "eth0"), h.mac_of("y", "eth0"));
    let got = h.count_received("y", "eth0", &["LL6", "MC6"], || {
        let o = h.py_in(
            Some("x"),
            &[
                "sendp6",
                "eth0",
                "3",
                &format!("{xmac},{ymac},{xll},{yll},LL6"),
                &format!("{xmac},33:33:00:00:00:01,{xll},ff02::1,MC6"),
            ],
        );
        assert!(o.success(), "{o}");
    });
    assert_eq!(got, vec![0, 0], "IPv6 crossed an IPv4-only network");
    assert!(
        h.drops("ipv6-unsupported") >= before + 6,
        "drops: {}",
        h.drops("ipv6-unsupported")
    );
    // The host side of an IPv4-only endpoint has no IPv6 at all.
    let host_v6 = h.sh_ok("ip -6 -o addr show | grep ' bn' || true");
    assert!(
        host_v6.trim().is_empty(),
        "host-side veths with IPv6:\n{host_v6}"
    );
}

/// Names over IPv6: the responder answers AAAA for names and aliases and
/// PTR for IPv6 addresses; ping -6 and TCP by name; `--link` puts both
/// families in the hosts file.
#[test]
fn names_resolve_to_ipv6_aaaa_and_ptr() {
    let h = TestHost::new("v6-names");
    dual_stack(&h, "ds", V4, V6);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "alpha",
        "--network",
        "ds",
        "--network-alias",
        "web",
    ]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "beta",
        "--network",
        "ds",
        "--link",
        "alpha:lnk",
    ]);
    let a = ip6_on(&h, "alpha", "ds");
    let dig = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["dig", "+short", "+tries=1", "+timeout=2"];
        v.extend_from_slice(args);
        h.exec_ok("beta", &v).lines().map(str::to_string).collect()
    };
    assert_eq!(dig(&["AAAA", "alpha"]), std::slice::from_ref(&a));
    assert_eq!(dig(&["AAAA", "web"]), std::slice::from_ref(&a));
    assert_eq!(dig(&["A", "alpha"]), [h.ip_on("alpha", "ds")]);
    assert_eq!(dig(&["-x", &a]), ["alpha."]);
    let hosts = std::fs::read_to_string(format!(
        "/proc/{}/root/etc/netns/beta/hosts",
        h.holder_pid()
    ))
    .unwrap();
    assert!(hosts.contains(&format!("{a}\tlnk alpha\n")), "{hosts}");
    assert!(
        hosts.contains(&format!("{}\tbeta\n", ip6_on(&h, "beta", "ds"))),
        "{hosts}"
    );
    let o = h.exec_in("beta", &["ping", "-6", "-n", "-c", "1", "-W", "2", "web"]);
    assert!(o.success(), "{o}");
    let mut server = h.py_spawn(Some("alpha"), &["tcp-echo-server", "::", "7070"]);
    server.wait_line("ready", Duration::from_secs(5));
    let o = h.py_in(Some("beta"), &["tcp-echo6", "web", "7070", "hello-v6"]);
    assert!(o.success() && o.stdout == format!("{a}\nhello-v6\n"), "{o}");
}

/// An internal dual-stack network: members reach each other and their
/// gateway address over IPv6 (ND for it answered), nothing beyond — not
/// another network's gateway, not a host address elsewhere.
#[test]
fn internal_network_confines_ipv6() {
    let h = TestHost::new("v6-internal");
    h.bpfnet_ok(&[
        "network",
        "create",
        "--internal",
        "--ipv6",
        "--subnet",
        V4,
        "--subnet",
        V6,
        "int",
    ]);
    // Internal as well: a network that reaches out turns IPv6 forwarding
    // on, and the host then joins ff02::2 on its veths; its MLD reports
    // into `int` are dropped as internal-network too and would blur the
    // count below.
    h.bpfnet_ok(&[
        "network",
        "create",
        "--internal",
        "--ipv6",
        "--subnet",
        "172.31.9.0/24",
        "--subnet",
        "fd42:9::/64",
        "other",
    ]);
    h.create("a", &["int"]);
    h.create("b", &["int"]);
    h.assert_ping(Some("a"), &ip6_on(&h, "b", "int"));
    h.assert_ping(Some("a"), "fd42:30::1");
    // No default route on an internal network (Docker's way): through the
    // gateway MAC, crafted, to the other network's gateway.
    let before = h.drops("internal-network");
    let amac = h.mac_of("a", "eth0");
    let gwmac = h.exec_ok("a", &["ip", "-6", "neigh", "show", "fd42:30::1"]);
    let gwmac = gwmac
        .split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .to_string();
    let a = ip6_on(&h, "a", "int");
    let o = h.py_in(
        Some("a"),
        &[
            "sendp6",
            "eth0",
            "2",
            &format!("{amac},{gwmac},{a},fd42:9::1,OUT6"),
        ],
    );
    assert!(o.success(), "{o}");
    assert_eq!(h.drops("internal-network"), before + 2);
}

/// `bpfnet gc` removes IPv6 datapath entries no live endpoint owns (a
/// crash outside bpfnet's journal, a hand-made entry) and keeps the live
/// ones.
#[test]
fn gc_sweeps_ipv6_entries_of_dead_endpoints() {
    let h = TestHost::new("v6-gc");
    dual_stack(&h, "ds", V4, V6);
    h.create("a", &["ds"]);
    let dir = format!("{}/maps", TestHost::pin_dir());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>();
    // A neighbour fd42:30::99 on net 2, an endpoint on ifindex 999.
    let mut key = vec![2, 0, 0, 0];
    key.extend_from_slice(
        &"fd42:30::99"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    let mut args = vec!["bpftool", "map", "update", "pinned"];
    let path6 = format!("{dir}/NEIGHBOURS6");
    args.push(&path6);
    args.push("key");
    args.push("hex");
    let k = hex(&key);
    args.extend(k.iter().map(String::as_str));
    args.extend([
        "value", "hex", "02", "42", "00", "00", "00", "99", "00", "00",
    ]);
    h.ok(&args);
    let pathe = format!("{dir}/ENDPOINTS6");
    let v = hex(&[0x11; 32]);
    let mut args = vec![
        "bpftool", "map", "update", "pinned", &pathe, "key", "hex", "e7", "03", "00", "00",
        "value", "hex",
    ];
    args.extend(v.iter().map(String::as_str));
    h.ok(&args);
    assert_eq!(h.map_dump("NEIGHBOURS6").len(), 3);
    assert_eq!(h.map_dump("ENDPOINTS6").len(), 2);
    let out = h.bpfnet_ok(&["gc"]);
    assert!(
        out.contains("2 IPv6 endpoint and neighbour entries"),
        "{out}"
    );
    assert_eq!(
        h.map_dump("NEIGHBOURS6").len(),
        2,
        "a's address and link-local stay"
    );
    assert_eq!(h.map_dump("ENDPOINTS6").len(), 1);
    h.assert_ping(None, &ip6_on(&h, "a", "ds"));
}

/// The IPv6 default route follows the IPv4 one: on the first dual-stack
/// network a sandbox joins, and on the next one when that one is left.
#[test]
fn ipv6_default_route_moves_with_the_ipv4_one() {
    let h = TestHost::new("v6-default");
    dual_stack(&h, "n1", "172.31.1.0/24", "fd42:1::/64");
    dual_stack(&h, "n2", "172.31.2.0/24", "fd42:2::/64");
    h.create("a", &["n1", "n2"]);
    let route = || h.exec_ok("a", &["ip", "-6", "route", "show", "default"]);
    assert!(route().contains("via fd42:1::1 dev eth0"), "{}", route());
    h.bpfnet_ok(&["network", "disconnect", "n1", "a"]);
    assert!(route().contains("via fd42:2::1 dev eth1"), "{}", route());
    h.assert_ping(Some("a"), "fd42:2::1");
}
