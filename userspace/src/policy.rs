//! Policy between networks, written with names (`--from web --to net:db
//! --port 5432/tcp`) and compiled to the datapath's entries: one per pair of
//! endpoints, protocol and port. Rules are kept by name, so they follow a
//! sandbox that is removed and recreated with another address; every change
//! of membership recompiles them. `--link` on `icc=false` networks compiles to
//! the same entries.
use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use bpfnet_common::{action, PolicyKey, PolicyValue, RULE_LINK};
use serde::{Deserialize, Serialize};

use crate::state::{Endpoint, NetworkMode, State};

/// A port range expands to one entry per port; wider ranges are refused.
pub const MAX_PORT_RANGE: u32 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// What a rule covers beyond the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Traffic {
    Any,
    Ports {
        first: u16,
        last: u16,
        proto: Option<Proto>,
    },
    /// ICMP echo (ping).
    Icmp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u32,
    pub from: String,
    pub to: String,
    pub traffic: Traffic,
    pub action: Action,
}

impl Traffic {
    /// `N`, `N-M`, with `/tcp` or `/udp` (both if omitted).
    pub fn parse_port(s: &str) -> Result<Self> {
        const FORM: &str = "expected N, N-M, N/tcp or N-M/udp with ports 1-65535";
        let (range, proto) = match s.split_once('/') {
            Some((r, "tcp")) => (r, Some(Proto::Tcp)),
            Some((r, "udp")) => (r, Some(Proto::Udp)),
            Some((_, p)) => bail!("invalid port {s:?}: unknown protocol {p:?}; use tcp or udp"),
            None => (s, None),
        };
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let port = |p: &str| -> Result<u16> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                bail!("invalid port {s:?}: {FORM}");
            }
            match p.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                _ => bail!("invalid port {s:?}: {p} is out of range; ports are 1-65535"),
            }
        };
        let (first, last) = (port(a)?, port(b)?);
        if last < first {
            bail!(
                "invalid port {s:?}: the range ends before it starts; write it as {last}-{first}"
            );
        }
        if u32::from(last - first) >= MAX_PORT_RANGE {
            bail!("invalid port {s:?}: ranges are limited to {MAX_PORT_RANGE} ports");
        }
        Ok(Traffic::Ports { first, last, proto })
    }

    pub fn display(&self) -> String {
        match self {
            Traffic::Any => "any".into(),
            Traffic::Icmp => "icmp".into(),
            Traffic::Ports { first, last, proto } => {
                let range = if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                };
                match proto {
                    Some(Proto::Tcp) => format!("{range}/tcp"),
                    Some(Proto::Udp) => format!("{range}/udp"),
                    None => range,
                }
            }
        }
    }

    /// Whether a connection (protocol, destination port) falls under it.
    pub fn covers(&self, proto: u8, dport: u16) -> bool {
        match *self {
            Traffic::Any => true,
            Traffic::Icmp => proto == 1,
            Traffic::Ports {
                first,
                last,
                proto: p,
            } => {
                let proto_ok = match p {
                    Some(Proto::Tcp) => proto == 6,
                    Some(Proto::Udp) => proto == 17,
                    None => proto == 6 || proto == 17,
                };
                proto_ok && (first..=last).contains(&dport)
            }
        }
    }

    /// (protocol, port) pairs of the datapath's key; 0 means any.
    fn keys(&self) -> Vec<(u8, u16)> {
        match *self {
            Traffic::Any => vec![(0, 0)],
            Traffic::Icmp => vec![(1, 0)],
            Traffic::Ports { first, last, proto } => {
                let protos: &[u8] = match proto {
                    Some(Proto::Tcp) => &[6],
                    Some(Proto::Udp) => &[17],
                    None => &[6, 17],
                };
                protos
                    .iter()
                    .flat_map(|p| (first..=last).map(move |port| (*p, port)))
                    .collect()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRule {
    from: String,
    to: String,
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    icmp: bool,
    #[serde(default)]
    action: Option<Action>,
}

/// Rules of `bpfnet policy import`, as `policy add` would take them.
pub fn parse_import(text: &str) -> Result<Vec<(String, String, Traffic, Action)>> {
    let rules: Vec<ImportRule> = serde_json::from_str(text).map_err(|e| {
        anyhow!("not a JSON array of {{\"from\", \"to\", \"port\"?, \"icmp\"?, \"action\"?}} rules: {e}")
    })?;
    if rules.is_empty() {
        bail!("no rules in it; nothing to import");
    }
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let traffic = match (&r.port, r.icmp) {
                (Some(_), true) => bail!("rule #{}: port and icmp exclude each other", i + 1),
                (Some(p), false) => {
                    Traffic::parse_port(p).map_err(|e| anyhow!("rule #{}: {e}", i + 1))?
                }
                (None, true) => Traffic::Icmp,
                (None, false) => Traffic::Any,
            };
            Ok((r.from, r.to, traffic, r.action.unwrap_or(Action::Allow)))
        })
        .collect()
}

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

/// Every datapath entry the state implies. Deny wins over allow: a deny
/// entry replaces an allow entry of the same key, and an allow entry for a
/// port gives way to a deny for the same pair with any port or protocol.
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
    for (key, value) in out.iter_mut() {
        if value.action == action::DENY {
            continue;
        }
        let broader = [
            PolicyKey { dport: 0, ..*key },
            PolicyKey {
                dport: 0,
                proto: 0,
                ..*key
            },
        ];
        if let Some(deny) = broader.iter().find_map(|k| denies.get(k)) {
            *value = *deny;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DriverKind, Network, Sandbox};

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
                        mac: [0; 6],
                        slot,
                        aliases: vec![],
                    }],
                    aliases: vec![],
                    links: vec![],
                },
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
        assert_eq!(c[&key(1, 2, 6, 8080)].action, action::DENY);
        assert_eq!(c[&key(1, 2, 6, 8080)].rule, 2);
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
