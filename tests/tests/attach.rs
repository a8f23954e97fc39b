//! Attaching the datapath: a clsact qdisc on every endpoint's host-side veth,
//! bound to two shared tc blocks that carry one direct-action bpf filter per
//! hook; reloads replace each filter's program in place under traffic (no
//! packet lost, none unjudged, no connection reset), a layout change runs
//! the old programs until the new ones are attached everywhere (also on
//! veths an older bpfnet gave blocks of their own), and nothing is left
//! behind.

use std::{thread, time::Duration};

use bpfnet_common::MAP_LAYOUT_VERSION;
use bpfnet_tests::{docker_mac, Bg, TestHost, PYTHON};

fn prio() -> u64 {
    1000 + u64::from(MAP_LAYOUT_VERSION)
}

fn filter_name(prog: &str) -> String {
    format!("bpfnet-v{MAP_LAYOUT_VERSION}-{prog}")
}

/// The shared blocks every endpoint's clsact binds (ingress, egress).
const BLOCKS: [&str; 2] = ["1651507201", "1651507202"];

/// The blocks (ingress, egress) of each veth's clsact qdisc, "" for a
/// block of its own.
fn qdisc_blocks(h: &TestHost) -> Vec<(String, String, String)> {
    let out = h.ok(&["tc", "-j", "qdisc", "show"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("tc -j qdisc show");
    let block =
        |q: &serde_json::Value, k: &str| q.get(k).map(|b| b.to_string()).unwrap_or_default();
    let mut got: Vec<_> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["kind"] == "clsact")
        .map(|q| {
            (
                q["dev"].as_str().unwrap_or("").to_string(),
                block(q, "ingress_block"),
                block(q, "egress_block"),
            )
        })
        .collect();
    got.sort();
    got
}

/// Asserts that `veths` (and no other link) bind the shared blocks.
fn assert_shared_blocks(h: &TestHost, veths: &[&str]) {
    let mut want: Vec<_> = veths
        .iter()
        .map(|v| (v.to_string(), BLOCKS[0].to_string(), BLOCKS[1].to_string()))
        .collect();
    want.sort();
    assert_eq!(qdisc_blocks(h), want, "clsact qdiscs and their blocks");
}

/// Asserts that exactly `veths` carry bpfnet's two filters of the current
/// layout, running the pinned programs, and that no other filter exists.
/// `tc filter add dev VETH HOOK prio PRIO handle 1 bpf da object-pinned PIN`.
fn add_pinned_filter(h: &TestHost, veth: &str, hook: &str, prio: &str, pin: &str) {
    h.ok(&[
        "tc",
        "filter",
        "add",
        "dev",
        veth,
        hook,
        "prio",
        prio,
        "handle",
        "1",
        "bpf",
        "da",
        "object-pinned",
        pin,
    ]);
}

fn assert_attached_exactly(h: &TestHost, veths: &[&str]) {
    let ingress = h.pinned_prog_id("tc_ingress");
    let egress = h.pinned_prog_id("tc_egress");
    let mut filters = h.tc_filters();
    filters.sort_by(|a, b| (&a.link, &a.hook).cmp(&(&b.link, &b.hook)));
    let mut want = vec![];
    for v in veths {
        for (hook, prog, id) in [
            ("egress", "tc_egress", egress),
            ("ingress", "tc_ingress", ingress),
        ] {
            want.push((
                v.to_string(),
                hook.to_string(),
                prio(),
                filter_name(prog),
                id,
                true,
            ));
        }
    }
    want.sort();
    let got: Vec<_> = filters
        .iter()
        .map(|f| {
            (
                f.link.clone(),
                f.hook.clone(),
                f.pref,
                f.name.clone(),
                f.prog_id,
                f.direct_action,
            )
        })
        .collect();
    assert_eq!(got, want, "filters on the host's links");
    let mut qdiscs = h.clsact_links();
    qdiscs.sort();
    let mut want: Vec<String> = veths.iter().map(|v| v.to_string()).collect();
    want.sort();
    assert_eq!(qdiscs, want, "links with a clsact qdisc");
}

/// Sends forged-source frames (marker FLOODFORGED) from eth0 as fast as it
/// can until SIGTERM, then prints how many.
const FLOOD: &str = r#"
import signal, socket, struct, sys
src, dst, dip = sys.argv[1:4]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 48, 0, 0, 64, 17, 0,
                 socket.inet_aton("10.250.0.7"), socket.inet_aton(dip))
frame = mac(dst) + mac(src) + b"\x08\x00" + ip + b"FLOODFORGED" * 2 + b"\x00" * 6
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
n = 0
while not stop:
    try:
        s.send(frame)
        n += 1
    except InterruptedError:
        pass
print(n, flush=True)
"#;

/// Three sandboxes on one network with known addresses (and MACs of a, b).
struct Pair {
    h: TestHost,
    a_ip: String,
    b_ip: String,
    c_ip: String,
    a_mac: String,
    b_mac: String,
}

fn pair(name: &str) -> Pair {
    let h = TestHost::new(name);
    h.bpfnet_ok(&["network", "create", "net1"]);
    h.create("a", &["net1"]);
    h.create("b", &["net1"]);
    h.create("c", &["net1"]);
    let (a_ip, b_ip) = (h.ip_on("a", "net1"), h.ip_on("b", "net1"));
    let c_ip = h.ip_on("c", "net1");
    h.assert_ping(Some("a"), &b_ip);
    Pair {
        c_ip,
        a_mac: docker_mac(&a_ip),
        b_mac: docker_mac(&b_ip),
        a_ip,
        b_ip,
        h,
    }
}

/// Traffic that must get through untouched while `during` runs (each
/// reload of it must happen while the traffic flows): a TCP stream a → c, a
/// ping a → b every 10 ms, legitimate marked frames a → b, and frames with a
/// forged source address a → b that the datapath must drop — every one of
/// them, so no packet passed unjudged. (The stream goes to c so that b's
/// frame counter sees only the light traffic and misses none.)
fn under_traffic(p: &Pair, during: impl FnOnce(&dyn Fn() -> bool)) {
    let h = &p.h;
    let mut sink = h.py_spawn(Some("c"), &["sink", &p.c_ip, "7777"]);
    sink.wait_line("ready", Duration::from_secs(10));
    let legit = format!("{},{},{},{},LEGITFRAME", p.a_mac, p.b_mac, p.a_ip, p.b_ip);
    let forged = format!("{},{},10.250.0.9,{},FORGEDFRAME", p.a_mac, p.b_mac, p.b_ip);
    let mut stream: Option<Bg> = None;
    let mut ping: Option<Bg> = None;
    let markers = ["LEGITFRAME", "FORGEDFRAME", "FLOODFORGED"];
    let counts = h.count_received("b", "eth0", &markers, || {
        stream = Some(h.py_spawn(Some("a"), &["source", &p.c_ip, "7777", "600000000", "7"]));
        ping = Some(h.spawn_in(
            "a",
            &[
                "ping", "-n", "-q", "-c", "300", "-i", "0.01", "-W", "1", &p.b_ip,
            ],
        ));
        let mut legit_tx = h.py_spawn(Some("a"), &["sendp", "eth0", "200", &legit]);
        let mut forged_tx = h.py_spawn(Some("a"), &["sendp", "eth0", "200", &forged]);
        // And as fast as a raw socket sends: a window of a millisecond
        // would show.
        let mut flood = h.spawn_in("a", &[PYTHON, "-c", FLOOD, &p.a_mac, &p.b_mac, &p.b_ip]);
        // Scapy takes a moment to start; traffic flows once both print.
        thread::sleep(Duration::from_millis(1500));
        let s = stream.as_ref().expect("started");
        during(&|| s.lines().is_empty());
        let flooded = flood.stop();
        assert!(
            flooded.last_line().parse::<u64>().is_ok_and(|n| n > 1000),
            "the forged flood did not run:\n{flooded}"
        );
        legit_tx.finish_ok(Duration::from_secs(30));
        forged_tx.finish_ok(Duration::from_secs(30));
    });
    let ping = ping.expect("started").finish(Duration::from_secs(30));
    assert!(
        ping.stdout.contains(" 0% packet loss"),
        "pings were lost:\n{ping}"
    );
    let sent = stream.expect("started").finish_ok(Duration::from_secs(120));
    let got = sink.finish_ok(Duration::from_secs(30));
    assert_eq!(
        got.last_line(),
        sent.last_line(),
        "the TCP stream arrived incomplete or altered"
    );
    assert_eq!(counts, vec![200, 0, 0], "{markers:?} frames received by b");
}

/// `create` puts a clsact qdisc on the endpoint's host-side veth, bound to
/// the shared blocks, whose one direct-action filter per hook runs the
/// pinned programs; `rm` and `network disconnect` leave no qdisc and no
/// filter behind, and unbinding one veth leaves the others judged.
#[test]
fn endpoints_get_both_programs_as_direct_action_filters_and_leave_none_behind() {
    let p = pair("attach-filters");
    let h = &p.h;
    let [va, vb, vc] = ["a", "b", "c"].map(|s| h.host_veth(s, "eth0"));
    assert_attached_exactly(h, &[&va, &vb, &vc]);
    assert_shared_blocks(h, &[&va, &vb, &vc]);
    for block in BLOCKS {
        let filters = h.ok(&["tc", "filter", "show", "block", block]);
        assert_eq!(
            filters.matches("bpfnet-v").count(),
            1,
            "block {block}: {filters}"
        );
    }
    // The guard is real: a forged source from a is dropped.
    let forged = format!("{},{},10.250.0.9,{},FORGEDFRAME", p.a_mac, p.b_mac, p.b_ip);
    let counts = h.count_received("b", "eth0", &["FORGEDFRAME"], || {
        h.py_in(Some("a"), &["sendp", "eth0", "5", &forged]);
    });
    assert_eq!(counts, vec![0], "forged frames reached b");

    h.bpfnet_ok(&["network", "disconnect", "net1", "b"]);
    assert_attached_exactly(h, &[&va, &vc]);
    assert_shared_blocks(h, &[&va, &vc]);
    // a and c, still bound to the blocks, are still guarded.
    let forged = format!(
        "{},{},10.250.0.9,{},FORGEDFRAME",
        p.a_mac,
        docker_mac(&p.c_ip),
        p.c_ip
    );
    let counts = h.count_received("c", "eth0", &["FORGEDFRAME"], || {
        h.py_in(Some("a"), &["sendp", "eth0", "5", &forged]);
    });
    assert_eq!(counts, vec![0], "forged frames reached c after b left");
    h.assert_ping(Some("a"), &p.c_ip);
    h.bpfnet_ok(&["rm", "-f", "a", "c"]);
    // (The pairs of a removed sandbox go with its namespace, after `rm`.)
    assert_eq!(h.links_settled(&["lo"]), vec!["lo"], "links left");
    assert_attached_exactly(h, &[]);
    assert!(h.tc_filters().is_empty(), "{:?}", h.tc_filters());
}

/// `bpfnet datapath load` again, under traffic: each filter keeps its place
/// (hook, priority, handle) and gets the newly loaded program atomically —
/// no ping lost, the TCP stream intact, no forged frame through.
#[test]
fn reload_replaces_each_filters_program_in_place_under_traffic() {
    let p = pair("attach-reload");
    let h = &p.h;
    let [va, vb, vc] = ["a", "b", "c"].map(|s| h.host_veth(s, "eth0"));
    let before = h.pinned_prog_id("tc_ingress");
    let mut reloads = 0;
    under_traffic(&p, |streaming| {
        while reloads < 3 || (streaming() && reloads < 20) {
            let out = h.bpfnet_ok(&["datapath", "load"]);
            // One filter per shared block, whatever the number of veths.
            assert!(out.contains("filters replaced in place: 2"), "{out}");
            reloads += 1;
            if reloads == 1 {
                assert!(streaming(), "the TCP stream ended before the first reload");
            }
        }
    });
    let after = h.pinned_prog_id("tc_ingress");
    assert_ne!(before, after, "reload kept the old program");
    assert_attached_exactly(h, &[&va, &vb, &vc]);
    assert_shared_blocks(h, &[&va, &vb, &vc]);
}

/// A new map layout is attached behind the old one (a higher tc priority),
/// so the old programs judge every packet until the new ones are on every
/// veth; then the old filters and pins go. Simulated by moving the current
/// attachment to the previous layout's priority and pin directory: on the
/// shared blocks for a, and for b and c as an older bpfnet left them, on
/// qdiscs with blocks of their own (which keep them: their filters are
/// changed by device).
#[test]
fn layout_change_under_traffic_hands_over_without_an_unjudged_packet() {
    let p = pair("attach-layout");
    let h = &p.h;
    let [va, vb, vc] = ["a", "b", "c"].map(|s| h.host_veth(s, "eth0"));
    let old = MAP_LAYOUT_VERSION - 1;
    let old_prio = (1000 + old).to_string();
    let dir = TestHost::pin_dir();
    for prog in ["tc_ingress", "tc_egress"] {
        h.ok(&[
            "bpftool",
            "prog",
            "pin",
            "pinned",
            &format!("{dir}/progs/{prog}"),
            &format!("/sys/fs/bpf/bpfnet-v{old}-{prog}"),
        ]);
    }
    for (v, own_blocks) in [(&va, false), (&vb, true), (&vc, true)] {
        if own_blocks {
            h.ok(&["tc", "qdisc", "del", "dev", v, "clsact"]);
            h.ok(&["tc", "qdisc", "add", "dev", v, "clsact"]);
        }
        for (i, (hook, prog)) in [("ingress", "tc_ingress"), ("egress", "tc_egress")]
            .into_iter()
            .enumerate()
        {
            let pin = format!("/sys/fs/bpf/bpfnet-v{old}-{prog}");
            if own_blocks {
                add_pinned_filter(h, v, hook, &old_prio, &pin);
                continue;
            }
            let block = ["block", BLOCKS[i]];
            h.ok(&[
                &["tc", "filter", "add"][..],
                &block,
                &[
                    "prio",
                    &old_prio,
                    "handle",
                    "1",
                    "bpf",
                    "da",
                    "object-pinned",
                    &pin,
                ],
            ]
            .concat());
            h.ok(&[
                &["tc", "filter", "del"][..],
                &block,
                &["prio", &prio().to_string()],
            ]
            .concat());
        }
    }
    h.sh_ok(&format!(
        "rm /sys/fs/bpf/bpfnet-v{old}-tc_*; mv {dir} /sys/fs/bpf/bpfnet/v{old}"
    ));
    assert!(h
        .tc_filters()
        .iter()
        .all(|f| f.pref == 1000 + u64::from(old)));
    under_traffic(&p, |streaming| {
        h.bpfnet_ok(&["datapath", "load"]);
        assert!(streaming(), "the TCP stream ended before the load did");
    });
    assert_attached_exactly(h, &[&va, &vb, &vc]);
    let mut want = vec![
        (va.clone(), BLOCKS[0].to_string(), BLOCKS[1].to_string()),
        (vb.clone(), String::new(), String::new()),
        (vc.clone(), String::new(), String::new()),
    ];
    want.sort();
    assert_eq!(qdisc_blocks(h), want, "clsact qdiscs and their blocks");
    let pins = h.ok(&["ls", "/sys/fs/bpf/bpfnet"]);
    assert_eq!(
        pins.trim(),
        format!("v{MAP_LAYOUT_VERSION}"),
        "pins of the old layout left"
    );
}

/// Veths that lost a filter (the shared ingress block's) are attached
/// again by `datapath load`, and guarded again.
#[test]
fn datapath_load_reattaches_a_veth_missing_a_filter() {
    let p = pair("attach-repair");
    let h = &p.h;
    let [va, vb, vc] = ["a", "b", "c"].map(|s| h.host_veth(s, "eth0"));
    // A shared block's filter is changed by the block, not by a device.
    let by_device = h.run(&[
        "tc",
        "filter",
        "del",
        "dev",
        &va,
        "ingress",
        "prio",
        &prio().to_string(),
    ]);
    assert!(
        !by_device.success() && by_device.stderr.contains("shared"),
        "{by_device}"
    );
    h.ok(&[
        "tc",
        "filter",
        "del",
        "block",
        BLOCKS[0],
        "prio",
        &prio().to_string(),
    ]);
    assert_eq!(h.tc_filters().len(), 3, "{:?}", h.tc_filters());
    h.bpfnet_ok(&["datapath", "load"]);
    assert_attached_exactly(h, &[&va, &vb, &vc]);
    let forged = format!("{},{},10.250.0.9,{},FORGEDFRAME", p.a_mac, p.b_mac, p.b_ip);
    let counts = h.count_received("b", "eth0", &["FORGEDFRAME"], || {
        h.py_in(Some("a"), &["sendp", "eth0", "5", &forged]);
    });
    assert_eq!(counts, vec![0], "forged frames reached b after the repair");
}

/// A crash between the attach steps leaves a veth of bpfnet's shape with a
/// clsact qdisc and no filter, or only the first filter: `gc` deletes it.
/// bpfnet filters on a link it does not own are detached (qdisc and all),
/// the link itself is left alone.
#[test]
fn gc_cleans_up_after_a_crash_between_attach_steps() {
    let p = pair("attach-gc");
    let h = &p.h;
    let [va, vb, vc] = ["a", "b", "c"].map(|s| h.host_veth(s, "eth0"));
    let dir = TestHost::pin_dir();
    for (veth, peer) in [
        ("bn0123456789", "x0"),
        ("bnabcdef0123", "x1"),
        ("other0", "x2"),
    ] {
        h.ok(&[
            "ip", "link", "add", veth, "type", "veth", "peer", "name", peer,
        ]);
        h.ok(&["tc", "qdisc", "add", "dev", veth, "clsact"]);
    }
    // The two crashed endpoints' veths carry bpfnet's alias, as bpfnet
    // names what it makes; other0 is not bpfnet's.
    for (veth, id) in [
        ("bn0123456789", "0123456789ff"),
        ("bnabcdef0123", "abcdef0123ff"),
    ] {
        h.ok(&[
            "ip",
            "link",
            "set",
            veth,
            "alias",
            &format!("bpfnet:endpoint:{id}"),
        ]);
    }
    h.ok(&[
        "bpftool",
        "prog",
        "pin",
        "pinned",
        &format!("{dir}/progs/tc_ingress"),
        &format!("/sys/fs/bpf/{}", filter_name("tc_ingress")),
    ]);
    let pin = format!("/sys/fs/bpf/{}", filter_name("tc_ingress"));
    for veth in ["bnabcdef0123", "other0"] {
        add_pinned_filter(h, veth, "ingress", &prio().to_string(), &pin);
    }
    add_pinned_filter(h, "other0", "egress", &prio().to_string(), &pin);
    h.ok(&["rm", &pin]);
    let out = h.bpfnet_ok(&["gc"]);
    assert!(out.contains("removed link bn0123456789"), "{out}");
    assert!(out.contains("removed link bnabcdef0123"), "{out}");
    let links = h.link_names(None);
    assert!(links.contains(&"other0".to_string()), "{links:?}");
    assert!(!links.contains(&"bn0123456789".to_string()), "{links:?}");
    assert!(!links.contains(&"bnabcdef0123".to_string()), "{links:?}");
    assert_attached_exactly(h, &[&va, &vb, &vc]);
    h.assert_ping(Some("a"), &p.b_ip);
    assert!(h.bpfnet_ok(&["gc"]).contains("nothing to remove"));
}
