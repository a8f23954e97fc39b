//! The `linux-bridge` driver (the benchmarks' baseline): same topology, but
//! with a kernel bridge — which also shows that the "no kernel bridge"
//! assertion of the other tests can fail.

use bpfnet_tests::TestHost;

#[test]
fn linux_bridge_driver_connects_sandboxes_through_a_kernel_bridge() {
    let h = TestHost::new("linux-bridge");
    h.bpfnet_ok(&["network", "create", "-d", "linux-bridge", "lb1"]);
    h.create("a", &["lb1"]);
    h.create("b", &["lb1"]);
    let (a, b) = (h.ip_on("a", "lb1"), h.ip_on("b", "lb1"));
    assert_eq!((a.as_str(), b.as_str()), ("172.18.0.2", "172.18.0.3"));
    let v = h.network_inspect("lb1");
    assert_eq!(v["Driver"], "linux-bridge", "{v:#}");
    h.assert_ping(Some("a"), &b);
    h.assert_ping(Some("b"), &a);
    h.assert_ping(None, &a);
    h.assert_ping(Some("a"), "172.18.0.1");
    let bridges = h.ok(&["ip", "-o", "link", "show", "type", "bridge"]);
    assert!(
        !bridges.trim().is_empty(),
        "linux-bridge made no kernel bridge"
    );
    h.bpfnet_ok(&["rm", "-f", "a", "b"]);
    h.bpfnet_ok(&["network", "rm", "lb1"]);
    h.assert_no_kernel_bridge();
    assert_eq!(h.links_settled(&["lo"]), vec!["lo"]);
}

/// With the host forwarding (bpfnet turns it on for outbound NAT), a
/// linux-bridge network is as isolated as an eBPF one: no path to another
/// linux-bridge network nor to an eBPF network, in either direction, while
/// each still reaches its own members and the host.
#[test]
fn linux_bridge_networks_stay_isolated_while_the_host_forwards() {
    let h = TestHost::new("lb-isolated");
    assert_eq!(h.sh_ok("sysctl -n net.ipv4.ip_forward").trim(), "0");
    h.bpfnet_ok(&["network", "create", "-d", "linux-bridge", "lb1"]);
    h.bpfnet_ok(&["network", "create", "-d", "linux-bridge", "lb2"]);
    h.bpfnet_ok(&["network", "create", "ebpf"]);
    assert_eq!(h.sh_ok("sysctl -n net.ipv4.ip_forward").trim(), "1");
    for (sb, net) in [("a1", "lb1"), ("a2", "lb1"), ("b1", "lb2"), ("e1", "ebpf")] {
        h.create(sb, &[net]);
    }
    let ip = |sb: &str, net: &str| h.ip_on(sb, net);
    h.assert_ping(Some("a1"), &ip("a2", "lb1"));
    h.assert_ping(Some("a1"), "172.18.0.1");
    h.assert_ping(None, &ip("b1", "lb2"));
    for (from, to) in [
        ("a1", ip("b1", "lb2")),
        ("b1", ip("a1", "lb1")),
        ("a1", ip("e1", "ebpf")),
        ("e1", ip("a1", "lb1")),
    ] {
        h.assert_no_ping(Some(from), &to);
    }
    let table = h.ok(&["nft", "list", "table", "ip", "bpfnet"]);
    assert_eq!(
        table.matches("linux-bridge network isolation").count(),
        2,
        "{table}"
    );
}
