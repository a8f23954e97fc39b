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
    assert_eq!(h.link_names(None), vec!["lo"]);
}
