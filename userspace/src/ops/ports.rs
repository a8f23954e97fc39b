//! Published ports of a new sandbox: every `--publish`/`--expose` parsed and
//! every host port chosen and checked before anything is created.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use anyhow::{bail, Result};

use super::{journal::Recovery, sandbox::SandboxCreate, Controller, Plan};
use crate::{
    nat,
    ports::{host_port, parse_expose, parse_publish, Port, PortBinding, Proto},
    state::{Network, State},
};

impl Controller {
    /// Replaces the published ports of an existing sandbox with `publish`
    /// (`--publish` specs; none: unpublish everything), as the Docker
    /// driver's Program/RevokeExternalConnectivity need. Checked like
    /// `create -p`; only the NAT table changes.
    pub async fn set_published(
        &mut self,
        name: &str,
        publish: Vec<String>,
    ) -> Result<Vec<PortBinding>> {
        let sb = self.sandbox(name)?.clone();
        let mut target = self.state().clone();
        target
            .sandboxes
            .get_mut(name)
            .expect("checked")
            .ports
            .clear();
        let via = nat::publishing(&target, &sb).map(|(net, _)| net);
        let req = SandboxCreate {
            name: name.into(),
            publish,
            ..Default::default()
        };
        let mode = format!(
            "networks {}",
            sb.endpoints
                .iter()
                .map(|e| e.network.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (ports, _) = resolve_ports(&target, &req, &mode, via)?;
        target.sandboxes.get_mut(name).expect("checked").ports = ports.clone();
        self.execute(Plan {
            what: format!("publish ports of {name}"),
            recovery: Recovery::RollBack,
            steps: vec![],
            target,
            networks: vec![],
            sandbox: None,
            after: vec![],
        })
        .await?;
        Ok(ports)
    }
}

/// The bindings and exposed ports `req` asks for, against the bindings
/// of `state`. `via`: the network the ports would be published through
/// (see [`nat::publishing`]), none if the sandbox has no network that
/// reaches out.
pub(super) fn resolve_ports(
    state: &State,
    req: &SandboxCreate,
    mode: &str,
    via: Option<&Network>,
) -> Result<(Vec<PortBinding>, Vec<Port>)> {
    let specs = req
        .publish
        .iter()
        .map(|s| parse_publish(s))
        .collect::<Result<Vec<_>>>()?;
    let mut exposed: Vec<Port> = vec![];
    for e in &req.expose {
        for p in parse_expose(e)? {
            if !exposed.contains(&p) {
                exposed.push(p);
            }
        }
    }
    let publishes_exposed = req.publish_all && !exposed.is_empty();
    if specs.is_empty() && !publishes_exposed {
        return Ok((vec![], exposed));
    }
    let name = &req.name;
    let Some(via) = via else {
        bail!("--publish needs a network that reaches beyond the host; sandbox {name:?} would use {mode}, where ports cannot be published");
    };
    if via.subnet6.is_none() {
        if let Some(ip) = specs.iter().find_map(|s| s.host_ip.filter(IpAddr::is_ipv6)) {
            bail!("cannot publish on [{ip}]: sandbox {name:?} has no IPv6 address on network {:?}, which its ports are published through (create it with --ipv6)", via.name);
        }
    }
    // Published over IPv6 too (see nat::publishes_ipv6).
    let v6 = via.subnet6.is_some();
    let taken: Vec<(&str, &PortBinding)> = state
        .sandboxes
        .values()
        .flat_map(|s| s.ports.iter().map(move |b| (s.name.as_str(), b)))
        .collect();
    let mut out: Vec<PortBinding> = vec![];
    let pick = |container: Port,
                host_ip: Option<IpAddr>,
                range: Option<(u16, u16)>,
                requested: String,
                out: &mut Vec<PortBinding>|
     -> Result<()> {
        let proto = container.proto;
        let host_port = match range {
            Some((lo, hi)) if lo == hi => {
                free(&taken, out, proto, host_ip, lo, v6)?;
                lo
            }
            Some((lo, hi)) => (lo..=hi)
                .find(|p| free(&taken, out, proto, host_ip, *p, v6).is_ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no free host port in {lo}-{hi}/{} for {container}",
                        proto.as_str()
                    )
                })?,
            None => random_port(&taken, out, proto, host_ip, v6)?,
        };
        out.push(PortBinding {
            container,
            host_ip,
            host_port,
            requested,
        });
        Ok(())
    };
    for spec in &specs {
        for (container, range) in spec.expand() {
            pick(
                container,
                spec.host_ip,
                range,
                spec.requested.clone(),
                &mut out,
            )?;
        }
    }
    if req.publish_all {
        for p in &exposed {
            if !out.iter().any(|b| b.container == *p) {
                pick(*p, None, None, String::new(), &mut out)?;
            }
        }
    }
    Ok((out, exposed))
}

/// Whether a host port can be published: no sandbox has it, this request
/// does not take it twice, and no process on the host holds it (on IPv6
/// as well when it is published over IPv6 on every address, `v6`).
fn free(
    taken: &[(&str, &PortBinding)],
    out: &[PortBinding],
    proto: Proto,
    host_ip: Option<IpAddr>,
    port: u16,
    v6: bool,
) -> Result<()> {
    let ip = host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    let at = format!("{}/{}", host_port(ip, port), proto.as_str());
    if let Some((owner, _)) = taken.iter().find(|(_, b)| b.clashes(proto, host_ip, port)) {
        bail!("host port {at} is already published by sandbox {owner:?}; pick another host port");
    }
    if out.iter().any(|b| b.clashes(proto, host_ip, port)) {
        bail!("host port {at} is given twice");
    }
    let addr = SocketAddr::new(ip, port);
    let bind = |addr| match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
    };
    match bind(addr) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("host port {at} is in use by a process on the host; pick another host port")
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            bail!(
                "cannot publish on {at}: {} is not an address of this host",
                addr.ip()
            )
        }
        Err(e) => bail!("cannot check host port {at}: {e}"),
    }
    if v6 && host_ip.is_none() {
        // A listener on [::] only (IPV6_V6ONLY) leaves 0.0.0.0 free; a
        // host without IPv6 has nothing to hold it.
        let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        if bind(any6).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse) {
            let at = format!("{}/{}", host_port(any6.ip(), port), proto.as_str());
            bail!("host port {at} is in use by a process on the host; pick another host port");
        }
    }
    Ok(())
}

/// A free port from the kernel's ephemeral range, from a random start.
fn random_port(
    taken: &[(&str, &PortBinding)],
    out: &[PortBinding],
    proto: Proto,
    host_ip: Option<IpAddr>,
    v6: bool,
) -> Result<u16> {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(lo, hi)| lo <= hi)
        .unwrap_or((32768, 60999));
    let span = u32::from(hi - lo) + 1;
    let start = u32::from_str_radix(&crate::util::new_id()[..8], 16).unwrap_or(0) % span;
    for i in 0..span {
        let p = lo + ((start + i) % span) as u16;
        if free(taken, out, proto, host_ip, p, v6).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free host port left in {lo}-{hi}/{}", proto.as_str())
}
