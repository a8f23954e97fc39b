//! Regression tests for the datapath findings of the December 2026 security
//! review (`../shared/security/review-2026-12.md`): each test replays the
//! review's attack with crafted frames (scapy, trafgen for paged frames) or
//! through the host's own forwarding, asserts that it now fails, and shows
//! next to it that the legitimate path still works.

mod flow;

use std::time::Duration;

use bpfnet_tests::{Bg, TestHost, PYTHON};
use flow::{expect, flow, seen_from, server};

/// Frame builders (scapy, run by /usr/bin/python3). Every frame carries a
/// marker so that a sniffer in the receiving sandbox can count it.
///
/// - `udp IFACE DSTMAC SRC DST SPORT DPORT MARKER [NOPS]`: one UDP datagram
///   with NOPS bytes of IPv4 options, sent 3 times.
/// - `icmp IFACE DSTMAC SRC DST TYPE CODE MARKER [PROTO:ISRC:IDST:SPORT:DPORT]`:
///   one ICMP message (sent 3 times); with the last argument it quotes that
///   packet, as an ICMP error does.
/// - `short IFACE DSTMAC SRC DST MARKER`: a "UDP" packet whose 40 bytes of
///   IPv4 options (a record-route carrying the marker) leave room for only 2
///   bytes of L4 header: no ports at all.
/// - `tcp IFACE DSTMAC SRC DST SPORT DPORT FLAGS MARKER`: one TCP segment
///   with scapy's FLAGS ("S", "A", "PA", …), sent 3 times.
/// - `frag IFACE DSTMAC SRC DST DPORT MARKER all|later`: a 1,600-byte UDP
///   datagram in 400-byte fragments: all of them, or only those after the
///   first.
/// - `trafgen-cfg PATH DSTMAC SRCMAC SRC DST SPORT DPORT MARKER NOPS`: writes
///   that UDP frame as a trafgen configuration (raw bytes).
const SEC_PY: &str = r#"
import sys
from scapy.all import Ether, IP, UDP, TCP, ICMP, IPOption, IPOption_NOP, Raw, conf, fragment, get_if_hwaddr, sendp
conf.verb = 0

def udp_frame(src_mac, dst_mac, src, dst, sport, dport, marker, nops):
    return (Ether(src=src_mac, dst=dst_mac)
            / IP(src=src, dst=dst, options=[IPOption_NOP()] * int(nops))
            / UDP(sport=int(sport), dport=int(dport))
            / Raw(marker.encode() * 2))

def udp(iface, dst_mac, src, dst, sport, dport, marker, nops="0"):
    p = udp_frame(get_if_hwaddr(iface), dst_mac, src, dst, sport, dport, marker, nops)
    sendp(p, iface=iface, count=3, inter=0.02)
    print("sent", marker, flush=True)

def icmp(iface, dst_mac, src, dst, type_, code, marker, quote=""):
    p = Ether(src=get_if_hwaddr(iface), dst=dst_mac) / IP(src=src, dst=dst) / ICMP(type=int(type_), code=int(code))
    if quote:
        proto, isrc, idst, sport, dport = quote.split(":")
        l4 = UDP(sport=int(sport), dport=int(dport)) if proto == "udp" else TCP(sport=int(sport), dport=int(dport), flags="A")
        p = p / IP(src=isrc, dst=idst) / l4
    p = p / Raw(marker.encode() * 2)
    sendp(p, iface=iface, count=3, inter=0.02)
    print("sent", marker, flush=True)

def short(iface, dst_mac, src, dst, marker):
    rr = IPOption(b"\x07" + bytes([39, 4]) + marker.encode().ljust(36, b"."))
    p = Ether(src=get_if_hwaddr(iface), dst=dst_mac) / IP(src=src, dst=dst, proto=17, options=[rr]) / Raw(b"\x1f\x40")
    sendp(p, iface=iface, count=3, inter=0.02)
    print("sent", marker, flush=True)

def tcp(iface, dst_mac, src, dst, sport, dport, flags, marker):
    p = (Ether(src=get_if_hwaddr(iface), dst=dst_mac) / IP(src=src, dst=dst)
         / TCP(sport=int(sport), dport=int(dport), flags=flags, seq=1000) / Raw(marker.encode() * 2))
    sendp(p, iface=iface, count=3, inter=0.02)
    print("sent", marker, flush=True)

def frag(iface, dst_mac, src, dst, dport, marker, which):
    pkt = IP(src=src, dst=dst, id=4321) / UDP(sport=4321, dport=int(dport)) / Raw((marker.encode() + b".") * (1600 // (len(marker) + 1)))
    frags = fragment(pkt, fragsize=400)
    if which == "later":
        frags = frags[1:]
    for f in frags:
        sendp(Ether(src=get_if_hwaddr(iface), dst=dst_mac) / f, iface=iface)
    print("sent", len(frags), marker, flush=True)

def trafgen_cfg(path, dst_mac, src_mac, src, dst, sport, dport, marker, nops):
    p = udp_frame(src_mac, dst_mac, src, dst, sport, dport, marker, nops)
    with open(path, "w") as f:
        f.write("{ " + ", ".join("0x%02x" % b for b in bytes(p)) + " }\n")
    print("wrote", path, len(bytes(p)), flush=True)

{"udp": udp, "icmp": icmp, "short": short, "tcp": tcp, "frag": frag, "trafgen-cfg": trafgen_cfg}[sys.argv[1]](*sys.argv[2:])
"#;

/// Path of SEC_PY in the host's scratch dir (written on first use).
fn sec_py(h: &TestHost) -> String {
    let path = h.dir.join("sec.py");
    if !path.exists() {
        std::fs::write(&path, SEC_PY).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    }
    path.to_string_lossy().into_owned()
}

/// Runs a SEC_PY command in `sandbox`; must succeed.
fn craft(h: &TestHost, sandbox: &str, args: &[&str]) {
    let py = sec_py(h);
    let mut v = vec![PYTHON, py.as_str()];
    v.extend_from_slice(args);
    let o = h.exec_in(sandbox, &v);
    assert!(o.success(), "crafting frames failed:\n{o}");
}

/// One way crafted frames take: out of `sandbox`'s eth0 to `dst_mac`, from
/// address `src` to `dst`.
struct Way<'a> {
    h: &'a TestHost,
    sandbox: &'a str,
    dst_mac: &'a str,
    src: &'a str,
    dst: &'a str,
}

fn way<'a>(
    h: &'a TestHost,
    sandbox: &'a str,
    dst_mac: &'a str,
    src: &'a str,
    dst: &'a str,
) -> Way<'a> {
    Way {
        h,
        sandbox,
        dst_mac,
        src,
        dst,
    }
}

impl Way<'_> {
    /// Sends SEC_PY's `kind` frames this way; `rest` are the kind's own
    /// arguments (ports, marker…).
    fn send(&self, kind: &str, rest: &[&str]) {
        let mut args = vec![kind, "eth0", self.dst_mac, self.src, self.dst];
        args.extend_from_slice(rest);
        craft(self.h, self.sandbox, &args);
    }
}

/// The MAC `sandbox` uses for its gateway on `net` (the host-side veth's).
fn gw_mac(h: &TestHost, sandbox: &str, net: &str) -> String {
    let gw = h.gateway_of(net);
    h.assert_ping(Some(sandbox), &gw);
    let out = h.exec_ok(sandbox, &["ip", "-j", "neigh", "show", &gw]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j neigh: {e}: {out}"));
    v[0]["lladdr"]
        .as_str()
        .unwrap_or_else(|| panic!("{sandbox} has no neighbour entry for {gw}: {out}"))
        .to_string()
}

/// A flow.py server in the host itself (not in a sandbox), on `addr`.
fn host_server(h: &TestHost, proto: &str, addr: &str, port: u16) -> Bg {
    let py = flow::script(h);
    let cmd = format!("{proto}-server");
    let port = port.to_string();
    let mut bg = h.spawn(&[PYTHON, &py, &cmd, addr, &port]);
    bg.wait_line("ready", Duration::from_secs(10));
    bg
}

/// flow.py's probe run in the host itself; whether each flow got its echo.
fn host_probe(h: &TestHost, specs: &[String]) -> Vec<bool> {
    let py = flow::script(h);
    let mut args = vec![PYTHON, py.as_str(), "probe", flow::PROBE_TIMEOUT];
    args.extend(specs.iter().map(String::as_str));
    let o = h.run(&args);
    assert!(o.success(), "probe failed to run:\n{o}");
    o.stdout.lines().map(|l| l.starts_with("ok ")).collect()
}

/// An "outside" network namespace `up` (172.30.99.2) behind a veth whose
/// host end has 172.30.99.1, with its default route through the host: a
/// LAN host or upstream server, as the review's `sa-up`.
const OUTSIDE: &str = "172.30.99.2";
const OUTSIDE_GW: &str = "172.30.99.1";

fn make_outside(h: &TestHost) {
    h.sh_ok(
        "set -e; ip netns add up; \
         ip link add upv0 type veth peer name upv1 netns up; \
         ip addr add 172.30.99.1/24 dev upv0; ip link set upv0 up; \
         ip netns exec up sh -c 'ip addr add 172.30.99.2/24 dev upv1; ip link set upv1 up; \
           ip link set lo up; ip route add default via 172.30.99.1'",
    );
}

/// `bpfnet network create ARGS…` for each of `networks`, then each sandbox
/// on its network; the sandboxes' addresses, in order.
/// A network that routes instead of masquerading (and so takes routed
/// traffic in).
const ROUTED: &str = "com.docker.network.bridge.enable_ip_masquerade=false";

fn setup<const N: usize>(
    h: &TestHost,
    networks: &[&[&str]],
    sandboxes: [(&str, &str); N],
) -> [String; N] {
    for args in networks {
        let mut v = vec!["network", "create"];
        v.extend_from_slice(args);
        h.bpfnet_ok(&v);
    }
    for (sandbox, net) in sandboxes {
        h.create(sandbox, &[net]);
    }
    sandboxes.map(|(sandbox, net)| h.ip_on(sandbox, net))
}

/// `bpfnet policy add --from a --to b RULE…`.
fn policy_a_to_b(h: &TestHost, rule: &[&str]) {
    let mut args = vec!["policy", "add", "--from", "a", "--to", "b"];
    args.extend_from_slice(rule);
    h.bpfnet_ok(&args);
}

/// Networks net1 and net2 with sandbox `a` on net1 and `b` on net2, and the
/// policy rule `--from a --to b RULE…`; their addresses.
fn a_to_b(h: &TestHost, rule: &[&str]) -> (String, String) {
    let [a, b] = setup(h, &[&["net1"], &["net2"]], [("a", "net1"), ("b", "net2")]);
    policy_a_to_b(h, rule);
    (a, b)
}

/// The MACs `a` and `b` of [`a_to_b`] use for their gateways.
fn gw_macs(h: &TestHost) -> (String, String) {
    (gw_mac(h, "a", "net1"), gw_mac(h, "b", "net2"))
}

fn ip_forward(h: &TestHost) {
    h.sh_ok("echo 1 > /proc/sys/net/ipv4/ip_forward");
}

/// Finding 2 (A): on an `icc=false` network, a broadcast or multicast frame
/// that carries unicast IPv4 for a peer is no way around the icc verdict:
/// the UDP datagrams and the ping never reach the peer. The same frames are
/// refused on an ordinary network too (the L3 destination of a group frame
/// must be a group address); real broadcast and multicast still flood there.
#[test]
fn group_mac_frames_carrying_unicast_ip_do_not_reach_an_icc_false_peer() {
    let h = TestHost::new("sec-group-icc");
    let [c1, c2, o1, o2] = setup(
        &h,
        &[&["-o", "icc=false", "icc"], &["open"]],
        [("c1", "icc"), ("c2", "icc"), ("o1", "open"), ("o2", "open")],
    );
    let srv = server(&h, "c1", "udp", &[7001]);
    // Behind the datapath, the sandboxes' own stacks refuse such frames too.
    for sb in ["c1", "o1"] {
        let v = h.exec_ok(
            sb,
            &[
                "sysctl",
                "-n",
                "net.ipv4.conf.eth0.drop_unicast_in_l2_multicast",
            ],
        );
        assert_eq!(v.trim(), "1", "{sb}");
    }
    // The control: plain unicast is refused by icc=false.
    expect(&h, "c2", &[flow("udp", &c1, 7001, false)]);
    let before = h.drops("unicast-ip-in-group-frame");

    let bcast = "ff:ff:ff:ff:ff:ff";
    let mcast = "01:00:5e:00:00:01";
    let counts = h.count_received(
        "c1",
        "eth0",
        &["bntbcastuni", "bntmcastuni", "bntbcastping", "bnticcbcast"],
        || {
            way(&h, "c2", bcast, &c2, &c1).send("udp", &["5555", "7001", "bntbcastuni"]);
            way(&h, "c2", mcast, &c2, &c1).send("udp", &["5556", "7001", "bntmcastuni"]);
            way(&h, "c2", bcast, &c2, &c1).send("icmp", &["8", "0", "bntbcastping"]);
            // Real broadcast does not reach peers on icc=false either.
            way(&h, "c2", bcast, &c2, "255.255.255.255")
                .send("udp", &["5557", "7001", "bnticcbcast"]);
        },
    );
    assert_eq!(
        counts,
        vec![0, 0, 0, 0],
        "c1 received group frames from c2 on an icc=false network"
    );
    assert!(
        seen_from(&srv, &c2).is_empty(),
        "c1's UDP server heard c2: {:?}",
        srv.lines()
    );
    let after = h.drops("unicast-ip-in-group-frame");
    assert!(
        after >= before + 9,
        "unicast-ip-in-group-frame drops went {before} → {after}, expected +9:\n{:#}",
        h.stats()
    );

    // An ordinary network: real broadcast and multicast still reach the
    // peer; unicast IPv4 in a broadcast frame does not.
    let counts = h.count_received(
        "o2",
        "eth0",
        &[
            "bntsubnetbcast",
            "bntlimitedbcast",
            "bntmulticast",
            "bntopenuni",
        ],
        || {
            let subnet_bcast = {
                let mut q: Vec<&str> = o1.split('.').collect();
                // User networks are /16s: x.y.255.255.
                q[2] = "255";
                q[3] = "255";
                q.join(".")
            };
            way(&h, "o1", bcast, &o1, &subnet_bcast)
                .send("udp", &["6000", "6001", "bntsubnetbcast"]);
            way(&h, "o1", bcast, &o1, "255.255.255.255")
                .send("udp", &["6000", "6001", "bntlimitedbcast"]);
            way(&h, "o1", "01:00:5e:00:00:fb", &o1, "224.0.0.251")
                .send("udp", &["5353", "5353", "bntmulticast"]);
            way(&h, "o1", bcast, &o1, &o2).send("udp", &["6000", "6001", "bntopenuni"]);
        },
    );
    assert_eq!(
        counts,
        vec![3, 3, 3, 0],
        "on an ordinary network broadcast and multicast flood, unicast IPv4 in a group frame does not"
    );
    h.assert_ping(Some("o1"), &o2);
}

/// Finding 2 (B): a sandbox on an `--internal` network cannot reach host
/// addresses other than its gateway (another network's gateway, any other
/// host address) by putting unicast IPv4 into a broadcast frame. Its own
/// gateway still answers, and a real broadcast still reaches a fellow member.
#[test]
fn group_mac_frames_carrying_unicast_ip_do_not_leave_an_internal_network() {
    let h = TestHost::new("sec-group-int");
    h.bpfnet_ok(&["network", "create", "--internal", "int"]);
    h.bpfnet_ok(&["network", "create", "other"]);
    h.create("i1", &["int"]);
    let i1 = h.ip_on("i1", "int");
    let (gw_int, gw_other) = (h.gateway_of("int"), h.gateway_of("other"));
    h.sh_ok("ip addr add 10.99.0.1/32 dev lo");
    let s_host = host_server(&h, "udp", "10.99.0.1", 47003);
    let s_other = host_server(&h, "udp", &gw_other, 47004);
    let s_own = host_server(&h, "udp", &gw_int, 47005);
    // The control: unicast to those addresses is refused; to the own
    // gateway it works.
    expect(
        &h,
        "i1",
        &[
            flow("udp", "10.99.0.1", 47003, false),
            flow("udp", &gw_other, 47004, false),
            flow("udp", &gw_int, 47005, true),
        ],
    );

    let bcast = "ff:ff:ff:ff:ff:ff";
    way(&h, "i1", bcast, &i1, "10.99.0.1").send("udp", &["5353", "47003", "bntescapehost"]);
    way(&h, "i1", bcast, &i1, &gw_other).send("udp", &["5354", "47004", "bntescapegw"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        seen_from(&s_host, &i1).is_empty(),
        "a host address heard the internal sandbox: {:?}",
        s_host.lines()
    );
    assert!(
        seen_from(&s_other, &i1).is_empty(),
        "another network's gateway heard the internal sandbox: {:?}",
        s_other.lines()
    );
    assert_eq!(
        seen_from(&s_own, &i1).len(),
        1,
        "the own gateway hears the control datagram: {:?}",
        s_own.lines()
    );
    // Real broadcast still reaches a fellow member, at its own TTL.
    h.create("i2", &["int"]);
    let bcast_ip = {
        let mut q: Vec<&str> = i1.split('.').collect();
        q[2] = "255";
        q[3] = "255";
        q.join(".")
    };
    let mut s_i2 = server(&h, "i2", "udp", &[47006]);
    way(&h, "i1", bcast, &i1, &bcast_ip).send("udp", &["5355", "47006", "bntintbcast"]);
    let got = s_i2.wait_line(&format!("got 47006 {i1} "), Duration::from_secs(5));
    assert!(got.contains("ttl=64"), "the copy keeps its TTL: {got}");
}

/// Finding 3: a port-specific deny under an allow-any rule holds for frames
/// built in a TX_RING (trafgen: only the Ethernet header is linear) with
/// 36 or 40 bytes of IPv4 options, which put the ports past the bytes the
/// datapath used to pull in. The same paged frames to an allowed port
/// arrive, so the headers are now read, not guessed. A "UDP" packet with no
/// room for ports at all is dropped as malformed, not judged as "any port".
#[test]
fn paged_frames_with_ip_options_cannot_skip_a_port_deny_rule() {
    let h = TestHost::new("sec-paged-opts");
    let (a, b) = a_to_b(&h, &[]);
    policy_a_to_b(&h, &["--port", "7001/udp", "--action", "deny"]);
    let srv = server(&h, "b", "udp", &[7001, 7002]);
    let gw = gw_mac(&h, "a", "net1");
    let a_mac = h.mac_of("a", "eth0");
    // The control: an ordinary datagram to 7001 is denied, to 7002 allowed.
    expect(
        &h,
        "a",
        &[flow("udp", &b, 7001, false), flow("udp", &b, 7002, true)],
    );

    let frames = [
        ("opt40deny", "7001", "40"),
        ("opt36deny", "7001", "36"),
        ("opt40allow", "7002", "40"),
        ("opt0allow", "7002", "0"),
    ];
    let mut cfgs = Vec::new();
    for (marker, port, nops) in frames {
        let path = h.dir.join(format!("{marker}.cfg"));
        let path = path.to_string_lossy().into_owned();
        craft(
            &h,
            "a",
            &[
                "trafgen-cfg",
                &path,
                &gw,
                &a_mac,
                &a,
                &b,
                "4000",
                port,
                &format!("bnt{marker}"),
                nops,
            ],
        );
        cfgs.push(path);
    }
    let before = h.drops("malformed");
    let markers: Vec<String> = frames.iter().map(|f| format!("bnt{}", f.0)).collect();
    let mut markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    markers.push("bntnoports");
    let counts = h.count_received("b", "eth0", &markers, || {
        for cfg in &cfgs {
            let o = h.exec_in(
                "a",
                &["trafgen", "--dev", "eth0", "--num", "5", "--conf", cfg],
            );
            assert!(o.success(), "{o}");
        }
        way(&h, "a", &gw, &a, &b).send("short", &["bntnoports"]);
    });
    // The allowed datagrams are echoed, and a's port-unreachable for the
    // echo quotes the marker again: at least 5.
    let denied_out = counts[0] == 0 && counts[1] == 0 && counts[4] == 0;
    assert!(
        denied_out && counts[2] >= 5 && counts[3] >= 5,
        "paged frames {markers:?} counted {counts:?}: the denied and portless ones must stay out, the allowed ones arrive"
    );
    let on_7001: Vec<String> = seen_from(&srv, &a)
        .into_iter()
        .filter(|l| l.starts_with("got 7001 "))
        .collect();
    assert!(on_7001.is_empty(), "the denied port heard a: {on_7001:?}");
    let after = h.drops("malformed");
    assert!(
        after >= before + 3,
        "the portless UDP packets should count as malformed ({before} → {after}):\n{:#}",
        h.stats()
    );
}

/// Finding 6: on an `icc=false` network a member that points its neighbour
/// entry for a peer at the gateway MAC does not get through the host's
/// forwarding (ip_forward=1): UDP and TCP to the peer fail and its servers
/// hear nothing. A linked member taking the same path still reaches its
/// link target. And what the host itself sends into the network from a
/// member's address is dropped at egress: members reach each other only
/// through the datapath.
#[test]
fn icc_false_holds_when_the_host_forwards_through_the_gateway_mac() {
    let h = TestHost::new("sec-icc-fwd");
    h.bpfnet_ok(&["network", "create", "-o", "icc=false", "icc"]);
    h.create("c1", &["icc"]);
    h.create("c2", &["icc"]);
    h.bpfnet_ok(&["create", "--name", "c3", "--network", "icc", "--link", "c1"]);
    let (c1, c2, c3) = (
        h.ip_on("c1", "icc"),
        h.ip_on("c2", "icc"),
        h.ip_on("c3", "icc"),
    );
    let udp = server(&h, "c1", "udp", &[7001]);
    let tcp = server(&h, "c1", "tcp", &[7002]);
    ip_forward(&h);
    for s in ["c2", "c3"] {
        let gw = gw_mac(&h, s, "icc");
        h.exec_ok(
            s,
            &[
                "ip",
                "neigh",
                "replace",
                &c1,
                "lladdr",
                &gw,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
    }
    let before = h.drops("icc-disabled");
    expect(
        &h,
        "c2",
        &[flow("udp", &c1, 7001, false), flow("tcp", &c1, 7002, false)],
    );
    assert!(seen_from(&udp, &c2).is_empty(), "{:?}", udp.lines());
    assert!(seen_from(&tcp, &c2).is_empty(), "{:?}", tcp.lines());
    assert!(
        h.drops("icc-disabled") >= before + 2,
        "the detour should count as icc-disabled:\n{:#}",
        h.stats()
    );
    // The linked member keeps its way, via the gateway MAC too.
    expect(
        &h,
        "c3",
        &[flow("udp", &c1, 7001, true), flow("tcp", &c1, 7002, true)],
    );
    assert_eq!(seen_from(&udp, &c3).len(), 1, "{:?}", udp.lines());

    // The host sending with a member's address: dropped at c1's egress.
    let o = h.run(&[
        PYTHON,
        "-c",
        &format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.setsockopt(socket.SOL_IP, 19, 1); s.bind(('{c2}', 5000)); \
             [s.sendto(b'bnthostasc2', ('{c1}', 7001)) for _ in range(3)]"
        ),
    ]);
    assert!(o.success(), "{o}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        seen_from(&udp, &c2).is_empty(),
        "c1 heard c2's address routed through the host: {:?}",
        udp.lines()
    );
}

/// Finding 5: a sandbox on an `--internal` network cannot get out through a
/// host DNAT rule on its gateway address while the host forwards: neither a
/// TCP connection nor a UDP datagram reaches the outside server. The same
/// DNAT works for a sandbox of an ordinary network (the setup is real), and
/// the internal sandbox still talks to a service on its gateway.
#[test]
fn internal_network_does_not_escape_through_host_dnat_on_its_gateway() {
    let h = TestHost::new("sec-int-dnat");
    let [i1, n1] = setup(
        &h,
        // "open" routes without masquerading, so that the outside sees
        // (and may route to) its sandboxes' own addresses.
        &[&["--internal", "int"], &["-o", ROUTED, "open"]],
        [("i1", "int"), ("n1", "open")],
    );
    let (gw_int, gw_open) = (h.gateway_of("int"), h.gateway_of("open"));
    make_outside(&h);
    ip_forward(&h);
    let o = h.run_full(
        &["nft", "-f", "-"],
        Some(
            b"table ip bnt_nat {\n chain pre {\n type nat hook prerouting priority -100;\n \
              tcp dport 8080 dnat to 172.30.99.2:80\n udp dport 8081 dnat to 172.30.99.2:81\n }\n}\n",
        ),
        Duration::from_secs(10),
    );
    assert!(o.success(), "{o}");
    let nft = h.ok(&["nft", "list", "table", "ip", "bnt_nat"]);
    assert!(nft.contains("dnat to 172.30.99.2:80"), "{nft}");
    let out_tcp = server(&h, "up", "tcp", &[80]);
    let out_udp = server(&h, "up", "udp", &[81]);
    let local = host_server(&h, "tcp", &gw_int, 7070);

    // The control: the outside is not reachable directly.
    expect(
        &h,
        "i1",
        &[
            flow("tcp", OUTSIDE, 80, false),
            flow("tcp", &gw_int, 8080, false),
            flow("udp", &gw_int, 8081, false),
            // The legitimate path: a service on the own gateway.
            flow("tcp", &gw_int, 7070, true),
        ],
    );
    assert!(seen_from(&out_tcp, &i1).is_empty(), "{:?}", out_tcp.lines());
    assert!(seen_from(&out_udp, &i1).is_empty(), "{:?}", out_udp.lines());
    assert_eq!(seen_from(&local, &i1).len(), 1, "{:?}", local.lines());
    // An ordinary network uses the same DNAT.
    expect(
        &h,
        "n1",
        &[
            flow("tcp", &gw_open, 8080, true),
            flow("udp", &gw_open, 8081, true),
        ],
    );
    assert_eq!(seen_from(&out_tcp, &n1).len(), 1, "{:?}", out_tcp.lines());
}

/// Finding 7 (the datapath part): what the host routes into an `--internal`
/// network from elsewhere (a LAN host, while the host forwards) is dropped
/// at egress, and so is what a host process sends from another of the
/// host's addresses. The gateway itself still reaches the sandbox, and an
/// ordinary network still takes routed traffic (the path is real).
#[test]
fn internal_network_egress_accepts_only_its_own_network_and_its_gateway() {
    let h = TestHost::new("sec-int-egress");
    let [i1, i2, n1] = setup(
        &h,
        // "open" routes without masquerading, so that the outside sees
        // (and may route to) its sandboxes' own addresses.
        &[&["--internal", "int"], &["-o", ROUTED, "open"]],
        [("i1", "int"), ("i2", "int"), ("n1", "open")],
    );
    let gw_int = h.gateway_of("int");
    make_outside(&h);
    ip_forward(&h);
    let s_i1 = server(&h, "i1", "udp", &[7011]);
    let s_n1 = server(&h, "n1", "udp", &[7011]);
    let before = h.drops("internal-network");
    // The LAN host: reaches the ordinary network, not the internal one.
    expect(
        &h,
        "up",
        &[flow("udp", &n1, 7011, true), flow("udp", &i1, 7011, false)],
    );
    assert_eq!(seen_from(&s_n1, OUTSIDE).len(), 1, "{:?}", s_n1.lines());
    assert!(seen_from(&s_i1, OUTSIDE).is_empty(), "{:?}", s_i1.lines());
    // A host process bound to another host address.
    let o = h.run(&[
        PYTHON,
        "-c",
        &format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.bind(('{OUTSIDE_GW}', 5000)); \
             [s.sendto(b'bnthostother', ('{i1}', 7011)) for _ in range(3)]"
        ),
    ]);
    assert!(o.success(), "{o}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        seen_from(&s_i1, OUTSIDE_GW).is_empty(),
        "{:?}",
        s_i1.lines()
    );
    // The LAN host's datagram no longer gets that far: bpfnet's forward
    // guard (nftables) drops what is routed straight to a sandbox of a
    // masquerading network. The host process's three reach the datapath.
    assert!(
        h.drops("internal-network") >= before + 3,
        "egress drops should count as internal-network:\n{:#}",
        h.stats()
    );
    // The gateway (the host's own source for the sandbox) and the other
    // member still reach i1.
    assert_eq!(
        host_probe(&h, &[flow::spec("udp", &i1, 7011)]),
        vec![true],
        "the host (source {gw_int}) should reach {i1}"
    );
    assert_eq!(seen_from(&s_i1, &gw_int).len(), 1, "{:?}", s_i1.lines());
    h.assert_ping(None, &i1);
    expect(&h, "i2", &[flow("udp", &i1, 7011, true)]);
    assert_eq!(seen_from(&s_i1, &i2).len(), 1, "{:?}", s_i1.lines());
}

/// Finding 12: `--icmp` allows ping (echo request, and the reply through
/// conntrack) and nothing else: timestamp and address-mask requests,
/// redirects, unreachables and time-exceeded messages that quote no
/// connection, and unsolicited echo replies stay out. ICMP errors that
/// quote a connection the receiver has open pass even under a port-only
/// rule (path MTU discovery), while the same error about a connection that
/// does not exist does not.
#[test]
fn icmp_rule_allows_ping_and_errors_of_tracked_flows_only() {
    let h = TestHost::new("sec-icmp");
    let (a, b) = a_to_b(&h, &["--icmp"]);
    policy_a_to_b(&h, &["--port", "5353/udp"]);
    let _srv = server(&h, "b", "udp", &[5353]);
    let (gw_a, gw_b) = gw_macs(&h);
    // The legitimate path: ping works.
    h.assert_ping(Some("a"), &b);

    let quote = format!("udp:{b}:{a}:9:9");
    let q = Some(quote.as_str());
    let bad: [(&str, &str, &str, Option<&str>); 6] = [
        ("13", "0", "bnttimestamp", None),
        ("17", "0", "bntaddrmask", None),
        ("3", "3", "bntunreach", q),
        ("5", "1", "bntredirect", q),
        ("11", "0", "bnttimeexc", q),
        ("0", "0", "bntechoreply", None),
    ];
    let markers: Vec<&str> = bad.iter().map(|x| x.2).collect();
    let counts = h.count_received("b", "eth0", &markers, || {
        for (t, c, m, q) in bad {
            let mut args: Vec<&str> = vec!["icmp", "eth0", &gw_a, &a, &b, t, c, m];
            if let Some(q) = q {
                args.push(q);
            }
            craft(&h, "a", &args);
        }
    });
    assert_eq!(
        counts,
        vec![0; bad.len()],
        "ICMP other than echo crossed an --icmp rule ({markers:?})"
    );

    // a opens a UDP flow 40000 → b:5353 (allowed by the port-only rule).
    way(&h, "a", &gw_a, &a, &b).send("udp", &["40000", "5353", "bntopenflow"]);
    let related = format!("udp:{a}:{b}:40000:5353");
    let unrelated = format!("udp:{a}:{b}:40001:5353");
    let counts = h.count_received("a", "eth0", &["bntfragneeded", "bntnoflow"], || {
        way(&h, "b", &gw_b, &b, &a).send("icmp", &["3", "4", "bntfragneeded", &related]);
        way(&h, "b", &gw_b, &b, &a).send("icmp", &["3", "4", "bntnoflow", &unrelated]);
    });
    assert_eq!(
        counts,
        vec![3, 0],
        "an ICMP error passes only when it quotes a tracked flow"
    );
}

/// Finding 12, the deny side: `--icmp --action deny` under an allow-any rule
/// keeps out every ICMP message, not only ping; before the deny the same
/// messages crossed (the allow-any rule covers all of ICMP), and UDP still
/// does after it.
#[test]
fn icmp_deny_rule_covers_every_icmp_message() {
    let h = TestHost::new("sec-icmp-deny");
    let (a, b) = a_to_b(&h, &[]);
    let _srv = server(&h, "b", "udp", &[5353]);
    let gw = gw_mac(&h, "a", "net1");
    let send = |marker: &str| {
        way(&h, "a", &gw, &a, &b).send("icmp", &["13", "0", &format!("{marker}ts")]);
        way(&h, "a", &gw, &a, &b).send("icmp", &["8", "0", &format!("{marker}echo")]);
    };
    let counts = h.count_received("b", "eth0", &["bntbeforets", "bntbeforeecho"], || {
        send("bntbefore")
    });
    assert_eq!(counts, vec![3, 3], "allow-any should let all ICMP through");
    policy_a_to_b(&h, &["--icmp", "--action", "deny"]);
    let counts = h.count_received("b", "eth0", &["bntafterts", "bntafterecho"], || {
        send("bntafter")
    });
    assert_eq!(counts, vec![0, 0], "a deny --icmp should keep out all ICMP");
    expect(&h, "a", &[flow("udp", &b, 5353, true)]);
}

/// Finding 3, fragments: fragments after the first of a datagram whose first
/// fragment the datapath never saw cannot be judged by port and are dropped
/// (`fragment-without-first`) instead of being judged as "any port"; the
/// whole datagram, first fragment included, still crosses.
#[test]
fn later_fragments_without_their_first_are_dropped() {
    let h = TestHost::new("sec-orphan-frag");
    let (a, b) = a_to_b(&h, &[]);
    policy_a_to_b(&h, &["--port", "7001/udp", "--action", "deny"]);
    let gw = gw_mac(&h, "a", "net1");
    let before = h.drops("fragment-without-first");
    let counts = h.count_received("b", "eth0", &["bntorphan"], || {
        way(&h, "a", &gw, &a, &b).send("frag", &["7001", "bntorphan", "later"]);
    });
    assert_eq!(
        counts,
        vec![0],
        "later fragments without their first crossed"
    );
    let after = h.drops("fragment-without-first");
    assert!(
        after >= before + 3,
        "fragment-without-first went {before} → {after}, expected +3:\n{:#}",
        h.stats()
    );
    let srv = server(&h, "b", "udp", &[7002]);
    let counts = h.count_received("b", "eth0", &["bntwhole"], || {
        way(&h, "a", &gw, &a, &b).send("frag", &["7002", "bntwhole", "all"]);
    });
    assert!(
        counts[0] >= 4,
        "the whole fragmented datagram should cross: {counts:?}"
    );
    let got = seen_from(&srv, &a);
    assert!(
        got.iter().any(|l| l.contains("bntwhole")),
        "b's server should get the reassembled datagram: {:?}",
        srv.lines()
    );
}

/// The CONNTRACK key of a connection, as the map holds it (`CtKey`: the
/// addresses in network order, ports and padding in host order).
fn ct_key(src: &str, dst: &str, sport: u16, dport: u16, proto: u8) -> Vec<u8> {
    let mut k = Vec::new();
    for ip in [src, dst] {
        let o: std::net::Ipv4Addr = ip.parse().unwrap();
        k.extend_from_slice(&o.octets());
    }
    k.extend_from_slice(&sport.to_ne_bytes());
    k.extend_from_slice(&dport.to_ne_bytes());
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k
}

fn hex_bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a byte array: {v}"))
        .iter()
        .map(|b| {
            let s = b.as_str().unwrap_or_else(|| panic!("not a hex byte: {b}"));
            u8::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
        })
        .collect()
}

/// The value of CONNTRACK entry `key`, if there is one.
fn ct_value(h: &TestHost, key: &[u8]) -> Option<Vec<u8>> {
    h.map_dump("CONNTRACK")
        .iter()
        .find(|e| hex_bytes(&e["key"]) == key)
        .map(|e| hex_bytes(&e["value"]))
}

/// Finding 11: a TCP segment that is not a SYN (the review's flood used any
/// flags) opens no connection: no conntrack entry, and the peer cannot
/// answer on its ports. A SYN on the same rule does open one, and the peer's
/// answer gets back.
#[test]
fn tcp_segments_other_than_syn_open_no_connection() {
    let h = TestHost::new("sec-ct-syn");
    let (a, b) = a_to_b(&h, &["--port", "8080/tcp"]);
    let (gw_a, gw_b) = gw_macs(&h);
    for (sport, flags) in [
        ("41000", "A"),
        ("41002", "PA"),
        ("41003", "FA"),
        ("41004", "SA"),
    ] {
        way(&h, "a", &gw_a, &a, &b).send("tcp", &[sport, "8080", flags, "bntnosyn"]);
    }
    way(&h, "a", &gw_a, &a, &b).send("tcp", &["41001", "8080", "S", "bntsyn"]);
    for sport in [41000, 41002, 41003, 41004] {
        assert_eq!(
            ct_value(&h, &ct_key(&a, &b, sport, 8080, 6)),
            None,
            "a segment without SYN from port {sport} opened a connection"
        );
    }
    assert!(
        ct_value(&h, &ct_key(&a, &b, 41001, 8080, 6)).is_some(),
        "the SYN should open a connection: {:?}",
        h.map_dump("CONNTRACK")
    );
    let counts = h.count_received("a", "eth0", &["bntholeack", "bntholesyn"], || {
        way(&h, "b", &gw_b, &b, &a).send("tcp", &["8080", "41000", "PA", "bntholeack"]);
        way(&h, "b", &gw_b, &b, &a).send("tcp", &["8080", "41001", "PA", "bntholesyn"]);
    });
    assert_eq!(counts[0], 0, "b answered on a connection that never opened");
    assert!(
        counts[1] >= 3,
        "b's answer to the SYN should get back: {counts:?}"
    );
}

/// Finding 11: a connection idle for longer than its timeout is forgotten,
/// and the reply hole it held closes (the review: entries lived until
/// evicted). The entry's age is set through the pinned map instead of
/// waiting: UDP one-way allows 30 s.
#[test]
fn an_idle_connection_expires_and_its_reply_hole_closes() {
    let h = TestHost::new("sec-ct-expiry");
    let (a, b) = a_to_b(&h, &["--port", "5353/udp"]);
    let (gw_a, gw_b) = gw_macs(&h);
    way(&h, "a", &gw_a, &a, &b).send("udp", &["42000", "5353", "bntopen"]);
    let key = ct_key(&a, &b, 42000, 5353, 17);
    let counts = h.count_received("a", "eth0", &["bntfresh"], || {
        way(&h, "b", &gw_b, &b, &a).send("udp", &["5353", "42000", "bntfresh"]);
    });
    assert!(
        counts[0] >= 3,
        "the answer of a fresh flow should get back: {counts:?}"
    );
    let mut value = ct_value(&h, &key)
        .unwrap_or_else(|| panic!("no conntrack entry: {:?}", h.map_dump("CONNTRACK")));
    assert_eq!(value.len(), 24, "CtValue: rule, state, last_seen, owner");
    // last_seen = 1 ns after boot: idle far beyond any timeout.
    value[8..16].copy_from_slice(&1u64.to_ne_bytes());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>();
    let path = format!("{}/maps/CONNTRACK", TestHost::pin_dir());
    let mut args = vec![
        "bpftool".to_string(),
        "map".into(),
        "update".into(),
        "pinned".into(),
        path,
    ];
    args.push("key".into());
    args.push("hex".into());
    args.extend(hex(&key));
    args.push("value".into());
    args.push("hex".into());
    args.extend(hex(&value));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.ok(&args);
    let counts = h.count_received("a", "eth0", &["bntstale"], || {
        way(&h, "b", &gw_b, &b, &a).send("udp", &["5353", "42000", "bntstale"]);
    });
    assert_eq!(counts, vec![0], "an expired flow still let the answer back");
    assert_eq!(ct_value(&h, &key), None, "the expired entry should be gone");
    // The same flow, opened again, works again.
    way(&h, "a", &gw_a, &a, &b).send("udp", &["42000", "5353", "bntreopen"]);
    let counts = h.count_received("a", "eth0", &["bntagain"], || {
        way(&h, "b", &gw_b, &b, &a).send("udp", &["5353", "42000", "bntagain"]);
    });
    assert!(counts[0] >= 3, "a reopened flow should work: {counts:?}");
}

/// Writes element `key` of pinned map `map` (bytes, as bpftool takes them).
fn map_update(h: &TestHost, map: &str, key: &[u8], value: &[u8]) {
    let path = format!("{}/maps/{map}", TestHost::pin_dir());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>();
    let mut args: Vec<String> = ["bpftool", "map", "update", "pinned", &path, "key", "hex"]
        .map(String::from)
        .to_vec();
    args.extend(hex(key));
    args.extend(["value".to_string(), "hex".to_string()]);
    args.extend(hex(value));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.ok(&args);
}

/// Finding 11, the quota after a crash: a charge left behind (bpfnet killed
/// between forgetting connections and crediting their openers) is recounted
/// from the table by `bpfnet gc`.
#[test]
fn gc_recounts_a_conntrack_charge_a_crash_left_behind() {
    let h = TestHost::new("sec-ct-recount");
    let (a, b) = a_to_b(&h, &["--port", "5353/udp"]);
    let (gw_a, _) = gw_macs(&h);
    way(&h, "a", &gw_a, &a, &b).send("udp", &["42000", "5353", "bntopen"]);
    assert_eq!(endpoint_stats(&h, "a")["conntrack"], 1);
    // a's slot is the one element of CT_CHARGED that is not 0; 100 of its
    // entries "were removed but not credited".
    let charged: Vec<(Vec<u8>, u64)> = h
        .map_dump("CT_CHARGED")
        .iter()
        .map(|e| {
            let v = hex_bytes(&e["value"]);
            (
                hex_bytes(&e["key"]),
                u64::from_ne_bytes(v[..8].try_into().unwrap()),
            )
        })
        .filter(|(_, v)| *v != 0)
        .collect();
    assert_eq!(charged.len(), 1, "{charged:?}");
    let (slot, n) = &charged[0];
    map_update(&h, "CT_CHARGED", slot, &(n + 100).to_ne_bytes());
    assert_eq!(endpoint_stats(&h, "a")["conntrack"], 101);
    h.bpfnet_ok(&["gc"]);
    assert_eq!(endpoint_stats(&h, "a")["conntrack"], 1);
}

/// SYNs from `src` to `dst` (raw socket, valid checksums), one per source
/// port 1–65535, to each of the ports given after them: the review's flood.
const SYN_FLOOD_PY: &str = r#"
import socket, struct, sys
src, dst, dports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">BBH", 0, 6, 20)
n = 0
for dport in dports:
    base = sum(struct.unpack(">6H", pseudo)) + dport + 1 + (5 << 12 | 0x02) + 1024
    for sp in range(1, 65536):
        c = base + sp
        c = (c & 0xffff) + (c >> 16)
        c = (c & 0xffff) + (c >> 16)
        s.sendto(struct.pack(">HHIIHHHH", sp, dport, 1, 0, 5 << 12 | 0x02, 1024, ~c & 0xffff, 0), (dst, 0))
        n += 1
print("flooded", n, flush=True)
"#;

/// `bpfnet stats` of sandbox `sandbox`'s one endpoint.
fn endpoint_stats(h: &TestHost, sandbox: &str) -> serde_json::Value {
    let s = h.bpfnet_json(&["stats", sandbox, "--format", "json"]);
    s["endpoints"][0].clone()
}

/// Finding 11, per-endpoint fairness: sandbox `a` floods conntrack (131,070
/// SYNs, one per source port to two allowed ports, as the review did) and
/// sandbox `b`'s idle subscription to the service `x` — a flow only the
/// reply direction of conntrack lets `x`'s pushes through — still gets them.
/// `a` is held to its quota: its connection attempts are dropped as
/// `conntrack-quota` until its flood's entries expire (x answered them with
/// RSTs: 10 s), then it connects again.
#[test]
fn a_conntrack_flood_cannot_evict_another_sandboxes_flow() {
    let h = TestHost::new("sec-ct-fair");
    let [a, x, b] = setup(
        &h,
        &[&["net1"], &["net2"], &["net3"]],
        [("a", "net1"), ("x", "net2"), ("b", "net3")],
    );
    for port in ["5432/tcp", "5433/tcp", "5434/tcp"] {
        h.bpfnet_ok(&["policy", "add", "--from", "a", "--to", "x", "--port", port]);
    }
    h.bpfnet_ok(&[
        "policy", "add", "--from", "b", "--to", "x", "--port", "9000/udp",
    ]);
    let _srv = server(&h, "x", "tcp", &[5432]);
    let (gw_b, gw_x) = (gw_mac(&h, "b", "net3"), gw_mac(&h, "x", "net2"));
    let push = |marker: &str| {
        h.count_received("b", "eth0", &[marker], || {
            way(&h, "x", &gw_x, &x, &b).send("udp", &["9000", "40002", marker]);
        })[0]
    };
    // b subscribes; x's push gets back (the positive control), and a connects.
    way(&h, "b", &gw_b, &b, &x).send("udp", &["40002", "9000", "bntsubscribe"]);
    assert!(
        push("bntpushbefore") >= 3,
        "the push should arrive before the flood"
    );
    expect(&h, "a", &[flow("tcp", &x, 5432, true)]);

    let script = h.dir.join("synflood.py");
    std::fs::write(&script, SYN_FLOOD_PY).unwrap();
    let script = script.to_string_lossy().into_owned();
    let o = h.run_full(
        &[
            "ip", "netns", "exec", "a", PYTHON, &script, &a, &x, "5433", "5434",
        ],
        None,
        Duration::from_secs(60),
    );
    assert!(o.success() && o.stdout.contains("flooded 131070"), "{o}");
    let flood_end = std::time::Instant::now();

    // b's idle flow survived: x's push still gets back.
    assert!(
        push("bntpushafter") >= 3,
        "the push should arrive after the flood too"
    );
    // a holds its quota, no more; b holds its one subscription.
    let (sa, sb) = (endpoint_stats(&h, "a"), endpoint_stats(&h, "b"));
    let quota = sa["conntrack_quota"].as_u64().unwrap();
    let used = sa["conntrack"].as_u64().unwrap();
    assert!(
        (quota..quota + 16).contains(&used),
        "a should be at its quota {quota}: {sa:#}"
    );
    assert_eq!(sb["conntrack"], 1, "{sb:#}");
    assert!(
        h.drops("conntrack-quota") >= 131_070 - used,
        "the flood beyond the quota should be counted: {:#}",
        h.stats()
    );
    // a's next connection is refused, and counted as such.
    let before = h.drops("conntrack-quota");
    expect(&h, "a", &[flow("tcp", &x, 5432, false)]);
    assert!(h.drops("conntrack-quota") > before);
    // x reset the flood's connections: 10 s after the last RST they are
    // expired, and the next sweep (those during the flood found nothing,
    // so it may wait up to 8 s) removes them: a connects again.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(flood_end.elapsed()));
    loop {
        let (_, got) = flow::probe(&h, "a", &[flow::spec("tcp", &x, 5432)]);
        if got == [true] {
            break;
        }
        assert!(
            flood_end.elapsed() < Duration::from_secs(25),
            "a never connected again: {:#}",
            endpoint_stats(&h, "a")
        );
    }
    println!(
        "a connected again {:?} after the flood",
        flood_end.elapsed()
    );
    let used = endpoint_stats(&h, "a")["conntrack"].as_u64().unwrap();
    assert!(
        used < 16,
        "a's expired entries should be swept: {used} left"
    );
}
