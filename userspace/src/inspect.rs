//! What `inspect`, `network inspect`, `ls` and `ps` print: Docker's field
//! names in JSON, aligned tables for people.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

use crate::{
    state::{NetworkMode, Sandbox, State},
    util::fmt_mac,
};

pub fn network_json(state: &State, name: &str) -> Value {
    let net = &state.networks[name];
    let mut containers = Map::new();
    for (sb, ep) in state.endpoints_of(name) {
        let prefix = net.subnet.map(|s| s.prefix_len()).unwrap_or(0);
        containers.insert(
            sb.id.clone(),
            json!({
                "Name": sb.name,
                "EndpointID": ep.id,
                "MacAddress": fmt_mac(&ep.mac),
                "IPv4Address": format!("{}/{prefix}", ep.ip),
                "IPv6Address": match (ep.ip6, net.subnet6) {
                    (Some(ip6), Some(s6)) => format!("{ip6}/{}", s6.prefix_len()),
                    _ => String::new(),
                },
            }),
        );
    }
    let mut config: Vec<Value> = net
        .subnet
        .map(|s| {
            vec![json!({
                "Subnet": s.to_string(),
                "Gateway": net.gateway.map(|g| g.to_string()).unwrap_or_default(),
            })]
        })
        .unwrap_or_default();
    if let Some(s6) = net.subnet6 {
        config.push(json!({
            "Subnet": s6.to_string(),
            "Gateway": net.gateway6.map(|g| g.to_string()).unwrap_or_default(),
        }));
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": net.driver.docker_name(),
        "EnableIPv6": net.ipv6(),
        "IPAM": { "Driver": "default", "Options": null, "Config": config },
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": net.options,
        "Labels": {},
        // Not Docker's: how many members a broadcast reaches (the datapath
        // copies it to at most MAX_FLOOD_PORTS of them).
        "BroadcastReach": {
            "Members": containers.len(),
            "Reached": if net.flood() { containers.len().min(bpfnet_common::MAX_FLOOD_PORTS as usize) } else { 0 },
        },
    })
}

/// `IPAMConfig`: null, as Docker shows an endpoint whose addresses were
/// picked by IPAM; with IPv6, both addresses (what the endpoint holds).
fn ipam_config(ep: &crate::state::Endpoint) -> Value {
    match ep.ip6 {
        Some(ip6) => json!({ "IPv4Address": ep.ip.to_string(), "IPv6Address": ip6.to_string() }),
        None => Value::Null,
    }
}

fn or_null(v: &[String]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        json!(v)
    }
}

pub fn sandbox_json(state: &State, sb: &Sandbox) -> Value {
    let mut networks = Map::new();
    let mut top = json!({
        "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
    });
    let links: Vec<String> = sb
        .links
        .iter()
        .map(|l| format!("{}:{}", l.target, l.alias))
        .collect();
    for ep in &sb.endpoints {
        let net = &state.networks[&ep.network];
        let prefix = net.subnet.map(|s| s.prefix_len()).unwrap_or(0);
        let gw = net.gateway.map(|g| g.to_string()).unwrap_or_default();
        let (ip6, prefix6, gw6) = match (ep.ip6, net.subnet6, net.gateway6) {
            (Some(ip6), Some(s6), Some(g6)) => (ip6.to_string(), s6.prefix_len(), g6.to_string()),
            _ => (String::new(), 0, String::new()),
        };
        if ep.network == "bridge" {
            top = json!({
                "IPAddress": ep.ip.to_string(), "IPPrefixLen": prefix,
                "Gateway": gw, "MacAddress": fmt_mac(&ep.mac),
                "GlobalIPv6Address": ip6, "GlobalIPv6PrefixLen": prefix6,
                "IPv6Gateway": gw6,
            });
        }
        let mut aliases = sb.aliases.clone();
        aliases.extend(ep.aliases.iter().cloned());
        networks.insert(
            ep.network.clone(),
            json!({
                "IPAMConfig": ipam_config(ep),
                "Links": or_null(if ep.network == "bridge" { &links } else { &[] }),
                "Aliases": or_null(&aliases),
                "NetworkID": net.id,
                "EndpointID": ep.id,
                "Gateway": gw,
                "IPAddress": ep.ip.to_string(),
                "IPPrefixLen": prefix,
                "IPv6Gateway": gw6,
                "GlobalIPv6Address": ip6,
                "GlobalIPv6PrefixLen": prefix6,
                "MacAddress": fmt_mac(&ep.mac),
                "DriverOpts": null,
            }),
        );
    }
    if let Some(special) = match sb.mode {
        NetworkMode::Host => Some("host"),
        NetworkMode::None => Some("none"),
        _ => None,
    } {
        networks.insert(
            special.into(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": null,
                "NetworkID": state.networks.get(special).map(|n| n.id.clone()).unwrap_or_default(),
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "", "DriverOpts": null,
            }),
        );
    }
    let sandbox_key = match &sb.mode {
        NetworkMode::Container(_) => String::new(),
        _ => sb.netns_path().display().to_string(),
    };
    json!({
        "Id": sb.id,
        "Name": format!("/{}", sb.name),
        "Created": sb.created,
        "Config": {
            "Hostname": sb.dns.hostname.clone().unwrap_or_else(|| sb.id[..12.min(sb.id.len())].to_string()),
            "ExposedPorts": exposed_ports(sb),
        },
        "HostConfig": {
            "NetworkMode": sb.mode.display(),
            "Links": or_null(&links),
            "PortBindings": port_bindings(sb),
            "Dns": sb.dns.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "DnsSearch": sb.dns.search,
            "DnsOptions": sb.dns.options,
            "ExtraHosts": or_null(&sb.dns.extra_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>()),
        },
        "NetworkSettings": {
            "SandboxID": sb.id,
            "SandboxKey": sandbox_key,
            "IPAddress": top["IPAddress"],
            "IPPrefixLen": top["IPPrefixLen"],
            "Gateway": top["Gateway"],
            "MacAddress": top["MacAddress"],
            "GlobalIPv6Address": top["GlobalIPv6Address"],
            "GlobalIPv6PrefixLen": top["GlobalIPv6PrefixLen"],
            "IPv6Gateway": top["IPv6Gateway"],
            "Networks": networks,
            "Ports": published_ports(sb, crate::nat::publishes_ipv6(state, sb)),
        },
    })
}

/// Every port a sandbox exposes or publishes (`Config.ExposedPorts`).
fn all_ports(sb: &Sandbox) -> std::collections::BTreeSet<crate::ports::Port> {
    let mut ports: std::collections::BTreeSet<_> = sb.exposed.iter().copied().collect();
    ports.extend(sb.ports.iter().map(|b| b.container));
    ports
}

fn exposed_ports(sb: &Sandbox) -> Value {
    let ports = all_ports(sb);
    if ports.is_empty() {
        return Value::Null;
    }
    Value::Object(ports.iter().map(|p| (p.to_string(), json!({}))).collect())
}

/// `HostConfig.PortBindings`: what was asked for.
fn port_bindings(sb: &Sandbox) -> Value {
    let mut m = Map::new();
    for b in &sb.ports {
        let entry = m
            .entry(b.container.to_string())
            .or_insert_with(|| json!([]));
        entry.as_array_mut().expect("an array").push(json!({
            "HostIp": b.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            "HostPort": b.requested,
        }));
    }
    Value::Object(m)
}

/// `NetworkSettings.Ports`: what is published where (null for a port
/// only exposed), as Docker shows it: a port published on every address
/// once per family (`0.0.0.0`, and `::` when `v6`).
fn published_ports(sb: &Sandbox, v6: bool) -> Value {
    let mut m = Map::new();
    for p in all_ports(sb) {
        let bound: Vec<Value> = sb
            .ports
            .iter()
            .filter(|b| b.container == p)
            .flat_map(|b| {
                let ips = match b.host_ip {
                    Some(ip) => vec![ip],
                    None if v6 => vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
                    None => vec![Ipv4Addr::UNSPECIFIED.into()],
                };
                ips.into_iter().map(|ip: IpAddr| {
                    json!({
                        "HostIp": ip.to_string(),
                        "HostPort": b.host_port.to_string(),
                    })
                })
            })
            .collect();
        m.insert(
            p.to_string(),
            if bound.is_empty() {
                Value::Null
            } else {
                json!(bound)
            },
        );
    }
    Value::Object(m)
}

/// `bpfnet port NAME [PORT]`: `80/tcp -> 0.0.0.0:8080` lines, or with a
/// port only the host sides, as `docker port` prints them (`[::]:8080`
/// too for a sandbox published over IPv6).
pub fn port_lines(
    state: &State,
    sb: &Sandbox,
    only: Option<crate::ports::Port>,
) -> anyhow::Result<Vec<String>> {
    let v6 = crate::nat::publishes_ipv6(state, sb);
    let mut bindings: Vec<_> = sb.ports.iter().collect();
    bindings.sort_by_key(|b| (b.container, b.host_ip, b.host_port));
    match only {
        None => Ok(bindings
            .iter()
            .flat_map(|b| {
                b.hosts(v6)
                    .into_iter()
                    .map(|h| format!("{} -> {h}", b.container))
            })
            .collect()),
        Some(p) => {
            let lines: Vec<String> = bindings
                .iter()
                .filter(|b| b.container == p)
                .flat_map(|b| b.hosts(v6))
                .collect();
            if lines.is_empty() {
                anyhow::bail!("no public port {p} published for sandbox {:?}", sb.name);
            }
            Ok(lines)
        }
    }
}

/// Left-aligned columns, as `docker network ls` prints them.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn network_rows(state: &State) -> Vec<Vec<String>> {
    state
        .networks
        .values()
        .map(|n| {
            vec![
                n.id[..12].to_string(),
                n.name.clone(),
                n.driver.docker_name().to_string(),
                "local".into(),
            ]
        })
        .collect()
}

pub fn network_ls_json(state: &State) -> Value {
    Value::Array(
        state
            .networks
            .values()
            .map(|n| {
                json!({
                    "ID": n.id[..12], "Name": n.name, "Driver": n.driver.docker_name(),
                    "Scope": "local", "Internal": n.internal, "IPv6": false,
                    "Subnet": n.subnet.map(|s| s.to_string()).unwrap_or_default(),
                    "CreatedAt": n.created,
                })
            })
            .collect(),
    )
}

fn addresses(sb: &Sandbox) -> String {
    sb.endpoints
        .iter()
        .map(|e| format!("{}={}", e.network, e.ip))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn sandbox_rows(state: &State) -> Vec<Vec<String>> {
    state
        .sandboxes
        .values()
        .map(|s| {
            vec![
                s.id[..12].to_string(),
                s.name.clone(),
                s.mode.display(),
                addresses(s),
                s.created.clone(),
            ]
        })
        .collect()
}

pub fn ps_json(state: &State) -> Value {
    Value::Array(
        state
            .sandboxes
            .values()
            .map(|s| {
                json!({
                    "ID": s.id[..12], "Names": s.name, "NetworkMode": s.mode.display(),
                    "Networks": s.endpoints.iter().map(|e| e.network.clone()).collect::<Vec<_>>().join(","),
                    "IPAddresses": addresses(s), "CreatedAt": s.created,
                })
            })
            .collect(),
    )
}
