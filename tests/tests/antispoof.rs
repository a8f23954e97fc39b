//! Anti-spoofing and ARP: forged sources are dropped and counted, ARP can't
//! be poisoned, ARP doesn't cross networks.

use std::thread;
use std::time::Duration;

use bpfnet_tests::TestHost;

/// Sandboxes x and y on net1, with their addresses and MACs.
struct Pair {
    h: TestHost,
    x_ip: String,
    x_mac: String,
    y_ip: String,
    y_mac: String,
}

fn pair(name: &str) -> Pair {
    let h = TestHost::new(name);
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("x", &["net1"]);
    h.create("y", &["net1"]);
    let (x_ip, y_ip) = (h.ip_on("x", "net1"), h.ip_on("y", "net1"));
    let (x_mac, y_mac) = (h.mac_of("x", "eth0"), h.mac_of("y", "eth0"));
    // Warm up: y's MAC is known to x, paths work.
    h.assert_ping(Some("x"), &y_ip);
    Pair {
        h,
        x_ip,
        x_mac,
        y_ip,
        y_mac,
    }
}

/// An ICMP packet from x with another source IP never reaches y, while the
/// same packet with x's own address does; the drop is counted.
#[test]
fn forged_source_ip_is_not_delivered_and_is_counted() {
    let p = pair("spoof-ip");
    let h = &p.h;
    let before = h.drops("spoofed-source-ip");
    let legit = format!("{},{},{},{},bntlegit", p.x_mac, p.y_mac, p.x_ip, p.y_ip);
    let forged = format!("{},{},172.18.0.99,{},bntforge", p.x_mac, p.y_mac, p.y_ip);
    let counts = h.count_received("y", "eth0", &["bntlegit", "bntforge"], || {
        let o = h.py_in(Some("x"), &["sendp", "eth0", "5", &legit, &forged]);
        assert!(o.success(), "{o}");
    });
    assert_eq!(counts[0], 5, "legit packets must arrive (sniffer sanity)");
    assert_eq!(counts[1], 0, "packets with a forged source IP reached y");
    let after = h.drops("spoofed-source-ip");
    assert!(
        after >= before + 5,
        "spoofed-source-ip went from {before} to {after}, expected +5:\n{:#}",
        h.stats()
    );
    h.assert_no_kernel_bridge();
}

/// A frame from x with a foreign source MAC never reaches y; counted.
#[test]
fn forged_source_mac_is_not_delivered_and_is_counted() {
    let p = pair("spoof-mac");
    let h = &p.h;
    let before = h.drops("spoofed-source-mac");
    let legit = format!("{},{},{},{},bntlegit", p.x_mac, p.y_mac, p.x_ip, p.y_ip);
    let forged = format!(
        "02:42:ac:12:00:99,{},{},{},bntforge",
        p.y_mac, p.x_ip, p.y_ip
    );
    // Impersonating y's own MAC is no better.
    let as_y = format!("{},{},{},{},bntasyyy", p.y_mac, p.y_mac, p.x_ip, p.y_ip);
    let counts = h.count_received("y", "eth0", &["bntlegit", "bntforge", "bntasyyy"], || {
        let o = h.py_in(Some("x"), &["sendp", "eth0", "5", &legit, &forged, &as_y]);
        assert!(o.success(), "{o}");
    });
    assert_eq!(counts[0], 5, "legit packets must arrive (sniffer sanity)");
    assert_eq!(counts[1], 0, "frames with a forged source MAC reached y");
    assert_eq!(counts[2], 0, "frames with y's own MAC as source reached y");
    let after = h.drops("spoofed-source-mac");
    assert!(
        after >= before + 10,
        "spoofed-source-mac went from {before} to {after}, expected +10:\n{:#}",
        h.stats()
    );
    h.assert_no_kernel_bridge();
}

/// x claims y's address by ARP (unicast reply to z, gratuitous broadcast
/// reply, request with a forged sender): z keeps y's real MAC, z's pings reach
/// y and nothing of them reaches x; the forged ARP is counted.
#[test]
fn arp_spoofing_does_not_divert_traffic_and_is_counted() {
    let p = pair("arp-poison");
    let h = &p.h;
    h.create("z", &["net1"]);
    let z_ip = h.ip_on("z", "net1");
    let z_mac = h.mac_of("z", "eth0");
    // z learns y; then wait past the neighbour locktime (1 s) so that a
    // forged reply *would* override the entry on a plain bridge.
    h.assert_ping(Some("z"), &p.y_ip);
    thread::sleep(Duration::from_millis(1200));
    let before_sender = h.drops("spoofed-arp-sender");
    let before_any = before_sender + h.drops("arp-not-request");
    let o = h.py_in(
        Some("x"),
        &["arp-poison", "eth0", &p.x_mac, &p.y_ip, &z_ip, &z_mac],
    );
    assert!(o.success(), "{o}");
    let sent: u64 = o
        .last_line()
        .strip_prefix("sent ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{o}"));
    thread::sleep(Duration::from_millis(200));

    let neigh = h.exec_ok("z", &["ip", "neigh", "show", &p.y_ip, "dev", "eth0"]);
    assert!(
        !neigh.contains(&p.x_mac),
        "z now resolves y ({}) to x's MAC {}:\n{neigh}",
        p.y_ip,
        p.x_mac
    );
    if neigh.contains("lladdr") {
        assert!(
            neigh.contains(&p.y_mac),
            "z resolves y to a wrong MAC:\n{neigh}"
        );
    }
    let counts = h.count_received("x", "eth0", &["bntpoisn"], || {
        let o = h.ping_marked("z", &p.y_ip, "bntpoisn");
        assert!(o.success(), "z cannot ping y after the ARP spoofing:\n{o}");
    });
    assert_eq!(counts, vec![0], "z's pings to y reached x");
    let neigh = h.exec_ok("z", &["ip", "neigh", "show", &p.y_ip, "dev", "eth0"]);
    assert!(neigh.contains(&p.y_mac), "z resolves y wrongly:\n{neigh}");

    let after_sender = h.drops("spoofed-arp-sender");
    let after_any = after_sender + h.drops("arp-not-request");
    assert!(
        after_sender >= before_sender + 3 && after_any >= before_any + sent,
        "forged ARP ({sent} frames) not counted: spoofed-arp-sender {before_sender}→{after_sender}, \
         +arp-not-request {before_any}→{after_any}:\n{:#}",
        h.stats()
    );
    h.assert_no_kernel_bridge();
}

/// ARP requests are answered for the own network (peer, gateway) but never
/// for an address or the gateway of another network; counted.
#[test]
fn arp_request_for_another_networks_address_gets_no_answer() {
    let p = pair("arp-other-net");
    let h = &p.h;
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("c", &["net2"]);
    let c_ip = h.ip_on("c", "net2");
    let gw1 = h.gateway_of("net1");
    let gw2 = h.gateway_of("net2");
    let before = h.drops("arp-unknown-target");
    let o = h.py_in(
        Some("x"),
        &[
            "arp-who-has",
            "eth0",
            &p.x_mac,
            &p.x_ip,
            &p.y_ip,
            &gw1,
            &c_ip,
            &gw2,
        ],
    );
    assert!(o.success(), "{o}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{o}");
    assert_eq!(
        lines[0],
        format!("answer {} {}", p.y_ip, p.y_mac),
        "ARP for a peer on the same network: {o}"
    );
    assert!(
        lines[1].starts_with(&format!("answer {gw1} ")),
        "ARP for the own gateway: {o}"
    );
    assert_eq!(
        lines[2],
        format!("none {c_ip}"),
        "ARP for another network's sandbox: {o}"
    );
    assert_eq!(
        lines[3],
        format!("none {gw2}"),
        "ARP for another network's gateway: {o}"
    );
    let after = h.drops("arp-unknown-target");
    assert!(
        after > before,
        "arp-unknown-target went from {before} to {after}:\n{:#}",
        h.stats()
    );
    h.assert_no_kernel_bridge();
}
