//! Detaching: traffic stops at once, and endpoint churn leaves no map entry,
//! link, filter or pin behind.

use std::time::Instant;

use bpfnet_tests::TestHost;

/// Right after `network disconnect` returns, the sandbox is unreachable (no
/// retry, no grace period) and has no interface on that network any more.
#[test]
fn network_disconnect_stops_the_sandboxs_traffic_at_once() {
    let h = TestHost::new("disconnect-now");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let b = h.ip_on("b", "net1");
    h.assert_ping(Some("a"), &b);
    h.assert_ping(None, &b);
    h.bpfnet_ok(&["network", "disconnect", "net1", "b"]);
    let o = h.exec_in("a", &["ping", "-n", "-c", "1", "-W", "1", &b]);
    assert!(!o.success(), "a still reaches b after disconnect:\n{o}");
    let o = h.run(&["ping", "-n", "-c", "1", "-W", "1", &b]);
    assert!(
        !o.success(),
        "the host still reaches b after disconnect:\n{o}"
    );
    assert_eq!(h.link_names(Some("b")), vec!["lo"], "b keeps an interface");
    let v = h.inspect("b");
    assert!(
        v.pointer("/NetworkSettings/Networks/net1").is_none(),
        "inspect b still lists net1:\n{v:#}"
    );
    h.assert_no_kernel_bridge();
}

/// 100 sandboxes × 2 networks = 200 endpoints created, then disconnected or
/// removed: the endpoint, FDB and neighbour maps end empty, the host has only
/// `lo` (so no qdisc or filter), and only program and map pins remain.
#[test]
fn churn_of_200_endpoints_leaves_no_map_entry_link_or_pin() {
    let h = TestHost::new("churn");
    let start = Instant::now();
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.bpfnet_ok(&["network", "create", "net2"]);
    let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    for n in &names {
        h.create(n, &["net1"]);
        h.bpfnet_ok(&["network", "connect", "net2", n]);
    }
    // Sanity: the maps we check below really hold the endpoints.
    let eps = h.map_dump("ENDPOINTS").len();
    let fdb = h.map_dump("FDB").len();
    assert!(
        eps >= 200 && fdb >= 200,
        "with 200 endpoints: ENDPOINTS has {eps}, FDB has {fdb} entries"
    );
    // Spot check that the last ones work.
    h.assert_ping(Some("s99"), &h.ip_on("s98", "net2"));

    for (i, n) in names.iter().enumerate() {
        if i % 2 == 0 {
            h.bpfnet_ok(&["network", "disconnect", "net2", n]);
        }
    }
    for chunk in names.chunks(10) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        h.bpfnet_ok(&args);
    }
    h.bpfnet_ok(&["network", "rm", "net1", "net2"]);

    for map in ["ENDPOINTS", "FDB", "NEIGHBOURS"] {
        let entries = h.map_dump(map);
        assert!(
            entries.is_empty(),
            "{map} keeps {} entries after all endpoints are gone, e.g. {:#}",
            entries.len(),
            entries[0]
        );
    }
    assert_eq!(
        h.links_settled(&["lo"]),
        vec!["lo"],
        "links left in the host"
    );
    assert!(
        h.netns_list().is_empty(),
        "netns left: {:?}",
        h.netns_list()
    );
    assert!(
        h.tc_filters().is_empty(),
        "filters left: {:?}",
        h.tc_filters()
    );
    assert!(
        h.clsact_links().is_empty(),
        "qdiscs left: {:?}",
        h.clsact_links()
    );
    let pins = h.sh_ok("find /sys/fs/bpf/bpfnet -mindepth 1 ! -type d");
    let stray: Vec<&str> = pins
        .lines()
        .filter(|p| !p.contains("/maps/") && !p.contains("/progs/") && !p.contains("/programs/"))
        .collect();
    assert!(
        stray.is_empty(),
        "pins besides programs and maps: {stray:?}"
    );
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "ps after rm: {ps:#}");
    h.assert_no_kernel_bridge();
    eprintln!("churn took {:?}", start.elapsed());
}
