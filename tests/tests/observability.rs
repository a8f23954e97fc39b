//! `stats`, `monitor` and `datapath unload`.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use bpfnet_tests::TestHost;

fn endpoint<'a>(stats: &'a Value, sandbox: &str, net: &str) -> &'a Value {
    stats["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("stats has no `endpoints` array:\n{stats:#}"))
        .iter()
        .find(|e| e["sandbox"] == sandbox && e["network"] == net)
        .unwrap_or_else(|| panic!("no endpoint {sandbox}/{net} in stats:\n{stats:#}"))
}

fn counter(e: &Value, name: &str) -> u64 {
    e[name]
        .as_u64()
        .unwrap_or_else(|| panic!("endpoint has no counter `{name}`:\n{e:#}"))
}

/// Pings from x to y show up in x's rx/forwarded and y's tx counters;
/// `stats SANDBOX` lists only that sandbox's endpoints.
#[test]
fn stats_count_packets_per_endpoint() {
    let h = TestHost::new("stats");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("x", &["net1"]);
    h.create("y", &["net1"]);
    let y = h.ip_on("y", "net1");
    h.assert_ping(Some("x"), &y);
    let before = h.stats();
    let o = h.exec_in("x", &["ping", "-n", "-q", "-c", "10", "-i", "0.05", &y]);
    assert!(o.success(), "{o}");
    let after = h.stats();
    let (xb, xa) = (
        endpoint(&before, "x", "net1"),
        endpoint(&after, "x", "net1"),
    );
    let (yb, ya) = (
        endpoint(&before, "y", "net1"),
        endpoint(&after, "y", "net1"),
    );
    assert_eq!(xa["interface"], "eth0", "{xa:#}");
    for (e0, e1, c) in [
        (xb, xa, "rx_packets"),
        (xb, xa, "forwarded"),
        (yb, ya, "tx_packets"),
        (yb, ya, "rx_packets"),
        (yb, ya, "forwarded"),
        (xb, xa, "tx_packets"),
    ] {
        let (b, a) = (counter(e0, c), counter(e1, c));
        assert!(
            a >= b + 10,
            "{c} of {} went {b} → {a}, expected +10:\n{after:#}",
            e1["sandbox"]
        );
    }
    assert!(counter(xa, "rx_bytes") >= counter(xb, "rx_bytes") + 10 * 84);
    let only_x = h.bpfnet_json(&["stats", "x", "--format", "json"]);
    let sandboxes: Vec<&Value> = only_x["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{only_x:#}"))
        .iter()
        .map(|e| &e["sandbox"])
        .collect();
    assert!(
        !sandboxes.is_empty() && sandboxes.iter().all(|s| *s == "x"),
        "stats x lists {sandboxes:?}"
    );
    // The table form works too.
    let table = h.bpfnet_ok(&["stats"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("x ") && l.contains("net1")),
        "{table}"
    );
}

/// `monitor` prints one line per dropped packet, naming the reason.
#[test]
fn monitor_streams_one_line_per_dropped_packet_with_its_reason() {
    let h = TestHost::new("monitor");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("x", &["net1"]);
    h.create("y", &["net1"]);
    let (y_ip, x_mac, y_mac) = (
        h.ip_on("y", "net1"),
        h.mac_of("x", "eth0"),
        h.mac_of("y", "eth0"),
    );
    let mut mon = h.bpfnet_spawn(&["monitor"]);
    thread::sleep(Duration::from_millis(500));
    let forged = format!("{x_mac},{y_mac},172.18.0.99,{y_ip},bntmonit");
    let o = h.py_in(Some("x"), &["sendp", "eth0", "3", &forged]);
    assert!(o.success(), "{o}");
    mon.wait_contains("spoofed-source-ip", 3, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(300));
    let lines: Vec<String> = mon
        .lines()
        .into_iter()
        .filter(|l| l.contains("spoofed-source-ip"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per dropped packet: {lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("172.18.0.99")),
        "the forged source should appear in the line: {lines:#?}"
    );
}

/// `datapath unload` removes sandboxes, links, pins and state; the next
/// command loads everything again.
#[test]
fn datapath_unload_removes_everything_bpfnet_made() {
    let h = TestHost::new("unload");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &[]);
    assert!(h.sh("test -d /sys/fs/bpf/bpfnet").success());
    h.bpfnet_ok(&["datapath", "unload"]);
    assert!(
        h.netns_list().is_empty(),
        "netns left: {:?}",
        h.netns_list()
    );
    assert_eq!(h.link_names(None), vec!["lo"], "links left");
    // (bpffs always holds the kernel's maps.debug and progs.debug.)
    let pins = h.sh_ok("ls -A /sys/fs/bpf/");
    let ours: Vec<&str> = pins.lines().filter(|p| !p.ends_with(".debug")).collect();
    assert!(ours.is_empty(), "pins left in /sys/fs/bpf: {ours:?}");
    let addrs = h.ok(&["ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("172.1"), "addresses left:\n{addrs}");
    // Everything comes back on demand.
    h.create("c", &[]);
    assert_eq!(h.ip_on("c", "bridge"), "172.17.0.2");
    h.assert_ping(None, "172.17.0.2");
    let nets = h.bpfnet_json(&["network", "ls", "--format", "json"]);
    assert_eq!(
        nets.as_array().map(Vec::len),
        Some(3),
        "only built-ins: {nets:#}"
    );
}
