//! The seed walkthrough (busybox1/2/3 on `bridge` and `bridge2`) and the
//! sandbox network modes `container:`, `none` and `host`.

use serde_json::Value;

use bpfnet_tests::{docker_mac, jget, jstr, TestHost};

fn assert_endpoint(h: &TestHost, sandbox: &str, net: &str, iface: &str, ip: &str, gw: &str) {
    let v = h.inspect(sandbox);
    let ep = jget(&v, &format!("/NetworkSettings/Networks/{net}"));
    assert_eq!(ep["IPAddress"], ip, "{sandbox} on {net}:\n{v:#}");
    assert_eq!(ep["IPPrefixLen"], 16, "{sandbox} on {net}:\n{v:#}");
    assert_eq!(ep["Gateway"], gw, "{sandbox} on {net}:\n{v:#}");
    assert_eq!(
        ep["MacAddress"],
        docker_mac(ip),
        "{sandbox} on {net}:\n{v:#}"
    );
    assert_eq!(
        h.ipv4_addrs(sandbox, iface),
        vec![format!("{ip}/16")],
        "{sandbox} {iface}"
    );
    assert_eq!(
        h.mac_of(sandbox, iface),
        docker_mac(ip),
        "{sandbox} {iface}"
    );
}

fn container_names(net: &Value) -> Vec<String> {
    let mut names: Vec<String> = jget(net, "/Containers")
        .as_object()
        .unwrap_or_else(|| panic!("Containers is not an object:\n{net:#}"))
        .values()
        .map(|c| c["Name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

/// The tutorial, step by step, with bpfnet instead of docker.
#[test]
fn seed_walkthrough_busybox1_2_3() {
    let h = TestHost::new("walkthrough");
    h.bpfnet_ok(&["network", "create", "-d", "bridge", "bridge2"]);
    let net = h.network_inspect("bridge2");
    assert_eq!(jstr(&net, "/IPAM/Config/0/Subnet"), "172.18.0.0/16");
    assert_eq!(jstr(&net, "/IPAM/Config/0/Gateway"), "172.18.0.1");
    h.bpfnet_ok(&["create", "--name", "busybox1", "--network", "bridge"]);
    h.bpfnet_ok(&["create", "--name", "busybox2", "--network", "bridge"]);
    h.bpfnet_ok(&["network", "connect", "bridge2", "busybox2"]);
    h.bpfnet_ok(&["create", "--name", "busybox3", "--network", "bridge2"]);
    h.assert_no_kernel_bridge();

    assert_endpoint(&h, "busybox1", "bridge", "eth0", "172.17.0.2", "172.17.0.1");
    assert_endpoint(&h, "busybox2", "bridge", "eth0", "172.17.0.3", "172.17.0.1");
    assert_endpoint(
        &h,
        "busybox2",
        "bridge2",
        "eth1",
        "172.18.0.2",
        "172.18.0.1",
    );
    assert_endpoint(
        &h,
        "busybox3",
        "bridge2",
        "eth0",
        "172.18.0.3",
        "172.18.0.1",
    );
    let v = h.inspect("busybox2");
    assert_eq!(jstr(&v, "/NetworkSettings/IPAddress"), "172.17.0.3");
    assert_eq!(jstr(&v, "/NetworkSettings/Gateway"), "172.17.0.1");
    assert_eq!(jstr(&v, "/NetworkSettings/MacAddress"), "02:42:ac:11:00:03");

    let net = h.network_inspect("bridge2");
    assert_eq!(
        container_names(&net),
        vec!["busybox2", "busybox3"],
        "{net:#}"
    );
    for c in jget(&net, "/Containers").as_object().unwrap().values() {
        let ip = if c["Name"] == "busybox2" {
            "172.18.0.2"
        } else {
            "172.18.0.3"
        };
        assert_eq!(c["IPv4Address"], format!("{ip}/16"), "{net:#}");
        assert_eq!(c["MacAddress"], docker_mac(ip), "{net:#}");
    }

    h.assert_ping(Some("busybox1"), "172.17.0.3");
    h.assert_ping(Some("busybox2"), "172.17.0.2");
    h.assert_ping(Some("busybox2"), "172.18.0.3");
    h.assert_ping(Some("busybox3"), "172.18.0.2");
    h.assert_no_ping(Some("busybox1"), "172.18.0.3");
    h.sh_ok("echo 1 > /proc/sys/net/ipv4/ip_forward");
    h.assert_no_ping(Some("busybox1"), "172.18.0.3");
    h.assert_no_ping(Some("busybox3"), "172.17.0.2");

    // container:busybox1 shares busybox1's stack.
    h.bpfnet_ok(&["create", "--name", "c1", "--network", "container:busybox1"]);
    let c1 = h.bpfnet_ok(&["exec", "c1", "--", "ip", "-o", "link"]);
    let b1 = h.bpfnet_ok(&["exec", "busybox1", "--", "ip", "-o", "link"]);
    assert_eq!(c1, b1, "c1 and busybox1 see different links");
    assert!(c1.contains("eth0"), "no eth0 in c1:\n{c1}");
    let c1_addr = h.bpfnet_ok(&["exec", "c1", "--", "ip", "-o", "-4", "addr"]);
    assert!(c1_addr.contains("172.17.0.2/16"), "{c1_addr}");

    // none: only lo.
    h.bpfnet_ok(&["create", "--name", "busybox5", "--network", "none"]);
    let links = h.bpfnet_ok(&["exec", "busybox5", "--", "ip", "-o", "link"]);
    assert_eq!(
        bpfnet_tests::parse_link_names(&links),
        vec!["lo"],
        "{links}"
    );

    // host: the host's links.
    h.bpfnet_ok(&["create", "--name", "busybox6", "--network", "host"]);
    let links = h.bpfnet_ok(&["exec", "busybox6", "--", "ip", "-o", "link"]);
    assert_eq!(
        bpfnet_tests::parse_link_names(&links),
        h.link_names(None),
        "busybox6 (host mode) sees other links than the host"
    );
    h.assert_no_kernel_bridge();

    h.bpfnet_ok(&[
        "rm", "-f", "c1", "busybox1", "busybox2", "busybox3", "busybox5", "busybox6",
    ]);
    h.bpfnet_ok(&["network", "rm", "bridge2"]);
    assert!(
        h.netns_list().is_empty(),
        "netns left: {:?}",
        h.netns_list()
    );
    assert_eq!(h.links_settled(&["lo"]), vec!["lo"], "links left");
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "ps: {ps:#}");
    let nets = h.bpfnet_json(&["network", "ls", "--format", "json"]);
    let mut names: Vec<&str> = nets
        .as_array()
        .unwrap_or_else(|| panic!("network ls is not an array: {nets:#}"))
        .iter()
        .map(|n| n["Name"].as_str().unwrap_or(""))
        .collect();
    names.sort();
    assert_eq!(names, vec!["bridge", "host", "none"], "{nets:#}");
    h.assert_no_kernel_bridge();
}

/// `container:OTHER` joins OTHER's namespace: same interfaces, same address,
/// and it goes on working after OTHER's peers talk to it.
#[test]
fn container_mode_shares_the_other_sandboxs_namespace() {
    let h = TestHost::new("container-mode");
    h.create("b1", &[]);
    h.create("peer", &[]);
    h.bpfnet_ok(&["create", "--name", "c1", "--network", "container:b1"]);
    let a = h.bpfnet_ok(&["exec", "b1", "--", "ip", "-o", "addr"]);
    let b = h.bpfnet_ok(&["exec", "c1", "--", "ip", "-o", "addr"]);
    assert_eq!(a, b);
    // A listener started through c1 is reachable at b1's address.
    let ip = h.ip_on("b1", "bridge");
    let py = h.py();
    let mut srv = h.bpfnet_spawn(&[
        "exec",
        "c1",
        "--",
        bpfnet_tests::PYTHON,
        &py,
        "tcp-echo-server",
        "0.0.0.0",
        "8080",
    ]);
    srv.wait_line("ready", std::time::Duration::from_secs(5));
    let o = h.py_in(Some("peer"), &["tcp-echo", &ip, "8080", "via-c1"]);
    assert_eq!(o.stdout, "via-c1\n", "{o}");
    let v = h.inspect("c1");
    assert!(
        jstr(&v, "/HostConfig/NetworkMode").starts_with("container:"),
        "{v:#}"
    );
    h.assert_no_kernel_bridge();
}

/// `none` has only `lo`; `host` is the host's namespace; `create` without
/// `--network` joins `bridge`.
#[test]
fn none_host_and_default_network_modes() {
    let h = TestHost::new("modes");
    h.create("n", &["none"]);
    assert_eq!(h.link_names(Some("n")), vec!["lo"]);
    let addrs = h.exec_ok("n", &["ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("172."), "none has an address:\n{addrs}");

    h.create("hst", &["host"]);
    let inside = h.bpfnet_ok(&["exec", "hst", "--", "ip", "-o", "link"]);
    assert_eq!(bpfnet_tests::parse_link_names(&inside), h.link_names(None));

    h.create("d", &[]);
    let v = h.inspect("d");
    assert_eq!(jstr(&v, "/HostConfig/NetworkMode"), "bridge", "{v:#}");
    assert_eq!(h.ip_on("d", "bridge"), "172.17.0.2");
    let route = h.exec_ok("d", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 172.17.0.1 dev eth0"), "{route}");
    h.assert_ping(Some("d"), "172.17.0.1");
    // A sandbox created after host/none ones still gets .3 (they take none).
    h.create("e", &[]);
    assert_eq!(h.ip_on("e", "bridge"), "172.17.0.3");
    h.assert_no_kernel_bridge();
}
