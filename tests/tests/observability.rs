//! `stats`, `monitor` and `datapath unload`.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use bpfnet_tests::{jstr, Bg, TestHost};

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

/// Sends, from `x`, `n` frames with a forged source address `src` (dropped
/// as spoofed-source-ip).
fn forge(h: &TestHost, x: &str, y: &str, net: &str, src: &str, n: u32) {
    let (y_ip, x_mac, y_mac) = (h.ip_on(y, net), h.mac_of(x, "eth0"), h.mac_of(y, "eth0"));
    let spec = format!("{x_mac},{y_mac},{src},{y_ip},bntmonit");
    let o = h.py_in(Some(x), &["sendp", "eth0", &n.to_string(), &spec]);
    assert!(o.success(), "{o}");
}

/// Waits until `monitor` is live: sends one probe drop (source `probe`) at a
/// time until a line shows it. Whatever it printed before that line, it
/// printed before the probe.
fn wait_monitor_live(h: &TestHost, mon: &Bg, x: &str, y: &str, net: &str, probe: &str) {
    for _ in 0..20 {
        forge(h, x, y, net, probe, 1);
        thread::sleep(Duration::from_millis(200));
        if mon.lines().iter().any(|l| l.contains(probe)) {
            return;
        }
    }
    panic!("monitor never showed a probe drop:\n{:#?}", mon.lines());
}

/// `monitor` prints one line per dropped packet, naming the reason.
#[test]
fn monitor_streams_one_line_per_dropped_packet_with_its_reason() {
    let h = TestHost::new("monitor");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("x", &["net1"]);
    h.create("y", &["net1"]);
    let mut mon = h.bpfnet_spawn(&["monitor"]);
    wait_monitor_live(&h, &mon, "x", "y", "net1", "172.18.0.98");
    forge(&h, "x", "y", "net1", "172.18.0.99", 3);
    mon.wait_contains("172.18.0.99", 3, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(300));
    let lines: Vec<String> = mon
        .lines()
        .into_iter()
        .filter(|l| l.contains("172.18.0.99"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per dropped packet: {lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("spoofed-source-ip")),
        "the reason should appear in the line: {lines:#?}"
    );
}

/// Unix time in nanoseconds of an RFC 3339 UTC timestamp
/// (`2026-12-02T02:40:01.123456789Z`), None if it is not one.
fn parse_rfc3339(t: &str) -> Option<i128> {
    let b = t.as_bytes();
    if b.len() != 30 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[29] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ns) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..29)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(i128::from(
        (days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000_000 + ns,
    ))
}

fn unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128
}

/// Drops that happened before `monitor` started are not shown as if they
/// were new (the pinned ring buffer still holds them); drops after are, each
/// line starting with the time it was seen.
#[test]
fn monitor_shows_only_drops_after_it_starts_each_with_a_timestamp() {
    let h = TestHost::new("monitor-fresh");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("x", &["net1"]);
    h.create("y", &["net1"]);
    let spoofed = h.drops("spoofed-source-ip");
    forge(&h, "x", "y", "net1", "172.18.0.97", 3);
    assert_eq!(
        h.drops("spoofed-source-ip"),
        spoofed + 3,
        "the stale drops should have happened (and been counted)"
    );
    let started = unix_nanos();
    let mut mon = h.bpfnet_spawn(&["monitor"]);
    wait_monitor_live(&h, &mon, "x", "y", "net1", "172.18.0.98");
    forge(&h, "x", "y", "net1", "172.18.0.96", 2);
    mon.wait_contains("172.18.0.96", 2, Duration::from_secs(5));
    let seen = unix_nanos();
    let out = mon.stop();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        !out.stdout.contains("172.18.0.97"),
        "drops from before monitor started were shown:\n{out}"
    );
    assert!(
        out.stderr.contains("skipped"),
        "monitor should say it skipped the stale events:\n{out}"
    );
    let mut last = started;
    for l in &lines {
        let ts = l.split(' ').next().unwrap_or_default();
        let t = parse_rfc3339(ts)
            .unwrap_or_else(|| panic!("line does not start with an RFC 3339 timestamp: {l:?}"));
        assert!(
            (last..=seen).contains(&t),
            "timestamp {ts} is not between the start of monitor (or the previous line) and now:\n{out}"
        );
        last = t;
    }
    assert!(
        lines.iter().filter(|l| l.contains("172.18.0.96")).count() == 2,
        "{out}"
    );
}

/// A sandbox whose namespace a process still holds does not die with
/// `datapath unload`'s batch: its veth is deleted all the same.
#[test]
fn unload_removes_the_veth_of_a_namespace_a_process_still_holds() {
    let h = TestHost::new("unload-held");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let mut holder = h.spawn(&["ip", "netns", "exec", "a", "sleep", "60"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    h.bpfnet_ok(&["datapath", "unload"]);
    assert_eq!(h.link_names(None), vec!["lo"], "links left");
    assert!(
        h.netns_list().is_empty(),
        "netns left: {:?}",
        h.netns_list()
    );
    holder.stop();
}

/// `rm` leaves the veth pair to die with the namespace; one that a process
/// still holds keeps it, carrying nothing, until `gc` deletes it.
#[test]
fn rm_leaves_the_veth_to_its_namespace_and_gc_takes_one_a_process_holds() {
    let h = TestHost::new("rm-held");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    h.create("c", &["net1"]);
    let veth = |name: &str| {
        jstr(
            &h.inspect(name),
            "/NetworkSettings/Networks/net1/EndpointID",
        )[..10]
            .to_string()
    };
    let (va, vb) = (format!("bn{}", veth("a")), format!("bn{}", veth("b")));
    let c_ip = h.ip_on("c", "net1");
    h.bpfnet_ok(&["rm", "b"]);
    let settled = h.links_settled(&["lo", &va, &format!("bn{}", veth("c"))]);
    assert!(
        !settled.contains(&vb),
        "b's veth outlived its namespace: {settled:?}"
    );

    // a's namespace is held: its pair lives on, but the datapath has
    // forgotten it (nothing it sends arrives), and gc deletes it.
    let mut holder = h.spawn(&["ip", "netns", "exec", "a", "sleep", "60"]);
    std::thread::sleep(Duration::from_millis(200));
    let before = h.drops("not-an-endpoint");
    h.bpfnet_ok(&["rm", "a"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        h.link_names(None).contains(&va),
        "the held pair is gone already"
    );
    let pid = holder.pid().to_string();
    let sent = h.run(&[
        "nsenter", "-t", &pid, "-n", "ping", "-c", "2", "-W", "1", "-i", "0.2", &c_ip,
    ]);
    assert!(!sent.success(), "a held namespace reached c after rm");
    assert!(
        h.drops("not-an-endpoint") > before,
        "the datapath did not drop what it sent"
    );
    let out = h.bpfnet_ok(&["gc"]);
    assert!(out.contains(&format!("removed link {va}")), "{out}");
    assert!(!h.link_names(None).contains(&va), "gc left {va}");
    holder.stop();
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
