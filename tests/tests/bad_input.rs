//! Bad input through the CLI, table-driven: every case is one command that
//! must fail with exit code non-zero, print exactly one line on stderr (the
//! exact line is asserted) and leave everything as it was: the state
//! directory byte for byte, and the kernel's links, addresses, routes,
//! rules, namespaces, /etc/netns, pins and datapath maps. Each test walks
//! its whole table and reports every failing case at once.
//! (tests/errors.rs holds the older, one-test-per-case checks.)

use std::fs;
use std::path::Path;

use bpfnet_tests::TestHost;

/// One rejected command and the exact line it must print.
struct Case {
    args: Vec<String>,
    line: String,
}

fn case(args: &[&str], line: &str) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        line: line.to_string(),
    }
}

/// The state directory, byte for byte, as (path, bytes) sorted by path.
/// `dns/` is left out: the responder's log and acknowledgement files are its
/// own, written by a separate process on its own schedule.
fn state_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "dns" {
                continue;
            }
            if p.is_dir() {
                out.push((format!("{rel}/"), vec![]));
                walk(&p, root, out);
            } else {
                out.push((rel, fs::read(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = vec![];
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Maps whose content is state (counters, conntrack and the event ring move
/// with background traffic and are left out).
const STATE_MAPS: &[&str] = &[
    "ENDPOINTS",
    "FDB",
    "NEIGHBOURS",
    "NETWORKS",
    "SUBNETS",
    "FLOOD_PORTS",
    "POLICY_0",
    "POLICY_1",
    "POLICY_GEN",
    "RULE_HITS",
];

/// What the kernel holds for bpfnet, as text.
fn kernel_view(h: &TestHost) -> String {
    let maps: String = STATE_MAPS
        .iter()
        .map(|m| {
            format!(
                "echo '## {m}'; bpftool -j map dump pinned {}/maps/{m} 2>&1; ",
                TestHost::pin_dir()
            )
        })
        .collect();
    // Links by name and MAC only: carrier and operstate settle on their own
    // a moment after a link comes up, and are no change of ours.
    let links: String = h
        .ok(&["ip", "-o", "link", "show"])
        .lines()
        .map(|l| {
            let name = l.split(": ").nth(1).unwrap_or(l);
            let mac = l.split("link/").nth(1).unwrap_or("");
            format!("link {name} {mac}\n")
        })
        .collect();
    let rest = h.sh_ok(&format!(
        "ip -o addr show; ip route show table all; ip rule; ls -1 /run/netns; \
         find /etc/netns | sort; find /sys/fs/bpf/bpfnet | sort; {maps}"
    ));
    links + &rest
}

/// Everything a failed command must leave unchanged.
#[derive(PartialEq)]
struct Fingerprint {
    files: Vec<(String, Vec<u8>)>,
    kernel: String,
}

fn fingerprint(h: &TestHost) -> Fingerprint {
    Fingerprint {
        files: state_files(&h.root),
        kernel: kernel_view(h),
    }
}

/// What differs between two fingerprints, for the failure report.
fn diff(a: &Fingerprint, b: &Fingerprint) -> String {
    let mut out = String::new();
    let names = |f: &Fingerprint| f.files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        out.push_str(&format!(
            "    state files: {:?} -> {:?}\n",
            names(a),
            names(b)
        ));
    }
    for (pa, ba) in &a.files {
        if let Some((_, bb)) = b.files.iter().find(|(pb, _)| pb == pa) {
            if ba != bb {
                out.push_str(&format!("    {pa} changed\n"));
            }
        }
    }
    let (ka, kb): (Vec<&str>, Vec<&str>) = (a.kernel.lines().collect(), b.kernel.lines().collect());
    for l in &ka {
        if !kb.contains(l) {
            out.push_str(&format!("    kernel lost: {l}\n"));
        }
    }
    for l in &kb {
        if !ka.contains(l) {
            out.push_str(&format!("    kernel got:  {l}\n"));
        }
    }
    out
}

/// Runs every case; returns one report for each that did not fail cleanly
/// with its exact line, or that changed something. `{root}` in a line stands
/// for the state directory; a line ending in `*` is a prefix.
fn run_cases(h: &TestHost, cases: &[Case]) -> Vec<String> {
    let root = h.root.display().to_string();
    let mut before = fingerprint(h);
    let mut failures = vec![];
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let o = h.bpfnet(&args);
        let want = format!("Error: {}", c.line.replace("{root}", &root));
        let got = o.stderr.trim_end();
        let matches = match want.strip_suffix('*') {
            Some(prefix) => got.starts_with(prefix) && !got.contains('\n'),
            None => got == want,
        };
        let mut problems = vec![];
        if o.success() {
            problems.push("exited 0".to_string());
        }
        if !matches {
            problems.push(format!(
                "stderr was:\n      {}\n    wanted:\n      {want}",
                got.replace('\n', "\n      ")
            ));
        }
        let after = fingerprint(h);
        if after != before {
            problems.push(format!("changed the state:\n{}", diff(&before, &after)));
        }
        if !problems.is_empty() {
            failures.push(format!("  bpfnet {:?}: {}", c.args, problems.join("; ")));
        }
        before = after;
    }
    failures
}

/// [`run_cases`], panicking with every failure.
fn check_all(h: &TestHost, cases: &[Case]) {
    let failures = run_cases(h, cases);
    assert!(
        failures.is_empty(),
        "[{}] {} of {} bad inputs were not rejected cleanly:\n{}",
        h.name,
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn host(name: &str) -> TestHost {
    let h = TestHost::new(name);
    h.bpfnet_ok(&["datapath", "load"]);
    h
}

const RULE: &str = "use letters, digits, '_', '.' and '-', starting with a letter or digit";

#[test]
fn bad_names_are_rejected_with_what_is_wrong() {
    let h = host("bad-names");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    h.bpfnet_ok(&["network", "create", "--subnet", "10.11.0.0/16", "net2"]);
    h.create("a", &["net1"]);
    h.ok(&["ip", "netns", "add", "foreign"]);
    let long = "s".repeat(64);
    let too_long = format!("{long:?} is too long (64 bytes, at most 63)");
    let injected = "x\n6.6.6.6 evil.example";
    let cases = [
        case(&["create", "--name", ""], &format!("sandbox name is empty; {RULE}")),
        case(&["network", "create", ""], &format!("network name is empty; {RULE}")),
        case(&["create", "--name", &long], &format!("sandbox name {too_long}")),
        case(&["network", "create", &long], &format!("network name {too_long}")),
        case(
            &["create", "--name", "a/b"],
            &format!("invalid sandbox name \"a/b\": '/' is not allowed; {RULE}"),
        ),
        case(
            &["network", "create", "x/y"],
            &format!("invalid network name \"x/y\": '/' is not allowed; {RULE}"),
        ),
        case(
            &["create", "--name", ".."],
            &format!("invalid sandbox name \"..\": it starts with '.'; {RULE}"),
        ),
        case(
            &["network", "create", ".."],
            &format!("invalid network name \"..\": it starts with '.'; {RULE}"),
        ),
        case(
            &["create", "--name=-x"],
            &format!("invalid sandbox name \"-x\": it starts with '-'; {RULE}"),
        ),
        case(
            &["network", "create", "--", "-n"],
            &format!("invalid network name \"-n\": it starts with '-'; {RULE}"),
        ),
        case(
            &["create", "--name", "-x"],
            "unexpected argument '-x' found; usage: bpfnet create [OPTIONS] --name <NAME> (see `bpfnet create --help`)",
        ),
        case(
            &["create", "--name", "café"],
            &format!("invalid sandbox name \"café\": 'é' is not allowed; {RULE}"),
        ),
        case(
            &["network", "create", "ünï"],
            &format!("invalid network name \"ünï\": it starts with 'ü'; {RULE}"),
        ),
        case(
            &["create", "--name", "foreign"],
            "a network namespace named \"foreign\" already exists and is not bpfnet's; remove it (`ip netns del foreign`) or pick another name",
        ),
        case(
            &["run", "--name", "foreign", "--", "true"],
            "a network namespace named \"foreign\" already exists and is not bpfnet's; remove it (`ip netns del foreign`) or pick another name",
        ),
        case(
            &["create", "--name", "b", "--network", "net1", "--network-alias", "bad alias"],
            &format!("invalid alias name \"bad alias\": ' ' is not allowed; {RULE}"),
        ),
        case(
            &["create", "--name", "b", "--network", "net1", "--link", &format!("a:{injected}")],
            &format!("invalid link alias name {injected:?}: '\\n' is not allowed; {RULE}"),
        ),
        case(
            &["network", "connect", "--alias", "", "net2", "a"],
            &format!("alias name is empty; {RULE}"),
        ),
    ];
    check_all(&h, &cases);
    // The foreign namespace is still there, and the longest valid name works.
    assert!(h.netns_list().contains(&"foreign".to_string()));
    h.create(&"s".repeat(63), &["net1"]);
}

#[test]
fn bad_subnets_gateways_and_options_are_rejected() {
    let h = host("bad-subnets");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    // The host's own network: an address on an uplink-like device and a
    // route through it.
    h.ok(&[
        "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    h.ok(&["ip", "addr", "add", "10.200.0.1/24", "dev", "uplink0"]);
    h.ok(&["ip", "link", "set", "uplink0", "up"]);
    h.ok(&["ip", "route", "add", "10.201.0.0/16", "via", "10.200.0.254"]);
    let create = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["network".to_string(), "create".to_string()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("n".into());
        v
    };
    let c = |extra: &[&str], line: &str| Case {
        args: create(extra),
        line: line.to_string(),
    };
    let cidr = "expected an IPv4 CIDR such as 10.10.0.0/16";
    let cases = [
        c(&["--subnet", "nonsense"], &format!("invalid subnet \"nonsense\": {cidr}")),
        c(&["--subnet", ""], &format!("invalid subnet \"\": {cidr}")),
        c(&["--subnet", "300.1.1.0/24"], &format!("invalid subnet \"300.1.1.0/24\": {cidr}")),
        c(
            &["--subnet", "10.30.0.0"],
            "invalid subnet \"10.30.0.0\": the prefix length is missing, e.g. 10.30.0.0/24",
        ),
        c(
            &["--subnet", "10.30.0.1/24"],
            "invalid subnet \"10.30.0.1/24\": it has host bits set; did you mean 10.30.0.0/24?",
        ),
        c(
            &["--subnet", "fd00::/64"],
            "invalid subnet \"fd00::/64\": an IPv6 subnet needs --ipv6 (a dual-stack network)",
        ),
        c(
            &["--subnet", "10.30.0.0/31"],
            "invalid subnet \"10.30.0.0/31\": a prefix longer than /30 leaves no address for endpoints",
        ),
        c(
            &["--subnet", "10.30.0.0/32"],
            "invalid subnet \"10.30.0.0/32\": a prefix longer than /30 leaves no address for endpoints",
        ),
        c(
            &["--subnet", "10.0.0.0/8"],
            "subnet 10.0.0.0/8 overlaps with network \"net1\" (10.10.0.0/16); choose another subnet",
        ),
        c(
            &["--subnet", "127.0.0.0/16"],
            "invalid subnet \"127.0.0.0/16\": it overlaps the loopback (127.0.0.0/8) range; choose a private range such as 10.10.0.0/16",
        ),
        c(
            &["--subnet", "224.0.0.0/16"],
            "invalid subnet \"224.0.0.0/16\": it overlaps the multicast (224.0.0.0/4) range; choose a private range such as 10.10.0.0/16",
        ),
        c(
            &["--subnet", "10.200.0.0/16"],
            "subnet 10.200.0.0/16 overlaps the host's own route 10.200.0.0/24 (dev uplink0); choose another subnet",
        ),
        c(
            &["--subnet", "10.200.0.128/25"],
            "subnet 10.200.0.128/25 overlaps the host's own route 10.200.0.0/24 (dev uplink0); choose another subnet",
        ),
        c(
            &["--subnet", "10.201.5.0/24"],
            "subnet 10.201.5.0/24 overlaps the host's own route 10.201.0.0/16 (dev uplink0); choose another subnet",
        ),
        c(
            &["--subnet", "10.40.0.0/24", "--gateway", "10.40.0.0"],
            "gateway 10.40.0.0 is outside the usable addresses of subnet 10.40.0.0/24",
        ),
        c(
            &["--subnet", "10.40.0.0/24", "--gateway", "10.40.0.255"],
            "gateway 10.40.0.255 is outside the usable addresses of subnet 10.40.0.0/24",
        ),
        c(
            &["--subnet", "10.40.0.0/24", "--gateway", "nonsense"],
            "invalid gateway \"nonsense\": expected an IPv4 address such as 10.10.0.1",
        ),
        c(
            &["-d", "macvlan"],
            "unknown driver \"macvlan\": use bridge (eBPF) or linux-bridge",
        ),
        c(
            &["-o", "icc"],
            "invalid option \"icc\": expected KEY=VALUE, e.g. -o icc=false",
        ),
        c(
            &["-o", "icc=flase"],
            "invalid value \"flase\" for option icc: use true or false",
        ),
        c(
            &["-o", "mtu=1400"],
            "unknown option \"mtu\" (in -o \"mtu=1400\"); bpfnet knows icc, com.docker.network.bridge.enable_icc, bpfnet.flood, com.docker.network.bridge.enable_ip_masquerade",
        ),
        c(
            &["-o", "icc=false", "-o", "icc=true"],
            "option icc is given twice; give it once",
        ),
    ];
    check_all(&h, &cases);
}

/// Automatic subnets skip what the host routes already, as Docker's do.
#[test]
fn automatic_subnets_avoid_the_hosts_own_routes() {
    let h = host("auto-subnet-host");
    h.ok(&[
        "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    h.ok(&["ip", "addr", "add", "172.18.5.1/24", "dev", "uplink0"]);
    h.ok(&["ip", "link", "set", "uplink0", "up"]);
    h.bpfnet_ok(&["network", "create", "auto"]);
    let v = h.network_inspect("auto");
    assert_eq!(
        bpfnet_tests::jstr(&v, "/IPAM/Config/0/Subnet"),
        "172.19.0.0/16",
        "{v:#}"
    );
    // The host's route is untouched.
    let routes = h.ok(&["ip", "route", "show", "172.18.5.0/24"]);
    assert!(routes.contains("dev uplink0"), "{routes}");
}

#[test]
fn bad_addresses_are_rejected() {
    let h = host("bad-addresses");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    h.create("a", &["net1"]);
    h.create("c", &[]);
    let user_only = "--ip is supported on user-defined networks only, not on the default bridge";
    let cases = [
        case(
            &["create", "--name", "b", "--network", "net1", "--ip", "10.10.0.0"],
            "address 10.10.0.0 is outside network \"net1\" (10.10.0.0/16)",
        ),
        case(
            &["create", "--name", "b", "--network", "net1", "--ip", "10.10.255.255"],
            "address 10.10.255.255 is outside network \"net1\" (10.10.0.0/16)",
        ),
        case(
            &["network", "connect", "--ip", "10.10.0.2", "net1", "c"],
            "address 10.10.0.2 is already in use on network \"net1\" (by a)",
        ),
        case(
            &["network", "connect", "--ip", "10.10.0.1", "net1", "c"],
            "address 10.10.0.1 is the gateway of network \"net1\"; choose another",
        ),
        case(
            &["network", "connect", "--ip", "10.99.0.1", "net1", "c"],
            "address 10.99.0.1 is outside network \"net1\" (10.10.0.0/16)",
        ),
        case(&["create", "--name", "b", "--ip", "172.17.0.50"], user_only),
        case(
            &["network", "connect", "--ip", "172.17.0.9", "bridge", "a"],
            user_only,
        ),
        case(
            &["create", "--name", "b", "--network", "none", "--ip", "10.10.0.9"],
            "--ip and --network-alias need a user-defined network; sandbox \"b\" would use network mode none",
        ),
        case(
            &["create", "--name", "b", "--network", "host", "--network-alias", "x"],
            "--ip and --network-alias need a user-defined network; sandbox \"b\" would use network mode host",
        ),
        case(
            &["create", "--name", "b", "--network", "net1", "--ip", "1.2.3"],
            "invalid value '1.2.3' for '--ip <IP>': invalid IPv4 address syntax",
        ),
    ];
    check_all(&h, &cases);
}

#[test]
fn bad_membership_changes_are_rejected() {
    let h = host("bad-membership");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    h.bpfnet_ok(&["network", "create", "--subnet", "10.11.0.0/16", "net2"]);
    h.create("a", &["net1"]);
    h.create("s2", &["container:a"]);
    h.create("n", &["none"]);
    let cases = [
        case(
            &["create", "--name", "b", "--network", "net1", "--network", "net1"],
            "--network net1 is given twice; give each network once",
        ),
        case(
            &["create", "--name", "b", "--network", "net1", "--network", "none"],
            "--network none, host and container:NAME cannot be combined with other networks",
        ),
        case(
            &["create", "--name", "b", "--network", "container:"],
            "cannot join the network namespace of \"\": no such sandbox",
        ),
        case(
            &["create", "--name", "b", "--link", "ghost"],
            "cannot link to \"ghost\": no such sandbox",
        ),
        case(
            &["network", "disconnect", "nosuchnet", "a"],
            "network \"nosuchnet\" not found; list networks with `bpfnet network ls`",
        ),
        case(
            &["network", "disconnect", "net2", "a"],
            "sandbox \"a\" is not connected to network \"net2\"",
        ),
        case(
            &["network", "disconnect", "net1", "n"],
            "sandbox \"n\" is not connected to network \"net1\"",
        ),
        case(
            &["network", "connect", "net2", "s2"],
            "sandbox \"s2\" uses network mode container:a; it cannot join networks",
        ),
        case(
            &["rm", "a"],
            "sandbox \"a\" is shared by s2 (container:a); remove it first or use -f",
        ),
        case(
            &["network", "inspect", "net1", "ghostnet"],
            "network \"ghostnet\" not found; list networks with `bpfnet network ls`",
        ),
        case(
            &["inspect", "a", "ghost"],
            "sandbox \"ghost\" not found; list sandboxes with `bpfnet ps`",
        ),
        case(
            &["stats", "ghost"],
            "sandbox \"ghost\" not found; list sandboxes with `bpfnet ps`",
        ),
        case(
            &["frobnicate"],
            "unrecognized subcommand 'frobnicate'; usage: bpfnet <COMMAND> (see `bpfnet --help`)",
        ),
        case(
            &["network", "create"],
            "the following required arguments were not provided: <NAME>; usage: bpfnet network create <NAME> (see `bpfnet network create --help`)",
        ),
    ];
    check_all(&h, &cases);
}

#[test]
fn bad_policies_and_ports_are_rejected() {
    let h = host("bad-policies");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    h.bpfnet_ok(&["network", "create", "--subnet", "10.11.0.0/16", "net2"]);
    h.create("a", &["net1"]);
    h.create("b", &["net2"]);
    h.bpfnet_ok(&[
        "policy", "add", "--from", "a", "--to", "net:net2", "--port", "80",
    ]);
    let file = |name: &str, text: &str| -> String {
        let p = h.dir.join(name);
        fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let add = |extra: &[&str], line: &str| -> Case {
        let mut args = vec!["policy", "add", "--from", "a", "--to", "b"];
        args.extend_from_slice(extra);
        case(&args, line)
    };
    let form = "expected N, N-M, N/tcp or N-M/udp with ports 1-65535";
    let sel = "a selector is a sandbox name, net:NETWORK or *";
    let import = |name: &str, text: &str, line: &str| -> Case {
        let f = file(name, text);
        case(&["policy", "import", &f], &format!("{f}: {line}"))
    };
    let shape = "not a JSON array of {\"from\", \"to\", \"port\"?, \"icmp\"?, \"action\"?} rules";
    let cases = [
        case(
            &["policy", "add", "--from", "ghost", "--to", "b"],
            &format!("sandbox \"ghost\" not found; {sel}"),
        ),
        case(
            &["policy", "add", "--from", "a", "--to", "net:ghostnet"],
            "network \"ghostnet\" not found (in selector \"net:ghostnet\"); list networks with `bpfnet network ls`",
        ),
        case(
            &["policy", "add", "--from", "", "--to", "b"],
            &format!("empty selector \"\": {sel}"),
        ),
        case(
            &["policy", "add", "--from", "net:", "--to", "b"],
            &format!("empty selector \"net:\": {sel}"),
        ),
        case(
            &["policy", "add", "--from", "a", "--to", "a"],
            "--from and --to are the same (a); a rule is between two different selectors",
        ),
        add(&["--port", "0"], "invalid port \"0\": 0 is out of range; ports are 1-65535"),
        add(
            &["--port", "65536"],
            "invalid port \"65536\": 65536 is out of range; ports are 1-65535",
        ),
        add(
            &["--port", "70000/tcp"],
            "invalid port \"70000/tcp\": 70000 is out of range; ports are 1-65535",
        ),
        add(
            &["--port", "80/sctp"],
            "invalid port \"80/sctp\": unknown protocol \"sctp\"; use tcp or udp",
        ),
        add(
            &["--port", "90-80"],
            "invalid port \"90-80\": the range ends before it starts; write it as 80-90",
        ),
        add(
            &["--port", "1-5000"],
            "invalid port \"1-5000\": ranges are limited to 1024 ports",
        ),
        add(&["--port", ""], &format!("invalid port \"\": {form}")),
        add(&["--port=-1"], &format!("invalid port \"-1\": {form}")),
        add(&["--port", "http"], &format!("invalid port \"http\": {form}")),
        add(
            &["--port", "80", "--icmp"],
            "the argument '--port <PORT>' cannot be used with '--icmp'; usage: bpfnet policy add --from <FROM> --to <TO> --port <PORT> (see `bpfnet policy add --help`)",
        ),
        add(
            &["--action", "maybe"],
            "invalid value 'maybe' for '--action <ACTION>'; possible values: allow, deny",
        ),
        case(
            &["policy", "rm", "99"],
            "rule 99 not found; list rules with `bpfnet policy ls`",
        ),
        case(
            &["policy", "rm", "1", "99"],
            "rule 99 not found; list rules with `bpfnet policy ls`",
        ),
        case(
            &["policy", "rm", "abc"],
            "invalid rule ID \"abc\": IDs are numbers, see `bpfnet policy ls`",
        ),
        case(
            &["policy", "import", "/nonexistent/rules.json"],
            "reading /nonexistent/rules.json: No such file or directory (os error 2)",
        ),
        import(
            "brace.json",
            "{",
            &format!("{shape}: invalid type: map, expected a sequence at line 1 column 0"),
        ),
        import("empty.json", "[]", "no rules in it; nothing to import"),
        import(
            "typo.json",
            r#"[{"from": "a", "to": "b", "prot": "80"}]"#,
            &format!("{shape}: unknown field `prot`, expected one of `from`, `to`, `port`, `icmp`, `action` at line 1 column 32"),
        ),
        import(
            "ghost.json",
            r#"[{"from": "a", "to": "b"}, {"from": "ghost", "to": "b"}]"#,
            &format!("rule #2: sandbox \"ghost\" not found; {sel}"),
        ),
        import(
            "port.json",
            r#"[{"from": "a", "to": "b", "port": "99999"}]"#,
            "rule #1: invalid port \"99999\": 99999 is out of range; ports are 1-65535",
        ),
        import(
            "both.json",
            r#"[{"from": "a", "to": "b"}, {"from": "a", "to": "b", "port": "80", "icmp": true}]"#,
            "rule #2: port and icmp exclude each other",
        ),
    ];
    check_all(&h, &cases);
    let rules = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules:#}");
}

/// A state file that is not what bpfnet wrote is refused by every command,
/// read-only or not, with the same line; nothing is "repaired" away. A lock
/// file left behind by a killed holder is no obstacle (flock dies with its
/// holder).
#[test]
fn malformed_state_files_are_refused_and_kept() {
    let h = host("bad-state");
    h.bpfnet_ok(&["network", "create", "--subnet", "10.10.0.0/16", "net1"]);
    h.create("a", &["net1"]);
    let state = h.root.join("state.json");
    // The whole state as one snapshot (pretty, so that the fixtures below
    // can edit it), without a log of changes after it.
    let paths = bpfnet::paths::Paths {
        state_dir: h.root.clone(),
        bpffs: "/sys/fs/bpf".into(),
    };
    let whole = bpfnet::store::snapshot(&paths).unwrap();
    let good = serde_json::to_string_pretty(&whole).unwrap();
    fs::write(&state, &good).unwrap();
    fs::remove_file(h.root.join("state.log")).unwrap();
    let corrupt = "{root}/state.json is corrupt; restore it from a backup, or move it away and run `bpfnet gc`";
    let dangling = good.replacen("\"network\": \"net1\"", "\"network\": \"gone\"", 1);
    assert_ne!(dangling, good, "fixture: the endpoint's network field");
    let renamed = good.replacen("\"name\": \"a\"", "\"name\": \"b\"", 1);
    assert_ne!(renamed, good, "fixture: the sandbox's name field");
    let variants: [(&str, String, &str); 6] = [
        (
            "garbage",
            "not json at all".into(),
            "expected ident at line 1 column 2",
        ),
        (
            "empty",
            String::new(),
            "EOF while parsing a value at line 1 column 0",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_string(),
            "EOF while parsing*",
        ),
        (
            "wrong shape",
            "[]".into(),
            "invalid length 3, expected struct State with 6 elements at line 1 column 2",
        ),
        (
            "dangling endpoint",
            dangling,
            "sandbox \"a\" has an endpoint on network \"gone\", which does not exist",
        ),
        (
            "name mismatch",
            renamed,
            "sandbox \"a\" is listed under the name \"b\"",
        ),
    ];
    let mut failures = vec![];
    for (what, text, cause) in &variants {
        fs::write(&state, text).unwrap();
        let cases: Vec<Case> = [
            &["ps"][..],
            &["network", "ls"],
            &["create", "--name", "z"],
            &["network", "create", "q"],
            &["gc"],
            &["datapath", "load"],
        ]
        .iter()
        .map(|args| case(args, &format!("{corrupt}: {cause}")))
        .collect();
        for f in run_cases(&h, &cases) {
            failures.push(format!("{what}: {f}"));
        }
    }
    // A directory where the lock file belongs.
    fs::write(&state, &good).unwrap();
    fs::remove_file(h.root.join("lock")).unwrap();
    fs::create_dir(h.root.join("lock")).unwrap();
    let lock_dir = [case(
        &["ps"],
        "opening {root}/lock: Is a directory (os error 21)",
    )];
    for f in run_cases(&h, &lock_dir) {
        failures.push(format!("lock dir: {f}"));
    }
    fs::remove_dir(h.root.join("lock")).unwrap();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // A lock whose holder was killed is free: the next command goes ahead.
    let lock = h.root.join("lock").display().to_string();
    let o = h.run(&["flock", &lock, "sh", "-c", "kill -9 $$"]);
    assert!(!o.success(), "the holder should have died: {o}");
    let before = state_files(&h.root);
    h.bpfnet_ok(&["ps"]);
    h.bpfnet_ok(&["network", "ls"]);
    assert!(
        before == state_files(&h.root),
        "a read-only command after a stale lock changed the state"
    );
    h.create("z", &["net1"]);
    h.assert_ping(Some("z"), &h.ip_on("a", "net1"));
}

/// IPv6 (`--ipv6`, `--subnet`, `--gateway`, `--ip6`): each wrong use is
/// refused with its line, and nothing changes.
#[test]
fn bad_ipv6_input_is_rejected() {
    let h = host("bad-ipv6");
    // The host's own IPv6: an address on an uplink-like device, a route
    // through it, and a route over the first /64 of bpfnet's pool.
    h.sh_ok(
        "set -e; ip link add uplink0 type veth peer name uplink1; \
         sysctl -qw net.ipv6.conf.uplink1.disable_ipv6=1 net.ipv6.conf.uplink0.accept_dad=0; \
         ip addr add fd99:1::1/64 dev uplink0 nodad; ip link set uplink0 up; ip link set uplink1 up; \
         ip -6 route add fd99:2::/48 via fd99:1::254; \
         ip -6 route add fd62:706e:6574::/64 via fd99:1::254",
    );
    h.bpfnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.42.0.0/24",
        "--subnet",
        "fd42:42::/64",
        "v6a",
    ]);
    h.bpfnet_ok(&["network", "create", "--subnet", "10.50.0.0/24", "v4only"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "a",
        "--network",
        "v6a",
        "--ip6",
        "fd42:42::5",
    ]);
    h.bpfnet_ok(&["create", "--name", "b", "--network", "v4only"]);
    // The kernel adds the multicast route of a's host-side veth once the
    // link's carrier is seen (linkwatch, up to a second later): let it
    // settle before the state snapshots start.
    let settled = (0..50).any(|_| {
        let o = h.run(&["ip", "-6", "route", "show", "table", "local", "ff00::/8"]);
        if o.stdout.contains("dev bn") {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        false
    });
    assert!(settled, "no multicast route for a's host-side veth");
    let net = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["network".to_string(), "create".to_string()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("n".into());
        v
    };
    let c = |args: Vec<String>, line: &str| Case {
        args,
        line: line.to_string(),
    };
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases = [
        c(
            net(&["--ipv6", "--subnet", "10.41.0.0/24"]),
            "--ipv6 with only IPv4 subnets (10.41.0.0/24): add an IPv6 subnet (--subnet fd42:30::/64), or leave out --subnet to take both from the pools",
        ),
        c(
            net(&["--ipv6", "--subnet", "10.41.0.0/24", "--subnet", "fd42:41::/127"]),
            "invalid subnet \"fd42:41::/127\": a prefix longer than /126 leaves no address for endpoints; use a /64",
        ),
        c(
            net(&["--ipv6", "--subnet", "10.43.0.0/24", "--subnet", "fd42:42::/48"]),
            "subnet fd42:42::/48 overlaps with network \"v6a\" (fd42:42::/64); choose another subnet",
        ),
        c(
            net(&["--ipv6", "--subnet", "fd42:42:0:0:8000::/65"]),
            "subnet fd42:42:0:0:8000::/65 overlaps with network \"v6a\" (fd42:42::/64); choose another subnet",
        ),
        c(
            net(&["--ipv6", "--subnet", "fd99:1::/64"]),
            "subnet fd99:1::/64 overlaps the host's own route fd99:1::/64 (dev uplink0); choose another subnet",
        ),
        c(
            net(&["--ipv6", "--subnet", "fd99:2:0:3::/64"]),
            "subnet fd99:2:0:3::/64 overlaps the host's own route fd99:2::/48 (dev uplink0); choose another subnet",
        ),
        c(
            net(&["--ipv6", "--subnet", "fe80::/64"]),
            "invalid subnet \"fe80::/64\": it overlaps the link-local (fe80::/10) range; choose a unique local range such as fd42:30::/64",
        ),
        c(
            net(&["--ipv6", "--subnet", "fd42:44::1/64"]),
            "invalid subnet \"fd42:44::1/64\": it has host bits set; did you mean fd42:44::/64?",
        ),
        c(
            net(&["--ipv6", "--subnet", "fd42:44::/64", "--subnet", "fd42:45::/64"]),
            "--subnet is given 2 times; a network has one IPv4 subnet and, with --ipv6, one IPv6 subnet",
        ),
        c(
            net(&["--ipv6", "--subnet", "fd42:46::/64", "--gateway", "fd42:47::1"]),
            "gateway fd42:47::1 is outside the usable addresses of subnet fd42:46::/64",
        ),
        c(
            net(&["--gateway", "fd42:47::1"]),
            "invalid gateway \"fd42:47::1\": an IPv6 gateway needs --ipv6 (a dual-stack network)",
        ),
        c(
            net(&["-d", "linux-bridge", "--ipv6"]),
            "the linux-bridge driver does not support --ipv6 (network \"n\"); use the bridge driver (eBPF) for a dual-stack network",
        ),
        c(
            argv(&["create", "--name", "x", "--network", "v4only", "--ip6", "fd42:42::9"]),
            "--ip6 fd42:42::9: network \"v4only\" has no IPv6; create it with --ipv6",
        ),
        c(
            argv(&["create", "--name", "x", "--network", "v6a", "--ip6", "fd42:43::9"]),
            "address fd42:43::9 is outside network \"v6a\" (fd42:42::/64)",
        ),
        c(
            argv(&["create", "--name", "x", "--network", "v6a", "--ip6", "fd42:42::5"]),
            "address fd42:42::5 is already in use on network \"v6a\" (by a)",
        ),
        c(
            argv(&["create", "--name", "x", "--network", "v6a", "--ip6", "fd42:42::1"]),
            "address fd42:42::1 is the gateway of network \"v6a\"; choose another",
        ),
        c(
            argv(&["create", "--name", "x", "--ip6", "fd42:42::9"]),
            "--ip6 is supported on user-defined networks only, not on the default bridge",
        ),
        c(
            argv(&["network", "connect", "--ip6", "fd42:42::5", "v6a", "b"]),
            "address fd42:42::5 is already in use on network \"v6a\" (by a)",
        ),
        c(
            argv(&["network", "connect", "--ip6", "fd42:42::9", "v4only", "a"]),
            "--ip6 fd42:42::9: network \"v4only\" has no IPv6; create it with --ipv6",
        ),
    ];
    check_all(&h, &cases);
    // The pool skips what the host routes already (its first /64).
    h.bpfnet_ok(&["network", "create", "--ipv6", "auto"]);
    let n = h.network_inspect("auto");
    assert_eq!(
        n["IPAM"]["Config"][1]["Subnet"], "fd62:706e:6574:1::/64",
        "{n:#}"
    );
}
