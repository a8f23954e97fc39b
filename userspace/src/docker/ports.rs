//! Docker's `-p`/`--expose` as a network driver receives them: the endpoint
//! options `com.docker.network.portmap` (what to publish) and
//! `com.docker.network.endpoint.exposedports` (what the image exposes),
//! typed. Docker publishes nothing itself for a remote driver and starts no
//! docker-proxy: ProgramExternalConnectivity is where the driver publishes,
//! through [`publish`].
use std::net::IpAddr;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ops::Controller;

pub const PORTMAP_OPTION: &str = "com.docker.network.portmap";
pub const EXPOSED_OPTION: &str = "com.docker.network.endpoint.exposedports";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Docker sends the IP protocol number.
    fn from_number(n: u8) -> Result<Self> {
        Ok(match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => Proto::Sctp,
            other => {
                bail!("unknown protocol number {other} in a port mapping (tcp 6, udp 17, sctp 132)")
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// A port the container exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExposedPort {
    pub proto: Proto,
    pub port: u16,
}

/// One `-p [HOST_IP:]HOST_PORT[-END]:PORT[/PROTO]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBinding {
    pub proto: Proto,
    pub container_port: u16,
    /// None: every host address.
    pub host_ip: Option<IpAddr>,
    /// 0: Docker lets the driver choose (`-p 80`).
    pub host_port: u16,
    pub host_port_end: u16,
}

/// In `docker run -p` syntax (`[IP:][HOST_PORT[-END]]:PORT/PROTO`, or
/// `[IP::]PORT/PROTO` when the host port is the driver's to choose): the
/// `--publish` spec bpfnet's own port publishing takes.
impl std::fmt::Display for PortBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:"),
            Some(ip) => format!("{ip}:"),
            None => String::new(),
        };
        let (cp, proto) = (self.container_port, self.proto.name());
        match (self.host_port, self.host_ip) {
            (0, None) => write!(f, "{cp}/{proto}"),
            (0, Some(_)) => write!(f, "{ip}:{cp}/{proto}"),
            (hp, _) if self.host_port_end > hp => {
                write!(f, "{ip}{hp}-{}:{cp}/{proto}", self.host_port_end)
            }
            (hp, _) => write!(f, "{ip}{hp}:{cp}/{proto}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawBinding {
    proto: u8,
    #[serde(default, rename = "HostIP")]
    host_ip: String,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
    port: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawExposed {
    proto: u8,
    port: u16,
}

/// The ports of an endpoint's options (CreateEndpoint, Join and
/// ProgramExternalConnectivity carry the same two keys).
pub fn from_options(options: &Map<String, Value>) -> Result<(Vec<ExposedPort>, Vec<PortBinding>)> {
    let exposed: Vec<RawExposed> = match options.get(EXPOSED_OPTION) {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone())
            .with_context(|| format!("reading {EXPOSED_OPTION}"))?,
    };
    let map: Vec<RawBinding> = match options.get(PORTMAP_OPTION) {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone())
            .with_context(|| format!("reading {PORTMAP_OPTION}"))?,
    };
    let exposed = exposed
        .into_iter()
        .map(|e| {
            Ok(ExposedPort {
                proto: Proto::from_number(e.proto)?,
                port: e.port,
            })
        })
        .collect::<Result<_>>()?;
    let map = map
        .into_iter()
        .map(|b| {
            let host_ip = match b.host_ip.as_str() {
                "" => None,
                ip => Some(
                    ip.parse()
                        .with_context(|| format!("host address {ip:?} of a port mapping"))?,
                ),
            };
            if b.host_port_end != 0 && b.host_port_end < b.host_port {
                bail!(
                    "port range {}-{} ends before it starts",
                    b.host_port,
                    b.host_port_end
                );
            }
            Ok(PortBinding {
                proto: Proto::from_number(b.proto)?,
                container_port: b.port,
                host_ip,
                host_port: b.host_port,
                host_port_end: b.host_port_end.max(b.host_port),
            })
        })
        .collect::<Result<_>>()?;
    Ok((exposed, map))
}

/// The one place where published ports reach the datapath
/// (ProgramExternalConnectivity, with the container's endpoint): each
/// binding's `to_string()` is a `--publish` spec, published through the
/// product's own port publishing (nftables DNAT, `Controller::set_published`)
/// on the sandbox the endpoint belongs to.
pub async fn publish(c: &mut Controller, endpoint: &str, bindings: &[PortBinding]) -> Result<()> {
    if bindings.is_empty() {
        return Ok(());
    }
    let Some((sb, _)) = c.docker_endpoint(endpoint) else {
        bail!(
            "endpoint {} is not bpfnet's; nothing to publish on",
            &endpoint[..endpoint.len().min(12)]
        );
    };
    let name = sb.name.clone();
    c.set_published(&name, bindings.iter().map(|b| b.to_string()).collect())
        .await?;
    Ok(())
}

/// Undoes [`publish`] (RevokeExternalConnectivity); an endpoint already
/// gone has nothing published.
pub async fn unpublish(c: &mut Controller, endpoint: &str) -> Result<()> {
    let Some((sb, _)) = c.docker_endpoint(endpoint) else {
        return Ok(());
    };
    if sb.ports.is_empty() {
        return Ok(());
    }
    let name = sb.name.clone();
    c.set_published(&name, vec![]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn docker_portmap_and_exposed_ports_are_typed() {
        let opts = json!({
            "com.docker.network.endpoint.exposedports": [{"Port": 80, "Proto": 6}, {"Port": 53, "Proto": 17}],
            "com.docker.network.portmap": [
                {"HostIP": "127.0.0.1", "HostPort": 18080, "HostPortEnd": 18080, "IP": "", "Port": 80, "Proto": 6},
                {"HostIP": "", "HostPort": 5300, "HostPortEnd": 5301, "IP": "", "Port": 53, "Proto": 17}
            ]
        });
        let (exposed, map) = from_options(opts.as_object().unwrap()).unwrap();
        assert_eq!(
            exposed,
            vec![
                ExposedPort {
                    proto: Proto::Tcp,
                    port: 80
                },
                ExposedPort {
                    proto: Proto::Udp,
                    port: 53
                }
            ]
        );
        assert_eq!(map[0].to_string(), "127.0.0.1:18080:80/tcp");
        assert_eq!(map[1].to_string(), "5300-5301:53/udp");
        assert_eq!(map[1].host_ip, None);
        let any = json!({"com.docker.network.portmap": [
            {"HostIP": "", "HostPort": 0, "HostPortEnd": 0, "Port": 80, "Proto": 6},
            {"HostIP": "::1", "HostPort": 0, "Port": 80, "Proto": 6}]});
        let (_, map) = from_options(any.as_object().unwrap()).unwrap();
        assert_eq!(map[0].to_string(), "80/tcp");
        assert_eq!(map[1].to_string(), "[::1]::80/tcp");
    }

    #[test]
    fn empty_or_missing_options_mean_no_ports() {
        let opts = json!({"com.docker.network.portmap": [], "com.docker.network.endpoint.exposedports": null});
        let (e, m) = from_options(opts.as_object().unwrap()).unwrap();
        assert!(e.is_empty() && m.is_empty());
    }

    #[test]
    fn bad_protocol_is_refused_by_name() {
        let opts = json!({"com.docker.network.portmap": [{"HostIP": "", "HostPort": 1, "Port": 1, "Proto": 99}]});
        let e = from_options(opts.as_object().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown protocol number 99 in a port mapping (tcp 6, udp 17, sctp 132)"
        );
    }
}
