//! The harness itself: a test host is isolated from the real host and leaves
//! nothing behind, even with processes still running inside its sandboxes.

use std::fs;
use std::path::Path;
use std::time::Duration;

use bpfnet_tests::{parse_link_names, TestHost};

fn real_host_links() -> Vec<String> {
    let o = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    parse_link_names(&String::from_utf8_lossy(&o.stdout))
}

fn real_host_netns() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn test_host_is_isolated_and_cleaned_up_on_drop() {
    let links_before = real_host_links();
    let netns_before = real_host_netns();
    let (dir, pid) = {
        let h = TestHost::new("harness");
        h.ok(&["ip", "netns", "add", "bnt-probe"]);
        h.ok(&[
            "ip", "link", "add", "bntv0", "type", "veth", "peer", "name", "bntv1",
        ]);
        h.ok(&["ip", "link", "set", "bntv1", "netns", "bnt-probe"]);
        h.ok(&["mkdir", "/sys/fs/bpf/bnt-probe"]);
        // Only inside the test host.
        assert_eq!(h.link_names(None), vec!["lo", "bntv0"]);
        assert_eq!(h.link_names(Some("bnt-probe")), vec!["lo", "bntv1"]);
        assert_eq!(h.netns_list(), vec!["bnt-probe"]);
        assert_eq!(real_host_links(), links_before);
        assert_eq!(real_host_netns(), netns_before);
        assert!(!Path::new("/sys/fs/bpf/bnt-probe").exists());
        // A process left running inside a sandbox must not survive the host.
        let mut bg = h.spawn_in("bnt-probe", &["sh", "-c", "echo ready; exec sleep 1000"]);
        bg.wait_line("ready", Duration::from_secs(5));
        let pid = bg.pid();
        std::mem::forget(bg);
        (h.dir.clone(), pid)
    };
    std::thread::sleep(Duration::from_millis(200));
    let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "process {pid} in a sandbox survived the test host");
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert_eq!(real_host_links(), links_before);
    assert_eq!(real_host_netns(), netns_before);
}

#[test]
fn commands_report_exit_code_stdout_and_stderr() {
    let h = TestHost::new("harness-output");
    let o = h.sh("echo out; echo err >&2; exit 7");
    assert_eq!(o.code, 7);
    assert_eq!(o.stdout, "out\n");
    assert_eq!(o.stderr, "err\n");
    let e = h.fail(&["sh", "-c", "echo nope >&2; exit 1"]);
    assert_eq!(e, "nope\n");
    // The state dir is handed to every command.
    let root = h.sh_ok("echo $BPFNET_ROOT");
    assert_eq!(root.trim(), h.root.to_str().unwrap());
}

/// The traffic helpers (scapy sender, sniffer, ARP, TCP) over a plain veth
/// pair, without bpfnet: a datapath test that fails is not the helper's fault.
#[test]
fn traffic_helpers_work_over_a_plain_veth_pair() {
    let h = TestHost::new("harness-traffic");
    h.sh_ok(
        "ip netns add a && ip netns add b && \
         ip link add eth0 netns a type veth peer name eth0 netns b && \
         ip -n a addr add 10.9.0.1/24 dev eth0 && ip -n b addr add 10.9.0.2/24 dev eth0 && \
         ip -n a link set eth0 up && ip -n b link set eth0 up && \
         ip -n a link set lo up && ip -n b link set lo up",
    );
    let (amac, bmac) = (h.mac_of("a", "eth0"), h.mac_of("b", "eth0"));
    assert!(h.ping(Some("a"), "10.9.0.2"));

    let spec = format!("{amac},{bmac},10.9.0.1,10.9.0.2,bntplain");
    let counts = h.count_received("b", "eth0", &["bntplain", "bntother"], || {
        h.py_in(Some("a"), &["sendp", "eth0", "3", &spec]);
    });
    assert_eq!(counts, vec![3, 0]);

    let o = h.py_in(
        Some("a"),
        &[
            "arp-who-has",
            "eth0",
            &amac,
            "10.9.0.1",
            "10.9.0.2",
            "10.9.0.9",
        ],
    );
    assert!(o.success(), "{o}");
    assert_eq!(
        o.stdout,
        format!("answer 10.9.0.2 {bmac}\nnone 10.9.0.9\n"),
        "{o}"
    );

    let mut sink = h.py_spawn(Some("b"), &["sink", "10.9.0.2", "5001"]);
    sink.wait_line("ready", Duration::from_secs(5));
    let sent = h.py_in(Some("a"), &["source", "10.9.0.2", "5001", "3000000", "7"]);
    assert!(sent.success(), "{sent}");
    let got = sink.finish_ok(Duration::from_secs(10));
    assert_eq!(got.last_line(), sent.last_line(), "{got}\n{sent}");
    assert!(sent.stdout.starts_with("3000000 "), "{sent}");

    let mut echo = h.py_spawn(Some("b"), &["tcp-echo-server", "10.9.0.2", "5002"]);
    echo.wait_line("ready", Duration::from_secs(5));
    let o = h.py_in(Some("a"), &["tcp-echo", "10.9.0.2", "5002", "hello"]);
    assert_eq!(o.stdout, "hello\n", "{o}");
    echo.wait_line("served 10.9.0.1", Duration::from_secs(5));
}

/// A command that leaves a process behind holding its stdout returns anyway
/// (with what it printed), and the process dies with the host.
#[test]
fn a_background_grandchild_holding_stdout_does_not_hang_the_test() {
    let start = std::time::Instant::now();
    let h = TestHost::new("harness-grandchild");
    let pid_file = h.dir.join("grandchild.pid");
    let o = h.sh(&format!(
        "echo hi; sleep 300 & echo $! > {}; true",
        pid_file.display()
    ));
    assert!(o.success(), "{o}");
    assert!(o.stdout.starts_with("hi\n"), "{o}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let pid: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(h);
    std::thread::sleep(Duration::from_millis(200));
    let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "sleep {pid} survived the test host");
}
