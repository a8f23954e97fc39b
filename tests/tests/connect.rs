//! Live `network connect`/`disconnect`, interface naming, address reuse.

use bpfnet_tests::TestHost;

/// Connecting adds eth1 with an address on the new network at once, and it
/// works; disconnecting removes it and leaves eth0 alone.
#[test]
fn connect_and_disconnect_add_and_remove_an_interface_live() {
    let h = TestHost::new("connect-live");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("s", &[]);
    h.create("peer", &["net1"]);
    assert_eq!(h.link_names(Some("s")), vec!["lo", "eth0"]);
    h.bpfnet_ok(&["network", "connect", "net1", "s"]);
    assert_eq!(h.link_names(Some("s")), vec!["lo", "eth0", "eth1"]);
    assert_eq!(h.ipv4_addrs("s", "eth1"), vec!["172.18.0.3/16"]);
    assert_eq!(h.ip_on("s", "net1"), "172.18.0.3");
    h.assert_ping(Some("s"), "172.18.0.2");
    h.assert_ping(Some("peer"), "172.18.0.3");
    // The default route stays with the first network.
    let route = h.exec_ok("s", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 172.17.0.1 dev eth0"), "{route}");

    h.bpfnet_ok(&["network", "disconnect", "net1", "s"]);
    assert_eq!(h.link_names(Some("s")), vec!["lo", "eth0"]);
    assert_eq!(h.ipv4_addrs("s", "eth0"), vec!["172.17.0.2/16"]);
    h.assert_no_ping(Some("peer"), "172.18.0.3");
    h.assert_ping(None, "172.17.0.2");
    let net = h.network_inspect("net1");
    let names: Vec<&str> = net["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["Name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, vec!["peer"], "{net:#}");
    h.assert_no_kernel_bridge();
}

/// eth0, eth1, eth2 follow the order of `--network` flags and connects, not
/// the order in which the networks were created.
#[test]
fn interfaces_are_named_in_connect_order() {
    let h = TestHost::new("iface-order");
    h.bpfnet_ok(&["network", "create", "net1"]); // 172.18
    h.bpfnet_ok(&["network", "create", "net2"]); // 172.19
    h.bpfnet_ok(&["network", "create", "net3"]); // 172.20
    h.create("s", &["net3", "net1"]);
    h.bpfnet_ok(&["network", "connect", "bridge", "s"]);
    h.bpfnet_ok(&["network", "connect", "net2", "s"]);
    assert_eq!(h.ipv4_addrs("s", "eth0"), vec!["172.20.0.2/16"]);
    assert_eq!(h.ipv4_addrs("s", "eth1"), vec!["172.18.0.2/16"]);
    assert_eq!(h.ipv4_addrs("s", "eth2"), vec!["172.17.0.2/16"]);
    assert_eq!(h.ipv4_addrs("s", "eth3"), vec!["172.19.0.2/16"]);
    let route = h.exec_ok("s", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 172.20.0.1 dev eth0"), "{route}");
    for gw in ["172.20.0.1", "172.18.0.1", "172.17.0.1", "172.19.0.1"] {
        h.assert_ping(Some("s"), gw);
    }
    h.assert_no_kernel_bridge();
}

/// Released addresses are handed out again: rm frees .2 for the next sandbox,
/// disconnect frees an address too; the lowest free address comes first.
#[test]
fn addresses_are_reused_after_release() {
    let h = TestHost::new("addr-reuse");
    h.create("a", &[]);
    h.create("b", &[]);
    h.create("c", &[]);
    assert_eq!(h.ip_on("a", "bridge"), "172.17.0.2");
    assert_eq!(h.ip_on("b", "bridge"), "172.17.0.3");
    assert_eq!(h.ip_on("c", "bridge"), "172.17.0.4");
    h.bpfnet_ok(&["rm", "-f", "a"]);
    h.create("d", &[]);
    assert_eq!(h.ip_on("d", "bridge"), "172.17.0.2", "rm must free .2");
    h.bpfnet_ok(&["network", "disconnect", "bridge", "b"]);
    h.create("e", &[]);
    assert_eq!(
        h.ip_on("e", "bridge"),
        "172.17.0.3",
        "disconnect must free .3"
    );
    h.create("f", &[]);
    assert_eq!(h.ip_on("f", "bridge"), "172.17.0.5");
    // The reused address works and carries the matching MAC.
    assert_eq!(h.mac_of("d", "eth0"), "02:42:ac:11:00:02");
    h.assert_ping(Some("e"), "172.17.0.2");
    h.assert_ping(None, "172.17.0.2");
    h.assert_no_kernel_bridge();
}

/// `--ip` picks a fixed address; the next automatic one skips it.
#[test]
fn fixed_ip_is_honoured_and_skipped_by_automatic_allocation() {
    let h = TestHost::new("fixed-ip");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create_with_ip("a", "net1", "172.18.0.2");
    h.create_with_ip("b", "net1", "172.18.5.9");
    h.create("c", &["net1"]);
    assert_eq!(h.ip_on("a", "net1"), "172.18.0.2");
    assert_eq!(h.ip_on("b", "net1"), "172.18.5.9");
    assert_eq!(h.ip_on("c", "net1"), "172.18.0.3");
    assert_eq!(h.mac_of("b", "eth0"), "02:42:ac:12:05:09");
    h.bpfnet_ok(&["create", "--name", "d"]);
    h.bpfnet_ok(&["network", "connect", "--ip", "172.18.7.7", "net1", "d"]);
    assert_eq!(h.ipv4_addrs("d", "eth1"), vec!["172.18.7.7/16"]);
    h.assert_ping(Some("b"), "172.18.7.7");
    h.assert_no_kernel_bridge();
}
