//! Map capacity: an operation that would overflow one of the datapath's maps
//! is refused with a line naming the limit, and nothing changes; broadcast
//! above its port limit is announced, not lost silently. The limits are
//! lowered through `BPFNET_TEST_MAX_*` so that they are reached quickly.
use bpfnet_tests::{Output, TestHost};

fn with_env(h: &TestHost, env: &str, args: &[&str]) -> Output {
    let mut v = vec!["env", env, h.bin_path()];
    v.extend_from_slice(args);
    h.run(&v)
}

fn state_file(h: &TestHost) -> String {
    // The snapshot and the log of changes after it.
    let root = h.root.display();
    h.sh_ok(&format!(
        "cat {root}/state.json {root}/state.log | sha256sum"
    ))
}

#[test]
fn the_endpoint_that_would_overflow_the_endpoint_maps_is_refused() {
    let h = TestHost::new("cap-endpoints");
    h.bpfnet_ok(&["network", "create", "net1"]);
    let limit = "BPFNET_TEST_MAX_ENDPOINTS=3";
    for name in ["a", "b", "c"] {
        let o = with_env(&h, limit, &["create", "--name", name, "--network", "net1"]);
        assert!(o.success(), "{o}");
    }
    let (snap, file) = (h.snapshot(), state_file(&h));
    let o = with_env(&h, limit, &["create", "--name", "d", "--network", "net1"]);
    assert!(!o.success(), "{o}");
    assert_eq!(
        o.stderr.trim(),
        "Error: bpfnet holds at most 3 endpoints (the size of the datapath's endpoint maps) and all are in use; remove sandboxes or disconnect them first",
    );
    assert_eq!(h.snapshot(), snap, "a refused create changed the host");
    assert_eq!(state_file(&h), file, "a refused create changed the state");
    assert!(!h.netns_list().contains(&"d".to_string()));
    // Freeing one makes room again, and the others still work.
    h.bpfnet_ok(&["rm", "c"]);
    let o = with_env(&h, limit, &["create", "--name", "d", "--network", "net1"]);
    assert!(o.success(), "{o}");
    h.assert_ping(Some("d"), &h.ip_on("a", "net1"));
}

#[test]
fn the_network_that_would_overflow_the_network_maps_is_refused() {
    let h = TestHost::new("cap-networks");
    h.bpfnet_ok(&["datapath", "load"]);
    // The default bridge has id 1; a limit of 3 leaves room for one more.
    let limit = "BPFNET_TEST_MAX_NETWORKS=3";
    let o = with_env(&h, limit, &["network", "create", "n1"]);
    assert!(o.success(), "{o}");
    let (snap, file) = (h.snapshot(), state_file(&h));
    let o = with_env(&h, limit, &["network", "create", "n2"]);
    assert!(!o.success(), "{o}");
    assert_eq!(
        o.stderr.trim(),
        "Error: bpfnet holds at most 2 networks (the size of the datapath's network maps) and all are in use; remove a network first",
    );
    assert_eq!(h.snapshot(), snap);
    assert_eq!(state_file(&h), file);
}

#[test]
fn broadcast_above_its_port_limit_is_announced() {
    let h = TestHost::new("cap-flood");
    h.bpfnet_ok(&["network", "create", "net1"]);
    for i in 0..64 {
        let o = h.bpfnet(&["create", "--name", &format!("s{i}"), "--network", "net1"]);
        assert!(o.success() && o.stderr.is_empty(), "{o}");
    }
    let o = h.bpfnet(&["create", "--name", "s64", "--network", "net1"]);
    assert!(o.success(), "{o}");
    assert_eq!(
        o.stderr.trim(),
        "warning: network \"net1\" has 65 endpoints; broadcast and multicast reach only the first 64 (unicast, ARP and names are not affected)"
    );
    let reach = h.network_inspect("net1")["BroadcastReach"].clone();
    assert_eq!(reach, serde_json::json!({"Members": 65, "Reached": 64}));
    // Unicast to the 65th still works.
    h.assert_ping(Some("s0"), &h.ip_on("s64", "net1"));
}
