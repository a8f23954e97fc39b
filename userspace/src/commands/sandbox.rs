//! Sandboxes: `bpfnet create|run|exec|ps|inspect|rm`.
use std::{net::Ipv4Addr, process::ExitCode};

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
    /// Link to another sandbox: OTHER[:ALIAS] (repeatable; ALIAS follows
    /// the rules of names).
    #[arg(long = "link")]
    links: Vec<String>,
}

impl From<CreateOpts> for SandboxCreate {
    fn from(o: CreateOpts) -> Self {
        SandboxCreate {
            name: o.name,
            networks: o.networks,
            aliases: o.aliases,
            ip: o.ip,
            links: o.links,
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
