//! Reaching the world (issue 15): outbound masquerade, published ports
//! (`-p`, `-P`) from outside, from the host and from other sandboxes,
//! `--internal` cut off, and removal that leaves nothing.
//!
//! "Outside" is a namespace this test makes, joined to the throw-away host
//! by a veth (198.51.100.0/24) with a server address of its own
//! (203.0.113.10) and no route back to any sandbox subnet: a connection
//! that works and shows the host's 198.51.100.1 as its peer proves the
//! masquerade. The same over IPv6 (issue 18): the veth also carries
//! 2001:db8:100::/64, the server 2001:db8:200::10.

use std::time::Duration;

use bpfnet_tests::{Bg, TestHost, PYTHON};

const HOST_IP: &str = "198.51.100.1";
const OUTSIDE_IP: &str = "198.51.100.2";
const SERVER: &str = "203.0.113.10";
const HOST_IP6: &str = "2001:db8:100::1";
/// A second host address (deprecated: never the source the host picks), to
/// tell a port bound to one address apart.
const HOST_IP6_B: &str = "2001:db8:100::3";
const OUTSIDE_IP6: &str = "2001:db8:100::2";
const SERVER6: &str = "2001:db8:200::10";

fn host(name: &str) -> TestHost {
    let h = TestHost::new(name);
    h.sh_ok("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    outside(&h);
    h
}

/// `host` with IPv6 on the way out as well.
fn host6(name: &str) -> TestHost {
    let h = TestHost::new(name);
    outside(&h);
    h.sh_ok(&format!(
        "set -e; ip addr add {HOST_IP6}/64 dev up0 nodad; ip addr add {HOST_IP6_B}/64 dev up0 nodad preferred_lft 0; \
         ip -n outside addr add {OUTSIDE_IP6}/64 dev up1 nodad; \
         ip -n outside addr add {SERVER6}/128 dev lo; \
         ip -6 route add 2001:db8:200::/64 via {OUTSIDE_IP6}"
    ));
    h
}

/// The outside namespace, and bpfnet loaded. Forwarding starts off (a new
/// namespace inherits the machine's `ip_forward`).
fn outside(h: &TestHost) {
    h.sh_ok(&format!(
        "set -e; sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0; ip link set lo up; ip netns add outside; ip -n outside link set lo up; \
         ip link add up0 type veth peer name up1 netns outside; \
         ip addr add {HOST_IP}/24 dev up0; ip link set up0 up; \
         ip -n outside addr add {OUTSIDE_IP}/24 dev up1; ip -n outside link set up1 up; \
         ip -n outside addr add {SERVER}/32 dev lo; \
         ip route add 203.0.113.0/24 via {OUTSIDE_IP}"
    ));
    h.bpfnet_ok(&["datapath", "load"]);
}

/// A server on `ip` (a UDP server bound to the wildcard would answer
/// from whichever address routing picks, not the one asked).
fn serve(h: &TestHost, ns: &str, kind: &str, ip: &str, port: &str) -> Bg {
    let py = h.py();
    let mut s = h.spawn_in(ns, &[PYTHON, &py, kind, ip, port]);
    s.wait_line("ready", Duration::from_secs(10));
    s
}

/// One TCP exchange from `from` (None: the host); the echo or `failed …`.
fn tcp(h: &TestHost, from: Option<&str>, ip: &str, port: &str) -> String {
    h.py_in(from, &["tcp-echo-try", ip, port, "hello", "2"])
        .stdout
        .trim()
        .to_string()
}

fn udp(h: &TestHost, from: Option<&str>, ip: &str, port: &str) -> String {
    h.py_in(from, &["udp-echo", ip, port, "hello", "2"])
        .stdout
        .trim()
        .to_string()
}

/// The peer address the server printed for its last client.
fn last_peer(server: &mut Bg, n: usize) -> String {
    let lines = server.wait_contains("served", n, Duration::from_secs(5));
    lines
        .last()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Both tables, `ip bpfnet` then `ip6 bpfnet`.
fn nft_table(h: &TestHost) -> String {
    h.run(&["nft", "list", "table", "ip", "bpfnet"]).stdout
        + &h.run(&["nft", "list", "table", "ip6", "bpfnet"]).stdout
}

fn ip6_table(h: &TestHost) -> String {
    h.run(&["nft", "list", "table", "ip6", "bpfnet"]).stdout
}

fn forwarding6(h: &TestHost) -> String {
    h.sh_ok("sysctl -n net.ipv6.conf.all.forwarding")
        .trim()
        .to_string()
}

#[test]
fn outbound_is_masqueraded_and_internal_is_cut_off() {
    let h = host("nat-out");
    assert_eq!(
        h.sh_ok("sysctl -n net.ipv4.ip_forward").trim(),
        "1",
        "load turns forwarding on"
    );
    h.bpfnet_ok(&["network", "create", "--subnet", "10.91.0.0/24", "user"]);
    h.bpfnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.92.0.0/24",
        "cut",
    ]);
    h.bpfnet_ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "routed",
    ]);
    h.create("b1", &["bridge"]);
    h.create("u1", &["user"]);
    h.create("i1", &["cut"]);
    h.create("r1", &["routed"]);
    let mut tcp_server = serve(&h, "outside", "tcp-echo-server", SERVER, "7000");
    let mut udp_server = serve(&h, "outside", "udp-echo-server", SERVER, "7001");
    let mut served = 0;
    for sb in ["b1", "u1"] {
        assert_eq!(
            tcp(&h, Some(sb), SERVER, "7000"),
            "hello",
            "TCP out of {sb}"
        );
        served += 1;
        assert_eq!(
            last_peer(&mut tcp_server, served),
            HOST_IP,
            "{sb} masqueraded (TCP)"
        );
        assert_eq!(
            udp(&h, Some(sb), SERVER, "7001"),
            "hello",
            "UDP out of {sb}"
        );
        assert_eq!(
            last_peer(&mut udp_server, served),
            HOST_IP,
            "{sb} masqueraded (UDP)"
        );
    }
    // Internal: no default route, nothing forwarded, even when the sandbox
    // sends to its gateway's MAC by hand.
    let routes = h.exec_ok("i1", &["ip", "-4", "route", "show"]);
    assert!(
        !routes.contains("default"),
        "internal sandbox has a default route:\n{routes}"
    );
    assert!(tcp(&h, Some("i1"), SERVER, "7000").starts_with("failed"));
    let gw = h.gateway_of("cut");
    h.exec_ok("i1", &["ip", "route", "add", "default", "via", &gw]);
    assert!(
        tcp(&h, Some("i1"), SERVER, "7000").starts_with("failed"),
        "internal reached out"
    );
    assert!(
        udp(&h, Some("i1"), SERVER, "7001").starts_with("failed"),
        "internal reached out (UDP)"
    );
    // Masquerade off: the sandbox's own address arrives (given a route back).
    h.exec_ok(
        "outside",
        &["ip", "route", "add", "10.93.0.0/24", "via", HOST_IP],
    );
    assert_eq!(tcp(&h, Some("r1"), SERVER, "7000"), "hello");
    served += 1;
    assert_eq!(last_peer(&mut tcp_server, served), h.ip_on("r1", "routed"));
    // Positive control after the internal attempts: still only two
    // masqueraded clients and one routed, none from 10.92.
    let all = tcp_server.stop().stdout;
    assert!(
        !all.contains("10.92."),
        "internal sandbox reached the server:\n{all}"
    );
    let rules = nft_table(&h);
    assert!(rules.contains("masquerade"), "{rules}");
    assert!(
        !rules.contains("10.92.0.0"),
        "internal network in the NAT table:\n{rules}"
    );
    assert!(
        !rules.contains("ip saddr 10.93.0.0/24 oifname != \"bn*\" masquerade"),
        "{rules}"
    );

    // network rm takes the network's rules out, nothing else.
    assert!(rules.contains("10.93.0.0/24"), "{rules}");
    h.bpfnet_ok(&["rm", "r1"]);
    h.bpfnet_ok(&["network", "rm", "routed"]);
    let after = nft_table(&h);
    assert!(!after.contains("10.93.0.0"), "{after}");
    assert!(after.contains("10.91.0.0/24"), "{after}");

    // Unload removes the table and puts forwarding back.
    h.bpfnet_ok(&["datapath", "unload"]);
    let tables = h.ok(&["nft", "list", "tables"]);
    assert!(
        !tables.contains("bpfnet"),
        "table left after unload:\n{tables}"
    );
    assert_eq!(h.sh_ok("sysctl -n net.ipv4.ip_forward").trim(), "0");
}

#[test]
fn published_ports_reach_the_sandbox() {
    let h = host("nat-ports");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.94.0.0/24", "other"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "web",
        "--network",
        "bridge",
        "-p",
        "8080:80",
        "-p",
        "8081:81/udp",
        "-p",
        "127.0.0.1:8082:80",
        "-p",
        "80",
        "--expose",
        "90",
        "--expose",
        "91/udp",
        "-P",
    ]);
    h.create("client", &["bridge"]);
    h.create("far", &["other"]);
    let mut web = serve(&h, "web", "tcp-echo-server", "0.0.0.0", "80");
    let mut web_udp = serve(&h, "web", "udp-echo-server", "0.0.0.0", "81");
    let web_ip = h.ip_on("web", "bridge");

    // `port`: Docker's lines, sorted by container port.
    let ports = h.bpfnet_ok(&["port", "web"]);
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 6, "{ports}");
    assert!(lines.contains(&"80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(lines.contains(&"80/tcp -> 127.0.0.1:8082"), "{ports}");
    assert!(lines.contains(&"81/udp -> 0.0.0.0:8081"), "{ports}");
    let random = |p: &str| -> String {
        lines
            .iter()
            .find(|l| l.starts_with(p) && !l.ends_with(":8080") && !l.ends_with(":8082"))
            .unwrap_or_else(|| panic!("no {p} line:\n{ports}"))
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let random80 = random("80/tcp");
    let random90 = random("90/tcp");
    random("91/udp");
    assert_eq!(
        h.bpfnet_ok(&["port", "web", "81/udp"]).trim(),
        "0.0.0.0:8081"
    );
    let o = h.bpfnet_fail(&["port", "web", "82"]);
    assert_eq!(
        o.stderr.trim(),
        "Error: no public port 82/tcp published for sandbox \"web\""
    );

    // inspect: Docker's shapes.
    let v = h.inspect("web");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"],
        serde_json::json!([
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "127.0.0.1", "HostPort": "8082"},
            {"HostIp": "0.0.0.0", "HostPort": random80},
        ])
    );
    assert_eq!(
        v["HostConfig"]["PortBindings"]["80/tcp"][2],
        serde_json::json!({"HostIp": "", "HostPort": ""})
    );
    assert_eq!(
        v["HostConfig"]["PortBindings"]["81/udp"][0],
        serde_json::json!({"HostIp": "", "HostPort": "8081"})
    );
    assert!(v["Config"]["ExposedPorts"]["91/udp"].is_object(), "{v:#}");

    // From outside, the client's address preserved.
    let mut n = 0;
    for port in ["8080", random80.as_str()] {
        assert_eq!(
            tcp(&h, Some("outside"), HOST_IP, port),
            "hello",
            "outside -> {port}"
        );
        n += 1;
        assert_eq!(last_peer(&mut web, n), OUTSIDE_IP, "source kept");
    }
    assert_eq!(udp(&h, Some("outside"), HOST_IP, "8081"), "hello");
    assert_eq!(last_peer(&mut web_udp, 1), OUTSIDE_IP, "source kept (UDP)");
    // 127.0.0.1:8082 is for the host only.
    assert!(tcp(&h, Some("outside"), HOST_IP, "8082").starts_with("failed"));
    // Exposed 90 is published (-P) but nothing listens: refused, not hung.
    assert!(tcp(&h, Some("outside"), HOST_IP, &random90).starts_with("failed"));

    // From the host: 127.0.0.1 and its own address.
    for (ip, port) in [
        ("127.0.0.1", "8080"),
        ("127.0.0.1", "8082"),
        (HOST_IP, "8080"),
    ] {
        assert_eq!(tcp(&h, None, ip, port), "hello", "host -> {ip}:{port}");
    }
    assert_eq!(
        udp(&h, None, "127.0.0.1", "8081"),
        "hello",
        "host -> 127.0.0.1:8081/udp"
    );
    // From sandboxes, through a host address (hairpin), on the same
    // network and on another one.
    for sb in ["client", "far"] {
        assert_eq!(
            tcp(&h, Some(sb), HOST_IP, "8080"),
            "hello",
            "{sb} -> host:8080"
        );
        assert_eq!(
            udp(&h, Some(sb), HOST_IP, "8081"),
            "hello",
            "{sb} -> host:8081/udp"
        );
    }
    // The sandbox's own address is not reachable from outside by routing,
    // only through the published port.
    h.exec_ok(
        "outside",
        &["ip", "route", "add", "172.17.0.0/16", "via", HOST_IP],
    );
    assert!(
        tcp(&h, Some("outside"), &web_ip, "80").starts_with("failed"),
        "routed straight in"
    );
    assert_eq!(tcp(&h, Some("outside"), HOST_IP, "8080"), "hello");

    // rm removes the mappings, nothing else of the table changes.
    assert!(nft_table(&h).contains("publish web 80/tcp"));
    h.bpfnet_ok(&["rm", "web"]);
    let rules = nft_table(&h);
    assert!(
        !rules.contains("dnat to") && !rules.contains("publish web"),
        "DNAT left after rm:\n{rules}"
    );
    assert!(tcp(&h, Some("outside"), HOST_IP, "8080").starts_with("failed"));
    drop(web);
    drop(web_udp);
}

#[test]
fn bad_and_conflicting_publish_change_nothing() {
    let h = host("nat-bad");
    h.bpfnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.95.0.0/24",
        "cut",
    ]);
    h.bpfnet_ok(&["create", "--name", "web", "-p", "8080:80"]);
    let before = (h.snapshot(), nft_table(&h));
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "70000:80"], "invalid --publish \"70000:80\": invalid host port \"70000\" (a number from 1 to 65535)"),
        (&["-p", "abc"], "invalid --publish \"abc\": invalid container port \"abc\" (a number from 1 to 65535)"),
        (&["-p", "80:80/sctp"], "invalid --publish \"80:80/sctp\": protocol sctp is not supported: bpfnet publishes tcp and udp ports"),
        (&["-p", "8080:81"], "host port 0.0.0.0:8080/tcp is already published by sandbox \"web\"; pick another host port"),
        (&["-p", "127.0.0.1:8080:81"], "host port 127.0.0.1:8080/tcp is already published by sandbox \"web\"; pick another host port"),
        (&["-p", "9000:80", "-p", "9000:81"], "host port 0.0.0.0:9000/tcp is given twice"),
        (&["-p", "192.0.2.77:9000:80"], "cannot publish on 192.0.2.77:9000/tcp: 192.0.2.77 is not an address of this host"),
        (&["--network", "cut", "-p", "9000:80"], "--publish needs a network that reaches beyond the host; sandbox \"x\" would use only --internal networks (cut), where ports cannot be published"),
        (&["--network", "host", "-p", "9000:80"], "--publish needs a network that reaches beyond the host; sandbox \"x\" would use network mode host, where ports cannot be published"),
        (&["--expose", "x"], "invalid --expose \"x\": invalid port \"x\" (a number from 1 to 65535)"),
        (&["-p", "[::1]:9000:80"], "invalid --publish \"[::1]:9000:80\": IPv6 loopback clients cannot be forwarded to a sandbox (IPv6 has no route_localnet); publish on 127.0.0.1 or on a host address"),
        (&["-p", "2001:db8::1:9000:80"], "invalid --publish \"2001:db8::1:9000:80\": too many ':' (the form is [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO], an IPv6 HOSTIP in brackets: [2001:db8::1]:8080:80)"),
        (&["-p", "[2001:db8::1]:9000:80"], "cannot publish on [2001:db8::1]: sandbox \"x\" has no IPv6 address on network \"bridge\", which its ports are published through (create it with --ipv6)"),
    ];
    for (extra, line) in cases {
        let mut args = vec!["create", "--name", "x"];
        args.extend_from_slice(extra);
        let o = h.bpfnet_fail(&args);
        assert_eq!(o.stderr.trim(), format!("Error: {line}"), "{o}");
        assert_eq!(
            before,
            (h.snapshot(), nft_table(&h)),
            "state changed by {extra:?}"
        );
    }
    // A port a host process holds.
    let mut holder = h.py_spawn(None, &["tcp-echo-server", "0.0.0.0", "9100"]);
    holder.wait_line("ready", Duration::from_secs(10));
    let o = h.bpfnet_fail(&["create", "--name", "x", "-p", "9100:80"]);
    assert_eq!(
        o.stderr.trim(),
        "Error: host port 0.0.0.0:9100/tcp is in use by a process on the host; pick another host port"
    );
    assert_eq!(before, (h.snapshot(), nft_table(&h)));
    // A range takes the first free port.
    h.bpfnet_ok(&["create", "--name", "x", "-p", "8080-8082:80"]);
    assert_eq!(h.bpfnet_ok(&["port", "x", "80"]).trim(), "0.0.0.0:8081");
    h.bpfnet_ok(&["create", "--name", "y", "-p", "7000-7002:7000-7002/udp"]);
    assert_eq!(h.bpfnet_ok(&["port", "y"]).lines().count(), 3);
}

/// The DNS helpers (a fake upstream that prints each query).
const DNS_PY: &str = include_str!("dns.py");

/// `bpfnet ARGS` with the responder's default upstream set.
fn bpfnet_upstream(h: &TestHost, upstream: &str, args: &[&str]) {
    let var = format!("BPFNET_DNS_UPSTREAM={upstream}");
    let mut v = vec!["env", var.as_str(), h.bin_path()];
    v.extend_from_slice(args);
    let o = h.run(&v);
    assert!(o.success(), "{o}");
}

fn dig_short(h: &TestHost, sb: &str, args: &[&str]) -> String {
    let mut v = vec!["dig", "+tries=1", "+timeout=3", "+short"];
    v.extend_from_slice(args);
    h.exec_in(sb, &v).stdout.trim().to_string()
}

#[test]
fn per_sandbox_dns_hosts_and_resolver_settings() {
    let h = host("nat-dns");
    std::fs::write(h.dir.join("dns.py"), DNS_PY).unwrap();
    let py = h.dir.join("dns.py").display().to_string();
    h.exec_ok(
        "outside",
        &["ip", "addr", "add", "203.0.113.11/32", "dev", "lo"],
    );
    // Its own server (answers 10.9.8.7) and the responder's default (10.1.1.1).
    let mut own = h.spawn_in(
        "outside",
        &[PYTHON, &py, "fake-upstream", SERVER, "53", "10.9.8.7"],
    );
    let mut dflt = h.spawn_in(
        "outside",
        &[
            PYTHON,
            &py,
            "fake-upstream",
            "203.0.113.11",
            "53",
            "10.1.1.1",
        ],
    );
    own.wait_line("ready", Duration::from_secs(10));
    dflt.wait_line("ready", Duration::from_secs(10));
    bpfnet_upstream(
        &h,
        "203.0.113.11:53",
        &["network", "create", "--subnet", "10.96.0.0/24", "user"],
    );
    h.bpfnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.97.0.0/24",
        "cut",
    ]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "a",
        "--network",
        "user",
        "--dns",
        SERVER,
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.local:10.5.5.5",
        "--hostname",
        "web1",
    ]);
    h.create("b", &["user"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "c",
        "--dns",
        SERVER,
        "--dns-search",
        "corp.example",
    ]);
    h.bpfnet_ok(&["create", "--name", "i", "--network", "cut", "--dns", SERVER]);

    // User network: the responder forwards a's other names to a's server,
    // b's to the default; a still resolves its peers itself.
    assert_eq!(dig_short(&h, "a", &["www.example.org"]), "10.9.8.7");
    own.wait_contains("query www.example.org", 1, Duration::from_secs(5));
    assert_eq!(dig_short(&h, "b", &["other.example.org"]), "10.1.1.1");
    dflt.wait_contains("query other.example.org", 1, Duration::from_secs(5));
    assert_eq!(dig_short(&h, "a", &["b"]), h.ip_on("b", "user"));
    let gw = h.gateway_of("user");
    let resolv = h.ok(&["cat", "/etc/netns/a/resolv.conf"]);
    assert!(resolv.contains(&format!("nameserver {gw}\n")), "{resolv}");
    assert!(
        resolv.contains("search corp.example\n") && resolv.contains("options ndots:2\n"),
        "{resolv}"
    );
    let hosts = h.ok(&["cat", "/etc/netns/a/hosts"]);
    assert!(hosts.contains("10.5.5.5\tdb.local\n"), "{hosts}");
    assert!(
        hosts.contains(&format!("{}\tweb1 a\n", h.ip_on("a", "user"))),
        "{hosts}"
    );
    // Default bridge: the server goes to resolv.conf and is reached directly.
    let resolv = h.ok(&["cat", "/etc/netns/c/resolv.conf"]);
    assert!(
        resolv.starts_with(&format!("nameserver {SERVER}\n")),
        "{resolv}"
    );
    assert!(!resolv.contains("nameserver 203.0.113.11"), "{resolv}");
    assert_eq!(dig_short(&h, "c", &["direct.example.org"]), "10.9.8.7");
    // Internal: never forwarded, --dns or not.
    let out = h
        .exec_in("i", &["dig", "+tries=1", "+timeout=3", "leak.example.org"])
        .stdout;
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let v = h.inspect("a");
    assert_eq!(v["HostConfig"]["Dns"], serde_json::json!([SERVER]));
    assert_eq!(
        v["HostConfig"]["DnsSearch"],
        serde_json::json!(["corp.example"])
    );
    assert_eq!(
        v["HostConfig"]["DnsOptions"],
        serde_json::json!(["ndots:2"])
    );
    assert_eq!(
        v["HostConfig"]["ExtraHosts"],
        serde_json::json!(["db.local:10.5.5.5"])
    );
    assert_eq!(v["Config"]["Hostname"], "web1");

    let before = h.snapshot();
    for (args, line) in [
        (vec!["--add-host", "db.local"], "invalid --add-host \"db.local\": expected NAME:IP (an IPv4 address)"),
        (vec!["--add-host", "bad name:1.2.3.4"], "invalid --add-host \"bad name\": a host name is dot-separated labels of letters, digits and '-' (1-63 each, not starting or ending with '-')"),
        (vec!["--hostname", "web-"], "invalid --hostname \"web-\": a host name is dot-separated labels of letters, digits and '-' (1-63 each, not starting or ending with '-')"),
        (vec!["--dns-option", "ndots:2\nnameserver 1.2.3.4"], "invalid --dns-option \"ndots:2\\nnameserver 1.2.3.4\": a resolv.conf option such as ndots:2 (letters, digits, '_', '.', ':', '-')"),
        (vec!["--network", "host", "--dns", SERVER], "--dns, --dns-search, --dns-option, --add-host and --hostname cannot be used with network mode host; the namespace's resolver files are not the sandbox's own"),
    ] {
        let mut a = vec!["create", "--name", "x"];
        a.extend_from_slice(&args);
        let o = h.bpfnet_fail(&a);
        assert_eq!(o.stderr.trim(), format!("Error: {line}"), "{o}");
    }
    let o = h.bpfnet_fail(&["create", "--name", "x", "--dns", "1.2.3"]);
    assert!(
        o.stderr
            .starts_with("Error: invalid value '1.2.3' for '--dns <DNS>'"),
        "{o}"
    );
    assert_eq!(before, h.snapshot());
    let all = own.stop().stdout;
    assert!(
        !all.contains("leak.example.org"),
        "internal query forwarded:\n{all}"
    );
}

/// The table is replaced in one batch however many networks there are (a
/// batch of a few hundred rules once overflowed the ACK buffer: ENOBUFS).
#[test]
fn a_table_of_hundreds_of_networks_is_one_batch() {
    let h = host("nat-many");
    let script = format!(
        "set -e; for i in $(seq 0 199); do {} network create --subnet 10.120.$i.0/24 n$i >/dev/null; done",
        h.bin_path()
    );
    let o = h.run_full(&["sh", "-c", &script], None, Duration::from_secs(300));
    assert!(o.success(), "{o}");
    let table = nft_table(&h);
    // The default bridge's and the 200 networks' masquerade rules.
    assert_eq!(table.matches("masquerade").count(), 201, "{table}");
    h.bpfnet_ok(&[
        "create",
        "--name",
        "web",
        "--network",
        "n199",
        "-p",
        "8080:80",
    ]);
    assert!(nft_table(&h).contains("publish web 80/tcp"));
}

/// `network create --ipv6 --subnet V4 --subnet V6 EXTRA… NAME`.
fn ds_network(h: &TestHost, name: &str, v4: &str, v6: &str, extra: &[&str]) {
    let mut args = vec![
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6,
    ];
    args.extend_from_slice(extra);
    args.push(name);
    h.bpfnet_ok(&args);
}

#[test]
fn outbound_ipv6_is_masqueraded_and_internal_is_cut_off() {
    let h = host6("nat6-out");
    assert_eq!(forwarding6(&h), "0", "no IPv6 network reaches out yet");
    ds_network(&h, "user", "10.91.0.0/24", "fd42:91::/64", &[]);
    ds_network(&h, "cut", "10.92.0.0/24", "fd42:92::/64", &["--internal"]);
    assert_eq!(forwarding6(&h), "1", "a dual-stack network turns it on");
    ds_network(
        &h,
        "routed",
        "10.93.0.0/24",
        "fd42:93::/64",
        &["-o", "com.docker.network.bridge.enable_ip_masquerade=false"],
    );
    h.create("u1", &["user"]);
    h.create("i1", &["cut"]);
    h.create("r1", &["routed"]);
    let routes = h.exec_ok("u1", &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fd42:91::1"), "{routes}");
    let routes = h.exec_ok("i1", &["ip", "-6", "route", "show", "default"]);
    assert!(
        routes.trim().is_empty(),
        "internal default route:\n{routes}"
    );

    let mut tcp_server = serve(&h, "outside", "tcp-echo-server", SERVER6, "7000");
    let mut udp_server = serve(&h, "outside", "udp-echo-server", SERVER6, "7001");
    assert_eq!(tcp(&h, Some("u1"), SERVER6, "7000"), "hello", "TCP out");
    assert_eq!(last_peer(&mut tcp_server, 1), HOST_IP6, "masqueraded (TCP)");
    assert_eq!(udp(&h, Some("u1"), SERVER6, "7001"), "hello", "UDP out");
    assert_eq!(last_peer(&mut udp_server, 1), HOST_IP6, "masqueraded (UDP)");
    // IPv4 of the same sandbox still goes out.
    let mut tcp4 = serve(&h, "outside", "tcp-echo-server", SERVER, "7002");
    assert_eq!(tcp(&h, Some("u1"), SERVER, "7002"), "hello");
    assert_eq!(last_peer(&mut tcp4, 1), HOST_IP);

    // Internal: cut off even with a default route made by hand.
    h.exec_ok(
        "i1",
        &["ip", "-6", "route", "add", "default", "via", "fd42:92::1"],
    );
    assert!(tcp(&h, Some("i1"), SERVER6, "7000").starts_with("failed"));
    assert!(udp(&h, Some("i1"), SERVER6, "7001").starts_with("failed"));

    // Masquerade off: the sandbox's own address arrives (given a route back).
    h.exec_ok(
        "outside",
        &["ip", "-6", "route", "add", "fd42:93::/64", "via", HOST_IP6],
    );
    assert_eq!(tcp(&h, Some("r1"), SERVER6, "7000"), "hello");
    assert_eq!(last_peer(&mut tcp_server, 2), h.ip6_on("r1", "routed"));
    let all = tcp_server.stop().stdout + &udp_server.stop().stdout;
    assert!(!all.contains("fd42:92"), "internal reached out:\n{all}");

    let rules = ip6_table(&h);
    assert!(
        rules.contains("ip6 saddr fd42:91::/64 oifname != \"bn*\" masquerade"),
        "{rules}"
    );
    assert!(
        !rules.contains("fd42:92"),
        "internal in the table:\n{rules}"
    );
    assert!(
        !rules.contains("ip6 saddr fd42:93::/64 oifname != \"bn*\" masquerade"),
        "{rules}"
    );
    assert!(rules.contains("ip6 daddr fd42:93::/64 accept"), "{rules}");
    // Dropped and counted: routed straight to a masqueraded sandbox.
    h.exec_ok(
        "outside",
        &["ip", "-6", "route", "add", "fd42:91::/64", "via", HOST_IP6],
    );
    let mut direct = h.py_spawn(Some("u1"), &["tcp-echo-server", "::", "7100"]);
    direct.wait_line("ready", Duration::from_secs(10));
    let u1 = h.ip6_on("u1", "user");
    assert!(tcp(&h, Some("outside"), &u1, "7100").starts_with("failed"));
    let rules = ip6_table(&h);
    assert!(
        !rules.contains("counter packets 0 bytes 0 drop"),
        "the drop counted nothing:\n{rules}"
    );
    drop(direct);

    h.bpfnet_ok(&["datapath", "unload"]);
    let tables = h.ok(&["nft", "list", "tables"]);
    assert!(!tables.contains("bpfnet"), "left after unload:\n{tables}");
    assert_eq!(forwarding6(&h), "0", "unload puts IPv6 forwarding back");
}

#[test]
fn published_ports_over_ipv6() {
    let h = host6("nat6-ports");
    ds_network(&h, "ds", "10.94.0.0/24", "fd42:94::/64", &[]);
    h.bpfnet_ok(&["network", "create", "--subnet", "10.95.0.0/24", "v4"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "web",
        "--network",
        "ds",
        "-p",
        "8080:80",
        "-p",
        "8081:81/udp",
        "-p",
        &format!("[{HOST_IP6}]:8082:80"),
    ]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "old",
        "--network",
        "v4",
        "-p",
        "9090:80",
    ]);
    h.create("client", &["ds"]);
    let mut web = serve(&h, "web", "tcp-echo-server", "::", "80");
    let mut web_udp = serve(&h, "web", "udp-echo-server", "::", "81");
    let mut old = serve(&h, "old", "tcp-echo-server", "0.0.0.0", "80");

    assert_eq!(
        h.bpfnet_ok(&["port", "web"]),
        format!(
            "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n80/tcp -> [{HOST_IP6}]:8082\n\
             81/udp -> 0.0.0.0:8081\n81/udp -> [::]:8081\n"
        )
    );
    assert_eq!(
        h.bpfnet_ok(&["port", "web", "81/udp"]),
        "0.0.0.0:8081\n[::]:8081\n"
    );
    assert_eq!(h.bpfnet_ok(&["port", "old"]), "80/tcp -> 0.0.0.0:9090\n");
    let v = h.inspect("web");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"],
        serde_json::json!([
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "::", "HostPort": "8080"},
            {"HostIp": HOST_IP6, "HostPort": "8082"},
        ])
    );
    assert_eq!(
        v["HostConfig"]["PortBindings"]["80/tcp"][1],
        serde_json::json!({"HostIp": HOST_IP6, "HostPort": "8082"})
    );

    // From outside over IPv6, the client's address kept; over IPv4 too.
    let mut n = 0;
    for (ip, port) in [(HOST_IP6, "8080"), (HOST_IP6_B, "8080"), (HOST_IP6, "8082")] {
        assert_eq!(
            tcp(&h, Some("outside"), ip, port),
            "hello",
            "outside -> [{ip}]:{port}"
        );
        n += 1;
        assert_eq!(last_peer(&mut web, n), OUTSIDE_IP6, "source kept");
    }
    assert_eq!(udp(&h, Some("outside"), HOST_IP6, "8081"), "hello");
    assert_eq!(last_peer(&mut web_udp, 1), OUTSIDE_IP6, "source kept (UDP)");
    assert_eq!(tcp(&h, Some("outside"), HOST_IP, "8080"), "hello");
    n += 1;
    assert_eq!(last_peer(&mut web, n), format!("::ffff:{OUTSIDE_IP}"));
    // Bound to one address: not on the other.
    assert!(tcp(&h, Some("outside"), HOST_IP6_B, "8082").starts_with("failed"));
    // An IPv4-only sandbox is published over IPv4 only.
    assert_eq!(tcp(&h, Some("outside"), HOST_IP, "9090"), "hello");
    assert!(tcp(&h, Some("outside"), HOST_IP6, "9090").starts_with("failed"));
    drop(old.stop());

    // From the host and from a sandbox through a host address (hairpin).
    assert_eq!(tcp(&h, None, HOST_IP6, "8080"), "hello", "host -> 8080");
    assert_eq!(tcp(&h, Some("client"), HOST_IP6, "8080"), "hello");
    assert_eq!(udp(&h, Some("client"), HOST_IP6, "8081"), "hello");
    // The sandbox's own address is not reachable from outside by routing.
    h.exec_ok(
        "outside",
        &["ip", "-6", "route", "add", "fd42:94::/64", "via", HOST_IP6],
    );
    let web_ip6 = h.ip6_on("web", "ds");
    assert!(tcp(&h, Some("outside"), &web_ip6, "80").starts_with("failed"));

    // An IPv6 address that is not the host's.
    let before = (h.snapshot(), nft_table(&h));
    let o = h.bpfnet_fail(&[
        "create",
        "--name",
        "x",
        "--network",
        "ds",
        "-p",
        "[2001:db8:100::77]:9000:80",
    ]);
    assert_eq!(
        o.stderr.trim(),
        "Error: cannot publish on [2001:db8:100::77]:9000/tcp: 2001:db8:100::77 is not an address of this host"
    );
    let o = h.bpfnet_fail(&[
        "create",
        "--name",
        "x",
        "--network",
        "ds",
        "-p",
        &format!("[{HOST_IP6}]:8080:80"),
    ]);
    assert_eq!(
        o.stderr.trim(),
        "Error: host port [2001:db8:100::1]:8080/tcp is already published by sandbox \"web\"; pick another host port"
    );
    // A port a host process holds on IPv6 only.
    let mut holder = h.py_spawn(None, &["tcp-hold6only", "9100"]);
    holder.wait_line("ready", Duration::from_secs(10));
    let o = h.bpfnet_fail(&["create", "--name", "x", "--network", "ds", "-p", "9100:80"]);
    assert_eq!(
        o.stderr.trim(),
        "Error: host port [::]:9100/tcp is in use by a process on the host; pick another host port"
    );
    assert_eq!(before, (h.snapshot(), nft_table(&h)));
    // An IPv4-only sandbox is not published over IPv6: the port is free.
    h.bpfnet_ok(&["create", "--name", "y", "--network", "v4", "-p", "9100:80"]);
    drop(holder);

    // rm takes the IPv6 mappings out too.
    assert!(ip6_table(&h).contains("publish web 80/tcp"));
    h.bpfnet_ok(&["rm", "web"]);
    let rules = nft_table(&h);
    assert!(!rules.contains("publish web"), "left after rm:\n{rules}");
    let rules = ip6_table(&h);
    assert!(!rules.contains("dnat to"), "DNAT left after rm:\n{rules}");
    assert!(tcp(&h, Some("outside"), HOST_IP6, "8080").starts_with("failed"));
    drop(web);
    drop(web_udp);
}
