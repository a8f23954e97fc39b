//! Reload under load: `bpfnet datapath load` (what `cargo xtask
//! build-and-load` runs) again and again while a 20-second iperf3 TCP stream
//! and a ping every 10 ms cross the datapath. Each reload replaces the
//! programs of every attachment in place, so nothing may notice.
use std::{
    thread,
    time::{Duration, Instant},
};

use bpfnet_tests::TestHost;
use serde_json::Value;

#[test]
fn reloads_under_a_twenty_second_iperf3_stream_reset_nothing_and_lose_no_ping() {
    let h = TestHost::new("reload-iperf");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let b_ip = h.ip_on("b", "net1");
    let mut server = h.spawn_in("b", &["iperf3", "-s", "-1", "--forceflush", "-B", &b_ip]);
    server.wait_contains("Server listening", 1, Duration::from_secs(10));
    let mut client = h.spawn_in("a", &["iperf3", "-c", &b_ip, "-t", "20", "-i", "0.5", "-J"]);
    let mut ping = h.spawn_in(
        "a",
        &[
            "ping", "-n", "-q", "-c", "1800", "-i", "0.01", "-W", "1", &b_ip,
        ],
    );
    thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let mut reloads = 0;
    while start.elapsed() < Duration::from_secs(16) {
        h.bpfnet_ok(&["datapath", "load"]);
        reloads += 1;
        thread::sleep(Duration::from_millis(300));
    }
    let out = client.finish(Duration::from_secs(60));
    assert!(out.success(), "iperf3 failed:\n{out}");
    let report: Value = serde_json::from_str(&out.stdout).expect("iperf3 -J");
    assert!(report.get("error").is_none(), "iperf3: {}", report["error"]);
    let intervals: Vec<f64> = report["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(intervals.len() >= 38, "{} intervals", intervals.len());
    let slowest = intervals.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(
        slowest > 0.0,
        "a half-second interval carried no data: {intervals:?}"
    );
    let retransmits = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    let pinged = ping.finish(Duration::from_secs(60));
    assert!(
        pinged.stdout.contains(" 0% packet loss"),
        "pings were lost during reloads:\n{pinged}"
    );
    let _ = server.finish(Duration::from_secs(10));
    eprintln!(
        "{reloads} reloads during the stream: slowest 0.5 s interval {:.2} Gbit/s, {retransmits} retransmits, no ping of 1800 (10 ms apart) lost",
        slowest / 1e9
    );
}
