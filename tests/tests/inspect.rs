//! `inspect` and `network inspect` JSON: Docker's field names and values.

use serde_json::Value;

use bpfnet_tests::{docker_mac, jget, jstr, TestHost};

fn assert_fields(v: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(v.get(f).is_some(), "{what}: no field `{f}`:\n{v:#}");
    }
}

/// Top-level IPAddress/Gateway/MacAddress come from the `bridge` endpoint,
/// and are empty strings for a sandbox only on a user network.
#[test]
fn inspect_uses_docker_field_names_and_bridge_endpoint_at_top_level() {
    let h = TestHost::new("inspect");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("s1", &["bridge", "net1"]);
    h.create("s2", &["net1"]);

    let v = h.inspect("s1");
    assert_fields(
        &v,
        &["Id", "Name", "Created", "HostConfig", "NetworkSettings"],
        "inspect s1",
    );
    assert_eq!(jstr(&v, "/Name").trim_start_matches('/'), "s1");
    assert!(!jstr(&v, "/Id").is_empty());
    assert!(!jstr(&v, "/Created").is_empty());
    assert_eq!(jstr(&v, "/HostConfig/NetworkMode"), "bridge");
    let ns = jget(&v, "/NetworkSettings");
    assert_fields(
        ns,
        &[
            "SandboxID",
            "SandboxKey",
            "IPAddress",
            "IPPrefixLen",
            "Gateway",
            "MacAddress",
            "Networks",
        ],
        "inspect s1 NetworkSettings",
    );
    assert_eq!(ns["SandboxKey"], "/run/netns/s1", "{v:#}");
    assert_eq!(ns["IPAddress"], "172.17.0.2", "{v:#}");
    assert_eq!(ns["IPPrefixLen"], 16, "{v:#}");
    assert_eq!(ns["Gateway"], "172.17.0.1", "{v:#}");
    assert_eq!(ns["MacAddress"], "02:42:ac:11:00:02", "{v:#}");
    for net in ["bridge", "net1"] {
        let ep = jget(ns, &format!("/Networks/{net}"));
        assert_fields(
            ep,
            &[
                "NetworkID",
                "EndpointID",
                "Gateway",
                "IPAddress",
                "IPPrefixLen",
                "MacAddress",
                "Aliases",
                "Links",
            ],
            &format!("inspect s1 Networks.{net}"),
        );
        let netv = h.network_inspect(net);
        assert_eq!(ep["NetworkID"], netv["Id"], "NetworkID of s1 on {net}");
        // The endpoint appears in the network's Containers with the same id.
        let eid = ep["EndpointID"].as_str().unwrap_or("");
        assert!(!eid.is_empty(), "{ep:#}");
        let found = jget(&netv, "/Containers")
            .as_object()
            .unwrap()
            .values()
            .any(|c| c["EndpointID"] == eid && c["Name"] == "s1");
        assert!(
            found,
            "endpoint {eid} of s1 not in network {net}:\n{netv:#}"
        );
    }
    assert_eq!(jstr(ns, "/Networks/net1/IPAddress"), "172.18.0.2");
    assert_eq!(jstr(ns, "/Networks/net1/Gateway"), "172.18.0.1");
    assert_eq!(jstr(ns, "/Networks/net1/MacAddress"), "02:42:ac:12:00:02");

    let v = h.inspect("s2");
    assert_eq!(jstr(&v, "/HostConfig/NetworkMode"), "net1");
    let ns = jget(&v, "/NetworkSettings");
    assert_eq!(ns["IPAddress"], "", "s2 is not on bridge:\n{v:#}");
    assert_eq!(ns["Gateway"], "", "s2 is not on bridge:\n{v:#}");
    assert_eq!(ns["MacAddress"], "", "s2 is not on bridge:\n{v:#}");
    assert_eq!(ns["IPPrefixLen"], 0, "s2 is not on bridge:\n{v:#}");
    assert_eq!(jstr(ns, "/Networks/net1/IPAddress"), "172.18.0.3");
    assert!(ns.pointer("/Networks/bridge").is_none(), "{v:#}");

    // Several names → one object each, in order.
    let both = h.bpfnet_json(&["inspect", "s2", "s1"]);
    let names: Vec<&str> = both
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Name"].as_str().unwrap_or("").trim_start_matches('/'))
        .collect();
    assert_eq!(names, vec!["s2", "s1"]);
}

#[test]
fn network_inspect_uses_docker_field_names() {
    let h = TestHost::new("network-inspect");
    h.bpfnet_ok(&[
        "network",
        "create",
        "--subnet",
        "10.42.0.0/24",
        "--gateway",
        "10.42.0.254",
        "net1",
    ]);
    h.create("s1", &["net1"]);
    let v = h.network_inspect("net1");
    assert_fields(
        &v,
        &[
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Containers",
            "Options",
            "Labels",
        ],
        "network inspect net1",
    );
    assert_eq!(v["Name"], "net1");
    assert_eq!(v["Driver"], "bridge");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["EnableIPv6"], false);
    assert_eq!(v["Internal"], false);
    assert_eq!(jstr(&v, "/IPAM/Config/0/Subnet"), "10.42.0.0/24");
    assert_eq!(jstr(&v, "/IPAM/Config/0/Gateway"), "10.42.0.254");
    assert!(v["IPAM"].get("Driver").is_some(), "{v:#}");
    let cs = jget(&v, "/Containers").as_object().unwrap();
    assert_eq!(cs.len(), 1, "{v:#}");
    let c = cs.values().next().unwrap();
    assert_fields(
        c,
        &[
            "Name",
            "EndpointID",
            "MacAddress",
            "IPv4Address",
            "IPv6Address",
        ],
        "Containers entry",
    );
    assert_eq!(c["Name"], "s1");
    let addr = jstr(c, "/IPv4Address");
    let ip = addr
        .strip_suffix("/24")
        .filter(|ip| ip.starts_with("10.42.0.") && *ip != "10.42.0.254")
        .unwrap_or_else(|| panic!("IPv4Address {addr} not a host of 10.42.0.0/24:\n{v:#}"));
    assert_eq!(c["MacAddress"], docker_mac(ip));
    assert_eq!(h.ipv4_addrs("s1", "eth0"), vec![addr.to_string()]);
    let route = h.exec_ok("s1", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.42.0.254"), "{route}");
    assert_eq!(c["IPv6Address"], "");

    let b = h.network_inspect("bridge");
    assert_eq!(jstr(&b, "/IPAM/Config/0/Subnet"), "172.17.0.0/16");
    assert_eq!(jstr(&b, "/IPAM/Config/0/Gateway"), "172.17.0.1");
    let internal = {
        h.bpfnet_ok(&["network", "create", "--internal", "net2"]);
        h.network_inspect("net2")
    };
    assert_eq!(internal["Internal"], true, "{internal:#}");
    // 10.42.0.0/24 was given explicitly: the pool still starts at 172.18.
    assert_eq!(jstr(&internal, "/IPAM/Config/0/Subnet"), "172.18.0.0/16");
}
