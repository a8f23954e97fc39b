//! Sandboxes: `bpfnet create|run|exec|ps|inspect|rm`.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::ExitCode,
};

use anyhow::{anyhow, Result};
use bpfnet::{
    exec, inspect,
    ops::{Controller, SandboxCreate},
};
use clap::Args;

use super::{each, print_json, Format};

#[derive(Args, Clone)]
pub struct CreateOpts {
    /// Sandbox name (a network namespace at /run/netns/NAME): 1-63 of
    /// letters, digits, '_', '.', '-', starting with a letter or digit.
    #[arg(long)]
    name: String,
    /// Network to join: a network name, none, host or container:OTHER (repeatable).
    #[arg(long = "network", alias = "net")]
    networks: Vec<String>,
    /// Extra name on user networks (repeatable; the rules of names).
    #[arg(long = "network-alias")]
    aliases: Vec<String>,
    /// Address on the first network (user networks only).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// IPv6 address on the first network (a user network with --ipv6).
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    /// Link to another sandbox: OTHER[:ALIAS] (repeatable; ALIAS follows
    /// the rules of names).
    #[arg(long = "link")]
    links: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|/udp]
    /// (repeatable). Without HOSTPORT a free host port is picked. Reachable
    /// on the host's addresses (or HOSTIP), from 127.0.0.1 and from other
    /// sandboxes through a host address; over IPv6 too for a sandbox on a
    /// --ipv6 network. An IPv6 HOSTIP in brackets: [2001:db8::1]:8080:80
    /// ([::1] is refused: IPv6 has no route_localnet).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Expose a port without publishing it: PORT[-END][/tcp|/udp]
    /// (repeatable; -P publishes it).
    #[arg(long)]
    expose: Vec<String>,
    /// Publish every --expose port on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// DNS server (repeatable): on user networks the responder forwards
    /// this sandbox's other names to it; on the default bridge it goes to
    /// the sandbox's resolv.conf.
    #[arg(long = "dns")]
    dns: Vec<Ipv4Addr>,
    /// DNS search domain for the sandbox's resolv.conf (repeatable).
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 (repeatable).
    #[arg(long = "dns-option")]
    dns_options: Vec<String>,
    /// An extra line of the sandbox's hosts file: NAME:IP (repeatable).
    #[arg(long = "add-host")]
    add_hosts: Vec<String>,
    /// The sandbox's host name, in its hosts file (a sandbox has no UTS
    /// namespace of its own).
    #[arg(long)]
    hostname: Option<String>,
}

impl From<CreateOpts> for SandboxCreate {
    fn from(o: CreateOpts) -> Self {
        SandboxCreate {
            name: o.name,
            networks: o.networks,
            aliases: o.aliases,
            ip: o.ip,
            ip6: o.ip6,
            links: o.links,
            publish: o.publish,
            expose: o.expose,
            publish_all: o.publish_all,
            dns: o.dns,
            dns_search: o.dns_search,
            dns_options: o.dns_options,
            add_hosts: o.add_hosts,
            hostname: o.hostname,
        }
    }
}

pub async fn create(c: &mut Controller, opts: CreateOpts) -> Result<ExitCode> {
    let sb = c.sandbox_create(opts.into()).await?;
    println!("{}", sb.id);
    Ok(ExitCode::SUCCESS)
}

/// `bpfnet run`: create, run the command in it, optionally remove it.
pub async fn run(
    c: &mut Controller,
    opts: CreateOpts,
    rm: bool,
    cmd: Vec<String>,
) -> Result<ExitCode> {
    let name = opts.name.clone();
    let sb = c.sandbox_create(opts.into()).await?;
    // Other commands go on while this one runs.
    c.locked.unlock();
    let status = exec::command(&sb, &cmd)?.status();
    c.locked.relock()?;
    c.recover().await?;
    if rm {
        c.sandbox_rm(&name, true).await?;
    }
    let status = status.map_err(|e| anyhow!("cannot run {:?} in sandbox {name:?}: {e}", cmd[0]))?;
    Ok(ExitCode::from(status.code().unwrap_or(128) as u8))
}

pub fn ps(c: &Controller, format: Format) -> Result<ExitCode> {
    match format {
        Format::Json => print_json(&inspect::ps_json(c.state())),
        Format::Table => print!(
            "{}",
            inspect::table(
                &["SANDBOX ID", "NAME", "NETWORK MODE", "ADDRESSES", "CREATED"],
                &inspect::sandbox_rows(c.state())
            )
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(c: &Controller, names: &[String]) -> Result<ExitCode> {
    let state = c.state();
    let mut out = vec![];
    for n in names {
        let sb = state
            .sandboxes
            .get(n)
            .ok_or_else(|| anyhow!("sandbox {n:?} not found; list sandboxes with `bpfnet ps`"))?;
        out.push(inspect::sandbox_json(state, sb));
    }
    print_json(&serde_json::Value::Array(out));
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(c: &mut Controller, names: &[String], force: bool) -> Result<ExitCode> {
    each(c, names, async |c, n| {
        c.refuse_docker_sandbox(n, &format!("remove it with `docker rm -f {n}`"))?;
        c.sandbox_rm(n, force).await
    })
    .await
}

/// `bpfnet port NAME [PORT[/PROTO]]`.
pub fn port(c: &Controller, name: &str, port: Option<&str>) -> Result<ExitCode> {
    let sb =
        c.state().sandboxes.get(name).ok_or_else(|| {
            anyhow!("sandbox {name:?} not found; list sandboxes with `bpfnet ps`")
        })?;
    let only = port
        .map(|p| {
            p.parse::<bpfnet::ports::Port>()
                .map_err(|e| anyhow!("invalid port {p:?}: {e}"))
        })
        .transpose()?;
    for line in inspect::port_lines(c.state(), sb, only)? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
