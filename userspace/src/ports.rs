//! Published ports: Docker's `-p`/`--publish` and `--expose` specs, and the
//! bindings a sandbox keeps once bpfnet has resolved them.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl FromStr for Proto {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => bail!("protocol sctp is not supported: bpfnet publishes tcp and udp ports"),
            _ => bail!("unknown protocol {s:?} (tcp or udp)"),
        }
    }
}

/// A container port and its protocol, written `80/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Port {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.as_str())
    }
}

impl FromStr for Port {
    type Err = anyhow::Error;

    /// `80` or `80/udp` (what `bpfnet port NAME 80/udp` takes).
    fn from_str(s: &str) -> Result<Self> {
        let (port, proto) = split_proto(s)?;
        Ok(Port {
            port: parse_port(port, "port")?,
            proto,
        })
    }
}

/// A published port, resolved: where the host takes it, where it goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub container: Port,
    /// The host address it is published on; None: every address (of
    /// both families when the sandbox has IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    /// The host port as it was asked for (`HostConfig.PortBindings`): a
    /// port, a range, or empty when bpfnet chose it.
    #[serde(default)]
    pub requested: String,
}

impl PortBinding {
    /// The host sides as `docker port` prints them: `0.0.0.0:8080`, and
    /// `[::]:8080` too when the port is also published over IPv6 (`v6`).
    pub fn hosts(&self, v6: bool) -> Vec<String> {
        match self.host_ip {
            Some(ip) => vec![host_port(ip, self.host_port)],
            None => {
                let mut all = vec![host_port(Ipv4Addr::UNSPECIFIED.into(), self.host_port)];
                if v6 {
                    all.push(host_port(
                        std::net::Ipv6Addr::UNSPECIFIED.into(),
                        self.host_port,
                    ));
                }
                all
            }
        }
    }

    /// Whether two bindings want the same host port and protocol on an
    /// address they share.
    pub fn clashes(&self, proto: Proto, host_ip: Option<IpAddr>, port: u16) -> bool {
        self.container.proto == proto
            && self.host_port == port
            && (self.host_ip.is_none() || host_ip.is_none() || self.host_ip == host_ip)
    }
}

/// `0.0.0.0:8080`, `[::1]:8080`.
pub fn host_port(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// One `--publish` as given, before host ports are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishSpec {
    pub host_ip: Option<IpAddr>,
    /// Host port range; None: bpfnet picks free ports.
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
    pub proto: Proto,
    /// The host part as written (for `HostConfig.PortBindings`).
    pub requested: String,
}

impl PublishSpec {
    /// Container ports, each with the host ports it may take: one port when
    /// the ranges pair up, the whole host range when one container port is
    /// published on a range (Docker's "first free in the range"), none
    /// when bpfnet picks.
    pub fn expand(&self) -> Vec<(Port, Option<(u16, u16)>)> {
        let (c0, c1) = self.container_ports;
        (c0..=c1)
            .map(|p| {
                let host = self.host_ports.map(|(h0, h1)| {
                    if c0 == c1 {
                        (h0, h1)
                    } else {
                        let h = h0 + (p - c0);
                        (h, h)
                    }
                });
                (
                    Port {
                        port: p,
                        proto: self.proto,
                    },
                    host,
                )
            })
            .collect()
    }
}

fn split_proto(s: &str) -> Result<(&str, Proto)> {
    match s.rsplit_once('/') {
        Some((p, proto)) => Ok((p, proto.parse()?)),
        None => Ok((s, Proto::Tcp)),
    }
}

fn parse_port(s: &str, what: &str) -> Result<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && !s.starts_with('+') => Ok(p as u16),
        _ => bail!("invalid {what} {s:?} (a number from 1 to 65535)"),
    }
}

fn parse_range(s: &str, what: &str) -> Result<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_port(a, what)?, parse_port(b, what)?);
            if b < a {
                bail!("invalid {what} range {s:?}: the end is below the start");
            }
            Ok((a, b))
        }
        None => {
            let p = parse_port(s, what)?;
            Ok((p, p))
        }
    }
}

/// Parses Docker's `[HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp]`.
pub fn parse_publish(spec: &str) -> Result<PublishSpec> {
    parse_publish_inner(spec).map_err(|e| anyhow!("invalid --publish {spec:?}: {e}"))
}

fn parse_publish_inner(spec: &str) -> Result<PublishSpec> {
    let (ports, proto) = split_proto(spec)?;
    // An IPv6 host address is written in brackets: `[::1]:8080:80`.
    let (ip, ports) = match ports.strip_prefix('[') {
        Some(rest) => {
            let (ip, rest) = rest
                .split_once(']')
                .ok_or_else(|| anyhow!("a '[' without ']' around the IPv6 host address"))?;
            let ports = rest.strip_prefix(':').ok_or_else(|| {
                anyhow!("the IPv6 host address [{ip}] needs ':' and ports after it ([::1]:8080:80)")
            })?;
            (Some(ip), ports)
        }
        None => (None, ports),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, container) = match (ip, &parts[..]) {
        (None, [c]) => (None, None, *c),
        (None, [h, c]) => (None, Some(*h), *c),
        (None, [ip, h, c]) => (Some(*ip), Some(*h), *c),
        (Some(ip), [h, c]) => (Some(ip), Some(*h), *c),
        _ => bail!("too many ':' (the form is [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO], an IPv6 HOSTIP in brackets: [2001:db8::1]:8080:80)"),
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => {
            let ip: IpAddr = ip.parse().map_err(|_| {
                anyhow!("invalid host address {ip:?} (an IPv4 address, or IPv6 in brackets)")
            })?;
            if ip == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST) {
                bail!("IPv6 loopback clients cannot be forwarded to a sandbox (IPv6 has no route_localnet); publish on 127.0.0.1 or on a host address");
            }
            if ip.to_canonical() != ip {
                bail!("invalid host address {ip} (an IPv4-mapped IPv6 address: write the IPv4 address)");
            }
            (!ip.is_unspecified()).then_some(ip)
        }
    };
    let container_ports = parse_range(container, "container port")?;
    let host_ports = match host {
        None | Some("") => None,
        Some(h) => Some(parse_range(h, "host port")?),
    };
    if let Some((h0, h1)) = host_ports {
        let (c0, c1) = container_ports;
        if c0 != c1 && h1 - h0 != c1 - c0 {
            bail!("the host range {h0}-{h1} and the container range {c0}-{c1} differ in length");
        }
    }
    Ok(PublishSpec {
        host_ip,
        host_ports,
        container_ports,
        proto,
        requested: host.unwrap_or("").to_string(),
    })
}

/// Parses `--expose PORT[-END][/PROTO]`.
pub fn parse_expose(spec: &str) -> Result<Vec<Port>> {
    let parsed = split_proto(spec).and_then(|(p, proto)| {
        let (a, b) = parse_range(p, "port")?;
        Ok((a..=b).map(|port| Port { port, proto }).collect())
    });
    parsed.map_err(|e| anyhow!("invalid --expose {spec:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_ports, p.container_ports, p.proto),
            (None, Some((8080, 8080)), (80, 80), Proto::Tcp)
        );
        let p = parse_publish("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        let p = parse_publish("[2001:db8::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(p.host_ports, Some((8080, 8080)));
        let p = parse_publish("[::]::80/udp").unwrap();
        assert_eq!((p.host_ip, p.host_ports), (None, None));
        assert_eq!(p.proto, Proto::Udp);
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_ports, p.requested.as_str()), (None, ""));
        let p = parse_publish("10.0.0.1::80").unwrap();
        assert_eq!(p.host_ports, None);
        let p = parse_publish("8000-8002:9000-9002").unwrap();
        let e = p.expand();
        assert_eq!(e.len(), 3);
        assert_eq!(e[2].0.port, 9002);
        assert_eq!(e[2].1, Some((8002, 8002)));
        let p = parse_publish("8000-8010:80").unwrap();
        assert_eq!(
            p.expand(),
            vec![(
                Port {
                    port: 80,
                    proto: Proto::Tcp
                },
                Some((8000, 8010))
            )]
        );
    }

    #[test]
    fn publish_errors() {
        let err = |s: &str| parse_publish(s).unwrap_err().to_string();
        assert_eq!(
            err("70000:80"),
            "invalid --publish \"70000:80\": invalid host port \"70000\" (a number from 1 to 65535)"
        );
        assert_eq!(
            err("abc"),
            "invalid --publish \"abc\": invalid container port \"abc\" (a number from 1 to 65535)"
        );
        assert_eq!(
            err("80:80/sctp"),
            "invalid --publish \"80:80/sctp\": protocol sctp is not supported: bpfnet publishes tcp and udp ports"
        );
        assert_eq!(
            err("8000-8001:80-82"),
            "invalid --publish \"8000-8001:80-82\": the host range 8000-8001 and the container range 80-82 differ in length"
        );
        assert!(err("1.2.3:80:80").contains("invalid host address \"1.2.3\""));
        assert!(err("0:80").contains("invalid host port \"0\""));
        assert!(err("a:b:c:d").contains("too many ':'"));
        assert!(err("2001:db8::1:8080:80").contains("too many ':'"));
        assert_eq!(
            err("[::1]:8080:80"),
            "invalid --publish \"[::1]:8080:80\": IPv6 loopback clients cannot be forwarded to a sandbox (IPv6 has no route_localnet); publish on 127.0.0.1 or on a host address"
        );
        assert!(err("[2001:db8::1:8080:80").contains("without ']'"));
        assert!(err("[zz]:8080:80").contains("invalid host address \"zz\""));
    }

    #[test]
    fn expose() {
        assert_eq!(
            parse_expose("53/udp").unwrap(),
            vec![Port {
                port: 53,
                proto: Proto::Udp
            }]
        );
        assert_eq!(parse_expose("80-81").unwrap().len(), 2);
        assert!(parse_expose("x").is_err());
    }
}
