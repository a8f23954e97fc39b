//! The responder's configuration, explicit and persisted in
//! `BPFNET_ROOT/dns/config.json`: the responder reads it there at each
//! reload, never from the environment of whichever command happened to
//! start it. The commands write it: `BPFNET_DNS_UPSTREAM` and
//! `BPFNET_DNS_PORT`, when set, are saved by the command that has them and
//! stay until a later command sets them again; `network inspect` shows what
//! is in force.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{limits, upstream::ResolvConf, Files};
use crate::state::State;

/// The environment variable that sets the upstreams.
pub const UPSTREAM_ENV: &str = "BPFNET_DNS_UPSTREAM";
/// The environment variable that moves the port (for side-by-side runs).
pub const PORT_ENV: &str = "BPFNET_DNS_PORT";

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where names a sandbox cannot see are forwarded. `None`: the
    /// `nameserver` lines of the host's /etc/resolv.conf, read at each
    /// reload.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The port served on every user network's gateway.
    pub port: u16,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            upstreams: None,
            port: 53,
        }
    }
}

impl Config {
    /// The saved configuration; the default when none was saved yet.
    pub fn load(files: &Files) -> Result<Config> {
        match std::fs::read_to_string(&files.config) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a valid configuration (remove it to start from the defaults)",
                    files.config.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", files.config.display())),
        }
    }

    /// This configuration with what `env` sets (`None`: variable unset).
    /// An empty `BPFNET_DNS_UPSTREAM` goes back to the host's resolvers.
    pub fn with_env(&self, upstream: Option<&str>, port: Option<&str>) -> Result<Config> {
        let mut c = self.clone();
        if let Some(v) = upstream {
            c.upstreams = if v.trim().is_empty() {
                None
            } else {
                Some(parse_upstreams(v)?)
            };
        }
        if let Some(v) = port {
            c.port = match v.trim().parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => bail!("{PORT_ENV}={v:?} is not a port (1-65535)"),
            };
        }
        Ok(c)
    }

    /// The addresses forwarded to, given the host's resolv.conf.
    pub fn upstreams(&self, host_resolv_conf: &str) -> Vec<SocketAddr> {
        match &self.upstreams {
            Some(v) => v.clone(),
            None => ResolvConf::parse(host_resolv_conf)
                .nameservers
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
        }
    }

    fn save(&self, files: &Files) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serializable") + "\n";
        files.write_atomic(&files.config, &text)
    }
}

/// `IP[:PORT][,IP[:PORT]…]`, port 53 when left out.
fn parse_upstreams(v: &str) -> Result<Vec<SocketAddr>> {
    v.split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<SocketAddr>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                .with_context(|| {
                    format!("{UPSTREAM_ENV}={v:?}: {s:?} is not IP[:PORT] (write IP[:PORT][,IP[:PORT]...], or set it empty for the host's resolvers)")
                })
        })
        .collect()
}

/// Saves what this command's environment sets, and writes the defaults on
/// first use, so that the file always says what the responder does. On a
/// bad value nothing changes and the error says why.
pub fn persist_env(files: &Files) -> Result<()> {
    let upstream = std::env::var(UPSTREAM_ENV).ok();
    let port = std::env::var(PORT_ENV).ok();
    let saved = Config::load(files)?;
    let wanted = saved.with_env(upstream.as_deref(), port.as_deref())?;
    if wanted != saved || !files.config.exists() {
        wanted.save(files)?;
    }
    Ok(())
}

/// The `DNS` object of a user network in `network inspect`: where its
/// members ask, and where what they ask goes.
pub fn network_status(files: &Files, state: &State, name: &str) -> Option<Value> {
    let net = state.networks.get(name)?;
    if !super::table::resolves_names(net) {
        return None;
    }
    let (config, error) = match Config::load(files) {
        Ok(c) => (c, None),
        Err(e) => (Config::default(), Some(format!("{e:#}"))),
    };
    let host = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let from = match &config.upstreams {
        Some(_) => format!("{UPSTREAM_ENV}, saved in {}", files.config.display()),
        None => format!("{HOST_RESOLV_CONF} (read at each reload)"),
    };
    let upstreams: Vec<String> = if net.internal {
        vec![]
    } else {
        config
            .upstreams(&host)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let mut v = json!({
        "Server": net.gateway.map(|g| SocketAddr::new(g.into(), config.port).to_string()),
        "ForwardsUnknownNames": !net.internal,
        "Upstreams": upstreams,
        "UpstreamsFrom": from,
        "ForwardsInFlightPerSandbox": limits::FORWARDS_PER_SANDBOX,
        "TcpConnectionsPerSandbox": limits::TCP_PER_SANDBOX,
    });
    if let Some(e) = error {
        v["ConfigError"] = json!(e);
    }
    Some(v)
}

/// Identity of the saved configuration (part of what the responder
/// acknowledges).
pub fn identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(path) {
        Ok(m) => format!("{}:{}.{}:{}", m.ino(), m.mtime(), m.mtime_nsec(), m.len()),
        Err(_) => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_environment_overrides_only_what_it_sets() {
        let saved = Config {
            upstreams: Some(vec![addr("10.0.0.53:53")]),
            port: 5353,
        };
        assert_eq!(saved.with_env(None, None).unwrap(), saved);
        let c = saved
            .with_env(Some("10.253.0.2:5300, 10.253.0.3"), None)
            .unwrap();
        assert_eq!(
            c.upstreams,
            Some(vec![addr("10.253.0.2:5300"), addr("10.253.0.3:53")])
        );
        assert_eq!(c.port, 5353);
        let c = saved.with_env(Some(""), Some("53")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn bad_values_are_refused_with_what_to_write() {
        let e = Config::default()
            .with_env(Some("10.0.0.1,nonsense"), None)
            .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "BPFNET_DNS_UPSTREAM=\"10.0.0.1,nonsense\": \"nonsense\" is not IP[:PORT] (write IP[:PORT][,IP[:PORT]...], or set it empty for the host's resolvers)"
        );
        let e = Config::default().with_env(None, Some("0")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "BPFNET_DNS_PORT=\"0\" is not a port (1-65535)"
        );
    }

    #[test]
    fn without_upstreams_the_hosts_nameservers_are_used() {
        let host = "nameserver 10.0.0.53\nnameserver ::1\nsearch x\n";
        assert_eq!(
            Config::default().upstreams(host),
            [addr("10.0.0.53:53"), addr("[::1]:53")]
        );
        let c = Config {
            upstreams: Some(vec![addr("10.253.0.2:53")]),
            port: 53,
        };
        assert_eq!(c.upstreams(host), [addr("10.253.0.2:53")]);
    }
}
