//! Datapath: forwarding within a network, host and gateway reachability,
//! isolation between networks.

use std::time::Duration;

use bpfnet_tests::TestHost;

/// Both sandboxes reach each other, the host reaches both, both reach their
/// gateway — all without a kernel bridge.
#[test]
fn two_sandboxes_on_one_network_ping_each_other_the_host_and_the_gateway() {
    let h = TestHost::new("same-net-ping");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let (a, b) = (h.ip_on("a", "net1"), h.ip_on("b", "net1"));
    let gw = h.gateway_of("net1");
    h.assert_ping(Some("a"), &b);
    h.assert_ping(Some("b"), &a);
    h.assert_ping(None, &a);
    h.assert_ping(None, &b);
    h.assert_ping(Some("a"), &gw);
    h.assert_ping(Some("b"), &gw);
    h.assert_no_kernel_bridge();
}

/// A TCP listener in the host on the gateway address serves a sandbox, and
/// sees the sandbox's own address as the peer.
#[test]
fn sandbox_reaches_a_tcp_listener_on_its_gateway_address() {
    let h = TestHost::new("gw-tcp");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    let a = h.ip_on("a", "net1");
    let gw = h.gateway_of("net1");
    let mut server = h.py_spawn(None, &["tcp-echo-server", &gw, "7070"]);
    server.wait_line("ready", Duration::from_secs(5));
    let o = h.py_in(Some("a"), &["tcp-echo", &gw, "7070", "hello-gateway"]);
    assert!(
        o.success() && o.stdout == "hello-gateway\n",
        "TCP to the gateway failed:\n{o}\n{}",
        h.diagnostics(Some("a"))
    );
    server.wait_line(&format!("served {a}"), Duration::from_secs(5));
    h.assert_no_kernel_bridge();
}

/// 100 MB of deterministic pseudo-random bytes arrive unchanged (same length
/// and SHA-256) from one sandbox to another over TCP.
#[test]
fn tcp_transfer_of_100_mb_between_sandboxes_is_intact() {
    let h = TestHost::new("100mb");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let b = h.ip_on("b", "net1");
    let mut sink = h.py_spawn(Some("b"), &["sink", &b, "5201"]);
    sink.wait_line("ready", Duration::from_secs(5));
    let total = (100u64 << 20).to_string();
    let sent = h.run_full(
        &[
            "ip",
            "netns",
            "exec",
            "a",
            bpfnet_tests::PYTHON,
            &h.py(),
            "source",
            &b,
            "5201",
            &total,
            "42",
        ],
        None,
        Duration::from_secs(120),
    );
    assert!(sent.success(), "sender failed:\n{sent}");
    let got = sink.finish(Duration::from_secs(30));
    assert!(
        sent.last_line().starts_with(&format!("{total} ")),
        "sender did not send {total} bytes:\n{sent}"
    );
    assert_eq!(
        got.last_line(),
        sent.last_line(),
        "received stream differs from the sent one (bytes sha256):\n{got}\n{sent}"
    );
    h.assert_no_kernel_bridge();
}

/// The seed's matrix: A on net1, B on net1+net2, C on net2. A↔B and B↔C
/// talk; A and C don't, not even through the gateway with IP forwarding on
/// in the host.
#[test]
fn networks_are_isolated_even_through_the_gateway_with_ip_forward() {
    let h = TestHost::new("seed-matrix");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1", "net2"]);
    h.create("c", &["net2"]);
    let a = h.ip_on("a", "net1");
    let (b1, b2) = (h.ip_on("b", "net1"), h.ip_on("b", "net2"));
    let c = h.ip_on("c", "net2");
    h.assert_ping(Some("a"), &b1);
    h.assert_ping(Some("b"), &a);
    h.assert_ping(Some("b"), &c);
    h.assert_ping(Some("c"), &b2);

    h.sh_ok("echo 1 > /proc/sys/net/ipv4/ip_forward");
    // A's way to C is its default route, via net1's gateway.
    let route = h.exec_ok("a", &["ip", "route", "get", &c]);
    let gw1 = h.gateway_of("net1");
    assert!(
        route.contains(&format!("via {gw1}")),
        "a should reach {c} via its gateway {gw1}:\n{route}"
    );
    h.assert_no_ping(Some("a"), &c);
    h.assert_no_ping(Some("c"), &a);
    // A and C reach B's address on the other network neither.
    h.assert_no_ping(Some("a"), &b2);
    h.assert_no_ping(Some("c"), &b1);
    // The host still reaches everyone.
    h.assert_ping(None, &a);
    h.assert_ping(None, &c);
    h.assert_no_kernel_bridge();
}

/// Traffic from one network to another through the gateway is dropped by the
/// datapath (not merely unanswered) and counted.
#[test]
fn cross_network_traffic_through_the_gateway_is_counted_as_a_drop() {
    let h = TestHost::new("cross-net-count");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    h.create("c", &["net2"]);
    let c = h.ip_on("c", "net2");
    h.sh_ok("echo 1 > /proc/sys/net/ipv4/ip_forward");
    let reasons = ["cross-network", "routed-from-other-network"];
    let before: u64 = reasons.iter().map(|r| h.drops(r)).sum();
    let counts = h.count_received("c", "eth0", &["bntcross"], || {
        let o = h.ping_marked("a", &c, "bntcross");
        assert!(!o.success(), "a reached c across networks:\n{o}");
    });
    assert_eq!(counts, vec![0], "c received a's pings");
    let after: u64 = reasons.iter().map(|r| h.drops(r)).sum();
    assert!(
        after >= before + 3,
        "drops {reasons:?} went from {before} to {after}, expected +3:\n{:#}",
        h.stats()
    );
    h.assert_no_kernel_bridge();
}

/// Frames whose headers are not in the skb's linear part (trafgen's
/// TX_RING builds them from pages) are forwarded like any other: the
/// datapath pulls the headers in instead of calling them malformed.
#[test]
fn frames_with_paged_headers_are_forwarded() {
    let h = TestHost::new("paged");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("x", &["net1"]);
    h.create("y", &["net1"]);
    let (x_ip, y_ip) = (h.ip_on("x", "net1"), h.ip_on("y", "net1"));
    let (x_mac, y_mac) = (h.mac_of("x", "eth0"), h.mac_of("y", "eth0"));
    let before = h.drops("malformed");
    let packet = format!(
        "{{ eth(da={y_mac}, sa={x_mac}), ipv4(saddr={x_ip}, daddr={y_ip}), \
         udp(sport=4000, dport=4001), \"bntpaged\" }}"
    );
    let counts = h.count_received("y", "eth0", &["bntpaged"], || {
        let o = h.exec_in("x", &["trafgen", "--dev", "eth0", "--num", "50", &packet]);
        assert!(o.success(), "{o}");
    });
    assert_eq!(counts[0], 50, "paged frames must all arrive");
    assert_eq!(
        h.drops("malformed"),
        before,
        "paged frames counted as malformed"
    );
    h.assert_no_kernel_bridge();
}
