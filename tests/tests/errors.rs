//! Bad input: one `Error:` line naming the object, non-zero exit, and no
//! state change (networks, sandboxes, links, addresses, netns all unchanged).

use bpfnet_tests::{assert_error, TestHost};

/// Runs `bpfnet ARGS`, expecting a one-line error that says one of `any_of`
/// and names `object`, and leaves the state as it was.
fn rejected(h: &TestHost, args: &[&str], any_of: &[&str], object: &str) {
    let before = h.snapshot();
    let o = h.bpfnet_fail(args);
    assert_error(&o, any_of, object);
    let after = h.snapshot();
    assert_eq!(
        before,
        after,
        "state changed by the failed `bpfnet {}`",
        args.join(" ")
    );
}

fn host(name: &str) -> TestHost {
    let h = TestHost::new(name);
    // Load the datapath so that the snapshot doesn't see it appear.
    h.bpfnet_ok(&["datapath", "load"]);
    h
}

#[test]
fn invalid_network_name_is_rejected() {
    let h = host("err-net-name");
    rejected(
        &h,
        &["network", "create", "bad name!"],
        &["invalid"],
        "bad name!",
    );
}

#[test]
fn invalid_sandbox_name_is_rejected() {
    let h = host("err-sb-name");
    rejected(
        &h,
        &["create", "--name", "../evil"],
        &["invalid"],
        "../evil",
    );
}

#[test]
fn malformed_subnet_is_rejected() {
    let h = host("err-subnet");
    rejected(
        &h,
        &["network", "create", "--subnet", "10.0.0.0/33", "net1"],
        &["invalid", "malformed"],
        "10.0.0.0/33",
    );
}

#[test]
fn overlapping_subnet_is_rejected() {
    let h = host("err-overlap");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    rejected(
        &h,
        &["network", "create", "--subnet", "10.10.0.0/16", "net2"],
        &["overlap"],
        "10.10.0.0/16",
    );
    rejected(
        &h,
        &["network", "create", "--subnet", "10.10.128.0/24", "net3"],
        &["overlap"],
        "10.10.128.0/24",
    );
    // The built-in bridge's subnet is taken too.
    rejected(
        &h,
        &["network", "create", "--subnet", "172.17.0.0/24", "net4"],
        &["overlap"],
        "172.17.0.0/24",
    );
}

#[test]
fn gateway_outside_subnet_is_rejected() {
    let h = host("err-gw");
    rejected(
        &h,
        &[
            "network",
            "create",
            "--subnet",
            "10.20.0.0/24",
            "--gateway",
            "10.21.0.1",
            "net1",
        ],
        &["outside", "not in"],
        "10.21.0.1",
    );
}

#[test]
fn duplicate_network_name_is_rejected() {
    let h = host("err-dup-net");
    h.bpfnet_ok(&["network", "create", "net1"]);
    rejected(
        &h,
        &["network", "create", "net1"],
        &["already exists"],
        "net1",
    );
    rejected(
        &h,
        &["network", "create", "bridge"],
        &["already exists"],
        "bridge",
    );
}

#[test]
fn ip_already_taken_is_rejected() {
    let h = host("err-ip-taken");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create_with_ip("a", "net1", "172.18.0.9");
    rejected(
        &h,
        &[
            "create",
            "--name",
            "b",
            "--network",
            "net1",
            "--ip",
            "172.18.0.9",
        ],
        &["in use", "taken", "already allocated", "already assigned"],
        "172.18.0.9",
    );
    // The gateway address is taken as well.
    rejected(
        &h,
        &[
            "create",
            "--name",
            "c",
            "--network",
            "net1",
            "--ip",
            "172.18.0.1",
        ],
        &[
            "in use",
            "taken",
            "gateway",
            "already allocated",
            "reserved",
        ],
        "172.18.0.1",
    );
}

#[test]
fn ip_outside_subnet_is_rejected() {
    let h = host("err-ip-outside");
    h.bpfnet_ok(&["network", "create", "net1"]);
    rejected(
        &h,
        &[
            "create",
            "--name",
            "a",
            "--network",
            "net1",
            "--ip",
            "10.1.2.3",
        ],
        &["outside", "not in"],
        "10.1.2.3",
    );
}

#[test]
fn exhausted_address_pool_is_rejected() {
    let h = host("err-exhausted");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.99.0.0/30", "tiny"]);
    h.create("a", &["tiny"]);
    assert_eq!(h.ip_on("a", "tiny"), "10.99.0.2");
    rejected(
        &h,
        &["create", "--name", "b", "--network", "tiny"],
        &["exhausted", "no free", "no more", "no available"],
        "tiny",
    );
    h.create("c", &[]);
    rejected(
        &h,
        &["network", "connect", "tiny", "c"],
        &["exhausted", "no free", "no more", "no available"],
        "tiny",
    );
}

#[test]
fn unknown_network_is_rejected() {
    let h = host("err-unknown-net");
    h.create("s", &[]);
    let nf = &["not found", "no such"];
    rejected(
        &h,
        &["create", "--name", "a", "--network", "nosuchnet"],
        nf,
        "nosuchnet",
    );
    rejected(
        &h,
        &["network", "connect", "nosuchnet", "s"],
        nf,
        "nosuchnet",
    );
    rejected(&h, &["network", "inspect", "nosuchnet"], nf, "nosuchnet");
    rejected(&h, &["network", "rm", "nosuchnet"], nf, "nosuchnet");
}

#[test]
fn unknown_sandbox_is_rejected() {
    let h = host("err-unknown-sb");
    h.bpfnet_ok(&["network", "create", "net1"]);
    let nf = &["not found", "no such"];
    rejected(&h, &["inspect", "ghost"], nf, "ghost");
    rejected(&h, &["rm", "ghost"], nf, "ghost");
    rejected(&h, &["network", "connect", "net1", "ghost"], nf, "ghost");
    rejected(&h, &["network", "disconnect", "net1", "ghost"], nf, "ghost");
}

#[test]
fn duplicate_sandbox_name_is_rejected() {
    let h = host("err-dup-sb");
    h.create("a", &[]);
    rejected(&h, &["create", "--name", "a"], &["already exists"], "a");
}

/// A netns that bpfnet doesn't own is neither taken over nor deleted.
#[test]
fn foreign_netns_with_the_same_name_is_rejected_and_kept() {
    let h = host("err-foreign-netns");
    h.ok(&["ip", "netns", "add", "foo"]);
    h.ok(&[
        "ip", "-n", "foo", "link", "add", "marker0", "type", "veth", "peer", "name", "marker1",
    ]);
    rejected(&h, &["create", "--name", "foo"], &["exists"], "foo");
    assert!(h.netns_list().contains(&"foo".to_string()));
    assert!(h.link_names(Some("foo")).contains(&"marker0".to_string()));
    rejected(
        &h,
        &["rm", "-f", "foo"],
        &["not found", "not managed", "no such"],
        "foo",
    );
    h.bpfnet_ok(&["gc"]);
    assert!(
        h.link_names(Some("foo")).contains(&"marker0".to_string()),
        "gc touched a netns that bpfnet doesn't own"
    );
}

#[test]
fn removing_a_network_with_endpoints_is_rejected() {
    let h = host("err-net-in-use");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    rejected(
        &h,
        &["network", "rm", "net1"],
        &["has 1 endpoint", "in use", "active endpoint"],
        "net1",
    );
}

#[test]
fn removing_a_builtin_network_is_rejected() {
    let h = host("err-net-builtin");
    for net in ["bridge", "host", "none"] {
        rejected(
            &h,
            &["network", "rm", net],
            &[
                "pre-defined",
                "predefined",
                "built-in",
                "builtin",
                "cannot be removed",
            ],
            net,
        );
    }
}

#[test]
fn connecting_twice_is_rejected() {
    let h = host("err-connect-twice");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    rejected(
        &h,
        &["network", "connect", "net1", "a"],
        &["already connected"],
        "a",
    );
}

#[test]
fn disconnecting_what_is_not_connected_is_rejected() {
    let h = host("err-disconnect");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &[]);
    rejected(
        &h,
        &["network", "disconnect", "net1", "a"],
        &["not connected"],
        "a",
    );
}

#[test]
fn container_mode_of_unknown_sandbox_is_rejected() {
    let h = host("err-container-unknown");
    rejected(
        &h,
        &["create", "--name", "c", "--network", "container:ghost"],
        &["not found", "no such"],
        "ghost",
    );
}

#[test]
fn container_mode_of_a_host_mode_sandbox_is_rejected() {
    let h = host("err-container-host");
    h.create("hst", &["host"]);
    rejected(
        &h,
        &["create", "--name", "c", "--network", "container:hst"],
        &["host"],
        "hst",
    );
}

#[test]
fn exec_in_a_missing_sandbox_is_rejected() {
    let h = host("err-exec-missing");
    rejected(
        &h,
        &["exec", "ghost", "--", "true"],
        &["not found", "no such"],
        "ghost",
    );
}

#[test]
fn connecting_a_none_or_host_sandbox_is_rejected() {
    let h = host("err-connect-modes");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("n", &["none"]);
    h.create("hst", &["host"]);
    rejected(&h, &["network", "connect", "net1", "n"], &["none"], "n");
    rejected(&h, &["network", "connect", "net1", "hst"], &["host"], "hst");
}

/// A create that fails on its second network leaves nothing of the first
/// (no netns, no veth, no address taken).
#[test]
fn a_create_failing_halfway_undoes_what_it_made() {
    let h = host("err-halfway");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "create", "--subnet", "10.98.0.0/30", "tiny"]);
    h.create("a", &["tiny"]);
    rejected(
        &h,
        &[
            "create",
            "--name",
            "b",
            "--network",
            "net1",
            "--network",
            "tiny",
        ],
        &["exhausted", "no free", "no more", "no available"],
        "tiny",
    );
    // net1's first address is still free.
    h.create("c", &["net1"]);
    assert_eq!(h.ip_on("c", "net1"), "172.18.0.2");
}

/// `gc` reconciles: a sandbox whose namespace vanished behind bpfnet's back
/// is forgotten, a stray veth bpfnet made (its shape and bpfnet's alias
/// naming an endpoint that is gone) is deleted, each reported; a link that
/// merely looks like one of ours — by its name, even its exact shape — is
/// left alone.
#[test]
fn gc_removes_and_reports_leftovers_and_nothing_else() {
    let h = host("gc-leftovers");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    // What bpfnet makes carries its alias, naming the endpoint.
    let b_veth = h.host_veth("b", "eth0");
    let shown = h.ok(&["ip", "-o", "link", "show", &b_veth]);
    assert!(shown.contains("alias bpfnet:endpoint:"), "{shown}");
    h.ok(&["ip", "netns", "del", "a"]);
    h.ok(&[
        "ip",
        "link",
        "add",
        "bn0123456789",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
    ]);
    h.ok(&[
        "ip",
        "link",
        "set",
        "bn0123456789",
        "alias",
        "bpfnet:endpoint:0123456789abcdef",
    ]);
    h.ok(&[
        "ip", "link", "add", "bnotours", "type", "veth", "peer", "name", "x1",
    ]);
    h.ok(&[
        "ip",
        "link",
        "add",
        "bnabcdefabcd",
        "type",
        "veth",
        "peer",
        "name",
        "x2",
    ]);
    let out = h.bpfnet_ok(&["gc"]);
    assert!(out.contains("removed sandbox a"), "{out}");
    assert!(out.contains("removed link bn0123456789"), "{out}");
    assert!(!out.contains("bnotours"), "{out}");
    assert!(!out.contains("bnabcdefabcd"), "{out}");
    let links = h.link_names(None);
    assert!(!links.contains(&"bn0123456789".to_string()), "{links:?}");
    assert!(links.contains(&"bnotours".to_string()), "{links:?}");
    assert!(
        links.contains(&"bnabcdefabcd".to_string()),
        "a veth of bpfnet's name shape but without its alias was removed: {links:?}"
    );
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    let names: Vec<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Names"].as_str())
        .collect();
    assert_eq!(names, ["b"], "{ps:#}");
    // a's datapath entries and attachment went with it.
    assert_eq!(
        h.map_dump("ENDPOINTS").len(),
        1,
        "{:?}",
        h.map_dump("ENDPOINTS")
    );
    assert_eq!(h.map_dump("FDB").len(), 1, "{:?}", h.map_dump("FDB"));
    let filters = h.tc_filters();
    let vb = h.host_veth("b", "eth0");
    assert!(
        filters.len() == 2 && filters.iter().all(|f| f.link == vb),
        "only b's veth should carry filters (ingress and egress): {filters:?}"
    );
    // b still works, and a second gc finds nothing.
    h.assert_ping(None, &h.ip_on("b", "net1"));
    assert!(h.bpfnet_ok(&["gc"]).contains("nothing to remove"));
}
