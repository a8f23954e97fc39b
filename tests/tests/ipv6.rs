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

/// The IPv6 address of a sandbox on a network, from `bpfnet inspect`.
fn ip6_on(h: &TestHost, sandbox: &str, net: &str) -> String {
    let v = h.inspect(sandbox);
    let ip = jstr(
        &v,
        &format!("/NetworkSettings/Networks/{net}/GlobalIPv6Address"),
    )
    .to_string();
    assert!(
        !ip.is_empty(),
        "{sandbox} has no IPv6 address on {net}:\n{v:#}"
    );
    ip
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
