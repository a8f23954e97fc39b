//! `bpfnet-cni` called as a runtime (or `cnitool`) calls it: the CNI
//! environment and the configuration on stdin, in namespaces the test makes
//! with `ip netns add` (so they are not bpfnet's). Every verb, the error
//! codes, idempotent DEL, GC, a chained stock `portmap` and `tuning`.
use std::time::Duration;

use serde_json::{json, Value};

use bpfnet_tests::{bpfnet_bin, jstr, Output, TestHost, CMD_TIMEOUT};

/// The plugin binary beside the `bpfnet` under test.
fn cni_bin() -> String {
    match std::env::var_os("BPFNET_CNI_BIN") {
        Some(p) if !p.is_empty() => p.to_string_lossy().into_owned(),
        _ => bpfnet_bin()
            .with_file_name("bpfnet-cni")
            .to_string_lossy()
            .into_owned(),
    }
}

/// One invocation's environment.
#[derive(Clone, Default)]
struct Call<'a> {
    command: &'a str,
    container: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
}

impl<'a> Call<'a> {
    fn add(container: &'a str, netns: &'a str) -> Self {
        Call {
            command: "ADD",
            container,
            netns,
            ifname: "eth0",
            args: "",
        }
    }
    fn with(&self, command: &'a str) -> Self {
        Call {
            command,
            ..self.clone()
        }
    }
}

/// Runs `plugin` (a path) with the call's environment and `conf` on stdin.
fn run_plugin(h: &TestHost, plugin: &str, call: &Call, conf: &Value) -> (Output, Value) {
    let env = [
        format!("CNI_COMMAND={}", call.command),
        format!("CNI_CONTAINERID={}", call.container),
        format!("CNI_NETNS={}", call.netns),
        format!("CNI_IFNAME={}", call.ifname),
        format!("CNI_ARGS={}", call.args),
        "CNI_PATH=/usr/lib/cni".to_string(),
    ];
    let mut args: Vec<&str> = vec!["env"];
    args.extend(env.iter().map(String::as_str));
    args.push(plugin);
    let o = h.run_full(&args, Some(conf.to_string().as_bytes()), CMD_TIMEOUT);
    let v = if o.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("stdout of {plugin} is not JSON ({e}):\n{o}"))
    };
    (o, v)
}

fn cni(h: &TestHost, call: &Call, conf: &Value) -> (Output, Value) {
    run_plugin(h, &cni_bin(), call, conf)
}

/// Must succeed; returns the result.
fn cni_ok(h: &TestHost, call: &Call, conf: &Value) -> Value {
    let (o, v) = cni(h, call, conf);
    assert!(o.success(), "{} failed:\n{o}", call.command);
    v
}

/// Must fail with `code`, stdout the spec's error naming `needle` in its
/// details; returns the error.
fn cni_err(h: &TestHost, call: &Call, conf: &Value, code: u64, needle: &str) -> Value {
    let (o, v) = cni(h, call, conf);
    assert!(!o.success(), "{} should have failed:\n{o}", call.command);
    assert_eq!(v["code"], code, "{} error code:\n{o}", call.command);
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{o}");
    assert!(
        v["details"].as_str().unwrap_or_default().contains(needle),
        "error details should contain {needle:?}:\n{o}"
    );
    assert!(v["cniVersion"].is_string(), "{o}");
    v
}

fn conf(version: &str, name: &str, network: &str) -> Value {
    json!({"cniVersion": version, "name": name, "type": "bpfnet-cni", "network": network})
}

/// Names of `bpfnet ps`.
fn ps_names(h: &TestHost) -> Vec<String> {
    let ps = h.bpfnet_json(&["ps", "--format", "json"]);
    let mut names: Vec<String> = ps
        .as_array()
        .unwrap_or_else(|| panic!("ps is not an array: {ps:#}"))
        .iter()
        .map(|s| s["Names"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

fn netns_add(h: &TestHost, names: &[&str]) {
    for n in names {
        h.ok(&["ip", "netns", "add", n]);
    }
}

/// VERSION, ADD (1.1.0 and 0.4.0 results), CHECK, DEL and DEL again; the
/// attachment is a sandbox like any other while it lasts.
#[test]
fn add_check_del_make_and_remove_a_sandbox() {
    let h = TestHost::new("cni-verbs");
    h.bpfnet_ok(&["network", "create", "web"]);
    netns_add(&h, &["ctr-a", "ctr-b"]);
    let v = cni_ok(
        &h,
        &Call {
            command: "VERSION",
            ..Call::default()
        },
        &json!({"cniVersion": "1.0.0"}),
    );
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let a = Call {
        args: "IgnoreUnknown=1;K8S_POD_NAME=alpha",
        ..Call::add("aaaaaaaaaaaaaaaaaaaa1111", "/run/netns/ctr-a")
    };
    let ra = cni_ok(&h, &a, &conf("1.1.0", "webconf", "web"));
    let host_veth = jstr(&ra, "/interfaces/0/name").to_string();
    assert!(host_veth.starts_with("bn"), "{ra:#}");
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["interfaces"][1]["name"], "eth0", "{ra:#}");
    assert_eq!(ra["interfaces"][1]["sandbox"], "/run/netns/ctr-a", "{ra:#}");
    assert_eq!(ra["interfaces"][1]["mac"], "02:42:ac:12:00:02", "{ra:#}");
    assert_eq!(
        ra["ips"],
        json!([{"address": "172.18.0.2/16", "gateway": "172.18.0.1", "interface": 1}])
    );
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "172.18.0.1"}])
    );
    assert_eq!(ra["dns"], json!({"nameservers": ["172.18.0.1"]}));
    assert_eq!(h.ipv4_addrs("ctr-a", "eth0"), vec!["172.18.0.2/16"]);
    assert_eq!(h.mac_of("ctr-a", "eth0"), "02:42:ac:12:00:02");

    // No K8S_POD_NAME: the first 12 characters of the container id; a 0.4.0
    // result names each IP's version.
    let b = Call::add("bbbbbbbbbbbbbbbbbbbb2222", "/run/netns/ctr-b");
    let rb = cni_ok(&h, &b, &conf("0.4.0", "webconf", "web"));
    assert_eq!(rb["cniVersion"], "0.4.0");
    assert_eq!(
        rb["ips"],
        json!([{"version": "4", "address": "172.18.0.3/16", "gateway": "172.18.0.1", "interface": 1}])
    );
    assert_eq!(ps_names(&h), vec!["alpha", "bbbbbbbbbbbb"]);

    // One system: they reach each other and resolve each other's names
    // through the network's responder, as bpfnet's own sandboxes do.
    h.assert_ping(Some("ctr-a"), "172.18.0.3");
    h.assert_ping(Some("ctr-b"), "172.18.0.2");
    let answer = h.exec_ok(
        "ctr-b",
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=3",
            "@172.18.0.1",
            "alpha",
        ],
    );
    assert_eq!(answer.trim(), "172.18.0.2");
    let stats = h.bpfnet_json(&["stats", "alpha", "--format", "json"]);
    assert!(stats.to_string().contains("alpha"), "{stats:#}");
    // The runtime owns the container's /etc: bpfnet writes nothing there.
    assert!(h.sh("test -e /etc/netns/alpha").code != 0);
    let inspect = h.inspect("alpha");
    assert_eq!(
        jstr(&inspect, "/NetworkSettings/SandboxKey"),
        "/run/netns/ctr-a"
    );

    // CHECK: as added; then against a prevResult that differs.
    let mut with_prev = conf("1.1.0", "webconf", "web");
    with_prev["prevResult"] = ra.clone();
    assert_eq!(cni_ok(&h, &a.with("CHECK"), &with_prev), Value::Null);
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("172.18.0.9/16");
    cni_err(&h, &a.with("CHECK"), &wrong, 101, "172.18.0.2/16");
    // The kernel disagreeing with bpfnet's record fails CHECK too.
    h.exec_ok("ctr-a", &["ip", "addr", "flush", "dev", "eth0"]);
    cni_err(&h, &a.with("CHECK"), &with_prev, 101, "172.18.0.2/16");
    h.exec_ok(
        "ctr-a",
        &["ip", "addr", "add", "172.18.0.2/16", "dev", "eth0"],
    );
    let unknown = Call::add("cccccccccccc", "/run/netns/ctr-b").with("CHECK");
    cni_err(&h, &unknown, &with_prev, 3, "cccccccccccc");

    // ADD of an attachment that exists: an error, nothing changes.
    let before = h.snapshot();
    cni_err(&h, &a, &conf("1.1.0", "webconf", "web"), 100, "eth0");
    assert_eq!(h.snapshot(), before);

    // DEL: the sandbox and its veth go, the runtime's namespace stays.
    assert_eq!(cni_ok(&h, &a.with("DEL"), &with_prev), Value::Null);
    assert_eq!(ps_names(&h), vec!["bbbbbbbbbbbb"]);
    assert!(!h.link_names(None).contains(&host_veth));
    assert!(h.netns_list().contains(&"ctr-a".to_string()));
    assert_eq!(h.link_names(Some("ctr-a")), vec!["lo"]);
    // DEL again, and DEL of what was never added: success.
    cni_ok(&h, &a.with("DEL"), &with_prev);
    cni_ok(
        &h,
        &Call::add("neveradded", "/run/netns/ctr-a").with("DEL"),
        &conf("1.1.0", "webconf", "web"),
    );
    // DEL after the runtime deleted the namespace: success, nothing left.
    h.ok(&["ip", "netns", "del", "ctr-b"]);
    let del_b = Call {
        netns: "",
        ..b.with("DEL")
    };
    cni_ok(&h, &del_b, &conf("0.4.0", "webconf", "web"));
    assert!(ps_names(&h).is_empty());
    assert_eq!(h.link_names(None), vec!["lo"]);
    let map = h.map_dump("ENDPOINTS");
    assert!(map.is_empty(), "datapath entries left: {map:?}");
}

/// Each wrong use is the spec's error with its code; nothing changes.
#[test]
fn wrong_uses_are_the_specs_errors() {
    let h = TestHost::new("cni-errors");
    let c = conf("1.1.0", "webconf", "web");
    let status = Call::default().with("STATUS");
    // Before anything is loaded: not available.
    cni_err(&h, &status, &c, 50, "datapath is not loaded");
    h.bpfnet_ok(&["network", "create", "web"]);
    netns_add(&h, &["ctr-e"]);
    let add = Call::add("eeeeeeeeeeee", "/run/netns/ctr-e");
    let before = h.snapshot();

    cni_err(
        &h,
        &Call {
            command: "",
            ..add.clone()
        },
        &c,
        4,
        "CNI_COMMAND",
    );
    cni_err(&h, &add.with("FROB"), &c, 4, "FROB");
    let (o, v) = run_plugin_raw(&h, &add, b"{not json");
    assert_eq!(v["code"], 6, "{o}");
    cni_err(&h, &add, &conf("9.9.9", "webconf", "web"), 1, "9.9.9");
    cni_err(&h, &status, &conf("1.0.0", "webconf", "web"), 1, "1.1.0");
    cni_err(
        &h,
        &add.with("GC"),
        &conf("0.4.0", "webconf", "web"),
        1,
        "1.1.0",
    );
    let mut ipam = c.clone();
    ipam["ipam"] = json!({"type": "host-local", "subnet": "10.1.0.0/16"});
    cni_err(&h, &add, &ipam, 2, "host-local");
    let mut mtu = c.clone();
    mtu["mtu"] = json!(9000);
    cni_err(&h, &add, &mtu, 2, "mtu: 9000");
    let mut no_network = c.clone();
    no_network
        .as_object_mut()
        .expect("object")
        .remove("network");
    cni_err(&h, &add, &no_network, 7, "\"network\"");
    cni_err(
        &h,
        &add,
        &conf("1.1.0", "webconf", "nosuch"),
        7,
        "bpfnet network create nosuch",
    );
    cni_err(&h, &add, &conf("1.1.0", "webconf", "host"), 7, "no subnet");
    cni_err(
        &h,
        &Call {
            container: "",
            ..add.clone()
        },
        &c,
        4,
        "CNI_CONTAINERID",
    );
    cni_err(
        &h,
        &Call {
            container: "-x",
            ..add.clone()
        },
        &c,
        4,
        "CNI_CONTAINERID",
    );
    cni_err(
        &h,
        &Call {
            ifname: "a/b",
            ..add.clone()
        },
        &c,
        4,
        "CNI_IFNAME",
    );
    cni_err(
        &h,
        &Call {
            netns: "",
            ..add.clone()
        },
        &c,
        4,
        "CNI_NETNS",
    );
    let plain = format!("{}/plainfile", h.dir.display());
    h.ok(&["touch", &plain]);
    cni_err(
        &h,
        &Call {
            netns: &plain,
            ..add.clone()
        },
        &c,
        4,
        "not a network namespace",
    );
    // An interface of that name in the container already.
    h.exec_ok(
        "ctr-e",
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
    );
    cni_err(&h, &add, &c, 100, "eth0");
    h.exec_ok("ctr-e", &["ip", "link", "del", "eth0"]);
    cni_err(&h, &add.with("CHECK"), &c, 7, "prevResult");
    cni_err(&h, &add.with("GC"), &c, 7, "cni.dev/valid-attachments");
    cni_err(
        &h,
        &status,
        &conf("1.1.0", "webconf", "nosuch"),
        50,
        "nosuch",
    );
    assert_eq!(h.snapshot(), before, "a refused call changed something");
    assert!(ps_names(&h).is_empty());

    // STATUS once the datapath is loaded and the network exists: 0, silent.
    assert_eq!(cni_ok(&h, &status, &c), Value::Null);
    let help = h.ok(&[&cni_bin(), "--help"]);
    assert!(help.contains("CNI_COMMAND") && help.contains("bpfnet network create"));
}

fn run_plugin_raw(h: &TestHost, call: &Call, stdin: &[u8]) -> (Output, Value) {
    let env = [
        format!("CNI_COMMAND={}", call.command),
        format!("CNI_CONTAINERID={}", call.container),
        format!("CNI_NETNS={}", call.netns),
        format!("CNI_IFNAME={}", call.ifname),
    ];
    let bin = cni_bin();
    let mut args: Vec<&str> = vec!["env"];
    args.extend(env.iter().map(String::as_str));
    args.push(&bin);
    let o = h.run_full(&args, Some(stdin), CMD_TIMEOUT);
    let v = serde_json::from_str(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

/// GC removes exactly the attachments of its configuration that the
/// runtime no longer lists: not other configurations', not bpfnet's own
/// sandboxes, not listed ones.
#[test]
fn gc_removes_only_unlisted_attachments_of_its_configuration() {
    let h = TestHost::new("cni-gc");
    h.bpfnet_ok(&["network", "create", "web"]);
    h.create("plain", &["web"]);
    netns_add(&h, &["g1", "g2", "g3"]);
    let keep = Call::add("keep00000000", "/run/netns/g1");
    let stale = Call::add("stale0000000", "/run/netns/g2");
    let other = Call::add("other0000000", "/run/netns/g3");
    cni_ok(&h, &keep, &conf("1.1.0", "webconf", "web"));
    cni_ok(&h, &stale, &conf("1.1.0", "webconf", "web"));
    cni_ok(&h, &other, &conf("1.1.0", "otherconf", "web"));
    let mut gc = conf("1.1.0", "webconf", "web");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep00000000", "ifname": "eth0"}]);
    let (o, v) = cni(&h, &Call::default().with("GC"), &gc);
    assert!(o.success() && v.is_null(), "{o}");
    assert!(o.stderr.contains("stale0000000"), "{o}");
    assert_eq!(ps_names(&h), vec!["keep00000000", "other0000000", "plain"]);
    assert_eq!(h.link_names(Some("g2")), vec!["lo"]);
    h.assert_ping(Some("g1"), &h.ip_on("plain", "web"));
    h.assert_ping(Some("g3"), &h.ip_on("keep00000000", "web"));
}

/// Several ADDs and DELs at once, as a runtime starting many containers:
/// distinct addresses, all reachable, nothing left after.
#[test]
fn concurrent_adds_and_dels_are_safe() {
    let h = TestHost::new("cni-concurrent");
    h.bpfnet_ok(&["network", "create", "web"]);
    let n = 8;
    let names: Vec<String> = (0..n).map(|i| format!("cc{i}")).collect();
    for name in &names {
        netns_add(&h, &[name]);
    }
    let conf_s = conf("1.0.0", "webconf", "web").to_string();
    let script = |cmd: &str| {
        names
            .iter()
            .map(|name| {
                format!(
                    "printf '%s' '{conf_s}' | env CNI_COMMAND={cmd} CNI_CONTAINERID={name}id CNI_NETNS=/run/netns/{name} CNI_IFNAME=eth0 CNI_ARGS='K8S_POD_NAME={name}' {} > /dev/null || echo FAILED {name} & ",
                    cni_bin()
                )
            })
            .collect::<String>()
            + "wait"
    };
    let out = h.run_full(
        &["sh", "-c", &script("ADD")],
        None,
        Duration::from_secs(120),
    );
    assert!(out.success() && !out.stdout.contains("FAILED"), "{out}");
    assert_eq!(ps_names(&h), names);
    let mut ips: Vec<String> = names.iter().map(|s| h.ip_on(s, "web")).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "{ips:?}");
    h.assert_ping(Some("cc0"), &h.ip_on("cc7", "web"));
    let out = h.run_full(
        &["sh", "-c", &script("DEL")],
        None,
        Duration::from_secs(120),
    );
    assert!(out.success() && !out.stdout.contains("FAILED"), "{out}");
    assert!(ps_names(&h).is_empty());
    assert_eq!(h.link_names(None), vec!["lo"]);
}

/// Isolation between networks and `bpfnet policy` hold for containers as
/// for any sandbox, by the names they got from K8S_POD_NAME.
#[test]
fn attachments_are_isolated_and_under_policy() {
    let h = TestHost::new("cni-policy");
    h.bpfnet_ok(&["network", "create", "web"]);
    h.bpfnet_ok(&["network", "create", "db"]);
    netns_add(&h, &["p-web", "p-db"]);
    let web = Call {
        args: "K8S_POD_NAME=frontend",
        ..Call::add("webctr000000", "/run/netns/p-web")
    };
    let db = Call {
        args: "K8S_POD_NAME=store",
        ..Call::add("dbctr0000000", "/run/netns/p-db")
    };
    cni_ok(&h, &web, &conf("1.0.0", "webconf", "web"));
    cni_ok(&h, &db, &conf("1.0.0", "dbconf", "db"));
    let db_ip = h.ip_on("store", "db");
    h.assert_no_ping(Some("p-web"), &db_ip);
    h.bpfnet_ok(&[
        "policy", "add", "--from", "frontend", "--to", "net:db", "--icmp",
    ]);
    h.assert_ping(Some("p-web"), &db_ip);
    h.assert_no_ping(Some("p-db"), &h.ip_on("frontend", "web"));
}

/// `bpfnet gc` forgets a container whose namespace is gone (deleted, or
/// its path bound to another namespace) and never touches a live one or the
/// runtime's new namespace.
#[test]
fn gc_forgets_containers_whose_namespace_is_gone() {
    let h = TestHost::new("cni-bpfnet-gc");
    h.bpfnet_ok(&["network", "create", "web"]);
    netns_add(&h, &["live", "gone", "reused"]);
    for (id, ns) in [
        ("live00000000", "live"),
        ("gone00000000", "gone"),
        ("reused000000", "reused"),
    ] {
        let path = format!("/run/netns/{ns}");
        cni_ok(&h, &Call::add(id, &path), &conf("1.0.0", "webconf", "web"));
    }
    h.ok(&["ip", "netns", "del", "gone"]);
    h.ok(&["ip", "netns", "del", "reused"]);
    netns_add(&h, &["reused"]);
    h.exec_ok(
        "reused",
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
    );
    let out = h.bpfnet_ok(&["gc"]);
    assert!(
        out.contains("gone00000000") && out.contains("reused000000"),
        "{out}"
    );
    assert_eq!(ps_names(&h), vec!["live00000000"]);
    assert!(h.link_names(Some("reused")).contains(&"eth0".to_string()));
    assert!(h.netns_list().contains(&"live".to_string()));
    assert_eq!(h.ipv4_addrs("live", "eth0"), vec!["172.18.0.2/16"]);
}

/// A crash in the middle of ADD is rolled back by the next command, one in
/// the middle of DEL completed; the runtime's namespace stays.
#[test]
fn crash_during_add_or_del_is_recovered() {
    let h = TestHost::new("cni-crash");
    h.bpfnet_ok(&["network", "create", "web"]);
    netns_add(&h, &["crashed"]);
    let conf_s = conf("1.0.0", "webconf", "web").to_string();
    let o = h.sh(&format!(
        "printf '%s' '{conf_s}' | env BPFNET_FAULT=endpoint-up:sandbox-side CNI_COMMAND=ADD CNI_CONTAINERID=crash0000000 CNI_NETNS=/run/netns/crashed CNI_IFNAME=eth0 {}",
        cni_bin()
    ));
    assert!(!o.success(), "the fault point did not fire:\n{o}");
    assert!(
        h.link_names(None).iter().any(|l| l.starts_with("bn")),
        "the crash should have left the veth behind"
    );
    h.bpfnet_ok(&["gc"]);
    assert!(ps_names(&h).is_empty());
    assert_eq!(h.link_names(None), vec!["lo"]);
    assert_eq!(h.link_names(Some("crashed")), vec!["lo"]);
    // The same container can be added again at once.
    cni_ok(
        &h,
        &Call::add("crash0000000", "/run/netns/crashed"),
        &conf("1.0.0", "webconf", "web"),
    );
    // A crash in the middle of DEL is completed by the next command: the
    // endpoint goes, the runtime's namespace stays.
    let o = h.sh(&format!(
        "printf '%s' '{conf_s}' | env BPFNET_FAULT=endpoint-down:detached CNI_COMMAND=DEL CNI_CONTAINERID=crash0000000 CNI_NETNS=/run/netns/crashed CNI_IFNAME=eth0 {}",
        cni_bin()
    ));
    assert!(!o.success(), "the fault point did not fire:\n{o}");
    h.bpfnet_ok(&["gc"]);
    assert!(ps_names(&h).is_empty());
    assert_eq!(h.link_names(None), vec!["lo"]);
    assert_eq!(h.link_names(Some("crashed")), vec!["lo"]);
    assert!(h.netns_list().contains(&"crashed".to_string()));
}

/// The stock `portmap` and `tuning` plugins after ours get a valid
/// prevResult: a published port reaches the container from an outside
/// namespace, the sysctl is set in the container; DEL of the chain in
/// reverse leaves nothing.
#[test]
fn chained_portmap_and_tuning_work() {
    let h = TestHost::new("cni-portmap");
    h.bpfnet_ok(&["network", "create", "web"]);
    netns_add(&h, &["pm-ctr", "pm-out"]);
    // "Outside": a namespace behind a veth to the test host, which forwards.
    h.sh_ok(
        "ip link add pmh type veth peer name pmo netns pm-out && \
         ip addr add 10.250.0.1/24 dev pmh && ip link set pmh up && \
         ip netns exec pm-out ip addr add 10.250.0.2/24 dev pmo && \
         ip netns exec pm-out ip link set pmo up && \
         ip netns exec pm-out ip link set lo up && \
         ip netns exec pm-out ip route add default via 10.250.0.1 && \
         sysctl -qw net.ipv4.ip_forward=1",
    );
    let call = Call {
        args: "IgnoreUnknown=1;K8S_POD_NAME=published",
        ..Call::add("pm0000000000", "/run/netns/pm-ctr")
    };
    let ours = cni_ok(&h, &call, &conf("1.0.0", "pmconf", "web"));
    let portmap = json!({
        "cniVersion": "1.0.0", "name": "pmconf", "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": ours,
    });
    let (o, after_pm) = run_plugin(&h, "/usr/lib/cni/portmap", &call, &portmap);
    assert!(o.success(), "portmap ADD:\n{o}");
    let tuning = json!({
        "cniVersion": "1.0.0", "name": "pmconf", "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0", "net.core.somaxconn": "777"},
        "prevResult": after_pm,
    });
    let (o, after_tuning) = run_plugin(&h, "/usr/lib/cni/tuning", &call, &tuning);
    assert!(o.success(), "tuning ADD:\n{o}");
    assert_eq!(after_tuning["ips"], ours["ips"], "{after_tuning:#}");
    assert_eq!(
        h.exec_ok("pm-ctr", &["sysctl", "-n", "net.core.somaxconn"])
            .trim(),
        "777"
    );
    let ip = h.ip_on("published", "web");
    let mut server = h.py_spawn(Some("pm-ctr"), &["tcp-echo-server", &ip, "80"]);
    server.wait_line("ready", Duration::from_secs(10));
    let reply = h.py_in(
        Some("pm-out"),
        &["tcp-echo", "10.250.0.1", "8080", "through-portmap"],
    );
    assert!(
        reply.success() && reply.stdout.contains("through-portmap"),
        "published port did not reach the container:\n{reply}\n{}",
        h.sh("iptables-save -t nat").stdout
    );
    server.stop();
    // CHECK of the whole chain, then DEL in reverse order.
    let mut check = conf("1.0.0", "pmconf", "web");
    check["prevResult"] = after_tuning.clone();
    cni_ok(&h, &call.with("CHECK"), &check);
    let mut pm_del = portmap.clone();
    pm_del["prevResult"] = after_tuning.clone();
    let (o, _) = run_plugin(&h, "/usr/lib/cni/portmap", &call.with("DEL"), &pm_del);
    assert!(o.success(), "portmap DEL:\n{o}");
    cni_ok(&h, &call.with("DEL"), &check);
    assert!(ps_names(&h).is_empty());
    let nat = h.sh_ok("iptables-save -t nat");
    assert!(!nat.contains("8080"), "portmap left rules:\n{nat}");
}

/// On an `--internal` network the container gets no default route, and the
/// result says so (its routes are what is configured); a 0.3.1 result.
#[test]
fn internal_network_result_has_no_default_route() {
    let h = TestHost::new("cni-internal");
    h.bpfnet_ok(&["network", "create", "--internal", "vault"]);
    netns_add(&h, &["in-ctr"]);
    let r = cni_ok(
        &h,
        &Call::add("internal0000", "/run/netns/in-ctr"),
        &conf("0.3.1", "vaultconf", "vault"),
    );
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["version"], "4", "{r:#}");
    assert!(r.get("routes").is_none(), "{r:#}");
    assert_eq!(r["ips"][0]["gateway"], "172.18.0.1", "{r:#}");
    let routes = h.exec_ok("in-ctr", &["ip", "route", "show", "default"]);
    assert!(routes.trim().is_empty(), "{routes}");
}

/// On a dual-stack network a container gets both families and the result
/// says so as the CNI bridge plugin's does: both addresses with their
/// gateways (0.4.0: with their versions) and both default routes; two
/// containers reach each other over IPv6; CHECK verifies the IPv6 address
/// in prevResult and in the container, and fails naming it when it is gone.
#[test]
fn dual_stack_network_result_carries_both_families() {
    let h = TestHost::new("cni-dual");
    h.bpfnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "172.30.0.0/24",
        "--subnet",
        "fd42:30::/64",
        "ds",
    ]);
    netns_add(&h, &["ds-a", "ds-b"]);
    let c = conf("0.4.0", "dsconf", "ds");
    let a = Call::add("dualstackaaaa", "/run/netns/ds-a");
    let ra = cni_ok(&h, &a, &c);
    let ips: Vec<(&str, &str, &str)> = ra["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips: {ra:#}"))
        .iter()
        .map(|i| {
            (
                jstr(i, "/version"),
                jstr(i, "/address"),
                jstr(i, "/gateway"),
            )
        })
        .collect();
    assert_eq!(ips.len(), 2, "{ra:#}");
    let (v4, v6) = (ips[0], ips[1]);
    assert!(
        v4.0 == "4"
            && v4.1.starts_with("172.30.0.")
            && v4.1.ends_with("/24")
            && v4.2 == "172.30.0.1",
        "{ra:#}"
    );
    assert!(
        v6.0 == "6"
            && v6.1.starts_with("fd42:30::")
            && v6.1.ends_with("/64")
            && v6.2 == "fd42:30::1",
        "{ra:#}"
    );
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "172.30.0.1"}, {"dst": "::/0", "gw": "fd42:30::1"}]),
        "{ra:#}"
    );
    let shown = h.exec_ok("ds-a", &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(shown.contains(v6.1), "{shown}");
    let rb = cni_ok(&h, &Call::add("dualstackbbbb", "/run/netns/ds-b"), &c);
    let b6 = jstr(&rb, "/ips/1/address")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    h.assert_ping(Some("ds-a"), &b6);

    let mut with_prev = c.clone();
    with_prev["prevResult"] = ra.clone();
    assert_eq!(cni_ok(&h, &a.with("CHECK"), &with_prev), Value::Null);
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    cni_err(&h, &a.with("CHECK"), &wrong, 101, v6.1);
    h.exec_ok("ds-a", &["ip", "-6", "addr", "del", v6.1, "dev", "eth0"]);
    cni_err(
        &h,
        &a.with("CHECK"),
        &with_prev,
        101,
        &format!("eth0 does not have the address {}", v6.1),
    );

    cni_ok(&h, &a.with("DEL"), &c);
    cni_ok(
        &h,
        &Call::add("dualstackbbbb", "/run/netns/ds-b").with("DEL"),
        &c,
    );
    assert!(ps_names(&h).is_empty(), "{:?}", ps_names(&h));
}
