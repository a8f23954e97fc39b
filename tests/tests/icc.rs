//! `icc=false`: members of a network may open connections to each other
//! only along `--link`, in its direction (replies via conntrack), on a user
//! network and on the default bridge (`datapath load --icc=false`).

mod flow;

use bpfnet_tests::{Bg, TestHost};
use flow::{expect, flow, seen_from, server};

/// Sandboxes t (linked), l (--link t) and u (unlinked) on `net` (None = the
/// default bridge); TCP 8080 and UDP 5353 servers in each. Checks the link's
/// direction for TCP, UDP and ping, and that unlinked pairs stay apart.
/// Returns the servers (they stop when dropped).
fn check_links(h: &TestHost, net: Option<&str>) -> Vec<(Bg, Bg)> {
    let nets: Vec<&str> = net.into_iter().collect();
    let net_name = net.unwrap_or("bridge");
    h.create("t", &nets);
    let mut args = vec!["create", "--name", "l", "--link", "t"];
    if let Some(n) = net {
        args.extend(["--network", n]);
    }
    h.bpfnet_ok(&args);
    h.create("u", &nets);
    let (t, l, u) = (
        h.ip_on("t", net_name),
        h.ip_on("l", net_name),
        h.ip_on("u", net_name),
    );
    let srv: Vec<_> = ["t", "l", "u"]
        .iter()
        .map(|s| (server(h, s, "tcp", &[8080]), server(h, s, "udp", &[5353])))
        .collect();
    let before = h.drops("icc-disabled");

    // Linker → linked: TCP and UDP answered, ping answered.
    expect(
        h,
        "l",
        &[
            flow("tcp", &t, 8080, true),
            flow("udp", &t, 5353, true),
            flow("tcp", &u, 8080, false),
            flow("udp", &u, 5353, false),
        ],
    );
    h.assert_ping(Some("l"), &t);
    // Linked → linker: nothing new.
    expect(
        h,
        "t",
        &[
            flow("tcp", &l, 8080, false),
            flow("udp", &l, 5353, false),
            flow("tcp", &u, 8080, false),
        ],
    );
    h.assert_no_ping(Some("t"), &l);
    // Unlinked: neither way.
    expect(
        h,
        "u",
        &[
            flow("tcp", &t, 8080, false),
            flow("tcp", &l, 8080, false),
            flow("udp", &t, 5353, false),
        ],
    );
    h.assert_no_ping(Some("u"), &t);

    // The servers saw exactly what was allowed.
    let (tt, ut) = (&srv[0].0, &srv[0].1);
    assert_eq!(
        seen_from(tt, &l).len(),
        1,
        "t's TCP server: {:?}",
        tt.lines()
    );
    assert_eq!(
        seen_from(ut, &l).len(),
        1,
        "t's UDP server: {:?}",
        ut.lines()
    );
    assert!(
        seen_from(tt, &u).is_empty(),
        "u reached t: {:?}",
        tt.lines()
    );
    for (i, who) in [(1, "l"), (2, "u")] {
        let (ts, us) = (&srv[i].0, &srv[i].1);
        let seen: Vec<String> = [&t, &l, &u]
            .iter()
            .flat_map(|p| seen_from(ts, p).into_iter().chain(seen_from(us, p)))
            .collect();
        assert!(seen.is_empty(), "{who} was reached: {seen:?}");
    }
    let after = h.drops("icc-disabled");
    assert!(
        after >= before + 8,
        "icc-disabled drops went {before} → {after}, expected at least +8:\n{:#}",
        h.stats()
    );
    // The host still reaches every member.
    for ip in [&t, &l, &u] {
        h.assert_ping(None, ip);
    }
    srv
}

/// A user network with `-o icc=false`: only along links, in their direction.
#[test]
fn icc_false_network_allows_only_linker_to_linked() {
    let h = TestHost::new("icc-user");
    h.bpfnet_ok(&["network", "create", "-o", "icc=false", "net1"]);
    check_links(&h, Some("net1"));
    // Another network without the option is untouched.
    h.bpfnet_ok(&["network", "create", "open"]);
    h.create("p", &["open"]);
    h.create("q", &["open"]);
    let q = h.ip_on("q", "open");
    h.assert_ping(Some("p"), &q);
}

/// A link with an alias works the same, and a link follows its target when
/// the target is recreated with another address. Policy rules apply inside an
/// icc=false network too: an allow opens a pair, a deny closes a link.
#[test]
fn icc_false_link_with_alias_follows_the_recreated_target() {
    let h = TestHost::new("icc-alias");
    h.bpfnet_ok(&["network", "create", "-o", "icc=false", "net1"]);
    h.create("t", &["net1"]);
    h.bpfnet_ok(&[
        "create",
        "--name",
        "l",
        "--network",
        "net1",
        "--link",
        "t:db",
    ]);
    let t = h.ip_on("t", "net1");
    let l = h.ip_on("l", "net1");
    {
        let _tt = server(&h, "t", "tcp", &[8080]);
        let _tl = server(&h, "l", "tcp", &[8080]);
        expect(&h, "l", &[flow("tcp", &t, 8080, true)]);
        expect(&h, "t", &[flow("tcp", &l, 8080, false)]);
    }
    h.bpfnet_ok(&["rm", "-f", "t"]);
    h.create("filler", &["net1"]);
    h.create("t", &["net1"]);
    let t2 = h.ip_on("t", "net1");
    let f = h.ip_on("filler", "net1");
    assert_ne!(t2, t, "t should have a new address");
    let _tt = server(&h, "t", "tcp", &[8080]);
    let _tf = server(&h, "filler", "tcp", &[8080]);
    expect(
        &h,
        "l",
        &[flow("tcp", &t2, 8080, true), flow("tcp", &f, 8080, false)],
    );
    expect(&h, "t", &[flow("tcp", &l, 8080, false)]);

    // An allow rule opens t → filler (one way); a deny closes the link.
    let _tl = server(&h, "l", "tcp", &[8080]);
    h.bpfnet_ok(&["policy", "add", "--from", "t", "--to", "filler"]);
    expect(
        &h,
        "t",
        &[flow("tcp", &f, 8080, true), flow("tcp", &l, 8080, false)],
    );
    expect(&h, "filler", &[flow("tcp", &t2, 8080, false)]);
    let out = h.bpfnet_ok(&[
        "policy", "add", "--from", "l", "--to", "t", "--action", "deny",
    ]);
    let deny = out.lines().last().unwrap_or("").trim().to_string();
    expect(&h, "l", &[flow("tcp", &t2, 8080, false)]);
    let rules = h.bpfnet_json(&["policy", "ls", "--format", "json"]);
    let hits = rules
        .as_array()
        .and_then(|a| a.iter().find(|r| r["ID"].as_u64() == deny.parse().ok()))
        .and_then(|r| r["Hits"].as_u64());
    assert!(
        hits.is_some_and(|n| n > 0),
        "the deny rule {deny} should count the packets it denied:\n{rules:#}"
    );
}

/// The default bridge with `datapath load --icc=false` (Docker's daemon
/// `--icc=false`) obeys links the same way; `--icc=true` opens it again.
#[test]
fn default_bridge_with_icc_false_allows_only_linker_to_linked() {
    let h = TestHost::new("icc-bridge");
    h.bpfnet_ok(&["datapath", "load", "--icc=false"]);
    let _servers = check_links(&h, None);
    h.bpfnet_ok(&["datapath", "load", "--icc=true"]);
    let t = h.ip_on("t", "bridge");
    let l = h.ip_on("l", "bridge");
    expect(
        &h,
        "u",
        &[flow("tcp", &t, 8080, true), flow("tcp", &l, 8080, true)],
    );
    expect(&h, "t", &[flow("tcp", &l, 8080, true)]);
}
