//! Control-plane findings of the December 2026 security review
//! (`../shared/security/review-2026-12.md`, findings 4, 7, 8, 13, 14, 15):
//! each test replays the review's repro and asserts that it now fails with
//! one exact line and leaves the state as it was (the state directory's
//! files hashed, plus networks, sandboxes, links, addresses, routes and
//! namespaces), next to a positive control showing the legitimate path.

use std::time::Duration;

use bpfnet_tests::{Output, TestHost};

fn host(name: &str) -> TestHost {
    let h = TestHost::new(name);
    // No IPv6 on the links tests make in the host: link-local addresses and
    // routes would appear a moment later, in the middle of a comparison.
    h.sh_ok("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    // Loaded first, so that a snapshot doesn't see the datapath appear.
    h.bpfnet_ok(&["datapath", "load"]);
    h
}

/// Everything a refused command must leave alone: a hash of every file in
/// the state directory (the responder's own runtime files under dns/
/// aside), the host's routes, and the harness's snapshot (networks,
/// sandboxes, links, addresses, namespaces).
fn state(h: &TestHost) -> String {
    let root = h.root.display().to_string();
    let files = h.sh_ok(&format!(
        "cd {root} && find . -path ./dns -prune -o -type f -print | sort | xargs -r sha256sum"
    ));
    let routes = h.ok(&["ip", "-4", "route", "show", "table", "all"]);
    format!("state files:\n{files}routes:\n{routes}{}", h.snapshot())
}

/// Runs `bpfnet ARGS` (with `env` assignments first, if any), expecting
/// failure with exactly `lines` on stderr and no change of state.
fn refused_with(h: &TestHost, env: &[&str], args: &[&str], lines: &[String]) -> Output {
    let before = state(h);
    let mut cmd = vec!["env"];
    cmd.extend_from_slice(env);
    cmd.push(h.bin_path());
    cmd.extend_from_slice(args);
    let o = h.run(&cmd);
    assert!(!o.success(), "expected failure:\n{o}");
    let got: Vec<&str> = o.stderr.trim_end().lines().collect();
    assert_eq!(got, lines, "unexpected stderr:\n{o}");
    assert_eq!(
        before,
        state(h),
        "state changed by the refused `bpfnet {}`",
        args.join(" ")
    );
    o
}

/// `bpfnet ARGS` fails with exactly `Error: LINE` and changes nothing.
fn refused(h: &TestHost, args: &[&str], line: &str) {
    refused_with(h, &[], args, &[format!("Error: {line}")]);
}

fn mode(h: &TestHost, path: &str) -> String {
    h.ok(&["stat", "-c", "%a", path]).trim().to_string()
}

/// `flock -n -x PATH true` as the unprivileged user `nobody`.
fn nobody_locks(h: &TestHost, path: &str) -> Output {
    h.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "flock",
        "-n",
        "-x",
        path,
        "true",
    ])
}

// Finding 4: the lock and the state are root's alone.
#[test]
fn an_unprivileged_user_cannot_open_the_lock_and_old_modes_are_narrowed() {
    let h = host("sec-lock-modes");
    h.bpfnet_ok(&["network", "create", "n1"]);
    let root = h.root.display().to_string();
    let lock = format!("{root}/lock");
    let state_file = format!("{root}/state.json");
    assert_eq!(mode(&h, &root), "700");
    assert_eq!(mode(&h, &lock), "600");
    assert_eq!(mode(&h, &state_file), "600");
    // The review's repro: a local user takes the lock.
    let o = nobody_locks(&h, &lock);
    assert!(!o.success(), "nobody could lock {lock}:\n{o}");
    assert!(o.stderr.contains("Permission denied"), "{o}");
    assert!(!h
        .run(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            &state_file
        ])
        .success());
    // Positive control: the modes an older bpfnet left let the same user in...
    h.ok(&["chmod", "755", &root]);
    h.ok(&["chmod", "644", &lock, &state_file]);
    let o = nobody_locks(&h, &lock);
    assert!(
        o.success(),
        "the control failed: nobody cannot lock {lock} even with mode 644:\n{o}"
    );
    // ...and the next command, even one that only reads, narrows them again.
    h.bpfnet_ok(&["ps"]);
    assert_eq!(mode(&h, &root), "700");
    assert_eq!(mode(&h, &lock), "600");
    assert_eq!(mode(&h, &state_file), "600");
    assert!(!nobody_locks(&h, &lock).success());
}

// Finding 4: a held lock is reported, waited for a bounded time, and never
// blocks the commands that only read.
#[test]
fn a_held_lock_is_named_and_waited_for_a_bounded_time_and_reads_go_on() {
    let h = host("sec-lock-held");
    h.bpfnet_ok(&["network", "create", "n1"]);
    h.create("a", &["n1"]);
    let lock = format!("{}/lock", h.root.display());
    // -o: the lock is flock's alone, so stopping flock releases it.
    let mut holder = h.spawn(&[
        "flock",
        "-o",
        "-x",
        &lock,
        "sh",
        "-c",
        "echo locked; exec sleep 60",
    ]);
    holder.wait_line("locked", Duration::from_secs(10));
    // nsenter execs flock without forking: the holder's pid is flock's.
    let pid = holder.pid();
    let o = refused_with(
        &h,
        &["BPFNET_LOCK_TIMEOUT=2"],
        &["network", "create", "n2"],
        &[
            format!("waiting up to 2 s for the bpfnet lock {lock}, held by pid {pid} (flock)"),
            format!("Error: the bpfnet lock {lock} is still held by pid {pid} (flock) after 2 s; wait for that command to finish, or stop it if it is stuck"),
        ],
    );
    assert_eq!(o.code, 1, "{o}");
    // What only reads takes no lock, `exec` included (an incident's tools).
    for args in [
        &["ps"][..],
        &["inspect", "a"],
        &["network", "ls"],
        &["network", "inspect", "n1"],
        &["policy", "ls"],
        &["stats"],
        &["exec", "a", "--", "true"],
    ] {
        let mut cmd = vec!["env", "BPFNET_LOCK_TIMEOUT=1", h.bin_path()];
        cmd.extend_from_slice(args);
        let o = h.run(&cmd);
        assert!(
            o.success() && o.stderr.is_empty(),
            "`bpfnet {}` waited for the lock:\n{o}",
            args.join(" ")
        );
    }
    // Positive control: once the holder is gone, the same command works.
    holder.stop();
    h.bpfnet_ok(&["network", "create", "n2"]);
}

// Finding 8: subnets that overlap the host, and what bpfnet removes.
#[test]
fn subnets_overlapping_the_host_are_refused_and_only_bpfnets_own_addresses_and_routes_go() {
    let h = host("sec-subnets");
    h.sh_ok(
        "ip link add hv0 type veth peer name hv1; ip addr add 10.99.0.1/24 dev hv0; \
         ip link set hv0 up; ip link set hv1 up; ip route add 10.50.0.0/16 dev hv0",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "10.99.0.0/16", "hij"],
        "subnet 10.99.0.0/16 overlaps the host's own route 10.99.0.0/24 (dev hv0); choose another subnet",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "10.99.0.0/24", "--gateway", "10.99.0.254", "hij2"],
        "subnet 10.99.0.0/24 overlaps the host's own route 10.99.0.0/24 (dev hv0); choose another subnet",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "10.50.3.0/24", "hij3"],
        "subnet 10.50.3.0/24 overlaps the host's own route 10.50.0.0/16 (dev hv0); choose another subnet",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "127.0.0.0/8", "plo"],
        "invalid subnet \"127.0.0.0/8\": it overlaps the loopback (127.0.0.0/8) range; choose a private range such as 10.10.0.0/16",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "169.254.0.0/24", "pll"],
        "invalid subnet \"169.254.0.0/24\": it overlaps the link-local (169.254.0.0/16) range; choose a private range such as 10.10.0.0/16",
    );
    assert!(h
        .ok(&["ip", "-o", "-4", "addr", "show", "dev", "lo"])
        .contains("127.0.0.1/8"));
    h.assert_ping(None, "127.0.0.1");
    // Positive control: a free subnet works, with bpfnet's unreachable route.
    h.bpfnet_ok(&["network", "create", "--subnet", "10.98.0.0/24", "ok"]);
    let r = h.ok(&["ip", "route", "show", "10.98.0.0/24"]);
    assert!(r.contains("unreachable 10.98.0.0/24 proto 191"), "{r}");
    // Things of the same prefix bpfnet did not add: the same IP with
    // another length on lo, a route with another metric.
    h.sh_ok("ip addr add 10.98.0.1/24 dev lo; ip route add 10.98.0.0/24 dev hv0 metric 5");
    h.bpfnet_ok(&["network", "rm", "ok"]);
    let lo = h.ok(&["ip", "-o", "-4", "addr", "show", "dev", "lo"]);
    assert!(
        lo.contains("10.98.0.1/24") && !lo.contains("10.98.0.1/32"),
        "{lo}"
    );
    assert!(lo.contains("127.0.0.1/8"), "{lo}");
    let r = h.ok(&["ip", "route", "show", "table", "main", "10.98.0.0/24"]);
    assert!(r.contains("dev hv0") && r.contains("metric 5"), "{r}");
    assert!(!r.contains("unreachable"), "{r}");
    // The default pools step over what the host uses.
    h.sh_ok("ip route add 172.18.0.0/16 dev hv0");
    h.bpfnet_ok(&["network", "create", "auto"]);
    assert_eq!(
        h.network_inspect("auto")["IPAM"]["Config"][0]["Subnet"],
        "172.19.0.0/16"
    );
}

// Finding 13: policy capacity, with the real limit (262,144 entries).
#[test]
fn a_policy_over_capacity_names_the_limit_and_a_deny_still_fits() {
    let h = host("sec-policy-cap");
    for n in ["pq1", "pq2", "pq3"] {
        h.bpfnet_ok(&["network", "create", n]);
    }
    for i in 1..=12 {
        h.create(&format!("q1-{i}"), &["pq1"]);
        h.create(&format!("q2-{i}"), &["pq2"]);
    }
    h.create("x", &["pq3"]);
    // The review's repro: 12 x 12 pairs x 2 protocols x 1024 ports.
    refused(
        &h,
        &["policy", "add", "--from", "net:pq1", "--to", "net:pq2", "--port", "1-1024"],
        "the policy would need 294912 entries, the limit is 262144; narrow the rule --from net:pq1 --to net:pq2 --port 1-1024 (294912 entries) or remove rules",
    );
    // 230,400 entries fit.
    assert_eq!(
        h.bpfnet_ok(&["policy", "add", "--from", "net:pq1", "--to", "net:pq2", "--port", "1-800"])
            .trim(),
        "1"
    );
    // A 13th member would need 249,600 allow entries: refused, nothing made.
    let allow_full = "allow rules would need 249600 policy entries, the limit is 245760 (another 16384 are kept for deny rules)";
    refused(
        &h,
        &["create", "--name", "q1-13", "--network", "pq1"],
        &format!("{allow_full}; narrow the rule --from net:pq1 --to net:pq2 --port 1-800 (249600 entries) or remove rules"),
    );
    refused(
        &h,
        &["policy", "add", "--from", "x", "--to", "net:pq2", "--port", "1-800"],
        &format!("{allow_full}; narrow the rule --from net:pq1 --to net:pq2 --port 1-800 (230400 entries) or remove rules"),
    );
    // Positive control: the same rule as a deny fits in the reserve.
    assert_eq!(
        h.bpfnet_ok(&[
            "policy", "add", "--from", "x", "--to", "net:pq2", "--port", "1-800", "--action",
            "deny",
        ])
        .trim(),
        "2"
    );
    let rules = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    assert_eq!(rules.as_array().map(Vec::len), Some(2), "{rules:#}");
    assert_eq!(rules[1]["Action"], "deny", "{rules:#}");
}

// Finding 14: a foreign /etc/netns/NAME.
#[test]
fn a_foreign_etc_netns_dir_is_never_adopted_and_rm_removes_only_bpfnets_files() {
    let h = host("sec-etc-netns");
    h.bpfnet_ok(&["network", "create", "n1"]);
    h.sh_ok(
        "mkdir /etc/netns/sa-etc; echo precious > /etc/netns/sa-etc/keepme; \
         echo 'nameserver 192.0.2.53' > /etc/netns/sa-etc/resolv.conf",
    );
    refused(
        &h,
        &["create", "--name", "sa-etc", "--network", "n1"],
        "/etc/netns/sa-etc exists and was not made by bpfnet; remove it or pick another sandbox name",
    );
    assert_eq!(h.ok(&["cat", "/etc/netns/sa-etc/keepme"]), "precious\n");
    assert_eq!(
        h.ok(&["cat", "/etc/netns/sa-etc/resolv.conf"]),
        "nameserver 192.0.2.53\n"
    );
    // Positive control: bpfnet's own directory, with a file someone added.
    h.create("mine", &["n1"]);
    assert!(h.ok(&["cat", "/etc/netns/mine/hosts"]).contains("\tmine\n"));
    h.sh_ok("echo added > /etc/netns/mine/keep");
    h.bpfnet_ok(&["rm", "mine"]);
    assert_eq!(h.sh_ok("ls -A /etc/netns/mine"), "keep\n");
    h.create("mine2", &["n1"]);
    h.bpfnet_ok(&["rm", "mine2"]);
    assert!(!h.sh("test -e /etc/netns/mine2").success());
}

// Finding 15: aliases go into hosts files and the responder.
#[test]
fn link_and_network_aliases_are_validated_like_names() {
    let h = host("sec-aliases");
    h.bpfnet_ok(&["network", "create", "n1"]);
    h.bpfnet_ok(&["network", "create", "n2"]);
    h.create("sa-a1", &["n1"]);
    let rule = "use letters, digits, '_', '.' and '-', starting with a letter or digit";
    let create_sa_lk = |flag: &str, value: &str, line: &str| {
        refused(
            &h,
            &["create", "--name", "sa-lk", "--network", "n1", flag, value],
            line,
        )
    };
    create_sa_lk(
        "--link",
        "sa-a1:al\n6.6.6.6 www.example.com",
        &format!("invalid link alias name \"al\\n6.6.6.6 www.example.com\": '\\n' is not allowed; {rule}"),
    );
    create_sa_lk(
        "--network-alias",
        "web server",
        &format!("invalid alias name \"web server\": ' ' is not allowed; {rule}"),
    );
    refused(
        &h,
        &[
            "network",
            "connect",
            "--alias",
            "x\n6.6.6.6 y",
            "n2",
            "sa-a1",
        ],
        &format!("invalid alias name \"x\\n6.6.6.6 y\": '\\n' is not allowed; {rule}"),
    );
    assert!(!h.sh("test -e /etc/netns/sa-lk").success());
    // Positive control.
    h.bpfnet_ok(&[
        "create",
        "--name",
        "sa-lk",
        "--network",
        "n1",
        "--link",
        "sa-a1:db",
        "--network-alias",
        "web",
    ]);
    let ip = h.ip_on("sa-a1", "n1");
    let hosts = h.ok(&["cat", "/etc/netns/sa-lk/hosts"]);
    assert!(hosts.contains(&format!("{ip}\tdb sa-a1\n")), "{hosts}");
    assert!(!hosts.contains("6.6.6.6"), "{hosts}");
    h.bpfnet_ok(&["network", "connect", "--alias", "api", "n2", "sa-a1"]);
}

// Finding 7 (control plane): linux-bridge refuses what it cannot enforce.
#[test]
fn linux_bridge_refuses_internal_icc_false_and_policy() {
    let h = host("sec-linux-bridge");
    refused(
        &h,
        &["network", "create", "-d", "linux-bridge", "--internal", "sa-plbi"],
        "the linux-bridge driver cannot enforce --internal (network \"sa-plbi\"); use the bridge driver (eBPF) for an internal network",
    );
    for opt in ["icc=false", "com.docker.network.bridge.enable_icc=false"] {
        refused(
            &h,
            &["network", "create", "-d", "linux-bridge", "-o", opt, "sa-plbc"],
            "the linux-bridge driver cannot enforce icc=false (network \"sa-plbc\"); use the bridge driver (eBPF) to turn inter-sandbox traffic off",
        );
    }
    // Positive controls: the same on the eBPF driver, and a plain linux-bridge.
    h.bpfnet_ok(&[
        "network",
        "create",
        "--internal",
        "-o",
        "icc=false",
        "ebpf-int",
    ]);
    h.bpfnet_ok(&["network", "create", "-d", "linux-bridge", "lb1"]);
    h.bpfnet_ok(&["network", "create", "n1"]);
    h.create("lb-a", &["lb1"]);
    h.create("a", &["n1"]);
    h.create("b", &["ebpf-int"]);
    refused(
        &h,
        &["policy", "add", "--from", "net:lb1", "--to", "net:n1"],
        "network \"lb1\" uses the linux-bridge driver, which cannot enforce policy; use bridge (eBPF) networks for rules",
    );
    refused(
        &h,
        &["policy", "add", "--from", "a", "--to", "lb-a", "--action", "deny"],
        "sandbox \"lb-a\" is on network \"lb1\", which uses the linux-bridge driver and cannot enforce policy; use bridge (eBPF) networks for rules",
    );
    assert_eq!(
        h.bpfnet_ok(&["policy", "add", "--from", "a", "--to", "b"])
            .trim(),
        "1"
    );
    // A sandbox a rule names cannot take a path the rule does not see.
    refused(
        &h,
        &["network", "connect", "lb1", "a"],
        "sandbox \"a\" is named by policy rule 1, which network \"lb1\" (linux-bridge driver) cannot enforce; remove the rule or use a bridge (eBPF) network",
    );
    // Positive control: a sandbox no rule names joins the linux-bridge network.
    h.create("c", &["n1"]);
    h.bpfnet_ok(&["network", "connect", "lb1", "c"]);
}
