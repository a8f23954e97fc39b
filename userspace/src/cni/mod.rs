//! `bpfnet-cni`: the CNI plugin (spec 1.1.0; results of 1.0.0, 0.4.0 and
//! 0.3.x too) through which podman, containerd and Kubernetes put their
//! containers on bpfnet networks. It reads the CNI environment and the
//! plugin configuration, calls the same operations as the `bpfnet` CLI
//! (`ops::cni`) and prints the spec's result or error. A container becomes a
//! sandbox like any other; its namespace stays the runtime's.
pub mod types;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    datapath::Datapath,
    dns,
    netlink::Netlink,
    netns,
    ops::{cni::CniAdd, Controller},
    paths::Paths,
    state::{Endpoint, Sandbox},
    store,
    util::fmt_mac,
};
use types::{
    code, version_tuple, CniError, CniResult, Dns, Interface, IpConfig, NetConf, Route,
    VersionResult, SUPPORTED_VERSIONS,
};

/// The newest version bpfnet-cni speaks (and the one its errors carry when
/// the configuration named none it knows).
pub const LATEST: &str = "1.1.0";

/// The protocol's environment variables.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    /// A value of `CNI_ARGS` (`K1=V1;K2=V2`).
    fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .as_deref()?
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }

    fn container_id(&self) -> Result<&str, Failure> {
        let id = self.required("CNI_CONTAINERID", &self.container_id)?;
        let valid = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(invalid_env(format!(
                "CNI_CONTAINERID={id:?}: it must start with a letter or digit followed by letters, digits, '_', '.' or '-'"
            )));
        }
        Ok(id)
    }

    fn ifname(&self) -> Result<&str, Failure> {
        let name = self.required("CNI_IFNAME", &self.ifname)?;
        let valid = name.len() < libc::IFNAMSIZ
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            return Err(invalid_env(format!(
                "CNI_IFNAME={name:?} is not a valid interface name (at most 15 bytes, no '/', ':' or space)"
            )));
        }
        Ok(name)
    }

    fn netns(&self) -> Result<&str, Failure> {
        self.required("CNI_NETNS", &self.netns)
    }

    fn required<'a>(&self, name: &str, v: &'a Option<String>) -> Result<&'a str, Failure> {
        v.as_deref().ok_or_else(|| {
            invalid_env(format!(
                "{name} is not set; {} needs it",
                self.command.as_deref().unwrap_or("this command")
            ))
        })
    }
}

/// An error on its way to becoming the spec's error result.
#[derive(Debug)]
pub struct Failure {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

fn fail(code: u32, msg: &str, details: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

fn invalid_env(details: String) -> Failure {
    fail(
        code::INVALID_ENVIRONMENT,
        "invalid environment variables",
        details,
    )
}

fn invalid_config(details: impl Into<String>) -> Failure {
    fail(
        code::INVALID_CONFIG,
        "invalid network configuration",
        details,
    )
}

fn internal(what: &str) -> impl FnOnce(anyhow::Error) -> Failure + '_ {
    move |e| fail(code::INTERNAL, what, format!("{e:#}"))
}

/// What the plugin prints on stdout and its exit status.
pub struct Outcome {
    pub stdout: String,
    pub status: u8,
}

/// Runs one invocation: `env` and the configuration read from stdin.
pub fn run(env: &Env, stdin: &[u8]) -> Outcome {
    let mut version = LATEST.to_string();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(code::INTERNAL, "cannot start", e.to_string()))
        .and_then(|rt| rt.block_on(dispatch(env, stdin, &mut version)));
    match result {
        Ok(Some(json)) => Outcome {
            stdout: json,
            status: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            status: 0,
        },
        Err(f) => Outcome {
            stdout: to_json(&CniError {
                cni_version: version,
                code: f.code,
                msg: f.msg,
                details: f.details,
            }),
            status: 1,
        },
    }
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).expect("serializable") + "\n"
}

/// The oldest `cniVersion` a verb exists in.
fn first_version(command: &str) -> (u32, u32, u32) {
    match command {
        "CHECK" => (0, 4, 0),
        "STATUS" | "GC" => (1, 1, 0),
        _ => (0, 3, 0),
    }
}

async fn dispatch(
    env: &Env,
    stdin: &[u8],
    version: &mut String,
) -> Result<Option<String>, Failure> {
    let command = env.command.as_deref().ok_or_else(|| {
        invalid_env("CNI_COMMAND is not set; bpfnet-cni is run by a container runtime (see `bpfnet-cni --help`)".into())
    })?;
    if !["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"].contains(&command) {
        return Err(invalid_env(format!(
            "CNI_COMMAND={command:?}: expected ADD, DEL, CHECK, STATUS, GC or VERSION"
        )));
    }
    let raw: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        fail(
            code::DECODE_FAILURE,
            "failed to decode the network configuration",
            format!("stdin: {e}"),
        )
    })?;
    let asked = raw
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if command == "VERSION" {
        return Ok(Some(to_json(&VersionResult {
            cni_version: if asked.is_empty() {
                LATEST.into()
            } else {
                asked
            },
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        })));
    }
    if !SUPPORTED_VERSIONS.contains(&asked.as_str()) {
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion {asked:?} is not supported; bpfnet-cni supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    *version = asked.clone();
    if version_tuple(&asked) < Some(first_version(command)) {
        let (a, b, c) = first_version(command);
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "{command} exists from cniVersion {a}.{b}.{c} on; the configuration has {asked}"
            ),
        ));
    }
    let conf: NetConf = serde_json::from_value(raw).map_err(|e| {
        fail(
            code::DECODE_FAILURE,
            "failed to decode the network configuration",
            e.to_string(),
        )
    })?;
    let paths = Paths::from_env();
    match command {
        "ADD" => add(env, &conf, &paths).await.map(Some),
        "DEL" => del(env, &paths).await.map(|()| None),
        "CHECK" => check(env, &conf, &paths).await.map(|()| None),
        "STATUS" => status(&conf, &paths).map(|()| None),
        "GC" => gc(&conf, &paths).await.map(|()| None),
        _ => unreachable!("checked above"),
    }
}

/// The bpfnet network the configuration names, after refusing what bpfnet
/// does not take from a configuration.
fn bpfnet_network(conf: &NetConf) -> Result<&str, Failure> {
    if let Some(ipam) = conf.ipam.as_ref().filter(|v| v.get("type").is_some()) {
        return Err(fail(
            code::UNSUPPORTED_FIELD,
            "unsupported field in network configuration",
            format!("ipam: {ipam} — bpfnet-cni takes addresses from the bpfnet network's own IPAM (`bpfnet network create --subnet`); remove the ipam section"),
        ));
    }
    if let Some(mtu) = &conf.mtu {
        return Err(fail(
            code::UNSUPPORTED_FIELD,
            "unsupported field in network configuration",
            format!("mtu: {mtu} — bpfnet networks keep the default MTU (1500); remove the mtu key"),
        ));
    }
    if conf.name.is_empty() {
        return Err(invalid_config(
            "the configuration has no \"name\"; give the network configuration a name",
        ));
    }
    conf.network.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| {
        invalid_config("the plugin's configuration has no \"network\"; name a bpfnet network made with `bpfnet network create NAME`")
    })
}

/// `ADD`: attach the container, print the result.
async fn add(env: &Env, conf: &NetConf, paths: &Paths) -> Result<String, Failure> {
    let network = bpfnet_network(conf)?;
    let (id, ifname, ns_path) = (env.container_id()?, env.ifname()?, env.netns()?);
    let prev = conf
        .prev_result
        .clone()
        .map(serde_json::from_value::<CniResult>)
        .transpose()
        .map_err(|e| {
            fail(
                code::DECODE_FAILURE,
                "failed to decode prevResult",
                e.to_string(),
            )
        })?;
    if let Err(e) = netns::foreign_inode(Path::new(ns_path)) {
        return Err(invalid_env(format!("CNI_NETNS={ns_path}: {e:#}")));
    }
    let mut c = Controller::open(paths)
        .await
        .map_err(internal("bpfnet is not ready"))?;
    let net = c.state().networks.get(network).ok_or_else(|| {
        invalid_config(format!(
            "bpfnet network {network:?} does not exist; create it with `bpfnet network create {network}`"
        ))
    })?;
    if net.subnet.is_none() {
        return Err(invalid_config(format!(
            "bpfnet network {network:?} has no subnet (the built-in host and none networks cannot be attached to); name a bridge network"
        )));
    }
    if let Some((sb, _)) = c.cni_attachment(id, ifname) {
        return Err(fail(
            code::INTERFACE_EXISTS,
            "interface exists",
            format!(
                "container {id:?} already has {ifname} (bpfnet sandbox {:?}); DEL it first",
                sb.name
            ),
        ));
    }
    let ns = netns::open_path(Path::new(ns_path)).map_err(internal("cannot open CNI_NETNS"))?;
    let inner = Netlink::open_in(&ns).map_err(internal("cannot enter CNI_NETNS"))?;
    if inner
        .link_by_name(ifname)
        .await
        .map_err(internal("cannot list the container's interfaces"))?
        .is_some()
    {
        return Err(fail(
            code::INTERFACE_EXISTS,
            "interface exists",
            format!("{ns_path} already has an interface {ifname:?}; choose another CNI_IFNAME"),
        ));
    }
    let (sb, ep) = c
        .cni_add(CniAdd {
            container_id: id.into(),
            netns: PathBuf::from(ns_path),
            ifname: ifname.into(),
            network: network.into(),
            config: conf.name.clone(),
            pod_name: env.arg("K8S_POD_NAME").map(String::from),
        })
        .await
        .map_err(internal("bpfnet could not attach the container"))?;
    let ours = result_of(&c, &sb, &ep)
        .await
        .map_err(internal("cannot read the attachment back"))?;
    Ok(to_json(&merge(prev, ours).for_version(&conf.cni_version)))
}

/// The result of the attachment `ep` of `sb`, as configured.
async fn result_of(c: &Controller, sb: &Sandbox, ep: &Endpoint) -> anyhow::Result<CniResult> {
    let net = &c.state().networks[&ep.network];
    let host_mac = c
        .host
        .nl
        .link_by_name(&ep.host_ifname)
        .await?
        .and_then(|l| l.mac)
        .map(|m| fmt_mac(&m))
        .unwrap_or_default();
    let prefix = net.subnet.map(|s| s.prefix_len()).unwrap_or(32);
    let gateway = net.gateway.map(|g| g.to_string());
    // The default route as configured: through this interface, via this
    // network's gateway (the first network that reaches out carries it,
    // never an internal one).
    let inner = Netlink::open_in(&netns::open_sandbox(sb)?)?;
    let ifindex = inner.link_by_name(&ep.ifname).await?.map(|l| l.index);
    let default_route = match (inner.ipv4_default_route().await?, ifindex) {
        (Some((gw, oif)), Some(index)) => oif == index && Some(gw) == net.gateway,
        _ => false,
    };
    let mut ips = vec![IpConfig {
        version: None,
        address: format!("{}/{prefix}", ep.ip),
        gateway: gateway.clone(),
        interface: Some(1),
    }];
    let mut routes = vec![];
    if default_route {
        routes.push(Route {
            dst: "0.0.0.0/0".into(),
            gw: gateway,
            ..Route::default()
        });
    }
    // A dual-stack network: the IPv6 address and, when it is this
    // interface's, the IPv6 default route, as the CNI bridge plugin reports.
    if let Some((ip6, subnet6)) = ipv6_of(net, ep) {
        let gateway6 = net.gateway6.map(|g| g.to_string());
        ips.push(IpConfig {
            version: None,
            address: format!("{ip6}/{}", subnet6.prefix_len()),
            gateway: gateway6.clone(),
            interface: Some(1),
        });
        let default6 = match (inner.ipv6_default_route().await?, ifindex) {
            (Some((gw, oif)), Some(index)) => oif == index && Some(gw) == net.gateway6,
            _ => false,
        };
        if default6 {
            routes.push(Route {
                dst: "::/0".into(),
                gw: gateway6,
                ..Route::default()
            });
        }
    }
    let nameservers = match net.gateway {
        Some(gw) if dns::table::resolves_names(net) => vec![gw.to_string()],
        _ => vec![],
    };
    Ok(CniResult {
        cni_version: String::new(),
        interfaces: vec![
            Interface {
                name: ep.host_ifname.clone(),
                mac: host_mac,
                ..Interface::default()
            },
            Interface {
                name: ep.ifname.clone(),
                mac: fmt_mac(&ep.mac),
                sandbox: sb.netns_path().display().to_string(),
                ..Interface::default()
            },
        ],
        ips,
        routes,
        dns: Dns {
            nameservers,
            ..Dns::default()
        },
    })
}

/// The IPv6 address of an endpoint on a dual-stack network, with the
/// network's IPv6 subnet.
fn ipv6_of(
    net: &crate::state::Network,
    ep: &Endpoint,
) -> Option<(std::net::Ipv6Addr, ipnet::Ipv6Net)> {
    ep.ip6.zip(net.subnet6).filter(|_| net.ipv6())
}

/// Our result after a `prevResult` (when a plugin before us in the chain
/// made interfaces of its own): theirs first, ours appended.
fn merge(prev: Option<CniResult>, mut ours: CniResult) -> CniResult {
    let Some(mut prev) = prev else {
        return ours;
    };
    let offset = prev.interfaces.len();
    for ip in &mut ours.ips {
        ip.interface = ip.interface.map(|i| i + offset);
    }
    prev.interfaces.append(&mut ours.interfaces);
    prev.ips.append(&mut ours.ips);
    prev.routes.append(&mut ours.routes);
    for ns in ours.dns.nameservers {
        if !prev.dns.nameservers.contains(&ns) {
            prev.dns.nameservers.push(ns);
        }
    }
    prev
}

/// Whether bpfnet was ever used here (a DEL or GC with no state has nothing
/// to do and must not set bpfnet up as a side effect).
fn never_used(paths: &Paths) -> bool {
    !Datapath::is_loaded(paths) && !paths.state_file().exists()
}

/// `DEL`: idempotent — nothing attached, or the namespace gone, is success.
async fn del(env: &Env, paths: &Paths) -> Result<(), Failure> {
    let (id, ifname) = (env.container_id()?, env.ifname()?);
    if never_used(paths) {
        return Ok(());
    }
    let mut c = Controller::open(paths)
        .await
        .map_err(internal("bpfnet is not ready"))?;
    c.cni_del(id, ifname)
        .await
        .map_err(internal("bpfnet could not detach the container"))?;
    Ok(())
}

fn check_failed(details: String) -> Failure {
    fail(code::CHECK_FAILED, "attachment is not as expected", details)
}

/// `CHECK`: the attachment exists as `prevResult` says and as bpfnet made
/// it (interface, MAC, address in the namespace; host veth in the datapath).
async fn check(env: &Env, conf: &NetConf, paths: &Paths) -> Result<(), Failure> {
    bpfnet_network(conf)?;
    let (id, ifname, ns_path) = (env.container_id()?, env.ifname()?, env.netns()?);
    let prev: CniResult = conf
        .prev_result
        .clone()
        .ok_or_else(|| invalid_config("CHECK needs prevResult (the result of the ADD)"))
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                fail(
                    code::DECODE_FAILURE,
                    "failed to decode prevResult",
                    e.to_string(),
                )
            })
        })?;
    let c = Controller::open_read_only(paths)
        .await
        .map_err(internal("bpfnet is not ready"))?;
    let Some((sb, ep)) = c.cni_attachment(id, ifname) else {
        return Err(fail(
            code::UNKNOWN_CONTAINER,
            "container unknown",
            format!("bpfnet has no attachment of container {id:?} with {ifname}"),
        ));
    };
    let net = &c.state().networks[&ep.network];
    let prefix = net.subnet.map(|s| s.prefix_len()).unwrap_or(32);
    let want_mac = fmt_mac(&ep.mac);
    // Each address bpfnet gave it: IPv4, and IPv6 on a dual-stack network.
    let want: Vec<(std::net::IpAddr, u8)> = std::iter::once((ep.ip.into(), prefix))
        .chain(ipv6_of(net, ep).map(|(ip6, s)| (ip6.into(), s.prefix_len())))
        .collect();
    // prevResult against bpfnet's record.
    let Some(pos) = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox == ns_path)
    else {
        return Err(check_failed(format!(
            "prevResult has no interface {ifname} in {ns_path}"
        )));
    };
    if !prev.interfaces[pos].mac.eq_ignore_ascii_case(&want_mac) {
        return Err(check_failed(format!(
            "prevResult gives {ifname} the MAC {}, bpfnet gave it {want_mac}",
            prev.interfaces[pos].mac
        )));
    }
    for (ip, len) in &want {
        let want_addr = format!("{ip}/{len}");
        if !prev
            .ips
            .iter()
            .any(|i| i.interface == Some(pos) && i.address == want_addr)
        {
            return Err(check_failed(format!(
                "prevResult does not give {ifname} the address {want_addr} bpfnet gave it"
            )));
        }
    }
    // The kernel against bpfnet's record.
    if sb.netns_path() != Path::new(ns_path) {
        return Err(check_failed(format!(
            "container {id:?} is attached in {}, not in {ns_path}",
            sb.netns_path().display()
        )));
    }
    let ns = netns::open_sandbox(sb).map_err(|e| check_failed(format!("{e:#}")))?;
    let inner = Netlink::open_in(&ns).map_err(internal("cannot enter CNI_NETNS"))?;
    let link = inner
        .link_by_name(ifname)
        .await
        .map_err(internal("cannot list the container's interfaces"))?
        .ok_or_else(|| check_failed(format!("{ns_path} has no interface {ifname}")))?;
    if link.mac != Some(ep.mac) {
        return Err(check_failed(format!(
            "{ifname} has the MAC {}, not {want_mac}",
            link.mac.map(|m| fmt_mac(&m)).unwrap_or_default()
        )));
    }
    let addrs = inner
        .addresses(link.index)
        .await
        .map_err(internal("cannot list the container's addresses"))?;
    if let Some((ip, len)) = want.iter().find(|a| !addrs.contains(a)) {
        return Err(check_failed(format!(
            "{ifname} does not have the address {ip}/{len}"
        )));
    }
    let host = c
        .host
        .nl
        .link_by_name(&ep.host_ifname)
        .await
        .map_err(internal("cannot list the host's interfaces"))?;
    if host.is_none() {
        return Err(check_failed(format!(
            "the host side of {ifname}, {}, is gone",
            ep.host_ifname
        )));
    }
    if net.driver == crate::state::DriverKind::Bridge
        && !c.datapath().attached_interfaces().contains(&ep.host_ifname)
    {
        return Err(check_failed(format!(
            "the datapath is not attached to {}; run `bpfnet datapath load`",
            ep.host_ifname
        )));
    }
    Ok(())
}

/// `STATUS`: ready when the datapath is loaded and the network exists.
fn status(conf: &NetConf, paths: &Paths) -> Result<(), Failure> {
    let network = bpfnet_network(conf)?;
    let unavailable = |d: String| fail(code::NOT_AVAILABLE, "plugin not available", d);
    if !Datapath::is_loaded(paths) {
        return Err(unavailable(
            "the bpfnet datapath is not loaded; run `bpfnet datapath load`".into(),
        ));
    }
    let state = store::snapshot(paths).map_err(|e| unavailable(format!("{e:#}")))?;
    if !state.networks.contains_key(network) {
        return Err(unavailable(format!(
            "bpfnet network {network:?} does not exist; create it with `bpfnet network create {network}`"
        )));
    }
    Ok(())
}

/// `GC`: every attachment of this configuration not in
/// `cni.dev/valid-attachments` goes; nothing else is touched.
async fn gc(conf: &NetConf, paths: &Paths) -> Result<(), Failure> {
    bpfnet_network(conf)?;
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| {
            invalid_config(
                "GC needs cni.dev/valid-attachments (without it every attachment would go)",
            )
        })?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    if never_used(paths) {
        return Ok(());
    }
    let mut c = Controller::open(paths)
        .await
        .map_err(internal("bpfnet is not ready"))?;
    let (removed, errors) = c.cni_gc(&conf.name, &valid).await;
    for r in removed {
        eprintln!("bpfnet-cni: GC removed {r}");
    }
    if !errors.is_empty() {
        return Err(fail(
            code::INTERNAL,
            "GC could not remove every stale attachment",
            errors.join("; "),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_are_read_as_podman_and_kubelet_pass_them() {
        let env = Env {
            args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".into()),
            ..Env::default()
        };
        assert_eq!(env.arg("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(env.arg("K8S_POD_INFRA_CONTAINER_ID"), None);
        let empty = Env {
            args: Some("K8S_POD_NAME=".into()),
            ..Env::default()
        };
        assert_eq!(empty.arg("K8S_POD_NAME"), None);
    }

    /// After a plugin that made interfaces of its own, ours are appended
    /// and our IPs point at ours.
    #[test]
    fn our_result_is_appended_to_a_prev_result() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                ..Interface::default()
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.53".into()],
                ..Dns::default()
            },
            ..CniResult::default()
        };
        let ours = CniResult {
            interfaces: vec![
                Interface {
                    name: "bn0".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    sandbox: "/run/netns/x".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: "172.18.0.2/16".into(),
                interface: Some(1),
                ..IpConfig::default()
            }],
            dns: Dns {
                nameservers: vec!["172.18.0.1".into()],
                ..Dns::default()
            },
            ..CniResult::default()
        };
        let merged = merge(Some(prev), ours);
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(2));
        assert_eq!(merged.interfaces[2].name, "eth0");
        assert_eq!(merged.dns.nameservers, vec!["10.0.0.53", "172.18.0.1"]);
    }

    /// VERSION needs nothing but stdin; a verb unknown is error 4.
    #[test]
    fn version_and_unknown_verbs() {
        let env = Env {
            command: Some("VERSION".into()),
            ..Env::default()
        };
        let out = run(&env, br#"{"cniVersion": "0.4.0"}"#);
        assert_eq!(out.status, 0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(v["cniVersion"], "0.4.0");
        let env = Env {
            command: Some("ATTACH".into()),
            ..Env::default()
        };
        let out = run(&env, b"{}");
        assert_eq!(out.status, 1);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], LATEST);
    }
}
