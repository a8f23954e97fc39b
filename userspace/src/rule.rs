//! Policy rules as users write them: who (`--from`, `--to`: a sandbox name,
//! `net:NETWORK` or `*`), what traffic (`--port`, `--icmp`, any) and the
//! action; their parsing from the command line and from `policy import`.
//! Checking them against the state and compiling them to datapath entries
//! is `policy`'s business.
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

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
    pub(crate) fn keys(&self) -> Vec<(u8, u16)> {
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
