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
