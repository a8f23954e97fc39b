//! Policy between networks, written with names (`--from web --to net:db
//! --port 5432/tcp`) and compiled to the datapath's entries: one per pair of
//! endpoints, protocol and port. Rules are kept by name, so they follow a
//! sandbox that is removed and recreated with another address; every change
//! of membership recompiles them. `--link` on `icc=false` networks compiles to
//! the same entries.
use std::collections::BTreeMap;

use anyhow::{bail, Result};
use bpfnet_common::{action, PolicyKey, PolicyValue, MAX_POLICY_ENTRIES, RULE_LINK};

pub use crate::rule::{parse_import, Action, Proto, Rule, Traffic, MAX_PORT_RANGE};
use crate::state::{DriverKind, Endpoint, NetworkMode, State};

/// Checks a selector: a sandbox name, `net:NETWORK` or `*`.
pub fn check_selector(state: &State, sel: &str) -> Result<()> {
    if sel == "*" {
        return Ok(());
    }
    if sel.is_empty() || sel == "net:" {
        bail!("empty selector {sel:?}: a selector is a sandbox name, net:NETWORK or *");
    }
    if let Some(net) = sel.strip_prefix("net:") {
        if !state.networks.contains_key(net) {
            bail!("network {net:?} not found (in selector {sel:?}); list networks with `bpfnet network ls`");
        }
        return Ok(());
    }
    if !state.sandboxes.contains_key(sel) {
        bail!("sandbox {sel:?} not found; a selector is a sandbox name, net:NETWORK or *");
    }
    Ok(())
}

/// Checks the selectors of rules about to be added; with several rules (an
/// import), the error says which one (#1 is the first).
pub fn check_rules(state: &State, rules: &[(String, String, Traffic, Action)]) -> Result<()> {
    for (i, (from, to, ..)) in rules.iter().enumerate() {
        let check = || -> Result<()> {
            check_selector(state, from)?;
            check_selector(state, to)?;
            check_enforceable(state, from)?;
            check_enforceable(state, to)?;
            if from == to {
                bail!("--from and --to are the same ({from}); a rule is between two different selectors");
            }
            Ok(())
        };
        match check() {
            Err(e) if rules.len() > 1 => bail!("rule #{}: {e}", i + 1),
            r => r?,
        }
    }
    Ok(())
}

/// Refuses a selector that names a linux-bridge network, or a sandbox on
/// one: nothing on a kernel bridge reads the rules, so they would be listed
/// but not enforced. (`*` stands for the bridge networks' endpoints.)
pub fn check_enforceable(state: &State, sel: &str) -> Result<()> {
    let lb = |net: &str| {
        state
            .networks
            .get(net)
            .is_some_and(|n| n.driver == DriverKind::LinuxBridge)
    };
    if let Some(net) = sel.strip_prefix("net:") {
        if lb(net) {
            bail!("network {net:?} uses the linux-bridge driver, which cannot enforce policy; use bridge (eBPF) networks for rules");
        }
        return Ok(());
    }
    if let Some(ep) = endpoints(state, sel).into_iter().find(|e| lb(&e.network)) {
        bail!("sandbox {sel:?} is on network {:?}, which uses the linux-bridge driver and cannot enforce policy; use bridge (eBPF) networks for rules", ep.network);
    }
    Ok(())
}

/// Refuses to join `sandbox` to a linux-bridge network while a rule names
/// it: the rule would stop holding for its traffic there.
pub fn check_join(state: &State, sandbox: &str, network: &str) -> Result<()> {
    let lb = state
        .networks
        .get(network)
        .is_some_and(|n| n.driver == DriverKind::LinuxBridge);
    let owner = match state.sandboxes.get(sandbox).map(|s| &s.mode) {
        Some(NetworkMode::Container(other)) => other.as_str(),
        _ => sandbox,
    };
    let named = |sel: &str| {
        sel == owner
            || state
                .sandboxes
                .get(sel)
                .is_some_and(|s| s.mode.shares(owner))
    };
    if let Some(rule) = state
        .policies
        .values()
        .find(|r| lb && (named(&r.from) || named(&r.to)))
    {
        bail!("sandbox {sandbox:?} is named by policy rule {}, which network {network:?} (linux-bridge driver) cannot enforce; remove the rule or use a bridge (eBPF) network", rule.id);
    }
    Ok(())
}

/// The endpoints a selector stands for now (none for a missing name).
pub fn endpoints<'a>(state: &'a State, sel: &str) -> Vec<&'a Endpoint> {
    if sel == "*" {
        return state.endpoints().map(|(_, e)| e).collect();
    }
    if let Some(net) = sel.strip_prefix("net:") {
        return state
            .endpoints()
            .filter(|(_, e)| e.network == net)
            .map(|(_, e)| e)
            .collect();
    }
    // A container:OTHER sandbox speaks through OTHER's endpoints.
    let owner = match state.sandboxes.get(sel).map(|s| &s.mode) {
        Some(NetworkMode::Container(other)) => other.as_str(),
        Some(_) => sel,
        None => return vec![],
    };
    state
        .sandboxes
        .get(owner)
        .map(|s| s.endpoints.iter().collect())
        .unwrap_or_default()
}

/// Entries of one generation of the datapath's policy.
pub const LIMIT: usize = MAX_POLICY_ENTRIES as usize;
/// Entries allow rules (and links) may not take: a deny must still fit when
/// allows have filled the rest, which is when one is most needed.
pub const DENY_RESERVE: usize = LIMIT / 16;

/// [`compile`], refused with a line naming the limit and the biggest rule
/// when the result would not fit; checked before anything is written.
pub fn compile_checked(state: &State) -> Result<BTreeMap<PolicyKey, PolicyValue>> {
    let entries = compile(state);
    let allows = entries
        .values()
        .filter(|v| v.action == action::ALLOW)
        .count();
    let biggest = |allow_only: bool| {
        let mut per_rule: BTreeMap<u32, usize> = BTreeMap::new();
        for v in entries.values() {
            if !allow_only || v.action == action::ALLOW {
                *per_rule.entry(v.rule).or_default() += 1;
            }
        }
        match per_rule.into_iter().max_by_key(|(_, n)| *n) {
            Some((RULE_LINK, n)) => format!("narrow the --link allowances ({n} entries)"),
            Some((id, n)) => match state.policies.get(&id) {
                Some(r) => format!("narrow the rule {} ({n} entries)", r.flags()),
                None => format!("narrow rule {id} ({n} entries)"),
            },
            None => "narrow the rules".into(),
        }
    };
    if entries.len() > LIMIT {
        bail!(
            "the policy would need {} entries, the limit is {LIMIT}; {} or remove rules",
            entries.len(),
            biggest(false)
        );
    }
    if allows > LIMIT - DENY_RESERVE {
        bail!(
            "allow rules would need {allows} policy entries, the limit is {} (another {DENY_RESERVE} are kept for deny rules); {} or remove rules",
            LIMIT - DENY_RESERVE,
            biggest(true)
        );
    }
    Ok(entries)
}

impl Rule {
    /// The rule as `policy add` takes it.
    pub fn flags(&self) -> String {
        let mut s = format!("--from {} --to {}", self.from, self.to);
        match self.traffic {
            Traffic::Any => {}
            Traffic::Icmp => s.push_str(" --icmp"),
            Traffic::Ports { .. } => s.push_str(&format!(" --port {}", self.traffic.display())),
        }
        if self.action == Action::Deny {
            s.push_str(" --action deny");
        }
        s
    }
}

/// Every datapath entry the state implies. Deny wins over allow: a deny
/// entry replaces an allow entry of the same key, and an allow entry for a
/// port is dropped when the same pair has a deny with any port or protocol
/// (the datapath falls back to that broader key, so the verdict and the
/// counted rule are the same, and a deny never makes the policy bigger
/// than its own keys).
pub fn compile(state: &State) -> BTreeMap<PolicyKey, PolicyValue> {
    let network_icc: BTreeMap<&str, bool> = state
        .networks
        .values()
        .map(|n| (n.name.as_str(), n.icc()))
        .collect();
    // Within an icc network everything flows already; entries matter only
    // between networks or inside icc=false networks.
    let judged = |a: &Endpoint, b: &Endpoint| {
        a.network != b.network || !network_icc.get(a.network.as_str()).copied().unwrap_or(true)
    };
    let mut out: BTreeMap<PolicyKey, PolicyValue> = BTreeMap::new();
    let mut put = |src: &Endpoint, dst: &Endpoint, proto: u8, dport: u16, value: PolicyValue| {
        let key = PolicyKey {
            src_slot: src.slot,
            dst_slot: dst.slot,
            dport,
            proto,
            _pad: 0,
        };
        match out.get(&key) {
            Some(old) if old.action == action::DENY => {}
            _ => {
                out.insert(key, value);
            }
        }
    };
    for sb in state.sandboxes.values() {
        for link in &sb.links {
            for src in &sb.endpoints {
                for dst in endpoints(state, &link.target) {
                    if src.network == dst.network && judged(src, dst) {
                        let value = PolicyValue {
                            rule: RULE_LINK,
                            action: action::ALLOW,
                        };
                        put(src, dst, 0, 0, value);
                    }
                }
            }
        }
    }
    for rule in state.policies.values() {
        let value = PolicyValue {
            rule: rule.id,
            action: match rule.action {
                Action::Allow => action::ALLOW,
                Action::Deny => action::DENY,
            },
        };
        let keys = rule.traffic.keys();
        for src in endpoints(state, &rule.from) {
            for dst in endpoints(state, &rule.to) {
                if src.slot == dst.slot || src.id == dst.id || !judged(src, dst) {
                    continue;
                }
                for (proto, port) in &keys {
                    put(src, dst, *proto, *port, value);
                }
            }
        }
    }
    // Broader denies shadow narrower allows.
    let denies: BTreeMap<PolicyKey, PolicyValue> = out
        .iter()
        .filter(|(k, v)| v.action == action::DENY && k.dport == 0)
        .map(|(k, v)| (*k, *v))
        .collect();
    out.retain(|key, value| {
        let broader = [
            PolicyKey { dport: 0, ..*key },
            PolicyKey {
                dport: 0,
                proto: 0,
                ..*key
            },
        ];
        value.action == action::DENY || !broader.iter().any(|k| denies.contains_key(k))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Network, Sandbox};

    fn state() -> State {
        let mut st = State::default();
        for (name, id, icc) in [("a", 1, true), ("b", 2, true), ("q", 3, false)] {
            let mut options = BTreeMap::new();
            if !icc {
                options.insert("icc".to_string(), "false".to_string());
            }
            st.networks.insert(
                name.into(),
                Network {
                    id: name.into(),
                    name: name.into(),
                    created: String::new(),
                    driver: DriverKind::Bridge,
                    net_id: id,
                    subnet: None,
                    gateway: None,
                    subnet6: None,
                    gateway6: None,
                    internal: false,
                    options,
                    bridge: None,
                },
            );
        }
        for (sb, net, slot) in [
            ("web", "a", 1),
            ("db", "b", 2),
            ("x", "q", 3),
            ("y", "q", 4),
        ] {
            st.sandboxes.insert(
                sb.into(),
                Sandbox {
                    id: sb.into(),
                    name: sb.into(),
                    created: String::new(),
                    mode: NetworkMode::Networks(net.into()),
                    endpoints: vec![Endpoint {
                        id: format!("{sb}-ep"),
                        network: net.into(),
                        ifname: "eth0".into(),
                        host_ifname: String::new(),
                        host_ifindex: 0,
                        ip: [10, 0, 0, slot as u8].into(),
                        ip6: None,
                        mac: [0; 6],
                        slot,
                        aliases: vec![],
                    }],
                    aliases: vec![],
                    links: vec![],
                    ports: vec![],
                    exposed: vec![],
                    dns: Default::default(),
                    netns: None,
                    cni: None,
                    docker: None,
                }
                .into(),
            );
        }
        st
    }

    fn rule(id: u32, from: &str, to: &str, traffic: Traffic, action: Action) -> Rule {
        Rule {
            id,
            from: from.into(),
            to: to.into(),
            traffic,
            action,
        }
    }

    fn key(src: u32, dst: u32, proto: u8, dport: u16) -> PolicyKey {
        PolicyKey {
            src_slot: src,
            dst_slot: dst,
            dport,
            proto,
            _pad: 0,
        }
    }

    #[test]
    fn ports_parse_and_refuse_nonsense() {
        assert_eq!(
            Traffic::parse_port("8080/tcp").unwrap(),
            Traffic::Ports {
                first: 8080,
                last: 8080,
                proto: Some(Proto::Tcp)
            }
        );
        assert_eq!(Traffic::parse_port("53-54").unwrap().display(), "53-54");
        for bad in ["0", "80/sctp", "90-80", "x", "70000", "1-5000"] {
            assert!(Traffic::parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_allow_rule_opens_one_direction_only() {
        let mut st = state();
        let p = Traffic::parse_port("8080/tcp").unwrap();
        st.policies
            .insert(1, rule(1, "web", "net:b", p, Action::Allow));
        let c = compile(&st);
        assert_eq!(c.len(), 1);
        assert_eq!(c[&key(1, 2, 6, 8080)].rule, 1);
        assert!(!c.contains_key(&key(2, 1, 6, 8080)));
    }

    #[test]
    fn deny_overrides_allow_even_when_narrower_allow_exists() {
        let mut st = state();
        let p = Traffic::parse_port("8080/tcp").unwrap();
        st.policies
            .insert(1, rule(1, "web", "db", p, Action::Allow));
        st.policies
            .insert(2, rule(2, "*", "net:b", Traffic::Any, Action::Deny));
        let c = compile(&st);
        let v = lookup(&c, key(1, 2, 6, 8080)).expect("an entry");
        assert_eq!((v.action, v.rule), (action::DENY, 2));
        // The shadowed allow takes no room.
        assert!(!c.contains_key(&key(1, 2, 6, 8080)));
    }

    /// The datapath's lookup: exact port, then any port, then any protocol.
    fn lookup(c: &BTreeMap<PolicyKey, PolicyValue>, k: PolicyKey) -> Option<PolicyValue> {
        [
            k,
            PolicyKey { dport: 0, ..k },
            PolicyKey {
                dport: 0,
                proto: 0,
                ..k
            },
        ]
        .iter()
        .find_map(|k| c.get(k).copied())
    }

    #[test]
    fn a_port_deny_under_a_protocol_deny_keeps_its_own_hits() {
        let mut st = state();
        let p = Traffic::parse_port("8080/tcp").unwrap();
        st.policies.insert(1, rule(1, "web", "db", p, Action::Deny));
        st.policies.insert(
            2,
            rule(
                2,
                "web",
                "db",
                Traffic::parse_port("8000-9000/tcp").unwrap(),
                Action::Allow,
            ),
        );
        st.policies
            .insert(3, rule(3, "web", "db", Traffic::Any, Action::Deny));
        let c = compile(&st);
        assert_eq!(lookup(&c, key(1, 2, 6, 8080)).unwrap().rule, 1);
        assert_eq!(lookup(&c, key(1, 2, 6, 80)).unwrap().rule, 3);
        assert_eq!(lookup(&c, key(1, 2, 17, 53)).unwrap().rule, 3);
    }

    #[test]
    fn a_policy_over_the_limit_is_refused_naming_the_biggest_rule() {
        let mut st = state();
        // Twenty more sandboxes on each of a and b.
        for i in 0..40u32 {
            let (net, name) = if i < 20 {
                ("a", format!("a{i}"))
            } else {
                ("b", format!("b{i}"))
            };
            st.sandboxes.insert(
                name.clone(),
                Sandbox {
                    id: name.clone(),
                    name: name.clone(),
                    created: String::new(),
                    mode: NetworkMode::Networks(net.into()),
                    endpoints: vec![Endpoint {
                        id: format!("{name}-ep"),
                        network: net.into(),
                        ifname: "eth0".into(),
                        host_ifname: String::new(),
                        host_ifindex: 0,
                        ip: [10, 1, 0, i as u8].into(),
                        ip6: None,
                        mac: [0; 6],
                        slot: 100 + i,
                        aliases: vec![],
                    }],
                    aliases: vec![],
                    links: vec![],
                    ports: vec![],
                    exposed: vec![],
                    dns: Default::default(),
                    netns: None,
                    cni: None,
                    docker: None,
                }
                .into(),
            );
        }
        // 21 x 21 pairs x 2 protocols x 1024 ports = 903,168 entries.
        let wide = Traffic::parse_port("1-1024").unwrap();
        st.policies
            .insert(7, rule(7, "net:a", "net:b", wide, Action::Allow));
        let e = compile_checked(&st).unwrap_err().to_string();
        assert_eq!(
            e,
            "the policy would need 903168 entries, the limit is 262144; narrow the rule --from net:a --to net:b --port 1-1024 (903168 entries) or remove rules"
        );
        // 21 x 21 x 2 x 280 = 246,960: fits the whole map, not the allow part.
        let narrower = Traffic::parse_port("1-280").unwrap();
        st.policies
            .insert(7, rule(7, "net:a", "net:b", narrower, Action::Allow));
        let e = compile_checked(&st).unwrap_err().to_string();
        assert_eq!(e, "allow rules would need 246960 policy entries, the limit is 245760 (another 16384 are kept for deny rules); narrow the rule --from net:a --to net:b --port 1-280 (246960 entries) or remove rules");
        // 21 x 21 x 2 x 250 = 220,500 allows leave room for a deny of
        // 21 x 21 x 2 x 40 = 35,280 new entries (over the allow part).
        let fits = Traffic::parse_port("1-250").unwrap();
        st.policies
            .insert(7, rule(7, "net:a", "net:b", fits, Action::Allow));
        assert_eq!(compile_checked(&st).unwrap().len(), 220_500);
        let deny = Traffic::parse_port("2000-2039").unwrap();
        st.policies
            .insert(8, rule(8, "net:a", "net:b", deny, Action::Deny));
        assert_eq!(compile_checked(&st).unwrap().len(), 255_780);
    }

    #[test]
    fn rules_within_an_icc_network_compile_to_nothing_but_icc_false_ones_do() {
        let mut st = state();
        st.policies
            .insert(1, rule(1, "x", "y", Traffic::Icmp, Action::Allow));
        assert_eq!(compile(&st).len(), 1);
        st.networks.get_mut("q").unwrap().options.clear();
        assert!(compile(&st).is_empty());
    }

    #[test]
    fn links_open_icc_false_networks_in_their_direction() {
        let mut st = state();
        st.sandboxes
            .get_mut("x")
            .unwrap()
            .links
            .push(crate::state::Link {
                target: "y".into(),
                alias: "y".into(),
            });
        let c = compile(&st);
        assert_eq!(c[&key(3, 4, 0, 0)].rule, RULE_LINK);
        assert!(!c.contains_key(&key(4, 3, 0, 0)));
    }

    #[test]
    fn rules_for_missing_sandboxes_wait_for_them() {
        let mut st = state();
        st.policies
            .insert(1, rule(1, "ghost", "db", Traffic::Any, Action::Allow));
        assert!(compile(&st).is_empty());
    }
}
