//! Concurrent invocations serialise on the state lock.

use std::time::Duration;

use bpfnet_tests::TestHost;

/// Ten `create`s at once all succeed, with ten distinct addresses and
/// working connectivity.
#[test]
fn concurrent_creates_get_distinct_addresses() {
    let h = TestHost::new("concurrent");
    h.bpfnet_ok(&["network", "create", "net1"]);
    let names: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let mut jobs: Vec<_> = names
        .iter()
        .map(|n| h.bpfnet_spawn(&["create", "--name", n, "--network", "net1"]))
        .collect();
    for j in &mut jobs {
        j.finish_ok(Duration::from_secs(60));
    }
    let mut ips: Vec<String> = names.iter().map(|n| h.ip_on(n, "net1")).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 10, "addresses not distinct: {ips:?}");
    let mut want: Vec<String> = (2..12).map(|i| format!("172.18.0.{i}")).collect();
    want.sort();
    assert_eq!(ips, want);
    h.assert_ping(Some("p0"), &h.ip_on("p9", "net1"));
    h.assert_ping(Some("p9"), &h.ip_on("p0", "net1"));
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    assert_eq!(ps.as_array().map(Vec::len), Some(10), "{ps:#}");
    // And ten concurrent removals leave nothing.
    let mut jobs: Vec<_> = names
        .iter()
        .map(|n| h.bpfnet_spawn(&["rm", "-f", n]))
        .collect();
    for j in &mut jobs {
        j.finish_ok(Duration::from_secs(60));
    }
    assert!(h.netns_list().is_empty(), "{:?}", h.netns_list());
    assert_eq!(h.links_settled(&["lo"]), vec!["lo"]);
    h.assert_no_kernel_bridge();
}
