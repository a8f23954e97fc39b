//! `bpfnet exec` and `bpfnet run`: stdio and exit codes pass through.

use bpfnet_tests::{TestHost, CMD_TIMEOUT};

#[test]
fn exec_passes_exit_code_and_stdout_through() {
    let h = TestHost::new("exec-code");
    h.create("s", &[]);
    let o = h.bpfnet(&[
        "exec",
        "s",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.code, 3, "{o}");
    assert_eq!(o.stdout, "out\n", "{o}");
    assert!(o.stderr.contains("err"), "{o}");
    let o = h.bpfnet(&[
        "exec", "s", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0",
    ]);
    assert!(o.success() && o.stdout.contains("172.17.0.2/16"), "{o}");
}

#[test]
fn exec_passes_stdin_through() {
    let h = TestHost::new("exec-stdin");
    h.create("s", &[]);
    let bin = h.bin_path().to_string();
    let o = h.run_full(
        &[&bin, "exec", "s", "--", "sh", "-c", "tr a-z A-Z"],
        Some(b"hello from stdin\n"),
        CMD_TIMEOUT,
    );
    assert!(o.success(), "{o}");
    assert_eq!(o.stdout, "HELLO FROM STDIN\n", "{o}");
}

/// `run --rm` creates the sandbox, runs the command in it, passes the exit
/// code through and removes the sandbox afterwards.
#[test]
fn run_with_rm_runs_in_a_fresh_sandbox_and_removes_it() {
    let h = TestHost::new("run-rm");
    let o = h.bpfnet(&[
        "run",
        "--name",
        "r1",
        "--rm",
        "--",
        "sh",
        "-c",
        "ip -o -4 addr show dev eth0; exit 4",
    ]);
    assert_eq!(o.code, 4, "{o}");
    assert!(o.stdout.contains("172.17.0.2/16"), "{o}");
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(0),
        "r1 left after run --rm: {ps:#}"
    );
    assert!(
        h.netns_list().is_empty(),
        "netns left: {:?}",
        h.netns_list()
    );
    assert_eq!(h.links_settled(&["lo"]), vec!["lo"]);
    // Without --rm the sandbox stays.
    h.bpfnet_ok(&["run", "--name", "r2", "--", "true"]);
    assert_eq!(h.netns_list(), vec!["r2"]);
}

/// `/run/netns` is a shared mount, as iproute2 makes it: a sandbox created
/// after another mount namespace was copied from the host's (a runtime's,
/// a long `ip netns exec` session's) is a namespace there too, not the
/// empty file its bind mount sits on.
#[test]
fn sandboxes_created_later_reach_mount_namespaces_copied_before() {
    let h = TestHost::new("exec-propagation");
    // As on a host where nothing made it shared yet: bpfnet must.
    h.ok(&["mount", "--make-private", "/run/netns"]);
    h.create("first", &[]);
    let mut copy = h.spawn(&[
        "unshare",
        "-m",
        "--propagation",
        "unchanged",
        "sh",
        "-c",
        "echo pid $$; exec sleep 600",
    ]);
    let line = copy.wait_line("pid ", CMD_TIMEOUT);
    let pid = line.trim_start_matches("pid ").trim().to_string();
    h.create("later", &[]);
    for sandbox in ["first", "later"] {
        let out = h.ok(&[
            "nsenter", "-t", &pid, "-m", "ip", "netns", "exec", sandbox, "ip", "-o", "link",
        ]);
        assert!(out.contains("lo:"), "{sandbox}: {out}");
    }
    let out = h.ok(&[
        "nsenter", "-t", &pid, "-m", "ip", "netns", "exec", "later", "ip", "-o", "addr",
    ]);
    assert!(out.contains("eth0"), "later has its endpoint there: {out}");
}
